"""A training run's directory: never replaced without --overwrite, continued with --resume, and a
resume that cannot continue (other model, damaged checkpoint or log) says why in one line."""

from __future__ import annotations

import json

import pytest
import torch

from mmssl import cli

TINY = ["--preset", "tiny", "--vocab-size", "300", "--batch-size", "16", "--embed-dim", "16", "--device", "cpu"]
TINY += ["--eval-every", "0", "--save-every", "2", "--log-every", "1", "--warmup-steps", "1"]


def _train(corpus, out, *extra) -> int:
    torch.manual_seed(0)
    return cli.main(["train", "--train", corpus, "--out", str(out), *TINY, *extra])


@pytest.fixture
def run(code_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(code_corpus, out, "--max-steps", "2") == 0
    capsys.readouterr()
    return out


def _steps(out) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]  # training records (validations also carry a step)


def test_an_existing_run_is_refused_without_resume_or_overwrite(code_corpus, run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert _train(code_corpus, run, "--max-steps", "3") == 2
    err = capsys.readouterr().err
    assert "already holds a training run; pass --overwrite to replace it or --resume to continue it" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing touched
    assert _train(code_corpus, run, "--max-steps", "4", "--resume") == 0
    assert _steps(run) == [1, 2, 3, 4]
    (run / "notes.txt").write_text("mine")
    assert _train(code_corpus, run, "--max-steps", "1", "--overwrite") == 0
    assert _steps(run) == [1]  # the old run's records are gone, the user's own file is not
    assert (run / "notes.txt").read_text() == "mine"


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(code_corpus, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    assert _train(code_corpus, mine, "--max-steps", "1", "--overwrite") == 2
    assert "does not hold a training run; choose another path" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]


def test_resume_warns_that_optimizer_options_come_from_the_checkpoint(code_corpus, run, capsys):
    assert _train(code_corpus, run, "--max-steps", "3", "--resume", "--lr", "0.01") == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "--lr 0.01 is ignored on --resume: the optimizer continues with the checkpoint's 0.0005" in err


def test_resume_with_another_model_names_the_changed_option(code_corpus, run, capsys):
    assert _train(code_corpus, run, "--max-steps", "3", "--resume", "--embed-dim", "24") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the log lines, the error's one line
    assert err.startswith("mmssl train: error: --resume: ") and "does not fit this run's model" in err
    assert "size mismatch" in err and err.endswith("changed since it was saved: --embed-dim 16 -> 24")


def test_a_torn_last_metrics_line_does_not_block_resume(code_corpus, run):
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 1.2')  # killed mid-write
    assert _train(code_corpus, run, "--max-steps", "3", "--resume") == 0
    assert _steps(run) == [1, 2, 3]


def test_a_damaged_metrics_line_before_the_last_names_the_file_and_line(code_corpus, run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["{not json", *lines]) + "\n")
    assert _train(code_corpus, run, "--max-steps", "3", "--resume") == 2
    assert f"{run / 'metrics.jsonl'}:1: not a JSON record" in capsys.readouterr().err


def test_a_checkpoint_holding_a_pickle_or_cut_short_is_refused_in_one_line(code_corpus, run, capsys):
    state = run / "checkpoints" / "last" / "trainer_state.pt"
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    assert _train(code_corpus, run, "--max-steps", "3", "--resume") == 2
    assert "trainer_state.pt: damaged or truncated" in capsys.readouterr().err

    class Payload:  # what an attacker's pickle would call instead
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"step": 2, "payload": Payload()}, state)
    assert _train(code_corpus, run, "--max-steps", "3", "--resume") == 2
    captured = capsys.readouterr()
    assert "refused, not a checkpoint mmssl wrote" in captured.err and "ran" not in captured.out
