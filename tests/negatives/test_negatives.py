"""Hard-negative mining and training with hard negatives (issue #10).

The positive, its duplicates (same query, same code or pixels, near-same code) and candidates that
score like the positive never come out as negatives; mining is deterministic for a seed; batches
carry B h negatives that become B h more InfoNCE columns; refreshes are installed at a fixed step
and survive a resume.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmssl import cli
from mmssl.bm25 import code_search_tokens
from mmssl.data.pairs import normalize_text
from mmssl.engine import Trainer
from mmssl.models import DualEncoder
from mmssl.negatives import MiningSettings, NegativeTable, mine_negatives
from mmssl.negatives.commands import load_training_pairs
from mmssl.recipes.config import TrainConfig
from mmssl.recipes.text_code import RECIPE as TEXT_CODE
from tests.conftest import fit_or_crash

CPU = torch.device("cpu")
WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega rho tau phi chi psi".split()


def planted_corpus(path) -> str:
    """40 distinct functions, then planted traps for pair 0..7:
    1 = 0's code, other docstring (duplicate); 3 = 2's code with other whitespace (duplicate);
    5 = 4's code with one word more (near duplicate, Jaccard 12/13); 7 has 6's docstring (same query)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        words = list(rng.choice(WORDS, 10, replace=False))
        name = f"{words[0]}_{words[1]}_{i}"
        code = f"def {name}({words[2]}, {words[3]}):\n    return {words[4]}({words[5]}) + {' + '.join(words[6:])}"
        rows.append((f"Compute the {words[0]} {words[1]} of {words[4]} and {words[6]}.", code))
    rows[1] = ("Another docstring for the first function body.", rows[0][1])
    rows[3] = ("Yet another docstring, same code modulo spaces.", rows[2][1].replace("    return", "      return"))
    rows[5] = ("A near copy of function four.", rows[4][1] + " + extra")
    rows[7] = (rows[6][0], rows[7][1])
    with gzip.open(path, "wt") as f:
        for doc, code in rows:
            f.write(json.dumps({"docstring": doc, "code": code, "partition": "train"}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_corpus(tmp_path_factory.mktemp("planted") / "corpus.jsonl.gz")


def _jaccard(a: str, b: str) -> float:
    x, y = set(code_search_tokens(a)), set(code_search_tokens(b))
    return len(x & y) / len(x | y)


def assert_clean(table: NegativeTable, pairs, near: float) -> None:
    ids = pairs.ids.numpy()
    for i in range(len(pairs)):
        for j in table.indices[i][table.indices[i] >= 0]:
            assert j != i and ids[j] != ids[i]
            assert normalize_text(pairs.candidates[j]) != normalize_text(pairs.candidates[i])
            assert _jaccard(pairs.candidates[i], pairs.candidates[j]) < near


@pytest.mark.parametrize("source", ["bm25", "model", "both"])
def test_positive_and_its_duplicates_never_come_out_as_negatives(planted, tiny_model, source):
    pairs = load_training_pairs(planted, "text-code", "train")
    model = DualEncoder.from_pretrained(tiny_model) if source != "bm25" else None
    # every candidate retrieved for every query, nothing dropped for its score: only the identity rules act
    settings = MiningSettings(source=source, top_k=len(pairs), keep=len(pairs), max_score_ratio=None)
    table = mine_negatives(pairs, settings, model)
    assert_clean(table, pairs, near=0.9)
    dropped = table.stats["dropped"]
    assert dropped["positive"] >= len(pairs) if source != "both" else dropped["positive"] >= 2 * len(pairs) - 8
    # each direction of each trap (bm25: the planted queries 1, 3, 5 share no word with any code,
    # so their candidates are all dropped as no_overlap first)
    least = 1 if source == "bm25" else 2
    for reason in ("same_query", "duplicate", "near_duplicate"):
        assert dropped[reason] >= least, reason
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
        assert b not in table.indices[a] and a not in table.indices[b]
    assert 9 in table.indices[8] or source == "bm25"  # ordinary pairs do get each other (bm25: if words overlap)
    # (BM25 finds nothing for the planted docstrings 1, 3, 5: they share no word with any code)
    assert (table.counts > 0).all() if source != "bm25" else set(np.flatnonzero(table.counts == 0)) == {1, 3, 5}


def test_false_negative_filter_drops_what_scores_like_the_positive(tmp_path):
    """Pair 1's code holds every word of pair 0's query, as pair 0's own code does: BM25 scores it
    at the positive's level, so it is dropped, counted, and shown in the file's sample."""
    rows = [
        ("parse the csv header", "def parse_csv_header(text): return text"),
        ("read a csv header line", "def parse_csv_header_line(text): return header(text)"),
        ("open a socket", "def open_socket(host): return connect(host)"),
        ("close the file", "def close_file(handle): handle.close()"),
        ("parse a date", "def parse_date(text): return date(text)"),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"docstring": d, "code": c, "partition": "train"}) + "\n" for d, c in rows))
    pairs = load_training_pairs(str(path), "text-code", "train")
    kw = dict(source="bm25", top_k=4, keep=4, filter_bm25=True)
    loose = mine_negatives(pairs, MiningSettings(**kw, max_score_ratio=None))
    strict = mine_negatives(pairs, MiningSettings(**kw, max_score_ratio=0.95))
    # without a model, BM25 scores judge nothing unless asked to (filter_bm25)
    unjudged = mine_negatives(pairs, MiningSettings(source="bm25", top_k=4, keep=4, max_score_ratio=0.95))
    np.testing.assert_array_equal(unjudged.indices, loose.indices)
    assert 1 in loose.indices[0] and 1 not in strict.indices[0]
    s0 = loose.scores[0][list(loose.indices[0]).index(1)]
    assert s0 >= 0.95 * loose.positive_scores[0]
    assert strict.stats["dropped"]["false_negative"] >= 1
    sample = [e for e in strict.false_negative_sample if e["pair"] == 0 and e["candidate_pair"] == 1]
    assert sample and sample[0]["query"] == "parse the csv header" and "parse_csv_header_line" in sample[0]["candidate"]
    # an absolute margin: drop anything within 100 BM25 points of the positive, i.e. everything
    assert (mine_negatives(pairs, MiningSettings(**kw, max_score_ratio=None, margin=100.0)).counts == 0).all()
    # BM25 candidates sharing no word with the query are no hard negatives
    assert loose.stats["dropped"]["no_overlap"] > 0
    assert all(s > 0 for row in loose.scores for s in row[np.isfinite(row)])


def test_mining_is_deterministic_for_a_fixed_seed(code_corpus, tiny_model, tmp_path):
    pairs = load_training_pairs(code_corpus, "text-code", "train")
    model = DualEncoder.from_pretrained(tiny_model)
    files = []
    for seed in (0, 0, 1):
        settings = MiningSettings(source="both", top_k=30, keep=5, pick="random", seed=seed)
        files.append(mine_negatives(pairs, settings, model).save(tmp_path / f"n{len(files)}.jsonl").read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


def test_table_file_roundtrip_and_clear_errors(planted, tmp_path):
    pairs = load_training_pairs(planted, "text-code", "train")
    table = mine_negatives(pairs, MiningSettings(source="bm25", top_k=10, keep=3))
    path = table.save(tmp_path / "neg.jsonl")
    back = NegativeTable.load(path)
    np.testing.assert_array_equal(back.indices, table.indices)
    np.testing.assert_array_equal(back.ranks, table.ranks)
    np.testing.assert_allclose(back.scores, table.scores, rtol=1e-5)
    assert back.fingerprint == pairs.fingerprint() and back.settings == table.settings
    back.check_for(pairs)
    with pytest.raises(ValueError, match="mined for other data"):
        back.check_for(pairs.sample(20))
    lines = path.read_text().splitlines()
    bad = json.loads(lines[3])
    bad["negatives"][0] = bad["pair"]  # the pair's own candidate
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:3], json.dumps(bad), *lines[4:]]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: negative"):
        NegativeTable.load(tmp_path / "bad.jsonl")
    (tmp_path / "short.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="pair lines, the header says"):
        NegativeTable.load(tmp_path / "short.jsonl")
    (tmp_path / "other.jsonl").write_text('{"docstring": "x"}\n')
    with pytest.raises(ValueError, match="not an `mmssl mine-negatives` file"):
        NegativeTable.load(tmp_path / "other.jsonl")
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ValueError, match=r"binary\.jsonl:1: not JSON"):
        NegativeTable.load(tmp_path / "binary.jsonl")


def tiny_config(corpus, out, **overrides) -> TrainConfig:
    base = dict(
        train=corpus, out=str(out), preset="tiny", vocab_size=400, embed_dim=32, batch_size=16, max_steps=12,
        warmup_steps=2, lr=2e-3, eval_every=0, save_every=0, log_every=1, max_code_length=48,
        max_text_length=24, eval_max_pairs=100, device="cpu",
    )  # fmt: skip
    return TrainConfig.from_flat(**{**base, **overrides})


def test_batches_carry_sampled_negatives_and_logits_grow_by_bh_columns(code_corpus, tmp_path):
    pairs = load_training_pairs(code_corpus, "text-code", "train")
    table = mine_negatives(pairs, MiningSettings(source="bm25", top_k=20, keep=6))
    path = table.save(tmp_path / "neg.jsonl")
    h, b = 3, 16
    torch.manual_seed(0)
    task = TEXT_CODE.build_task(tiny_config(code_corpus, tmp_path / "run", negatives=str(path), hard_negatives=h), CPU)
    rows = torch.arange(10, 10 + b)
    torch.manual_seed(5)
    batch = task.batcher(rows)
    torch.manual_seed(5)
    again = task.batcher(rows)
    assert torch.equal(batch["neg_ids"], again["neg_ids"])  # the batch's seed decides the draw
    assert batch["b"]["input_ids"].shape[0] == b + b * h and batch["a"]["input_ids"].shape[0] == b
    for r, row in enumerate(rows.tolist()):  # each pair's h negatives come from its own mined list
        valid = batch["neg_valid"][r * h : (r + 1) * h]
        own = set(table.indices[row][table.indices[row] >= 0].tolist())
        assert int(valid.sum()) == min(h, len(own))
        ids_drawn = batch["neg_ids"][r * h : (r + 1) * h][valid]
        assert set(ids_drawn.tolist()) <= {int(pairs.ids[j]) for j in own}
        assert len(set(ids_drawn.tolist())) == len(ids_drawn) or len({int(pairs.ids[j]) for j in own}) < len(own)
    seen = {}
    real_forward = task.loss.forward

    def spy(a, bb, **kw):
        seen.update(kw, a=a, b=bb)
        return real_forward(a, bb, **kw)

    task.loss.forward = spy
    losses, report = task.training_forward(batch)
    assert seen["negatives"].shape == (b * h, 32) and seen["b"].shape == (b, 32)
    # the loss is the cross-entropy over B + B h columns (a -> b) and B columns (b -> a)
    a, bb, neg = seen["a"].detach(), seen["b"].detach(), seen["negatives"].detach()
    scale = task.model.logit_scale.exp().detach()
    ids = batch["ids"]
    logits = scale * a @ torch.cat([bb, neg]).T  # (B, B + B h)
    assert logits.shape == (b, b + b * h)
    hide = torch.cat(
        [
            (ids[:, None] == ids[None, :]) & ~torch.eye(b, dtype=torch.bool),
            ids[:, None] == seen["negative_ids"][None, :],
        ],
        1,
    )
    hide[:, b:] |= ~seen["negative_mask"][None, :]
    row = torch.nn.functional.cross_entropy(logits.masked_fill(hide, -torch.inf), torch.arange(b))
    col_logits = (scale * bb @ a.T).masked_fill(hide[:, :b], -torch.inf)
    col = torch.nn.functional.cross_entropy(col_logits, torch.arange(b))
    torch.testing.assert_close(losses["contrastive_loss"].detach(), 0.5 * (row + col), rtol=1e-5, atol=1e-6)
    assert 0.0 <= report["hard_neg_acc"] <= 1.0


def test_cli_mine_then_train_with_negatives(code_corpus, tiny_model, tmp_path, capsys):
    out = tmp_path / "neg.jsonl"
    argv = ["mine-negatives", "--model", str(tiny_model), "--data", code_corpus, "--out", str(out)]
    assert cli.main([*argv, "--top-k", "20", "--keep", "4"]) == 0
    printed = capsys.readouterr().out
    assert '"kept"' in printed and "pair 0:" in printed
    assert cli.main([*argv, "--top-k", "20"]) == 2  # refuses to overwrite
    head = json.loads(out.read_text().splitlines()[0])
    assert head["settings"]["keep"] == 4 and head["stats"]["pairs"] == len(
        load_training_pairs(code_corpus, "text-code", "train")
    )
    run = tmp_path / "run"
    argv = ["train", "--train", code_corpus, "--out", str(run), "--negatives", str(out), "--hard-negatives", "2"]
    argv += ["--preset", "tiny", "--vocab-size", "300", "--batch-size", "16", "--max-steps", "4", "--eval-every", "0"]
    argv += ["--embed-dim", "16", "--device", "cpu", "--log-every", "1", "--warmup-steps", "1"]
    assert cli.main(argv) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("hard_neg_acc" in r for r in rows if "loss" in r)


def _losses(out):
    return [
        (r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.slow
def test_refresh_installs_at_a_fixed_step_and_resumes_exactly(code_corpus, tmp_path, monkeypatch):
    """ANCE refresh every 4 steps (installed 2 steps later): the table changes at steps 6 and 10, and
    a run that crashes at step 7 and resumes from its step-5 checkpoint (saved while the step-4
    refresh was in flight) has the uninterrupted run's losses, whatever the mining threads' timing."""
    kw = dict(refresh_negatives=4, hard_negatives=2, max_steps=12, seed=1)
    runs = {}
    installs = {}
    for name, crash in (("a", None), ("c", 7)):
        out = tmp_path / name
        torch.manual_seed(0)
        config = tiny_config(code_corpus, out, save_every=5, **kw)
        task = TEXT_CODE.build_task(config, CPU)
        trainer = Trainer(task, config.engine, CPU)
        real = task.after_step
        seen = []

        def tracking(step, real=real, seen=seen, task=task):
            before = task.batcher.negatives
            changed = real(step)
            if changed:
                seen.append((step, before is not task.batcher.negatives))
            return changed

        monkeypatch.setattr(task, "after_step", tracking)
        fit_or_crash(trainer, monkeypatch, crash)
        if crash:
            torch.manual_seed(0)
            config = tiny_config(code_corpus, out, save_every=5, resume=True, **kw)
            task = TEXT_CODE.build_task(config, CPU)
            Trainer(task, config.engine, CPU).fit()
        runs[name] = _losses(out)
        installs[name] = seen
    assert installs["a"] == [(6, True), (10, True)]
    for (s1, l1), (s2, l2) in zip(runs["a"], runs["c"]):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5, abs=1e-6)
    assert len(runs["c"]) == len(runs["a"]) == 12


@pytest.mark.slow
def test_image_text_mining_drops_pixel_duplicates_and_trains(tmp_path):
    """An image folder where images 0 and 1 are the same pixels under other names and captions:
    neither is the other's negative; image-text training runs with hard negatives."""
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) if i != 1 else np.asarray(Image.open(data / "0.png"))
        Image.fromarray(pixels).save(data / f"{i}.png")
        rows.append(
            {"file_name": f"{i}.png", "text": f"picture number {i} of {WORDS[i % len(WORDS)]}", "split": "train"}
        )
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from tests.recipes.test_image_text import micro_model

    torch.manual_seed(0)
    micro_model(embed_dim=16).save_pretrained(tmp_path / "model")
    out = tmp_path / "neg.jsonl"
    argv = ["mine-negatives", "--model", str(tmp_path / "model"), "--data", str(data), "--out", str(out)]
    assert cli.main([*argv, "--top-k", "23", "--keep", "23", "--max-score-ratio", "100"]) == 0
    table = NegativeTable.load(out)
    assert 1 not in table.indices[0] and 0 not in table.indices[1]
    assert table.stats["dropped"]["duplicate"] == 2
    argv = [
        "train",
        "--task",
        "image-text",
        "--train",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--negatives",
        str(out),
    ]
    argv += ["--image-model", "mmssl-vit-micro", "--batch-size", "8", "--max-steps", "3", "--eval-every", "0"]
    argv += ["--device", "cpu", "--warmup-steps", "1", "--valid-partition", "train", "--hard-negatives", "2"]
    assert cli.main(argv) == 0


def test_grad_cache_with_hard_negatives_gives_the_direct_gradients(code_corpus, tmp_path):
    pairs = load_training_pairs(code_corpus, "text-code", "train")
    path = mine_negatives(pairs, MiningSettings(source="bm25", top_k=20, keep=4)).save(tmp_path / "neg.jsonl")
    torch.manual_seed(0)
    config = tiny_config(code_corpus, tmp_path / "run", negatives=str(path), hard_negatives=2, dropout=0.0)
    task = TEXT_CODE.build_task(config, CPU)
    batch = task.batch(torch.arange(16))  # 16 queries, 16 + 32 candidates

    def grads():
        task.model.zero_grad(set_to_none=True)
        losses, _ = task.training_forward(batch)
        losses["contrastive_loss"].backward()
        return {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}

    direct = grads()
    task.grad_cache = 6
    cached = grads()
    assert direct.keys() == cached.keys() and len(direct) > 5
    # fp32 round-off of the chunks' other matmul shapes, against the gradient's overall size (some
    # tensors, attention key biases, have a gradient of zero up to round-off): measured 1.2e-5 here,
    # and 3.6e-6 without negatives at chunks of 1; a missing or misplaced chunk gives O(1)
    scale = max(float(g.norm()) for g in direct.values())
    for name in direct:
        err = float((cached[name] - direct[name]).norm()) / scale
        assert err < 1e-4, (name, err)


def test_with_a_model_the_false_negative_rule_uses_model_scores_for_every_source(code_corpus, tiny_model):
    """``both``: BM25's candidates are judged by the model's cosines too; every kept negative scores
    under 0.95 x its positive by the model, and what was dropped scored above."""
    pairs = load_training_pairs(code_corpus, "text-code", "train").sample(300)
    model = DualEncoder.from_pretrained(tiny_model)
    table = mine_negatives(pairs, MiningSettings(source="both", top_k=20, keep=20, max_score_ratio=0.95), model)
    q = model.embed("text", pairs.queries).numpy()
    c = model.embed("code", pairs.candidates).numpy()
    for i in range(len(pairs)):
        pos = float(q[i] @ c[i])
        for j in table.indices[i][table.indices[i] >= 0]:
            assert not (pos > 0 and float(q[i] @ c[j]) >= 0.95 * pos + 1e-5)
    assert table.stats["dropped"]["false_negative"] > 0
    for e in table.false_negative_sample:
        assert e["score"] >= 0.95 * e["positive_score"] - 1e-3
