"""docs/examples/siglip_recipe.py, the worked example of docs/ARCHITECTURE.md: a new recipe in
under 50 lines, found by ``--task module:NAME``, trains with the SigLIP loss."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmssl import cli
from mmssl.losses import SigLIPLoss

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_example_is_short(monkeypatch):
    assert len((EXAMPLES / "siglip_recipe.py").read_text().splitlines()) < 50


def test_a_registered_recipe_trains_with_its_own_loss(tmp_path, monkeypatch, capsys):
    from mmssl.recipes import get_recipe
    from mmssl.recipes.config import TrainConfig

    monkeypatch.syspath_prepend(str(EXAMPLES))
    shapes = tmp_path / "shapes"
    assert (
        cli.main(["data", "make-images", "--kind", "shapes", "--out", str(shapes), "--count", "60", "--size", "32"])
        == 0
    )
    recipe = get_recipe("siglip_recipe:RECIPE")
    assert recipe is get_recipe("image-text-siglip")  # registered under its own name
    flags = dict(task="image-text-siglip", train=str(shapes), image_model="mmssl-vit-micro", batch_size=16,
                 valid_partition="test", device="cpu", out=str(tmp_path / "run"))  # fmt: skip
    torch.manual_seed(0)
    task = recipe.build_task(TrainConfig.from_flat(**flags), torch.device("cpu"))
    batch = task.batch(torch.arange(16))
    losses, _ = task.training_forward(batch)
    a = task.model.encode("text", batch["a"])
    b = task.model.encode("image", batch["b"])
    reference = SigLIPLoss(init_scale=10.0, init_bias=-10.0)(a, b)  # the sigmoid loss, not InfoNCE
    torch.testing.assert_close(losses["contrastive_loss"], reference)
    argv = ["train", "--task", "siglip_recipe:RECIPE", "--train", str(shapes), "--image-model", "mmssl-vit-micro",
            "--batch-size", "16", "--max-steps", "3", "--warmup-steps", "0", "--log-every", "1", "--eval-every", "0",
            "--valid-partition", "test", "--device", "cpu", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert cli.main(argv) == 0
    rows = [json.loads(x) for x in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert (tmp_path / "cli" / "final" / "dual_encoder.json").is_file()
