"""The training engine: one loop for every task, and ``mmssl train``.

A task (``mmssl.tasks.ContrastiveTask``, ``mmssl.pretrain.MLMTask``/``CLMTask``) gives
``batch(indices)``, ``training_forward(batch) -> (losses, report)``, ``data`` (its length and
``fingerprint()``), ``save_pretrained(dir)``/``load_pretrained_state(dir)``, and the validation
metric that picks the best model (``metric``, ``greater_is_better``: MRR up, perplexity down).
Optional hooks: ``after_step(step)`` after each optimizer step (an EMA target, reclustering,
refreshed hard negatives), returning True when the task's batches changed so that those made ahead
are made again; ``checkpoint_state()``/``load_checkpoint_state(state)`` for state beyond the
weights (kept in ``trainer_state.pt``); ``close()`` at the end.

The loop: AdamW (no decay on biases, norms and the temperature) with linear warmup and cosine
decay; gradient accumulation; gradient clipping; bf16/fp16 autocast; a guard that skips, counts
and logs a step whose loss or gradient is not finite; periodic validation with the best model
kept; atomic checkpoints and exact resume (model, optimizer, scheduler, scaler, RNG and data
position: a resumed run reproduces the loss curve of an uninterrupted one); metrics as JSONL and
a PNG of the curves.

Output directory:
    OUT/metrics.jsonl          one JSON object per logged step and per validation
    OUT/curves.png             training loss and the validation metric
    OUT/best/                  the model with the best validation metric (the task's save_pretrained)
    OUT/final/                 the model at the end of training
    OUT/checkpoints/last/      model/ + trainer_state.pt, for --resume

Gradient accumulation sums gradients over micro-batches; it does not add negatives to InfoNCE
(each micro-batch only sees its own). Larger batches at fixed memory come from gradient caching
(``--grad-cache C``: ``mmssl.tasks.ContrastiveTask``), which does.

Many processes (``torchrun --nproc-per-node W mmssl train ...``, or several nodes with a rendezvous
endpoint): NCCL on GPUs (one per process, ``LOCAL_RANK``), gloo on CPU. ``--batch-size`` is the
global batch: one sampler, the same on every rank, draws it and rank r trains on the r-th of W equal
parts, so the data order, the checkpoint's position and the schedule do not depend on W, and a run
resumes on another number of processes. The model is wrapped in DistributedDataParallel (gradients
averaged while the backward pass runs; no reduction on the micro-batches before the last of a
step); the contrastive loss all-gathers the embeddings, so its negatives are the global batch. Tasks
that DDP cannot wrap (gradient caching, the LM pretraining tasks) have their gradients averaged
after the step's backward passes (``mmssl.distributed.sync_gradients``). Rank 0 alone validates
and writes metrics, models and checkpoints (with every rank's RNG state); the others wait.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from mmssl import distributed as dist
from mmssl.config import EngineConfig, TrainConfig
from mmssl.console import get_logger, setup_logging
from mmssl.io import atomic_dir, atomic_file
from mmssl.runtime import autocast, check_precision, enable_tf32, grad_scaler, resolve_device, seed_everything
from mmssl.tasks import EpochSampler, batch_seed, to_device

log = get_logger("train")
MAX_LOG_SCALE = math.log(100.0)


def param_groups(params, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norm scales and scalars (the temperature) are not decayed."""
    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(params, config: EngineConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused (one kernel over all parameters) where torch has it.

    torch's default AdamW on CPU loops over the tensors in Python; the fused one is the same update
    (to float rounding) and about 8x faster on CPU (a ViT-B-32 CLIP, 151 M parameters: 0.12 s against
    0.91 s a step on 2 cores), and saves the per-tensor kernel launches on GPU."""
    groups = param_groups(params, config.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    fused = device.type in ("cpu", "cuda", "mps") and all(
        p.is_floating_point() and p.device.type == device.type for p in trainable
    )
    kwargs = {"lr": config.lr, "betas": (config.beta1, config.beta2), "eps": config.eps}
    return torch.optim.AdamW(groups, **kwargs, fused=fused or None)


class Trainer:
    """Runs a task's ``training_forward`` in the loop described in the module docstring."""

    def __init__(self, task, config: EngineConfig, valid_fn=None, device: torch.device | None = None) -> None:
        from transformers import get_cosine_schedule_with_warmup

        self.task, self.config, self.valid_fn = task, config, valid_fn
        self.device = device or resolve_device(config.device)
        self.precision = check_precision(config.precision, self.device)
        self.out = Path(config.out)
        self.params = list(task.parameters())
        self.optimizer = make_optimizer(self.params, config, self.device)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, config.max_steps)
        self.scaler = grad_scaler(self.precision, self.device)
        self.sampler = EpochSampler(len(task.data), config.batch_size, config.seed)
        self.metric, self.sign = task.metric, 1.0 if task.greater_is_better else -1.0
        self.step, self.skipped, self.best = 0, 0, -self.sign * math.inf
        self._batches = None  # made on first use (after a resume has set the sampler's position)
        self._consumed = self.sampler.state()  # the position after the last batch trained on
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.main = self.rank == 0
        if config.batch_size % self.world:
            raise ValueError(f"--batch-size {config.batch_size} does not split evenly over {self.world} processes")
        if config.grad_checkpointing:
            task.model.set_grad_checkpointing(True)
        self.ddp = None  # the DistributedDataParallel wrapper, when it reduces the gradients
        if dist.is_distributed() and hasattr(task, "distribute"):
            wrap = self._ddp_wrapper()
            if task.distribute(wrap):
                self.ddp = task.forward_model
        if config.compile:
            self._compile()

    def _ddp_wrapper(self):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None

        def wrap(model):
            # find_unused_parameters: transformers towers carry a pooler that mean pooling never uses.
            # broadcast_buffers off: ViT towers hold no statistics; BatchNorm ones keep their own per rank.
            return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)

        return wrap

    def _compile(self) -> None:
        """``torch.compile`` on the module the task runs each step (the DDP wrapper when there is
        one, as PyTorch recommends); the saved weights are the plain model's, unchanged."""
        if not hasattr(self.task, "forward_model"):
            raise ValueError("--compile: this task does not run one model module per step")
        self.task.forward_model = torch.compile(self.task.forward_model)

    # ---- batches --------------------------------------------------------------------------------

    def next_batch(self) -> dict:
        """The next batch on the device. Tasks with a ``batcher`` get their batches made with a
        per-batch seed (``batch_seed``), in ``workers`` processes when configured (prefetched: the
        sampler runs ahead, the checkpoint keeps the position of the batches actually trained on)."""
        batcher = getattr(self.task, "batcher", None)
        if batcher is None:
            batch = self.task.batch(dist.rank_slice(self.sampler.next()))
            self._consumed = self.sampler.state()
            return batch
        if self._batches is None:
            self._batches = self._batch_stream(batcher)
        state, batch = next(self._batches)
        self._consumed = state
        return to_device(batch, self.device, non_blocking=self.device.type == "cuda")

    def _index_stream(self):
        while True:
            indices = dist.rank_slice(self.sampler.next())  # (B / W,): this rank's part
            yield self.sampler.state(), indices

    def _batch_stream(self, batcher):
        seeded = SeededBatches(batcher, self.config.seed, self.rank)
        workers = resolve_workers(self.config.workers, self.device)
        if workers <= 0:
            return (seeded[item] for item in self._index_stream())
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after tokenizing
        loader = torch.utils.data.DataLoader(
            seeded,
            sampler=self._index_stream(),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=True,
            prefetch_factor=2,
        )
        return iter(loader)

    # ---- one optimizer step ---------------------------------------------------------------------

    def train_step(self) -> dict | None:
        """Accumulate ``grad_accum`` micro-batches and step; None if the step was skipped."""
        cfg = self.config
        total, reports, finite = 0.0, [], True
        for i in range(cfg.grad_accum):
            batch = self.next_batch()
            # DDP reduces the gradients in the backward pass of the step's last micro-batch only.
            last = i == cfg.grad_accum - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with autocast(self.precision, self.device):
                    losses, report = self.task.training_forward(batch)
                loss = sum(v for k, v in losses.items() if k.endswith("_loss")) / cfg.grad_accum
                if not torch.isfinite(loss):  # the same on every rank: the loss is the global batch's
                    finite = False
                    break
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
            reports.append(report)
        if finite and self.ddp is None:
            dist.sync_gradients(self.params)
        grad_norm = torch.tensor(0.0)
        if finite:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_grad or float("inf"))
            finite = bool(torch.isfinite(grad_norm)) or self.precision == "fp16"  # fp16: the scaler skips
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.step += 1
            with warnings.catch_warnings():  # no optimizer step happened, on purpose: keep the schedule aligned
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                self.scheduler.step()
            log.warning("step %d: non-finite loss or gradient, step skipped (%d so far)", self.step, self.skipped)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._clamp_temperature()
        self.step += 1
        # e.g. BYOL's target update, DeepCluster's reclustering, refreshed hard negatives; True: the
        # task's batches changed, so those made ahead of this step are made again
        after = getattr(self.task, "after_step", None)
        if after is not None and after(self.step):
            self.sampler.load_state(self._consumed)
            self._batches = None
        out = {"step": self.step, "loss": total, "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
        for key in reports[0]:
            out[key] = sum(r[key] for r in reports) / len(reports)
        return out

    def _clamp_temperature(self) -> None:
        scale = getattr(self.task.model, "logit_scale", None)
        if scale is not None:
            with torch.no_grad():
                scale.clamp_(0.0, MAX_LOG_SCALE)  # 1/T in [1, 100], as CLIP

    # ---- the loop -------------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg = self.config
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if cfg.resume:
            self.load_checkpoint()
        # Explicitly: towers loaded with from_pretrained come in eval mode (no dropout), and a run must
        # not change behaviour at its first validation, nor differ from its resumed copy.
        self.task.model.train()
        metrics_path = self.out / "metrics.jsonl"
        if self.main:
            _truncate_metrics(metrics_path, self.step)
        start, samples, t_last = time.monotonic(), 0, time.monotonic()
        per_step = cfg.batch_size * cfg.grad_accum  # over all processes
        last_valid = None
        with metrics_path.open("a") if self.main else contextlib.nullcontext(_NoFile()) as metrics:
            while self.step < cfg.max_steps:
                record = self.train_step()
                samples += per_step
                if record is not None and (self.step % cfg.log_every == 0 or self.step == 1):
                    now = time.monotonic()
                    record["samples_per_s"] = samples / max(now - t_last, 1e-9)
                    record["skipped"] = self.skipped
                    samples, t_last = 0, now
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    log.info(
                        "step %d/%d  loss %.4f  lr %.2e  %.1f samples/s",
                        self.step,
                        cfg.max_steps,
                        record["loss"],
                        record["lr"],
                        record["samples_per_s"],
                    )
                out_of_time = cfg.max_minutes is not None and (time.monotonic() - start) / 60 >= cfg.max_minutes
                out_of_time = dist.any_rank(out_of_time)  # every rank stops at the same step
                done = self.step >= cfg.max_steps or out_of_time
                paused = False
                if self.valid_fn and ((cfg.eval_every and self.step % cfg.eval_every == 0) or done):
                    last_valid, paused = self.validate(metrics), True
                if (cfg.save_every and self.step % cfg.save_every == 0) or done:
                    self.save_checkpoint()
                    paused = True
                if paused:  # samples/s measures training alone: restart the window after eval/save
                    samples, t_last = 0, time.monotonic()
                if out_of_time:
                    log.info("stopping at step %d: --max-minutes %.1f reached", self.step, cfg.max_minutes)
                    break
        self._batches = None  # stops the data workers, if any
        if hasattr(self.task, "close"):
            self.task.close()  # e.g. a hard-negative refresh still running (a --max-minutes stop)
        if self.main:
            self.task.save_pretrained(self.out / "final")
            self.plot()
        dist.barrier()
        return {
            "step": self.step,
            "skipped": self.skipped,
            "best": self.best,
            "metric": self.metric,
            "valid": last_valid,
        }

    def validate(self, metrics) -> dict | None:
        """Rank 0 scores the model; the others wait for it (and get None)."""
        if not self.main:
            dist.barrier()
            return None
        was_training = self.task.model.training
        try:
            result = self._validate(metrics)
        finally:
            self.task.model.train(was_training)
            dist.barrier()
        return result

    def _validate(self, metrics) -> dict:
        result = {"step": self.step, "split": "valid", **self.valid_fn(self.task.model)}
        metrics.write(json.dumps(result) + "\n")
        metrics.flush()
        log.info(
            "step %d valid: %s", self.step, "  ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
        )
        value = result[self.metric]
        if self.sign * value > self.sign * self.best:
            self.best = value
            self.task.save_pretrained(self.out / "best")
        self.plot()
        return result

    def plot(self) -> None:
        title = getattr(self.task, "loss_name", "training loss")
        plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", self.metric, title)

    # ---- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        rng = dist.gather_objects(
            {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "python": random.getstate(),
            }
        )
        if not self.main:
            dist.barrier()
            return
        state = {
            "step": self.step,
            "skipped": self.skipped,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self._consumed,
            "data_fingerprint": self.task.data.fingerprint(),
            "rng": rng,  # one per rank
            "world_size": self.world,
            "config": asdict(self.config),
            "task": self.task.checkpoint_state() if hasattr(self.task, "checkpoint_state") else {},
        }
        with atomic_dir(self.out / "checkpoints" / "last") as tmp:
            self.task.save_pretrained(tmp / "model")
            torch.save(state, tmp / "trainer_state.pt")
        dist.barrier()

    def load_checkpoint(self) -> None:
        ckpt = self.out / "checkpoints" / "last"
        if not (ckpt / "trainer_state.pt").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        # weights_only: plain tensors and containers, nothing executable is unpickled.
        state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
        if state["data_fingerprint"] != self.task.data.fingerprint():
            raise ValueError(f"--resume: {ckpt} was trained on other data than --train {self.config.train}")
        self.task.load_pretrained_state(ckpt / "model")
        if state.get("task") and hasattr(self.task, "load_checkpoint_state"):
            self.task.load_checkpoint_state(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state(state["sampler"])
        self._consumed, self._batches = self.sampler.state(), None
        self._load_rng(state)
        self.step, self.skipped, self.best = state["step"], state["skipped"], state["best"]
        saved = state.get("world_size", 1)
        log.info("resumed from %s at step %d (saved by %d process(es), now %d)", ckpt, self.step, saved, self.world)

    def _load_rng(self, state: dict) -> None:
        """Each rank its own saved RNG state; on more ranks than saved, the extra ones reseed from
        the run's seed and their rank (dropout draws then differ from any earlier run)."""
        if "rng" not in state:  # a checkpoint from before multi-process training: one state
            state = {"rng": [{"torch": state["rng_torch"], "cuda": None, "python": state["rng_python"]}]}
        if self.rank >= len(state["rng"]):
            seed_everything(self.config.seed * 1_000_003 + self.step * 1009 + self.rank)
            return
        mine = state["rng"][self.rank]
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        random.setstate(_as_tuple(mine["python"]))


def resolve_workers(requested: int, device: torch.device) -> int:
    """``--workers``: as given, or for -1 none on CPU (the step needs every core; on 2 cores making
    batches in process measured faster than one worker) and on a GPU ``min(8, cores per process - 1)``
    (``LOCAL_WORLD_SIZE`` processes share the node's cores)."""
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_process - 1))


class SeededBatches(torch.utils.data.Dataset):
    """(sampler state, indices) -> (state, the task's CPU batch), made under the batch's own seed.

    The global RNG is forked around it, so that in-process batches leave the training RNG (dropout)
    as it was: with 0 or N workers the run is the same. Each rank's part of a global batch has its
    own seed (rank 0's is the single-process one)."""

    def __init__(self, batcher, seed: int, rank: int = 0) -> None:
        self.batcher, self.seed, self.rank = batcher, seed, rank

    def __getitem__(self, item):
        state, indices = item
        seed = batch_seed(self.seed, state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed + 7919 * self.rank) % 2**63)
            if getattr(self.batcher, "takes_seed", False):  # draws that must not depend on the rank
                return state, self.batcher(indices, seed=seed)
            return state, self.batcher(indices)


class _NoFile:
    """Where ranks other than 0 'write' their metrics."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records past the checkpoint so the file reads as one uninterrupted run."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    with atomic_file(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))


def plot_curves(metrics_path: Path, png_path: Path, metric: str = "mrr", loss_title: str = "training loss") -> None:
    """Training loss (left) and the validation ``metric`` (right) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if r.get("split") == "valid" and metric in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train])
    ax1.set(xlabel="step", ylabel="training loss", title=loss_title)
    if valid:
        ax2.plot([r["step"] for r in valid], [r[metric] for r in valid], marker="o")
    ax2.set(xlabel="step", ylabel=metric, title=f"validation {metric}")
    fig.tight_layout()
    with atomic_file(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def run_training(config: EngineConfig, build) -> dict:
    """A training command's body: the process group (under torchrun), logging, seed, device,
    ``build(config, device) -> (task, valid_fn)``, then the loop. Returns ``Trainer.fit``'s summary."""
    distributed = dist.init_distributed()
    setup_logging()  # ranks other than 0 log warnings only
    seed_everything(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = resolve_device(_rank_device(config.device) if distributed else config.device)
    if device.type == "cuda":
        enable_tf32(config.tf32)
    task, valid_fn = build(config, device)
    if distributed:  # dropout and masking draws differ per rank from here on
        seed_everything(config.seed * 1_000_003 + dist.get_rank())
    try:
        result = Trainer(task, config, valid_fn, device).fit()
    finally:
        if distributed:
            dist.destroy()
    log.info("done: %s", json.dumps(result))
    return result


def _rank_device(requested: str) -> str:
    """Under torchrun each process takes the GPU of its ``LOCAL_RANK`` (``auto``/``cuda``)."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dist.get_local_rank()}"
    return requested


def main(config: TrainConfig) -> int:
    if not config.train:
        raise ValueError("--train is required (see --help for the layouts each --task reads)")
    if config.task == "image-text":
        from mmssl.image_text import build_image_text

        run_training(config, build_image_text)
    else:
        from mmssl.text_code import build_text_code

        run_training(config, build_text_code)
    return 0
