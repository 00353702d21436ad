"""Scale-out on CPU: two gloo processes against one holding the global batch, resume across process
counts, gradient caching and activation checkpointing against direct gradients, and the index
embedded by two processes under torchrun.

Multi-process runs go through the real entry points (``mmssl.commands.train`` with torchrun's
environment variables; ``torchrun ... -m mmssl.cli index build``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mmssl.commands import TrainConfig
from mmssl.commands import train as main
from mmssl.engine import Trainer
from mmssl.models import DualEncoder
from mmssl.recipes.text_code import RECIPE as TEXT_CODE
from tests.conftest import fit_or_crash

CPU = torch.device("cpu")
WORLD = 2


def config_for(corpus, out, **overrides) -> TrainConfig:
    base = dict(
        train=corpus,
        out=str(out),
        preset="tiny",
        vocab_size=300,
        embed_dim=16,
        batch_size=32,  # global: 16 pairs per rank with two processes
        max_steps=4,
        warmup_steps=1,
        lr=2e-3,
        eval_every=0,
        save_every=2,
        log_every=1,
        max_code_length=32,
        max_text_length=16,
        eval_max_pairs=64,
        dropout=0.0,  # the ranks draw their own dropout: comparable runs need none
        # Adam divides by sqrt(v) + eps: a larger eps keeps gradients of round-off size (which the
        # two runs need not share) from taking steps of the learning rate's size.
        eps=1e-4,
        device="cpu",
    )
    return TrainConfig.from_flat(**{**base, **overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, config: dict, crash_at: int | None) -> None:
    """One process of a torchrun-style job: the environment torchrun sets, then ``mmssl.commands.train``."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    if crash_at:
        real = Trainer.train_step

        def crashing(self):
            if self.step == crash_at:
                raise KeyboardInterrupt("simulated crash")
            return real(self)

        Trainer.train_step = crashing
    try:
        main(TrainConfig.from_flat(**config))
    except KeyboardInterrupt:
        # A crashed process ends without its destructors: gloo's, run at the interpreter's exit after
        # the other rank has gone, at times abort with SIGABRT, which is not what this test checks.
        sys.stdout.flush()
        os._exit(0)


def _losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), "a step logged twice: more than one rank wrote metrics"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return DualEncoder.from_pretrained(model_dir).state_dict()


def _assert_close_weights(a, b, atol=2e-5) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < atol, f"weights differ by {worst}"


def _single(corpus, out, monkeypatch, crash_at=None, **overrides):
    torch.manual_seed(0)
    config = config_for(corpus, out, **overrides)
    task = TEXT_CODE.build_task(config, CPU)
    fit_or_crash(Trainer(task, config.engine, CPU), monkeypatch, crash_at)


@pytest.mark.slow
def test_two_processes_train_as_one_on_the_global_batch_and_resume_in_one(code_corpus, tmp_path, monkeypatch):
    # Two gloo ranks, 16 pairs each, die before step 3 (checkpoint at step 2).
    two = tmp_path / "two"
    port = _free_port()
    config = config_for(code_corpus, two).flat()
    mp.start_processes(_rank_main, args=(port, config, 3), nprocs=WORLD, join=True, start_method="spawn")
    # One process, the whole batch of 32: the same run, and the same run cut at the same place.
    _single(code_corpus, tmp_path / "one", monkeypatch)
    _single(code_corpus, tmp_path / "one-cut", monkeypatch, crash_at=3)

    one, got = _losses(tmp_path / "one"), _losses(two)
    assert sorted(got) == [1, 2, 3]
    for step in got:  # every rank computes the loss of the global batch
        assert got[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)
    state = torch.load(two / "checkpoints/last/trainer_state.pt", weights_only=True)
    assert state["step"] == 2 and state["world_size"] == WORLD and len(state["rng"]) == WORLD
    # Weights after two optimizer steps: DDP's averaged gradients are the global batch's.
    _assert_close_weights(
        _weights(two / "checkpoints/last/model"), _weights(tmp_path / "one-cut/checkpoints/last/model")
    )

    # The two-process checkpoint resumes in one process and ends where the uninterrupted run ends.
    _single(code_corpus, two, monkeypatch, resume=True)
    resumed = _losses(two)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)
    _assert_close_weights(_weights(two / "final"), _weights(tmp_path / "one/final"))


@pytest.mark.slow
def test_two_processes_with_hard_negatives_train_as_one(code_corpus, tmp_path, monkeypatch):
    """Each rank draws its pairs' hard negatives (the same draw as one process: it depends on the
    batch seed and the pair only) and the loss all-gathers them: 2 processes = 1 process."""
    from mmssl.negatives import MiningSettings, mine_negatives
    from mmssl.negatives.commands import load_training_pairs

    pairs = load_training_pairs(code_corpus, "text-code", "train")
    negatives = mine_negatives(pairs, MiningSettings(source="bm25", top_k=20, keep=5)).save(tmp_path / "neg.jsonl")
    kw = dict(negatives=str(negatives), hard_negatives=2, max_steps=3, save_every=0)
    two = tmp_path / "two"
    config = config_for(code_corpus, two, **kw).flat()
    mp.start_processes(_rank_main, args=(_free_port(), config, None), nprocs=WORLD, join=True, start_method="spawn")
    _single(code_corpus, tmp_path / "one", monkeypatch, **kw)
    one, got = _losses(tmp_path / "one"), _losses(two)
    assert sorted(got) == [1, 2, 3]
    for step in got:
        assert got[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)
    _assert_close_weights(_weights(two / "final"), _weights(tmp_path / "one/final"))


def test_global_batch_must_split_evenly_over_the_processes(code_corpus, tmp_path, monkeypatch):
    from mmssl import distributed

    config = config_for(code_corpus, tmp_path / "odd", batch_size=33)
    task = TEXT_CODE.build_task(config, CPU)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="--batch-size 33 does not split evenly over 2 processes"):
        Trainer(task, config.engine, CPU)


# ---- gradient caching and activation checkpointing ---------------------------------------------


def _grads(task, batch) -> dict[str, torch.Tensor]:
    task.model.zero_grad(set_to_none=True)
    losses, _ = task.training_forward(batch)
    losses["contrastive_loss"].backward()
    grads = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
    return grads, float(losses["contrastive_loss"].detach())


def _text_code_task(corpus, tmp_path, **overrides):
    torch.manual_seed(0)
    config = config_for(corpus, tmp_path / "gc", **overrides)
    task = TEXT_CODE.build_task(config, CPU)
    task.model.train()
    return task


@pytest.mark.parametrize("chunk", [5, 16])
def test_grad_cache_gradients_equal_the_direct_computation(code_corpus, tmp_path, chunk):
    task = _text_code_task(code_corpus, tmp_path)
    batch = task.batch(torch.arange(32))
    direct, loss = _grads(task, batch)
    task.grad_cache = chunk  # 32 pairs in chunks of 5 (the last one short) or 16
    cached, cached_loss = _grads(task, batch)
    assert cached_loss == pytest.approx(loss, rel=1e-6)
    assert direct.keys() == cached.keys() and len(direct) > 10
    for name in direct:
        assert torch.allclose(cached[name], direct[name], atol=1e-6, rtol=1e-4), name


def test_grad_cache_replays_each_chunks_dropout(code_corpus, tmp_path):
    """With dropout on, the second pass must draw the masks of the first: the reference embeds the
    same chunks in the same order with their graphs, from the same generator state."""
    task = _text_code_task(code_corpus, tmp_path, dropout=0.3)
    batch = task.batch(torch.arange(32))
    task.grad_cache = 8
    torch.manual_seed(5)
    cached, _ = _grads(task, batch)

    torch.manual_seed(5)
    task.model.zero_grad(set_to_none=True)
    a, b = task.model.config.modalities
    chunks = {side: [{k: v[s : s + 8] for k, v in batch[side].items()} for s in range(0, 32, 8)] for side in "ab"}
    emb_a = torch.cat([task.model.encode(a, c) for c in chunks["a"]])
    emb_b = torch.cat([task.model.encode(b, c) for c in chunks["b"]])
    loss = task.loss(emb_a, emb_b, logit_scale=task.model.logit_scale.exp(), pair_ids=batch["ids"])
    loss.backward()
    reference = {n: p.grad for n, p in task.model.named_parameters() if p.grad is not None}
    for name in reference:
        assert torch.allclose(cached[name], reference[name], atol=1e-6, rtol=1e-4), name
    # and the masks did matter: without the replay (fresh draws) the gradients differ
    task.grad_cache = 0
    torch.manual_seed(6)
    other, _ = _grads(task, batch)
    assert any(not torch.allclose(other[n], reference[n], atol=1e-4) for n in reference)


def test_grad_cache_trains_through_the_engine(code_corpus, tmp_path):
    config = config_for(code_corpus, tmp_path / "run", grad_cache=8, max_steps=6, save_every=0)
    torch.manual_seed(0)
    task = TEXT_CODE.build_task(config, CPU)
    Trainer(task, config.engine, CPU).fit()
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(list(losses.values())))
    assert losses[6] < losses[1]


def test_activation_checkpointing_keeps_the_gradients(code_corpus, tmp_path):
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    task = _text_code_task(code_corpus, tmp_path)
    batch = task.batch(torch.arange(32))
    plain, _ = _grads(task, batch)
    task.model.set_grad_checkpointing(True)
    assert all(t.body().is_activation_checkpointing for t in task.model.towers.values())
    checkpointed, _ = _grads(task, batch)
    for name in plain:
        assert torch.allclose(checkpointed[name], plain[name], atol=1e-6, rtol=1e-4), name

    # open_clip towers: their own switch
    torch.manual_seed(0)
    image_text = TrainConfig.from_flat(task="image-text", image_model="mmssl-vit-micro", train="unused")
    model = IMAGE_TEXT.build_model(image_text.model, image_text.image_text)
    model.set_grad_checkpointing(True)
    assert model.towers["image"].visual.transformer.grad_checkpointing
    assert model.towers["text"].text.transformer.grad_checkpointing


# ---- the index embedded by several processes --------------------------------------------------


@pytest.mark.slow
def test_index_built_by_two_processes_equals_one(tiny_model, code_corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    common = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--device", "cpu"]
    common += ["--shard-size", "64", "--index-type", "flat"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    two = subprocess.run(
        [*torchrun, str(_free_port()), "-m", "mmssl.cli", *common, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "mmssl.cli", *common, "--out", str(tmp_path / "one")], env=env, capture_output=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    from indexing.embed import ShardDir

    a, b = ShardDir(tmp_path / "two.embeddings"), ShardDir(tmp_path / "one.embeddings")
    assert a.spec.n_shards > 2  # both ranks embedded shards
    for (ia, xa), (ib, xb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and np.allclose(xa, xb, atol=1e-5)
    manifests = [json.loads((tmp_path / run / "manifest.json").read_text()) for run in ("two", "one")]
    assert manifests[0]["count"] == manifests[1]["count"] == a.count


def test_default_data_workers_none_on_cpu_and_a_share_of_the_cores_per_gpu_process(monkeypatch):
    from mmssl.engine.sampling import resolve_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert resolve_workers(3, CPU) == 3 and resolve_workers(-1, CPU) == 0
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers(-1, torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 GPU processes share 32 cores: 3 workers each
    assert resolve_workers(-1, torch.device("cuda")) == 3


@pytest.mark.slow
def test_two_processes_with_grad_cache_average_their_gradients_themselves(code_corpus, tmp_path, monkeypatch):
    """GradCache runs several backward passes a step, so DDP is not used: ``sync_gradients`` averages."""
    two = tmp_path / "two-gc"
    config = config_for(code_corpus, two, grad_cache=6, save_every=0).flat()
    mp.start_processes(_rank_main, args=(_free_port(), config, None), nprocs=WORLD, join=True, start_method="spawn")
    _single(code_corpus, tmp_path / "one", monkeypatch, save_every=0)
    one, got = _losses(tmp_path / "one"), _losses(two)
    assert sorted(got) == [1, 2, 3, 4]
    for step in got:
        assert got[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)
    _assert_close_weights(_weights(two / "final"), _weights(tmp_path / "one/final"))
