"""Rank/world helpers and an all-gather that carries gradients.

Shapes: B local batch on this rank, B_r the batch of rank r, N = sum_r B_r the global batch, D dim.

`all_gather_with_grad` is the piece the contrastive losses need: every rank sees the global batch
as negatives, and the backward pass sends each rank the sum, over all ranks, of the gradient that
its own rows received. Summing (rather than keeping only the local copy's gradient) makes the
per-rank input gradient equal to ``world_size * dL/dx_rank``; DistributedDataParallel then divides
by ``world_size`` when it averages parameter gradients, so the parameters receive exactly the
gradient of the loss over the global batch. This is the semantics of open_clip's
``gather_with_grad=True`` and of ``torch.distributed.nn.all_gather``.

Why not ``torch.distributed.nn.all_gather`` itself: it requires every rank to hold the same
number of rows, and a distributed loss must survive an uneven last batch. This version pads to the
largest local batch, gathers, and strips the padding; with equal sizes it is a plain all_gather.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group is initialized with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """The process's index on its own node (``LOCAL_RANK`` set by torchrun), 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU.

    Returns whether this is a multi-process run. A no-op when already initialized or run alone.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(get_local_rank())
        dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather in the forward pass; sum-reduce and slice in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:  # x: (B, ...)
        rank = dist.get_rank()
        ctx.sizes = sizes
        ctx.rank = rank
        max_n = max(sizes)
        if x.shape[0] < max_n:
            pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
            x_padded = torch.cat([x, pad], dim=0)  # (max_B, ...)
        else:
            x_padded = x.contiguous()
        chunks = [torch.empty_like(x_padded) for _ in sizes]
        dist.all_gather(chunks, x_padded)
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)], dim=0)  # (N, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad: (N, ...)
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None  # (B, ...)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order, keeping the autograd graph.

    Shape: (B, ...) -> (N, ...). Ranks may hold different B. Identity when not distributed.
    """
    if not is_distributed():
        return x
    sizes = tuple(_gather_sizes(x.shape[0], x.device))
    return _AllGatherWithGrad.apply(x, sizes)


def rank_offset(n_local: int, device: torch.device) -> int:
    """Index of this rank's first row in the concatenation that ``all_gather_with_grad`` returns."""
    if not is_distributed():
        return 0
    return sum(_gather_sizes(n_local, device)[: dist.get_rank()])


def rank_slice(indices: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch of indices: rank r of W takes the r-th of W equal parts.

    Shape: (N,) -> (N / W,). The global batch must divide evenly (the engine checks up front)."""
    world = get_world_size()
    if world == 1:
        return indices
    n = indices.shape[0] // world
    return indices[get_rank() * n : (get_rank() + 1) * n]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a stop decision all ranks must share)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when alone."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


BUCKET_BYTES = 25 * 2**20  # DistributedDataParallel's default bucket size


def sync_gradients(params) -> None:
    """Average the ``.grad`` of ``params`` over ranks, in flat buckets of ``BUCKET_BYTES``.

    For steps whose gradients DistributedDataParallel cannot reduce itself: gradient caching runs one
    backward pass per chunk plus one for the loss (whose temperature is used outside any module's
    forward), and tasks without a ``distribute`` hook (the MLM/causal-LM pretraining tasks, which
    call their model's submodules) never go through a DDP forward. It reduces after the last
    backward pass, without DDP's overlap of communication and computation."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    # A parameter no rank used (a pooler beside mean pooling) keeps no gradient, as in one process,
    # so the optimizer leaves it alone; one used on some ranks only counts as zero on the others.
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    for p, u in zip(params, used.tolist()):
        if u and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    by_dtype: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    for group in by_dtype.values():
        bucket, size = [], 0
        for g in [*group, None]:
            if g is not None:
                bucket.append(g)
                size += g.numel() * g.element_size()
            if bucket and (g is None or size >= BUCKET_BYTES):
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat /= world
                offset = 0
                for b in bucket:
                    b.copy_(flat[offset : offset + b.numel()].view_as(b))
                    offset += b.numel()
                bucket, size = [], 0


def destroy() -> None:
    """Leave the process group (the end of a torchrun job's work)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
