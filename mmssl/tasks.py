"""Training tasks: each turns a batch into ``(losses, report)`` for the one engine in ``mmssl.train``.

Shape legend: B pairs in a batch, D embedding size.

A task owns its model and loss and knows how to make batches from its data; the engine knows
nothing of modalities. ``losses`` keys end in ``_loss`` and are summed by the engine; ``report``
holds floats to log (temperature, accuracy of the in-batch match, ...).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmssl.console import get_logger
from mmssl.losses import InfoNCELoss
from mmssl.models import DualEncoder

log = get_logger("tasks")


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

    With a table of mined hard negatives (``negatives``, ``mmssl.negatives.NegativeTable``) and
    ``hard_negatives`` h > 0, each pair draws h of its negatives (with the batch's seeded RNG); the
    candidates side then holds B + B h items, the batch's own candidates first, and the batch gains
    ``neg_ids`` (B h,) (the pair ids of the negatives) and ``neg_valid`` (B h,) (False: a placeholder,
    for a pair with fewer than h negatives).
    """

    takes_seed = True  # the engine hands it each batch's seed (``batch_seed``): the negatives' draw

    def __init__(self, prep_a, prep_b, data: Pairs, negatives=None, hard_negatives: int = 0) -> None:
        self.prep_a, self.prep_b, self.data = prep_a, prep_b, data
        self.negatives, self.hard_negatives = negatives, hard_negatives

    def __call__(self, indices: Tensor, seed: int | None = None) -> dict:
        idx = indices.tolist()
        extra = {}
        cand = indices
        if self.negatives is not None and self.hard_negatives > 0:
            neg, valid = self.negatives.sample(indices, self.hard_negatives, seed)  # (B, h) each
            cand = torch.cat([indices, neg.reshape(-1)])  # (B + B h,)
            extra = {"neg_ids": self.data.ids[neg.reshape(-1)], "neg_valid": valid.reshape(-1)}
        # A side whose embeddings are cached (prep None) needs only the pairs' positions.
        a = self.prep_a([self.data.queries[i] for i in idx]) if self.prep_a else {"index": indices}
        b = self.prep_b([self.data.candidates[i] for i in cand.tolist()]) if self.prep_b else {"index": cand}
        return {"a": a, "b": b, "ids": self.data.ids[indices], **extra}


class _Replay(torch.autograd.Function):
    """Identity on the cached embeddings; its backward hands their gradients to ``replay``, which
    re-runs the towers chunk by chunk and back-propagates them (GradCache's second pass)."""

    @staticmethod
    def forward(ctx, replay, *embs):  # embs: (B, D) each, no graph behind them
        ctx.replay = replay
        return tuple(e.clone() for e in embs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.replay(grads)
        return (None, *(None for _ in grads))


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


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

    ``grad_cache=C`` (GradCache, Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
    Memory Limited Setup"): the batch is embedded C pairs at a time without a graph, the loss is
    computed on all B embeddings (and, distributed, all N), and the backward pass re-embeds each chunk
    with its graph and back-propagates the embeddings' gradient into the towers, chunk by chunk. The
    gradients equal the direct computation's (each chunk replays its dropout draws and autocast);
    peak activation memory is that of C pairs, for about one more forward pass of compute. BatchNorm
    towers see chunk statistics, not the batch's.
    """

    CACHE_MAX_BYTES = 2**30

    metric, greater_is_better = "mrr", True  # the validation metric that picks the best model
    loss_name = "InfoNCE loss"

    def __init__(
        self,
        model: DualEncoder,
        loss: InfoNCELoss,
        data: Pairs,
        metric: str | None = None,
        cache_locked: bool = True,
        grad_cache: int = 0,
        negatives=None,
        hard_negatives: int = 0,
        refresher=None,
    ) -> None:
        self.model, self.loss, self.data = model, loss, data
        if negatives is not None:
            negatives.check_for(data)
        self.refresher = refresher  # mmssl.negatives.NegativeRefresher (ANCE), or None
        self.forward_model: torch.nn.Module = model  # DistributedDataParallel(model) once distributed
        self.grad_cache = grad_cache
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
        self.batcher = PairBatcher(preps["a"], preps["b"], data, negatives, hard_negatives)

    def _cacheable(self, modality: str, n: int) -> bool:
        tower = self.model.towers[modality]
        frozen = getattr(tower, "locked", False) and not any(p.requires_grad for p in tower.parameters())
        small = n * self.model.config.embed_dim * 4 <= self.CACHE_MAX_BYTES
        return frozen and small and not self.model.is_image(modality)  # images: augmented differently each time

    def _lookup(self, side: str, batch: dict) -> Tensor:
        return self.cached[side][batch["index"].to(self.cached[side].device)]  # (B, D)

    def distribute(self, wrap) -> bool:
        """Wrap the model for data-parallel training (``wrap``: DistributedDataParallel's constructor).
        Returns whether the wrapper reduces the gradients; with gradient caching it does not (several
        backward passes per step), and the engine averages them after the step's last one."""
        if self.grad_cache:
            return False
        self.forward_model = wrap(self.model)
        return True

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path)

    def load_pretrained_state(self, path) -> None:
        """Load the weights of a directory written by ``save_pretrained`` into this task's model."""
        self.model.load_state_dict(DualEncoder.from_pretrained(path).state_dict())

    def batch(self, indices: Tensor) -> dict:
        return to_device(self.batcher(indices), self.model.device)

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        live = {side: batch[side] for side in ("a", "b") if side not in self.cached}
        if self.grad_cache and len(batch["ids"]) > self.grad_cache:
            embs = self._cached_graph(live)
            scale = self.model.logit_scale.exp()
        else:
            emb_a, emb_b, scale = self.forward_model(live.get("a"), live.get("b"))
            embs = {"a": emb_a, "b": emb_b}
        emb_a = embs["a"] if "a" in live else self._lookup("a", batch["a"])  # (B, D)
        emb_b = embs["b"] if "b" in live else self._lookup("b", batch["b"])  # (B + B h, D)
        n = len(emb_a)
        emb_b, emb_neg = emb_b[:n], emb_b[n:]  # (B, D), (B h, D): the batch's candidates come first
        extra = {}
        if "neg_ids" in batch:
            extra = {"negatives": emb_neg, "negative_ids": batch["neg_ids"], "negative_mask": batch["neg_valid"]}
        losses = self.loss(emb_a, emb_b, logit_scale=scale, pair_ids=batch["ids"], output_dict=True, **extra)
        with torch.no_grad():
            sims = emb_a @ emb_b.T  # (B, B)
            hits = sims.argmax(1) == torch.arange(n, device=emb_a.device)
            report = {"logit_scale": float(scale.detach()), "batch_acc": float(hits.float().mean())}
            if extra:
                # each pair against its own h negatives: how often the positive scores above all of them
                own = (emb_a[:, None, :] * emb_neg.reshape(n, -1, emb_a.shape[1])).sum(-1)  # (B, h)
                own = own.masked_fill(~batch["neg_valid"].reshape(n, -1), -math.inf)
                report["hard_neg_acc"] = float((sims.diagonal() > own.max(1).values).float().mean())
        return losses, report

    # ---- hard negatives: refresh (ANCE) and checkpoint state ------------------------------------

    def after_step(self, step: int) -> bool:
        """Install refreshed hard negatives when due; True tells the engine that batches made ahead
        of this step (with the old table) must be made again."""
        if self.refresher is None:
            return False
        table = self.refresher.after_step(step, self.model)
        if table is None:
            return False
        self.batcher.negatives = table
        log.info(
            "step %d: hard negatives refreshed (mined with the step-%d model; training waited %.1f s so far)",
            step, step - self.refresher.lag, self.refresher.waited_s,
        )  # fmt: skip
        return True

    def checkpoint_state(self) -> dict:
        """With refreshes, the table in use and any refresh in flight (a mined file without
        refreshes is read again from --negatives on resume)."""
        if self.refresher is None:
            return {}
        state = {"refresher": self.refresher.state()}
        if self.batcher.negatives is not None:
            state["negatives"] = self.batcher.negatives.state()
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        from mmssl.negatives import NegativeTable

        if "negatives" in state:
            self.batcher.negatives = NegativeTable.from_state(state["negatives"])
            self.batcher.negatives.check_for(self.data, "--resume")
        if self.refresher is not None and "refresher" in state:
            self.refresher.load_state(state["refresher"])

    def close(self) -> None:
        if self.refresher is not None:
            self.refresher.close()

    def _cached_graph(self, live: dict[str, dict]) -> dict[str, Tensor]:
        """GradCache's first pass: each live side embedded in chunks without a graph; the embeddings
        come back as the outputs of ``_Replay``, whose backward re-embeds the chunks with a graph."""
        modality = dict(zip(("a", "b"), self.model.config.modalities))
        device = self.model.device
        amp = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        chunks, embs = [], {}
        with torch.no_grad():
            for side, batch in live.items():
                n = len(next(iter(batch.values())))
                parts = []
                for start in range(0, n, self.grad_cache):
                    part = {k: v[start : start + self.grad_cache] for k, v in batch.items()}
                    chunks.append((side, start, part, _rng_state(device)))
                    parts.append(self.model.encode(modality[side], part).float())  # (C, D)
                embs[side] = torch.cat(parts).requires_grad_(True)  # (B, D): leaves, the loss's inputs
        sides = list(embs)

        def replay(grads: tuple[Tensor, ...]) -> None:
            by_side = dict(zip(sides, grads))
            for side, start, part, rng in chunks:
                grad = by_side[side]
                if grad is None:
                    continue
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    _set_rng_state(device, rng)  # the chunk's dropout draws, as in the first pass
                    with torch.enable_grad(), torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                        emb = self.model.encode(modality[side], part).float()  # (C, D)
                emb.backward(grad[start : start + len(emb)])

        outs = _Replay.apply(replay, *(embs[s] for s in sides))
        return dict(zip(sides, outs))

    def parameters(self):
        """What the optimizer trains: the model's and any learnable parameter of the loss."""
        seen = {id(p) for p in self.model.parameters()}
        extra = [p for p in self.loss.parameters() if id(p) not in seen]
        return [*self.model.parameters(), *extra]
