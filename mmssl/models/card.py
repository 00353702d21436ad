"""The model card (``README.md``) that ``mmssl train`` and ``mmssl pretrain`` write into each model
directory they save (``write_model_card``, ``write_pretrained_card``).

What a reader of the hub (or of the folder) needs to know, all of it read from the run itself: the
base model of each tower and its licence (the ``license:`` of the base model's own card, where it
has one), the training data (each source's size and sha256 fingerprint), the command's whole config,
the steps trained, the best validation metric with its protocol, and intended use and limits. The
YAML front matter is the hub's (``library_name``, ``license``, ``base_model``, ``tags``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmssl.io import atomic_file, model_fingerprint, read_json_object, sha256_file

CARD_NAME = "README.md"
PROTOCOLS = {
    "mrr": "mean reciprocal rank of each docstring's own code among a chunk of up to 1,000 validation "
    "codes (the CodeSearchNet protocol)",
    "mean_recall": "the mean of recall@1, @5 and @10, text → image and image → text, over the validation pairs",
    "perplexity": "exp of the mean token loss on held-out packed blocks (masked tokens for MLM, next tokens for CLM)",
    "valid_loss": "the method's own loss on two views of held-out images (lower is better)",
}
# What each pretraining command leaves in OUT/best and OUT/final, and what starts from it.
PRETRAINED = {
    "mlm": ("a masked-LM text/code encoder (transformers `AutoModelForMaskedLM`) with its tokenizer",
            "`mmssl train --text-init DIR` (or `--code-init DIR`) starts a dual encoder's tower from it"),
    "clm": ("a causal-LM text/code model (transformers `AutoModelForCausalLM`) with its tokenizer",
            "`mmssl train --text-init DIR` starts a dual encoder's tower from its body"),
    "image": ("a self-supervised image tower (mmssl's saved tower: config and `model.safetensors`)",
              "`mmssl train --task image-text --image-init DIR` starts the image tower from it"),
}  # fmt: skip
_LICENSE_RE = re.compile(r"^license:\s*(\S+)\s*$", re.MULTILINE)


def base_license(init: str | None) -> str | None:
    """The ``license:`` of a base model's own card (a local directory or ``minilm``), if it says one."""
    if not init:
        return None
    from mmssl.models.text import resolve_init

    try:
        card = Path(resolve_init(init)) / CARD_NAME
    except (FileNotFoundError, ImportError):
        return None
    if not card.is_file():
        return None
    found = _LICENSE_RE.search(card.read_text(errors="replace").split("\n---", 1)[0])
    return found.group(1) if found else None


def data_fingerprint(source: str) -> dict:
    """A training source's size and sha256 (a file's bytes; a folder's files, by relative path)."""
    path = Path(source)
    if path.is_file():
        return {"path": source, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        size = sum(p.stat().st_size for p in files)
        return {"path": source, "files": len(files), "bytes": size, "sha256": model_fingerprint(path)}
    return {"path": source, "missing": True}


def _front(bases: list[str], licences: list[str], tags: list[str]) -> list[str]:
    front = ["---", "library_name: mmssl", f"license: {licences[0] if len(licences) == 1 else 'other'}"]
    front += [f"base_model: {b}" for b in bases[:1] if not Path(b).is_absolute()]
    return front + ["tags:", "- mmssl", *(f"- {t}" for t in tags), "---", ""]


def _data_lines(sources: list[str], partition) -> list[str]:
    lines = ["## Training data", ""]
    for source in map(data_fingerprint, sources):
        if source.get("missing"):
            lines.append(f"- `{source['path']}` (no longer there)")
        else:
            count = f"{source['files']:,} files, " if "files" in source else ""
            lines.append(f"- `{source['path']}`: {count}{source['bytes']:,} bytes, sha256 `{source['sha256']}`")
    lines.append(f"- partition: {partition!r}" if partition else "- every record (no partition filter)")
    return lines


def _training_lines(model_dir: Path, run: dict) -> list[str]:
    trained = model_dir / "training.json"
    steps = read_json_object(trained) if trained.is_file() else {}
    lines = ["", "## Training", ""]
    if steps:
        why = f", stopped by {steps['stopped_by']}" if steps.get("stopped_by") else ""
        lines.append(f"- {steps.get('step')} of {steps.get('max_steps')} steps in {steps.get('minutes')} minutes{why}")
    return lines + ["- the command's whole config:", "", "```json", json.dumps(run, indent=2, default=str), "```", ""]


def _metric_lines(summary: dict, metric: str) -> list[str]:
    lines = ["## Metrics", ""]
    best, valid = summary.get("best"), summary.get("valid") or {}
    if isinstance(best, (int, float)) and abs(best) != float("inf"):
        lines.append(f"- best validation {metric}: {best:.4f}; last validation (step {valid.get('step')}): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in valid.items() if isinstance(v, float)))  # fmt: skip
        lines.append(f"- protocol: {PROTOCOLS.get(metric, metric)}")
    else:
        lines.append("- no validation split was scored: no metric (score it with `mmssl eval --model DIR`)")
    return lines


def model_card(model_dir: Path, run: dict, summary: dict, metric: str) -> str:
    """The card's text for ``model_dir``: ``run`` is the command's whole config, ``summary`` what
    training returned (``Trainer.fit``), ``metric`` the validation metric's name."""
    config = read_json_object(model_dir / "dual_encoder.json")
    first, second = config["modalities"]
    towers = config["towers"]
    bases = sorted({t["init"] for t in towers.values() if t.get("init")})
    licences = sorted({lic for lic in map(base_license, bases) if lic})
    sources = [s for s in str(run.get("train", "")).split(",") if s]
    front = _front(bases, licences, ["dual-encoder", f"{first}-{second}"])
    lines = [f"# {first} ↔ {second} dual encoder, trained with mmssl", ""]
    lines += [f"Embeds {first} and {second} into one {config['embed_dim']}-dimensional space (L2-normalized;"
              " the inner product ranks). Load it with `DualEncoder.from_pretrained(DIR)`, index a collection with"
              " `mmssl index build --model DIR`, or take it elsewhere with `mmssl export`.", ""]  # fmt: skip
    lines += ["## Towers", ""]
    for modality, tower in towers.items():
        base = tower.get("init") or f"from scratch ({tower.get('arch', tower.get('kind'))}, {tower.get('preset', '')})"
        extra = ", ".join(f"{k} {tower[k]}" for k in ("pooling", "max_length", "model_name") if tower.get(k))
        lines.append(f"- {modality}: {tower['kind']} tower, base {base}" + (f"; {extra}" if extra else ""))
    if config.get("shared"):
        lines.append("- one tower shared by both sides")
    lic = ", ".join(licences) if licences else "none stated (the training data's licences apply)"
    lines += ["", f"Base model licence: {lic}.", ""]
    lines += _data_lines(sources, run.get("train_partition"))
    lines += _training_lines(model_dir, run)
    lines += _metric_lines(summary, metric)
    lines += ["", "## Intended use and limits", ""]
    lines += [f"- Retrieval between {first} and {second} of the kind it was trained on; quality on other data"
              " is unmeasured: score it on yours with `mmssl eval` before relying on it.",
              "- It ranks by similarity and knows nothing of correctness, safety or licences of what it"
              " retrieves.", ""]  # fmt: skip
    return "\n".join(front + lines)


def pretrained_card(model_dir: Path, run: dict, summary: dict, kind: str, metric: str) -> str:
    """The card of a pretraining run's saved model (``kind``: mlm, clm or image; see PRETRAINED)."""
    what, use = PRETRAINED[kind]
    init = run.get("init") or run.get("image_weights")
    bases = [str(init)] if init else []
    licences = sorted({lic for lic in map(base_license, bases) if lic}) if kind != "image" else []
    sources = run.get("data") or ([run["dataset"]] if run.get("dataset") else [])
    sources = [sources] if isinstance(sources, str) else [str(s) for s in sources]
    method = run.get("method") or kind
    front = _front(bases, licences, ["pretraining", f"{method}"])
    lines = [f"# {method} pretraining with mmssl", "", f"This folder holds {what}.", ""]
    lines += [f"- base: {init}" if init else "- base: from scratch (random initialization)", ""]
    lines += _data_lines(sources, run.get("partition"))
    lines += _training_lines(model_dir, run)
    lines += _metric_lines(summary, metric)
    lines += ["", "## Intended use and limits", ""]
    lines += [f"- An initialization, not a search model: {use}, then fine-tune and score it with `mmssl eval`.",
              "- What it learned is the statistics of its training data; nothing of it is checked for"
              " correctness or licences.", ""]  # fmt: skip
    return "\n".join(front + lines)


def write_model_card(model_dir: Path, run: dict, summary: dict, metric: str) -> Path:
    """Write ``model_dir/README.md`` atomically (a model directory saved by ``mmssl train``)."""
    return _write(model_dir, model_card(model_dir, run, summary, metric))


def write_model_cards(out: Path, run: dict, summary: dict, metric: str) -> list[Path]:
    """The card of each dual encoder a training run saved (``out/final``, ``out/best``)."""
    saved = [out / name for name in ("final", "best") if (out / name / "dual_encoder.json").is_file()]
    return [write_model_card(model_dir, run, summary, metric) for model_dir in saved]


def write_pretrained_cards(out: Path, run: dict, summary: dict, kind: str, metric: str) -> list[Path]:
    """Write the card into ``out/final`` and ``out/best`` (those that exist), atomically."""
    return [
        _write(out / saved, pretrained_card(out / saved, run, summary, kind, metric))
        for saved in ("final", "best")
        if (out / saved).is_dir()
    ]


def _write(model_dir: Path, text: str) -> Path:
    with atomic_file(model_dir / CARD_NAME, "w") as f:
        f.write(text)
    return model_dir / CARD_NAME
