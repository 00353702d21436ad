"""Two gloo processes on CPU against one process holding the global batch.

For every loss that gathers negatives: the loss on each rank equals the global loss (the local-loss
forms: their mean over ranks does), each rank's input gradient equals ``world_size`` times the
global gradient of its rows, and under DistributedDataParallel the averaged parameter gradients
equal the single-process ones. Even and uneven per-rank batches. One spawn runs every case.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmssl import losses as L

WORLD = 2
DIM = 6
CASES = {
    "infonce": lambda: L.InfoNCELoss(),
    "infonce_local": lambda: L.InfoNCELoss(local_loss=True),
    "infonce_chunked": lambda: L.InfoNCELoss(chunk_size=3),
    "infonce_dups_smooth": lambda: L.InfoNCELoss(label_smoothing=0.1),
    "infonce_hardneg": lambda: L.InfoNCELoss(label_smoothing=0.1),
    "infonce_hardneg_local": lambda: L.InfoNCELoss(local_loss=True),
    "ntxent": lambda: L.NTXentLoss(temperature=0.3),
    "siglip": lambda: L.SigLIPLoss(),
    "barlow": lambda: L.BarlowTwinsLoss(),
    "vicreg": lambda: L.VICRegLoss(),
}
# per-rank value; the mean over ranks is the global loss
LOCAL_FORMS = {"infonce_local", "infonce_hardneg_local", "siglip"}
SPLITS = {"even": (7, 7), "uneven": (4, 9)}


def _global_inputs(n: int):
    g = torch.Generator().manual_seed(123)
    a = F.normalize(torch.randn(n, DIM, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(n, DIM, generator=g, dtype=torch.float64), dim=1)
    ids = torch.arange(n) % (n - 3)  # a few duplicate captions across the batch
    return a, b, ids


def _negatives(n: int):
    """Two hard negatives per pair (rows 2i, 2i+1 belong to pair i), some masked, their pairs' ids."""
    g = torch.Generator().manual_seed(7)
    neg = F.normalize(torch.randn(2 * n, DIM, generator=g, dtype=torch.float64), dim=1)
    neg_ids = torch.randint(0, n, (2 * n,), generator=g)
    return neg, neg_ids, torch.arange(2 * n) % 5 != 3


def _call(name, loss, a, b, ids, lo=0, total=None):
    if name == "infonce_dups_smooth":
        return loss(a, b, pair_ids=ids)
    if name.startswith("infonce_hardneg"):
        neg, neg_ids, mask = (t[2 * lo : 2 * (lo + len(a))] for t in _negatives(total or len(ids)))
        return loss(a, b, pair_ids=ids, negatives=neg, negative_ids=neg_ids, negative_mask=mask)
    return loss(a, b)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {}
    for split, sizes in SPLITS.items():
        a, b, ids = _global_inputs(sum(sizes))
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        for name, make in CASES.items():
            la = a[lo:hi].clone().requires_grad_(True)
            lb = b[lo:hi].clone().requires_grad_(True)
            value = _call(name, make(), la, lb, ids[lo:hi], lo, sum(sizes))
            value.backward()
            results[(split, name)] = (value.detach(), la.grad, lb.grad)
        # DDP: a linear tower on both sides, InfoNCE over its outputs, full and local forms.
        for name in ("infonce", "infonce_local"):
            torch.manual_seed(0)
            model = torch.nn.Linear(DIM, 4, dtype=torch.float64)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            loss = CASES[name]()(ddp(a[lo:hi]), ddp(b[lo:hi]))
            loss.backward()
            results[(split, "ddp_" + name)] = (loss.detach(), model.weight.grad, model.bias.grad)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_input_gradients_match_one_process(ranks, split, name):
    sizes = SPLITS[split]
    a, b, ids = _global_inputs(sum(sizes))
    a.requires_grad_(True)
    b.requires_grad_(True)
    value = _call(name, CASES[name](), a, b, ids)
    value.backward()
    per_rank = [r[(split, name)] for r in ranks]
    if name in LOCAL_FORMS:
        torch.testing.assert_close(sum(v for v, _, _ in per_rank) / WORLD, value.detach(), **TOL)
    else:
        for v, _, _ in per_rank:
            torch.testing.assert_close(v, value.detach(), **TOL)
    for rank, (_, ga, gb) in enumerate(per_rank):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        torch.testing.assert_close(ga, WORLD * a.grad[lo:hi], **TOL)
        torch.testing.assert_close(gb, WORLD * b.grad[lo:hi], **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", ["infonce", "infonce_local"])
def test_ddp_parameter_gradients_equal_global_batch(ranks, split, name):
    a, b, _ = _global_inputs(sum(SPLITS[split]))
    torch.manual_seed(0)
    model = torch.nn.Linear(DIM, 4, dtype=torch.float64)
    CASES[name]()(model(a), model(b)).backward()
    for r in ranks:
        _, gw, gb = r[(split, "ddp_" + name)]
        torch.testing.assert_close(gw, model.weight.grad, **TOL)
        torch.testing.assert_close(gb, model.bias.grad, **TOL)
