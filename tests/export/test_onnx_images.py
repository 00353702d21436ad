"""``mmssl export --format onnx`` of image-text models: the torch-free preprocessing against the
towers' own, the image graph against PyTorch, and image search over an export without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmssl import cli

pytest.importorskip("onnxruntime")


def odd_images(tmp_path) -> list:
    """Files and in-memory images of several sizes, aspect ratios and modes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i, (w, h, mode) in enumerate(
        [(40, 40, "RGB"), (97, 31, "RGBA"), (23, 64, "L"), (300, 201, "P"), (32, 33, "RGB")]
    ):
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
        path = tmp_path / f"odd{i}.png"
        image.save(path)
        out += [str(path), image]
    return out


@pytest.mark.parametrize("model", ["mmssl-vit-micro", "torchvision:resnet18"])
def test_the_torch_free_preprocessing_equals_the_towers_own(tmp_path, model):
    """The slow reference: the tower's own preparer (torchvision transforms on Pillow images)."""
    from mmssl.export.onnx_images import ImagePreprocess, image_steps
    from mmssl.models.image import ImageTower, ImageTowerConfig

    tower = ImageTower.build(ImageTowerConfig(model, image_size=32 if model.startswith("torchvision") else None), 16)
    images = odd_images(tmp_path)
    want = tower.preparer(train=False)(images)["pixels"].numpy()
    got = ImagePreprocess(image_steps(tower.preprocess_val))(images)
    assert got.shape == want.shape == (len(images), 3, 32, 32) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-6


def test_unknown_preprocessing_is_refused_by_name():
    from torchvision import transforms

    from mmssl.export.onnx_images import ImagePreprocess, image_steps

    with pytest.raises(ValueError, match="ColorJitter is not exported"):
        image_steps(transforms.Compose([transforms.ColorJitter(0.4), transforms.ToTensor()]))
    with pytest.raises(ValueError, match="must end in ToTensor, Normalize"):
        image_steps(transforms.Compose([transforms.CenterCrop(8), transforms.ToTensor()]))
    with pytest.raises(ValueError, match="unknown step 'blur'"):
        ImagePreprocess([{"op": "blur"}])


@pytest.fixture(scope="module")
def lit_export(code_corpus, tmp_path_factory):
    """An image-text model (a tiny transformers text tower, a torchvision ResNet-18 at 32 px) trained
    two steps on shapes, its fp32 ONNX export, and an image index and a caption index of each."""
    root = tmp_path_factory.mktemp("onnx-images")
    shapes = root / "shapes"
    argv = ["data", "make-images", "--kind", "shapes", "--out", str(shapes), "--count", "60", "--size", "32"]
    assert cli.main(argv) == 0
    pre = ["pretrain", "mlm", "--data", code_corpus, "--out", str(root / "pre"), "--preset", "tiny"]
    assert cli.main([*pre, "--vocab-size", "300", "--block-size", "32", "--max-steps", "0", "--device", "cpu"]) == 0
    train = ["train", "--task", "image-text", "--train", str(shapes), "--out", str(root / "run"), "--device", "cpu"]
    train += ["--text-init", str(root / "pre" / "final"), "--image-model", "torchvision:resnet18", "--image-size", "32"]
    train += ["--max-steps", "2", "--batch-size", "8", "--eval-every", "0", "--valid-partition", "test"]
    assert cli.main([*train, "--max-text-length", "24"]) == 0
    model = root / "run" / "final"
    assert cli.main(["export", "--model", str(model), "--out", str(root / "onnx")]) == 0
    for name, source in (("torch", model), ("onnx", root / "onnx")):
        common = ["index", "build", "--model", str(source), "--data", str(shapes), "--device", "cpu"]
        assert cli.main([*common, "--out", str(root / f"captions-{name}"), "--modality", "text"]) == 0
        assert cli.main([*common, "--out", str(root / f"images-{name}")]) == 0
    return root, shapes


def test_an_image_tower_exports_as_a_graph_from_pixels_that_embeds_as_pytorch(lit_export, tmp_path):
    from mmssl.export.onnx_encoder import OnnxEncoder, OnnxEncoderConfig, OnnxImageSpec
    from mmssl.models import DualEncoder

    root, _ = lit_export
    config = OnnxEncoderConfig.load(root / "onnx")
    assert isinstance(config.towers["image"], OnnxImageSpec) and config.parity["image"]["max_abs_diff"] <= 1e-4
    encoder, model = OnnxEncoder.from_dir(root / "onnx"), DualEncoder.from_pretrained(root / "run" / "final").eval()
    assert encoder.is_image("image") and not encoder.is_image("text")
    images = odd_images(tmp_path)
    got, want = encoder.embed("image", images, batch_size=3), model.embed("image", images).numpy()
    assert np.abs(got - want).max() <= 1e-4 and (got * want).sum(1).min() >= 0.9999


def test_image_queries_search_an_export_built_index_as_the_model_does_without_torch(lit_export):
    root, shapes = lit_export
    query = next(iter(sorted((shapes / "test").glob("*.png"))))
    script = f"""
import json, sys
from indexing import SearchIndex
hits = SearchIndex.load({str(root / "captions-onnx")!r}).search([{str(query)!r}], k=5)[0]
print(json.dumps([[h.id, h.score] for h in hits]))
assert "torch" not in sys.modules, "the query path imported torch"
"""
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120)
    from indexing import SearchIndex

    onnx_hits = json.loads(result.stdout.strip().splitlines()[-1])
    torch_hits = SearchIndex.load(root / "captions-torch").search([str(query)], k=5)[0]
    assert [i for i, _ in onnx_hits] == [h.id for h in torch_hits]
    assert np.allclose([s for _, s in onnx_hits], [h.score for h in torch_hits], atol=1e-4)
    query = ["a large red circle"]
    by_text = [h.id for h in SearchIndex.load(root / "images-onnx").search(query, k=5)[0]]
    assert by_text == [h.id for h in SearchIndex.load(root / "images-torch").search(query, k=5)[0]]


def test_an_open_clip_text_tower_is_sent_to_the_open_clip_format(tmp_path, capsys):
    import torch

    from mmssl.models import DualEncoder, DualEncoderConfig
    from mmssl.models.clip_text import ClipTextConfig
    from mmssl.models.image import ImageTowerConfig

    towers = {"text": ClipTextConfig("mmssl-vit-micro"), "image": ImageTowerConfig("mmssl-vit-micro")}
    torch.manual_seed(0)
    DualEncoder.build(DualEncoderConfig(("text", "image"), towers, embed_dim=64)).save_pretrained(tmp_path / "m")
    assert cli.main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "ClipTextTower" in err and "--format open_clip" in err and not (tmp_path / "o").exists()
