"""Which examples a step trains on, and the seeds of their randomness.

``EpochSampler``: batches of indices in a seeded order per epoch, with a resumable position.
``GroupedSampler``: the same, each batch made of whole groups (clusters of similar examples).
``batch_seed``: the seed of one batch's own draws (augmentation, hard negatives), from its place.
``SeededBatches``: a task's batcher as a ``Dataset`` of (position, indices), for data workers.
``resolve_workers``: how many data-loader processes ``--workers`` means on this device.
``to_device``: a (nested) dict batch moved to a device.
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import Tensor


class EpochSampler:
    """Batches of indices in a seeded random order per epoch; the position is resumable.

    Epoch ``e`` uses the permutation of ``torch.randperm(n)`` under seed ``seed + e``; the last
    partial batch is dropped (InfoNCE wants full batches). ``state()``/``load_state()`` carry
    (epoch, batch index), so a resumed run sees exactly the batches the interrupted one would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} training pairs")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.index = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def next(self) -> Tensor:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
            self._perm = self._permutation()
        start = self.index * self.batch_size
        self.index += 1
        return self._perm[start : start + self.batch_size]

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "batch_size": self.batch_size, "seed": self.seed}

    def load_state(self, state: dict) -> None:
        mine = self.state()
        for key in ("n", "batch_size", "seed"):
            if state[key] != mine[key]:
                raise ValueError(f"cannot resume: checkpoint has {key}={state[key]}, this run {mine[key]}")
        if state.get("groups") != mine.get("groups"):

            def grouping(s: dict) -> str:
                return f"groups {s['groups']}" if s.get("groups") else "random batches"

            raise ValueError(
                f"cannot resume: the checkpoint's batches were {grouping(state)}, this run's {grouping(mine)} "
                "(resume with the interrupted run's batch grouping, e.g. its --cluster-batches)"
            )
        self.epoch, self.index = state["epoch"], state["index"]
        self._perm = self._permutation()


class GroupedSampler(EpochSampler):
    """An ``EpochSampler`` whose order keeps groups together: epoch ``e`` shuffles the groups and the
    members of each (under seed ``seed + e``) and lays them end to end, so a batch is a few whole
    groups (a group larger than the batch, or one at a batch's edge, is split). With groups of
    similar examples, the in-batch negatives are hard ones (topic-aware sampling: Hofstätter et al.
    2021, "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling").

    ``groups`` (N,) int: each example's group id. The state names the grouping (a digest), so a
    resume with other groups is refused like one with another batch size."""

    def __init__(self, groups: Tensor, batch_size: int, seed: int) -> None:
        self.groups = torch.as_tensor(groups, dtype=torch.long)
        if self.groups.ndim != 1:
            raise ValueError(f"groups must be one id per example, got shape {tuple(self.groups.shape)}")
        self.digest = hashlib.sha256(self.groups.numpy().tobytes()).hexdigest()[:16]
        unique, self._dense = torch.unique(self.groups, return_inverse=True)  # (G,), (N,) in [0, G)
        self._count = len(unique)
        super().__init__(len(self.groups), batch_size, seed)

    def _permutation(self) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        place = torch.randperm(self._count, generator=gen)  # each group's place in the epoch
        key = place[self._dense].double() + torch.rand(self.n, generator=gen, dtype=torch.double)  # shuffled within
        return torch.argsort(key)

    def state(self) -> dict:
        return {**super().state(), "groups": self.digest}


def batch_seed(seed: int, state: dict) -> int:
    """The RNG seed of one batch's randomness (image augmentation): a function of the run's seed and
    the batch's place (epoch, index), so that batches are the same with any number of data workers
    and after a resume."""
    return (seed * 1_000_003 + state["epoch"] * 100_003 + state["index"]) % (2**63)


class SeededBatches(torch.utils.data.Dataset):
    """(sampler state, indices) -> (state, the task's CPU batch), made under the batch's own seed.

    The global RNG is forked around it, so that in-process batches leave the training RNG (dropout)
    as it was: with 0 or N workers the run is the same. Each rank's part of a global batch has its
    own torch seed (rank 0's is the single-process one); the batcher also gets the batch's seed
    itself, for draws that must not depend on the rank (hard negatives)."""

    def __init__(self, batcher, seed: int, rank: int = 0) -> None:
        self.batcher, self.seed, self.rank = batcher, seed, rank

    def __getitem__(self, item):
        state, indices = item
        seed = batch_seed(self.seed, state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed + 7919 * self.rank) % 2**63)
            return state, self.batcher(indices, seed=seed)


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


def to_device(batch, device: torch.device, non_blocking: bool = False):
    """Tensors of a (nested) dict batch moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    return batch
