"""GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): a batch's embeddings computed chunk by chunk without a graph, the loss on all of them, and
the backward pass re-embedding each chunk with its graph to push the embeddings' gradient in.

``cached_embeddings(model, live, chunk)`` returns the embeddings as outputs of ``_Replay``, whose
backward re-runs the towers chunk by chunk (each chunk replays its dropout draws and autocast), so
the gradients equal the direct computation's at the activation memory of one chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Replay(torch.autograd.Function):
    """Identity on the cached embeddings; its backward hands their gradients to ``replay``, which
    re-runs the towers chunk by chunk and back-propagates them (GradCache's second pass)."""

    @staticmethod
    def forward(ctx, replay, *embs):  # embs: (B, D) each, no graph behind them
        ctx.replay = replay
        return tuple(e.clone() for e in embs)

    @staticmethod
    def backward(ctx, *grads):
        ctx.replay(grads)
        return (None, *(None for _ in grads))


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_embeddings(model, live: dict[str, dict], chunk: int) -> dict[str, Tensor]:
    """GradCache's first pass over the live sides (``"a"``/``"b"`` -> that side's batch) of a
    ``DualEncoder``: (B, D) embeddings per side whose backward replays the chunks with a graph."""
    modality = dict(zip(("a", "b"), model.config.modalities))
    device = model.device
    amp = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
    chunks, embs = [], {}
    with torch.no_grad():
        for side, batch in live.items():
            n = len(next(iter(batch.values())))
            parts = []
            for start in range(0, n, chunk):
                part = {k: v[start : start + chunk] for k, v in batch.items()}
                chunks.append((side, start, part, _rng_state(device)))
                parts.append(model.encode(modality[side], part).float())  # (C, D)
            embs[side] = torch.cat(parts).requires_grad_(True)  # (B, D): leaves, the loss's inputs
    sides = list(embs)

    def replay(grads: tuple[Tensor, ...]) -> None:
        by_side = dict(zip(sides, grads))
        for side, start, part, rng in chunks:
            grad = by_side[side]
            if grad is None:
                continue
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                _set_rng_state(device, rng)  # the chunk's dropout draws, as in the first pass
                with torch.enable_grad(), torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                    emb = model.encode(modality[side], part).float()  # (C, D)
            emb.backward(grad[start : start + len(emb)])

    outs = _Replay.apply(replay, *(embs[s] for s in sides))
    return dict(zip(sides, outs))
