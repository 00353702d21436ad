"""Image-text evaluation: recall both ways, zero-shot and linear probes, class tasks from each
set's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmssl import cli
from tests.recipes.image_helpers import (
    micro_model,
)

# ---- evaluation ----------------------------------------------------------------------------------


def test_eval_reports_recall_zero_shot_and_probes_next_to_the_untrained_model(shapes, tmp_path, capsys):
    torch.manual_seed(0)
    micro_model(embed_dim=64).save_pretrained(tmp_path / "m")
    argv = ["eval", "--task", "image-text", "--model", str(tmp_path / "m"), "--data", str(shapes)]
    assert cli.main(argv + ["--json", "--untrained", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 48 and 0 <= out["text_to_image_recall@1"] <= out["text_to_image_recall@10"] <= 1
    assert set(out["zero_shot"]) == {"left_colour", "left_shape", "right_colour", "right_shape"}
    assert out["zero_shot"]["left_colour"]["classes"] == 4 and out["zero_shot"]["left_shape"]["n"] == 48
    assert set(out["linear_probe"]) == set(out["zero_shot"])
    assert all(0 <= v <= 1 for v in out["linear_probe"].values())
    # saved with seed 0 and rebuilt with seed 0: the untrained baseline is this very model
    assert out["baselines"]["untrained"]["mean_recall"] == pytest.approx(out["mean_recall"])


def test_class_tasks_follow_the_metadata_of_each_set():
    from mmssl.recipes.image_text_eval import class_tasks

    emoji = class_tasks([{"group": "Food & Drink"}, {"group": "Animals & Nature"}, {"group": "Component"}])
    assert (
        emoji[0].classes == ["animals & nature", "food & drink"] and emoji[0].label_of({"group": "Component"}) is None
    )
    assert "an emoji of food & drink" in emoji[0].prompts[1]
    digits = class_tasks([{"label": 3}, {"label": 7}])
    assert digits[0].classes == ["3", "7"] and digits[0].label_of({"label": 7}) == 1
    objects = [
        {"size": "small", "colour": "red", "shape": "circle"},
        {"size": "large", "colour": "blue", "shape": "square"},
    ]
    shapes = {t.name: t for t in class_tasks([{"objects": objects}])}
    left = shapes["left_colour"]
    assert left.label_of({"objects": objects}) == left.classes.index("red")
    red = left.prompts[left.classes.index("red")]
    assert len(red) == 144 and all(p.split(" left of ")[0].split()[2] == "red" for p in red)


def test_recall_with_repeated_captions_counts_every_matching_image():
    from mmssl.evaluate import recall_at_k_groups

    rng = np.random.default_rng(0)
    cands, queries = rng.normal(size=(30, 8)), rng.normal(size=(12, 8))
    cand_groups, query_groups = rng.integers(0, 12, 30), np.arange(12)
    cand_groups[:12] = np.arange(12)  # every query has at least one right candidate
    got = recall_at_k_groups(queries, cands, query_groups, cand_groups, ks=(1, 3))
    ranks = []
    for q, g in zip(queries, query_groups):  # brute force: best right candidate, ties against
        s = cands @ q
        best = s[cand_groups == g].max()
        ranks.append(1 + int(((s >= best) & (cand_groups != g)).sum()))
    assert got == {"recall@1": np.mean(np.array(ranks) <= 1), "recall@3": np.mean(np.array(ranks) <= 3)}
    tie = recall_at_k_groups(np.ones((1, 2)), np.ones((2, 2)), np.array([0]), np.array([1, 0]), ks=(1,))
    assert tie["recall@1"] == 0.0  # a wrong candidate scoring the same ranks first
    with pytest.raises(ValueError, match="without any candidate"):
        recall_at_k_groups(np.ones((1, 2)), np.ones((1, 2)), np.array([5]), np.array([0]))
