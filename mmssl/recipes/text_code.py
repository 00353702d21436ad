"""The text-code recipe: CodeSearchNet pairs -> a text/code dual encoder, scored by MRR.

Queries are docstrings (the "text" side), candidates are code with the docstring removed. Towers
given with ``--text-init``/``--code-init`` bring their own tokenizer; towers built from scratch get
a byte-level BPE tokenizer trained on the training split (one shared tokenizer when the towers are
shared). ``retrieval_scores`` is the one scoring of a (query, code) embedding pair: MRR by the
CodeSearchNet protocol (seeded chunks of 1,000, ties against the model) and recall@k over all.
"""

from __future__ import annotations

import torch

from mmssl.console import get_logger
from mmssl.data.code_search import read_code_search
from mmssl.data.pairs import Pairs
from mmssl.evaluate import codesearchnet_mrr_embeddings, recall_at_k
from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
from mmssl.models.text import hidden_size
from mmssl.models.tokenizer import train_bpe_tokenizer
from mmssl.recipes.base import KS, IndexItems, Recipe
from mmssl.recipes.config import DualModelConfig, PairDataConfig, TextCodeConfig
from mmssl.recipes.text_code_eval import eval_command, score_row
from mmssl.tokens import clip_chars

TOKENIZER_SAMPLE = 50_000  # texts the BPE tokenizer is trained on (enough for a stable vocabulary)
TOKEN_FIELDS = ("code_tokens", "docstring_tokens")
DEFAULT_TEXT_FIELD = {"code": "code", "text": "docstring"}

log = get_logger("recipes")


def retrieval_scores(queries: torch.Tensor, codes: torch.Tensor, chunk_size: int = 1000, seed: int = 0) -> dict:
    """MRR (CodeSearchNet protocol), its per-chunk values, and recall@1/5/10 of aligned (N, D) embeddings."""
    mrr = codesearchnet_mrr_embeddings(queries, codes, chunk_size=chunk_size, seed=seed)
    return score_row(mrr, recall_at_k(queries, codes, ks=KS), len(queries))


class TextCodeRecipe(Recipe):
    name, modalities, group, metric = "text-code", ("text", "code"), "text_code", "mrr"

    def load_pairs(
        self, source: str, partition: str | None, data: PairDataConfig | None = None, max_pairs: int | None = None
    ) -> Pairs:
        corpus = read_code_search(source, partition=partition)
        kept = [(d, c) for d, c in zip(corpus.docstrings(), corpus.codes()) if d.strip() and c.strip()]
        where = f"{source} (partition {partition!r})" if partition else source
        if corpus.records and not kept:  # every query alike: training learns nothing, MRR reads H_n/n
            raise ValueError(f"{where}: every record has an empty docstring or code; nothing to train or score on")
        if len(kept) < len(corpus.records):
            dropped = len(corpus.records) - len(kept)
            log.warning("%s: %d record(s) with an empty docstring or code left out", where, dropped)
        queries, codes = [d for d, _ in kept], [c for _, c in kept]
        return Pairs.from_texts(queries, codes).sample(max_pairs, seed=0)

    def evaluate(
        self, model: DualEncoder, pairs: Pairs, batch_size: int = 128, chunk_size: int = 1000, seed: int = 0
    ) -> dict:
        """Docstring -> code retrieval over ``pairs`` (see ``retrieval_scores``)."""
        q = torch.as_tensor(model.embed(self.modalities[0], pairs.queries, batch_size))  # (N, D)
        c = torch.as_tensor(model.embed(self.modalities[1], pairs.candidates, batch_size))  # (N, D)
        return retrieval_scores(q, c, chunk_size, seed)

    def build_model(self, model: DualModelConfig, options: TextCodeConfig, train: Pairs) -> DualEncoder:
        """The text/code dual encoder; BPE tokenizers trained on ``train`` for towers from scratch."""

        def tower(init: str | None, max_length: int) -> TowerConfig:
            return TowerConfig(
                init=init, arch=options.arch, preset=options.preset, pooling=options.pooling, max_length=max_length
            )

        # Shared towers: one backbone (DualEncoder.build sizes it for the longer side), but each side
        # keeps its own truncation length.
        code_init = model.text_init if options.shared else options.code_init
        towers = {
            "text": tower(model.text_init, model.max_text_length),
            "code": tower(code_init, options.max_code_length),
        }
        embed_dim = model.embed_dim
        if embed_dim is None:
            init = model.text_init or options.code_init
            embed_dim = hidden_size(init) if init else 256
        tokenizers = {}
        sample = slice(0, TOKENIZER_SAMPLE)
        split = options.split_identifiers
        if options.shared and not model.text_init:
            longest = max(model.max_text_length, options.max_code_length)
            texts = clip_chars(train.queries[sample] + train.candidates[sample], longest)
            tok = train_bpe_tokenizer(texts, options.vocab_size, split_identifiers=split)
            tokenizers = {"text": tok, "code": tok}
        else:
            for side, texts, max_length, init in (
                ("text", train.queries, model.max_text_length, model.text_init),
                ("code", train.candidates, options.max_code_length, options.code_init),
            ):
                if not init:
                    tokenizers[side] = train_bpe_tokenizer(
                        clip_chars(texts[sample], max_length),
                        options.vocab_size,
                        max_length=max_length,
                        split_identifiers=split,
                    )
        dual = DualEncoderConfig(
            modalities=self.modalities,
            towers=towers,
            shared=options.shared,
            embed_dim=embed_dim,
            init_temperature=model.temperature,
        )
        return DualEncoder.build(dual, tokenizers)

    def index_items(self, model, data, modality, text_field, partition, max_items):
        """A collection of CodeSearchNet-format (or any JSONL) records: one field indexed, the rest
        kept as payload; tuned on the records' own queries where they carry them (docstrings)."""
        first, second = model.config.modalities
        text_field = text_field or DEFAULT_TEXT_FIELD.get(modality, "text")
        corpus = read_code_search(data, partition=partition or None, required=(text_field,))
        records = corpus.records[:max_items] if max_items else corpus.records
        if not records:
            raise ValueError(f"{data}: no records" + (f" in partition {partition!r}" if partition else ""))
        texts = [r[text_field] for r in records]
        payloads = [
            {k: v for k, v in r.items() if k != text_field and k not in TOKEN_FIELDS and v != ""} for r in records
        ]
        query_field = DEFAULT_TEXT_FIELD.get(first if modality == second else second)
        queries = [r.get(query_field) for r in records] if query_field and query_field != text_field else None
        return IndexItems(texts, texts, payloads, queries, len(corpus.records))

    def eval_command(self, config) -> int:
        return eval_command(self, config)


RECIPE = TextCodeRecipe()
