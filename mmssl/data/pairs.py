"""``Pairs``: aligned (query, candidate) items, the unit every dual-encoder recipe trains and
evaluates on, and ``normalize_text``, the rule by which two queries count as the same."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from mmssl.runtime import seeded_subset


def normalize_text(text: str) -> str:
    """Lowercase, whitespace collapsed: two queries equal under this are the same query."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Pairs:
    """Aligned (query, candidate) items and, per pair, an id shared by identical queries.

    Queries are texts; candidates are texts (code) or images (``ImageTextRecord``s, whose ``where``
    names them). Identical docstrings or captions in one batch are false negatives for each other;
    the ids let the loss mask them, and let evaluation count every image of a repeated caption as a
    right answer.
    """

    queries: list[str]
    candidates: list
    ids: Tensor  # (N,) int64

    @classmethod
    def from_texts(cls, queries: list[str], candidates: list) -> Pairs:
        if len(queries) != len(candidates):
            raise ValueError(f"{len(queries)} queries but {len(candidates)} candidates")
        seen: dict[str, int] = {}
        ids = [seen.setdefault(normalize_text(q), len(seen)) for q in queries]
        return cls(list(queries), list(candidates), torch.tensor(ids, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, idx: Tensor | list[int]) -> Pairs:
        """The pairs at positions ``idx``, in that order (ids kept)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = idx.tolist()
        return Pairs([self.queries[i] for i in rows], [self.candidates[i] for i in rows], self.ids[idx])

    def sample(self, n: int | None, seed: int = 0) -> Pairs:
        """A seeded random subset of ``n`` pairs, in their original order (all if n is None or larger)."""
        if n is None or n >= len(self):
            return self
        return self.subset(seeded_subset(len(self), n, seed))

    def fingerprint(self) -> str:
        """A short hash of the data, stored in checkpoints so that resume refuses other data."""
        h = hashlib.sha1()
        for q, c in zip(self.queries, self.candidates):
            c = c if isinstance(c, str) else c.where  # an image record: its file or shard member
            h.update(q.encode("utf-8", "replace") + b"\0" + c.encode("utf-8", "replace") + b"\1")
        return h.hexdigest()[:16]
