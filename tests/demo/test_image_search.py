"""Image indexes and the demo's image tabs: an image index searched by text and a caption index
by image, the app serving both, and a headless browser seeing the gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmssl import cli
from mmssl.models import DualEncoder
from tests.recipes.image_helpers import (
    micro_model,
)

# ---- indexes and the demo ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_indexes(shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    torch.manual_seed(0)
    micro_model(embed_dim=64).save_pretrained(root / "model")
    common = ["--model", str(root / "model"), "--data", str(shapes), "--partition", "test", "--device", "cpu"]
    assert cli.main(["index", "build", *common, "--out", str(root / "images"), "--lexical"]) == 0
    assert cli.main(["index", "build", *common, "--out", str(root / "captions"), "--modality", "text"]) == 0
    return root


def test_image_index_is_searched_by_text_and_caption_index_by_image(image_indexes, shapes):
    from indexing import SearchIndex

    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    with SearchIndex.load(image_indexes / "images") as index:
        assert len(index) == len(test) and index.manifest.modality == "image"
        hits = index.search([test[0]["text"]], k=3, mode="hybrid")[0]
        assert hits[0].text == test[0]["text"]  # BM25 over the captions finds the exact caption
        assert hits[0].payload["path"].endswith(".png") and hits[0].payload["caption"] == hits[0].text
    model = DualEncoder.from_pretrained(image_indexes / "model")
    image = Image.open(shapes / test[5]["file_name"])
    with SearchIndex.load(image_indexes / "captions") as index:
        assert index.manifest.query_modality == "image"
        hits = index.search([image], k=len(test))[0]
        want = model.embed("image", [image]) @ model.embed("text", [h.text for h in hits]).T
        assert np.allclose([h.score for h in hits], want[0].numpy(), atol=1e-5)  # the model's own ranking
        with pytest.raises(ValueError, match="image queries search by embedding only"):
            index.search([image], mode="hybrid")


def test_demo_serves_text_to_image_and_image_to_text(image_indexes, shapes, tmp_path):
    from gradio_client import Client, handle_file

    from demo.app import build_app
    from demo.panels import example_queries
    from demo.search import TABS, open_indexes, run_search

    indexes = open_indexes([image_indexes / "images", image_indexes / "captions"])
    assert {item.pair for item in indexes.values()} == {("text", "image"), ("image", "text")}
    assert indexes["captions"].modes == ["dense"] and "hybrid" in indexes["images"].modes
    assert all(isinstance(e, Image.Image) and max(e.size) <= 256 for e in example_queries(indexes["captions"]))
    app = build_app(indexes)
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        caption = example_queries(indexes["images"])[0]
        hits = client.predict(caption, "images", 3, "hybrid", api_name="/text_to_image")["hits"]
        assert len(hits) == 3 and hits[0]["text"] == caption and hits[0]["payload"]["file_path"].endswith(".png")
        query = tmp_path / "query.png"
        Image.open(hits[0]["payload"]["file_path"]).save(query)
        found = client.predict(handle_file(str(query)), "captions", 5, "dense", api_name="/image_to_text")["hits"]
        direct = run_search(indexes, TABS[("image", "text")], Image.open(query), "captions", 5, "dense")["hits"]
        assert [h["id"] for h in found] == [h["id"] for h in direct]
        with pytest.raises(Exception, match="upload or pick an image"):
            client.predict(None, "captions", 5, "dense", api_name="/image_to_text")
    finally:
        app.close()


def test_browser_sees_the_gallery_of_a_text_to_image_search(image_indexes, tmp_path):
    """Headless Chromium: type a caption in the text → image tab, click Search, the gallery shows
    images with their captions; a screenshot is kept."""
    import os

    from tests.conftest import chromium, headless_browser

    if chromium() is None:
        if os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"):
            pytest.fail("MMSSL_REQUIRE_SYSTEM_PACKAGES is set but chromium/chromedriver are missing")
        pytest.skip("headless Chromium not installed (.ci/run installs chromium, chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from demo.app import build_app
    from demo.panels import example_queries
    from demo.search import open_indexes

    indexes = open_indexes([image_indexes / "images", image_indexes / "captions"])
    caption = example_queries(indexes["images"])[0]
    app = build_app(indexes)
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    driver, artifacts = headless_browser(height=1400)
    try:
        driver.get(app.local_url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea[placeholder^='describe the image']")))
        box.send_keys(caption)
        hybrid = "//label[.//input[@type='radio' and @value='hybrid']]"  # BM25 over the captions: the untrained
        next(e for e in driver.find_elements(By.XPATH, hybrid) if e.is_displayed()).click()  # model needs it
        button = next(
            e for e in driver.find_elements(By.XPATH, "//button[normalize-space()='Search']") if e.is_displayed()
        )
        button.click()
        wait.until(
            lambda d: len([i for i in d.find_elements(By.CSS_SELECTOR, ".gallery img, img") if i.is_displayed()]) >= 5
        )
        ranked = "//*[starts-with(normalize-space(text()), '1. ') and contains(text(), ' (')]"
        wait.until(lambda d: any(e.is_displayed() for e in d.find_elements(By.XPATH, ranked)))  # captions shown
    finally:
        driver.save_screenshot(str(artifacts / "demo-image-search.png"))
        driver.quit()
        app.close()
