"""The app in headless Chromium over functions mined from two standard-library packages: Enter
searches, matched words are marked, folded code expands, the package filter and "more results"
work, and a 390 px phone screen shows every tab with nothing to scroll sideways. Screenshots are
kept in the test artifacts folder."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

from mmssl import cli
from tests.conftest import chromium, free_port, headless_browser

pytestmark = pytest.mark.skipif(
    chromium() is None and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="headless Chromium not installed (.ci/run installs the Debian packages chromium, chromium-driver)",
)
PACKAGES = ("json", "http")


@pytest.fixture(scope="module")
def app_url(tiny_model, tmp_path_factory):
    """The app over a text → code index of the functions of PACKAGES, and an image → text one."""
    from demo.app import serving
    from demo.search import open_indexes
    from tests.demo.test_demo import image_index_at

    assert chromium() is not None, "MMSSL_REQUIRE_SYSTEM_PACKAGES is set but chromium/chromedriver are missing"
    root = tmp_path_factory.mktemp("browser")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = root / "corpus.jsonl.gz"
    roots = [str(stdlib / p) for p in PACKAGES]
    assert cli.main(["data", "mine-code", *roots, "--out", str(corpus), "--split-by", "file"]) == 0
    index = root / "code-index"
    argv = ["index", "build", "--model", str(tiny_model), "--data", str(corpus), "--lexical", "--out", str(index)]
    assert cli.main(argv) == 0
    images = image_index_at(root)
    with serving(open_indexes([index, images]), "127.0.0.1", free_port(), quiet=True) as app:
        yield app.local_url


def shown(driver, xpath):
    from selenium.webdriver.common.by import By

    return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)


def body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def search_by_enter(driver, wait, query: str, count: int) -> None:
    """Type ``query`` and press Enter; return once this search's ``count`` results are on the page
    (not the previous search's: the results must have changed first)."""
    from selenium.webdriver.common.keys import Keys

    def results(d) -> str:
        return d.execute_script("const e = document.querySelector('.mmssl-hits'); return e ? e.innerHTML : ''")

    before = results(driver)
    box = wait.until(lambda d: shown(d, "//textarea[starts-with(@placeholder, 'describe what')]"))
    box.clear()
    box.send_keys(query, Keys.ENTER)  # no click on Search
    wait.until(lambda d: results(d) != before and f"{count} results in" in body(d))


def test_enter_searches_marks_words_folds_code_filters_by_package_and_shows_more(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver, artifacts = headless_browser(height=1400)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: shown(d, "//label[.//input[@type='radio' and @value='lexical']]")).click()
        search_by_enter(driver, wait, "decode a JSON document", 10)
        marks = [m.text.lower() for m in driver.find_elements(By.CSS_SELECTOR, ".mmssl-hit mark") if m.is_displayed()]
        assert {"json", "decode"} <= set(marks), marks
        driver.save_screenshot(str(artifacts / "browser-code-results.png"))

        # a folded function opens in place: its hidden lines become visible, numbered as in its file
        details = next(d for d in driver.find_elements(By.CSS_SELECTOR, ".mmssl-hit details") if d.is_displayed())
        hidden = details.find_element(By.CSS_SELECTOR, "pre")
        assert not hidden.is_displayed()
        details.find_element(By.TAG_NAME, "summary").click()
        wait.until(lambda d: hidden.is_displayed())
        assert details.get_attribute("open") is not None
        numbers = [int(n.text) for n in hidden.find_elements(By.CSS_SELECTOR, ".ln") if n.text.strip()]
        assert numbers == sorted(numbers) and numbers[0] > 8
        driver.save_screenshot(str(artifacts / "browser-code-expanded.png"))

        # only the http package
        menu = shown(driver, "//input[@role='combobox' and @aria-label='search within']")
        menu.click()
        menu.send_keys(Keys.CONTROL, "a")
        menu.send_keys("package http")
        wait.until(lambda d: shown(d, "//ul//li[contains(., 'package http')]")).click()
        search_by_enter(driver, wait, "decode a JSON document header", 10)
        places = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".mmssl-head .where") if e.is_displayed()]
        assert len(places) == 10 and all(p.startswith("http/") for p in places), places
        driver.save_screenshot(str(artifacts / "browser-code-filtered.png"))

        # more results on demand
        shown(driver, "//button[normalize-space()='10 more results']").click()
        wait.until(lambda d: "20 results in" in body(d))
        assert len([e for e in driver.find_elements(By.CSS_SELECTOR, ".mmssl-hit") if e.is_displayed()]) == 20
    finally:
        driver.save_screenshot(str(artifacts / "browser-code-last.png"))
        driver.quit()


def test_a_390_px_phone_shows_every_tab_and_nothing_scrolls_sideways(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, artifacts = headless_browser(height=1600, width=390)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: shown(d, "//label[.//input[@type='radio' and @value='lexical']]")).click()
        search_by_enter(driver, wait, "decode a JSON document", 10)
        tabs = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.is_displayed()]
        assert tabs == ["text → code", "image → text"], tabs  # none behind an overflow menu
        widths = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 390, widths
        driver.save_screenshot(str(artifacts / "browser-phone-code.png"))
        shown(driver, "//button[@role='tab' and contains(., 'image → text')]").click()
        wait.until(lambda d: shown(d, "//*[contains(@class, 'gallery')]//img")).click()  # the first example
        shown(driver, "//button[normalize-space()='Search']").click()
        wait.until(lambda d: "10 results in" in body(d))
        pictures = [i for i in driver.find_elements(By.CSS_SELECTOR, ".mmssl-pictured img") if i.is_displayed()]
        assert len(pictures) == 10 and all(p.get_attribute("src").startswith("data:image/png") for p in pictures)
        assert "/tmp/" not in body(driver) and "shapes" not in body(driver).split("results in", 1)[1]
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        driver.save_screenshot(str(artifacts / "browser-phone-images.png"))
    finally:
        driver.quit()
