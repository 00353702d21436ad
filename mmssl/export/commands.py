"""``mmssl export``: write a trained dual encoder in a format other tools load (``ExportConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmssl.console import setup_logging


@dataclass(frozen=True)
class ExportConfig:
    """Export a model directory (from mmssl train) for use outside mmssl."""

    model: str = field(metadata={"help": "the mmssl model directory to export"})
    out: str = field(metadata={"help": "the directory to write (replaced atomically with --overwrite)"})
    format: Literal["onnx", "sentence-transformers", "open_clip"] = field(
        default="onnx",
        metadata={
            "help": "onnx: one graph per tower, token ids (or pixels) -> normalized embedding; sentence-transformers: "
            "a directory SentenceTransformer(OUT) loads (two towers: encode_query / encode_document); "
            "open_clip: an image-text model with open_clip towers as a directory "
            "open_clip.create_model_and_transforms('local-dir:OUT') loads"
        },
    )
    quantize: Literal["none", "int8"] = field(
        default="none", metadata={"help": "onnx: int8: dynamic int8 quantization of the weights"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out"})


def main(config: ExportConfig) -> int:
    setup_logging()
    from mmssl.export.onnx import SAMPLE_TEXTS, export_onnx
    from mmssl.export.onnx_encoder import CONFIG_NAME
    from mmssl.io import check_output

    out = Path(config.out)
    if out.resolve() == Path(config.model).resolve():
        raise ValueError(f"--out {out}: is the model directory itself")
    from mmssl.export.open_clip import MARKER

    # --overwrite replaces an export (ONNX, sentence-transformers' modules.json, mmssl's open_clip
    # record), never another folder
    check_output(out, config.overwrite, "an export", markers=(CONFIG_NAME, "modules.json", MARKER))
    if config.format != "onnx" and config.quantize != "none":
        raise ValueError("--quantize: only with --format onnx")

    if config.format == "open_clip":
        from mmssl.export.open_clip import export_open_clip

        parity = export_open_clip(config.model, out)
        print(f"{out}: open_clip export of {config.model} (local-dir:{out}); against mmssl {said(parity)}")
        return 0
    if config.format == "sentence-transformers":
        from mmssl.export.sentence_transformers import export_sentence_transformers

        parity = export_sentence_transformers(config.model, out, SAMPLE_TEXTS)
        print(f"{out}: sentence-transformers export of {config.model}; against mmssl {said(parity)}")
        return 0
    exported = export_onnx(config.model, out, quantize=None if config.quantize == "none" else config.quantize)
    print(f"{out}: ONNX export of {config.model} ({config.quantize} weights); against PyTorch {said(exported.parity)}")
    return 0


def said(parity: dict) -> str:
    """Parity per modality, as one line."""
    return "; ".join(
        f"{m}: max |diff| {p['max_abs_diff']:.1e}, min cosine {p['min_cosine']:.4f}" for m, p in parity.items()
    )


@dataclass(frozen=True)
class PushConfig:
    """Upload a model directory (or an export) to the Hugging Face hub (huggingface_hub's upload_folder)."""

    model: str = field(
        metadata={"help": "the directory to upload: an mmssl model (with its README.md card) or an export"}
    )
    repo: str = field(metadata={"help": "the hub repository, namespace/name (created if missing)"})
    private: bool = field(default=False, metadata={"help": "create the repository private"})
    dry_run: bool = field(default=False, metadata={"help": "list what would be uploaded, and upload nothing"})


def push(config: PushConfig) -> int:
    from mmssl.export.push import files_to_push, push_folder

    files = files_to_push(config.model, config.repo)
    if config.dry_run:
        total = sum(size for _, size in files)
        print(f"would upload {len(files)} files ({total:,} bytes) of {config.model} to {config.repo}:")
        for rel, size in files:
            print(f"  {rel}  {size:,}")
        return 0
    url = push_folder(config.model, config.repo, private=config.private)
    print(f"uploaded {len(files)} files of {config.model} to {url}")
    return 0
