"""InfoNCE (CLIP loss) benchmark: mmssl naive vs mmssl chunked vs open_clip, CPU fp32.

What it measures
    For each batch size B (``--batches``) and embedding dim D (``--dim``), three implementations of
    the symmetric CLIP loss, called the way a training loop calls them:

        openclip  open_clip.loss.ClipLoss()(a, b, s)                      (the peer)
        naive     mmssl.losses.InfoNCELoss()(a, b, logit_scale=s)          (plain form: all (B, B) logits
                  at once; the issue's "naive" form. Since 2026-11-24 a custom autograd kernel
                  that recomputes the logits in backward instead of keeping them)
        chunked   mmssl.losses.InfoNCELoss(chunk_size=C)(a, b, logit_scale=s)

    Inputs: a, b are L2-normalized random float32 (B, D) tensors with requires_grad=True, and
    s = tensor(1 / 0.07) with requires_grad=True. One step is ``loss = fn(a, b, s); loss.backward()``.
    Reported per (B, impl): the median wall time of ``--repeats`` steps after one warmup step, and the
    peak memory of a step (the largest over the timed steps).

How peak memory is measured
    torch keeps no allocator statistics on CPU, so every (impl, B) runs in a fresh subprocess
    (``--worker IMPL B D C``). The worker builds the inputs and runs one warmup step, then drops
    the input gradients, calls glibc's ``malloc_trim(0)`` so that memory freed by the warmup goes
    back to the kernel, reads the resident set size (``VmRSS``) as the baseline, and resets the
    kernel's resident high-water mark by writing "5" to ``/proc/self/clear_refs``. After the timed
    steps (each starting with the gradients dropped), the peak is ``VmHWM - baseline`` from
    ``/proc/self/status``: the most memory resident at any instant above the baseline, gradients
    of a, b and s included (the same 2*B*D floats for all three implementations). Where
    ``clear_refs`` cannot be written, the worker skips the warmup, so that the high-water mark
    is set by the timed steps and not by an earlier one (reported as method "no-warmup").
    Each worker prints one JSON line that the parent collects.

    Workers run interleaved (for each B: openclip, naive, chunked) so that all three share the
    machine's noise. Before any timing, the parent checks at the smallest B that the three losses
    agree within 1e-4 relative (and their gradients within a small tolerance).

Targets reported (the benchmark only reports; the exit status does not depend on them)
    - chunked at the largest B: peak <= 1/4 of naive's peak, and time <= 1.3x naive's time;
    - naive no slower than open_clip at every B (median time ratio <= 1).

Command (from the repository root; 2.5 minutes on a 2-core AMD EPYC, 16384 is most of it):

    .venv/bin/python benchmarks/bench_infonce.py [--batches 1024,4096,16384] [--dim 512]
        [--chunk-size 1024] [--repeats 3] [--markdown]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

IMPLS = ("openclip", "naive", "chunked")
LOGIT_SCALE = 1 / 0.07
MIB = 2**20


# --------------------------------------------------------------------------------------------------
# Worker side: one (impl, B) per fresh process
# --------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{field} not found in /proc/self/status")
    return int(match.group(1))


def _reset_hwm() -> bool:
    """Reset the resident high-water mark (VmHWM) to the current RSS; False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _trim_heap() -> None:
    """Return freed heap memory to the kernel (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _make_loss(impl: str, chunk_size: int):
    if impl == "openclip":
        from open_clip.loss import ClipLoss

        loss = ClipLoss()
        return lambda a, b, s: loss(a, b, s)
    from mmssl.losses import InfoNCELoss

    loss = InfoNCELoss(chunk_size=chunk_size if impl == "chunked" else None)
    return lambda a, b, s: loss(a, b, logit_scale=s)


def _make_inputs(batch: int, dim: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1).requires_grad_()
    s = torch.tensor(LOGIT_SCALE, requires_grad=True)
    return a, b, s


def run_worker(impl: str, batch: int, dim: int, chunk_size: int, repeats: int) -> dict:
    import gc

    import torch

    fn = _make_loss(impl, chunk_size)
    a, b, s = _make_inputs(batch, dim)

    def step() -> float:
        loss = fn(a, b, s)
        loss.backward()
        return loss.item()

    can_reset = _reset_hwm()
    if can_reset:
        step()  # warmup; kept out of the high-water mark only where the mark can be reset
    a.grad = b.grad = s.grad = None
    gc.collect()
    _trim_heap()
    baseline = _status_kib("VmRSS")
    _reset_hwm()
    times = []
    for _ in range(repeats):
        a.grad = b.grad = s.grad = None  # every step allocates its gradients afresh
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kib = _status_kib("VmHWM") - baseline
    return {
        "impl": impl,
        "batch": batch,
        "dim": dim,
        "times_s": times,
        "peak_bytes": peak_kib * 1024,
        "mem_method": "clear_refs" if can_reset else "no-warmup",
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------------
# Parent side: correctness check, interleaved workers, table
# --------------------------------------------------------------------------------------------------


def check_agreement(batch: int, dim: int, chunk_size: int) -> None:
    """Assert the three implementations agree in value (1e-4 relative) and gradients at ``batch``."""
    import torch

    values, grads = {}, {}
    for impl in IMPLS:
        a, b, s = _make_inputs(batch, dim)
        loss = _make_loss(impl, chunk_size)(a, b, s)
        loss.backward()
        values[impl] = loss.item()
        grads[impl] = (a.grad, b.grad, s.grad)
    ref = values["openclip"]
    for impl in IMPLS:
        rel = abs(values[impl] - ref) / abs(ref)
        if rel > 1e-4:
            raise AssertionError(f"{impl} loss {values[impl]} vs open_clip {ref}: relative diff {rel:.2e}")
        for got, want, name in zip(grads[impl], grads["openclip"], ("a", "b", "s")):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=f"{impl} grad of {name}")
    print(f"check: losses agree at B={batch} ({', '.join(f'{k}={v:.6f}' for k, v in values.items())})")


def run_in_subprocess(impl: str, batch: int, dim: int, chunk_size: int, repeats: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, str(batch), str(dim), str(chunk_size)]
    cmd += ["--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl} B={batch} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    import open_clip
    import torch

    from mmssl.runtime import cpu_name

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_rows(results: dict, batches: list[int]) -> list[list[str]]:
    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}x"

    rows = []
    for batch in batches:
        oc, nv = results[batch, "openclip"], results[batch, "naive"]
        for impl in IMPLS:
            r = results[batch, impl]
            vs_naive = impl == "chunked"
            rows.append(
                [
                    str(batch),
                    impl,
                    f"{r['time']:.3f}",
                    ratio(r["time"], oc["time"]),
                    f"{r['peak'] / MIB:.0f}",
                    ratio(r["peak"], oc["peak"]),
                    ratio(r["time"], nv["time"]) if vs_naive else "-",
                    ratio(r["peak"], nv["peak"]) if vs_naive else "-",
                ]
            )
    return rows


HEADER = [
    "batch",
    "impl",
    "median time (s)",
    "time vs open_clip",
    "peak MiB",
    "peak vs open_clip",
    "time vs naive",
    "peak vs naive",
]


def format_text(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(HEADER, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def format_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def targets(results: dict, batches: list[int]) -> list[str]:
    big = max(batches)
    ch, nv = results[big, "chunked"], results[big, "naive"]
    peak_ratio, time_ratio = ch["peak"] / nv["peak"], ch["time"] / nv["time"]
    naive_vs_oc = {bt: results[bt, "naive"]["time"] / results[bt, "openclip"]["time"] for bt in batches}
    worst = max(naive_vs_oc, key=naive_vs_oc.get)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    return [
        f"{verdict(peak_ratio <= 0.25)}  chunked peak <= 1/4 of naive at B={big}: {peak_ratio:.3f}x",
        f"{verdict(time_ratio <= 1.3)}  chunked time <= 1.3x naive at B={big}: {time_ratio:.2f}x",
        f"{verdict(all(v <= 1.0 for v in naive_vs_oc.values()))}  naive no slower than open_clip at every B: "
        + ", ".join(f"B={bt} {v:.2f}x" for bt, v in naive_vs_oc.items())
        + f" (worst B={worst})",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1024,4096,16384", help="comma-separated batch sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per (impl, batch), after 1 warmup")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "B", "D", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        impl, batch, dim, chunk = args.worker
        print(json.dumps(run_worker(impl, int(batch), int(dim), int(chunk), args.repeats)))
        return

    start = time.perf_counter()
    batches = [int(x) for x in args.batches.split(",")]
    info = machine_info()
    machine = (
        f"{info['cpu']}, os.cpu_count()={info['cpu_count']}, torch {info['torch']} "
        f"({info['threads']} threads), open_clip {info['open_clip']}, Python {info['python']}, "
        f"{info['date']}"
    )
    print(f"machine: {machine}")
    print(f"load average at start (1/5/15 min): {_loadavg()}")
    print(
        f"config: CPU fp32, D={args.dim}, chunk_size={args.chunk_size}, repeats={args.repeats} "
        f"(median, after 1 warmup), batches={batches}"
    )
    check_agreement(min(batches), args.dim, args.chunk_size)

    results, methods = {}, set()
    for batch in batches:
        for impl in IMPLS:
            r = run_in_subprocess(impl, batch, args.dim, args.chunk_size, args.repeats)
            results[batch, impl] = {"time": statistics.median(r["times_s"]), "peak": r["peak_bytes"]}
            methods.add(r["mem_method"])
            print(
                f"  B={batch:>6} {impl:<8} times {', '.join(f'{t:.3f}' for t in r['times_s'])} s, "
                f"peak {r['peak_bytes'] / MIB:.0f} MiB",
                flush=True,
            )

    rows = build_rows(results, batches)
    print()
    print(format_text(rows))
    print(
        f"peak = resident high-water mark of one forward+backward above the pre-step RSS "
        f"(method: {', '.join(sorted(methods))})"
    )
    print()
    for line in targets(results, batches):
        print(line)
    if args.markdown:
        print()
        print(
            f"Machine: {machine}. CPU fp32, D={args.dim}, chunk_size={args.chunk_size}, "
            f"median of {args.repeats} after 1 warmup."
        )
        print()
        print(format_markdown(rows))
        print()
        for line in targets(results, batches):
            print(f"- {line}")
    print(f"\nload average at end (1/5/15 min): {_loadavg()}; other work on the machine skews the times")
    print(f"total wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
