"""Masking rules for masked-LM pretraining, by the unit masked together.

Shape legend: B blocks, T tokens per block.

    token        each token on its own (BERT): transformers' ``DataCollatorForLanguageModeling``
    word         every token of a whitespace-delimited word (transformers' whole-word masking,
                 every chosen token becomes ``<mask>``)
    identifier   every sub-token of one code identifier together: ``get_user_name`` or
                 ``parseHTTPHeader`` is hidden whole, never as ``get <mask> name``, whose missing
                 word its neighbours give away
    span         runs of units (identifiers, or tokens outside identifiers) of a length drawn from
                 Geometric(0.2) capped at 10, as SpanBERT masks spans of words

For ``identifier`` and ``span`` the unit of each token is ``PackedBlocks.groups`` (made by
``pack(..., with_groups=True)`` from the documents' identifiers: ``corpus.IDENTIFIER``). Each unit is
chosen with the masking probability (spans: start with it divided by the mean length), so about
that fraction of the tokens is masked; a chosen unit is replaced whole by ``<mask>`` (80 %), by
random tokens (10 %) or kept (10 %), the rates settable. transformers' collator has no unit but the
whitespace word, hence the hand-written rule here. Draws use torch's global generator (the engine's
checkpoint saves it, so a resumed run draws the same masks).
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from mmssl.pretrain.corpus import PackedBlocks

Masking = Literal["token", "word", "identifier", "span"]
SPAN_P, SPAN_MAX = 0.2, 10  # SpanBERT's geometric span lengths
IGNORE = -100


class Masker(Protocol):
    """Blocks -> (masked input ids, labels: the original id where masked, -100 elsewhere), both (B, T)."""

    needs: str  # what ``pack`` must keep for it: "", "offsets" or "groups"

    def __call__(self, blocks: PackedBlocks) -> tuple[Tensor, Tensor]: ...


class CollatorMasker:
    """``token`` and ``word`` masking: transformers' ``DataCollatorForLanguageModeling``."""

    def __init__(self, tokenizer, probability: float, replace_prob: float, random_prob: float, word: bool) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.needs = "offsets" if word else ""
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=probability,
            mask_replace_prob=replace_prob,
            random_replace_prob=random_prob,
            whole_word_mask=word,
        )

    def __call__(self, blocks: PackedBlocks) -> tuple[Tensor, Tensor]:
        return self.collator.torch_mask_tokens(
            blocks.input_ids.clone(), special_tokens_mask=blocks.special_tokens_mask, offset_mapping=blocks.offsets
        )


def _spread(starts: Tensor, lengths: Tensor) -> Tensor:
    """(B, U) bool: the units covered by spans beginning at ``starts`` with ``lengths`` units."""
    covered = torch.zeros_like(starts)
    for k in range(min(int(lengths.max()), starts.shape[1]) if starts.any() else 0):
        # a span starting k units back that is longer than k covers this unit
        reach = starts & (lengths > k)
        covered[:, k:] |= reach[:, : reach.shape[1] - k]
    return covered


class UnitMasker:
    """``identifier`` and ``span`` masking over ``PackedBlocks.groups`` (see the module docstring)."""

    needs = "groups"

    def __init__(
        self,
        mask_id: int,
        vocab_size: int,
        probability: float = 0.15,
        replace_prob: float = 0.8,
        random_prob: float = 0.1,
        span: bool = False,
    ) -> None:
        if not 0 < probability < 1 or replace_prob < 0 or random_prob < 0 or replace_prob + random_prob > 1:
            raise ValueError("masking: probability in (0, 1), replace and random rates >= 0 summing to <= 1")
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.probability, self.replace_prob, self.random_prob, self.span = probability, replace_prob, random_prob, span

    def chosen_units(self, n_blocks: int, n_units: int) -> Tensor:
        """(B, U) bool: which units of each block are masked."""
        if not self.span:
            return torch.rand(n_blocks, n_units) < self.probability
        lengths = torch.distributions.Geometric(probs=torch.tensor(SPAN_P)).sample((n_blocks, n_units)).long() + 1
        lengths = lengths.clamp_(max=SPAN_MAX)
        mean = sum(min(k, SPAN_MAX) * SPAN_P * (1 - SPAN_P) ** (k - 1) for k in range(1, 200))
        starts = torch.rand(n_blocks, n_units) < self.probability / mean
        return _spread(starts, lengths)

    def __call__(self, blocks: PackedBlocks) -> tuple[Tensor, Tensor]:
        if blocks.groups is None:
            raise ValueError("identifier/span masking needs the blocks' groups: pack(..., with_groups=True)")
        ids, groups, special = blocks.input_ids, blocks.groups, blocks.special_tokens_mask  # (B, T) each
        b, t = ids.shape
        # unit index of each token: a new unit wherever the group changes along the block
        unit = torch.zeros_like(ids)
        unit[:, 1:] = (groups[:, 1:] != groups[:, :-1]).long().cumsum(1)  # (B, T) in [0, T)
        chosen = self.chosen_units(b, t).gather(1, unit) & ~special  # (B, T)
        action = torch.rand(b, t).gather(1, unit)  # one draw per unit: mask, random or keep it whole
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        inputs = ids.clone()
        to_mask = chosen & (action < self.replace_prob)
        to_random = chosen & (action >= self.replace_prob) & (action < self.replace_prob + self.random_prob)
        inputs[to_mask] = self.mask_id
        inputs[to_random] = torch.randint(self.vocab_size, (int(to_random.sum()),))
        return inputs, labels


def make_masker(
    masking: Masking, tokenizer, probability: float = 0.15, replace_prob: float = 0.8, random_prob: float = 0.1
) -> Masker:
    """The masker of a ``--masking`` rule for ``tokenizer``."""
    if masking in ("token", "word"):
        return CollatorMasker(tokenizer, probability, replace_prob, random_prob, word=masking == "word")
    if masking in ("identifier", "span"):
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: masked-LM pretraining needs one")
        return UnitMasker(
            tokenizer.mask_token_id, len(tokenizer), probability, replace_prob, random_prob, span=masking == "span"
        )
    raise ValueError(f"--masking must be token, word, identifier or span; got {masking!r}")
