"""An index's default search mode, chosen on validation queries, and kept in its manifest.

``choose_mode(index, queries, targets)`` scores dense, lexical (BM25) and hybrid search at each
lexical weight by the mean reciprocal rank of each query's right items (``targets``: a set of item
ids per query; a right item missing from the first ``depth`` hits scores 0) and picks the best,
ties to the simpler mode (dense, then lexical, then hybrid with the smaller weight).
``save_search_defaults(path, choice)`` writes it into the index's manifest (``search_defaults``)
under the index's write lock, atomically; the search app starts each index on its defaults.
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


def reciprocal_ranks(ranked: np.ndarray, targets: Sequence[set[int]]) -> list[float]:
    """1 / the rank of the first right id in each row of ``ranked`` (Q, K) (-1: no item; 0 when no
    right one is there)."""
    out = []
    for row, right in zip(ranked, targets):
        row = row[row >= 0]
        hit = next((r for r, i in enumerate(row.tolist(), start=1) if i in right), None)
        out.append(1.0 / hit if hit else 0.0)
    return out


def choose_mode(
    index, queries: Sequence[str], targets: Sequence[set[int]], weights: Sequence[float] = WEIGHTS, depth: int = DEPTH
) -> dict:
    """The best of dense, lexical and hybrid@w on (query, right items): {"mode", "lexical_weight",
    "mrr": {candidate: MRR}, "queries": n}. An index without a BM25 side, or searched by image, is dense.

    The queries are embedded and BM25-ranked once; each hybrid weight fuses those two rankings as
    ``SearchIndex.search(mode="hybrid")`` does (the same ranks on an exact index, tested against it;
    an approximate one may differ where a deeper search finds other neighbours)."""
    if len(queries) != len(targets) or not queries:
        raise ValueError(f"{len(queries)} validation queries and {len(targets)} target sets: need as many, > 0")
    count = max(1, index.manifest.count)
    k = min(depth, count)
    fused = min(max(k, FUSION_DEPTH), count)  # the candidates each side brings to hybrid fusion
    dense = index.search_vectors(index.embed_queries(list(queries)), fused)[1]  # (Q, fused) ids
    rankings = {"dense": (dense[:, :k], "dense", 1.0)}
    if index.lexical is not None and getattr(index.manifest, "query_modality", None) != "image":
        lexical = index.lexical.search(list(queries), fused)[1]
        rankings["lexical"] = (lexical[:, :k], "lexical", 1.0)
        for w in sorted(weights):
            fusion = reciprocal_rank_fusion([dense, lexical], k, weights=[1.0, float(w)])[1]
            rankings[f"hybrid@{w:g}"] = (fusion, "hybrid", float(w))
    mrr = {key: round(float(np.mean(reciprocal_ranks(ranked, targets))), 4) for key, (ranked, _, _) in rankings.items()}
    order = list(rankings)
    best = max(order, key=lambda key: (mrr[key], -order.index(key)))  # ties: the earlier, simpler one
    _, mode, weight = rankings[best]
    return {"mode": mode, "lexical_weight": weight, "mrr": mrr, "queries": len(queries)}


def save_search_defaults(path: str | Path, choice: dict, chosen_on: str) -> Manifest:
    """Record ``choice`` (``choose_mode``'s) and what it was chosen on in the index's manifest."""
    path = Path(path)
    with write_lock(path):
        manifest = Manifest.from_file(path / MANIFEST)
        manifest = replace(manifest, search_defaults={**choice, "chosen_on": chosen_on}, updated=now())
        with atomic_file(path / MANIFEST, "w") as f:
            f.write(manifest.to_json())
    return manifest
