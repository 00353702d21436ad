"""The GPU paths of issue #8, each next to its peer on the same machine, in one command.

Sections (``--only train,embed,faiss``; all by default):
  train   single-GPU image-text training throughput: `mmssl train --task image-text` against
          `python -m open_clip_train.main` on the same open_clip model (ViT-B-32), the same TSV of
          synthetic JPEGs (224 px, generated here), batch 256, bf16 autocast (open_clip's
          `amp_bf16`), the same AdamW, schedule and data-loader workers; runs take turns
          (``bench_openclip_train``'s machinery). Also mmssl with GradCache (`--grad-cache 64`):
          its overhead in % of samples/s, and mmssl with `--grad-checkpointing`.
  embed   embedding throughput of a BERT-base-size tower (12 x 768, random weights, MiniLM's
          WordPiece vocabulary: nothing downloaded) over the same texts: mmssl's
          `indexing.embed.embed_texts` (bf16 autocast, inference mode, length-sorted batches)
          against sentence-transformers' `encode` on the same model directory, in fp32 and in
          bf16 weights; cosine agreement of the two embeddings as a check that they are the same model.
  faiss   the indexing layer's build (`indexing.build.build_in_memory`) with and without the GPU,
          and batch search on the GPU against the CPU, for exact (Flat) and IVF-Flat indexes of
          N x D mixture vectors (``bench_index.Mixture``).
A multi-GPU DDP section runs when the machine has more than one GPU (`torchrun` with NCCL:
samples/s for 1 and W processes at the same per-GPU batch); with one GPU it says so and skips.

Every row names the device, torch, CUDA, open_clip, sentence-transformers and faiss versions; the
results also land in OUT/results.json. ``--smoke`` runs every section at toy sizes (a CPU is
enough: that is how CI-less machines check the script itself).

Command (from the repo root, on the GPU machine; about 8 minutes on one H100/H200):
    make bench-deps && .venv/bin/python benchmarks/bench_gpu.py
    .venv/bin/python benchmarks/bench_gpu.py --smoke --out runs/bench-gpu-smoke      # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_openclip_train as oct  # noqa: E402
import numpy as np  # noqa: E402

from mmssl.runtime import cpu_name  # noqa: E402


def environment() -> dict:
    import faiss
    import open_clip
    import sentence_transformers
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d}",
        "device": gpu or f"CPU only: {cpu_name()}, {os.cpu_count()} cores",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "open_clip": open_clip.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
    }


# ---- train ----------------------------------------------------------------------------------------

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "bar")


def synthetic_images(out: Path, n: int, size: int) -> Path:
    """n JPEGs (a coloured shape on noise) and a TSV of `filepath`/`title`, made once."""
    from PIL import Image, ImageDraw

    tsv = out / f"synthetic-{n}-{size}.tsv"
    if tsv.is_file():
        return tsv
    folder = out / f"synthetic-{n}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["filepath\ttitle"]
    names = list(COLORS)
    for i in range(n):
        color, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(0, size // 2, 2)
        box = (int(x), int(y), int(x) + size // 3, int(y) + (size // 8 if shape == "bar" else size // 3))
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=90)
        rows.append(f"{path.resolve()}\ta {color} {shape} number {i % 97}")
    tsv.write_text("\n".join(rows) + "\n")
    return tsv


def section_train(args, out: Path) -> list[dict]:
    import torch

    gpu = torch.cuda.is_available()
    tsv = synthetic_images(out, args.images, args.image_size)
    n_train = sum(1 for _ in tsv.open()) - 1
    steps_per_epoch = n_train // args.batch_size
    steps = args.epochs * steps_per_epoch
    model = args.model
    if model.startswith("mmssl-"):  # a config shipped in mmssl: open_clip_train reads it as local-dir
        oc_model = f"local-dir:{oct.model_dir(out, model)}"
    else:
        oc_model = model
    setup = oct.Setup(
        open_clip_model=oc_model,
        mmssl_model=model,
        open_clip_precision="amp_bf16" if gpu else "fp32",
        mmssl_precision="bf16" if gpu else "fp32",
        device="cuda" if gpu else "cpu",
    )
    bench = argparse.Namespace(
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=5e-4,
        warmup=min(20, steps // 4),
        workers=args.workers,
        mmssl_workers=None,
    )
    variants = {
        "mmssl": setup,
        f"mmssl --grad-cache {args.grad_cache}": oct.Setup(
            **{**setup.__dict__, "mmssl_extra": ("--grad-cache", str(args.grad_cache))}
        ),
        "mmssl --grad-checkpointing": oct.Setup(**{**setup.__dict__, "mmssl_extra": ("--grad-checkpointing",)}),
    }
    runs = []
    for r in range(args.repeats):
        res = oct.run_open_clip(out, tsv, steps_per_epoch, bench, r, setup)
        runs.append({"trainer": "open_clip_train", "run": r, **res})
        for i, (name, variant) in enumerate(variants.items()):
            res = oct.run_mmssl(out, tsv, steps, bench, r, variant, tag=str(i))
            runs.append({"trainer": name, "run": r, **res})
    rows = []
    base = None
    for name in ["open_clip_train", *variants]:
        mine = [statistics.median(x["rates"]) for x in runs if x["trainer"] == name]
        rate = statistics.median(mine)
        base = base or rate
        rows.append(
            {"section": "train", "what": name, "samples_per_s": rate, "runs": mine, "vs_open_clip": rate / base}
        )
    plain = rows[1]["samples_per_s"]
    for row in rows[2:]:
        row["overhead_pct"] = 100 * (plain / row["samples_per_s"] - 1)
    print(f"\n### train: {model}, batch {args.batch_size}, {steps} steps, {n_train:,} synthetic JPEGs")
    print(f"({args.image_size} px, data-loader workers {args.workers}; bf16 on a GPU, fp32 on a CPU)")
    print("| trainer | samples/s (median of runs) | runs | vs open_clip_train | time overhead vs mmssl |")
    print("|---|---|---|---|---|")
    for row in rows:
        over = f"{row['overhead_pct']:+.1f} %" if "overhead_pct" in row else "-"
        runs_txt = ", ".join(f"{x:.0f}" for x in row["runs"])
        print(f"| {row['what']} | {row['samples_per_s']:.1f} | {runs_txt} | {row['vs_open_clip']:.3f} | {over} |")
    return rows


# ---- embed ----------------------------------------------------------------------------------------


def stdlib_texts(n: int) -> list[str]:
    """Lines of prose and code from the standard library's sources (a real, offline text corpus)."""
    import sysconfig

    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        texts += [line.strip() for line in lines if len(line.strip()) > 30]
        if len(texts) >= n:
            break
    return texts[:n]


def bert_dir(out: Path, smoke: bool) -> Path:
    """A BERT-base-size model (random weights) with MiniLM's WordPiece tokenizer, saved locally."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmssl.models.text import resolve_init

    folder = out / ("bert-toy" if smoke else "bert-base-random")
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    cfg = (
        BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
        if smoke
        else BertConfig()
    )
    BertModel(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_init("minilm")).save_pretrained(folder)
    return folder


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def section_embed(args, out: Path) -> list[dict]:
    import torch
    from sentence_transformers import SentenceTransformer

    from indexing.embed import embed_texts
    from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = bert_dir(out, args.smoke)
    texts = stdlib_texts(args.texts)
    tower = TowerConfig(init=str(folder), pooling="mean", max_length=args.max_length)
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    dual = DualEncoder.build(
        DualEncoderConfig(towers={"text": tower, "code": tower}, shared=True, embed_dim=hidden)
    ).to(device)
    peers = {}
    for name, kwargs in (("fp32", {}), ("bf16 weights", {"torch_dtype": torch.bfloat16})):
        st = SentenceTransformer(str(folder), device=device, model_kwargs=kwargs)
        st.max_seq_length = args.max_length
        peers[f"sentence-transformers encode ({name})"] = st

    def mmssl_run(items):
        return embed_texts(dual, "text", items, args.embed_batch)

    results = {"mmssl embed_texts (bf16 autocast)" if device == "cuda" else "mmssl embed_texts": mmssl_run}
    for name, st in peers.items():
        results[name] = lambda items, st=st: st.encode(
            items, batch_size=args.embed_batch, convert_to_numpy=True, normalize_embeddings=True
        )
    for fn in results.values():  # warm-up: kernels, allocator
        fn(texts[:512])
    timings = {name: _best_time(lambda fn=fn: fn(texts), args.repeats) for name, fn in results.items()}
    ours = np.asarray(mmssl_run(texts[:512]), dtype=np.float32)
    theirs = np.asarray(results[next(iter(peers))](texts[:512]), dtype=np.float32)
    agreement = float(np.mean(np.sum(ours * theirs, axis=1)))
    rows = []
    base = timings[next(iter(results))]
    print(f"\n### embed: BERT tower {hidden} wide, {len(texts):,} stdlib lines, max {args.max_length} tokens")
    print(f"mean cosine(mmssl, sentence-transformers fp32) over 512 texts: {agreement:.4f}")
    print("| embedder | texts/s | speed vs mmssl |")
    print("|---|---|---|")
    for name, t in timings.items():
        rows.append({"section": "embed", "what": name, "texts_per_s": len(texts) / t, "agreement": agreement})
        print(f"| {name} | {len(texts) / t:.0f} | {base / t:.3f} |")
    return rows


# ---- faiss ----------------------------------------------------------------------------------------


def section_faiss(args, out: Path) -> list[dict]:
    import faiss
    from bench_index import Mixture

    from indexing.build import ArrayShards, build_in_memory, gpu_count
    from indexing.plan import choose_index

    x = Mixture(args.dim).sample(args.n, seed=1)
    xq = Mixture(args.dim).sample(args.queries, seed=2)
    shards = ArrayShards(x)
    use = [False, True] if gpu_count() else [False]
    rows = []
    print(f"\n### faiss: {args.n:,} x {args.dim} mixture vectors, {args.queries:,} queries, k=10")
    print("| index | build CPU s | build GPU s | search CPU queries/s | search GPU queries/s |")
    print("|---|---|---|---|---|")
    for index_type in ("flat", "ivf_flat"):
        plan = choose_index(args.n, args.dim, index_type=index_type)
        built, build_s = {}, {}
        for gpu in use:
            start = time.perf_counter()
            built[gpu] = build_in_memory(plan, shards, use_gpu=gpu)
            build_s[gpu] = time.perf_counter() - start
        index = built[False]
        if hasattr(index, "nprobe") or plan.index_type == "ivf_flat":
            faiss.extract_index_ivf(index).nprobe = 32
        search = {False: index}
        if gpu_count():
            search[True] = faiss.index_cpu_to_all_gpus(index)
            if plan.index_type == "ivf_flat":
                faiss.GpuParameterSpace().set_index_parameter(search[True], "nprobe", 32)
        qps = {g: len(xq) / _best_time(lambda i=i: i.search(xq, 10), args.repeats) for g, i in search.items()}
        row = {"section": "faiss", "what": plan.factory, "build_s": build_s, "qps": qps}
        rows.append(row)
        gpu_build = f"{build_s[True]:.2f}" if True in build_s else "-"
        gpu_qps = f"{qps[True]:.0f}" if True in qps else "-"
        print(f"| {plan.factory} | {build_s[False]:.2f} | {gpu_build} | {qps[False]:.0f} | {gpu_qps} |")
    return rows


# ---- ddp ------------------------------------------------------------------------------------------


def section_ddp(args, out: Path) -> list[dict]:
    import torch

    world = torch.cuda.device_count()
    if world < 2:
        print(f"\n### ddp: skipped, {world} GPU(s) here (NCCL data parallelism needs 2 or more)")
        return [{"section": "ddp", "what": "skipped", "gpus": world}]
    tsv = synthetic_images(out, args.images, args.image_size)
    rows = []
    for procs in (1, world):
        target = out / f"ddp-{procs}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "-m", "mmssl.cli"]
        cmd += ["train", "--task", "image-text", "--train", str(tsv), "--out", str(target)]
        cmd += ["--image-model", args.model, "--batch-size", str(args.batch_size * procs), "--precision", "bf16"]
        cmd += ["--max-steps", "60", "--workers", str(args.workers), "--eval-every", "0", "--save-every", "0"]
        subprocess.run(cmd, check=True, capture_output=True)
        logged = [json.loads(line) for line in (target / "metrics.jsonl").read_text().splitlines()]
        rates = [r["samples_per_s"] for r in logged if "samples_per_s" in r and r["step"] > 10]
        rows.append({"section": "ddp", "what": f"{procs} GPU(s)", "samples_per_s": statistics.median(rates)})
    print(f"\n### ddp: {args.model}, batch {args.batch_size} per GPU, bf16")
    print("| processes | samples/s | scaling |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['samples_per_s']:.0f} | {row['samples_per_s'] / rows[0]['samples_per_s']:.2f} |")
    return rows


SECTIONS = {"train": section_train, "embed": section_embed, "faiss": section_faiss, "ddp": section_ddp}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-gpu")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--smoke", action="store_true", help="toy sizes, any device: checks the script")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--grad-cache", type=int, default=64)
    p.add_argument("--texts", type=int, default=50_000)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--embed-batch", type=int, default=256)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=10_000)
    args = p.parse_args()
    if args.smoke:
        args.model, args.images, args.image_size, args.batch_size = "mmssl-vit-micro", 160, 32, 16
        args.epochs, args.workers, args.grad_cache, args.repeats = 3, 1, 4, 1
        args.texts, args.max_length, args.embed_batch = 300, 32, 64
        args.n, args.dim, args.queries = 20_000, 32, 200
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    env = environment()
    print(json.dumps(env))
    rows = []
    for name in args.only.split(","):
        rows += SECTIONS[name.strip()](args, out)
    (out / "results.json").write_text(json.dumps({**env, "args": vars(args), "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
