"""The contract between the training engine and a task: ``Task``, an abstract base with defaults.

A task owns its model, its loss and its data; the engine (``mmssl.engine.trainer.Trainer``) knows
nothing of modalities and only calls these hooks. What a task must give:
    data                       ``TrainingData``: its length and ``fingerprint()`` (resume refuses other data)
    training_forward(batch)    -> (losses, report): keys of ``losses`` ending in ``_loss`` are summed
                               and back-propagated; ``report`` holds floats to log
    batch(indices) / batcher   the batch of these indices on the model's device, or a picklable
                               ``batcher(indices, seed)`` making CPU batches (run in data workers)
    save_pretrained(dir), load_pretrained_state(dir)
And what it may override (the defaults say what the engine does without it):
    has_validation, evaluate() whether the task validates (default: no) and its validation metrics
    metric, greater_is_better  the validation metric that picks OUT/best (default: loss, lower)
    after_step(step) -> bool   after each optimizer step (clamping, an EMA target, reclustering,
                               refreshed negatives); True: batches made ahead must be made again
    lr_scales()                parameters trained at a multiple of the learning rate (default: none)
    batch_groups()             a group id per training example: each batch is made of whole groups
                               (``GroupedSampler``; default None: random batches)
    checkpoint_state() / load_checkpoint_state(state)   state beyond the weights (default: none)
    distribute(wrap) -> module | None   data-parallel wrapping; None: the engine averages gradients
    set_grad_checkpointing(), compile()  refused by default, before the first step, in one line
    close()                    at the end of training
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn


class TrainingData(Protocol):
    """What the engine needs of a task's training data: its size and a content hash."""

    def __len__(self) -> int: ...

    def fingerprint(self) -> str: ...


class Batcher(Protocol):
    """Indices -> a CPU batch, under the batch's seed (``mmssl.engine.sampling.batch_seed``)."""

    def __call__(self, indices: Tensor, seed: int | None = None) -> dict: ...


class Unsupported(ValueError):
    """A task was asked for something it cannot do (a one-line error before the first step)."""


class Task(ABC):
    """Base of every training task (see the module docstring for the contract)."""

    model: nn.Module
    data: TrainingData
    batcher: Batcher | None = None
    metric: str = "loss"
    greater_is_better: bool = False
    loss_name: str = "training loss"

    @abstractmethod
    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]: ...

    @abstractmethod
    def save_pretrained(self, path) -> None: ...

    @abstractmethod
    def load_pretrained_state(self, path) -> None: ...

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains (default: the model's trainable parameters)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def lr_scales(self) -> dict[nn.Parameter, float]:
        """Parameters whose learning rate (and its schedule) is multiplied by the given factor."""
        return {}

    def batch_groups(self) -> Tensor | None:
        """(N,) a group id per training example, or None (random batches)."""
        return None

    def batch(self, indices: Tensor) -> dict:
        """The batch of ``indices`` on the model's device (tasks without a ``batcher``)."""
        raise NotImplementedError(f"{type(self).__name__} has neither a batcher nor batch()")

    @property
    def has_validation(self) -> bool:
        return False

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} has no validation")

    def after_step(self, step: int) -> bool:
        return False

    def checkpoint_state(self) -> dict:
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        return None

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> nn.Module | None:
        return None

    def set_grad_checkpointing(self) -> None:
        raise Unsupported(f"--grad-checkpointing: {self.name} does not support gradient checkpointing")

    def compile(self) -> None:
        raise Unsupported(f"--compile: {self.name} does not run one model module per step")

    def close(self) -> None:
        return None

    @property
    def name(self) -> str:
        return self.loss_name.removesuffix(" loss") + " training"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
