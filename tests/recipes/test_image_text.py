"""Image-text dual encoders: towers in the dual encoder and training (LiT and its cached text
embeddings, several captions, workers, resume, bad images, clustered batches)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmssl import cli
from mmssl.commands import train as main
from mmssl.models import DualEncoder
from mmssl.models.clip_text import ClipTextConfig, ClipTextTower
from tests.recipes.image_helpers import (
    MICRO,
    losses,
    micro_model,
    pictures,
    train_config,
)

# ---- the model -----------------------------------------------------------------------------------


def test_image_text_model_saves_and_loads_with_the_same_embeddings(tmp_path):
    torch.manual_seed(0)
    model = micro_model(embed_dim=48)  # not the config's 64: both towers get a projection
    images = model.embed("image", pictures())
    texts = model.embed("text", ["a red box", "a blue box"])
    assert images.shape == texts.shape == (2, 48)
    assert torch.allclose(images.norm(dim=1), torch.ones(2))
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "dual_encoder.json").read_text())
    assert saved["towers"]["image"]["kind"] == "open_clip_image" and saved["towers"]["text"]["kind"] == "open_clip_text"
    loaded = DualEncoder.from_pretrained(tmp_path / "m")
    assert torch.allclose(loaded.embed("image", pictures()), images, atol=1e-6)
    assert torch.allclose(loaded.embed("text", ["a red box", "a blue box"]), texts, atol=1e-6)
    assert loaded.config.towers["image"].augment == "heavy"  # the training choice is remembered
    with pytest.raises(ValueError, match="is images"):
        loaded.tokenize("image", ["not text"])


def test_batches_of_images_equal_open_clips_preprocessing_image_by_image():
    model = micro_model()
    images = pictures() * 3
    batch = model.preparer("image")(images)["pixels"]
    reference = torch.stack([model.towers["image"].preprocess_val(im) for im in images])
    assert batch.shape == (6, 3, 32, 32) and torch.equal(batch, reference)  # normalized as a batch, same values


def test_open_clip_text_tower_takes_the_text_weights_of_a_local_checkpoint(tmp_path):
    import open_clip

    from mmssl.models.image import _register

    torch.manual_seed(0)
    clip = open_clip.create_model(_register(MICRO))
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    tower = ClipTextTower.build(ClipTextConfig(MICRO, weights=str(tmp_path / "clip.pt")))
    tokens = open_clip.get_tokenizer(_register(MICRO))(["a small red circle", "two blue squares"])
    with torch.no_grad():
        assert torch.allclose(tower(tokens), clip.encode_text(tokens), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ClipTextTower.build(ClipTextConfig(MICRO, weights=str(tmp_path / "missing.pt")))
    torch.save({"visual.proj": torch.zeros(1)}, tmp_path / "no-text.pt")
    with pytest.raises(ValueError, match="no text-tower weights"):
        ClipTextTower.build(ClipTextConfig(MICRO, weights=str(tmp_path / "no-text.pt")))


@pytest.mark.parametrize("text_cfg", [{}, {"pool_type": "last", "no_causal_mask": True}])
def test_batches_drop_padding_only_where_the_embeddings_stay_the_same(text_cfg, tmp_path):
    from mmssl.models.image import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / f"{MICRO}.json").read_text())
    cfg["text_cfg"].update(text_cfg, context_length=24)
    path = tmp_path / "micro-text.json"
    path.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    tower = ClipTextTower.build(ClipTextConfig(str(path))).eval()
    texts = ["a small red circle left of a large blue square", "apple", "two blue squares"]
    full = tower.tokenizer(texts)  # (3, 24)
    ids = tower.preparer()(texts)["input_ids"]
    longest = int((full != 0).sum(1).max())
    # CLIP's layout (causal mask, pooled at the end-of-text token) ignores padding: it is dropped.
    # Pooling the last position of unmasked tokens does not: the full context is kept.
    assert ids.shape == ((3, longest) if not text_cfg else (3, 24))
    assert tower.trims_padding is not bool(text_cfg)
    mask = getattr(tower.text, "attn_mask", None)
    with torch.no_grad():
        assert torch.allclose(tower(ids), tower(full), atol=1e-5)
        own = int((full[0] != 0).sum())  # a batch of the one text: shorter still
        assert torch.allclose(tower(full[:1, :own]), tower(full[:1]), atol=1e-5) or text_cfg
    assert mask is None or tower.text.attn_mask is mask  # the full causal mask is back after a trimmed call


# ---- training ------------------------------------------------------------------------------------


def test_training_fits_the_pairs_and_validation_scores_both_directions(shapes, tmp_path):
    out = tmp_path / "run"
    config = train_config(shapes, out, max_steps=40, eval_every=40, augment="none", batch_size=32, lr=2e-3)
    assert main(config) == 0
    curve = losses(out)
    assert np.mean(curve[-5:]) < np.mean(curve[:5]) - 0.3  # in-batch matching is being learned
    valid = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split")]
    keys = {"text_to_image_recall@1", "image_to_text_recall@10", "mean_recall"}
    assert keys <= set(valid[-1]) and valid[-1]["n"] == 40
    assert (out / "best" / "dual_encoder.json").is_file()  # mean_recall picked a best model


def test_batches_are_the_same_with_worker_processes_and_after_a_resume(shapes, tmp_path, monkeypatch):
    from conftest import fit_or_crash

    from mmssl.engine import Trainer
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    def run(out, crash_at=None, **overrides):
        torch.manual_seed(0)
        config = train_config(shapes, out, eval_every=0, **overrides)
        task = IMAGE_TEXT.build_task(config, torch.device("cpu"))
        fit_or_crash(Trainer(task, config.engine, torch.device("cpu")), monkeypatch, crash_at)

    run(tmp_path / "inline")
    run(tmp_path / "workers", workers=2)
    assert losses(tmp_path / "inline") == losses(tmp_path / "workers")  # augmentation seeded per batch
    # Workers run ahead of the step: the checkpoint must keep the position of the batches trained on.
    run(tmp_path / "resumed", crash_at=5, workers=2)
    run(tmp_path / "resumed", resume=True)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "inline")


def test_lit_locks_the_text_tower_and_unlock_norms_frees_only_its_norms(shapes, tmp_path):
    def weights(out):
        return DualEncoder.from_pretrained(out / "final").state_dict()

    torch.manual_seed(0)
    start = micro_model(embed_dim=64)
    assert main(train_config(shapes, tmp_path / "lit", lock_text=True, max_steps=3)) == 0
    assert main(train_config(shapes, tmp_path / "norms", lock_text=True, unlock_norms=True, max_steps=3)) == 0
    lit, norms = weights(tmp_path / "lit"), weights(tmp_path / "norms")
    init = {k: v for k, v in start.state_dict().items()}
    text_keys = [k for k in lit if k.startswith("towers.text.")]
    assert text_keys and all(torch.equal(lit[k], init[k]) for k in text_keys)  # same seed, same init, locked
    assert any(not torch.equal(lit[k], init[k]) for k in lit if k.startswith("towers.image."))
    changed = {k for k in text_keys if not torch.equal(norms[k], init[k])}
    assert changed and all(".ln" in k or "ln_final" in k for k in changed)


def test_bad_images_are_skipped_and_counted_or_stop_the_run_before_any_step(shapes, tmp_path):
    import logging

    from mmssl.recipes.image_pairs import load_image_pairs

    data = tmp_path / "mixed"
    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    lines = [json.dumps({**r, "file_name": str(shapes / r["file_name"])}) for r in rows]
    (tmp_path / "truncated.png").write_bytes((shapes / rows[-1]["file_name"]).read_bytes()[:60])
    bad = [
        {"file_name": str(tmp_path / "truncated.png"), "text": "a broken file", "split": "train"},
        {"file_name": str(tmp_path / "gone.png"), "text": "a missing file", "split": "train"},
    ]
    data.mkdir()
    (data / "metadata.jsonl").write_text("\n".join(lines + [json.dumps(b) for b in bad]) + "\n")
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("mmssl").addHandler(handler)
    try:
        pairs = load_image_pairs(str(data), "train")
    finally:
        logging.getLogger("mmssl").removeHandler(handler)
    assert len(pairs) == sum(r["split"] == "train" for r in rows)  # the two bad ones left out
    assert "skipped 2 bad images (1 missing, 1 unreadable)" in messages[0] and "truncated.png" in messages[0]
    assert main(train_config(data, tmp_path / "skip", max_steps=2)) == 0
    code = cli.main(
        ["train", "--task", "image-text", "--train", str(data), "--out", str(tmp_path / "raise")]
        + ["--image-model", MICRO, "--on-bad", "raise", "--max-steps", "2", "--batch-size", "16"]
    )
    assert code == 2 and not (tmp_path / "raise" / "checkpoints").exists()


def test_text_tower_from_an_mlm_pretraining_directory(shapes, code_corpus, tmp_path):
    argv = ["pretrain", "mlm", "--data", code_corpus, "--out", str(tmp_path / "pre"), "--preset", "tiny"]
    argv += ["--vocab-size", "300", "--block-size", "32", "--max-steps", "0", "--device", "cpu"]
    assert cli.main(argv) == 0  # max-steps 0: the randomly initialized tower, saved as a pretraining output
    init = tmp_path / "pre" / "final"
    assert main(train_config(shapes, tmp_path / "run", text_init=str(init), max_steps=2, max_text_length=24)) == 0
    model = DualEncoder.from_pretrained(tmp_path / "run" / "final")
    assert model.config.embed_dim == 64  # the tiny preset's hidden size: the text tower's own space
    assert model.config.towers["text"].init == str(init) and model.embed("text", ["a red circle"]).shape == (1, 64)


def test_lit_with_minilm_keeps_the_sentence_embedding_space(shapes, tmp_path):
    from mmssl.recipes.text_code_eval import sentence_encoder

    out = tmp_path / "lit"
    assert main(train_config(shapes, out, text_init="minilm", lock_text=True, max_steps=2)) == 0
    model = DualEncoder.from_pretrained(out / "final")
    assert model.config.embed_dim == 384
    sentences = ["a small red circle left of a large blue square", "fruit", "a handwritten digit 7"]
    reference = sentence_encoder("minilm", torch.device("cpu")).embed("text", sentences)
    assert torch.allclose(model.embed("text", sentences), reference, atol=1e-5)


def test_locked_text_embeddings_are_cached_and_give_the_loss_of_running_the_tower(shapes, tmp_path):
    from mmssl.recipes.contrastive import ContrastiveTask
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    config = train_config(shapes, tmp_path / "lit", text_init="minilm", lock_text=True, augment="none")
    task = IMAGE_TEXT.build_task(config, torch.device("cpu"))
    assert set(task.cached) == {"a"} and task.cached["a"].shape == (len(task.data), 384)
    slow = ContrastiveTask(task.model, task.loss, task.data, cache_locked=False)
    indices = torch.arange(16)
    fast_batch, slow_batch = task.batch(indices), slow.batch(indices)
    assert set(fast_batch["a"]) == {"index"} and "input_ids" in slow_batch["a"]
    slow_batch["b"] = fast_batch["b"]  # the same augmented images on both sides
    task.model.eval()
    fast_loss = task.training_forward(fast_batch)[0]["contrastive_loss"]
    slow_loss = slow.training_forward(slow_batch)[0]["contrastive_loss"]
    torch.testing.assert_close(fast_loss, slow_loss, atol=1e-5, rtol=1e-5)


def with_captions(shapes, out):
    """The shapes set with a ``captions`` field: each image's caption and a second one of its own."""
    out.mkdir()
    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    with (out / "metadata.jsonl").open("w") as f:
        for r in rows:
            r["file_name"] = str((shapes / r["file_name"]).resolve())
            r["captions"] = [r["text"], f"picture number {r['file_name'][-9:-4]}"]
            f.write(json.dumps(r) + "\n")
    return out


def test_several_captions_are_drawn_per_pair_and_cached_lit_gives_the_loss_of_running_the_tower(shapes, tmp_path):
    from mmssl.recipes.contrastive import ContrastiveTask
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    data = with_captions(shapes, tmp_path / "captioned")
    config = train_config(data, tmp_path / "lit", text_init="minilm", lock_text=True, augment="none")
    task = IMAGE_TEXT.build_task(config, torch.device("cpu"))
    captions = task.data.captions
    assert len(captions.texts) == 2 * len(task.data) and task.cached["a"].shape == (len(captions.texts), 384)
    indices = torch.arange(16)
    batch = task.batcher(indices, seed=7)
    drawn = batch["a"]["index"]
    assert torch.equal(drawn, task.batcher(indices, seed=7)["a"]["index"])  # the batch's seed decides
    assert ((drawn == captions.starts[indices]) | (drawn == captions.starts[indices] + 1)).all()
    seeds = torch.stack([task.batcher(indices, seed=s)["a"]["index"] for s in range(20)])
    assert (seeds != captions.starts[indices]).any() and (seeds == captions.starts[indices]).any()  # both drawn
    assert torch.equal(batch["ids"], captions.ids[drawn])
    slow = ContrastiveTask(task.model, task.loss, task.data, cache_locked=False)
    slow_batch = slow.batcher(indices, seed=7)  # the same draw, run through the tower
    assert slow.batcher.prep_a is not None and "input_ids" in slow_batch["a"]
    slow_batch["b"] = batch["b"]
    task.model.eval()
    fast_loss = task.training_forward(batch)[0]["contrastive_loss"]
    slow_loss = slow.training_forward(slow_batch)[0]["contrastive_loss"]
    torch.testing.assert_close(fast_loss, slow_loss, atol=1e-5, rtol=1e-5)


def test_cluster_batches_group_similar_captions_and_a_run_resumes_only_with_the_same_groups(shapes, tmp_path):
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    config = train_config(shapes, tmp_path / "tas", text_init="minilm", lock_text=True, cluster_batches=8)
    task = IMAGE_TEXT.build_task(config, torch.device("cpu"))
    groups = task.batch_groups()
    assert groups.shape == (len(task.data),) and 1 < len(groups.unique()) <= len(task.data) // 8
    text = task.cached["a"]  # (N, D) the locked tower's caption embeddings, normalized
    cosine, same = text @ text.T, groups[:, None] == groups[None, :]
    off_diagonal = ~torch.eye(len(groups), dtype=torch.bool)
    assert cosine[same & off_diagonal].mean() > cosine[~same].mean() + 0.1  # a group's captions are alike
    for i, j in zip(*torch.nonzero(task.data.ids[:, None] == task.data.ids[None, :], as_tuple=True)):
        assert groups[i] == groups[j]  # one caption, one group
    assert main(config) == 0  # the run trains on whole groups and records them
    state = torch.load(tmp_path / "tas" / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)
    assert state["sampler"]["groups"]
    random = train_config(shapes, tmp_path / "tas", text_init="minilm", lock_text=True, resume=True, max_steps=8)
    with pytest.raises(ValueError, match="this run's random batches"):
        main(random)  # resumed with random batches: refused, not silently other batches
