"""Device choice, seeding, precision and logging helpers."""

from __future__ import annotations

import logging

import pytest
import torch

from mmssl import console, runtime


def test_auto_device_falls_back_to_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected
    assert runtime.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not a device name"):
        runtime.resolve_device("tpu7")


def test_seed_everything_makes_runs_repeatable():
    import random

    import numpy as np

    runtime.seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(3))
    runtime.seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_precision_checks_and_autocast_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.check_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert runtime.check_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        runtime.check_precision("fp16", cpu)
    with pytest.raises(ValueError, match="must be one of"):
        runtime.check_precision("fp8", cpu)
    x = torch.randn(4, 4)
    with runtime.autocast("bf16", cpu):
        assert (x @ x).dtype == torch.bfloat16
    with runtime.autocast("fp32", cpu):
        assert (x @ x).dtype == torch.float32
    assert not runtime.grad_scaler("bf16", cpu).is_enabled()


def test_logging_goes_under_mmssl_and_to_a_file(tmp_path):
    log_file = tmp_path / "run.log"
    console.setup_logging("INFO", str(log_file))
    console.get_logger("train").info("step 1 loss 0.5")
    for h in logging.getLogger("mmssl").handlers:
        h.flush()
    assert "mmssl.train: step 1 loss 0.5" in log_file.read_text()


def test_progress_yields_every_item():
    assert list(console.progress(range(5), description="x")) == [0, 1, 2, 3, 4]
