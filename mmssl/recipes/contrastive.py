"""The task every dual-encoder recipe trains: symmetric InfoNCE between the towers, in-batch
negatives (plus mined hard negatives), for the one engine.

Shape legend: B pairs in a batch, h hard negatives per pair, D embedding size.

``PairBatcher`` makes CPU batches from ``Pairs`` (the towers' preparers, the hard negatives' draw);
``ContrastiveTask`` embeds them and returns ``{"contrastive_loss": ...}`` with a report (temperature,
in-batch top-1 accuracy, hard-negative accuracy). It clamps the model's learnable temperature after
every step (1/T <= ``mmssl.losses.MAX_LOGIT_SCALE``, as CLIP), caches a locked text tower's
embeddings (LiT), runs GradCache (``grad_cache=C``, ``mmssl.recipes.grad_cache``) and installs
refreshed hard negatives (ANCE) after the steps the refresher says.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mmssl.console import get_logger
from mmssl.data.pairs import Pairs
from mmssl.engine.sampling import to_device
from mmssl.engine.task import Task
from mmssl.losses import MAX_LOGIT_SCALE
from mmssl.models import DualEncoder
from mmssl.models.text import TextTower
from mmssl.recipes.grad_cache import cached_embeddings

log = get_logger("tasks")
MAX_LOG_SCALE = math.log(MAX_LOGIT_SCALE)


class PairBatcher:
    """Indices -> a CPU batch ``{"a": ..., "b": ..., "ids": (B,)}`` through each side's preparer.

    Holds only data and preparers (tokenizers, image transforms), not the model: it is what
    data-loader worker processes run.

    With a table of mined hard negatives (``negatives``, ``mmssl.negatives.NegativeTable``) and
    ``hard_negatives`` h > 0, each pair draws h of its negatives (from the batch's seed); the
    candidates side then holds B + B h items, the batch's own candidates first, and the batch gains
    ``neg_ids`` (B h,) (the pair ids of the negatives) and ``neg_valid`` (B h,) (False: a placeholder,
    for a pair with fewer than h negatives).

    With several captions per pair (``data.captions``), each pair's query is one of them, drawn
    from the batch's seed; ``ids`` are then the drawn captions' ids (two pairs that drew the same
    text are masked; a pair whose image would also fit another's drawn keyword is not).
    """

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
        # A side whose embeddings are cached (prep None) needs only the positions of its items.
        captions, ids = self.data.captions, self.data.ids[indices]
        if captions is None:
            queries, where = [self.data.queries[i] for i in idx], indices
        else:
            where = captions.draw(indices, self.data.ids[indices], seed)  # (B,) positions in captions.texts
            queries, ids = [captions.texts[t] for t in where.tolist()], captions.ids[where]
        a = self.prep_a(queries) if self.prep_a else {"index": where}
        b = self.prep_b([self.data.candidates[i] for i in cand.tolist()]) if self.prep_b else {"index": cand}
        return {"a": a, "b": b, "ids": ids, **extra}


class ContrastiveTask(Task):
    """Symmetric InfoNCE between the two towers of a dual encoder, with in-batch negatives.

    ``validation`` (model -> metrics) scores the held-out pairs; ``metric`` names the one that picks
    the best model (a recipe's: MRR for text-code, mean recall for image-text).

    A locked text tower (LiT) computes the same embedding for a text at every step: its embeddings
    of the training texts are computed once, up front, and looked up (``cache_locked``; up to
    ``CACHE_MAX_BYTES``), which spares its forward pass at every step.

    ``grad_cache=C``: the batch is embedded C pairs at a time (``mmssl.recipes.grad_cache``); the
    loss is computed on all B embeddings (and, distributed, all N). BatchNorm towers see chunk
    statistics, not the batch's.
    """

    CACHE_MAX_BYTES = 2**30

    metric, greater_is_better = "mrr", True
    loss_name = "InfoNCE loss"

    def __init__(
        self,
        model: DualEncoder,
        loss: torch.nn.Module,
        data: Pairs,
        validation: Callable[[DualEncoder], dict] | None = None,
        metric: str | None = None,
        cache_locked: bool = True,
        grad_cache: int = 0,
        negatives=None,
        hard_negatives: int = 0,
        refresher=None,
        embedding_lr_scale: float = 1.0,
        cluster_batches: int = 0,
    ) -> None:
        self.model, self.loss, self.data, self.validation = model, loss, data, validation
        self.embedding_lr_scale = embedding_lr_scale
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
        queries = data.captions.texts if data.captions is not None else data.queries  # what batches look up
        for side, modality, items in (("a", a, queries), ("b", b, data.candidates)):
            if cache_locked and self._cacheable(modality, len(items)):
                self.cached[side] = model.embed(modality, items).to(model.device)  # (N, D), normalized
                preps[side] = None
            else:
                preps[side] = model.preparer(modality, train=True)
        self.batcher = PairBatcher(preps["a"], preps["b"], data, negatives, hard_negatives)
        if cluster_batches < 0:
            raise ValueError(f"--cluster-batches must be >= 0 (0: random batches); got {cluster_batches}")
        self.groups = self._similar_groups(cluster_batches) if cluster_batches else None

    def _similar_groups(self, size: int) -> Tensor:
        """``--cluster-batches``: the pairs clustered by their main query's embedding under the tower
        as it starts (the locked tower's cache, else one pass), by FAISS k-means into clusters of
        about ``size`` pairs; rank 0's clusters on every rank (the batches must agree)."""
        from indexing.cluster import kmeans
        from mmssl import distributed as dist

        if "a" in self.cached:
            cached, captions = self.cached["a"], self.data.captions
            vectors = cached if captions is None else cached[captions.starts[:-1].to(cached.device)]
        else:
            vectors = self.model.embed(self.model.config.modalities[0], self.data.queries)
        k = max(1, len(self.data) // size)
        labels = kmeans(vectors.cpu().numpy(), k, pca_dim=None, min_points_per_centroid=1).labels  # small on purpose
        groups = dist.gather_objects(torch.from_numpy(labels))[0]
        sizes = torch.bincount(groups)
        log.info(
            "batches of similar pairs: %d pairs in %d clusters (median %d, largest %d)",
            len(groups), len(sizes), int(sizes.median()), int(sizes.max()),
        )  # fmt: skip
        return groups

    def _cacheable(self, modality: str, n: int) -> bool:
        tower = self.model.towers[modality]
        frozen = tower.locked and not any(p.requires_grad for p in tower.parameters())
        small = n * self.model.config.embed_dim * 4 <= self.CACHE_MAX_BYTES
        return frozen and small and not self.model.is_image(modality)  # images: augmented differently each time

    def _lookup(self, side: str, batch: dict) -> Tensor:
        return self.cached[side][batch["index"].to(self.cached[side].device)]  # (B, D)

    # ---- the engine's hooks ---------------------------------------------------------------------

    def parameters(self):
        """What the optimizer trains: the model's and any learnable parameter of the loss."""
        seen = {id(p) for p in self.model.parameters()}
        extra = [p for p in self.loss.parameters() if id(p) not in seen]
        return [*self.model.parameters(), *extra]

    def lr_scales(self) -> dict[torch.nn.Parameter, float]:
        """``--embedding-lr-scale``: the token embeddings of each transformers tower (a shared one once)."""
        if self.embedding_lr_scale == 1.0:
            return {}
        towers = {id(t): t for t in self.model.towers.values() if isinstance(t, TextTower)}.values()
        return {t.backbone.get_input_embeddings().weight: self.embedding_lr_scale for t in towers}

    def batch_groups(self) -> Tensor | None:
        return self.groups

    def distribute(self, wrap):
        """Wrap the model for data-parallel training; with gradient caching no wrapper (several
        backward passes per step: the engine averages the gradients after the step's last one)."""
        if self.grad_cache:
            return None
        self.forward_model = wrap(self.model)
        return self.forward_model

    def set_grad_checkpointing(self) -> None:
        self.model.set_grad_checkpointing(True)

    def compile(self) -> None:
        """``torch.compile`` on the module run each step; the saved weights are the plain model's."""
        self.forward_model = torch.compile(self.forward_model)

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path)

    def load_pretrained_state(self, path) -> None:
        """Load the weights of a directory written by ``save_pretrained`` into this task's model."""
        self.model.load_state_dict(DualEncoder.from_pretrained(path).state_dict())

    @property
    def has_validation(self) -> bool:
        return self.validation is not None

    def evaluate(self) -> dict[str, float]:
        return self.validation(self.model)

    def batch(self, indices: Tensor) -> dict:
        return to_device(self.batcher(indices), self.model.device)

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        live = {side: batch[side] for side in ("a", "b") if side not in self.cached}
        if self.grad_cache and len(batch["ids"]) > self.grad_cache:
            embs = cached_embeddings(self.model, live, self.grad_cache)
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

    def after_step(self, step: int) -> bool:
        """Clamp the temperature (1/T in [1, 100], as CLIP); install refreshed hard negatives when
        due, returning True so that batches made ahead of this step (with the old table) are remade."""
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, MAX_LOG_SCALE)
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
        from mmssl.negatives.table import NegativeTable

        if "negatives" in state:
            self.batcher.negatives = NegativeTable.from_state(state["negatives"])
            self.batcher.negatives.check_for(self.data, "--resume")
        if self.refresher is not None and "refresher" in state:
            self.refresher.load_state(state["refresher"])

    def close(self) -> None:
        if self.refresher is not None:
            self.refresher.close()
