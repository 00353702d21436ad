"""The training engine on a tiny text-code corpus: it learns, resumes exactly, and survives NaNs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmssl import cli
from mmssl.engine import Trainer
from mmssl.recipes.config import TrainConfig
from mmssl.recipes.text_code import RECIPE as TEXT_CODE
from tests.conftest import fit_or_crash

CPU = torch.device("cpu")


def tiny_config(corpus, out, **overrides) -> TrainConfig:
    base = dict(
        train=corpus,
        out=str(out),
        preset="tiny",
        vocab_size=400,
        embed_dim=32,
        batch_size=32,
        max_steps=40,
        warmup_steps=4,
        lr=2e-3,
        eval_every=0,
        save_every=0,
        log_every=1,
        max_code_length=48,
        max_text_length=24,
        eval_max_pairs=200,
        device="cpu",
    )
    return TrainConfig.from_flat(**{**base, **overrides})


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.slow
def test_training_lowers_loss_and_lifts_held_out_mrr_far_above_chance(code_corpus, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(code_corpus, tmp_path / "run")
    task = TEXT_CODE.build_task(config, CPU)
    test = TEXT_CODE.load_pairs(code_corpus, "test")
    before = TEXT_CODE.evaluate(task.model, test)
    result = Trainer(task, config.engine, CPU).fit()
    after = TEXT_CODE.evaluate(task.model, test)
    losses = [loss for _, loss in _losses(tmp_path / "run")]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    chance = sum(1 / r for r in range(1, len(test) + 1)) / len(test)  # MRR of a random ranking
    assert before["mrr"] < 3 * chance
    assert after["mrr"] > 6 * chance and after["mrr"] > before["mrr"] + 0.3
    assert result["metric"] == "mrr" and result["best"] >= result["valid"]["mrr"] - 1e-12
    for name in ("final", "best"):
        assert (tmp_path / "run" / name / "dual_encoder.json").is_file()
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


def test_resume_reproduces_the_uninterrupted_loss_curve(code_corpus, tmp_path, monkeypatch):
    def run(out, crash_at=None, resume=False):
        torch.manual_seed(0)
        config = tiny_config(code_corpus, out, max_steps=8, save_every=4, resume=resume, eval_every=0)
        task = TEXT_CODE.build_task(config, CPU)
        fit_or_crash(Trainer(task, config.engine, CPU), monkeypatch, crash_at)

    run(tmp_path / "a")
    run(tmp_path / "b", crash_at=6)  # dies after the step-4 checkpoint and two more logged steps
    assert [s for s, _ in _losses(tmp_path / "b")] == list(range(1, 7))
    run(tmp_path / "b", resume=True)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")  # exactly: same batches, dropout, optimizer


def test_resume_refuses_other_data(code_corpus, tmp_path):
    from tests.conftest import make_code_corpus

    config = tiny_config(code_corpus, tmp_path / "run", max_steps=2, save_every=2)
    task = TEXT_CODE.build_task(config, CPU)
    Trainer(task, config.engine, CPU).fit()
    other = make_code_corpus(tmp_path / "other.jsonl.gz", seed=1)
    config = config.replace(train=other, resume=True, max_steps=4)
    task = TEXT_CODE.build_task(config, CPU)
    with pytest.raises(ValueError, match="other data"):
        Trainer(task, config.engine, CPU).fit()


def test_non_finite_steps_are_skipped_and_counted(code_corpus, tmp_path):
    config = tiny_config(code_corpus, tmp_path / "run", max_steps=5)
    task = TEXT_CODE.build_task(config, CPU)
    real = task.training_forward
    calls = {"n": 0}

    def sometimes_nan(batch):
        calls["n"] += 1
        losses, report = real(batch)
        if calls["n"] == 1:
            losses = {"contrastive_loss": losses["contrastive_loss"] * float("nan")}
        return losses, report

    task.training_forward = sometimes_nan
    trainer = Trainer(task, config.engine, CPU)
    trainer.step = 2
    before = [p.detach().clone() for p in task.model.parameters()]
    assert trainer.train_step() is None  # the first call returns NaN
    assert all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))
    assert trainer.skipped == 1 and trainer.step == 3
    record = trainer.train_step()
    assert record is not None and math.isfinite(record["loss"])


def test_config_file_with_command_line_overrides(code_corpus, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'train = "{code_corpus}"\npreset = "tiny"\nbatch_size = 16\nlr = 0.001\n')
    config = cli.parse_config("train", ["--config", str(cfg), "--lr", "0.01", "--max-steps", "3"])
    assert (
        config.data.train,
        config.text_code.preset,
        config.engine.batch_size,
        config.engine.lr,
        config.engine.max_steps,
    ) == (
        code_corpus,
        "tiny",
        16,
        0.01,
        3,
    )
    yaml_cfg = tmp_path / "train.yaml"
    yaml_cfg.write_text("batch_size: 8\nnot_an_option: 1\n")
    with pytest.raises(ValueError, match="unknown option 'not_an_option'"):
        cli.parse_config("train", ["--config", str(yaml_cfg)])


def test_train_command_end_to_end_and_eval_json(code_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--train",
        code_corpus,
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--vocab-size",
        "300",
        "--batch-size",
        "16",
        "--max-steps",
        "3",
        "--eval-every",
        "0",
        "--embed-dim",
        "16",
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--model", str(out / "final"), "--data", code_corpus, "--bm25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"mrr", "recall@1", "recall@10", "n"} <= set(report) and report["n"] == 100
    assert 0 < report["baselines"]["bm25"]["mrr"] <= 1
    assert len(report["chunk_mrrs"]) == 1 and report["chunk_mrrs"][0] == pytest.approx(report["mrr"])
    before = (out / "metrics.jsonl").read_text()
    argv = ["train", "--train", code_corpus, "--batch-size", "100000", "--out", str(out), "--overwrite"]
    assert cli.main(argv) == 2
    assert "fewer than --batch-size" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before  # a refused run replaces nothing


def test_towers_train_with_dropout_from_the_first_step_to_the_last(code_corpus, tmp_path):
    """A tower loaded with from_pretrained arrives in eval mode; the run must not train its first
    steps without dropout and switch at the first validation (nor differ from a resumed copy)."""
    config = tiny_config(code_corpus, tmp_path / "run", max_steps=4, eval_every=2)
    task = TEXT_CODE.build_task(config, CPU)
    task.model.towers["text"].backbone.eval()  # as from_pretrained leaves it
    modes = []
    dropout = next(m for m in task.model.towers["text"].modules() if isinstance(m, torch.nn.Dropout))
    dropout.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    real = task.training_forward
    in_step = []

    def tracked(batch):
        in_step.append(len(modes))
        return real(batch)

    task.training_forward = tracked
    Trainer(task, config.engine, CPU).fit()
    during_steps = [modes[i] for i in in_step]  # the first dropout call of each step
    assert len(during_steps) == 4 and all(during_steps)
    assert not all(modes)  # validation ran in eval mode


def test_dropout_override_sets_every_layer_and_zero_makes_training_deterministic(code_corpus, tmp_path):
    config = tiny_config(code_corpus, tmp_path / "run", dropout=0.0)
    task = TEXT_CODE.build_task(config, CPU)
    layers = [m for m in task.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(m.p == 0.0 for m in layers)
    task.model.train()
    batch = task.model.tokenize("code", ["def f(x):\n    return x + 1"] * 2)
    assert torch.equal(task.model.encode("code", batch), task.model.encode("code", batch))
    with pytest.raises(ValueError, match="dropout"):
        TEXT_CODE.build_task(config.replace(dropout=1.5), CPU)


def test_shared_tower_truncates_each_side_at_its_own_length(code_corpus, tmp_path):
    config = tiny_config(code_corpus, tmp_path / "run", shared=True, max_text_length=8, max_code_length=40)
    task = TEXT_CODE.build_task(config, CPU)
    long = " ".join(["word"] * 100)
    assert task.model.tokenize("text", [long])["input_ids"].shape[1] == 8
    assert task.model.tokenize("code", [long])["input_ids"].shape[1] == 40
    task.model.save_pretrained(tmp_path / "m")
    from mmssl.models import DualEncoder

    loaded = DualEncoder.from_pretrained(tmp_path / "m")
    assert loaded.tokenize("text", [long])["input_ids"].shape[1] == 8
    assert loaded.tokenize("code", [long])["input_ids"].shape[1] == 40
    emb = loaded.embed("code", [long])
    assert torch.allclose(emb, task.model.embed("code", [long]), atol=1e-5)


def test_optimizer_is_fused_adamw_with_the_configured_betas_and_matches_the_reference_update():
    from mmssl.engine import EngineConfig
    from mmssl.engine.optimizer import make_optimizer, param_groups

    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)]
    copies = [torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)]
    for a, b in zip(layers, copies):
        b.load_state_dict(a.state_dict())
    config = EngineConfig(lr=1e-2, weight_decay=0.1, beta2=0.98, eps=1e-6)
    fused = make_optimizer([p for m in layers for p in m.parameters()], config, torch.device("cpu"))
    groups = param_groups([p for m in copies for p in m.parameters()], 0.1)
    reference = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    assert fused.defaults["fused"] and fused.defaults["betas"] == (0.9, 0.98) and fused.defaults["eps"] == 1e-6
    x, start = torch.randn(32, 16), layers[0].weight.detach().clone()
    for _ in range(5):
        for model, opt in ((layers, fused), (copies, reference)):
            opt.zero_grad()
            model[1](model[0](x)).pow(2).mean().backward()
            opt.step()
    for a, b in zip(layers, copies):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-6)
    assert (layers[0].weight - start).abs().max() > 1e-2  # the steps did move the weights


def test_the_final_model_records_the_steps_it_trained_and_what_stopped_it(code_corpus, tmp_path):
    from mmssl.engine.trainer import TRAINING_FILE

    config = tiny_config(code_corpus, tmp_path / "short", max_steps=40, max_minutes=1e-6)
    Trainer(TEXT_CODE.build_task(config, CPU), config.engine, CPU).fit()
    stopped = json.loads((tmp_path / "short" / "final" / TRAINING_FILE).read_text())
    assert stopped["step"] == 1 and stopped["max_steps"] == 40 and stopped["stopped_by"] == "--max-minutes 1e-06"
    config = tiny_config(code_corpus, tmp_path / "whole", max_steps=2)
    Trainer(TEXT_CODE.build_task(config, CPU), config.engine, CPU).fit()
    done = json.loads((tmp_path / "whole" / "final" / TRAINING_FILE).read_text())
    assert done["step"] == done["max_steps"] == 2 and "stopped_by" not in done and done["minutes"] >= 0


def test_param_groups_give_scaled_parameters_their_own_learning_rate():
    from mmssl.engine import EngineConfig
    from mmssl.engine.optimizer import make_optimizer

    emb, lin = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4)
    params = [*emb.parameters(), *lin.parameters()]
    opt = make_optimizer(params, EngineConfig(lr=1e-2, weight_decay=0.1), torch.device("cpu"), {emb.weight: 0.5})
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(emb.weight)]["lr"] == pytest.approx(5e-3) and by_param[id(emb.weight)]["weight_decay"] == 0.1
    assert by_param[id(lin.weight)]["lr"] == 1e-2 and by_param[id(lin.bias)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)  # each parameter once


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_embedding_lr_scale_slows_only_the_token_embeddings(code_corpus, tmp_path, scale):
    def moved(config):
        torch.manual_seed(0)
        task = TEXT_CODE.build_task(config, CPU)
        tower = task.model.towers["text"]
        before = {n: p.detach().clone() for n, p in tower.backbone.named_parameters()}
        Trainer(task, config.engine, CPU).fit()
        return {n: float((p.detach() - before[n]).abs().max()) for n, p in tower.backbone.named_parameters()}

    plain = moved(tiny_config(code_corpus, tmp_path / "plain", max_steps=6, shared=True))
    slow = moved(tiny_config(code_corpus, tmp_path / "slow", max_steps=6, shared=True, embedding_lr_scale=scale))
    word = "embeddings.word_embeddings.weight"
    if scale == 0.0:
        assert slow[word] == 0.0 and plain[word] > 0
    else:
        assert 0 < slow[word] < 0.5 * plain[word]
    layer = next(n for n in plain if "layer.0" in n and n.endswith("weight"))
    assert slow[layer] > 0.1 * plain[layer]  # the layers still learn at the full rate


def test_cluster_batches_make_each_batch_whole_groups_of_the_tasks_clusters(code_corpus, tmp_path):
    from mmssl.engine.sampling import GroupedSampler

    config = tiny_config(code_corpus, tmp_path / "tas", cluster_batches=8, max_steps=2)
    task = TEXT_CODE.build_task(config, CPU)  # an unlocked tower: its queries embedded once
    groups = task.batch_groups()
    assert groups.shape == (len(task.data),) and len(groups.unique()) == len(task.data) // 8
    same_query = task.data.ids[:, None] == task.data.ids[None, :]
    assert (groups[:, None] == groups[None, :])[same_query].all()  # one text, one group
    trainer = Trainer(task, config.engine, CPU)
    assert isinstance(trainer.sampler, GroupedSampler)
    batch = trainer.sampler.next()
    order = list(dict.fromkeys(groups[batch].tolist()))  # the batch's groups, in the order laid out
    inner = order[1:-1]  # the first and last may be cut at the batch's edges
    assert all((groups[batch] == g).sum() == (groups == g).sum() for g in inner)
    laid = groups[batch].tolist()
    # laid end to end: each group's members sit side by side
    assert all(laid[laid.index(g) : len(laid) - laid[::-1].index(g)] == [g] * laid.count(g) for g in order)
    trainer.fit()
    with pytest.raises(ValueError, match="--cluster-batches must be >= 0"):
        TEXT_CODE.build_task(config.replace(cluster_batches=-1), CPU)
