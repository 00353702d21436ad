"""Checkpoints for exact resume: ``OUT/checkpoints/last/`` holds ``model/`` (the task's
``save_pretrained``) and ``trainer_state.pt`` (step, optimizer, scheduler, scaler, sampler
position, the data's fingerprint, every rank's RNG states, the task's own state).

``write_checkpoint`` replaces the directory atomically; ``read_trainer_state`` loads the state with
``torch.load(weights_only=True)`` (tensors and containers only: nothing executable is unpickled);
``rng_state`` / ``restore_rng`` capture and restore one process's generators.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import torch

from mmssl.console import error_line
from mmssl.io import atomic_dir
from mmssl.runtime import seed_everything

STATE_FILE = "trainer_state.pt"


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints" / "last"


def write_checkpoint(out: Path, task, state: dict) -> None:
    """The task's model and the trainer's ``state``, replacing ``OUT/checkpoints/last`` atomically."""
    with atomic_dir(checkpoint_dir(out)) as tmp:
        task.save_pretrained(tmp / "model")
        torch.save(state, tmp / STATE_FILE)


def read_trainer_state(out: Path) -> dict:
    ckpt = checkpoint_dir(out)
    if not (ckpt / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
    try:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses anything but tensors and containers
        raise ValueError(
            f"--resume: {ckpt / STATE_FILE}: refused, not a checkpoint mmssl wrote ({error_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"--resume: {ckpt / STATE_FILE}: damaged or truncated ({e})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"--resume: {ckpt / STATE_FILE}: not a trainer state (no step)")
    return state


def rng_state(device: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
    }


def restore_rng(state: dict, rank: int, device: torch.device, reseed: int) -> None:
    """This rank's saved RNG state; a rank the checkpoint has none for (more processes than saved)
    reseeds with ``reseed`` instead (its dropout draws then differ from any earlier run)."""
    if "rng" not in state:  # a checkpoint from before multi-process training: one state
        state = {"rng": [{"torch": state["rng_torch"], "cuda": None, "python": state["rng_python"]}]}
    if rank >= len(state["rng"]):
        seed_everything(reseed)
        return
    mine = state["rng"][rank]
    torch.set_rng_state(mine["torch"])
    if mine["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)
    random.setstate(_as_tuple(mine["python"]))


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
