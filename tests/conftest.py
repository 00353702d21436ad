"""Shared fixtures and helpers: offline mode, a tiny synthetic CodeSearchNet-format corpus, a trained
tiny model, an image-caption set of shapes, a simulated crash, and a headless Chromium for the
demo's browser tests."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VERBS = [
    "add",
    "remove",
    "parse",
    "load",
    "save",
    "sort",
    "merge",
    "split",
    "count",
    "find",
    "render",
    "encode",
    "decode",
    "compress",
    "validate",
    "format",
    "fetch",
    "update",
    "delete",
    "create",
]
NOUNS = [
    "user",
    "file",
    "record",
    "image",
    "token",
    "matrix",
    "config",
    "message",
    "packet",
    "table",
    "list",
    "graph",
    "node",
    "cache",
    "queue",
    "string",
    "number",
    "date",
    "path",
    "socket",
]


def make_code_corpus(path, n: int = 1000, seed: int = 0) -> str:
    """Functions whose docstring words name the identifiers of their code: learnable in seconds.

    Every 10th record is 'valid', every 10th (offset 1) 'test', the rest 'train'.
    """
    rng = random.Random(seed)
    parts = ["valid", "test"] + ["train"] * 8
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
            record = {
                "repo": f"repo{i % 25}",
                "path": f"pkg/mod{i}.py",
                "func_name": f"{verb}_{noun}",
                "original_string": "",
                "language": "python",
                "code": f"def {verb}_{noun}({noun}, options=None):\n    result = {verb}({noun})\n    return result",
                "code_tokens": [],
                "docstring": f"{verb.capitalize()} the {noun} given as input.",
                "docstring_tokens": [],
                "url": "",
                "partition": parts[i % 10],
            }
            f.write(json.dumps(record) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def code_corpus(tmp_path_factory) -> str:
    return make_code_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl.gz")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """An image-caption set of 240 coloured shapes at 32 px (``mmssl data make-images``), read only."""
    from mmssl import cli

    out = tmp_path_factory.mktemp("data") / "shapes"
    argv = ["data", "make-images", "--kind", "shapes", "--out", str(out), "--count", "240", "--size", "32"]
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(code_corpus, tmp_path_factory):
    """A tiny text-code dual encoder trained for 30 steps on ``code_corpus`` (its ``final`` directory)."""
    import torch

    from mmssl import cli

    out = tmp_path_factory.mktemp("model") / "run"
    argv = ["train", "--train", code_corpus, "--out", str(out), "--preset", "tiny", "--vocab-size", "300"]
    argv += ["--batch-size", "32", "--max-steps", "30", "--eval-every", "0", "--embed-dim", "16", "--device", "cpu"]
    argv += ["--lr", "2e-3", "--warmup-steps", "3"]
    torch.manual_seed(0)
    assert cli.main(argv) == 0
    return out / "final"


def fit_or_crash(trainer, monkeypatch, crash_at: int | None = None) -> None:
    """``trainer.fit()``; with ``crash_at``, a simulated crash (KeyboardInterrupt) when the trainer
    is about to run that step, after whatever checkpoints came before it."""
    if not crash_at:
        trainer.fit()
        return
    real = trainer.train_step

    def crashing():
        if trainer.step == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return real()

    monkeypatch.setattr(trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_browser(height: int = 1600, width: int | None = None):
    """(a headless Chromium webdriver, the folder its screenshots go to). ``width``: a phone's
    viewport of that many CSS pixels (Chrome's own windows are never narrower than 500)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size=1280,{height}"):
        options.add_argument(arg)
    artifacts = Path(os.environ.get("MMSSL_TEST_ARTIFACTS", "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    if width is not None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver, artifacts
