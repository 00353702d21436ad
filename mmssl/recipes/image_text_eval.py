"""``mmssl eval --task image-text``: retrieval both ways, zero-shot classification, linear probes,
optionally next to the same model untrained (``--untrained``).

Shape legend: N images, C classes, P prompts of a class, D embedding size.

- Retrieval: recall@1/5/10 text->image and image->text over the split (an image is right for every
  caption equal to its own: the digits and shapes sets repeat captions).
- Zero-shot: classes described in words, CLIP-style; each class embedding is the normalized mean
  of its prompts' embeddings (prompt ensembling), an image takes the class it scores highest
  against. The classes come from the records' metadata (``mmssl data make-images`` writes them):
    emoji   ``group`` (Unicode's emoji groups: "food & drink", ...), prompts from TEMPLATES
    digits  ``label`` 0-9 of "a handwritten digit N" captions, prompts from DIGIT_TEMPLATES
    shapes  ``objects``: the colour and the shape of the left and of the right object; a class's
            prompts are all the captions the set's grammar allows with that value (e.g. every
            caption whose left object is red), so that the task asks about one attribute alone
  ``majority`` is the accuracy of always answering the test split's commonest class.
- Linear probe: a logistic regression on frozen image embeddings (before normalization) of the
  train split (standardized), tested on the split; C chosen from PROBE_CS on a seeded fifth of the
  train split.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import torch

from mmssl.evaluate import linear_probe, zero_shot_accuracy
from mmssl.models import DualEncoder
from mmssl.recipes.base import KS, timed
from mmssl.recipes.image_pairs import embed_pairs, load_image_pairs, retrieval_scores

TEMPLATES = ("{}", "an emoji of {}", "a {} emoji", "an icon of {}")
DIGIT_TEMPLATES = ("a handwritten digit {}", "the number {}", "a drawing of the digit {}", "{}")
PROBE_CS = (0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class ClassTask:
    name: str
    classes: list[str]
    prompts: list[list[str]]  # per class
    label_of: object  # record meta -> class index or None (not in this task)


def class_tasks(metas: list[dict]) -> list[ClassTask]:
    """The zero-shot / linear-probe tasks the records' metadata supports (see the module docstring)."""
    tasks = []
    if any(m.get("group") for m in metas):
        groups = sorted({m["group"] for m in metas if m.get("group") and m["group"] != "Component"})
        names = [g.lower() for g in groups]
        index = {g: i for i, g in enumerate(groups)}
        prompts = [[t.format(n) for t in TEMPLATES] for n in names]
        tasks.append(ClassTask("emoji_group", names, prompts, lambda m: index.get(m.get("group"))))
    elif any("objects" in m for m in metas):
        from mmssl.data.images import COLOURS, SHAPES, SIZES

        objects = list(itertools.product(SIZES, COLOURS, SHAPES))
        captions = [
            (left, right, f"a {' '.join(left)} left of a {' '.join(right)}")
            for left, right in itertools.product(objects, objects)
        ]
        for side, attr, values in (
            ("left", "colour", list(COLOURS)),
            ("left", "shape", list(SHAPES)),
            ("right", "colour", list(COLOURS)),
            ("right", "shape", list(SHAPES)),
        ):
            pos = {"colour": 1, "shape": 2}[attr]
            prompts = [[c for lo, ro, c in captions if (lo if side == "left" else ro)[pos] == v] for v in values]
            obj = 0 if side == "left" else 1

            def label(m, obj=obj, attr=attr, values=tuple(values)):
                return values.index(m["objects"][obj][attr]) if "objects" in m else None

            tasks.append(ClassTask(f"{side}_{attr}", values, prompts, label))
    elif metas and all(isinstance(m.get("label"), int) for m in metas):
        labels = sorted({m["label"] for m in metas})
        prompts = [[t.format(d) for t in DIGIT_TEMPLATES] for d in labels]
        tasks.append(ClassTask("digit", [str(d) for d in labels], prompts, lambda m, ls=labels: ls.index(m["label"])))
    return tasks


def _labels(task: ClassTask, pairs) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the images in the task, their class) for ``pairs``."""
    got = [(i, task.label_of(r.meta)) for i, r in enumerate(pairs.candidates)]
    got = [(i, y) for i, y in got if y is not None]
    return np.array([i for i, _ in got], dtype=np.int64), np.array([y for _, y in got], dtype=np.int64)


@torch.inference_mode()
def zero_shot(model: DualEncoder, task: ClassTask, images: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    text_mod = model.config.modalities[0]
    flat = [p for ps in task.prompts for p in ps]
    emb = model.embed(text_mod, flat)  # (sum P, D)
    classes, start = [], 0
    for ps in task.prompts:
        classes.append(torch.nn.functional.normalize(emb[start : start + len(ps)].mean(0), dim=0))
        start += len(ps)
    acc = zero_shot_accuracy(images, torch.stack(classes), labels, ks=(1,))
    majority = float(np.bincount(labels).max() / len(labels))
    return {"top1": acc["top1"], "majority": majority, "classes": len(task.classes), "n": len(labels)}


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0) -> float:
    """Linear-probe accuracy with C chosen on a seeded fifth of the training features (standardized
    with the training mean and deviation: L-BFGS converges on them)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    cut = len(order) // 5
    val, fit = order[:cut], order[cut:]
    best = max(PROBE_CS, key=lambda c: linear_probe(train_x[fit], train_y[fit], train_x[val], train_y[val], C=c))
    return linear_probe(train_x, train_y, test_x, test_y, C=best)


def evaluate_model(
    model: DualEncoder, data: str, split: str | None = "test", train_split: str | None = "train", batch_size: int = 128
) -> dict:
    """Retrieval, zero-shot and (with ``train_split``) linear-probe scores of ``model`` on ``data``."""
    pairs = load_image_pairs(data, split)
    if len(pairs) < 2:
        raise ValueError(f"{data}: {len(pairs)} usable image-caption pairs in split {split!r}; need at least 2")
    raw, texts = embed_pairs(model, pairs, batch_size, normalize_images=False)  # raw: the probe's features
    images = torch.nn.functional.normalize(raw, dim=-1)
    result: dict = {**retrieval_scores(images, texts, pairs.ids), "n": len(pairs), "captions": len(texts)}
    tasks = class_tasks([r.meta for r in pairs.candidates])
    result["zero_shot"] = {}
    for task in tasks:
        idx, y = _labels(task, pairs)
        result["zero_shot"][task.name] = zero_shot(model, task, images[idx], y)
    result["linear_probe"] = {}
    if train_split and tasks:
        image_mod = model.config.modalities[1]
        train = load_image_pairs(data, train_split)
        train_x = model.embed(image_mod, train.candidates, batch_size, normalize=False).numpy()
        test_x = raw.numpy()
        for task in tasks:
            tr_idx, tr_y = _labels(task, train)
            te_idx, te_y = _labels(task, pairs)
            if len(np.unique(tr_y)) >= 2 and len(te_y):
                result["linear_probe"][task.name] = probe(train_x[tr_idx], tr_y, test_x[te_idx], te_y)
    return result


def untrained_like(model_dir: str, seed: int = 0) -> DualEncoder:
    """The model a saved dual encoder started from: its config, freshly initialized under ``seed``
    (pretrained towers such as MiniLM come back as they were loaded, before any training)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from mmssl.models.dual import DualEncoderConfig
    from mmssl.models.text import TowerConfig

    path = Path(model_dir)
    config = DualEncoderConfig.load(path)
    tokenizers = {
        m: AutoTokenizer.from_pretrained(path / "towers" / m, trust_remote_code=False)
        for m, t in config.towers.items()
        if isinstance(t, TowerConfig) and not t.init
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DualEncoder.build(config, tokenizers)


def eval_command(config) -> int:
    """Score ``config.model`` (and, with ``untrained``, its initialization) on ``config.data``."""
    from mmssl.runtime import resolve_device

    if not config.model:
        raise ValueError("--model is required for --task image-text")
    if config.dims:
        raise ValueError("--dims: scored for --task text-code only (an image index takes --dim)")
    device = resolve_device(config.device)
    rows = {"model": DualEncoder.from_pretrained(config.model, device)}
    if config.untrained:
        rows["untrained"] = untrained_like(config.model).to(device)
    split, train_split = config.partition or None, config.train_partition or None
    scores = {
        name: timed(lambda m=m: evaluate_model(m, config.data, split, train_split, config.batch_size))
        for name, m in rows.items()
    }
    if config.json:
        out = {**scores["model"], "data": config.data, "partition": config.partition}
        if "untrained" in scores:
            out["baselines"] = {"untrained": scores["untrained"]}
        print(json.dumps(out, indent=2))
        return 0
    first = scores["model"]
    print(f"{first['n']} images, {first['captions']} distinct captions from {config.data} (split {config.partition})")
    print(f"{'model':<10} {'T>I R@1':>8} {'R@5':>7} {'R@10':>7} {'I>T R@1':>8} {'R@5':>7} {'R@10':>7}")
    for name, r in scores.items():
        t2i = [r[f"text_to_image_recall@{k}"] for k in KS]
        i2t = [r[f"image_to_text_recall@{k}"] for k in KS]
        print(f"{name:<10} {t2i[0]:8.4f} {t2i[1]:7.4f} {t2i[2]:7.4f} {i2t[0]:8.4f} {i2t[1]:7.4f} {i2t[2]:7.4f}")
    for name, r in scores.items():
        for task, z in r["zero_shot"].items():
            probe_acc = r["linear_probe"].get(task)
            probe_text = f", linear probe {probe_acc:.4f}" if probe_acc is not None else ""
            print(
                f"{name:<10} {task}: zero-shot top-1 {z['top1']:.4f} over {z['classes']} classes "
                f"(majority class {z['majority']:.4f}){probe_text}"
            )
    return 0
