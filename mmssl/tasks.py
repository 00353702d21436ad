"""Training tasks: each turns a batch into ``(losses, report)`` for the one engine in ``mmssl.train``.

Shape legend: B pairs in a batch, D embedding size.

A task owns its model and loss and knows how to make batches from its data; the engine knows
nothing of modalities. ``losses`` keys end in ``_loss`` and are summed by the engine; ``report``
holds floats to log (temperature, accuracy of the in-batch match, ...).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from mmssl.losses import InfoNCELoss
from mmssl.models import DualEncoder


@dataclass(frozen=True)
class Pairs:
    """Aligned (query, candidate) items and, per pair, an id shared by identical queries.

    Queries are texts; candidates are texts (code) or images (``ImageTextRecord``s, whose ``where``
    names them). Identical docstrings or captions in one batch are false negatives for each other;
    the ids let the loss mask them (the design notes' trap), and let evaluation count every image of
    a repeated caption as a right answer.
    """

    queries: list[str]
    candidates: list
    ids: Tensor  # (N,) int64

    @classmethod
    def from_texts(cls, queries: list[str], candidates: list) -> Pairs:
        if len(queries) != len(candidates):
            raise ValueError(f"{len(queries)} queries but {len(candidates)} candidates")
        seen: dict[str, int] = {}
        ids = [seen.setdefault(_norm(q), len(seen)) for q in queries]
        return cls(list(queries), list(candidates), torch.tensor(ids, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.queries)

    def sample(self, n: int | None, seed: int = 0) -> Pairs:
        """A seeded random subset of ``n`` pairs, in their original order (all if n is None or larger)."""
        if n is None or n >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        idx = keep.tolist()
        return Pairs([self.queries[i] for i in idx], [self.candidates[i] for i in idx], self.ids[keep])

    def fingerprint(self) -> str:
        """A short hash of the data, stored in checkpoints so that resume refuses other data."""
        h = hashlib.sha1()
        for q, c in zip(self.queries, self.candidates):
            c = c if isinstance(c, str) else c.where  # an image record: its file or shard member
            h.update(q.encode("utf-8", "replace") + b"\0" + c.encode("utf-8", "replace") + b"\1")
        return h.hexdigest()[:16]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


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
        for key in ("n", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: checkpoint has {key}={state[key]}, this run {getattr(self, key)}")
        self.epoch, self.index = state["epoch"], state["index"]
        self._perm = self._permutation()


def batch_seed(seed: int, state: dict) -> int:
    """The RNG seed of one batch's randomness (image augmentation): a function of the run's seed and
    the batch's place (epoch, index), so that batches are the same with any number of data workers
    and after a resume."""
    return (seed * 1_000_003 + state["epoch"] * 100_003 + state["index"]) % (2**63)


class PairBatcher:
    """Indices -> a CPU batch ``{"a": ..., "b": ..., "ids": (B,)}`` through each side's preparer.

    Holds only data and preparers (tokenizers, image transforms), not the model: it is what
    data-loader worker processes run.
    """

    def __init__(self, prep_a, prep_b, data: Pairs) -> None:
        self.prep_a, self.prep_b, self.data = prep_a, prep_b, data

    def __call__(self, indices: Tensor) -> dict:
        idx = indices.tolist()
        # A side whose embeddings are cached (prep None) needs only the pairs' positions.
        a = self.prep_a([self.data.queries[i] for i in idx]) if self.prep_a else {"index": indices}
        b = self.prep_b([self.data.candidates[i] for i in idx]) if self.prep_b else {"index": indices}
        return {"a": a, "b": b, "ids": self.data.ids[indices]}


def to_device(batch, device: torch.device, non_blocking: bool = False):
    """Tensors of a (nested) dict batch moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    return batch


class ContrastiveTask:
    """Symmetric InfoNCE between the two towers of a dual encoder, with in-batch negatives.

    ``training_forward`` embeds both sides of B pairs and returns ``{"contrastive_loss": ...}``
    and a report with the temperature and the in-batch top-1 accuracy (query -> candidate).
    ``batcher`` makes CPU batches (with the image towers' training augmentation); the engine runs
    it in data-loader workers when asked to.

    A locked text tower (LiT) computes the same embedding for a text at every step: its embeddings
    of the training texts are computed once, up front, and looked up (``cache_locked``; up to
    ``CACHE_MAX_BYTES``), which spares its forward pass at every step.
    """

    CACHE_MAX_BYTES = 2**30

    metric, greater_is_better = "mrr", True  # the validation metric that picks the best model
    loss_name = "InfoNCE loss"

    def __init__(
        self, model: DualEncoder, loss: InfoNCELoss, data: Pairs, metric: str | None = None, cache_locked: bool = True
    ) -> None:
        self.model, self.loss, self.data = model, loss, data
        if metric:
            self.metric = metric
        self.cached: dict[str, Tensor] = {}  # side ("a" | "b") -> (N, D) embeddings of a locked text tower
        preps = {}
        a, b = model.config.modalities
        for side, modality, items in (("a", a, data.queries), ("b", b, data.candidates)):
            if cache_locked and self._cacheable(modality, len(items)):
                self.cached[side] = model.embed(modality, items).to(model.device)  # (N, D), normalized
                preps[side] = None
            else:
                preps[side] = model.preparer(modality, train=True)
        self.batcher = PairBatcher(preps["a"], preps["b"], data)

    def _cacheable(self, modality: str, n: int) -> bool:
        tower = self.model.towers[modality]
        frozen = getattr(tower, "locked", False) and not any(p.requires_grad for p in tower.parameters())
        small = n * self.model.config.embed_dim * 4 <= self.CACHE_MAX_BYTES
        return frozen and small and not self.model.is_image(modality)  # images: augmented differently each time

    def _embed(self, side: str, modality: str, batch: dict) -> Tensor:
        if side in self.cached:
            return self.cached[side][batch["index"].to(self.cached[side].device)]
        return self.model.encode(modality, batch)

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path)

    def load_pretrained_state(self, path) -> None:
        """Load the weights of a directory written by ``save_pretrained`` into this task's model."""
        self.model.load_state_dict(DualEncoder.from_pretrained(path).state_dict())

    def batch(self, indices: Tensor) -> dict:
        return to_device(self.batcher(indices), self.model.device)

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        a, b = self.model.config.modalities
        emb_a, emb_b = self._embed("a", a, batch["a"]), self._embed("b", b, batch["b"])  # (B, D), (B, D)
        scale = self.model.logit_scale.exp()
        losses = self.loss(emb_a, emb_b, logit_scale=scale, pair_ids=batch["ids"], output_dict=True)
        with torch.no_grad():
            hits = (emb_a @ emb_b.T).argmax(1) == torch.arange(len(emb_a), device=emb_a.device)
        report = {"logit_scale": float(scale.detach()), "batch_acc": float(hits.float().mean())}
        return losses, report

    def parameters(self):
        """What the optimizer trains: the model's and any learnable parameter of the loss."""
        seen = {id(p) for p in self.model.parameters()}
        extra = [p for p in self.loss.parameters() if id(p) not in seen]
        return [*self.model.parameters(), *extra]
