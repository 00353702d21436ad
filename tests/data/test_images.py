"""`mmssl data make-images`: the offline image-caption sets (shapes, digits, emoji, icons)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from mmssl import cli
from mmssl.data.images import HELD_OUT
from mmssl.data.symbols import (
    CLDR_ANNOTATIONS,
    EMOJI_FONT,
    EMOJI_TEST,
    emoji_captions,
    icon_caption,
    make_icons,
    make_stamps,
    split_of,
)


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
    assert len(rows) > 1500 and 0.05 < len(test) / len(rows) < 0.25  # every named emoji, a test split of its own
    assert all(
        r["text"] == r["name"] and r["captions"] == list(dict.fromkeys([r["name"], *r["keywords"]])) for r in train
    )
    train_captions = {c.lower() for r in train for c in r["captions"]}
    for r in test:  # a test query: none of its words is a training caption, nor its name
        assert r["text"] and r["text"].lower() not in train_captions and r["captions"] == [r["name"]]
        fresh = [k for k in r["keywords"] if k.lower() not in train_captions and k.lower() != r["name"].lower()]
        assert r["text"] == " ".join(fresh)
    apple = next(r for r in rows if r["name"] == "red apple")
    assert "fruit" in apple["keywords"] and "fruit" in apple["captions"]
    assert (apple["group"], apple["subgroup"]) == ("Food & Drink", "food-fruit")
    assert sum(bool(r["group"]) for r in rows) / len(rows) > 0.98  # groups found despite U+FE0F differences
    assert len({r["group"] for r in rows}) >= 8
    image = Image.open(out / apple["file_name"]).convert("RGB")
    r, g, b = image.getpixel((32, 36))
    assert r > 150 and g < 100  # red in the middle of the apple
    info = json.loads((out / "dataset.json").read_text())
    assert "SIL" in info["licences"]["fonts-noto-color-emoji"]  # from the package's copyright file
    assert "flags" in info["holds"] and info["test_without_fresh_keywords_moved_to_train"] > 0


def test_emoji_caption_rule_moves_a_test_emoji_without_words_of_its_own_to_train():
    rows = [
        {"name": "red apple", "keywords": ["apple", "fruit", "red"], "split": "train"},
        {"name": "green apple", "keywords": ["apple", "fruit", "green", "orchard"], "split": "test"},
        {"name": "pear", "keywords": ["fruit", "pear"], "split": "test"},  # nothing of its own: to train
        {
            "name": "pear tree",
            "keywords": ["pear", "tree", "blossom"],
            "split": "test",
        },  # "pear" moves too
    ]
    assert emoji_captions(rows) == 1
    by = {r["name"]: r for r in rows}
    assert by["pear"]["split"] == "train" and by["pear"]["captions"] == [
        "pear",
        "fruit",
    ]  # "pear" once
    assert by["green apple"]["text"] == "green orchard" and by["green apple"]["captions"] == ["green apple"]
    assert by["pear tree"]["text"] == "tree blossom"


def _png(path, size: int, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste(colour, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    image.save(path)


def test_icons_take_each_name_once_per_theme_at_the_nearest_size_and_split_by_name(tmp_path):
    theme = tmp_path / "icons" / "Adwaita"
    dirs = {"16x16/places": ("Places", 16), "64x64/places": ("Places", 64), "256x256/places": ("Places", 256),
            "48x48/mimetypes": ("MimeTypes", 48), "48x48/animations": ("Animations", 48)}  # fmt: skip
    lines = ["[Icon Theme]", "Name=Adwaita", "Directories=" + ",".join(dirs)]
    for d, (context, size) in dirs.items():
        lines += [f"[{d}]", f"Context={context}", f"Size={size}", "Type=Fixed"]
    (theme).mkdir(parents=True)
    (theme / "index.theme").write_text("\n".join(lines) + "\n")
    names = [f"folder-{w}" for w in ("music", "videos", "pictures", "documents", "download", "games", "templates")]
    for i, name in enumerate(names):
        for d in ("16x16/places", "64x64/places", "256x256/places"):
            _png(theme / d / f"{name}.png", int(d.split("x")[0]), (i * 30, 100, 200 - i * 20, 255))
    _png(theme / "48x48/mimetypes/text-x-python.png", 48, (250, 200, 0, 255))
    _png(theme / "48x48/mimetypes/text-x-python-copy.png", 48, (250, 200, 0, 255))  # the same picture
    _png(theme / "48x48/animations/process-working.png", 48, (9, 9, 9, 255))  # a sprite sheet: left out
    for split in ("train", "test"):
        (tmp_path / "out" / split).mkdir(parents=True)
    made = make_icons(tmp_path / "out", 64, root=tmp_path / "icons")
    rows = made["rows"]
    assert made["notes"]["sources"] == {"Adwaita": f"{theme} (Debian adwaita-icon-theme)"}
    by = {r["name"]: r for r in rows}
    assert "process-working" not in by and len([n for n in by if "python" in n]) == 1  # identical images once
    assert by["text-x-python"]["text"] == "python" and by["text-x-python"]["captions"] == ["python", "python file"]
    assert by["folder-music"]["captions"] == ["folder music", "folder music place"]
    assert {r["split"] for r in rows} <= {"train", "test"}
    assert all(r["split"] == split_of(f"icon:{r['text']}") for r in rows)
    chosen = Image.open(tmp_path / "out" / by["folder-music"]["file_name"])
    assert chosen.size == (64, 64) and chosen.mode == "RGB" and chosen.getpixel((0, 0)) == (255, 255, 255)
    assert icon_caption("gtk-undelete-rtl", "Actions") == "undelete"
    assert icon_caption("airplane-mode-symbolic.symbolic", "Status") == "airplane mode"


def test_stamps_are_captioned_with_their_descriptions_english_line_and_leave_mirrors_out(tmp_path):
    root = tmp_path / "stamps"
    _png(root / "food" / "fruit" / "apple_red.png", 80, (220, 20, 20, 255))
    (root / "food" / "fruit" / "apple_red.txt").write_text("A red apple.\nfr.utf8=Une pomme rouge.\n")
    _png(root / "food" / "fruit" / "apple_red_mirror.png", 80, (220, 20, 20, 255))
    _png(root / "animals" / "cat.png", 40, (90, 90, 90, 255))  # no description: its name's words
    for split in ("train", "test"):
        (tmp_path / "out" / split).mkdir(parents=True)
    made = make_stamps(tmp_path / "out", 64, root=root)
    by = {r["name"]: r for r in made["rows"]}
    assert set(by) == {"apple_red", "cat"}
    assert by["apple_red"]["captions"] == ["A red apple", "food fruit apple red", "apple red"]
    assert by["apple_red"]["text"] == "A red apple" and by["cat"]["captions"] == ["animals cat", "cat"]
    assert all(r["split"] == split_of(f"stamp:{r['name']}") for r in made["rows"])
    image = Image.open(tmp_path / "out" / by["cat"]["file_name"])
    assert image.size == (64, 64) and image.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(FileNotFoundError, match="tuxpaint-stamps-default"):
        make_stamps(tmp_path / "out", 64, root=tmp_path / "none")
