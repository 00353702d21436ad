"""A training command's body: ``run_training(engine_config, build)``: the output directory's
check (a run already there is continued with ``--resume`` or replaced with ``--overwrite``, never
silently), the process group (under torchrun), logging, seed, device, ``build(device) -> Task``,
then ``Trainer.fit``."""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from mmssl import distributed as dist
from mmssl.console import get_logger, setup_logging
from mmssl.engine.config import EngineConfig
from mmssl.engine.task import Task
from mmssl.engine.trainer import RUN_OUTPUTS, Trainer
from mmssl.io import check_output
from mmssl.runtime import enable_tf32, resolve_device, seed_everything

log = get_logger("train")


def run_training(config: EngineConfig, build: Callable[[torch.device], Task], run_config: dict | None = None) -> dict:
    """Set up the process, build the task on its device, train. Returns ``Trainer.fit``'s summary;
    ``run_config`` (the command's whole config, default: the engine's) is recorded in checkpoints."""
    if not config.resume:  # before anything is loaded or written
        also = " or --resume to continue it"
        check_output(config.out, config.overwrite, "a training run", RUN_OUTPUTS, also=also)
    distributed = dist.init_distributed()
    setup_logging()  # ranks other than 0 log warnings only
    seed_everything(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = resolve_device(_rank_device(config.device) if distributed else config.device)
    if device.type == "cuda":
        enable_tf32(config.tf32)
    task = build(device)
    if distributed:  # dropout and masking draws differ per rank from here on
        seed_everything(config.seed * 1_000_003 + dist.get_rank())
    try:
        result = Trainer(task, config, device, run_config).fit()
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
