"""The dual encoder: two towers and a learnable temperature, for any pair of modalities.

Shape legend: B batch, T tokens, D shared embedding size.

Like open_clip's ``CLIP``: ``encode_text(batch)`` / ``encode_image(batch)`` / ``encode(modality, batch)``
return (B, D) embeddings, L2-normalized unless ``normalize=False``; a learnable ``logit_scale``
starts at log(1/0.07); the loss lives outside the model.

A tower is one of three kinds, chosen by its config's type (``kind`` in the saved config):
    transformers     ``TowerConfig``: a text/code tower on a ``transformers`` backbone (MiniLM, an
                     ``mmssl pretrain`` output, or from scratch with a corpus BPE tokenizer)
    open_clip_text   ``ClipTextConfig``: open_clip's text transformer and its BPE tokenizer
    open_clip_image  ``ImageTowerConfig``: an open_clip vision tower (or a torchvision ResNet,
                     ``torchvision:resnet50``) and its preprocessing
Every tower maps a batch made by its ``preparer`` (texts -> token ids, images -> pixels; CPU,
picklable for data-loader workers) to (B, D).

Saved layout (``save_pretrained(DIR)``, written atomically; loading unpickles nothing):
    DIR/dual_encoder.json      format version, modalities, shared flag, embed dim, tower configs
    DIR/heads.safetensors      logit_scale and the transformers towers' projections
    DIR/towers/<modality>/     a transformers tower: its backbone's ``save_pretrained`` + tokenizer,
                               loadable alone with ``transformers.AutoModel`` (one dir if shared);
                               an open_clip tower: ``open_clip_config.json`` + ``model.safetensors``
                               (a torchvision one: ``torchvision_config.json`` in its place)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from mmssl.io import atomic_dir, read_json_object
from mmssl.models.clip_text import ClipTextConfig, ClipTextTower
from mmssl.models.image import ImageTower, ImageTowerConfig
from mmssl.models.text import TextTower, TowerConfig, loading
from mmssl.models.tower import load_safetensors
from mmssl.runtime import autocast, eval_mode

AnyTowerConfig = TowerConfig | ClipTextConfig | ImageTowerConfig
TOWER_KINDS = {c.kind: c for c in (TowerConfig, ClipTextConfig, ImageTowerConfig)}
OPEN_CLIP_TOWERS = {ImageTowerConfig: ImageTower, ClipTextConfig: ClipTextTower}  # saved in their own layout

FORMAT_VERSION = 1
CONFIG_NAME = "dual_encoder.json"
HEADS_NAME = "heads.safetensors"


@dataclass(frozen=True)
class DualEncoderConfig:
    """The two sides (query modality first), whether they share one tower, and the embedding size."""

    modalities: tuple[str, str] = ("text", "code")
    towers: dict[str, AnyTowerConfig] = field(default_factory=lambda: {"text": TowerConfig(), "code": TowerConfig()})
    shared: bool = False
    embed_dim: int = 256
    init_temperature: float = 0.07
    matryoshka_dims: tuple[int, ...] = ()  # the prefix sizes it was trained for (mmssl.matryoshka)

    def __post_init__(self) -> None:
        if len(self.modalities) != 2 or self.modalities[0] == self.modalities[1]:
            raise ValueError(f"modalities must be two different names; got {self.modalities}")
        missing = [m for m in self.modalities if m not in self.towers]
        if missing:
            raise ValueError(f"no tower config for modality {missing[0]!r}")
        if self.shared and any(not isinstance(self.towers[m], TowerConfig) for m in self.modalities):
            raise ValueError("only two transformers towers can be shared")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["matryoshka_dims"] = list(self.matryoshka_dims)
        d["towers"] = {m: {"kind": t.kind, **t.to_dict()} for m, t in self.towers.items()}
        return {"format_version": FORMAT_VERSION, "kind": "dual_encoder", **d}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> DualEncoderConfig:
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{source}: format_version {version!r}, this mmssl reads {FORMAT_VERSION}")
        try:
            towers = {}
            for m, t in d["towers"].items():
                kind = t.pop("kind", "transformers")  # files before the image towers have no kind
                if kind not in TOWER_KINDS:
                    raise ValueError(f"{source}: tower {m!r} has unknown kind {kind!r}")
                towers[m] = TOWER_KINDS[kind](**t)
            return cls(
                modalities=tuple(d["modalities"]),
                towers=towers,
                shared=bool(d["shared"]),
                embed_dim=int(d["embed_dim"]),
                init_temperature=float(d["init_temperature"]),
                matryoshka_dims=tuple(int(x) for x in d.get("matryoshka_dims", ())),  # older files have none
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: malformed dual encoder config ({e})") from None

    @classmethod
    def load(cls, path: str | Path) -> DualEncoderConfig:
        """The config of a model directory written by ``DualEncoder.save_pretrained``."""
        cfg_file = Path(path) / CONFIG_NAME
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: not an mmssl dual encoder directory (no {CONFIG_NAME})")
        return cls.from_dict(read_json_object(cfg_file), str(cfg_file))


def build_tower(config: AnyTowerConfig, embed_dim: int, tokenizer=None) -> nn.Module:
    """A new tower of the config's kind, projecting to ``embed_dim``."""
    if type(config) in OPEN_CLIP_TOWERS:
        return OPEN_CLIP_TOWERS[type(config)].build(config, embed_dim)
    return TextTower.build(config, embed_dim, tokenizer)


class DualEncoder(nn.Module):
    """Two towers (one module if ``shared``) mapping each modality to a shared D-dim space."""

    def __init__(self, config: DualEncoderConfig, towers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.config = config
        self.towers = nn.ModuleDict({m: towers[m] for m in config.modalities})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def build(cls, config: DualEncoderConfig, tokenizers: dict[str, object] | None = None) -> DualEncoder:
        """New towers from their configs; ``tokenizers`` are needed for from-scratch towers."""
        tokenizers = tokenizers or {}
        first, second = config.modalities
        tcfg = config.towers[first]
        if config.shared:  # one backbone for both sides: long enough for the longer one
            longest = max(config.towers[m].max_length for m in config.modalities)
            tcfg = replace(tcfg, max_length=longest)
        tower = build_tower(tcfg, config.embed_dim, tokenizers.get(first))
        other = tower if config.shared else build_tower(config.towers[second], config.embed_dim, tokenizers.get(second))
        return cls(config, {first: tower, second: other})

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # ---- encoding -------------------------------------------------------------------------------

    def encode(self, modality: str, batch: dict[str, Tensor], normalize: bool = True) -> Tensor:
        """Tokenized batch of one modality -> (B, D) embeddings."""
        emb = self.towers[modality](**batch)
        return nn.functional.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, batch: dict[str, Tensor], normalize: bool = True) -> Tensor:
        return self.encode("text", batch, normalize)

    def encode_image(self, batch: dict[str, Tensor], normalize: bool = True) -> Tensor:
        return self.encode("image", batch, normalize)

    def is_image(self, modality: str) -> bool:
        return isinstance(self.config.towers[modality], ImageTowerConfig)

    def preparer(self, modality: str, train: bool = False):
        """A picklable function: a list of items (texts, or images as paths/bytes/PIL) -> a CPU batch.
        ``train`` applies an image tower's training augmentation. Each text modality is truncated at
        its own ``max_length``, also when the towers are shared."""
        tower = self.towers[modality]
        if isinstance(tower, ImageTower):
            return tower.preparer(train)
        return tower.preparer(getattr(self.config.towers[modality], "max_length", None))

    def prepare(self, modality: str, items: list, train: bool = False) -> dict[str, Tensor]:
        """``items`` as a batch on the model's device."""
        return {k: v.to(self.device) for k, v in self.preparer(modality, train)(items).items()}

    def tokenize(self, modality: str, texts: list[str]) -> dict[str, Tensor]:
        """Texts as a batch on the model's device (``prepare`` for a text modality)."""
        if self.is_image(modality):
            raise ValueError(f"modality {modality!r} is images: use prepare()")
        return self.prepare(modality, texts)

    def lock(self, modality: str, unlock_norms: bool = False) -> None:
        """LiT: freeze one tower (its projection included), optionally leaving its norms trainable."""
        if self.config.shared:
            raise ValueError("a shared tower cannot be locked on one side")
        self.towers[modality].lock(unlock_norms)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in every tower (each tower once when shared)."""
        for tower in {id(t): t for t in self.towers.values()}.values():
            tower.set_grad_checkpointing(enable)

    def forward(
        self, batch_a: dict[str, Tensor] | None, batch_b: dict[str, Tensor] | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """Both sides of a batch of pairs -> (emb_a (B, D), emb_b (B, D), logit_scale.exp()).

        A side given as None is not embedded (None back): its embeddings come from elsewhere (the
        cache of a locked tower). What ``DistributedDataParallel`` wraps: one forward per step."""
        a, b = self.config.modalities
        emb_a = self.encode(a, batch_a) if batch_a is not None else None
        emb_b = self.encode(b, batch_b) if batch_b is not None else None
        return emb_a, emb_b, self.logit_scale.exp()

    def batches(self, modality: str, items: list, batch_size: int = 128):
        """``(positions, batch on the device)`` over ``items`` in batches of ``batch_size``: texts in
        length order (batches carry little padding), images in input order."""
        if self.is_image(modality):
            order = list(range(len(items)))
        else:
            order = sorted(range(len(items)), key=lambda i: len(items[i]))
        prep = self.preparer(modality)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, {k: v.to(self.device) for k, v in prep([items[i] for i in idx]).items()}

    @torch.inference_mode()
    def embed(
        self, modality: str, items: list, batch_size: int = 128, normalize: bool = True,
        precision: str = "fp32", progress=None,
    ) -> Tensor:  # fmt: skip
        """Embed many texts or images: (N, D) float32 on CPU, in the input order, in eval mode and
        under ``precision``'s autocast; ``progress(n)`` is called after each batch of n items."""
        out = torch.empty(len(items), self.config.embed_dim)
        with eval_mode(self), autocast(precision, self.device):
            for idx, batch in self.batches(modality, items, batch_size):
                out[idx] = self.encode(modality, batch, normalize).float().cpu()
                if progress is not None:
                    progress(len(idx))
        return out

    # ---- persistence ----------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model directory atomically (see the module docstring for the layout)."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_dir(path) as tmp:
            heads = {"logit_scale": self.logit_scale.detach().reshape(1).cpu()}
            for modality in self._own_towers(self.config):
                tower = self.towers[modality]  # a shared tower (and its projection) is saved once
                if not isinstance(tower, TextTower):  # open_clip towers: one weights file of their own
                    tower.save_pretrained(tmp / "towers" / modality)
                    continue
                heads[f"{modality}.proj.weight"] = tower.proj.weight.detach().cpu().contiguous()
                tower.backbone.save_pretrained(tmp / "towers" / modality)
                tower.tokenizer.save_pretrained(tmp / "towers" / modality)
            save_file(heads, str(tmp / HEADS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> DualEncoder:
        """Load a directory written by ``save_pretrained``; clear errors for anything missing."""
        from transformers import AutoTokenizer

        path = Path(path)
        config = DualEncoderConfig.load(path)
        towers: dict[str, nn.Module] = {}
        for modality in cls._own_towers(config):
            tower_dir = path / "towers" / modality
            if not tower_dir.is_dir():
                raise FileNotFoundError(f"{tower_dir}: missing (the {modality} tower of {path})")
            saved = config.towers[modality]
            if type(saved) in OPEN_CLIP_TOWERS:
                towers[modality] = OPEN_CLIP_TOWERS[type(saved)].from_pretrained(tower_dir, saved, config.embed_dim)
                continue
            for name in ("config.json", "tokenizer.json"):
                if not (tower_dir / name).is_file():
                    raise FileNotFoundError(f"{tower_dir / name}: missing (the {modality} tower of {path})")
            tcfg = TowerConfig(**{**asdict(saved), "init": str(tower_dir)})
            with loading(tower_dir):
                tokenizer = AutoTokenizer.from_pretrained(tower_dir, trust_remote_code=False)
            tower = TextTower.build(tcfg, config.embed_dim, tokenizer)
            tower.config = config.towers[modality]  # remember where it originally came from
            towers[modality] = tower
        if config.shared:
            towers[config.modalities[1]] = towers[config.modalities[0]]
        model = cls(config, towers)
        heads_file = path / HEADS_NAME
        if not heads_file.is_file():
            raise FileNotFoundError(f"{heads_file}: missing (projections and logit_scale)")
        heads = load_safetensors(heads_file)
        with torch.no_grad():
            model.logit_scale.copy_(heads["logit_scale"][0])
            for modality in cls._own_towers(config):
                if not isinstance(model.towers[modality], TextTower):
                    continue
                key = f"{modality}.proj.weight"
                weight = heads.get(key)
                if weight is None or weight.shape != model.towers[modality].proj.weight.shape:
                    got = None if weight is None else tuple(weight.shape)
                    raise ValueError(
                        f"{heads_file}: {key} is {got}, expected {tuple(model.towers[modality].proj.weight.shape)}"
                    )
                model.towers[modality].proj.weight.copy_(weight)
        return model.to(device)

    @staticmethod
    def _own_towers(config: DualEncoderConfig) -> tuple[str, ...]:
        """The modalities whose tower is stored: both, or only the first when shared."""
        return config.modalities[:1] if config.shared else config.modalities
