"""The damaged-file cases of ``benchmarks/faults.py``: every kind of file a command reads (models,
checkpoints, metrics, corpora, configs, indexes, negatives, images), truncated, emptied or altered,
each refused with a one-line error that names the file, or (a torn metrics line, a bad image)
survived as the run says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import (  # noqa: E402
    Row,
    code_records,
    copy_tree,
    diff_hashes,
    one_line_error,
    temporaries,
    training_losses,
    tree_hashes,
    truncate,
    write_jsonl,
)
from fault_runner import Outcome  # noqa: E402
from fault_world import (  # noqa: E402
    N_COLLECTION,
    QUERIES,
    TRAIN_STEPS,
    World,
    train_argv,
)

# ---- 6. damaged files ---------------------------------------------------------------------------------


@dataclass
class Damage:
    """A damaged input: ``make(case_dir) -> (argv, the file the error must name)``; ``check`` (optional)
    judges a run that is expected to succeed instead of failing."""

    name: str
    command: str
    make: Callable[[Path], tuple[list[str], Path]]
    check: Callable[[Path, Outcome], tuple[list[str], str]] | None = None  # -> (problems, what it saw)
    expected: str = ""  # of a run that ``check`` judges


def _model_copy(world: World, case: Path) -> Path:
    return copy_tree(world.model, case / "model")


def _damage_model(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        model = _model_copy(world, case)
        target = {
            "weights": model / "towers" / "code" / "model.safetensors",
            "heads": model / "heads.safetensors",
            "tokenizer": model / "towers" / "text" / "tokenizer.json",
            "config": model / "towers" / "code" / "config.json",
            "dual config": model / "dual_encoder.json",
            "tower": model / "towers" / "code",
        }[what]
        if what in ("weights", "heads"):
            truncate(target)
        elif what == "tokenizer":
            target.unlink()
        elif what == "tower":
            shutil.rmtree(target)
        else:
            target.write_text("{ this is not JSON")
        argv = ["index", "build", "--model", str(model), "--data", str(world.corpus), "--out", str(case / "idx")]
        return argv + ["--device", "cpu"], target

    return make


def _run_copy(world: World, case: Path) -> tuple[Path, list[str]]:
    run = copy_tree(world.train_ref[0], case / "run")
    argv = train_argv(world.corpus, run, TRAIN_STEPS, "--save-every", "2", "--log-every", "1", "--resume")
    return run, argv


def _damage_checkpoint(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        run, argv = _run_copy(world, case)
        state = run / "checkpoints" / "last" / "trainer_state.pt"
        if what == "truncated":
            truncate(state)
        else:  # a pickle that would create a file if it were unpickled (weights_only must refuse it)
            import torch

            torch.save({"step": 1, "payload": _Touch(str(case / "UNPICKLED"))}, state)
        return argv, state

    return make


class _Touch:
    """Unpickling this creates a file (``open(path, "w")``): proof that something was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _damage_metrics(world: World, torn: bool) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        run, argv = _run_copy(world, case)
        metrics = run / "metrics.jsonl"
        lines = metrics.read_text().splitlines(keepends=True)
        if torn:
            metrics.write_text("".join(lines) + '{"step": 17, "loss": 3.1, "l')
        else:
            lines[len(lines) // 2] = "#### not a record\n"
            metrics.write_text("".join(lines))
        return argv, metrics

    return make


def _check_torn(world: World) -> Callable[[Path, Outcome], tuple[list[str], str]]:
    def check(case: Path, o: Outcome) -> tuple[list[str], str]:
        problems = [] if o.rc == 0 else [f"resume failed: {o.short()}: {o.tail(2)}"]
        run = case / "run"
        try:
            losses = training_losses(run)
            if losses != training_losses(world.train_ref[0]):
                problems.append("losses differ from the uninterrupted run's")
        except json.JSONDecodeError:
            problems.append("metrics.jsonl still holds the torn line")
        if temporaries(run):
            problems.append("temporaries left")
        dropped = "dropping a torn last record" in " ".join(o.stderr.split())
        return problems, f"{o.short()}; {'warned: dropping a torn last record; ' if dropped else ''}losses equal"

    return check


def _damage_corpus(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        records = code_records(N_COLLECTION)
        if what == "truncated gz":
            target = write_jsonl(records, case / "corpus.jsonl.gz")
            truncate(target, 0.6)
        else:
            target = case / "corpus.jsonl"
            lines = [json.dumps(r).encode() + b"\n" for r in records]
            if what == "non-UTF-8":
                lines[50] = b'{"docstring": "caf\xe9 \xff", "code": "x = 1"}\n'
            elif what == "malformed JSON":
                lines[50] = b'{"docstring": "a", "code": \n'
            elif what == "missing code":
                lines[50] = json.dumps({k: v for k, v in records[50].items() if k != "code"}).encode() + b"\n"
            elif what == "empty docstrings":
                lines = [json.dumps({**r, "docstring": ""}).encode() + b"\n" for r in records]
            target.write_bytes(b"".join(lines))
        return train_argv(target, case / "out", 2), target

    return make


def _damage_config(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        cfg = case / "run.toml"
        cfg.write_text("lr = 0.001\nbatch_size = [32\n" if what == "bad TOML" else "lr = 0.001\nlearning_rate = 0.01\n")
        return train_argv(world.corpus, case / "out", 2, "--config", str(cfg)), cfg

    return make


def _damage_index(world: World, what: str, command: str = "search") -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        idx = copy_tree(world.index_ref[0], case / "idx")
        manifest = json.loads((idx / "manifest.json").read_text())
        target = idx / "index.faiss"
        if what == "truncated index.faiss":
            truncate(target)
        elif what.startswith("random index.faiss"):
            target.write_bytes(os.urandom(target.stat().st_size))
        elif what == "manifest files {}":
            target = idx / "manifest.json"
            target.write_text(json.dumps({**manifest, "files": {}}))
        elif what == "meta.sqlite garbage":
            target = idx / "meta.sqlite"
            target.write_bytes(os.urandom(target.stat().st_size))
        elif what == "manifest metric l2":
            target = idx / "manifest.json"
            target.write_text(json.dumps({**manifest, "metric": "l2"}))
        if command == "add":
            return ["index", "add", "--index", str(idx), "--data", str(world.new_records)], target
        argv = ["index", "search", "--index", str(idx), "--query", QUERIES[0]]
        return argv + (["--verify"] if what.endswith("--verify") else []), target

    return make


def _damage_negatives(world: World) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        negs = case / "negatives.jsonl"
        negs.write_bytes(b"\x89garbage\x00\x01 not a negatives table\n" + os.urandom(200))
        return train_argv(world.corpus, case / "out", 2, "--negatives", str(negs)), negs

    return make


def _damage_images(world: World) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        images = case / "images"
        made = world.runner.run(
            ["data", "make-images", "--kind", "shapes", "--out", str(images), "--count", "60", "--size", "32"]
        )
        if made.rc != 0:
            raise RuntimeError(f"make-images failed: {made.tail(2)}")
        png = sorted((images / "train").glob("*.png"))[0]
        truncate(png)
        argv = ["mine-negatives", "--source", "bm25", "--task", "image-text", "--data", str(images)]
        return argv + ["--out", str(case / "negatives.jsonl"), "--top-k", "5", "--keep", "2"], png

    return make


def _check_images(case: Path, o: Outcome) -> tuple[list[str], str]:
    problems = [] if o.rc == 0 else [f"{o.short()}: {o.tail(2)}"]
    log = " ".join(o.stderr.split())
    said = re.search(r"skipped \d+ bad images \([^)]*\)", log)
    if not said or not said.group(0).startswith("skipped 1 "):
        problems.append("no 'skipped 1 bad images' in the log")
    pairs = None
    if o.rc == 0:
        pairs = json.JSONDecoder().raw_decode(o.stdout.lstrip())[0]["pairs"]
        if pairs != 47:  # 48 training images, one skipped
            problems.append(f"{pairs} pairs mined, expected 47")
    return problems, f"{o.short()}; logged '{said.group(0) if said else ''}'; {pairs} pairs mined"


def damages(world: World) -> list[Damage]:
    d = []
    for what, label in [
        ("weights", "truncated model.safetensors"),
        ("heads", "truncated heads.safetensors"),
        ("tokenizer", "missing tokenizer.json"),
        ("config", "tower config.json not JSON"),
        ("dual config", "dual_encoder.json not JSON"),
        ("tower", "missing tower folder"),
    ]:
        d.append(Damage(f"corrupt model: {label}", "index build", _damage_model(world, what)))
    d.append(Damage("corrupt checkpoint: truncated trainer_state.pt", "train", _damage_checkpoint(world, "truncated")))
    d.append(Damage("corrupt checkpoint: a pickled object", "train", _damage_checkpoint(world, "pickle")))
    d.append(
        Damage(
            "corrupt metrics: torn last line (resumes)",
            "train",
            _damage_metrics(world, True),
            _check_torn(world),
            "--resume works: the torn line dropped, losses == the uninterrupted run's, no temporaries",
        )
    )
    d.append(Damage("corrupt metrics: damaged middle line", "train", _damage_metrics(world, False)))
    for what in ("truncated gz", "non-UTF-8", "malformed JSON", "missing code", "empty docstrings"):
        d.append(Damage(f"corrupt corpus: {what}", "train", _damage_corpus(world, what)))
    for what in ("bad TOML", "unknown key"):
        d.append(Damage(f"corrupt config: {what}", "train", _damage_config(world, what)))
    for what in (
        "truncated index.faiss",
        "random index.faiss",
        "random index.faiss --verify",
        "manifest files {}",
        "meta.sqlite garbage",
        "manifest metric l2",
    ):
        d.append(Damage(f"corrupt index: {what}", "index search", _damage_index(world, what)))
    d.append(
        Damage(
            "corrupt index: random index.faiss, then add",
            "index add",
            _damage_index(world, "random index.faiss", "add"),
        )
    )
    d.append(Damage("corrupt negatives: garbage table", "train", _damage_negatives(world)))
    d.append(
        Damage(
            "corrupt images: truncated PNG (skipped, counted)",
            "mine-negatives",
            _damage_images(world),
            _check_images,
            "exit 0, 'skipped 1 bad images' logged, 47 of 48 training pairs mined, the image set unchanged",
        )
    )
    return d


def corrupt_files(world: World, want: Callable[[str], bool]) -> list[Row]:
    rows = []
    for damage in damages(world):
        if not want(damage.name):
            continue
        case = world.fresh(damage.name.split(":")[1].strip().replace(" ", "_").replace("/", "_"))
        try:
            argv, target = damage.make(case)
        except RuntimeError as e:
            rows.append(Row(damage.name, "set up", f"could not set up: {e}", False))
            continue
        before = tree_hashes(case)
        o = world.runner.run(argv, timeout=300)
        if damage.check is not None:
            problems, saw = damage.check(case, o)
            changed = [c for c in diff_hashes(before, tree_hashes(case)) if c.startswith("~images")]
            if changed:
                problems.append(f"changed: {', '.join(changed[:3])}")
            rows.append(Row(damage.name, damage.expected, "; ".join(problems + [saw]), not problems))
            continue
        ok, observed = one_line_error(o, damage.command, (str(target),))
        changed = diff_hashes(before, tree_hashes(case))
        if changed:
            ok = False
            observed = f"changed {len(changed)} path(s) ({', '.join(changed[:3])}); {observed}"
        if (case / "UNPICKLED").exists():
            ok, observed = False, f"the pickle was unpickled; {observed}"
        rows.append(
            Row(
                damage.name,
                f"exit 2, one 'mmssl {damage.command}: error:' line naming {target.name}, nothing changed",
                observed,
                ok,
            )
        )
    return rows
