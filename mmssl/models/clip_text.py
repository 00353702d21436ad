"""open_clip's text transformer as a tower, with the BPE tokenizer that ships inside the open_clip wheel.

Shape legend: B batch, T context length (77 for CLIP), D shared embedding size.

    tower = ClipTextTower.build(ClipTextConfig(model="ViT-B-32"), embed_dim=512)
    batch = tower.preparer()(["a red apple"])       # {"input_ids": (B, T')}: padding past the longest dropped
    emb = tower(**batch)                            # (B, D), not normalized

The tower is the ``text_cfg`` part of an open_clip model config (a shipped name or the user's
JSON), built by open_clip itself (``open_clip.model._build_text_tower``: the one function open_clip
uses for both CLIP layouts, private but unchanged since open_clip 2.x; the public ``create_model``
would build and discard a vision tower too). Its tokenizer is ``open_clip.get_tokenizer`` for the
same config: CLIP's byte-level BPE (``bpe_simple_vocab_16e6.txt.gz`` in the wheel), so nothing is
downloaded. ``weights`` is a local open_clip checkpoint (its text weights are taken: the CLIP layout
``transformer.*``/``token_embedding.*``/... or the custom-text layout ``text.*``) or, for users who
are online, a pretrained tag.

Saved layout: ``open_clip_config.json`` (``model_cfg``) and ``model.safetensors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mmssl.models.image import _register
from mmssl.models.tower import LockableTower, OpenClipSaved, entries_under, load_exact, projection, read_checkpoint
from mmssl.tokens import clip_chars

# The CLIP layout keeps the text tower's weights at the top level, beside visual.* and logit_scale.
CLIP_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass(frozen=True)
class ClipTextConfig:
    model: str = "ViT-B-32"  # an open_clip model name, or a path to a JSON model config
    weights: str | None = None  # a local open_clip checkpoint, or a pretrained tag (online users)
    context_length: int | None = None  # override the config's (77): shorter is faster for short captions

    kind = "open_clip_text"

    def to_dict(self) -> dict:
        return asdict(self)


class ClipTextTower(OpenClipSaved, LockableTower):
    """open_clip's ``TextTransformer``: input_ids (B, T) -> (B, D)."""

    SAVED_OVERRIDES = {"context_length": None}  # the saved config holds the length already

    def __init__(self, config: ClipTextConfig, text: nn.Module, tokenizer, dim: int, embed_dim: int | None = None):
        super().__init__()
        self.config = config
        self.text = text
        self.tokenizer = tokenizer
        self.proj = projection(dim, embed_dim)
        self.dim = embed_dim or dim
        self.saved_config: dict = {}

    @classmethod
    def build(cls, config: ClipTextConfig, embed_dim: int | None = None) -> ClipTextTower:
        import open_clip
        from open_clip.model import CLIPTextCfg, _build_text_tower

        name = _register(config.model)
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None or "text_cfg" not in model_cfg:
            raise ValueError(f"{config.model}: no text_cfg in this open_clip config")
        if "hf_model_name" in model_cfg["text_cfg"]:
            raise ValueError(
                f"{config.model}: its text tower is a Hugging Face model; use a transformers text tower instead"
            )
        if config.context_length:
            model_cfg["text_cfg"]["context_length"] = config.context_length
        text_cfg = CLIPTextCfg(**model_cfg["text_cfg"])
        dim = int(model_cfg["embed_dim"])
        text = _build_text_tower(dim, text_cfg, quick_gelu=bool(model_cfg.get("quick_gelu", False)))
        tokenizer = open_clip.get_tokenizer(name, context_length=text_cfg.context_length)
        if config.weights:
            _load_text_weights(text, config)
        tower = cls(config, text, tokenizer, dim, embed_dim)
        tower.saved_config = {"model_cfg": model_cfg}
        return tower

    def preparer(self, max_length: int | None = None) -> ClipTextPrep:
        return ClipTextPrep(self.tokenizer, pad_id=self.pad_id if self.trims_padding else None)

    @property
    def pad_id(self) -> int:
        return int(getattr(self.text, "pad_id", 0) or 0)

    @property
    def trims_padding(self) -> bool:
        """Whether a batch may drop the padding columns past its longest text without changing any
        embedding: true for CLIP's layout (causal mask, or a padding mask, and pooling at the
        end-of-text token), false where padding is attended to or pooled (``last`` pooling, CoCa's
        appended class token)."""
        t = self.text
        masked = getattr(t, "attn_mask", None) is not None or bool(getattr(t, "use_pad_mask", False))
        return masked and getattr(t, "cls_emb", None) is None and getattr(t, "pool_type", "argmax") in ("argmax", "eos")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T') -> (B, D), T' <= T: a batch trimmed of its padding columns runs on T' positions."""
        mask = getattr(self.text, "attn_mask", None)  # (T, T) causal, built by open_clip for the full context
        n = input_ids.shape[1]
        if mask is None or n == mask.shape[0]:
            return self.proj(self.text(input_ids))
        # open_clip slices its causal mask only when it also builds a padding mask: hand it the (T', T')
        # corner for this call (a non-persistent buffer, restored at once).
        self.text.attn_mask = mask[:n, :n]
        try:
            return self.proj(self.text(input_ids))
        finally:
            self.text.attn_mask = mask

    def body(self) -> nn.Module:
        return self.text


class ClipTextPrep:
    """Texts -> {"input_ids": (B, T')} with open_clip's tokenizer (padded and truncated to T).

    With ``pad_id`` (a tower whose output ignores padding), the columns past the batch's longest text
    are dropped (T' <= T): short captions no longer pay for the full context, as open_clip does,
    which pads every batch to T (77 for CLIP)."""

    def __init__(self, tokenizer, pad_id: int | None = None) -> None:
        self.tokenizer, self.pad_id = tokenizer, pad_id

    def __call__(self, texts) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(clip_chars(texts, self.tokenizer.context_length))  # (B, T)
        if self.pad_id is not None and ids.numel():
            used = (ids != self.pad_id).any(0).nonzero()
            ids = ids[:, : int(used.max()) + 1] if len(used) else ids  # (B, T')
        return {"input_ids": ids}


def _load_text_weights(text: nn.Module, config: ClipTextConfig) -> None:
    weights = config.weights
    if not Path(weights).is_file():
        if Path(weights).suffix in (".pt", ".bin", ".safetensors"):
            raise FileNotFoundError(f"{weights}: no such checkpoint")
        import open_clip

        # A pretrained tag (online users): open_clip downloads and loads the whole model.
        model = open_clip.create_model(_register(config.model), pretrained=weights)
        state = model.state_dict()
    else:
        state = read_checkpoint(weights)
    if any(k.startswith("text.") for k in state):
        picked = entries_under(state, "text.")
    else:
        picked = {k: v for k, v in state.items() if k.startswith(CLIP_TEXT_PREFIXES)}
    picked.pop("attn_mask", None)  # a buffer open_clip rebuilds (not persistent in its own checkpoints)
    if not picked:
        raise ValueError(f"{weights}: no text-tower weights in this checkpoint")
    load_exact(text, picked, f"{weights} ({config.model})")
