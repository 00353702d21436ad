"""The mined hard negatives of a set of training pairs: their settings, their table, its file.

Shape legend: N training pairs, n kept per pair, B pairs in a batch, h hard negatives per pair in
a batch.

The file (JSON lines, ``mmssl mine-negatives --out``): a header object, then one object per pair,
in pair order:
    {"format": "mmssl-negatives", "version": 1, "pairs": N, "fingerprint": ..., "settings": {...},
     "stats": {...}, "false_negative_sample": [...]}
    {"pair": 0, "negatives": [j, ...], "ranks": [...], "scores": [...], "positive_score": s}
``negatives`` are other pairs' numbers (their candidates), best first; ``ranks`` their places in
the retrieved list (0 = best, before filtering; the fused list for source both); scores are
rounded to 6 decimals; the positive's score is null for source both (no common scale).
``NegativeTable.load`` names the file and line of anything wrong. Checkpoints hold the same table
as tensors (``state`` / ``from_state``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from mmssl.data.pairs import Pairs
from mmssl.io import atomic_file
from mmssl.runtime import counter_uniform

FORMAT, VERSION = "mmssl-negatives", 1


@dataclass(frozen=True)
class MiningSettings:
    """How hard negatives are mined (the rules: ``mmssl.negatives.mine``)."""

    GROUP_TITLE: ClassVar[str] = "mining"
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
    seed: int = field(default=0, metadata={"help": "seed of random picks and of the false-negative sample"})
    filter_bm25: bool = field(
        default=False,
        metadata={"help": "--source bm25 without --model: apply the false-negative rule to BM25 scores"},
    )

    def __post_init__(self) -> None:
        from mmssl.checks import check_config

        check_config(self)  # also when read back from a table's file
        if self.keep > self.top_k:
            raise ValueError(f"--keep {self.keep}: must be <= --top-k ({self.top_k})")

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
        keys = torch.rand(table.shape) if seed is None else counter_uniform(seed, rows.numpy(), table.shape[1])
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
        with path.open(encoding="utf-8", errors="replace") as f:  # bad bytes fail as bad JSON, with the line
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


def _finite_or_none(x) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None
