"""Mining hard negatives for a dual encoder's training pairs: retrieve, filter, keep.

Shape legend: N training pairs, K candidates retrieved per query, n kept per pair, D embedding size.

Each training pair's query retrieves the top ``top_k`` of the training collection's candidates,
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
filtering; the fused rank for ``both``) and its score. Ties keep FAISS's order (model); BM25 ranks
by its scores in float32, as the file holds them, equal ones by candidate number (so sums that are
equal but for float64 rounding tie too). Mining is deterministic for fixed data, model and seed.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from mmssl.bm25 import BM25Index, code_search_tokens, top_k
from mmssl.console import get_logger
from mmssl.data.pairs import Pairs, normalize_text
from mmssl.negatives.table import MiningSettings, NegativeTable

log = get_logger("negatives")
SAMPLE_SIZE = 20  # dropped false negatives kept in the file for a person to judge
SAMPLE_CHARS = 400
REASONS = ("positive", "same_query", "duplicate", "near_duplicate", "false_negative", "no_overlap")


def _text_of(item) -> str:
    return item if isinstance(item, str) else f"{getattr(item, 'where', '?')} ({getattr(item, 'text', '')})"


def _content_key(item) -> str:
    """What makes two candidates the same: text up to case/whitespace, or the decoded pixels."""
    if isinstance(item, str):
        return normalize_text(item)
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
    """(scores (N, K), ids (N, K), positive scores (N,)) by BM25 (``mmssl.bm25``); a candidate's
    document is its text (code), or for an image its caption."""
    docs = [code_search_tokens(c if isinstance(c, str) else q) for q, c in zip(pairs.queries, pairs.candidates)]
    index = BM25Index.from_documents(docs)
    queries = [code_search_tokens(q) for q in pairs.queries]
    n, k = len(pairs), min(k, len(pairs))
    out_s, out_i = np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64)
    positive = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        s = index.scores(queries[start : start + chunk]).astype(np.float32)  # (C, N), ranked as saved
        rows = np.arange(start, start + len(s))
        positive[rows] = s[rows - start, rows]  # query i against document i
        out_s[rows], out_i[rows] = top_k(s, k)
    return out_s, out_i, positive


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
    """Hard negatives for every pair of ``pairs`` (the rules: the module docstring). ``model`` (a
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
