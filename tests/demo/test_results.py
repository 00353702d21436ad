"""``demo.results``: how hits look on the page (marked query words, the file's line numbers, folded
code, escaping), on functions mined from a file written here."""

from __future__ import annotations

import re

import pytest

from demo.results import code_block, file_lines, mark, query_words, render_hits, word_pattern

SOURCE = '''"""A module."""
import csv


class Reader:
    """Reads."""

    def read_csv_rows(self, path, limit=None):
        """Read the rows of a CSV file at path.

        More words here.
        """
        rows = []
        with open(path) as f:
            for row in csv.reader(f):
                rows.append(row)
                if limit and len(rows) >= limit:
                    break
        # done reading
        total = len(rows)
        first = rows[0] if rows else None
        last = rows[-1] if rows else None
        return rows, total, first, last
'''


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """The one function of SOURCE as the miner records it."""
    from mmssl.data.python_file import mine_file
    from mmssl.data.sources import SourceFile

    root = tmp_path_factory.mktemp("src")
    (root / "reader.py").write_text(SOURCE)
    result = mine_file(SourceFile(root / "reader.py", "reader.py", "reader"), (3, 3))
    (record,) = result.records
    return record


def hit(record: dict, rank: int = 1) -> dict:
    payload = {k: v for k, v in record.items() if k not in ("code", "code_tokens", "docstring_tokens")}
    return {"rank": rank, "id": rank, "score": 0.5, "text": record["code"], "payload": payload}


def test_query_words_drop_stopwords_and_plurals():
    assert query_words("Read the rows of a CSV files, readers") == ["read", "row", "csv", "file", "reader"]
    assert query_words("a to of") == [] and query_words("class") == ["class"]  # "ss" is no plural


@pytest.mark.parametrize(
    ("text", "marked"),
    [
        ("read_csv(path)", "<mark>read</mark>_<mark>csv</mark>(path)"),
        ("CSVReader", "<mark>CSV</mark>Reader"),
        ("readCsv", "<mark>read</mark><mark>Csv</mark>"),
        ("reader csvs", "reader <mark>csvs</mark>"),
        ("csvfile already", "csvfile already"),  # inside a word: not marked
        ('<span class="csv">&amp;csv</span>', '<span class="csv">&amp;<mark>csv</mark></span>'),
    ],
)
def test_marks_whole_words_and_identifier_parts_never_inside_tags_or_entities(text, marked):
    assert mark(text, word_pattern(["read", "csv", "amp"])) == marked


def test_each_code_line_carries_its_own_line_number_in_the_file(mined, tmp_path):
    """The slow reference: each numbered line, looked up in the file itself, is that line."""
    first = int(re.search(r"#L(\d+)-", mined["url"]).group(1))
    numbers = file_lines(mined["original_string"], mined["code"], first)
    file = SOURCE.splitlines()
    code = mined["code"].splitlines()
    assert len(numbers) == len(code) and None not in numbers
    assert numbers[0] == 8 and numbers[1] == 13  # the def line, then past the docstring's four lines
    for n, line in zip(numbers, code):
        assert file[n - 1].strip() == line.strip()


def test_code_shows_eight_lines_then_folds_the_rest(mined):
    html = render_hits([hit(mined)], "code", "read csv rows")
    shown, folded = html.split("<details", 1)
    assert shown.count('class="ln"') == 8 and "show all 12 lines" in folded
    assert '<span class="ln">8</span>' in shown and '<span class="ln">13</span>' in shown
    assert "Reader.read_csv_rows" in re.sub("<[^>]+>", "", html)  # the name, marks taken out
    assert "<mark>Read</mark> the <mark>rows</mark> of a <mark>CSV</mark> file at path." in html  # the docstring's line
    assert "More words" not in html
    short = code_block("x = 1\ny = 2\nz = 3", [1, 2, 3], None)
    assert "<details" not in short and short.count('class="ln"') == 3
    nine = code_block("\n".join(f"x{i} = {i}" for i in range(10)), list(range(1, 11)), None)
    assert "<details" not in nine  # folding two lines saves nothing


def test_everything_from_the_index_is_escaped_and_only_web_links_are_made(mined):
    record = {
        **mined,
        "func_name": "<img src=x onerror=alert(1)>",
        "docstring": "<script>alert(1)</script>",
        "code": "def f():\n    return '</pre><script>alert(2)</script>'\n",
        "source_url": "javascript:alert(3)",
    }
    html = render_hits([hit(record)], "code", "script")
    assert "<script" not in html and "<img src=x" not in html and "javascript:" not in html
    assert "&lt;script&gt;" in html or "&lt;/<mark>script</mark>&gt;" in html
    stdlib = {**mined, "source_url": "https://github.com/python/cpython/blob/v3.11.7/Lib/csv.py#L1-L2"}
    assert 'href="https://github.com/python/cpython/blob/v3.11.7/Lib/csv.py#L1-L2"' in render_hits(
        [hit(stdlib)], "code"
    )


def test_images_come_as_inline_thumbnails_and_captions_without_server_paths(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 200), "red").save(tmp_path / "red.png")
    payload = {"path": str(tmp_path / "red.png"), "label": "red square", "keywords": ["red", "square"]}
    h = {"rank": 1, "id": 0, "score": 0.9, "text": "red square", "payload": {**payload}}
    grid = render_hits([h], "image")
    assert "data:image/png;base64," in grid and "1. red square (0.900)" in grid and str(tmp_path) not in grid
    captions = render_hits([h], "text", pictured=True)
    assert "data:image/png;base64," in captions and "keywords: red, square" in captions
    assert str(tmp_path) not in captions
    gone = {**h, "payload": {**payload, "path": str(tmp_path / "gone.png")}}
    assert "(no image)" in render_hits([gone], "text", pictured=True)
