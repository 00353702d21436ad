"""GradCache: a big contrastive batch on the memory of a small one, with the same gradients.

What it measures (issue #8): one training step (forward, loss, backward) of the image-text task's
`ContrastiveTask` on `mmssl-vit-tiny` (open_clip ViT 64 px + open_clip text transformer), on a
synthetic batch (random pixels, captions of 12 tokens), for
  - batch 256, direct (the memory reference),
  - batch 4,096, direct,
  - batch 4,096 with `--grad-cache` chunks of 256 and of 1,024;
each in a fresh process: the step's peak memory above the process's memory before it (peak RSS,
`ru_maxrss`, which counts torch's CPU allocations), and its wall time (one warm-up step at batch 64
first). The gradients of every GradCache run are compared with the direct run's at the same batch
(max |difference| / max |gradient| over all parameters): they must agree to fp32 round-off.

Command (from the repo root; about 5 minutes on 2 cores):
    .venv/bin/python benchmarks/bench_grad_cache.py [--model mmssl-vit-tiny] [--big 4096 --small 256]
On a GPU machine (`--device cuda`) the peak is `torch.cuda.max_memory_allocated` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    """One configuration in this process: build, warm up, one measured step; JSON on stdout."""
    import torch

    from mmssl.data.pairs import Pairs
    from mmssl.losses import InfoNCELoss
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.contrastive import ContrastiveTask
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    torch.manual_seed(0)
    device = torch.device(args.device)
    config = TrainConfig.from_flat(task="image-text", image_model=args.model, train="-")
    model = IMAGE_TEXT.build_model(config.model, config.image_text).to(device).train()
    size = model.towers["image"].visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size

    def batch(n: int) -> dict:
        g = torch.Generator().manual_seed(n)
        ids = torch.randint(1, 49000, (n, 12), generator=g)
        ids[:, 0], ids[:, -1] = 49406, 49407  # start and end of text, as the tokenizer makes them
        pixels = torch.randn(n, 3, size, size, generator=g)
        return {"a": {"input_ids": ids.to(device)}, "b": {"pixels": pixels.to(device)}, "ids": torch.arange(n)}

    pairs = Pairs.from_texts([f"caption {i}" for i in range(8)], ["-"] * 8)
    task = ContrastiveTask(model, InfoNCELoss(), pairs, grad_cache=args.chunk)

    def step(b: dict) -> float:
        model.zero_grad(set_to_none=True)
        losses, _ = task.training_forward(b)
        losses["contrastive_loss"].backward()
        return float(losses["contrastive_loss"])

    step(batch(64))  # warm-up: allocator, kernels
    big = batch(args.batch)
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _current_rss()
        # ru_maxrss only grows: the peak of the step is what it reaches above the warm-up's peak
        before_peak = _rss_bytes()
    start = time.perf_counter()
    loss = step(big)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = max(_rss_bytes(), before_peak) - before
    seconds = time.perf_counter() - start
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    torch.save(grads, args.grads)
    print(json.dumps({"loss": loss, "peak_bytes": peak, "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mmssl-vit-tiny")
    p.add_argument("--small", type=int, default=256)
    p.add_argument("--big", type=int, default=4096)
    p.add_argument("--chunks", default="256,1024")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench-grad-cache")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--grads", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import torch

    from mmssl.runtime import cpu_name

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [(args.small, 0), (args.big, 0), *((args.big, int(c)) for c in args.chunks.split(","))]
    rows = []
    for batch, chunk in configs:
        grads = out / f"grads-{batch}-{chunk}.pt"
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--device", args.device]
        cmd += ["--batch", str(batch), "--chunk", str(chunk), "--grads", str(grads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        row = {"batch": batch, "chunk": chunk, **json.loads(proc.stdout.strip().splitlines()[-1])}
        if chunk:
            ref = torch.load(out / f"grads-{batch}-0.pt")
            mine = torch.load(grads)
            scale = max(float(g.abs().max()) for g in ref.values())
            row["grad_rel_diff"] = max(float((mine[k] - ref[k]).abs().max()) for k in ref) / scale
        rows.append(row)
        print(json.dumps(row), flush=True)
    small = rows[0]["peak_bytes"]
    direct_big = rows[1]
    stamp = f"{datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"\n{stamp}; {args.model}, one step (forward + loss + backward), fp32, {args.device}")
    print("| batch | GradCache chunk | step peak MiB | vs the small batch | step s | vs direct | grad diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vs_time = f"{r['seconds'] / direct_big['seconds']:.2f}x" if r["batch"] == args.big else "-"
        diff = f"{r['grad_rel_diff']:.1e}" if "grad_rel_diff" in r else "-"
        print(
            f"| {r['batch']} | {r['chunk'] or '-'} | {r['peak_bytes'] / 2**20:.0f} | {r['peak_bytes'] / small:.2f}x "
            f"| {r['seconds']:.1f} | {vs_time} | {diff} |"
        )
    (out / "results.json").write_text(json.dumps({"stamp": stamp, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
