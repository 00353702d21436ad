"""``mmssl demo default`` (what ``make demo`` runs): the pipeline built, finished and reused, its
indexes' default modes, the warning of a stopped image tower, and "pizza" typed in a real browser."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

from mmssl import cli
from tests.conftest import chromium, free_port, headless_browser


def demo_run(argv: list[str]) -> str:
    """``mmssl demo default ARGV``'s printed output (it must succeed)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(["demo", "default", *argv]) == 0
    return buffer.getvalue()


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    """`make demo`'s pipeline on a slice of the standard library, run three times: first with the
    image tower stopped after its first step (``--image-minutes``), then to the end of its steps,
    then once more. Returns (out, whether the emoji set could be made here, the three outputs)."""
    from mmssl.data.symbols import CLDR_ANNOTATIONS, EMOJI_FONT, EMOJI_TEST

    emoji = all(p.is_file() for p in (EMOJI_FONT, CLDR_ANNOTATIONS, EMOJI_TEST))
    assert emoji or not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"), "the emoji packages are required here"
    out = tmp_path_factory.mktemp("default") / "demo"
    argv = ["--out", str(out), "--model", "scratch", "--steps", "3", "--max-files", "300"]
    argv += ["--max-items", "400", "--image-steps", "3", "--no_launch"]
    stopped = demo_run([*argv, "--image-minutes", "1e-6"])
    notice = None
    if emoji:
        from demo.panels import notice_of
        from demo.search import open_indexes

        notice = notice_of(open_indexes([out / "emoji" / "image-index"])["image-index"])
    return out, emoji, [stopped, demo_run(argv), demo_run(argv)], notice


def test_default_pipeline_builds_once_then_finishes_a_stopped_image_tower_then_reuses(default_demo):
    """Corpus, model, two code indexes, the emoji and icon sets with their LiT model and two image
    indexes; a stopped image tower is said so, and trained to its end by the next run."""
    out, emoji, (first, second, third), notice = default_demo
    assert "reusing" not in first and "ready in" in first
    paths = [out / "scratch" / "code-index", out / "scratch" / "doc-index"]
    if emoji:
        paths += [out / "emoji" / "image-index", out / "emoji" / "caption-index"]
        assert "stopped early" in first and "trained 1 of its 3 steps (--max-minutes 1e-06)" in notice
        assert second.count("reusing") == 4 and "stopped early" not in second  # the image part is redone
    else:
        assert "no image tabs" in first
    assert all((p / "manifest.json").is_file() for p in paths)
    assert (out / "scratch" / "model" / "dual_encoder.json").is_file()
    # corpus, model, both indexes; and the image model and both image indexes
    assert third.count("reusing") == (7 if emoji else 4)
    from demo.panels import about, notice_of
    from demo.search import open_indexes

    loaded = open_indexes(paths)
    pairs = {("text", "code"), ("code", "text")} | ({("text", "image"), ("image", "text")} if emoji else set())
    assert {item.pair for item in loaded.values()} == pairs
    for item in loaded.values():  # each index starts on the mode its validation queries chose
        chosen = item.index.manifest.search_defaults
        if item.pair[0] != "image":
            assert chosen["mode"] == item.default_mode and max(chosen["mrr"].values()) > 0
    if emoji:
        images = loaded["image-index"]
        assert notice_of(images) == "" and "flags" in about(images) and "starts in" in about(images)
        hits = images.index.search(["pizza"], k=3, mode=images.default_mode, lexical_weight=images.lexical_weight)[0]
        assert "pizza" in [h.payload["name"] for h in hits]
        names = {t for _, texts in loaded["caption-index"].index.store.iter_items() for t in texts}
        assert "red apple" in names and "pizza" in names  # the caption index holds the names


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="headless Chromium not installed (.ci/run installs the Debian packages chromium, chromium-driver)",
)
def test_browser_types_pizza_into_text_to_image_and_sees_the_pizza_emoji_among_the_first_three(default_demo):
    """Headless Chromium on the default pipeline's app: "pizza" in the text → image tab, in the mode
    the tab starts in, shows the pizza emoji among the first three results; a screenshot is kept."""
    out, emoji, _, _ = default_demo
    if not emoji:
        pytest.skip("the emoji set cannot be made here")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from demo.app import serving
    from demo.search import open_indexes

    paths = [out / "emoji" / "image-index", out / "emoji" / "caption-index"]
    with serving(open_indexes(paths), "127.0.0.1", free_port(), quiet=True) as app:
        driver, artifacts = headless_browser(height=1400)
        try:
            driver.get(app.local_url)
            wait = WebDriverWait(driver, 60)

            def shown(xpath):
                return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

            box = wait.until(lambda d: shown("//textarea[starts-with(@placeholder, 'describe the image')]"))
            box.send_keys("pizza")
            shown("//button[normalize-space()='Search']").click()
            wait.until(lambda d: re.search(r"\b\d+ results?\b", d.find_element(By.TAG_NAME, "body").text))
            wait.until(lambda d: shown("//*[starts-with(normalize-space(text()), '1. ')]"))
            first_three = []
            for n in (1, 2, 3):
                ranked = f"//*[starts-with(normalize-space(text()), '{n}. ')]"
                first_three += [e.text for e in driver.find_elements(By.XPATH, ranked) if e.is_displayed()][:1]
            assert any(t.split(". ", 1)[1].startswith("pizza (") for t in first_three), first_three
        finally:
            driver.save_screenshot(str(artifacts / "demo-pizza.png"))
            driver.quit()


def test_a_capped_index_without_held_out_items_chooses_its_mode_on_the_next_partition_and_says_so(
    tiny_model, code_corpus, tmp_path
):
    """``--max-items`` can leave a code index with no valid item: its mode is then chosen on its
    test items, and with none of those either, on training items, with the bias said."""
    import gzip
    import json

    from demo.default import choose_on_partition
    from demo.panels import about
    from demo.search import open_indexes
    from indexing import Manifest

    records = [json.loads(line) for line in gzip.open(code_corpus, "rt")]
    for held_out, expected in ((("valid",), "test"), (("valid", "test"), "train")):
        data = tmp_path / f"{expected}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records if r["partition"] not in held_out))
        out = tmp_path / f"{expected}-index"
        argv = ["index", "build", "--model", str(tiny_model), "--data", str(data), "--lexical", "--out", str(out)]
        assert cli.main([*argv, "--max-items", "200"]) == 0
        choose_on_partition(out, "docstring")
        chosen = Manifest.from_file(out / "manifest.json").search_defaults
        assert chosen["chosen_on"].startswith(f"its {expected} items: docstring -> the item")
        assert ("dense is favoured" in chosen["chosen_on"]) == (expected == "train")
        assert chosen["queries"] > 0 and chosen["mode"] in ("dense", "lexical", "hybrid")
        kept = sum(r["partition"] not in held_out for r in records)
        assert f"200 of the collection's {kept:,} code items searchable" in about(open_indexes([out])[out.name])


def test_the_demo_embeds_through_an_int8_export_of_its_model_kept_while_the_model_is_the_same(
    tiny_model, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    import json
    import shutil

    from demo import default
    from mmssl.export.onnx_encoder import OnnxEncoderConfig
    from mmssl.io import model_fingerprint

    monkeypatch.setitem(default.EXPORTED, "scratch", True)
    model = shutil.copytree(tiny_model, tmp_path / "scratch" / "model")
    assert default.encoder_path(tmp_path, "scratch", model, "torch") == model
    first = default.encoder_path(tmp_path, "scratch", model, "onnx-int8")
    config = OnnxEncoderConfig.load(first)
    assert first == tmp_path / "scratch" / "model-onnx-int8" and config.quantize == "int8"
    from demo.panels import model_line

    assert model_line(str(first)) == (
        f"`model-onnx-int8`, an int8 ONNX export (16 dims; text 64 tokens, code 256 tokens) of the model "
        f"{model_fingerprint(model)[:12]}…"
    )
    assert config.source_sha256 == model_fingerprint(model)
    stamp = (first / "code.onnx").stat().st_mtime_ns
    assert default.encoder_path(tmp_path, "scratch", model, "onnx-int8") == first  # reused
    assert (first / "code.onnx").stat().st_mtime_ns == stamp
    config_file = model / "dual_encoder.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()), indent=1))  # another fingerprint
    default.encoder_path(tmp_path, "scratch", model, "onnx-int8")
    assert OnnxEncoderConfig.load(first).source_sha256 == model_fingerprint(model) != config.source_sha256


def test_the_app_opens_on_the_code_tabs_while_the_image_part_is_built_then_with_every_tab(default_demo, monkeypatch):
    """`make demo` (every step reused here): the app serves text → code while step 4/5 runs, its image
    tabs marked as building; then it is opened again on the same port with every tab."""
    import httpx

    import demo.app
    import demo.commands

    out, emoji, _, _ = default_demo
    if not emoji:
        pytest.skip("the emoji set cannot be made here")
    port, seen = free_port(), {}
    real_image_paths = demo.commands.image_paths

    def image_paths_while_serving(root, config):
        from gradio_client import Client

        page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).json()
        seen["labels"] = sorted(c["props"].get("label") for c in page["components"] if c["type"] == "tabitem")
        seen["building"] = any("being built" in str(c["props"].get("value", "")) for c in page["components"])
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        seen["hits"] = client.predict("parse the user", "code-index", 3, "dense", "", api_name="/text_to_code")["hits"]
        return real_image_paths(root, config)

    monkeypatch.setattr(demo.commands, "image_paths", image_paths_while_serving)
    # the early app takes no uploads: it leaves glibc's mmap threshold alone (pinned, the image tower
    # trained beside it runs at less than half its samples/s)
    monkeypatch.setattr(demo.app, "pin_mmap_threshold", lambda: seen.update(pinned=True))
    monkeypatch.setattr(demo.app, "launch", lambda indexes, host, port: seen.update(final=sorted(indexes)))
    argv = ["--out", str(out), "--model", "scratch", "--steps", "3", "--max-files", "300"]
    printed = demo_run([*argv, "--max-items", "400", "--image-steps", "3", "--port", str(port)])
    assert seen["labels"] == ["code → text", "image → text (building)", "text → code", "text → image (building)"]
    assert seen["building"] and len(seen["hits"]) == 3 and "pinned" not in seen
    assert seen["final"] == ["caption-index", "code-index", "doc-index", "image-index"]
    assert "the code tabs work now" in printed and "every tab is ready, reload the page" in printed
    assert printed.index("the code tabs work now") < printed.index("== 4/5")


def test_the_step_clock_scales_the_first_run_times_by_the_steps_that_ran(monkeypatch, capsys):
    import demo.commands as commands

    now = [0.0]
    monkeypatch.setattr(commands.time, "monotonic", lambda: now[0])
    monkeypatch.setattr("demo.default.time.monotonic", lambda: now[0])
    clock = commands.StepClock(images=True)
    clock.step("1/5 corpus")
    now[0] += 2 * commands.FIRST_RUN_SECONDS["1/5"]  # this machine: twice as slow as the reference
    clock.step("2/5 model")
    now[0] += 0.1  # reused: a fraction of its first-run time, not counted
    clock.step("3/5 indexes")
    now[0] += 2 * commands.FIRST_RUN_SECONDS["3/5"]
    clock.done()
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().endswith("at most")]
    ref = commands.FIRST_RUN_SECONDS
    expected = [
        2 * (ref["2/5"] + ref["3/5"] + ref["4/5"]) / 60,
        2 * (ref["3/5"] + ref["4/5"]) / 60,
        2 * ref["4/5"] / 60,
    ]
    seconds = [2 * ref["1/5"], 0, 2 * ref["3/5"]]
    assert lines == [f"{s} s; about {m:.0f} min to go at most" for s, m in zip(seconds, expected)]
    quiet = commands.StepClock(images=False, estimate=False)
    quiet.step("1/5 corpus")
    quiet.done()
    assert "to go" not in capsys.readouterr().out
