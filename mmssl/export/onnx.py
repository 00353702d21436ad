"""Export a dual encoder's towers to ONNX: each as one graph from token ids (or pixels) to the
normalized embedding (``mmssl export --format onnx``; the layout is in ``mmssl.export.onnx_encoder``).

``export_onnx(model_dir, out, quantize=None)`` traces each transformers tower (backbone, pooling,
projection, L2 normalization) with ``torch.onnx.export`` (batch and sequence axes dynamic, eager
attention so the graph holds plain ops), and each image tower (open_clip's or torchvision's, its
projection and the normalization) from pixels (batch axis dynamic) with its evaluation
preprocessing written beside it (``onnx_images``); optionally quantizes the weights to int8 with
onnxruntime's dynamic quantization, and checks the export against PyTorch on sample texts and
images before the directory appears (written atomically): fp32 must agree to
``PARITY_TOLERANCE``; an int8 export's agreement (cosine) is measured and recorded, since int8 is an
approximation by design.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from mmssl.console import get_logger
from mmssl.export.onnx_encoder import (
    IMAGE_INPUT,
    INPUTS,
    OnnxEncoder,
    OnnxEncoderConfig,
    OnnxImageSpec,
    OnnxTowerSpec,
    write_config,
)
from mmssl.io import atomic_dir

log = get_logger("export")

PARITY_TOLERANCE = 1e-4  # max |onnx - torch| over the embeddings' entries, fp32 export
INT8_MIN_COSINE = 0.95  # below this an int8 export is refused: quantization broke the tower
OPSET = 17
SAMPLE_TEXTS = (
    "Return the number of items in the queue.",
    "def add(a, b):\n    return a + b",
    "parse a date string such as 2024-01-31 into a datetime",
    "x",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n" * 8,
)


class NormalizedTower(nn.Module):
    """A tower and the L2 normalization after it: what one exported graph computes (token ids and
    attention mask, or pixels, in; (B, D) out)."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.tower(*inputs), dim=-1)


def export_onnx(
    model_dir: str | Path, out: str | Path, quantize: str | None = None, sample_texts=SAMPLE_TEXTS
) -> OnnxEncoderConfig:
    """Write ``out`` (atomically) from the mmssl model directory ``model_dir``; returns its config."""
    from mmssl.export import load_text_model, sample_images
    from mmssl.io import model_fingerprint

    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize {quantize!r}: choose int8 (or leave it out)")
    model = load_text_model(model_dir, "--format onnx", images=True)
    graphs: dict[int, str] = {}  # a shared tower is one graph
    towers = {}
    with atomic_dir(out) as tmp:
        (tmp / "tokenizers").mkdir()
        for modality in model.config.modalities:
            tower = model.towers[modality]
            if model.is_image(modality):
                towers[modality] = export_image_tower(tower, modality, tmp, quantize)
                continue
            if id(tower) not in graphs:
                graphs[id(tower)] = name = modality
                if not tower.tokenizer.is_fast:
                    raise ValueError(
                        f"{model_dir}: tower {modality!r} has a slow tokenizer; ONNX export needs a fast one"
                    )
                tower.tokenizer.backend_tokenizer.save(str(tmp / "tokenizers" / f"{name}.json"))
                trace(tower, model.tokenize(modality, list(sample_texts)), tmp / f"{name}.onnx")
                if quantize == "int8":
                    quantize_int8(tmp / f"{name}.onnx")
            name = graphs[id(tower)]
            pad = tower.tokenizer.pad_token_id
            towers[modality] = OnnxTowerSpec(
                graph=f"{name}.onnx",
                tokenizer=f"tokenizers/{name}.json",
                max_length=int(model.config.towers[modality].max_length),
                pad_id=int(pad if pad is not None else 0),
            )
        config = OnnxEncoderConfig(
            modalities=tuple(model.config.modalities),
            embed_dim=model.config.embed_dim,
            towers=towers,
            source_sha256=model_fingerprint(model_dir),
            quantize=quantize,
        )
        samples = {m: sample_images() if model.is_image(m) else list(sample_texts) for m in model.config.modalities}
        config = replace(config, parity=check_parity(model, OnnxEncoder(tmp, config), samples, quantize))
        write_config(tmp, config)
    log.info("wrote %s: %s", out, ", ".join(f"{m} {p}" for m, p in config.parity.items()))
    return config


def export_image_tower(tower: nn.Module, modality: str, folder: Path, quantize: str | None) -> OnnxImageSpec:
    """Trace an image tower (pixels -> normalized embedding, batch axis dynamic) into FOLDER/MODALITY.onnx."""
    from mmssl.export import sample_images
    from mmssl.export.onnx_images import image_steps

    steps = image_steps(tower.preprocess_val)
    path = folder / f"{modality}.onnx"
    pixels = tower.preparer(train=False)(sample_images()[:2])["pixels"]
    export_graph(tower, {IMAGE_INPUT: pixels}, path, {IMAGE_INPUT: {0: "batch"}})
    if quantize == "int8":
        quantize_int8(path)
    return OnnxImageSpec(graph=path.name, preprocess=steps)


def trace(tower: nn.Module, batch: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.onnx.export`` of the normalized text tower, batch and sequence axes dynamic."""
    backbone = tower.backbone
    previous = backbone.config._attn_implementation
    backbone.set_attn_implementation("eager")  # sdpa's mask building does not trace into ONNX ops
    try:
        dynamic = {k: {0: "batch", 1: "tokens"} for k in INPUTS}
        export_graph(tower, {k: batch[k] for k in INPUTS}, path, dynamic)
    finally:
        backbone.set_attn_implementation(previous)


def export_graph(tower: nn.Module, inputs: dict[str, torch.Tensor], path: Path, dynamic: dict) -> None:
    """One graph from ``inputs`` (named, in the tower's argument order) to the normalized embedding."""
    # The tracer's warnings (the legacy exporter, shape-dependent branches it keeps as traced) are
    # about graphs with control flow; the parity check after the export is what tells if this one works.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            NormalizedTower(tower).eval(),
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=["embedding"],
            dynamic_axes={**dynamic, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantization of the graph's weights (onnxruntime's), in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    root = logging.getLogger()  # onnxruntime advises "pre-processing" on the root logger each time
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    # per channel, 7-bit range: cosine to fp32 0.98-0.996 on MiniLM, against 0.73-0.92 per tensor
    try:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    finally:
        root.setLevel(level)
    tmp.replace(path)


def check_parity(model, encoder: OnnxEncoder, samples: dict[str, list], quantize: str | None) -> dict:
    """Per modality: max |onnx - torch| and the least cosine on its ``samples`` (texts or images);
    raises past the tolerance."""
    from mmssl.export import agreement

    out = {}
    for modality in model.config.modalities:
        items = samples[modality]
        out[modality] = agreement(encoder.embed(modality, items), model.embed(modality, items))
        diff, cosine = out[modality]["max_abs_diff"], out[modality]["min_cosine"]
        if quantize is None and diff > PARITY_TOLERANCE:
            raise ValueError(f"ONNX export of the {modality} tower differs from PyTorch by {diff:.2e}")
        if quantize == "int8" and cosine < INT8_MIN_COSINE:
            raise ValueError(f"int8 export of the {modality} tower: cosine {cosine:.4f} to PyTorch; not kept")
    return out
