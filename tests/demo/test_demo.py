"""The Gradio search app: its API endpoints through gradio_client, its checks (hostile query images
and uploads included), where its files go, and a real browser."""

from __future__ import annotations

import os
import re
import resource
import signal
import time
from pathlib import Path

import pytest

from mmssl import cli
from mmssl.cli import merge_repeated
from tests.conftest import chromium, free_port, headless_browser
from tests.demo.hostile import hostile_images, normal_images

QUERY = "Parse the user given as input."


@pytest.fixture(scope="module")
def indexes(tiny_model, code_corpus, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("demo")
    code, docs = str(root / "code-index"), str(root / "doc-index")
    base = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--lexical"]
    assert cli.main([*base, "--out", code]) == 0
    assert cli.main([*base, "--out", docs, "--modality", "text"]) == 0
    return [code, docs]


def image_index_at(root: Path) -> str:
    """An image → text index (captions searched by image) of 40 shapes, an untrained micro model."""
    import torch

    from mmssl.models import DualEncoder, DualEncoderConfig
    from mmssl.models.clip_text import ClipTextConfig
    from mmssl.models.image import ImageTowerConfig

    assert (
        cli.main(
            ["data", "make-images", "--kind", "shapes", "--out", str(root / "shapes"), "--count", "40", "--size", "32"]
        )
        == 0
    )
    towers = {"text": ClipTextConfig("mmssl-vit-micro"), "image": ImageTowerConfig("mmssl-vit-micro")}
    torch.manual_seed(0)
    DualEncoder.build(DualEncoderConfig(("text", "image"), towers, embed_dim=32)).save_pretrained(root / "model")
    argv = ["index", "build", "--model", str(root / "model"), "--data", str(root / "shapes"), "--device", "cpu"]
    assert cli.main([*argv, "--out", str(root / "captions"), "--modality", "text"]) == 0
    return str(root / "captions")


@pytest.fixture(scope="module")
def image_index(tmp_path_factory) -> str:
    return image_index_at(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def app_url(indexes, image_index):
    """The app as ``mmssl demo`` runs it (``demo.app.serving``), over text → code, code → text and
    image → text indexes."""
    from demo.app import serving
    from demo.search import open_indexes

    with serving(open_indexes([*indexes, image_index]), "127.0.0.1", free_port(), quiet=True) as app:
        yield app.local_url


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
        result = client.predict(QUERY, "code-index", 3, mode, api_name="/text_to_code")
        hits = result["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert hits[0]["text"].startswith("def parse_user("), (mode, hits[0])
        assert hits[0]["payload"]["func_name"] == "parse_user" and hits[0]["payload"]["repo"].startswith("repo")
        assert result["took_ms"] > 0 and isinstance(result["note"], str)
    # the other direction: code in, docstrings out
    code = "def load_file(file):\n    return load(file)"
    hits = client.predict(code, "doc-index", 2, "lexical", api_name="/code_to_text")["hits"]
    assert hits[0]["text"] == "Load the file given as input."


def test_the_api_names_its_parameters_and_types_k_as_an_integer(app_url):
    from gradio_client import Client

    api = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)
    for endpoint in ("/text_to_code", "/code_to_text", "/image_to_text"):
        params = api["named_endpoints"][endpoint]["parameters"]
        assert [p["parameter_name"] for p in params] == ["query", "index", "k", "mode", "within"], endpoint
        k = next(p for p in params if p["parameter_name"] == "k")
        assert k["type"]["type"] == "integer" and k["parameter_default"] == 10
        within = next(p for p in params if p["parameter_name"] == "within")
        assert within["parameter_has_default"] and within["parameter_default"] == ""


def test_search_within_a_package_returns_only_its_items_and_the_menu_counts_them(app_url, indexes):
    from gradio_client import Client

    from demo.search import open_indexes

    filters = open_indexes(indexes[:1])["code-index"].filters
    assert filters[0] == ("package repo0 (40)", "repo=repo0") and len(filters) == 25  # 1,000 items, 25 repos
    client = Client(app_url, verbose=False)
    hits = client.predict("parse the user", "code-index", 20, "dense", "repo=repo7", api_name="/text_to_code")["hits"]
    assert len(hits) == 20 and {h["payload"]["repo"] for h in hits} == {"repo7"}
    everywhere = client.predict("parse the user", "code-index", 20, "dense", "", api_name="/text_to_code")["hits"]
    assert len({h["payload"]["repo"] for h in everywhere}) > 1


def test_bad_requests_get_messages_not_tracebacks(app_url, capfd):
    """Each bad request is answered with the app's one line, and the server's console (this
    process: the app runs in a thread of it) shows no traceback for any of them."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    capfd.readouterr()
    cases = [
        (("", "code-index", 3, "dense"), "type a query first"),
        (("x" * 1001, "code-index", 3, "dense"), "limit is 1,000"),
        ((QUERY, "doc-index", 3, "dense"), "no text → code index named 'doc-index'"),
        ((QUERY, "code-index", 999, "dense"), "k must be between 1 and 100"),
        ((QUERY, "code-index", 2.5, "dense"), "k must be a whole number"),
        ((QUERY, "code-index", 3, "fuzzy"), "mode 'fuzzy'"),
        ((QUERY, "code-index", 3, "dense", "repo=nowhere"), "within 'repo=nowhere'"),
    ]
    for args, message in cases:
        with pytest.raises(AppError, match=message) as err:
            client.predict(*args, api_name="/text_to_code")
        assert "Traceback" not in str(err.value)
    console = capfd.readouterr()
    assert "Traceback" not in console.out + console.err


def test_search_checks_its_arguments_itself(indexes):
    """What the components check in the page, run_search checks again for any other caller."""
    from demo.search import TABS, open_indexes, run_search
    from demo.uploads import SearchError

    loaded = open_indexes(indexes)
    spec = TABS[("text", "code")]
    hits = run_search(loaded, spec, QUERY, "code-index", 2, "lexical")["hits"]
    assert hits[0]["payload"]["file_path"].startswith("pkg/") and "path" not in hits[0]["payload"]
    for args, message in [
        ((QUERY, "doc-index", 3, "dense"), "no text → code index named 'doc-index'"),
        ((QUERY, "code-index", 0, "dense"), "k must be between 1 and 100"),
        ((QUERY, "code-index", 3, "dense", "repo=nowhere"), "within 'repo=nowhere': code-index offers repo=repo0"),
        ((QUERY, "code-index", 3, "dense", "path=pkg/mod1.py"), "within 'path=pkg/mod1.py'"),  # not in its menu
        ((QUERY, "code-index", "many", "dense"), "k must be a whole number"),
        ((QUERY, "code-index", 3, "fuzzy"), "mode 'fuzzy'"),
        (("   ", "code-index", 3, "dense"), "type a query first"),
    ]:
        with pytest.raises(SearchError, match=message):
            run_search(loaded, spec, *args)
    # the app's BM25 weight reaches the fusion: at 0, hybrid ranks as dense does
    dense_only = open_indexes(indexes[:1], lexical_weight=0.0)
    hybrid = run_search(dense_only, spec, QUERY, "code-index", 5, "hybrid")["hits"]
    dense = run_search(dense_only, spec, QUERY, "code-index", 5, "dense")["hits"]
    assert [h["text"] for h in hybrid] == [h["text"] for h in dense]  # ids may differ among tied twins
    with pytest.raises(ValueError, match="lexical-weight"):
        open_indexes(indexes[:1], lexical_weight=-1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_hostile_query_images_get_the_apps_refusal_not_gigabytes(app_url, tmp_path):
    """A 600000 x 1 strip (which the towers' shortest-side resize would blow up to gigabytes),
    decompression bombs, truncated, corrupt, non-image and empty files: each is answered at once
    with the app's one-line refusal, and the server (this process) never decodes one."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    normal = normal_images(tmp_path / "normal")
    for path in normal:
        hits = client.predict(handle_file(str(path)), "captions", 3, "dense", api_name="/image_to_text")["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3], path.name
    hostile = hostile_images(tmp_path / "hostile")
    before = peak_rss_mb()
    for name, (path, message) in hostile.items():
        with pytest.raises(AppError, match=message) as err:
            client.predict(handle_file(str(path)), "captions", 3, "dense", api_name="/image_to_text")
        assert not re.search(r"Traceback|mmssl-demo-|/tmp/", str(err.value)), (name, str(err.value))
    # never decoded (the next test checks that without a clock): the strip resized took 2.4 GB, the bomb 1.1 GB
    assert peak_rss_mb() - before < 300


def test_query_images_are_refused_from_their_header_before_decoding(image_index, tmp_path, monkeypatch):
    """What the app refuses by size it refuses without decoding (``load``), and direct callers of
    ``run_search`` with a PIL image get the same checks."""
    from PIL import Image, ImageFile

    from demo.search import TABS, open_indexes, run_search
    from demo.uploads import MAX_UPLOAD_BYTES, SearchError, open_query_image

    loaded, spec = open_indexes([image_index]), TABS[("image", "text")]
    hostile = hostile_images(tmp_path)
    ok = normal_images(tmp_path / "ok")[0]
    assert open_query_image(str(ok)).mode == "RGB"

    def no_decoding(self):
        raise AssertionError("decoded an image that its header already ruled out")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in ("strip 600000x1", "bomb 144 MP", "bomb 225 MP"):
        path, message = hostile[name]
        with pytest.raises(SearchError, match=message):
            open_query_image(str(path))
    big = tmp_path / "big.png"
    big.write_bytes(ok.read_bytes() + bytes(MAX_UPLOAD_BYTES))
    with pytest.raises(SearchError, match="the limit is 20,000,000"):
        open_query_image(str(big))
    with pytest.raises(SearchError, match="more than 20:1"):
        run_search(loaded, spec, Image.new("L", (600_000, 1)), "captions", 3, "dense")
    with pytest.raises(SearchError, match="upload or pick an image first"):
        run_search(loaded, spec, {"path": None}, "captions", 3, "dense")


def test_uploads_are_capped_kept_in_the_apps_own_folder_and_removed_with_it(image_index, tmp_path, monkeypatch):
    """Gradio refuses an upload over the cap (413) and stores the others in a folder of this run's own,
    not the shared /tmp/gradio; the folder goes when the app stops. An app with image queries pins
    glibc's mmap threshold (uploads' buffers go back to the system)."""
    import httpx

    import demo.app
    from demo.app import serving
    from demo.search import open_indexes
    from demo.uploads import MAX_UPLOAD_BYTES

    pinned = []
    monkeypatch.setattr(demo.app, "pin_mmap_threshold", lambda: pinned.append(True))
    before = os.environ.get("GRADIO_TEMP_DIR")
    with serving(open_indexes([image_index]), "127.0.0.1", free_port(), quiet=True) as app:
        assert pinned == [True]
        folder = Path(os.environ["GRADIO_TEMP_DIR"])
        assert folder.name.startswith("mmssl-demo-") and folder.stat().st_mode & 0o077 == 0
        upload = app.local_url + "gradio_api/upload"
        too_big = httpx.post(upload, files={"files": ("big.png", bytes(MAX_UPLOAD_BYTES + 1))}, timeout=60)
        assert too_big.status_code == 413, too_big.text
        assert all(p.stat().st_size <= MAX_UPLOAD_BYTES for p in folder.rglob("*") if p.is_file())
        ok = normal_images(tmp_path)[0]
        stored = httpx.post(upload, files={"files": ("q.png", ok.read_bytes())}, timeout=60).json()[0]
        assert Path(stored).is_relative_to(folder) and Path(stored).read_bytes() == ok.read_bytes()
    assert not folder.exists() and os.environ.get("GRADIO_TEMP_DIR") == before


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_launch_deletes_its_files_when_stopped(image_index, tmp_path, monkeypatch, stop):
    """``demo.app.launch`` (what ``mmssl demo`` runs) in this main thread: an upload is stored, and
    served back while the app runs, under the run's folder; Ctrl-C or SIGTERM stops it cleanly and
    nothing of it is left."""
    import threading

    import gradio  # before GRADIO_TEMP_DIR is set: at import Gradio makes a folder of its own there
    import httpx

    from demo.app import launch
    from demo.search import open_indexes

    temp = tmp_path / "gradio"
    temp.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))  # the run's folder is made inside it
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    ok = normal_images(tmp_path / "q")[0]
    seen: dict = {}

    def client() -> None:
        try:
            for _ in range(240):
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.25)
            stored = httpx.post(url + "gradio_api/upload", files={"files": ("q.png", ok.read_bytes())}).json()[0]
            seen["stored"], seen["folders"] = Path(stored), list(temp.iterdir())
            seen["served"] = httpx.get(f"{url}gradio_api/file={stored}").content
        except Exception as e:
            seen["error"] = e
        finally:
            blocked.wait(60)  # a signal during Gradio's own start-up may be swallowed there
            os.kill(os.getpid(), stop)  # arrives in the main thread, blocked in launch

    blocked = threading.Event()
    block_thread = gradio.Blocks.block_thread

    def block_thread_marked(self):
        blocked.set()
        return block_thread(self)

    monkeypatch.setattr(gradio.Blocks, "block_thread", block_thread_marked)
    handler = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=client)
    thread.start()
    launch(open_indexes([image_index]), "127.0.0.1", port)
    thread.join()
    assert "error" not in seen, seen
    (folder,) = seen["folders"]
    assert folder.name.startswith("mmssl-demo-") and seen["stored"].is_relative_to(folder)
    assert seen["served"] == ok.read_bytes()
    assert list(temp.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is handler


def test_open_indexes_refuses_what_it_cannot_serve(indexes, tmp_path):
    from demo.search import open_indexes

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


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="headless Chromium not installed (.ci/run installs the Debian packages chromium, chromium-driver)",
)
def test_browser_searches_by_an_example_image_and_sees_the_refusal_of_a_strip(app_url, tmp_path):
    """Headless Chromium, image → text tab: an example image finds captions; an uploaded 600000 x 1
    strip is answered with the app's one-line refusal on the page; screenshots are kept."""
    assert chromium() is not None, "MMSSL_REQUIRE_SYSTEM_PACKAGES is set but chromium/chromedriver are missing"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    strip = hostile_images(tmp_path)["strip 600000x1"][0]
    driver, artifacts = headless_browser()
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 60)

        def shown(xpath):
            return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

        wait.until(lambda d: shown("//button[@role='tab' and contains(., 'image → text')]")).click()
        wait.until(lambda d: shown("//*[contains(@class, 'gallery')]//img")).click()  # the first example
        wait.until(lambda d: shown("//button[normalize-space()='Search']")).click()
        wait.until(lambda d: "10 results in" in d.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(artifacts / "demo-image-search.png"))
        upload = next(e for e in driver.find_elements(By.CSS_SELECTOR, "input[type=file]") if e.is_enabled())
        driver.execute_script("arguments[0].value = '';", upload)
        upload.send_keys(str(strip))
        time.sleep(1)  # the upload, then the Image shows it
        shown("//button[normalize-space()='Search']").click()
        wait.until(lambda d: "more than 20:1" in d.find_element(By.TAG_NAME, "body").text)
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.save_screenshot(str(artifacts / "demo-image-refusal.png"))
        driver.quit()
