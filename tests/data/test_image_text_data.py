"""Image-caption data: every listing layout, and bad images skipped with their path or raised."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmssl import cli
from mmssl.data.image_text import BadImage, ImageDataError, ImageTextData, open_image, read_image_text


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "shapes"
    assert cli.main(["data", "make-images", "--kind", "shapes", "--out", str(out), "--count", "20"]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return out, rows


def test_every_layout_gives_the_same_pairs(shapes, tmp_path):
    folder, rows = shapes
    want = sorted(r["text"] for r in rows)
    assert sorted(r.text for r in read_image_text(folder)) == want  # imagefolder (metadata.jsonl)
    assert len(read_image_text(folder, split="test")) == 4
    with (tmp_path / "pairs.csv").open("w", newline="") as f:  # open_clip's CSV, absolute paths
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows([str(folder / r["file_name"]), r["text"]] for r in rows)
    with (tmp_path / "pairs.tsv").open("w", newline="") as f:  # relative to the file's folder
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "caption"])
        w.writerows([f"{folder.name}/{r['file_name']}", r["text"]] for r in rows)
    (tmp_path / folder.name).symlink_to(folder)
    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"image": str(folder / r["file_name"]), "caption": r["text"]}) + "\n" for r in rows)
    )
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:  # WebDataset: key.png + key.txt
        for i, r in enumerate(rows):
            for ext, data in (("png", (folder / r["file_name"]).read_bytes()), ("txt", r["text"].encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [str(folder / r["file_name"]) for r in rows], "text": [r["text"] for r in rows]}
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in ("pairs.csv", "pairs.tsv", "pairs.jsonl", "shard-000.tar", "saved"):
        records = read_image_text(tmp_path / source)
        assert sorted(r.text for r in records) == want, source
        image = open_image(records[0])
        assert image.mode == "RGB" and image.size == (64, 64), source


def test_listing_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{"image": "b.png"}\n')
    with pytest.raises(ImageDataError, match=r"bad\.jsonl:2: no caption field"):
        read_image_text(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{oops\n')
    with pytest.raises(ImageDataError, match=r"broken\.jsonl:2: invalid JSON"):
        read_image_text(tmp_path / "broken.jsonl")
    with pytest.raises(ImageDataError, match="use a .csv"):
        (tmp_path / "x.txt").write_text("")
        read_image_text(tmp_path / "x.txt")


def test_bad_images_are_skipped_with_their_path_or_raise(shapes, tmp_path):
    folder, rows = shapes
    good = folder / rows[0]["file_name"]
    raw = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.png").write_text("not an image")
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    Image.new("RGBA", (20, 10), (0, 0, 255, 0)).save(tmp_path / "alpha.png")  # fully transparent
    Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit white
    Image.new("RGB", (200, 200)).save(tmp_path / "big.png")
    listing = [("good", str(good)), *[(n, str(tmp_path / n)) for n in ("truncated.png", "text.png", "missing.png")]]
    listing += [(n, str(tmp_path / n)) for n in ("cmyk.jpg", "alpha.png", "deep.png", "big.png")]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps({"image": p, "text": t}) + "\n" for t, p in listing))
    data = ImageTextData(read_image_text(tmp_path / "list.jsonl"), max_pixels=10_000)
    got = {data.records[i].text: data.get(i) for i in range(len(data))}
    assert got["good"][0].size == (64, 64)
    assert [t for t, v in got.items() if v is None] == ["truncated.png", "text.png", "missing.png", "big.png"]
    assert data.skipped == {"unreadable": 1, "not_an_image": 1, "missing": 1, "too_large": 1}
    assert any("list.jsonl:2 (" in m and "truncated.png): unreadable" in m for m in data.bad)
    assert got["cmyk.jpg"][0].getpixel((5, 5))[0] > 200  # CMYK converted: red
    assert got["alpha.png"][0].getpixel((5, 5)) == (255, 255, 255)  # transparent -> white
    assert got["deep.png"][0].getpixel((5, 5)) == (255, 255, 255)  # 16-bit scaled, not clipped
    strict = ImageTextData(data.records, on_bad="raise", max_pixels=10_000)
    with pytest.raises(BadImage, match=r"list\.jsonl:2 \(.*truncated\.png\): unreadable image"):
        strict.get(1)
    with pytest.raises(BadImage, match="over the limit"):
        strict.get(7)


def test_decoding_leaves_the_process_warning_filters_alone(tmp_path, monkeypatch):
    """Threads decode at once (the app, data-loader threads): a warnings filter set around one
    decode turns another thread's warning into an exception, so decoding sets none."""
    import warnings

    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), "red").save(path)

    def forbidden(*args, **kwargs):
        raise AssertionError("open_image changed the process-wide warning filters")

    monkeypatch.setattr(warnings, "simplefilter", forbidden)
    monkeypatch.setattr(warnings, "catch_warnings", forbidden)
    assert open_image(str(path)).size == (8, 8)
    big = tmp_path / "big.png"
    Image.new("1", (12_000, 12_000)).save(big)  # 144 MP: refused from its header, before decoding
    with pytest.raises(BadImage, match="over the limit"):
        open_image(str(big))
