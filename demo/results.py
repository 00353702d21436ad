"""How a search's hits look on the page: one HTML block per search (``render_hits``).

- code (text → code): the function's name, where it is (its file and the file's own line numbers,
  a link to the source where one is known: the standard library's lines in CPython's repository),
  the first line of its docstring, and its code (the docstring is above it), syntax-highlighted by
  Pygments, each line numbered as in the file (``file_lines``), the first ``CODE_LINES`` lines
  shown and the rest behind "show all N lines"; the query's words are marked (``<mark>``) in the
  name, the docstring and the code (``query_words``, ``mark``: case-insensitive, whole words or
  identifier parts such as ``csv`` in ``read_csv`` and ``CSVReader``, a plural's "s" optional);
- text (code → text): the docstring, with the function it belongs to and its code folded away;
- captions found by image (image → text): each beside the thumbnail of the image it belongs to,
  with the image's group and keywords where its payload has them;
- images (text → image): a grid of thumbnails captioned "rank. name (score)".

Everything taken from an index (code, docstrings, paths, names) is escaped; a link is made only of
an http(s) URL. Images are inlined as small PNG data URIs, so the app serves no file.
"""

from __future__ import annotations

import base64
import html
import io
import re
from functools import lru_cache

CODE_LINES = 8
THUMB = 256  # result and example images are sent at most this many pixels a side
STOPWORDS = frozenset(
    "a an and are as at be by for from given if in into is it its of on or that the this to with".split()
)
# Styles for the result blocks (passed to launch(css=...)): Pygments' own token colours are added
# at the end (``css``). On a narrow screen code wraps instead of scrolling sideways.
_CSS = """
.mmssl-hits { display: flex; flex-direction: column; gap: 14px; }
.mmssl-hit { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; }
.mmssl-head { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; }
.mmssl-head .rank { font-weight: 700; }
.mmssl-head .name { font-family: var(--font-mono); font-weight: 600; }
.mmssl-head .score, .mmssl-head .where { color: var(--body-text-color-subdued); font-size: 0.9em; }
.mmssl-doc { margin: 4px 0; }
.mmssl-hit pre { margin: 4px 0 0 0; padding: 6px 8px; overflow-x: auto; font-size: 0.85em; line-height: 1.35;
  background: var(--code-background-fill, var(--background-fill-secondary)); border-radius: 4px; }
.mmssl-hit .ln { display: inline-block; min-width: 3.2em; padding-right: 0.8em; text-align: right;
  color: var(--body-text-color-subdued); user-select: none; }
.mmssl-hit summary { cursor: pointer; color: var(--link-text-color, var(--color-accent)); font-size: 0.9em;
  margin-top: 2px; }
.mmssl-hit details[open] > summary::after { content: " (hide)"; }
.mmssl-hit mark { background: #ffe066; color: inherit; border-radius: 2px; padding: 0 1px; }
.mmssl-pictured { display: flex; gap: 12px; align-items: flex-start; }
.mmssl-pictured img { width: 72px; height: 72px; object-fit: contain; flex: none; }
.mmssl-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 160px)); gap: 12px; }
.mmssl-grid figure { margin: 0; text-align: center; }
.mmssl-grid img { width: 100%; max-width: 160px; aspect-ratio: 1; object-fit: contain; }
.mmssl-grid figcaption { font-size: 0.9em; overflow-wrap: anywhere; }
@media (max-width: 600px) {
  .tab-container button { padding: 0 5px !important; font-size: 13px !important; }
  .mmssl-hit pre { white-space: pre-wrap; overflow-wrap: anywhere; }
  .mmssl-hit .ln { min-width: 2.4em; padding-right: 0.4em; }
  .mmssl-grid { grid-template-columns: repeat(2, 1fr); }
}
"""


def css() -> str:
    """The result blocks' styles, with Pygments' token colours scoped to them."""
    from pygments.formatters import HtmlFormatter

    return _CSS + HtmlFormatter(style="friendly").get_style_defs(".mmssl-hit pre")


def query_words(query: str) -> list[str]:
    """The words of a text query worth marking: lowercased, two characters or more, no stopword,
    each once; a trailing "s" of a longer word dropped (matched as optional)."""
    out: list[str] = []
    for word in re.findall(r"[A-Za-z0-9]+", query.lower()):
        if len(word) < 2 or word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word not in out:
            out.append(word)
    return out


def word_pattern(words: list[str]) -> re.Pattern | None:
    """The words, case-insensitive, each with an optional plural "s", longest first (``mark`` checks
    where a match may start and end)."""
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?i)(?:{alternatives})s?")


def _starts_part(text: str, i: int) -> bool:
    """Whether an identifier part (or word) starts at ``text[i]``: after a non-alphanumeric (not an
    entity's ``&`` or ``#``), or at a camelCase step (``readCsv``)."""
    if i == 0:
        return True
    before = text[i - 1]
    if before in "&#":
        return False
    step = text[i].isupper() and (before.islower() or (before.isupper() and text[i + 1 : i + 2].islower()))
    return not before.isalnum() or step


def _ends_part(text: str, j: int) -> bool:
    """Whether an identifier part ends before ``text[j]``: at a non-alphanumeric, or at a camelCase
    step (``readCsv``, ``CSVReader``)."""
    if j >= len(text) or not text[j].isalnum():
        return True
    last = text[j - 1]
    return text[j].isupper() and (last.islower() or (j + 1 < len(text) and text[j + 1].islower()))


def _mark_text(text: str, pattern: re.Pattern) -> str:
    out, at = [], 0
    for m in pattern.finditer(text):
        i, j = m.span()
        if j - i > 1 and text[j - 1] in "sS" and not _ends_part(text, j):
            j -= 1  # the optional "s" was the next part's first letter
        if i < at or not (_starts_part(text, i) and _ends_part(text, j)):
            continue
        out += [text[at:i], f"<mark>{text[i:j]}</mark>"]
        at = j
    return "".join(out) + text[at:]


def mark(escaped: str, pattern: re.Pattern | None) -> str:
    """``escaped`` HTML with the pattern's whole-word (or whole identifier part) matches in its text,
    never inside a tag or an entity, wrapped in <mark>."""
    if pattern is None:
        return escaped
    parts = re.split(r"(<[^>]*>)", escaped)
    return "".join(p if p.startswith("<") else _mark_text(p, pattern) for p in parts)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _link(url) -> str | None:
    return url if isinstance(url, str) and re.match(r"https?://", url) else None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def line_span(url) -> tuple[int, int] | None:
    """(first, last) line of a ``...#L30-L43`` URL, else None."""
    m = re.search(r"#L(\d+)(?:-L(\d+))?$", url) if isinstance(url, str) else None
    return (int(m.group(1)), int(m.group(2) or m.group(1))) if m else None


def highlighted_lines(code: str, pattern: re.Pattern | None) -> list[str]:
    """``code`` as Python-highlighted HTML, one string per source line (Pygments closes its spans at
    each line end), with the pattern's matches marked."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    body = highlight(code, PythonLexer(stripnl=False, ensurenl=True), HtmlFormatter(nowrap=True))
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [mark(line, pattern) for line in lines]


def file_lines(original: str, code: str, first: int) -> list[int | None]:
    """The file's line number of each line of ``code`` (a function's source with its docstring taken
    out and dedented, as the miner records it) given ``original`` (the source as it stands in the
    file, from line ``first``): lines matched by their stripped text in order (difflib); None where a
    line has no match."""
    import difflib

    old = [line.strip() for line in original.splitlines()]
    new = [line.strip() for line in code.splitlines()]
    numbers: list[int | None] = [None] * len(new)
    for block in difflib.SequenceMatcher(None, old, new, autojunk=False).get_matching_blocks():
        for j in range(block.size):
            numbers[block.b + j] = first + block.a + j
    return numbers


def code_block(code: str, numbers: list[int | None], pattern: re.Pattern | None, shown: int = CODE_LINES) -> str:
    """The code, each line with its number (``numbers``; blank where None): its first ``shown``
    lines, then the rest folded (<details>). ``shown`` 0 folds all of it."""
    lines = highlighted_lines(code, pattern)
    numbers = numbers + [None] * (len(lines) - len(numbers))
    numbered = [f'<span class="ln">{n if n is not None else ""}</span>{line}' for n, line in zip(numbers, lines)]
    head, rest = numbered[:shown], numbered[shown:]
    if len(rest) <= 2 and shown:  # folding two lines saves nothing
        head, rest = numbered, []
    out = f'<pre class="code">{chr(10).join(head)}</pre>' if head else ""
    if rest:
        label = f"show all {len(lines)} lines" if head else f"show the code ({len(lines)} lines)"
        out += f'<details class="more"><summary>{label}</summary><pre class="code">{chr(10).join(rest)}</pre></details>'
    return out


def numbers_of(payload: dict, code: str, span: tuple[int, int] | None) -> list[int | None]:
    """The file's line numbers of ``code``'s lines where the payload says where it stands (its
    ``original_string`` and ``url``), else 1, 2, ..."""
    original = payload.get("original_string")
    if isinstance(original, str) and original and span:
        return file_lines(original, code, span[0])
    return list(range(1, len(code.splitlines()) + 1))


def _where(payload: dict, span: tuple[int, int] | None) -> str:
    path = payload.get("path") or payload.get("file_path")
    if not isinstance(path, str) or not path:
        return ""
    lines = f":{span[0]}–{span[1]}" if span else ""
    repo = payload.get("repo")
    where = f"{repo} · " if isinstance(repo, str) and repo and not path.startswith(repo + "/") else ""
    text = f'<span class="where" title="{_e(payload.get("url", ""))}">{_e(where + path + lines)}</span>'
    link = _link(payload.get("source_url"))
    if link:
        text += f' <a class="source" href="{_e(link)}" target="_blank" rel="noopener noreferrer">source ↗</a>'
    return text


def _head(hit: dict, name: str, pattern: re.Pattern | None, span, where: bool = True) -> str:
    return (
        f'<div class="mmssl-head"><span class="rank">{hit["rank"]}.</span>'
        + (f'<span class="name">{mark(_e(name), pattern)}</span>' if name else "")
        + f'<span class="score">score {hit["score"]:.4f}</span>'
        + (_where(hit["payload"], span) if where else "")
        + "</div>"
    )


def code_hit(hit: dict, pattern: re.Pattern | None) -> str:
    """One text → code result (see the module docstring)."""
    p = hit["payload"]
    span = line_span(p.get("url"))
    code = hit["text"]
    doc = p.get("docstring")
    summary = first_line(doc) if isinstance(doc, str) else ""
    return (
        '<div class="mmssl-hit">'
        + _head(hit, p.get("func_name") or "", pattern, span)
        + (f'<div class="mmssl-doc">{mark(_e(summary), pattern)}</div>' if summary else "")
        + code_block(code, numbers_of(p, code, span), pattern)
        + "</div>"
    )


def _about_image(payload: dict) -> str:
    """A captioned image's other words: its group and keywords, where its payload has them."""
    parts = []
    group = " / ".join(payload[k] for k in ("group", "subgroup") if isinstance(payload.get(k), str) and payload[k])
    if group:
        parts.append(group)
    keywords = payload.get("keywords")
    if isinstance(keywords, list) and keywords:
        parts.append("keywords: " + ", ".join(str(k) for k in keywords[:12]))
    return f'<div class="mmssl-doc where">{_e(" · ".join(parts))}</div>' if parts else ""


def text_hit(hit: dict, picture: str | None = None) -> str:
    """One text result: a docstring found by code (named by its function, where it stands, with the
    function's code folded), or, with ``picture`` (the image's data URI, "" when unreadable), a
    caption found by image beside the image (no server path is shown)."""
    p = hit["payload"]
    if picture is not None:
        name = shown_name(hit)
        head = _head(hit, name, None, None, where=False)
        body = (f'<div class="mmssl-doc">{_e(hit["text"])}</div>' if name != hit["text"] else "") + _about_image(p)
        image = f'<img src="{picture}" alt="{_e(name)}">' if picture else '<span class="noimage">(no image)</span>'
        return f'<div class="mmssl-hit mmssl-pictured">{image}<div>{head}{body}</div></div>'
    span = line_span(p.get("url"))
    body = f'<div class="mmssl-doc">{_e(hit["text"])}</div>'
    code = p.get("code")
    if isinstance(code, str) and code:
        body += code_block(code, numbers_of(p, code, span), None, shown=0)
    return f'<div class="mmssl-hit">{_head(hit, p.get("func_name") or "", None, span)}{body}</div>'


def image_grid(hits: list[dict]) -> str:
    cards = []
    for h in hits:
        uri = thumbnail_uri(image_path(h))
        caption = f"{h['rank']}. {shown_name(h)} ({h['score']:.3f})"
        image = f'<img src="{uri}" alt="{_e(shown_name(h))}">' if uri else ""
        cards.append(f"<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>")
    return f'<div class="mmssl-grid">{"".join(cards)}</div>'


def render_hits(hits: list[dict], result_kind: str, query=None, pictured: bool = False) -> str:
    """The HTML of one search's hits (``result_kind``: code | text | image; ``pictured``: captions
    found by image, each with its image). ``query``: a text query, whose words are marked."""
    if not hits:
        return ""
    if result_kind == "image":
        return image_grid(hits)
    pattern = word_pattern(query_words(query)) if isinstance(query, str) else None
    if result_kind == "code":
        blocks = [code_hit(h, pattern) for h in hits]
    else:
        blocks = [text_hit(h, (thumbnail_uri(image_path(h)) or "") if pictured else None) for h in hits]
    return f'<div class="mmssl-hits">{"".join(blocks)}</div>'


def image_path(hit: dict) -> str:
    """The hit's image file (its payload's ``path``; ``file_path`` as the API names it)."""
    p = hit["payload"]
    path = p.get("file_path") or p.get("path")
    return path if isinstance(path, str) else ""


def shown_name(hit: dict) -> str:
    """What a result is called on the page: its payload's ``label`` (an emoji's CLDR name, an icon's
    caption), else its text."""
    label = hit["payload"].get("label")
    return label if isinstance(label, str) and label else hit["text"]


def thumbnail(path: str):
    """The image at ``path`` (an indexed item's), RGB and at most THUMB pixels a side; None if unreadable."""
    from mmssl.data.image_text import BadImage, open_image

    try:
        image = open_image(path)
    except BadImage:
        return None
    image.thumbnail((THUMB, THUMB))
    return image


@lru_cache(maxsize=1024)
def thumbnail_uri(path: str, side: int = 160) -> str | None:
    """A PNG data URI of the image at ``path``, at most ``side`` pixels a side; None if unreadable."""
    image = thumbnail(path) if path else None
    if image is None:
        return None
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
