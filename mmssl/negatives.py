"""Hard negatives for a dual encoder's training pairs: mined with the model and/or BM25, filtered of
likely false negatives, saved, sampled into batches, and refreshed during training (ANCE).

Shape legend: N training pairs, K candidates retrieved per query, n kept per pair, B pairs in a
batch, h hard negatives per pair in a batch, D embedding size.

Mining (``mine_negatives``, ``mmssl mine-negatives``): each training pair's query retrieves the top
``top_k`` of the training collection's candidates,
  model   by the dual encoder's embeddings, searched through ``indexing.neighbors.knn`` (exact up to
          200k candidates, a tuned IVF index beyond; FAISS on the GPU when it sees one);
  bm25    by Okapi BM25 (``mmssl.bm25``) of the query's words against the candidate's: the code for
          text-code, the image's own caption for image-text;
  both    each list filtered on its own, then merged by ``indexing.lexical.reciprocal_rank_fusion``
          (c = 60, ranks in the retrieved lists).
Each retrieved candidate j of pair i is dropped, and counted under the first rule it meets, when
  positive        j is i itself;
  same_query      pair j's query is pair i's (same text up to case and spaces): j answers i's query;
  false_negative  it scores too close to the positive: score >= ``max_score_ratio`` x the positive's
                  score (when that is > 0; NV-Retriever's "TopK-PercPos", Moreira et al. 2024), or
                  score > positive - ``margin`` (when a margin is given). The scores are the model's
                  (cosines) whenever mining has a model, also for BM25's candidates (``both``);
                  BM25 alone has no score to trust for this (its positive often scores below
                  unrelated code: on the stdlib corpus the rule dropped 45 % of BM25's top 50, and
                  left 37 % of the pairs with none), so there it applies only with ``filter_bm25``;
  no_overlap      BM25 only: a score of 0 (no shared word: not a hard negative at all);
  duplicate       j's candidate equals i's: the same code up to whitespace, the same decoded pixels;
  near_duplicate  text: the sets of their words (``code_search_tokens``) overlap by Jaccard >=
                  ``near_duplicate``; images: cosine of the model's image embeddings >= it (model
                  mining only).
The first four rules are array operations over all N x K retrieved candidates and their counts
cover them all; the last two compare contents, one candidate at a time in rank order, only until
a pair has its ``keep`` (with ``pick="top"`` and one source), and count what they looked at.
Of the survivors, ``keep`` are kept per pair, the best ones (``pick="top"``) or a seeded random
draw from all of them (``pick="random"``), each with its rank in the retrieved list (before
filtering; the fused rank for ``both``) and its score. Ties keep FAISS's / index order, so mining is
deterministic for fixed data, model and seed.

Training (``--negatives FILE``, ``--hard-negatives h``): every batch draws h of each pair's kept
negatives at random (under the batch's seed) and embeds them with the batch's candidates; they
become extra a->b columns of the InfoNCE logits (``InfoNCELoss(negatives=...)``). ANCE refresh
(``--refresh-negatives N``): every N steps a copy of the current model re-mines in a background
thread while training goes on; the new lists are used from N/2 steps later (training waits there
if mining is not done), so a run is the same however fast the mining was.

The file (JSON lines): a header object, then one object per pair, in pair order:
    {"format": "mmssl-negatives", "version": 1, "pairs": N, "fingerprint": ..., "settings": {...},
     "stats": {...}, "false_negative_sample": [...]}
    {"pair": 0, "negatives": [j, ...], "ranks": [...], "scores": [...], "positive_score": s}
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mmssl.console import get_logger
from mmssl.data.pairs import Pairs
from mmssl.data.pairs import normalize_text as _norm
from mmssl.io import atomic_file

log = get_logger("negatives")
FORMAT, VERSION = "mmssl-negatives", 1
SAMPLE_SIZE = 20  # dropped false negatives kept in the file for a person to judge
SAMPLE_CHARS = 400
REASONS = ("positive", "same_query", "duplicate", "near_duplicate", "false_negative", "no_overlap")


@dataclass(frozen=True)
class MiningSettings:
    source: Literal["model", "bm25", "both"] = "model"
    top_k: int = 50
    keep: int = 10
    pick: Literal["top", "random"] = "top"
    max_score_ratio: float | None = 0.95
    margin: float | None = None
    near_duplicate: float = 0.9
    seed: int = 0
    filter_bm25: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("model", "bm25", "both"):
            raise ValueError(f"source must be model, bm25 or both; got {self.source!r}")
        if self.pick not in ("top", "random"):
            raise ValueError(f"pick must be top or random; got {self.pick!r}")
        if not 1 <= self.keep <= self.top_k:
            raise ValueError(f"need 1 <= keep <= top_k; got keep={self.keep}, top_k={self.top_k}")
        if self.max_score_ratio is not None and not 0.0 < self.max_score_ratio:
            raise ValueError(f"max_score_ratio must be > 0; got {self.max_score_ratio}")
        if not 0.0 < self.near_duplicate <= 1.0:
            raise ValueError(f"near_duplicate must be in (0, 1]; got {self.near_duplicate}")

    @classmethod
    def from_dict(cls, d: dict) -> MiningSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class NegativeTable:
    """Each pair's kept hard negatives: -1 / NaN pad rows with fewer than n."""

    indices: np.ndarray  # (N, n) int64, candidate (pair) numbers
    ranks: np.ndarray  # (N, n) int64, rank in the retrieved list, 0 = best
    scores: np.ndarray  # (N, n) float32
    positive_scores: np.ndarray  # (N,) float32 (NaN for both: no common scale)
    fingerprint: str  # of the Pairs mined (``Pairs.fingerprint``)
    settings: MiningSettings
    stats: dict = field(default_factory=dict)
    false_negative_sample: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # how long mining took (not saved)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def counts(self) -> np.ndarray:
        return (self.indices >= 0).sum(1)  # (N,)

    def check_for(self, pairs: Pairs, where: str = "hard negatives") -> None:
        if self.fingerprint != pairs.fingerprint() or len(self) != len(pairs):
            raise ValueError(
                f"{where}: mined for other data ({len(self):,} pairs, fingerprint {self.fingerprint}) than the "
                f"training pairs ({len(pairs):,}, {pairs.fingerprint()}): mine them again for this --train"
            )

    def sample(self, rows: Tensor, h: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """h negatives per row, drawn without replacement from its kept ones; rows with fewer get
        placeholders (their own pair, marked invalid). Returns (indices (B, h) int64, valid (B, h)).

        With ``seed`` (the batch's), a pair's draw depends only on the seed and the pair, not on
        which process of a distributed run holds it, so runs on 1 and W processes draw the same;
        without, the global torch RNG draws."""
        table = torch.from_numpy(self.indices[rows.numpy()])  # (B, n)
        valid = table >= 0
        keys = torch.rand(table.shape) if seed is None else _uniform(seed, rows.numpy(), table.shape[1])
        keys = keys.masked_fill_(~valid, 2.0)  # invalid ones sort last
        order = keys.argsort(dim=1)[:, :h]  # (B, min(h, n))
        picked = table.gather(1, order)
        ok = valid.gather(1, order)
        if picked.shape[1] < h:  # fewer kept per pair than asked for
            pad = h - picked.shape[1]
            picked = torch.cat([picked, picked.new_full((len(rows), pad), -1)], 1)
            ok = torch.cat([ok, ok.new_zeros((len(rows), pad))], 1)
        picked = torch.where(ok, picked, rows[:, None].expand_as(picked))
        return picked, ok

    # ---- persistence ----------------------------------------------------------------------------

    def header(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pairs": len(self),
            "fingerprint": self.fingerprint,
            "settings": asdict(self.settings),
            "stats": self.stats,
            "false_negative_sample": self.false_negative_sample,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "w") as f:
            f.write(json.dumps(self.header()) + "\n")
            for i in range(len(self)):
                keep = self.indices[i] >= 0
                row = {
                    "pair": i,
                    "negatives": self.indices[i][keep].tolist(),
                    "ranks": self.ranks[i][keep].tolist(),
                    "scores": [round(float(s), 6) for s in self.scores[i][keep]],
                    "positive_score": _finite_or_none(self.positive_scores[i]),
                }
                f.write(json.dumps(row) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> NegativeTable:
        """Read a file written by ``save``; a ValueError names the file and line of anything wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"hard negatives: no file {path}")
        with path.open() as f:
            try:
                head = json.loads(f.readline())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:1: not JSON ({e.msg})") from None
            if not isinstance(head, dict) or head.get("format") != FORMAT:
                raise ValueError(f"{path}:1: not an `mmssl mine-negatives` file (no format {FORMAT!r} header)")
            if head.get("version") != VERSION:
                raise ValueError(f"{path}:1: version {head.get('version')}, this mmssl reads {VERSION}")
            n_pairs = int(head["pairs"])
            settings = MiningSettings.from_dict(head.get("settings", {}))
            width = settings.keep
            indices = np.full((n_pairs, width), -1, dtype=np.int64)
            ranks = np.full((n_pairs, width), -1, dtype=np.int64)
            scores = np.full((n_pairs, width), np.nan, dtype=np.float32)
            pos = np.full(n_pairs, np.nan, dtype=np.float32)
            seen = 0
            for lineno, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                    i, negs = row["pair"], row["negatives"]
                    rk, sc = row["ranks"], row["scores"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{where}: not a pair line ({type(e).__name__}: {e})") from None
                if i != seen:
                    raise ValueError(f"{where}: pair {i} where pair {seen} was expected (pairs in order)")
                if not len(negs) == len(rk) == len(sc) or len(negs) > width:
                    raise ValueError(
                        f"{where}: {len(negs)} negatives, {len(rk)} ranks, {len(sc)} scores (keep={width})"
                    )
                bad = [j for j in negs if not isinstance(j, int) or not 0 <= j < n_pairs or j == i]
                if bad:
                    raise ValueError(f"{where}: negative {bad[0]!r} is not another pair of 0..{n_pairs - 1}")
                indices[i, : len(negs)] = negs
                ranks[i, : len(negs)] = rk
                scores[i, : len(negs)] = sc
                if row.get("positive_score") is not None:
                    pos[i] = row["positive_score"]
                seen += 1
        if seen != n_pairs:
            raise ValueError(f"{path}: {seen:,} pair lines, the header says {n_pairs:,}")
        return cls(
            indices, ranks, scores, pos, head["fingerprint"], settings, head.get("stats", {}),
            head.get("false_negative_sample", []),
        )  # fmt: skip

    # checkpoint form: tensors and plain values only (``torch.load(weights_only=True)``)
    def state(self) -> dict:
        return {
            "indices": torch.from_numpy(self.indices.copy()),
            "ranks": torch.from_numpy(self.ranks.copy()),
            "scores": torch.from_numpy(self.scores.copy()),
            "positive_scores": torch.from_numpy(self.positive_scores.copy()),
            "header": json.dumps(self.header()),
        }

    @classmethod
    def from_state(cls, state: dict) -> NegativeTable:
        head = json.loads(state["header"])
        return cls(
            state["indices"].numpy(), state["ranks"].numpy(), state["scores"].numpy(),
            state["positive_scores"].numpy(), head["fingerprint"], MiningSettings.from_dict(head["settings"]),
            head["stats"], head["false_negative_sample"],
        )  # fmt: skip


def _uniform(seed: int, rows: np.ndarray, n: int) -> Tensor:
    """(B, n) floats in [0, 1), a hash (SplitMix64's finalizer) of (seed, row, column): a counter-based
    draw, the same for a row whichever batch slice it is in."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64, as the hash wants
        x = np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        x = x + rows.astype(np.uint64)[:, None] * np.uint64(0xD1B54A32D192ED03)
        x = x + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0x8CB92BA72F3D8DD7)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / 2.0**53)


def _finite_or_none(x) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


# ---- mining ---------------------------------------------------------------------------------------


def _text_of(item) -> str:
    return item if isinstance(item, str) else f"{getattr(item, 'where', '?')} ({getattr(item, 'text', '')})"


def _content_key(item) -> str:
    """What makes two candidates the same: text up to case/whitespace, or the decoded pixels."""
    if isinstance(item, str):
        return _norm(item)
    from mmssl.data.image_text import open_image, to_rgb

    image = item.image if getattr(item, "image", None) is not None else open_image(item)
    image = to_rgb(image)
    return f"{image.size}:" + hashlib.sha1(image.tobytes()).hexdigest()


def _retrieve_model(model, pairs: Pairs, k: int, batch_size: int):
    """(scores (N, K), ids (N, K), positive scores (N,), (query, candidate) embeddings (N, D) each)."""
    from indexing.neighbors import knn

    mod_a, mod_b = model.config.modalities
    q = model.embed(mod_a, pairs.queries, batch_size).numpy()  # (N, D), normalized
    c = model.embed(mod_b, pairs.candidates, batch_size).numpy()  # (N, D)
    scores, ids = knn(c, q, min(k, len(pairs)))
    return scores, ids, (q * c).sum(1), (q, c)


def _retrieve_bm25(pairs: Pairs, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (N, K), ids (N, K), positive scores (N,)) by BM25; a candidate's document is its
    text (code), or for an image its caption."""
    from mmssl.bm25 import BM25Index, code_search_tokens

    docs = [code_search_tokens(c if isinstance(c, str) else q) for q, c in zip(pairs.queries, pairs.candidates)]
    index = BM25Index.from_documents(docs)
    qm = index.query_matrix([code_search_tokens(q) for q in pairs.queries])  # (N, V)
    positive = np.asarray(qm.multiply(index.weights).sum(1)).ravel()  # (N,): query i against doc i
    n, k = len(pairs), min(k, len(pairs))
    out_s, out_i = np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        s = index.scores_from_matrix(qm[start : start + chunk])  # (C, N)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(s), 1))
        top_s = np.take_along_axis(s, top, 1)
        order = np.lexsort((top, -top_s), axis=1)  # by score, then by candidate number
        out_i[start : start + len(s)] = np.take_along_axis(top, order, 1)
        out_s[start : start + len(s)] = np.take_along_axis(top_s, order, 1)
    return out_s, out_i, positive.astype(np.float32)


_PASS, _PAD = 0, -1
_CODES = {"positive": 1, "same_query": 2, "false_negative": 3, "no_overlap": 4}


class _Filter:
    """The drop rules of the module docstring, with their counts and a sample of false negatives.

    The rules on ids and scores (positive, same query, false negative, no overlap) are array
    operations over the whole (N, K) retrieved lists (``codes``); the content rules (duplicate, near
    duplicate) are then checked candidate by candidate on what is left, in rank order, until a row
    has what it keeps."""

    def __init__(self, pairs: Pairs, settings: MiningSettings, emb: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.pairs, self.settings = pairs, settings
        self.query_emb, self.cand_emb = emb if emb is not None else (None, None)
        self.ids = pairs.ids.numpy()
        self.is_text = isinstance(pairs.candidates[0], str) if len(pairs) else True
        self._keys: dict[int, str] = {}
        self._words: dict[int, frozenset] = {}
        self.counts = dict.fromkeys(REASONS, 0)
        self.fn_seen = 0
        self.fn_sample: list[dict] = []

    def codes(self, source: str, scores: np.ndarray, found: np.ndarray, positive: np.ndarray, rows: int = 4096):
        """(N, K) int8: the id/score rule each retrieved candidate meets first (0: none, -1: padding)."""
        s = self.settings
        n, k = found.shape
        out = np.zeros((n, k), dtype=np.int8)
        valid = found >= 0
        cand = np.where(valid, found, 0)
        self_rows = np.arange(n)[:, None]
        out[self.ids[cand] == self.ids[:, None]] = _CODES["same_query"]
        out[cand == self_rows] = _CODES["positive"]
        out[~valid] = _PAD
        judge = None  # (N, K) scores and (N,) positive scores the false-negative rule compares
        if self.query_emb is not None:  # the model's cosines, whatever retrieved the candidate
            fs = np.empty((n, k), dtype=np.float32)
            for lo in range(0, n, rows):  # (R, K, D) at a time
                q = self.query_emb[lo : lo + rows]
                fs[lo : lo + rows] = np.einsum("rd,rkd->rk", q, self.cand_emb[cand[lo : lo + rows]])
            judge = fs, (self.query_emb * self.cand_emb).sum(1)
        elif source == "bm25" and s.filter_bm25:
            judge = scores, positive
        if judge is not None:
            fs, fp = judge[0], judge[1][:, None]
            close = np.zeros((n, k), dtype=bool)
            if s.max_score_ratio is not None:
                close |= (fp > 0) & (fs >= s.max_score_ratio * fp)
            if s.margin is not None:
                close |= fs > fp - s.margin
            close &= out == _PASS
            out[close] = _CODES["false_negative"]
            self._sample(np.argwhere(close), fs, fp[:, 0], found, source)
        if source == "bm25":
            out[(out == _PASS) & (scores <= 0)] = _CODES["no_overlap"]
        for name, code in _CODES.items():
            self.counts[name] += int((out == code).sum())
        return out

    def _sample(self, where: np.ndarray, fs: np.ndarray, fp: np.ndarray, found: np.ndarray, source: str) -> None:
        """A uniform, seeded sample of the false negatives dropped (row-major positions)."""
        self.fn_seen += len(where)
        rng = np.random.default_rng([self.settings.seed, len(self.fn_sample)])
        take = np.sort(rng.choice(len(where), min(SAMPLE_SIZE, len(where)), replace=False)) if len(where) else []
        for i, r in where[take].tolist() if len(where) else []:
            j = int(found[i, r])
            self.fn_sample.append(
                {
                    "pair": i,
                    "candidate_pair": j,
                    "source": source,
                    "score": round(float(fs[i, r]), 4),
                    "positive_score": round(float(fp[i]), 4),
                    "query": self.pairs.queries[i][:SAMPLE_CHARS],
                    "positive": _text_of(self.pairs.candidates[i])[:SAMPLE_CHARS],
                    "candidate": _text_of(self.pairs.candidates[j])[:SAMPLE_CHARS],
                }
            )

    def key(self, j: int) -> str:
        if j not in self._keys:
            self._keys[j] = _content_key(self.pairs.candidates[j])
        return self._keys[j]

    def words(self, j: int) -> frozenset:
        if j not in self._words:
            from mmssl.bm25 import code_search_tokens

            self._words[j] = frozenset(code_search_tokens(self.pairs.candidates[j]))
        return self._words[j]

    def near(self, i: int, j: int) -> bool:
        t = self.settings.near_duplicate
        if self.is_text:
            a, b = self.words(i), self.words(j)
            return bool(a | b) and len(a & b) / len(a | b) >= t
        if self.cand_emb is None:
            return False
        return float(self.cand_emb[i] @ self.cand_emb[j]) >= t

    def survivors(self, i: int, codes, scores, found, limit: int | None) -> list[tuple[int, int, float]]:
        """(candidate, rank, score) of row i's retrieved list that pass, in rank order (up to ``limit``)."""
        out = []
        for rank in np.flatnonzero(codes == _PASS).tolist():
            j = int(found[rank])
            if self.key(j) == self.key(i):
                self.counts["duplicate"] += 1
                continue
            if self.near(i, j):
                self.counts["near_duplicate"] += 1
                continue
            out.append((j, rank, float(scores[rank])))
            if limit is not None and len(out) >= limit:
                break
        return out


def mine_negatives(pairs: Pairs, settings: MiningSettings, model=None, batch_size: int = 256) -> NegativeTable:
    """Hard negatives for every pair of ``pairs`` (see the module docstring). ``model`` (a
    ``DualEncoder``) is needed for ``source`` model and both."""
    from indexing.lexical import RRF_C, reciprocal_rank_fusion

    s = settings
    if s.source in ("model", "both") and model is None:
        raise ValueError(f"mining from source {s.source!r} needs a model")
    if len(pairs) < 2:
        raise ValueError(f"mining needs at least 2 pairs; got {len(pairs)}")
    start = time.monotonic()
    lists, emb = {}, None
    if s.source in ("model", "both"):
        sc, ids, pos, emb = _retrieve_model(model, pairs, s.top_k, batch_size)
        lists["model"] = (sc, ids, pos)
    if s.source in ("bm25", "both"):
        lists["bm25"] = _retrieve_bm25(pairs, s.top_k)
    retrieved = time.monotonic() - start
    flt = _Filter(pairs, s, emb)
    n, width = len(pairs), s.keep
    indices = np.full((n, width), -1, dtype=np.int64)
    ranks = np.full((n, width), -1, dtype=np.int64)
    scores = np.full((n, width), np.nan, dtype=np.float32)
    positive = lists["model"][2] if s.source == "model" else lists["bm25"][2]
    if s.source == "both":
        positive = np.full(n, np.nan, dtype=np.float32)
    # every survivor is needed for random picks and for fusion; the first `keep` otherwise
    limit = width if (s.pick == "top" and s.source != "both") else None
    codes = {src: flt.codes(src, sc, ids, pos) for src, (sc, ids, pos) in lists.items()}  # (N, K) each
    for i in range(n):
        per = {src: flt.survivors(i, codes[src][i], sc[i], ids[i], limit) for src, (sc, ids, _) in lists.items()}
        if s.source == "both":
            # each source's survivors at their retrieved ranks (-1 where a candidate was dropped), so
            # that fusion scores 1 / (c + rank in the retrieved list)
            rows = [np.full((1, lists[src][1].shape[1]), -1, dtype=np.int64) for src in per]
            for row, got in zip(rows, per.values()):
                for j, rank, _ in got:
                    row[0, rank] = j
            f_scores, f_ids = reciprocal_rank_fusion(rows, k=sum(map(len, per.values())), c=RRF_C)
            kept = [(int(j), r, float(v)) for r, (j, v) in enumerate(zip(f_ids[0], f_scores[0])) if j >= 0]
        else:
            kept = per[s.source]
        if s.pick == "random" and len(kept) > width:
            rng = np.random.default_rng([s.seed, i])
            kept = [kept[p] for p in sorted(rng.choice(len(kept), width, replace=False))]
        kept = kept[:width]
        for c, (j, rank, score) in enumerate(kept):
            indices[i, c], ranks[i, c], scores[i, c] = j, rank, score
    counts = (indices >= 0).sum(1)
    stats = {
        "pairs": n,
        "retrieved": int(sum(int((ids >= 0).sum()) for _, ids, _ in lists.values())),
        "dropped": dict(flt.counts),
        "false_negatives_dropped": flt.fn_seen,
        "kept": int(counts.sum()),
        "pairs_without_negatives": int((counts == 0).sum()),
        "pairs_with_fewer_than_keep": int((counts < width).sum()),
    }
    seconds = {"retrieval": round(retrieved, 2), "total": round(time.monotonic() - start, 2)}
    log.info(
        "mined %s hard negatives for %s pairs (%s): dropped %s; %.1f s",
        f"{stats['kept']:,}", f"{n:,}", s.source,
        ", ".join(f"{v:,} {k}" for k, v in flt.counts.items() if v), seconds["total"],
    )  # fmt: skip
    table = NegativeTable(
        indices, ranks, scores, positive.astype(np.float32), pairs.fingerprint(), s, stats, flt.fn_sample
    )
    table.seconds = seconds  # not saved: the file is the same for the same data, model and seed
    return table


# ---- refresh during training (ANCE) -------------------------------------------------------------


class NegativeRefresher:
    """Re-mines every ``every`` steps with a snapshot of the model; the result is installed at step
    start + ``lag`` (see the module docstring). ``asynchronous``: mining runs in a background
    thread meanwhile (on a GPU, on its own CUDA stream); otherwise at the start step itself (lag 0).

    Refreshes that would be installed at or after ``max_steps`` (never used) are not started."""

    def __init__(
        self, pairs: Pairs, settings: MiningSettings, every: int, max_steps: int, asynchronous: bool = True,
        batch_size: int = 256,
    ) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"refresh every {every} steps: need >= 1")
        self.pairs, self.settings, self.every, self.max_steps = pairs, settings, every, max_steps
        self.asynchronous, self.batch_size = asynchronous, batch_size
        self.lag = max(1, every // 2) if asynchronous else 0
        self._thread: threading.Thread | None = None
        self._result: dict = {}
        self.pending_start: int | None = None
        self.waited_s = 0.0  # total time training waited for mining
        self.refreshes = 0

    def _mine(self, snapshot) -> None:
        try:
            stream = torch.cuda.Stream(snapshot.device) if snapshot.device.type == "cuda" else None
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                self._result["table"] = mine_negatives(self.pairs, self.settings, snapshot, self.batch_size)
            if stream is not None:
                stream.synchronize()
        except BaseException as e:  # re-raised in the training thread by _join
            self._result["error"] = e

    def after_step(self, step: int, model) -> NegativeTable | None:
        """Start a refresh at multiples of ``every``; return the new table at its install step."""
        if self.pending_start is None and step % self.every == 0 and step + self.lag < self.max_steps:
            self.pending_start = step
            self._result = {}
            snapshot = copy.deepcopy(model).eval()
            if self.asynchronous:
                self._thread = threading.Thread(
                    target=self._mine, args=(snapshot,), name="mmssl-negatives", daemon=True
                )
                self._thread.start()
            else:
                self._mine(snapshot)
        if self.pending_start is not None and step >= self.pending_start + self.lag:
            return self._join()
        return None

    def _finish(self) -> NegativeTable:
        """The pending refresh's table, waiting for its thread (the wait is counted)."""
        if self._thread is not None:
            t0 = time.monotonic()
            self._thread.join()
            self.waited_s += time.monotonic() - t0
            self._thread = None
        if "error" in self._result:
            raise RuntimeError("refreshing the hard negatives failed") from self._result["error"]
        return self._result["table"]

    def _join(self) -> NegativeTable:
        table = self._finish()
        self._result, self.pending_start = {}, None
        self.refreshes += 1
        return table

    # checkpoints: a refresh in flight is finished first, so that a resumed run installs the same table
    def state(self) -> dict:
        if self.pending_start is None:
            return {"pending_start": None}
        return {"pending_start": self.pending_start, "pending": self._finish().state()}

    def load_state(self, state: dict) -> None:
        self.pending_start = state["pending_start"]
        self._thread = None
        self._result = {"table": NegativeTable.from_state(state["pending"])} if self.pending_start is not None else {}

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def negatives_for(config, train: Pairs, max_steps: int) -> dict:
    """``ContrastiveTask`` keyword arguments for a ``TrainConfig``'s hard negatives: the mined table
    (``--negatives``, checked against the training pairs) and the refresher (``--refresh-negatives``,
    with the file's mining settings when there is one)."""
    if config.hard_negatives < 0:
        raise ValueError(f"--hard-negatives must be >= 0; got {config.hard_negatives}")
    table = None
    if config.negatives:
        table = NegativeTable.load(config.negatives)
        table.check_for(train, config.negatives)
    refresher = None
    if config.refresh_negatives:
        base = table.settings if table is not None else MiningSettings()
        settings = MiningSettings.from_dict({**asdict(base), "source": config.refresh_source})
        refresher = NegativeRefresher(train, settings, config.refresh_negatives, max_steps, config.refresh_async)
    if (table is not None or refresher is not None) and config.hard_negatives == 0:
        log.warning("--hard-negatives 0: the mined negatives are not used")
    if table is not None:
        c = table.counts
        log.info(
            "hard negatives from %s: %.1f per pair (%d pairs without any), %d per pair per step",
            config.negatives, c.mean(), int((c == 0).sum()), config.hard_negatives,
        )  # fmt: skip
    return {"negatives": table, "hard_negatives": config.hard_negatives, "refresher": refresher}


# ---- the command --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MineNegativesConfig:
    """Mine hard negatives for every training pair (``--config FILE`` reads TOML/YAML/JSON defaults)."""

    data: str = field(default="", metadata={"help": "training data, as `mmssl train --train` reads it"})
    out: str = field(default="", metadata={"help": "output file (JSON lines), written atomically"})
    model: str | None = field(
        default=None, metadata={"help": "a trained dual encoder dir (`mmssl train` OUT/best): needed for model, both"}
    )
    task: Literal["auto", "text-code", "image-text"] = field(
        default="auto", metadata={"help": "what the data is (auto: the model's modalities; text-code without one)"}
    )
    partition: str | None = field(
        default="train", metadata={"help": "the pairs of this partition (as --train-partition)"}
    )
    source: Literal["model", "bm25", "both"] = field(
        default="model", metadata={"help": "retrieve with the model, BM25, or both (reciprocal rank fusion)"}
    )
    top_k: int = field(default=50, metadata={"help": "candidates retrieved per query"})
    keep: int = field(default=10, metadata={"help": "hard negatives kept per pair (training samples from them)"})
    pick: Literal["top", "random"] = field(
        default="top", metadata={"help": "keep the best survivors, or a seeded random draw from all of them"}
    )
    max_score_ratio: float | None = field(
        default=0.95,
        metadata={"help": "drop candidates scoring >= this x the positive's score (likely false negatives)"},
    )
    margin: float | None = field(default=None, metadata={"help": "also drop candidates scoring > positive - margin"})
    near_duplicate: float = field(
        default=0.9, metadata={"help": "drop near duplicates of the positive: word-set Jaccard (text), cosine (images)"}
    )
    filter_bm25: bool = field(
        default=False,
        metadata={"help": "--source bm25 without --model: apply the false-negative rule to BM25 scores"},
    )
    seed: int = field(default=0, metadata={"help": "seed of random picks and of the false-negative sample"})
    batch_size: int = field(default=256, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto (cuda, mps, cpu), cpu, cuda[:N]"})
    on_bad: Literal["skip", "raise"] = field(default="skip", metadata={"help": "image-text: bad images (as train)"})
    show: int = field(default=3, metadata={"help": "print this many pairs with their negatives"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out file"})

    def settings(self) -> MiningSettings:
        return MiningSettings(
            self.source, self.top_k, self.keep, self.pick, self.max_score_ratio, self.margin, self.near_duplicate,
            self.seed, self.filter_bm25,
        )  # fmt: skip


def load_training_pairs(data: str, task: str, partition: str | None, on_bad: str = "skip") -> Pairs:
    """The pairs ``mmssl train --task TASK --train DATA`` trains on (same reader, same order)."""
    from mmssl.recipes import get_recipe
    from mmssl.recipes.config import PairDataConfig

    return get_recipe(task).load_pairs(data, partition, PairDataConfig(on_bad=on_bad))


def main(config: MineNegativesConfig) -> int:
    from mmssl.runtime import resolve_device

    if not config.data or not config.out:
        raise ValueError("--data and --out are required")
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it")
    settings = config.settings()  # validated before any work
    model = None
    task = config.task
    if config.model:
        from mmssl.models import DualEncoder

        model = DualEncoder.from_pretrained(config.model, device=resolve_device(config.device))
        modal_task = "image-text" if model.config.modalities[1] == "image" else "text-code"
        if task not in ("auto", modal_task):
            raise ValueError(f"--task {task}, but {config.model} is a {modal_task} model")
        task = modal_task
    elif settings.source != "bm25":
        raise ValueError(f"--source {settings.source} needs --model (or use --source bm25)")
    task = "text-code" if task == "auto" else task
    pairs = load_training_pairs(config.data, task, config.partition, config.on_bad)
    table = mine_negatives(pairs, settings, model, config.batch_size)
    table.save(out)
    print(json.dumps({"out": str(out), **table.stats, "seconds": table.seconds}, indent=2))
    for i in range(min(config.show, len(table))):
        print(f"\npair {i}: {pairs.queries[i][:120]!r}")
        for j, r, sc in zip(table.indices[i], table.ranks[i], table.scores[i]):
            if j >= 0:
                print(f"  rank {r:>3}  score {sc:8.4f}  {_text_of(pairs.candidates[j])[:100]!r}")
    return 0
