"""The training loop every task runs on: ``Trainer(task, engine_config, device).fit()``.

AdamW (``mmssl.engine.optimizer``: no decay on biases, norms and the temperature) with linear
warmup and cosine decay; gradient accumulation; gradient clipping; bf16/fp16 autocast; a guard that
skips, counts and logs a step whose loss or gradient is not finite; periodic validation with the
best model kept; atomic checkpoints and exact resume (model, optimizer, scheduler, scaler, RNG and
data position: a resumed run reproduces the loss curve of an uninterrupted one); metrics as JSONL
and a PNG of the curves.

Output directory:
    OUT/metrics.jsonl          one JSON object per logged step and per validation
    OUT/curves.png             training loss and the validation metric
    OUT/best/                  the model with the best validation metric (the task's save_pretrained)
    OUT/final/                 the model at the end of training
    OUT/checkpoints/last/      model/ + trainer_state.pt, for --resume

A run already in OUT is continued with ``--resume`` or replaced with ``--overwrite``; without
either the command refuses before anything is written.

Gradient accumulation sums gradients over micro-batches; it does not add negatives to InfoNCE
(each micro-batch only sees its own). Larger contrastive batches at fixed memory come from gradient
caching (``--grad-cache C``, the contrastive task's), which does.

Many processes (``torchrun``): ``--batch-size`` is the global batch: one sampler, the same on every
rank, draws it and rank r trains on the r-th of W equal parts, so the data order, the checkpoint's
position and the schedule do not depend on W, and a run resumes on another number of processes.
A task's ``distribute`` wraps its model in DistributedDataParallel; tasks that return no wrapper
have their gradients averaged after the step's backward passes (``mmssl.distributed.sync_gradients``).
Rank 0 alone validates and writes metrics, models and checkpoints (with every rank's RNG state).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from mmssl import distributed as dist
from mmssl.console import error_line, format_eta, get_logger
from mmssl.engine.checkpoint import checkpoint_dir, read_trainer_state, restore_rng, rng_state, write_checkpoint
from mmssl.engine.config import EngineConfig
from mmssl.engine.metrics import MetricsLog, plot_curves
from mmssl.engine.optimizer import make_optimizer
from mmssl.engine.sampling import EpochSampler, GroupedSampler, SeededBatches, resolve_workers, to_device
from mmssl.engine.task import Task
from mmssl.io import atomic_file
from mmssl.runtime import autocast, check_precision, eval_mode, grad_scaler, resolve_device

log = get_logger("train")

# What a run writes in OUT: what --overwrite replaces, and what marks a directory as a run.
RUN_OUTPUTS = ("metrics.jsonl", "curves.png", "best", "final", "checkpoints")
# final/training.json: the steps trained of those asked for, the minutes, and what stopped it early
TRAINING_FILE = "training.json"
# On --resume the optimizer's state (and with it these values) comes from the checkpoint.
OPTIMIZER_STATE = frozenset({"lr", "weight_decay", "beta1", "beta2", "eps"})
# Options a resumed run may change on purpose: how long, how often, where and how fast it runs.
RUN_CONTROL = frozenset(
    {"max_steps", "max_minutes", "eval_every", "save_every", "log_every", "workers", "device", "compile", "tf32",
     "grad_checkpointing", "eval_max_pairs", "eval_max_images", "eval_max_blocks"}
)  # fmt: skip


class Trainer:
    """Runs a ``Task``'s ``training_forward`` in the loop described in the module docstring."""

    def __init__(
        self, task: Task, config: EngineConfig, device: torch.device | None = None, run_config: dict | None = None
    ) -> None:
        from transformers import get_cosine_schedule_with_warmup

        if not isinstance(task, Task):
            raise TypeError(f"{type(task).__name__} is not a mmssl.engine.Task")
        self.task, self.config = task, config
        self.run_config = run_config if run_config is not None else asdict(config)  # kept in checkpoints
        self.device = device or resolve_device(config.device)
        self.precision = check_precision(config.precision, self.device)
        self.out = Path(config.out)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.main = self.rank == 0
        if config.batch_size % self.world:
            raise ValueError(f"--batch-size {config.batch_size} does not split evenly over {self.world} processes")
        # What the task cannot do is refused here, before anything is written.
        if config.grad_checkpointing:
            task.set_grad_checkpointing()
        self.ddp = task.distribute(self._ddp_wrapper()) if dist.is_distributed() else None
        if config.compile:
            task.compile()  # the DDP wrapper when there is one, as PyTorch recommends
        self.params = list(task.parameters())
        self.optimizer = make_optimizer(self.params, config, self.device, task.lr_scales())
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, config.max_steps)
        self.scaler = grad_scaler(self.precision, self.device)
        groups = task.batch_groups()
        self.sampler = (
            EpochSampler(len(task.data), config.batch_size, config.seed)
            if groups is None
            else GroupedSampler(groups, config.batch_size, config.seed)
        )
        self.metric, self.sign = task.metric, 1.0 if task.greater_is_better else -1.0
        self.step, self.skipped, self.best = 0, 0, -self.sign * math.inf
        self._batches = None  # made on first use (after a resume has set the sampler's position)
        self._consumed = self.sampler.state()  # the position after the last batch trained on

    def _ddp_wrapper(self):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None

        def wrap(model):
            # find_unused_parameters: transformers towers carry a pooler that mean pooling never uses.
            # broadcast_buffers off: ViT towers hold no statistics; BatchNorm ones keep their own per rank.
            return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)

        return wrap

    # ---- batches --------------------------------------------------------------------------------

    def next_batch(self) -> dict:
        """The next batch on the device. A task's ``batcher`` makes its batches with a per-batch
        seed, in ``workers`` processes when configured (prefetched: the sampler runs ahead, the
        checkpoint keeps the position of the batches actually trained on)."""
        if self.task.batcher is None:
            batch = self.task.batch(dist.rank_slice(self.sampler.next()))
            self._consumed = self.sampler.state()
            return batch
        if self._batches is None:
            self._batches = self._batch_stream(self.task.batcher)
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
        self.step += 1
        if self.task.after_step(self.step):  # the task's batches changed: those made ahead are made again
            self.sampler.load_state(self._consumed)
            self._batches = None
        out = {"step": self.step, "loss": total, "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
        for key in reports[0]:
            out[key] = sum(r[key] for r in reports) / len(reports)
        return out

    # ---- the loop -------------------------------------------------------------------------------

    def fit(self) -> dict:
        cfg = self.config
        if self.main:
            if cfg.overwrite and not cfg.resume:  # the task is built: only now is the old run replaced
                clear_run(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if cfg.resume:
            self.load_checkpoint()
        # Explicitly: towers loaded with from_pretrained come in eval mode (no dropout), and a run must
        # not change behaviour at its first validation, nor differ from its resumed copy.
        self.task.model.train()
        start, samples, t_last = time.monotonic(), 0, time.monotonic()
        per_step = cfg.batch_size * cfg.grad_accum  # over all processes
        last_valid = None
        with MetricsLog(self.out / "metrics.jsonl", enabled=self.main).open(self.step) as metrics:
            while self.step < cfg.max_steps:
                record = self.train_step()
                samples += per_step
                if record is not None and (self.step % cfg.log_every == 0 or self.step == 1):
                    now = time.monotonic()
                    record["samples_per_s"] = samples / max(now - t_last, 1e-9)
                    record["skipped"] = self.skipped
                    samples, t_last = 0, now
                    metrics.write(record)
                    left_s = (cfg.max_steps - self.step) * per_step / max(record["samples_per_s"], 1e-9)
                    log.info(
                        "step %d/%d loss %.4f lr %.2e %.1f samples/s ETA %s",  # one 80-column line
                        self.step, cfg.max_steps, record["loss"], record["lr"], record["samples_per_s"],
                        format_eta(left_s),
                    )  # fmt: skip
                out_of_time = cfg.max_minutes is not None and (time.monotonic() - start) / 60 >= cfg.max_minutes
                out_of_time = dist.any_rank(out_of_time)  # every rank stops at the same step
                done = self.step >= cfg.max_steps or out_of_time
                paused = False
                if self.task.has_validation and ((cfg.eval_every and self.step % cfg.eval_every == 0) or done):
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
        self.task.close()  # e.g. a hard-negative refresh still running (a --max-minutes stop)
        if self.main:
            self.task.save_pretrained(self.out / "final")
            minutes = round((time.monotonic() - start) / 60, 2)  # this process's (a resumed run: since resuming)
            stopped = {"step": self.step, "max_steps": cfg.max_steps, "minutes": minutes}
            if self.step < cfg.max_steps:
                stopped["stopped_by"] = f"--max-minutes {cfg.max_minutes:g}"
            with atomic_file(self.out / "final" / TRAINING_FILE, "w") as f:
                json.dump(stopped, f)
            self.plot()
        dist.barrier()
        return {
            "step": self.step,
            "skipped": self.skipped,
            "best": self.best,
            "metric": self.metric,
            "valid": last_valid,
        }

    def validate(self, metrics: MetricsLog) -> dict | None:
        """Rank 0 scores the model; the others wait for it (and get None)."""
        if not self.main:
            dist.barrier()
            return None
        try:
            with eval_mode(self.task.model):
                result = {"step": self.step, "split": "valid", **self.task.evaluate()}
            metrics.write(result)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            log.info("step %d valid: %s", self.step, shown)
            value = result[self.metric]
            if self.sign * value > self.sign * self.best:
                self.best = value
                self.task.save_pretrained(self.out / "best")
            self.plot()
            return result
        finally:
            dist.barrier()

    def plot(self) -> None:
        plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", self.metric, self.task.loss_name)

    # ---- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        rng = dist.gather_objects(rng_state(self.device))  # one per rank
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
            "rng": rng,
            "world_size": self.world,
            "config": self.run_config,
            "task": self.task.checkpoint_state(),
        }
        write_checkpoint(self.out, self.task, state)
        dist.barrier()

    def load_checkpoint(self) -> None:
        ckpt = checkpoint_dir(self.out)
        state = read_trainer_state(self.out)
        here = self.task.data.fingerprint()
        if state["data_fingerprint"] != here:
            raise ValueError(
                f"--resume: {ckpt} was trained on other data (fingerprint {state['data_fingerprint']}) than "
                f"this run's (fingerprint {here}, {len(self.task.data):,} examples)"
            )
        changed = self._changed_options(state.get("config") or {})
        try:
            self.task.load_pretrained_state(ckpt / "model")
        except Exception as e:  # the checkpoint's model and this run's differ (shape, preset, tower)
            model_options = {k: v for k, v in changed.items() if k not in RUN_CONTROL}
            what = ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in model_options.items())
            raise ValueError(
                f"--resume: {ckpt / 'model'} does not fit this run's model ({error_line(e)}); options changed since "
                f"it was saved: {what or 'none recorded'}"
            ) from None
        for name, (saved, now) in changed.items():
            if name in OPTIMIZER_STATE:
                log.warning("--%s %r is ignored on --resume: the optimizer continues with the checkpoint's %r",
                            name, now, saved)  # fmt: skip
            elif name not in RUN_CONTROL:
                log.warning("--%s changed since the checkpoint (%r -> %r)", name, saved, now)
        if state.get("task"):
            self.task.load_checkpoint_state(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state(state["sampler"])
        self._consumed, self._batches = self.sampler.state(), None
        self.step, self.skipped, self.best = state["step"], state["skipped"], state["best"]
        reseed = self.config.seed * 1_000_003 + self.step * 1009 + self.rank  # differs from the run's start
        restore_rng(state, self.rank, self.device, reseed)
        saved = state.get("world_size", 1)
        log.info("resumed from %s at step %d (saved by %d process(es), now %d)", ckpt, self.step, saved, self.world)

    def _changed_options(self, saved: dict) -> dict[str, tuple]:
        """Options whose value differs from the checkpoint's recorded config (name -> (then, now))."""
        return {
            k: (saved[k], v)
            for k, v in self.run_config.items()
            if k in saved and saved[k] != v and k not in ("resume", "overwrite")
        }


def clear_run(out: Path) -> None:
    """Delete what an earlier run wrote in ``out`` (only the files the trainer makes: ``RUN_OUTPUTS``)."""
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
