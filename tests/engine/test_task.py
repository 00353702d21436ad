"""The engine's contract with a task: defaults, refusals before the first step, and the two
crashes the old ``hasattr`` probing hid (resume on changed data, gradient checkpointing)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmssl import cli
from mmssl.engine import EngineConfig, Task, Trainer, Unsupported

CPU = torch.device("cpu")


class Points:
    """Training data: N fixed points; its fingerprint hashes them."""

    def __init__(self, n: int, seed: int) -> None:
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.x)

    def fingerprint(self) -> str:
        return f"{hash(tuple(self.x.flatten().tolist())) & 0xFFFF:04x}"


class Regression(Task):
    """The smallest task: fit a linear map to a fixed target; only the required hooks."""

    loss_name = "regression loss"

    def __init__(self, data: Points) -> None:
        self.model, self.data = nn.Linear(4, 1), data
        self.steps_seen: list[int] = []

    def batch(self, indices):
        return {"x": self.data.x[indices]}

    def training_forward(self, batch):
        return {"mse_loss": (self.model(batch["x"]) - 1.0).pow(2).mean()}, {}

    def save_pretrained(self, path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "w.pt")

    def load_pretrained_state(self, path) -> None:
        self.model.load_state_dict(torch.load(path / "w.pt", weights_only=True))

    def after_step(self, step: int) -> bool:
        self.steps_seen.append(step)
        return False


def config(tmp_path, **kw) -> EngineConfig:
    base = dict(out=str(tmp_path), batch_size=4, max_steps=3, warmup_steps=0, eval_every=0, save_every=0, log_every=1)
    return EngineConfig(**{**base, **kw})


def test_a_task_with_only_the_required_hooks_trains_on_the_defaults(tmp_path):
    task = Regression(Points(16, 0))
    result = Trainer(task, config(tmp_path), CPU).fit()
    assert result["step"] == 3 and result["valid"] is None  # evaluate() defaults to no validation
    assert task.steps_seen == [1, 2, 3]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("valid" != r.get("split") for r in rows)
    assert (tmp_path / "final" / "w.pt").is_file()


def test_what_a_task_does_not_support_is_refused_before_anything_is_written(tmp_path):
    task = Regression(Points(16, 0))
    with pytest.raises(Unsupported, match="--grad-checkpointing: regression training does not support"):
        Trainer(task, config(tmp_path / "a", grad_checkpointing=True), CPU)
    with pytest.raises(Unsupported, match="--compile"):
        Trainer(task, config(tmp_path / "b", compile=True), CPU)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_object_that_is_not_a_task_is_refused():
    with pytest.raises(TypeError, match="not a mmssl.engine.Task"):
        Trainer(object(), EngineConfig(), CPU)


def test_resume_on_other_data_names_both_fingerprints(tmp_path):
    """The old engine formatted a field the engine config lacks (AttributeError) instead."""
    Trainer(Regression(Points(16, 0)), config(tmp_path, save_every=3), CPU).fit()
    other = Regression(Points(16, 1))
    with pytest.raises(ValueError, match=r"--resume: .* was trained on other data \(fingerprint"):
        Trainer(other, config(tmp_path, resume=True, max_steps=4), CPU).fit()


def _pretrain_argv(method: str, data: str, out, *extra) -> list[str]:
    return ["pretrain", method, "--data", data, "--out", str(out), "--max-steps", "2", "--warmup-steps", "0",
            "--eval-every", "0", "--save-every", "0", "--device", "cpu", *extra]  # fmt: skip


def _one_error_line(capsys, head: str, says: str) -> bool:
    """stderr holds log lines and exactly one error line, starting with ``head``, no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(head) and says in errors[0], err
    assert "Traceback" not in err, err
    return True


def test_pretrain_resume_on_changed_data_is_a_one_line_error(code_corpus, tmp_path, capsys):
    from tests.conftest import make_code_corpus

    lm = ["--preset", "tiny", "--vocab-size", "300", "--block-size", "32", "--batch-size", "8"]
    assert cli.main(_pretrain_argv("mlm", code_corpus, tmp_path / "run", *lm)) == 0
    other = make_code_corpus(tmp_path / "other.jsonl.gz", seed=1)
    capsys.readouterr()
    code = cli.main(_pretrain_argv("mlm", other, tmp_path / "run", *lm, "--resume", "--max-steps", "4"))
    assert code == 2 and _one_error_line(capsys, "mmssl pretrain mlm: error: --resume:", "was trained on other data")


def test_grad_checkpointing_works_for_language_model_pretraining(code_corpus, tmp_path):
    lm = ["--preset", "tiny", "--vocab-size", "300", "--block-size", "32", "--batch-size", "8", "--grad-checkpointing"]
    assert cli.main(_pretrain_argv("clm", code_corpus, tmp_path / "clm", *lm)) == 0
    assert (tmp_path / "clm" / "final" / "config.json").is_file()


def test_grad_checkpointing_on_a_torchvision_ssl_tower_is_a_one_line_error(tmp_path, capsys):
    shapes = tmp_path / "shapes"
    assert (
        cli.main(["data", "make-images", "--kind", "shapes", "--out", str(shapes), "--count", "40", "--size", "32"])
        == 0
    )
    capsys.readouterr()
    argv = _pretrain_argv("simclr", str(shapes), tmp_path / "ssl", "--image-model", "torchvision:resnet18",
                          "--batch-size", "8", "--grad-checkpointing")  # fmt: skip
    code = cli.main(argv)
    assert code == 2 and _one_error_line(capsys, "mmssl pretrain simclr: error:", "checkpointing")
    assert not (tmp_path / "ssl" / "metrics.jsonl").exists()
