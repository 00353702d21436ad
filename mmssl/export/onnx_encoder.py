"""Run an ONNX export of a dual encoder: texts (and images) -> L2-normalized embeddings with
onnxruntime, the ``tokenizers`` library and Pillow, without importing torch.

An export directory (``mmssl export --format onnx``, ``mmssl.export.onnx``):

    DIR/onnx_encoder.json            format version, modalities, embed dim, the source model's
                                     fingerprint, the quantization, and per modality its graph and
                                     tokenizer, max length and pad id (text), or its preprocessing
                                     steps (image: ``mmssl.export.onnx_images``)
    DIR/<tower>.onnx                 one graph per tower (one for a shared tower): text
                                     input_ids, attention_mask (B, T) int64 -> (B, D) float32, pooling,
                                     projection and L2 normalization inside; image pixels
                                     (B, 3, H, W) float32 -> (B, D)
    DIR/tokenizers/<tower>.json      a text tower's fast tokenizer (``tokenizers`` format)

``OnnxEncoder`` has the part of ``DualEncoder``'s interface the index layer uses (``config``'s
modalities and embed dim, ``device``, ``is_image``, ``embed``), so an export can stand wherever a
model directory is named: ``load_encoder(path)`` opens either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmssl.io import read_json_object
from mmssl.tokens import clip_chars

CONFIG_NAME = "onnx_encoder.json"
FORMAT_VERSION = 1
INPUTS = ("input_ids", "attention_mask")
IMAGE_INPUT = "pixels"


@dataclass(frozen=True)
class OnnxTowerSpec:
    """One text modality's side of an export: its graph and tokenizer (relative paths), how it truncates."""

    graph: str
    tokenizer: str
    max_length: int
    pad_id: int


@dataclass(frozen=True)
class OnnxImageSpec:
    """One image modality's side of an export: its graph and its preprocessing steps."""

    graph: str
    preprocess: list[dict]
    kind: str = "image"


def _spec(d: dict) -> OnnxTowerSpec | OnnxImageSpec:
    return OnnxImageSpec(**d) if d.get("kind") == "image" else OnnxTowerSpec(**d)


@dataclass(frozen=True)
class OnnxEncoderConfig:
    """What ``onnx_encoder.json`` holds."""

    modalities: tuple[str, str]
    embed_dim: int
    towers: dict[str, OnnxTowerSpec | OnnxImageSpec]
    source_sha256: str
    quantize: str | None = None  # "int8": dynamic int8 quantization of the weights
    parity: dict | None = None  # measured at export: max |onnx - torch| and min cosine per modality

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"format_version": FORMAT_VERSION, "kind": "onnx_encoder", **d, "modalities": list(self.modalities)}

    @classmethod
    def load(cls, path: str | Path) -> OnnxEncoderConfig:
        file = Path(path) / CONFIG_NAME
        d = read_json_object(file)
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{file}: format_version {d.get('format_version')!r}, this mmssl reads {FORMAT_VERSION}")
        try:
            towers = {m: _spec(t) for m, t in d["towers"].items()}
            config = cls(
                modalities=tuple(d["modalities"]),
                embed_dim=int(d["embed_dim"]),
                towers=towers,
                source_sha256=str(d["source_sha256"]),
                quantize=d.get("quantize"),
                parity=d.get("parity"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{file}: malformed ONNX export config ({e})") from None
        missing = [m for m in config.modalities if m not in towers]
        if len(config.modalities) != 2 or missing:
            raise ValueError(f"{file}: field 'towers' must hold both modalities {config.modalities}")
        return config


def is_onnx_export(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def same_model(path: str | Path, sha256: str) -> bool:
    """Whether the model directory ``path`` is the model of fingerprint ``sha256``, or an fp32 ONNX
    export of it (its embeddings equal the model's to ``PARITY_TOLERANCE``; int8 ones do not)."""
    from mmssl.io import model_fingerprint

    if model_fingerprint(path) == sha256:
        return True
    if not is_onnx_export(path):
        return False
    config = OnnxEncoderConfig.load(path)
    return config.quantize is None and config.source_sha256 == sha256


def load_encoder(path: str | Path, device: str = "cpu", threads: int | None = None):
    """The encoder a model directory holds: an ONNX export (``OnnxEncoder``, CPU) or an mmssl dual
    encoder (``DualEncoder`` on ``device``, in eval mode). ``threads``: CPU threads it computes on
    (default: ``OMP_NUM_THREADS`` when set, as torch reads it, else every core)."""
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
    if is_onnx_export(path):
        return OnnxEncoder.from_dir(path, threads)
    import torch

    from mmssl.models import DualEncoder
    from mmssl.runtime import resolve_device

    if threads:
        torch.set_num_threads(threads)

    return DualEncoder.from_pretrained(path, device=resolve_device(device)).eval()


class OnnxEncoder:
    """An export's towers under onnxruntime (CPU), each text truncated and padded as the tower's
    own tokenizer call does in mmssl (``TextPrep``), texts batched in length order; images
    preprocessed as the tower's evaluation transform does (``onnx_images.ImagePreprocess``)."""

    device = "cpu"

    def __init__(self, path: Path, config: OnnxEncoderConfig, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path, self.config = path, config
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._sessions, self._tokenizers, self._images = {}, {}, {}
        for modality, spec in config.towers.items():
            if spec.graph not in self._sessions:
                self._sessions[spec.graph] = ort.InferenceSession(
                    str(path / spec.graph), options, providers=["CPUExecutionProvider"]
                )
            if isinstance(spec, OnnxImageSpec):
                from mmssl.export.onnx_images import ImagePreprocess

                self._images[modality] = ImagePreprocess(spec.preprocess)
                continue
            # one per modality, its truncation set once: searches on several threads never change it
            tokenizer = Tokenizer.from_file(str(path / spec.tokenizer))
            tokenizer.no_padding()
            tokenizer.enable_truncation(spec.max_length)
            self._tokenizers[modality] = tokenizer

    @classmethod
    def from_dir(cls, path: str | Path, threads: int | None = None) -> OnnxEncoder:
        path = Path(path)
        config = OnnxEncoderConfig.load(path)
        for spec in config.towers.values():
            for name in (spec.graph, *([spec.tokenizer] if isinstance(spec, OnnxTowerSpec) else [])):
                if not (path / name).is_file():
                    raise FileNotFoundError(f"{path / name}: missing from the ONNX export (named in {CONFIG_NAME})")
        return cls(path, config, threads)

    def is_image(self, modality: str) -> bool:
        return isinstance(self.config.towers[modality], OnnxImageSpec)

    def tokenize(self, modality: str, texts: list[str]) -> dict[str, np.ndarray]:
        """Texts -> {"input_ids", "attention_mask"} (B, T) int64, right-padded to the longest, truncated
        at the tower's max length (special tokens included), as the tower's ``TextPrep`` makes them."""
        spec = self.config.towers[modality]
        encodings = self._tokenizers[modality].encode_batch(clip_chars(texts, spec.max_length))
        width = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), width), spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, modality: str, batch: dict[str, np.ndarray]) -> np.ndarray:
        """A tokenized batch (or {"pixels": (B, 3, H, W)}) -> (B, D) normalized float32 embeddings."""
        session = self._sessions[self.config.towers[modality].graph]
        names = (IMAGE_INPUT,) if self.is_image(modality) else INPUTS
        return session.run(None, {k: batch[k] for k in names})[0]

    def embed(
        self, modality: str, items: list, batch_size: int = 128, normalize: bool = True,
        precision: str = "fp32", progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """(N, D) float32 embeddings of ``items`` (texts, or images: paths, bytes, PIL images) in the
        input order, as ``DualEncoder.embed`` (the graph normalizes: ``normalize=False`` is not
        available; ``precision`` is the export's)."""
        if modality not in self.config.towers:
            raise ValueError(f"modality {modality!r}: the export embeds {' and '.join(self.config.modalities)}")
        if not normalize:
            raise ValueError(f"{self.path}: an ONNX export's graphs return normalized embeddings only")
        out = np.empty((len(items), self.config.embed_dim), dtype=np.float32)
        image = self.is_image(modality)
        order = list(range(len(items))) if image else sorted(range(len(items)), key=lambda i: len(items[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            chunk = [items[i] for i in idx]
            batch = {IMAGE_INPUT: self._images[modality](chunk)} if image else self.tokenize(modality, chunk)
            out[idx] = self.encode(modality, batch)
            if progress is not None:
                progress(len(idx))
        return out


def describe(path: str | Path) -> str:
    """One line on an export (for logs and the app's about panel)."""
    config = OnnxEncoderConfig.load(path)
    kind = "an int8 ONNX export" if config.quantize == "int8" else "an ONNX export"
    lengths = ", ".join(
        f"{m} {t.max_length} tokens" if isinstance(t, OnnxTowerSpec) else f"{m} images"
        for m, t in config.towers.items()
    )
    return f"{kind} ({config.embed_dim} dims; {lengths}) of the model {config.source_sha256[:12]}…"


def write_config(path: Path, config: OnnxEncoderConfig) -> None:
    (path / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
