"""``mmssl export --format open_clip``: open_clip alone (a fresh process that never imports mmssl)
loads the export offline and embeds images and captions as the mmssl model does; models open_clip
cannot hold are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmssl import cli

CAPTIONS = ["a red circle", "a large blue square left of a small green triangle", "", "x" * 500]
# What an open_clip user runs: no mmssl import anywhere.
OPEN_CLIP_ONLY = """
import json, sys
import numpy as np, open_clip, torch
from PIL import Image
folder, out, by_name = sys.argv[1], sys.argv[2], sys.argv[5] == "name"
if by_name:  # as clip-retrieval does: a model name and a checkpoint path
    open_clip.add_model_config(folder + "/config")
    name = folder.rstrip("/").rsplit("/", 1)[1]
    weights = folder + "/open_clip_model.safetensors"
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
    tokenizer = open_clip.get_tokenizer(name)
else:
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
    tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
model.eval()
captions = json.loads(sys.argv[3])
images = [Image.open(p) for p in json.loads(sys.argv[4])]
with torch.no_grad():
    text = model.encode_text(tokenizer(captions), normalize=True).numpy()
    image = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True).numpy()
np.savez(out, text=text, image=image, scale=model.logit_scale.exp().item())
assert "mmssl" not in sys.modules
"""


def micro_clip(path, embed_dim: int):
    """A random two-tower open_clip model (ViT and text transformer, mmssl-vit-micro), saved."""
    import torch

    from mmssl.models import DualEncoder, DualEncoderConfig
    from mmssl.models.clip_text import ClipTextConfig
    from mmssl.models.image import ImageTowerConfig

    towers = {"text": ClipTextConfig("mmssl-vit-micro"), "image": ImageTowerConfig("mmssl-vit-micro")}
    torch.manual_seed(embed_dim)
    model = DualEncoder.build(DualEncoderConfig(("text", "image"), towers, embed_dim=embed_dim))
    return model.save_pretrained(path)


@pytest.mark.parametrize("embed_dim", [64, 32], ids=["its own size", "projected: folded into the towers"])
def test_open_clip_alone_loads_the_export_and_embeds_as_mmssl(tmp_path, embed_dim):
    from PIL import Image

    from mmssl.models import DualEncoder

    model_dir = micro_clip(tmp_path / "model", embed_dim)
    out = tmp_path / "open_clip"
    assert cli.main(["export", "--model", str(model_dir), "--out", str(out), "--format", "open_clip"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config",
        "mmssl_export.json",
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == embed_dim and config["preprocess_cfg"]["size"] in (32, [32, 32])
    paths = []
    rng = np.random.default_rng(0)
    for i in range(5):  # sizes and aspect ratios other than the tower's, so the resize and crop count
        path = tmp_path / f"image{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 13 * i, 60 - 5 * i, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    model = DualEncoder.from_pretrained(model_dir).eval()
    want = {
        modality: model.embed(modality, items).numpy() for modality, items in (("text", CAPTIONS), ("image", paths))
    }
    for how in ("local-dir", "name"):
        result = tmp_path / f"{how}.npz"
        argv = [sys.executable, "-c", OPEN_CLIP_ONLY, str(out), str(result), json.dumps(CAPTIONS), json.dumps(paths)]
        subprocess.run([*argv, how], check=True, timeout=300)
        got = np.load(result)
        for modality, ref in want.items():
            assert got[modality].shape == ref.shape
            assert np.abs(got[modality] - ref).max() <= 1e-4 and (got[modality] * ref).sum(1).min() >= 0.9999, how
        assert got["scale"] == pytest.approx(model.logit_scale.exp().item(), rel=1e-6)


def test_models_open_clip_cannot_hold_are_refused_and_nothing_is_written(tiny_model, tmp_path, capsys):
    import torch

    from mmssl.models import DualEncoder, DualEncoderConfig
    from mmssl.models.clip_text import ClipTextConfig
    from mmssl.models.image import ImageTowerConfig

    out = tmp_path / "out"
    assert cli.main(["export", "--model", str(tiny_model), "--out", str(out), "--format", "open_clip"]) != 0
    assert "exports image-text models" in capsys.readouterr().err and not out.exists()
    towers = {
        "text": ClipTextConfig("mmssl-vit-micro"),
        "image": ImageTowerConfig("torchvision:resnet18", image_size=32),
    }
    torch.manual_seed(0)
    resnet = DualEncoder.build(DualEncoderConfig(("text", "image"), towers, embed_dim=64))
    resnet.save_pretrained(tmp_path / "resnet")
    assert cli.main(["export", "--model", str(tmp_path / "resnet"), "--out", str(out), "--format", "open_clip"]) != 0
    assert "not an open_clip one" in capsys.readouterr().err and not out.exists()
    assert cli.main(["export", "--model", str(tiny_model), "--out", str(out), "--format", "open_clip",
                     "--quantize", "int8"]) != 0  # fmt: skip
    assert "--quantize: only with --format onnx" in capsys.readouterr().err
