"""``Pairs``: aligned (query, candidate) items, the unit every dual-encoder recipe trains and
evaluates on; ``Captions``, several queries per pair (an image's name and its keywords) of which
training draws one per pair per step; and ``normalize_text``, the rule by which two queries count as
the same."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmssl.runtime import counter_uniform, seeded_subset


def normalize_text(text: str) -> str:
    """Lowercase, whitespace collapsed: two queries equal under this are the same query."""
    return " ".join(text.lower().split())


DRAW_SALT = 0x5EED_CA97  # keeps the caption draw apart from the hard-negative draw of the same batch seed


@dataclass(frozen=True)
class Captions:
    """Several captions per pair; training draws one per pair per step (``draw``).

    Shape legend: N pairs, T captions in all. ``ids`` share ``Pairs.ids``'s numbering: a caption
    equal to some pair's main query has that pair's id, so the loss masks them as the same text.
    """

    texts: list[str]  # (T,) pair by pair
    starts: Tensor  # (N + 1,) int64: pair i's captions are texts[starts[i]:starts[i + 1]]
    ids: Tensor  # (T,) int64
    first_p: float | None = None  # the chance of a pair's first caption (None: all alike)

    def draw(self, rows: Tensor, keys: Tensor, seed: int | None = None) -> Tensor:
        """(B,) positions in ``texts``: one caption of each pair in ``rows``, uniformly. The draw of a
        pair depends on its ``key`` (its main query's id) and the batch's ``seed``, not on its batch
        slice, so pairs with the same main query and captions (an icon in several themes) draw the
        same caption, and the loss masks them as the same text; without a seed, torch's RNG draws."""
        lo, hi = self.starts[rows], self.starts[rows + 1]
        if seed is None:
            u = torch.rand(len(rows), dtype=torch.float64)
        else:
            u = counter_uniform(seed ^ DRAW_SALT, keys.numpy(), 1)[:, 0]
        n = hi - lo
        if self.first_p is None:
            return lo + (u * n).long().clamp_max(n - 1)
        p = self.first_p
        rest = ((u - p) / max(1.0 - p, 1e-12) * (n - 1)).long().clamp(0, None)  # uniform over the others
        return torch.where((u < p) | (n == 1), lo, lo + 1 + rest.clamp_max(n - 2))

    def subset(self, rows: list[int]) -> Captions:
        spans = [(int(self.starts[i]), int(self.starts[i + 1])) for i in rows]
        keep = [t for lo, hi in spans for t in range(lo, hi)]
        sizes = torch.tensor([0] + [hi - lo for lo, hi in spans])
        ids = self.ids[torch.tensor(keep, dtype=torch.long)]
        return Captions([self.texts[t] for t in keep], sizes.cumsum(0), ids, self.first_p)


@dataclass(frozen=True)
class Pairs:
    """Aligned (query, candidate) items and, per pair, an id shared by identical queries.

    Queries are texts; candidates are texts (code) or images (``ImageTextRecord``s, whose ``where``
    names them). Identical docstrings or captions in one batch are false negatives for each other;
    the ids let the loss mask them, and let evaluation count every image of a repeated caption as a
    right answer. ``captions`` (optional): each pair's captions, of which training draws one per
    step; evaluation uses ``queries``.
    """

    queries: list[str]
    candidates: list
    ids: Tensor  # (N,) int64
    captions: Captions | None = None

    @classmethod
    def from_texts(cls, queries: list[str], candidates: list, captions: Sequence[Sequence[str]] | None = None) -> Pairs:
        """``captions``: per pair, the captions training draws from (repeats and blanks dropped); a
        pair with none draws its query. The query is not added to a pair's list: a held-out query
        (an emoji's unseen keywords) stays out of training while its pair trains on its name."""
        if len(queries) != len(candidates):
            raise ValueError(f"{len(queries)} queries but {len(candidates)} candidates")
        seen: dict[str, int] = {}
        ids = [seen.setdefault(normalize_text(q), len(seen)) for q in queries]
        choices = None
        if captions is not None:
            if len(captions) != len(queries):
                raise ValueError(f"{len(queries)} queries but {len(captions)} caption lists")
            texts, starts = [], [0]
            for q, more in zip(queries, captions):
                own: dict[str, str] = {}
                for t in more:
                    if t.strip():
                        own.setdefault(normalize_text(t), t)
                texts += own.values() or [q]
                starts.append(len(texts))
            cap_ids = [seen.setdefault(normalize_text(t), len(seen)) for t in texts]
            choices = Captions(texts, torch.tensor(starts), torch.tensor(cap_ids, dtype=torch.long))
        return cls(list(queries), list(candidates), torch.tensor(ids, dtype=torch.long), choices)

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, idx: Tensor | list[int]) -> Pairs:
        """The pairs at positions ``idx``, in that order (ids kept)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = idx.tolist()
        captions = self.captions.subset(rows) if self.captions is not None else None
        return Pairs([self.queries[i] for i in rows], [self.candidates[i] for i in rows], self.ids[idx], captions)

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
        if self.captions is not None:
            h.update("\2".join(self.captions.texts).encode("utf-8", "replace"))
        return h.hexdigest()[:16]
