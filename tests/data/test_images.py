"""`mmssl data make-images`: the offline image-caption sets (shapes, digits, emoji)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from mmssl import cli
from mmssl.data.images import CLDR_ANNOTATIONS, EMOJI_FONT, EMOJI_TEST, HELD_OUT


def rows_of(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_shapes_hold_out_colour_shape_pairs_from_training(tmp_path):
    out = tmp_path / "shapes"
    assert cli.main(["data", "make-images", "--kind", "shapes", "--out", str(out), "--count", "300"]) == 0
    rows = rows_of(out)
    assert len(rows) == 300 and sum(r["split"] == "test" for r in rows) == 60
    held = {tuple(p) for p in HELD_OUT}
    for r in rows:
        pairs = {(o["colour"], o["shape"]) for o in r["objects"]}
        assert bool(pairs & held) == (r["split"] == "test"), r
        left, right = r["objects"]
        assert r["text"] == f"a {left['size']} {left['colour']} {left['shape']} left of a " + " ".join(right.values())
        assert Image.open(out / r["file_name"]).size == (64, 64)
    again = tmp_path / "again"
    assert cli.main(["data", "make-images", "--kind", "shapes", "--out", str(again), "--count", "300"]) == 0
    assert rows_of(again) == rows  # seeded: the same set every time
    assert cli.main(["data", "make-images", "--kind", "shapes", "--out", str(out), "--count", "10"]) == 2
    assert len(rows_of(out)) == 300  # refused without --overwrite, nothing lost
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    argv = ["data", "make-images", "--kind", "shapes", "--out", str(mine), "--count", "10", "--overwrite"]
    assert cli.main(argv) == 2  # --overwrite replaces an image set, never a folder of the user's
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]


def test_digits_are_the_scikit_learn_set(tmp_path):
    out = tmp_path / "digits"
    assert cli.main(["data", "make-images", "--kind", "digits", "--out", str(out), "--size", "32"]) == 0
    rows = rows_of(out)
    assert len(rows) == 1797 and {r["label"] for r in rows} == set(range(10))
    assert 0.15 < sum(r["split"] == "test" for r in rows) / len(rows) < 0.25
    assert all(r["text"] == f"a handwritten digit {r['label']}" for r in rows)
    image = Image.open(out / rows[0]["file_name"])
    assert image.size == (32, 32) and image.getextrema()[0][0] < 64  # dark ink on a white field


@pytest.mark.skipif(
    not (EMOJI_FONT.is_file() and CLDR_ANNOTATIONS.is_file() and EMOJI_TEST.is_file())
    and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="Debian packages fonts-noto-color-emoji, unicode-cldr-core, unicode-data not installed (.ci/run does)",
)
def test_emoji_test_captions_use_no_training_caption(tmp_path):
    out = tmp_path / "emoji"
    assert cli.main(["data", "make-images", "--kind", "emoji", "--out", str(out)]) == 0
    rows = rows_of(out)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert len(rows) > 1400 and 0.12 < len(test) / len(rows) < 0.25
    assert all(r["text"] == r["name"] for r in train)
    train_captions = {r["text"].lower() for r in train}
    for r in test:
        assert r["text"] and r["text"].lower() not in train_captions and r["text"].lower() != r["name"].lower()
    apple = next(r for r in rows if r["name"] == "red apple")
    assert "fruit" in apple["keywords"]
    assert (apple["group"], apple["subgroup"]) == ("Food & Drink", "food-fruit")
    assert sum(bool(r["group"]) for r in rows) / len(rows) > 0.98  # groups found despite U+FE0F differences
    assert len({r["group"] for r in rows}) >= 8
    image = Image.open(out / apple["file_name"]).convert("RGB")
    r, g, b = image.getpixel((32, 36))
    assert r > 150 and g < 100  # red in the middle of the apple
    info = json.loads((out / "dataset.json").read_text())
    assert "SIL Open Font License" in info["sources"]["images"] and "Unicode" in info["sources"]["captions"]
