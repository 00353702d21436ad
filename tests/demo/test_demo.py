"""The Gradio search app: its API endpoints through gradio_client, its checks, and a real browser."""

from __future__ import annotations

import os
import socket

import pytest

from mmssl import cli
from mmssl.cli import merge_repeated
from tests.conftest import chromium, headless_browser

QUERY = "Parse the user given as input."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def indexes(tiny_model, code_corpus, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("demo")
    code, docs = str(root / "code-index"), str(root / "doc-index")
    base = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--lexical"]
    assert cli.main([*base, "--out", code]) == 0
    assert cli.main([*base, "--out", docs, "--modality", "text"]) == 0
    return [code, docs]


@pytest.fixture(scope="module")
def app_url(indexes):
    from demo.app import build_app, open_indexes

    app = build_app(open_indexes(indexes))
    app.queue(max_size=16, default_concurrency_limit=2)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_repeated_list_options_accumulate():
    flags = {"--index"}
    assert merge_repeated(["--index", "a", "--port", "1", "--index=b", "c"], flags) == [
        "--index", "a", "b", "c", "--port", "1",
    ]  # fmt: skip
    assert merge_repeated(["--host", "h"], flags) == ["--host", "h"]


def test_known_query_returns_its_code_at_rank_1_through_gradio_client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    for mode in ("lexical", "hybrid"):
        hits = client.predict(QUERY, "code-index", 3, mode, api_name="/text_to_code")
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert hits[0]["text"].startswith("def parse_user("), (mode, hits[0])
        assert hits[0]["payload"]["func_name"] == "parse_user" and hits[0]["payload"]["repo"].startswith("repo")
    # the other direction: code in, docstrings out
    code = "def load_file(file):\n    return load(file)"
    hits = client.predict(code, "doc-index", 2, "lexical", api_name="/code_to_text")
    assert hits[0]["text"] == "Load the file given as input."


def test_bad_requests_get_messages_not_tracebacks(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    cases = [
        (("", "code-index", 3, "dense"), "type a query first"),
        (("x" * 1001, "code-index", 3, "dense"), "limit is 1,000"),
        ((QUERY, "doc-index", 3, "dense"), "not in the list of choices|no text → code index named"),
        # Gradio checks the components' own limits first; the app checks the same in Python
        ((QUERY, "code-index", 99, "dense"), "greater than maximum value 20|k must be between 1 and 20"),
        ((QUERY, "code-index", 3, "fuzzy"), "not in the list of choices|mode 'fuzzy'"),
    ]
    for args, message in cases:
        with pytest.raises(AppError, match=message) as err:
            client.predict(*args, api_name="/text_to_code")
        assert "Traceback" not in str(err.value)


def test_search_checks_its_arguments_itself(indexes):
    """What the components check in the page, run_search checks again for any other caller."""
    from demo.app import TABS, SearchError, open_indexes, run_search

    loaded = open_indexes(indexes)
    spec = TABS[("text", "code")]
    hits = run_search(loaded, spec, QUERY, "code-index", 2, "lexical")
    assert hits[0]["payload"]["file_path"].startswith("pkg/") and "path" not in hits[0]["payload"]
    for args, message in [
        ((QUERY, "doc-index", 3, "dense"), "no text → code index named 'doc-index'"),
        ((QUERY, "code-index", 0, "dense"), "k must be between 1 and 20"),
        ((QUERY, "code-index", "many", "dense"), "k must be a whole number"),
        ((QUERY, "code-index", 3, "fuzzy"), "mode 'fuzzy'"),
        (("   ", "code-index", 3, "dense"), "type a query first"),
    ]:
        with pytest.raises(SearchError, match=message):
            run_search(loaded, spec, *args)
    # the app's BM25 weight reaches the fusion: at 0, hybrid ranks as dense does
    dense_only = open_indexes(indexes[:1], lexical_weight=0.0)
    hybrid = run_search(dense_only, spec, QUERY, "code-index", 5, "hybrid")
    dense = run_search(dense_only, spec, QUERY, "code-index", 5, "dense")
    assert [h["text"] for h in hybrid] == [h["text"] for h in dense]  # ids may differ among tied twins
    with pytest.raises(ValueError, match="lexical-weight"):
        open_indexes(indexes[:1], lexical_weight=-1)


def test_open_indexes_refuses_what_it_cannot_serve(indexes, tmp_path):
    from demo.app import open_indexes

    with pytest.raises(ValueError, match="two indexes are named"):
        open_indexes([indexes[0], indexes[0]])
    with pytest.raises(FileNotFoundError):
        open_indexes([str(tmp_path / "nothing")])


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="headless Chromium not installed (.ci/run installs the Debian packages chromium, chromium-driver)",
)
def test_browser_types_a_query_and_sees_the_result(app_url, tmp_path):
    """Headless Chromium: type a query, click Search, the known code appears; a screenshot is kept."""
    assert chromium() is not None, "MMSSL_REQUIRE_SYSTEM_PACKAGES is set but chromium/chromedriver are missing"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver, artifacts = headless_browser()
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea[placeholder^='describe']")))
        box.send_keys("parse user given as input")

        def shown(xpath):
            return next(e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed())

        shown("//label[.//input[@type='radio' and @value='hybrid']]").click()  # the tiny model needs BM25's help
        shown("//button[normalize-space()='Search']").click()
        wait.until(lambda d: "def parse_user(" in d.find_element(By.TAG_NAME, "body").text)
        assert "score" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.save_screenshot(str(artifacts / "demo-search.png"))
        driver.quit()


def test_default_pipeline_builds_once_then_reuses(tmp_path, capsys):
    """`make demo`'s pipeline on a slice of the standard library: corpus, model, two indexes, and
    the emoji set with its LiT model and two image indexes; the second run rebuilds nothing."""
    from mmssl.data.images import CLDR_ANNOTATIONS, EMOJI_FONT, EMOJI_TEST

    emoji = all(p.is_file() for p in (EMOJI_FONT, CLDR_ANNOTATIONS, EMOJI_TEST))
    assert emoji or not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"), "the emoji packages are required here"
    out = tmp_path / "demo"
    argv = ["demo", "default", "--out", str(out), "--model", "scratch", "--steps", "3", "--max-files", "300"]
    argv += ["--max-items", "400", "--image-steps", "2", "--no_launch"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "reusing" not in first and "ready in" in first
    paths = [out / "scratch" / "code-index", out / "scratch" / "doc-index"]
    if emoji:
        paths += [out / "emoji" / "image-index", out / "emoji" / "caption-index"]
    else:
        assert "no image tabs" in first
    assert all((p / "manifest.json").is_file() for p in paths)
    assert (out / "scratch" / "model" / "dual_encoder.json").is_file()
    assert cli.main(argv) == 0
    # corpus, model, both indexes; and the image model and both image indexes
    assert capsys.readouterr().out.count("reusing") == (7 if emoji else 4)
    from demo.app import open_indexes

    loaded = open_indexes(paths)
    pairs = {("text", "code"), ("code", "text")} | ({("text", "image"), ("image", "text")} if emoji else set())
    assert {item.pair for item in loaded.values()} == pairs
