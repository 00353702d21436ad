"""An image-text model with open_clip towers as an open_clip model directory (``export_open_clip``).

    export_open_clip("runs/clip/final", "runs/clip-open_clip")
    # then, anywhere open_clip is installed (no mmssl, no network):
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:runs/clip-open_clip")
    tokenizer = open_clip.get_tokenizer("local-dir:runs/clip-open_clip")

The directory is open_clip's own ``local-dir:`` layout (what its hub uploads hold):
``open_clip_config.json`` (``model_cfg``: the image tower's ``vision_cfg``, the text tower's
``text_cfg``, the dual encoder's ``embed_dim``; ``preprocess_cfg``: the image tower's resize, mean
and std) and ``open_clip_model.safetensors`` (CLIP's own layout: ``visual.*``, the text weights at
the top level, ``logit_scale``; a text tower with parts CLIP's layout lacks is written as a
``CustomTextCLIP``, ``text.*``), with a README.md and ``mmssl_export.json`` (the source and the
parity check). ``config/NAME.json`` (NAME: the folder's name) is the bare model config, for tools
that take a model name and a checkpoint path (clip-retrieval, open_clip's training scripts):

    open_clip.add_model_config("OUT/config")
    model, _, preprocess = open_clip.create_model_and_transforms(NAME, pretrained="OUT/open_clip_model.safetensors")

Where the dual encoder's embedding size differs from a tower's own, mmssl's projection (a bias-free
linear map after the tower) is folded into the tower's last projection (a ViT's ``proj``, the text ``text_projection``):
``x @ P @ W.T`` is ``x @ (P @ W.T)``.

Before the directory appears it is loaded back with open_clip and checked against mmssl on sample
captions and images (``agreement``: cosine >= 0.9999 and max |difference| <= 1e-4 of the normalized
embeddings). Models whose towers open_clip cannot hold (a torchvision or transformers tower) are
refused, saying which tower and what would work.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmssl.export import sample_images
from mmssl.export.onnx import SAMPLE_TEXTS
from mmssl.io import atomic_dir

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
MARKER = "mmssl_export.json"  # what was exported, from where, and its parity: marks the folder as an export
MIN_COSINE = 0.9999
MAX_DIFF = 1e-4


def _fold(projection, extra: torch.nn.Linear) -> None:
    """Fold ``extra`` (mmssl's bias-free Linear after the tower) into ``projection``: a (width, dim)
    parameter, or an nn.Linear(width -> dim), in place."""
    w = extra.weight.detach()  # (embed, dim)
    with torch.no_grad():
        if isinstance(projection, torch.nn.Parameter):
            projection.data = projection.data @ w.T  # (width, embed)
        else:
            projection.weight.data = w @ projection.weight.data  # (embed, width)
            if projection.bias is not None:
                projection.bias.data = w @ projection.bias.data
            projection.out_features = w.shape[0]


def _visual_projection(visual, name: str):
    proj = getattr(visual, "proj", None)
    if isinstance(proj, (torch.nn.Parameter, torch.nn.Linear)):
        return proj
    raise ValueError(
        f"{name}: its image tower ({type(visual).__name__}) has no final projection to fold mmssl's into; "
        "train it with --embed-dim equal to its open_clip config's embed_dim to export it"
    )


def open_clip_parts(model, name: str) -> tuple[dict, dict]:
    """(open_clip_config.json's content, the state dict) of a dual encoder with open_clip towers."""
    import copy

    from mmssl.models.clip_text import CLIP_TEXT_PREFIXES, ClipTextTower
    from mmssl.models.image import ImageTower

    image, text = model.towers["image"], model.towers["text"]
    if not isinstance(image, ImageTower) or image.saved_config_file != CONFIG:
        raise ValueError(f"{name}: the image tower is not an open_clip one (torchvision towers stay in mmssl)")
    if not isinstance(text, ClipTextTower):
        raise ValueError(
            f"{name}: the text tower is a transformers model, not open_clip's text transformer; "
            "export it with --format onnx or sentence-transformers"
        )
    vision_cfg, text_cfg = image.saved_config["model_cfg"], text.saved_config["model_cfg"]
    if bool(vision_cfg.get("quick_gelu", False)) != bool(text_cfg.get("quick_gelu", False)):
        raise ValueError(f"{name}: the towers' configs differ in quick_gelu; open_clip builds both with one")
    visual, text_module = copy.deepcopy(image.visual), copy.deepcopy(text.text)
    if not isinstance(image.proj, torch.nn.Identity):
        _fold(_visual_projection(visual, name), image.proj)
    if not isinstance(text.proj, torch.nn.Identity):
        projection = getattr(text_module, "text_projection", None)
        if projection is None:
            raise ValueError(f"{name}: its text tower has no text_projection to fold mmssl's into")
        _fold(projection, text.proj)
    text_state = {k: v for k, v in text_module.state_dict().items() if k != "attn_mask"}  # a rebuilt buffer
    custom = not all(k.startswith(CLIP_TEXT_PREFIXES) for k in text_state)  # parts CLIP's own layout lacks
    model_cfg = {
        "embed_dim": int(model.config.embed_dim),
        "quick_gelu": bool(vision_cfg.get("quick_gelu", False)),
        "vision_cfg": vision_cfg["vision_cfg"],
        "text_cfg": text_cfg["text_cfg"],
    }
    if custom:
        model_cfg["custom_text"] = True
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state |= {(f"text.{k}" if custom else k): v for k, v in text_state.items()}
    state["logit_scale"] = model.logit_scale.detach().reshape(())
    config = {"model_cfg": model_cfg, "preprocess_cfg": image.saved_config["preprocess_cfg"]}
    return config, {k: v.detach().cpu().contiguous() for k, v in state.items()}


def parity(model, folder: Path, texts: list[str], images: list) -> dict:
    """open_clip's embeddings of the export in ``folder`` against mmssl's, per modality."""
    import open_clip

    from mmssl.export import agreement

    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device="cpu")
    loaded.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        got_text = loaded.encode_text(tokenizer(texts), normalize=True).numpy()
        got_image = loaded.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True).numpy()
    want_text = model.embed("text", texts).numpy()
    want_image = model.embed("image", images).numpy()
    return {"text": agreement(got_text, want_text), "image": agreement(got_image, want_image)}


def export_open_clip(model_dir: str | Path, out: str | Path) -> dict:
    """Write ``out`` (atomically: nothing appears unless open_clip loads it and it agrees with
    mmssl); returns the parity per modality."""
    from safetensors.torch import save_file

    from mmssl.models import DualEncoder

    name = str(model_dir)
    model = DualEncoder.from_pretrained(model_dir).eval()
    if set(model.config.modalities) != {"text", "image"}:
        raise ValueError(
            f"{name}: --format open_clip exports image-text models; this one embeds {model.config.modalities}"
        )
    config, state = open_clip_parts(model, name)
    with atomic_dir(out) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "config").mkdir()
        (tmp / "config" / f"{Path(out).name}.json").write_text(json.dumps(config["model_cfg"], indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS))
        result = parity(model, tmp, list(SAMPLE_TEXTS), sample_images())  # loaded as open_clip loads it
        for modality, p in result.items():
            if p["min_cosine"] < MIN_COSINE or p["max_abs_diff"] > MAX_DIFF:
                raise RuntimeError(
                    f"{name}: open_clip's {modality} embeddings of the export differ from mmssl's "
                    f"(min cosine {p['min_cosine']:.6f}, max |diff| {p['max_abs_diff']:.2e}): not written"
                )
        (tmp / "README.md").write_text(card(name, Path(out).name, config, result))
        record = {"format": "open_clip", "source": str(Path(model_dir).resolve()), "parity": result}
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return result


def card(name: str, folder: str, config: dict, result: dict) -> str:
    cfg = config["model_cfg"]
    lines = [
        "# open_clip export",
        "",
        f"Exported by mmssl from `{Path(name).name}`: an image-text dual encoder, {cfg['embed_dim']}-d embeddings.",
        "",
        "```python",
        "import open_clip",
        'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:PATH")',
        'tokenizer = open_clip.get_tokenizer("local-dir:PATH")',
        "# or by name, for tools that take a model name and a checkpoint (clip-retrieval):",
        'open_clip.add_model_config("PATH/config")',
        f'model, _, preprocess = open_clip.create_model_and_transforms("{folder}", '
        'pretrained="PATH/open_clip_model.safetensors")',
        "```",
        "",
        "Checked against mmssl before it was written (normalized embeddings): "
        + "; ".join(
            f"{m}: min cosine {p['min_cosine']:.6f}, max |diff| {p['max_abs_diff']:.1e}" for m, p in result.items()
        ),
        "",
        "The source model's own README.md (its model card) says what it was trained on and how it scores.",
        "",
    ]
    return "\n".join(lines)
