"""``mmssl pretrain mlm`` and ``mmssl pretrain clm``: pretrain a text/code tower on unlabeled text;
``mmssl pretrain contrastive`` (``ContrastivePretrainConfig``): on pairs unlabeled code gives itself.

Output directory (the engine's layout, ``mmssl.engine``):
    OUT/best/, OUT/final/      ``save_pretrained`` directories: model + tokenizer. Load them with
                               ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``, or start a dual
                               encoder's tower from them: ``mmssl train --text-init OUT/best``
    OUT/metrics.jsonl, OUT/curves.png, OUT/checkpoints/last/ (``--resume``)
    OUT/best/README.md, OUT/final/README.md   the model card (``mmssl.models.card``)

The tokenizer is trained on the training documents (byte-level BPE, identifiers split as in
``mmssl train``), or taken from ``--tokenizer DIR`` or from the ``--init`` model. ``--max-steps 0``
writes the randomly initialized model with its tokenizer: the control of the pretraining
experiment (same architecture, same tokenizer, no pretraining).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from mmssl.console import get_logger
from mmssl.engine import EngineConfig, run_training
from mmssl.pretrain.corpus import (
    DEFAULT_PATTERN,
    load_dataset_documents,
    pack,
    read_documents,
    split_documents,
)
from mmssl.pretrain.masking import Masker, Masking, make_masker
from mmssl.pretrain.tasks import CLMTask, MLMTask
from mmssl.recipes.config import ContrastivePretrainConfig
from mmssl.runtime import seeded_subset

log = get_logger("pretrain")
TOKENIZER_SAMPLE = 100_000  # documents the BPE tokenizer is trained on


@dataclass(frozen=True)
class PretrainConfig(EngineConfig):
    """What both pretraining commands share: data, tokenizer, model size, blocks."""

    data: list[str] = field(
        default_factory=list,
        metadata={"help": "files or folders: .jsonl[.gz] records (see --fields) or UTF-8 text (see --text-unit)"},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "instead of --data: a datasets save_to_disk folder or load_dataset name"}
    )
    dataset_split: str = field(default="train", metadata={"help": "split of --dataset"})
    fields: str | None = field(
        default=None,
        metadata={"help": "comma list of record fields, each a document (default: docstring,code; --dataset: text)"},
    )
    partition: str | None = field(
        default="train", metadata={"help": "JSONL: keep records of this partition ('' keeps all)"}
    )
    text_unit: Literal["line", "file"] = field(default="line", metadata={"help": "text files: a document per"})
    pattern: str = field(default=DEFAULT_PATTERN, metadata={"help": "folders: comma list of file patterns"})
    valid: str | None = field(default=None, metadata={"help": "validation file/folder (default: hold out docs)"})
    valid_partition: str | None = field(default="valid", metadata={"help": "partition of the --valid records"})
    valid_fraction: float = field(default=0.02, metadata={"help": "without --valid: fraction of documents held out"})
    eval_max_blocks: int = field(default=256, metadata={"help": "validation blocks scored"})
    # model and tokenizer
    init: str | None = field(default=None, metadata={"help": "continue pretraining this model dir or hub name"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer dir (default: trained on --data)"})
    preset: str = field(default="mini", metadata={"help": "size from scratch: tiny, mini, small, base"})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary trained on the data"})
    split_identifiers: bool = field(
        default=True, metadata={"help": "BPE: split camelCase/snake_case into lowercase words"}
    )
    block_size: int = field(
        default=256, metadata={"help": "tokens per packed block (and the model's positions: >= the tower's lengths)"}
    )
    out: str = field(default="runs/pretrain", metadata={"help": "output directory"})
    batch_size: int = field(default=32, metadata={"help": "blocks per micro-batch"})
    untie_embeddings: bool = field(
        default=False,
        metadata={
            "help": "the output layer gets weights of its own instead of the input embeddings' (which then "
            "keep lexical identity: what a retrieval tower starts from)"
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/norms)"})

    def documents(self, valid: bool = False) -> list[str]:
        if self.dataset:
            fields = (self.fields or "text").split(",")
            return load_dataset_documents(self.dataset, fields, "validation" if valid else self.dataset_split)
        fields = (self.fields or "docstring,code").split(",")
        if valid:
            return read_documents([self.valid], fields, self.valid_partition, self.text_unit, self.pattern)
        return read_documents(self.data, fields, self.partition, self.text_unit, self.pattern)


@dataclass(frozen=True)
class MLMConfig(PretrainConfig):
    """Pretrain a BERT/RoBERTa-style masked language model (``--config FILE`` reads TOML/YAML/JSON)."""

    arch: Literal["roberta", "bert"] = field(default="roberta", metadata={"help": "encoder architecture"})
    mlm_probability: float = field(default=0.15, metadata={"help": "fraction of tokens (or words) masked"})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "of the masked: replaced by <mask>"})
    random_replace_prob: float = field(default=0.1, metadata={"help": "of the masked: replaced by a random token"})
    masking: Masking = field(
        default="token",
        metadata={
            "help": "unit masked together: token; word (every token of a whitespace word, all with <mask>); "
            "identifier (every sub-token of one code identifier); span (runs of identifiers/tokens, SpanBERT)"
        },
    )


@dataclass(frozen=True)
class CLMConfig(PretrainConfig):
    """Pretrain a GPT-2-style causal language model (``--config FILE`` reads TOML/YAML/JSON)."""

    arch: Literal["gpt2"] = field(default="gpt2", metadata={"help": "decoder architecture"})


def _tokenizer(config: PretrainConfig, docs: list[str]):
    from transformers import AutoTokenizer

    from mmssl.models.text import resolve_init
    from mmssl.models.tokenizer import train_bpe_tokenizer

    if config.tokenizer or config.init:
        return AutoTokenizer.from_pretrained(resolve_init(config.tokenizer or config.init), trust_remote_code=False)
    return train_bpe_tokenizer(
        docs[:TOKENIZER_SAMPLE],
        config.vocab_size,
        max_length=config.block_size,
        split_identifiers=config.split_identifiers,
    )


def build_lm(config: PretrainConfig, tokenizer):
    """A ``*ForMaskedLM`` / ``GPT2LMHeadModel`` from ``--init`` or from the preset's config."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from mmssl.models.text import PRESETS, TowerConfig, backbone_config, load_with_report, max_positions, resolve_init

    auto = AutoModelForMaskedLM if isinstance(config, MLMConfig) else AutoModelForCausalLM
    if config.init:
        path = resolve_init(config.init)
        model, info = load_with_report(auto, path)  # its table of new weights becomes the line below
        new = [k for k in info.get("missing_keys", []) if not k.startswith(("bert.pooler.", "roberta.pooler."))]
        if new:  # MiniLM and other sentence encoders ship no LM head
            log.warning(
                "%s has no %s head: %d new tensors (%s) are trained from scratch",
                config.init, "masked-LM" if isinstance(config, MLMConfig) else "causal-LM", len(new),
                ", ".join(sorted(new)[:4]) + (", ..." if len(new) > 4 else ""),
            )  # fmt: skip
    else:
        if config.preset in PRESETS and PRESETS[config.preset][1] == 0:  # (hidden, layers, heads, inter)
            raise ValueError(f"preset {config.preset!r} has no transformer layer: nothing to pretrain")
        tower = TowerConfig(arch=config.arch, preset=config.preset, max_length=config.block_size)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        bcfg = backbone_config(tower, len(tokenizer), pad, tokenizer.bos_token_id or 0, tokenizer.eos_token_id or 0)
        model = auto.from_config(bcfg)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens, the model's embeddings "
            f"{model.get_input_embeddings().num_embeddings}: use the model's own tokenizer"
        )
    limit = max_positions(model.base_model)
    if limit is not None and config.block_size > limit:
        raise ValueError(f"--block-size {config.block_size} exceeds the model's {limit} positions")
    if config.untie_embeddings:
        untie_embeddings(model)
    return model


def untie_embeddings(model) -> None:
    """Give the LM's output layer a copy of the input embeddings as weights of its own (saved and
    loaded untied: ``tie_word_embeddings`` is off in its config). Its bias, which RoBERTa and BERT
    share with the head's, gets its own copy too: untied, the shared name is not saved."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    model.config.tie_word_embeddings = False
    if out is not None and out.weight is inp.weight:
        out.weight = torch.nn.Parameter(inp.weight.detach().clone())
    if out is not None and getattr(out, "bias", None) is not None:
        owners = [n for n, p in model.named_parameters(remove_duplicate=False) if p is out.bias]
        if len(owners) > 1:
            out.bias = torch.nn.Parameter(out.bias.detach().clone())


def build_pretraining(config: PretrainConfig, device: torch.device) -> MLMTask | CLMTask:
    """The task of ``mmssl pretrain mlm|clm`` (validation on held-out blocks when there are any)."""
    if not config.data and not config.dataset:
        raise ValueError("--data FILE_OR_FOLDER ... (or --dataset NAME) is required")
    docs = config.documents()
    if config.valid or (config.dataset and config.valid_fraction == 0):
        train_docs, valid_docs = docs, config.documents(valid=True)
    else:
        train_docs, valid_docs = split_documents(docs, config.valid_fraction, config.seed)
    tokenizer = _tokenizer(config, train_docs)
    mlm = isinstance(config, MLMConfig)
    masker = _masker(config, tokenizer) if mlm else None
    keep = dict(with_offsets=masker is not None and masker.needs == "offsets")
    keep["with_groups"] = masker is not None and masker.needs == "groups"
    train = pack(tokenizer, train_docs, config.block_size, **keep)
    if len(train) < config.batch_size:
        raise ValueError(
            f"{len(train)} blocks of {config.block_size} tokens in the training data, fewer than --batch-size "
            f"{config.batch_size}"
        )
    valid = None
    if valid_docs:
        try:
            valid = pack(tokenizer, valid_docs, config.block_size, **keep)
        except ValueError:
            log.warning("validation documents fill no block of %d tokens: no validation", config.block_size)
    if valid is not None and len(valid) > config.eval_max_blocks:
        valid = valid.subset(seeded_subset(len(valid), config.eval_max_blocks, seed=0))
    log.info(
        "pretrain %s: %d documents -> %d blocks of %d tokens (%d tokens); %d validation blocks",
        "mlm" if mlm else "clm",
        len(train_docs),
        len(train),
        config.block_size,
        train.n_tokens,
        len(valid) if valid is not None else 0,
    )
    model = build_lm(config, tokenizer).to(device)
    if masker is not None:
        return MLMTask(model, tokenizer, train, masker, valid, config.batch_size)
    return CLMTask(model, tokenizer, train, valid, config.batch_size)


def _masker(config: MLMConfig, tokenizer) -> Masker:
    replace, random = config.mask_replace_prob, config.random_replace_prob
    if config.masking == "word" and (replace, random) != (1.0, 0.0):
        log.info("whole-word masking: every chosen token becomes <mask> (transformers supports no other)")
        replace, random = 1.0, 0.0
    return make_masker(config.masking, tokenizer, config.mlm_probability, replace, random)


def contrastive(config: ContrastivePretrainConfig) -> int:
    """``mmssl pretrain contrastive``: the ``code-ssl`` recipe's task on the engine, its cards written."""
    from pathlib import Path

    from mmssl.console import launched_as_rank_zero
    from mmssl.models.card import write_model_cards
    from mmssl.recipes.code_pairs import CodePairsRecipe

    if not config.data.train:
        raise ValueError("--train UNLABELED.jsonl.gz is required (mmssl data mine-code --unlabeled makes one)")
    if not config.text_code.shared:
        raise ValueError("--shared false: contrastive pretraining makes one tower for --text-init")
    recipe = CodePairsRecipe(config.pairs)
    run = config.flat()
    summary = run_training(config.engine, lambda device: recipe.build_task(config, device), run_config=run)
    if launched_as_rank_zero():  # one process writes the cards
        write_model_cards(Path(config.engine.out), run, summary, recipe.metric)
    return 0


def main(config: PretrainConfig) -> int:
    import dataclasses
    from pathlib import Path

    from mmssl.console import launched_as_rank_zero
    from mmssl.models.card import write_pretrained_cards

    summary = run_training(config, lambda device: build_pretraining(config, device))
    if launched_as_rank_zero():  # one process writes the cards
        kind = "mlm" if isinstance(config, MLMConfig) else "clm"
        write_pretrained_cards(Path(config.out), dataclasses.asdict(config), summary, kind, MLMTask.metric)
    return 0
