"""Real image-caption sets from Debian packages, made offline: emoji, icon themes, Tux Paint stamps.

``make_emoji``, ``make_icons`` and ``make_stamps`` are the ``emoji``, ``icons`` and ``stamps`` kinds
of ``mmssl data make-images`` (``mmssl.data.images`` writes the folder). Each gives every image
several captions (the ``captions`` field, the captions training draws from, one per step) and splits
by image (a test image is never a training image); the emoji split also holds out caption words (a
test emoji's ``text`` is made of keywords that are no training caption), the icons' drops a test
icon whose caption is a training caption. The dataset card records how.

emoji  the emoji of ``fonts-noto-color-emoji`` (Noto Color Emoji, SIL Open Font License 1.1), drawn
       by Pillow at the font's one bitmap size and resized; captioned from ``unicode-cldr-core``
       (CLDR annotations, Unicode licence): the short name ("red apple") and each keyword ("apple",
       "fruit", "red"); group and subgroup from ``unicode-data`` (``emoji-test.txt``: "Food &
       Drink", "food-fruit") for zero-shot classification. 1 in 5 code points to test. A training
       row's ``text`` is its name, its ``captions`` the name and every keyword; a test row's ``text``
       is its keywords that are no training caption (no training emoji's name or keyword), joined,
       and its ``captions`` only its name, so that a model trained on every image (as the demo's) is
       still never shown a test query. A test emoji without such keywords moves to train (counted).
       Flags, keycaps and skin-tone variants are not in CLDR's annotations, so not in the set.
icons  the named icons of the installed icon themes (``ICON_THEMES``: Adwaita, GNOME, Oxygen,
       Tango), one PNG per theme and name (the smallest at least the image size, else the largest),
       composited on white and resized; identical images once. The name's words are the caption
       (``folder-music`` -> "folder music"; a MIME type ``text-x-python`` -> "python"), and the
       same with the theme context's word ("folder music place", "python file"). Split by icon
       name, so that every theme's version of a test icon is a test image; a test row whose caption
       is a training caption is left out.
stamps the PNG stamps of ``tuxpaint-stamps-default`` (Tux Paint's clip art: animals, food, vehicles,
       plants ..., GPL-2+), composited on white and resized, captioned with the English line of each
       stamp's description ("A red apple."), its file name's words and its folder's ("food fruit
       apple red"); mirrored copies left out. Split by stamp name, 1 in 5 to test.
"""

from __future__ import annotations

import configparser
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR_ANNOTATIONS = Path("/usr/share/unicode/cldr/common/annotations/en.xml")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")  # Debian unicode-data: groups, subgroups
EMOJI_PACKAGES = ("fonts-noto-color-emoji", "unicode-cldr-core", "unicode-data")
EMOJI_SIZE = 109  # the one bitmap size Noto Color Emoji ships

ICON_ROOT = Path("/usr/share/icons")
ICON_THEMES = {  # theme folder -> Debian package
    "Adwaita": "adwaita-icon-theme",
    "gnome": "gnome-icon-theme",
    "oxygen": "oxygen-icon-theme",
    "Tango": "tango-icon-theme",
}
# a theme directory's Context -> the word its captions gain; contexts not here are left out
# (Animations: sprite sheets; Stock, UI: toolkit parts)
ICON_CONTEXTS = {
    "Actions": "action",
    "Applications": "application",
    "Categories": "category",
    "Devices": "device",
    "Emblems": "emblem",
    "Emotes": "emote",
    "FileSystems": "folder",
    "International": "flag",
    "Legacy": "",
    "MimeTypes": "file",
    "Places": "place",
    "Status": "status",
}
STAMP_ROOT = Path("/usr/share/tuxpaint/stamps")
STAMP_PACKAGE = "tuxpaint-stamps-default"
MIME_MAJOR = ("application", "text", "image", "audio", "video", "inode", "x", "vnd")
NAME_PREFIXES = ("x", "gtk", "gnome", "stock", "kde")  # toolkit prefixes, not words of what is drawn
NAME_SUFFIXES = ("symbolic", "rtl", "ltr")


def split_of(key: str, test_every: int = 5) -> str:
    """A fixed split from a stable hash of ``key`` (not Python's salted ``hash``)."""
    return "test" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % test_every == 0 else "train"


def licences(package: str) -> str:
    """The ``License:`` fields of a Debian package's copyright file, joined ("" if it has none)."""
    path = Path("/usr/share/doc") / package / "copyright"
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found = dict.fromkeys(line.split(":", 1)[1].strip() for line in lines if line.startswith("License:"))
    return "; ".join(found)


# ---- emoji ---------------------------------------------------------------------------------------


def cldr_annotations(path: Path = CLDR_ANNOTATIONS) -> dict[str, tuple[str, list[str]]]:
    """code point sequence -> (short name, keywords) from a CLDR annotations file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; install the Debian package unicode-cldr-core")
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for node in ET.parse(path).getroot().iter("annotation"):
        cp, text = node.get("cp"), (node.text or "").strip()
        if not cp or not text:
            continue
        if node.get("type") == "tts":
            names[cp] = text
        else:
            keywords[cp] = [k.strip() for k in text.split("|") if k.strip()]
    return {cp: (name, keywords.get(cp, [])) for cp, name in names.items()}


def emoji_groups(path: Path = EMOJI_TEST) -> dict[str, tuple[str, str]]:
    """code point sequence (without U+FE0F) -> (group, subgroup) from Unicode's ``emoji-test.txt``
    ("Animals & Nature", "animal-mammal"): the categories of zero-shot classification."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; install the Debian package unicode-data")
    groups: dict[str, tuple[str, str]] = {}
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line:
            cps = line.split(";", 1)[0].split()
            key = "".join(chr(int(c, 16)) for c in cps).replace("\ufe0f", "")
            groups.setdefault(key, (group, subgroup))
    return groups


def render_emoji(font, cp: str, size: int):
    """The emoji as a (size, size) RGB image on white, or None when the font has no colour glyph."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((8, 8), cp, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    rgb = glyph.convert("RGB")
    if max(hi - lo for lo, hi in rgb.getextrema()) < 30:  # no colour: a blank or monochrome stand-in
        return None
    return square_on_white(glyph, size)


def square_on_white(image, size: int):
    """An RGBA image centred on a white square, resized to (size, size) RGB."""
    from PIL import Image

    side = max(image.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(image.convert("RGBA"), ((side - image.width) // 2, (side - image.height) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS)


def emoji_captions(rows: list[dict]) -> int:
    """Set each row's ``text`` and ``captions`` (the module docstring's rule); a test emoji left with
    no keyword of its own moves to train (which can leave another without one: repeated until none
    does). Returns how many moved."""
    moved = 0
    while True:
        seen = {c.lower() for r in rows if r["split"] == "train" for c in (r["name"], *r["keywords"])}
        stale = []
        for r in rows:
            if r["split"] == "train":
                r["text"], r["captions"] = r["name"], list(dict.fromkeys([r["name"], *r["keywords"]]))
                continue
            fresh = [k for k in r["keywords"] if k.lower() not in seen and k.lower() != r["name"].lower()]
            r["text"], r["captions"] = " ".join(fresh), [r["name"]]
            if not fresh or r["text"].lower() in seen or r["text"].lower() == r["name"].lower():
                stale.append(r)
        if not stale:
            return moved
        for r in stale:
            r["split"] = "train"
        moved += len(stale)


def make_emoji(tmp: Path, size: int) -> dict:
    from PIL import ImageFont

    if not EMOJI_FONT.is_file():
        raise FileNotFoundError(f"{EMOJI_FONT}: missing; install the Debian package fonts-noto-color-emoji")
    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_SIZE)
    groups = emoji_groups()
    rows, images = [], {}
    for cp, (name, kws) in sorted(cldr_annotations().items()):
        image = render_emoji(font, cp, size)
        if image is not None:
            images[cp] = image
            group, subgroup = groups.get(cp.replace("\ufe0f", ""), ("", ""))
            row = {"cp": cp, "name": name, "keywords": kws, "split": split_of(cp), "group": group}
            rows.append({**row, "subgroup": subgroup})
    moved = emoji_captions(rows)
    for r in rows:
        codepoints = "-".join(f"{ord(ch):04x}" for ch in r["cp"])
        r["file_name"] = f"{r['split']}/{codepoints}.png"
        r["label"] = r["name"]
        images[r["cp"]].save(tmp / r["file_name"])
    return {
        "rows": rows,
        "notes": {
            "split": "by image: sha1(code points) % 5 == 0 -> test; by caption words: a test image's text "
            "is its keywords that are no training caption (a test emoji without one moves to train)",
            "captions": "train: text = the CLDR short name, captions = the name and each keyword; test: text = "
            "the keywords that no training caption is, joined; captions = the name alone",
            "holds": "the emoji of Noto Color Emoji that CLDR names; not flags, keycaps or skin-tone variants",
            "test_without_fresh_keywords_moved_to_train": moved,
            "sources": {
                "images": f"{EMOJI_FONT} (Debian fonts-noto-color-emoji)",
                "captions": f"{CLDR_ANNOTATIONS} (Debian unicode-cldr-core)",
                "groups": f"{EMOJI_TEST} (Debian unicode-data)",
            },
            "licences": {p: licences(p) or "see its copyright file" for p in EMOJI_PACKAGES},
        },
    }


# ---- icons ---------------------------------------------------------------------------------------


def icon_caption(name: str, context: str) -> str:
    """The words of an icon name: ``folder-music`` -> "folder music", ``text-x-python`` -> "python",
    ``gtk-undelete-rtl`` -> "undelete"."""
    words = [w for w in name.replace(".", "-").replace("_", "-").split("-") if w]
    while len(words) > 1 and words[-1] in NAME_SUFFIXES:
        words.pop()
    while len(words) > 1 and words[0] in NAME_PREFIXES:
        words.pop(0)
    if context == "MimeTypes":
        words = [w for w in words if w not in MIME_MAJOR] or words
    return " ".join(words)


def theme_icons(theme: Path, size: int) -> dict[str, tuple[Path, str]]:
    """icon name -> (its PNG nearest ``size`` from above, else the largest; the directory's Context)."""
    index = configparser.ConfigParser(interpolation=None, strict=False)
    index.read(theme / "index.theme", encoding="utf-8")
    best: dict[str, tuple[int, Path, str]] = {}
    for folder in index.get("Icon Theme", "Directories", fallback="").split(","):
        if not index.has_section(folder):
            continue
        context = index.get(folder, "Context", fallback="")
        px = index.getint(folder, "Size", fallback=0)
        if context not in ICON_CONTEXTS or px <= 0:
            continue
        for png in sorted((theme / folder).glob("*.png")):
            rank = px - size if px >= size else 10_000 - px  # the smallest at least `size`, else the largest
            if png.stem not in best or rank < best[png.stem][0]:
                best[png.stem] = (rank, png, context)
    return {name: (png, context) for name, (_, png, context) in best.items()}


def make_icons(tmp: Path, size: int, root: Path = ICON_ROOT) -> dict:
    from PIL import Image

    from mmssl.data.image_text import to_rgb

    themes = {t: p for t, p in ICON_THEMES.items() if (root / t / "index.theme").is_file()}
    if not themes:
        packages = " ".join(ICON_THEMES.values())
        raise FileNotFoundError(f"{root}: none of the icon themes {', '.join(ICON_THEMES)}; install {packages}")
    rows, seen_images = [], set()
    for theme in themes:
        for name, (png, context) in sorted(theme_icons(root / theme, size).items()):
            caption = icon_caption(name, context)
            if not caption:
                continue
            with Image.open(png) as im:
                image = square_on_white(to_rgb(im).convert("RGBA"), size)
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            if digest in seen_images:
                continue  # a link or copy of an icon already in the set
            seen_images.add(digest)
            word = ICON_CONTEXTS[context]
            captions = list(dict.fromkeys([caption, f"{caption} {word}".strip()]))
            row = {"name": name, "theme": theme, "context": context, "split": split_of(f"icon:{caption}")}
            rows.append({**row, "text": caption, "captions": captions, "label": caption, "image": image})
    train_captions = {c for r in rows if r["split"] == "train" for c in r["captions"]}
    kept, dropped = [], 0
    for i, r in enumerate(rows):
        if r["split"] == "test" and r["text"] in train_captions:
            dropped += 1
            continue
        r["file_name"] = f"{r['split']}/{i:05d}.png"
        r.pop("image").save(tmp / r["file_name"])
        kept.append(r)
    return {
        "rows": kept,
        "notes": {
            "split": "by icon name: sha1('icon:' + caption) % 5 == 0 -> test (every theme's version alike)",
            "captions": "the icon name's words, and the same with its theme context's word",
            "holds": f"the named icons of the themes {', '.join(themes)}; identical images once",
            "test_caption_is_a_training_caption_dropped": dropped,
            "sources": {t: f"{root / t} (Debian {p})" for t, p in themes.items()},
            "licences": {p: licences(p) or "see its copyright file" for p in themes.values()},
        },
    }


# ---- Tux Paint stamps ----------------------------------------------------------------------------


def stamp_captions(png: Path, root: Path) -> list[str]:
    """[the description's English line, "<folders> <name words>"] of one stamp."""
    words = " ".join(png.stem.replace("-", "_").split("_"))
    folders = " ".join(png.parent.relative_to(root).parts)
    captions = []
    text = png.with_suffix(".txt")
    if text.is_file():
        first = text.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        line = first[0].strip().rstrip(".") if first else ""
        if line and "=" not in line:  # the English line comes first, the translations as lang=...
            captions.append(line)
    return list(dict.fromkeys([*captions, f"{folders} {words}".strip(), words]))


def make_stamps(tmp: Path, size: int, root: Path = STAMP_ROOT) -> dict:
    from PIL import Image

    from mmssl.data.image_text import to_rgb

    if not root.is_dir():
        raise FileNotFoundError(f"{root}: missing; install the Debian package {STAMP_PACKAGE}")
    rows = []
    for i, png in enumerate(p for p in sorted(root.rglob("*.png")) if not p.stem.endswith(("_mirror", "_flip"))):
        captions = stamp_captions(png, root)
        split = split_of(f"stamp:{png.stem}")
        with Image.open(png) as im:
            image = square_on_white(to_rgb(im).convert("RGBA"), size)
        row = {"name": png.stem, "folder": str(png.parent.relative_to(root)), "split": split}
        rows.append({**row, "text": captions[0], "captions": captions, "label": captions[0]})
        rows[-1]["file_name"] = f"{split}/{i:05d}.png"
        image.save(tmp / rows[-1]["file_name"])
    return {
        "rows": rows,
        "notes": {
            "split": "by stamp name: sha1('stamp:' + name) % 5 == 0 -> test",
            "captions": "the description's English line, the folders and name's words, the name's words",
            "holds": "the PNG clip art of Tux Paint's default stamps (SVG stamps and mirrored copies left out)",
            "sources": {"images": f"{root} (Debian {STAMP_PACKAGE})"},
            "licences": {STAMP_PACKAGE: licences(STAMP_PACKAGE) or "see its copyright file"},
        },
    }
