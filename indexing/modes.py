"""An index's default search mode, chosen on validation queries, and kept in its manifest.

``choose_mode(index, queries, targets)`` scores dense, lexical (BM25) and hybrid search at each
lexical weight by the mean reciprocal rank of each query's right items (``targets``: a set of item
ids per query; a right item missing from the first ``depth`` hits scores 0) and picks the best,
ties to the simpler mode (dense, then lexical, then hybrid with the smaller weight).
``save_search_defaults(path, choice)`` writes it into the index's manifest (``search_defaults``)
under the index's write lock, atomically; the search app starts each index on its defaults.

The same validation queries calibrate a weak-match cue per mode (``weak_match``): the top score
below which a query's right item was in its first 10 hits at most half as often as for all the
queries. The app warns when a search's best score falls below it (``weak_note``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexing.index import FUSION_DEPTH
from indexing.lexical import reciprocal_rank_fusion
from indexing.lock import write_lock
from indexing.store import MANIFEST, Manifest, now
from mmssl.io import atomic_file

WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # BM25's weight in hybrid fusion (dense: 1)
DEPTH = 100
FOUND_AT = 10  # a query "finds" its item when a right one is in its first FOUND_AT hits
WEAK_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # the candidate thresholds: these quantiles
MIN_BELOW = 10  # queries under a threshold, at least, for its rate to mean anything


def reciprocal_ranks(ranked: np.ndarray, targets: Sequence[set[int]]) -> list[float]:
    """1 / the rank of the first right id in each row of ``ranked`` (Q, K) (-1: no item; 0 when no
    right one is there)."""
    out = []
    for row, right in zip(ranked, targets):
        row = row[row >= 0]
        hit = next((r for r, i in enumerate(row.tolist(), start=1) if i in right), None)
        out.append(1.0 / hit if hit else 0.0)
    return out


def found_within(ranked: np.ndarray, targets: Sequence[set[int]], depth: int = FOUND_AT) -> np.ndarray:
    """Whether each row's first ``depth`` ids hold a right one."""
    return np.array([bool(right & set(row[:depth].tolist())) for row, right in zip(ranked, targets)])


def weak_match(top: np.ndarray, found: np.ndarray) -> dict | None:
    """The weak-match threshold of one mode, from each validation query's top score and whether it
    found its item: the highest of the WEAK_SHARES quantiles of the top scores under which the
    queries found their items at most half as often as all of them did; None when no quantile
    separates them (or too few queries). {"below", "found_below", "found", "share", "queries"}."""
    top, found = np.asarray(top, dtype=np.float64), np.asarray(found, dtype=bool)
    if len(top) < 2 * MIN_BELOW or not found.any():
        return None
    overall = float(found.mean())
    best = None
    for share in WEAK_SHARES:
        threshold = float(np.quantile(top, share))
        below = top < threshold
        if below.sum() < MIN_BELOW:
            continue
        rate = float(found[below].mean())
        if rate <= overall / 2:
            best = {
                "below": round(threshold, 6),
                "found_below": round(rate, 4),
                "found": round(overall, 4),
                "share": round(float(below.mean()), 4),
                "queries": len(top),
            }
    return best


def weak_note(defaults: dict, mode: str, lexical_weight: float, top_score: float | None) -> str:
    """What the app says under results whose best score is below the weak-match threshold that the
    index's validation queries gave ``mode`` (``search_defaults["weak"]``, ``choose_mode``); "" else.
    A hybrid threshold holds for the weight it was calibrated at only."""
    weak = (defaults.get("weak") or {}).get(mode)
    if weak is None or top_score is None:
        return ""
    if mode == "hybrid" and abs(float(defaults.get("lexical_weight", 1.0)) - lexical_weight) > 1e-9:
        return ""
    if top_score >= weak["below"]:
        return ""
    return (
        f"Weak match: the best score ({top_score:.3g}) is under {weak['below']:.3g}; of this index's validation "
        f"queries that scored that low, {weak['found_below']:.0%} had the right result in the first {FOUND_AT} "
        f"(all its validation queries: {weak['found']:.0%}). Try other words."
    )


def choose_mode(
    index, queries: Sequence[str], targets: Sequence[set[int]], weights: Sequence[float] = WEIGHTS, depth: int = DEPTH
) -> dict:
    """The best of dense, lexical and hybrid@w on (query, right items): {"mode", "lexical_weight",
    "mrr": {candidate: MRR}, "queries": n, "weak": {mode: weak_match(...) or None}}, the hybrid
    threshold at the chosen weight. An index without a BM25 side, or searched by image, is dense.

    The queries are embedded and BM25-ranked once; each hybrid weight fuses those two rankings as
    ``SearchIndex.search(mode="hybrid")`` does (the same ranks on an exact index, tested against it;
    an approximate one may differ where a deeper search finds other neighbours)."""
    if len(queries) != len(targets) or not queries:
        raise ValueError(f"{len(queries)} validation queries and {len(targets)} target sets: need as many, > 0")
    count = max(1, index.manifest.count)
    k = min(depth, count)
    fused = min(max(k, FUSION_DEPTH), count)  # the candidates each side brings to hybrid fusion
    d_scores, dense = index.search_vectors(index.embed_queries(list(queries)), fused)  # (Q, fused)
    rankings = {"dense": (dense[:, :k], "dense", 1.0)}
    top = {"dense": d_scores[:, 0]}
    if index.lexical is not None and getattr(index.manifest, "query_modality", None) != "image":
        l_scores, lexical = index.lexical.search(list(queries), fused)
        rankings["lexical"] = (lexical[:, :k], "lexical", 1.0)
        top["lexical"] = l_scores[:, 0]
        for w in sorted(weights):
            fusion = reciprocal_rank_fusion([dense, lexical], k, weights=[1.0, float(w)])[1]
            rankings[f"hybrid@{w:g}"] = (fusion, "hybrid", float(w))
    mrr = {key: round(float(np.mean(reciprocal_ranks(ranked, targets))), 4) for key, (ranked, _, _) in rankings.items()}
    order = list(rankings)
    best = max(order, key=lambda key: (mrr[key], -order.index(key)))  # ties: the earlier, simpler one
    _, mode, weight = rankings[best]
    weak = {}
    if "lexical" in rankings:  # hybrid is calibrated at the weight the index will search with
        f_scores, fusion = reciprocal_rank_fusion([dense, lexical], k, weights=[1.0, weight])
        weak["hybrid"] = weak_match(f_scores[:, 0], found_within(fusion, targets))
        weak["lexical"] = weak_match(top["lexical"], found_within(rankings["lexical"][0], targets))
    weak["dense"] = weak_match(top["dense"], found_within(rankings["dense"][0], targets))
    return {"mode": mode, "lexical_weight": weight, "mrr": mrr, "queries": len(queries), "weak": weak}


def save_search_defaults(path: str | Path, choice: dict, chosen_on: str) -> Manifest:
    """Record ``choice`` (``choose_mode``'s) and what it was chosen on in the index's manifest."""
    path = Path(path)
    with write_lock(path):
        manifest = Manifest.from_file(path / MANIFEST)
        manifest = replace(manifest, search_defaults={**choice, "chosen_on": chosen_on}, updated=now())
        with atomic_file(path / MANIFEST, "w") as f:
            f.write(manifest.to_json())
    return manifest
