"""The ``mmssl`` command line.

Each command is a frozen config dataclass plus an entry function taking it, in the ``commands``
module of its package (``mmssl.commands``, ``mmssl.data.commands``, ...), registered below
by name (a name may have two words: ``data mine-code``). ``transformers.HfArgumentParser`` turns
the command's arguments into its config: flags come from the dataclass fields and their ``help``
metadata, so a command's options are declared once. Modules are imported only when their command
runs, so ``mmssl --help`` stays fast.

``--config FILE`` (TOML, YAML or JSON, any command) supplies values for the config's fields; flags
given on the command line override them. Unknown keys are an error naming the file and the key.

Every value is checked against its option's range (``mmssl.checks``) before the command runs.
Errors a user can fix (bad paths, bad values) are ``ValueError``/``FileNotFoundError`` raised by the
commands; they are printed as one line, ``mmssl CMD: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    summary: str
    positional: str | None = None  # a list field filled by the leading non-option arguments
    entry: str = "main"  # the function of ``module`` that runs the command


COMMANDS: dict[str, Command] = {
    "env": Command(
        "mmssl.commands", "EnvConfig", "show versions, devices, precisions and FAISS GPU support", entry="env"
    ),
    "data mine-code": Command(
        "mmssl.data.commands",
        "MineCodeConfig",
        "mine a CodeSearchNet-format corpus from Python source trees",
        "sources",
        entry="mine_code",
    ),
    "data make-images": Command(
        "mmssl.data.commands",
        "MakeImagesConfig",
        "make an image-caption set offline (emoji, shapes, digits)",
        entry="make_images",
    ),
    "train": Command(
        "mmssl.commands",
        "TrainConfig",
        "train a dual encoder (text-code, image-text, ...) by its recipe",
        entry="train",
    ),
    "mine-negatives": Command(
        "mmssl.negatives.commands",
        "MineNegativesConfig",
        "mine hard negatives for every training pair (model and/or BM25)",
    ),
    "pretrain mlm": Command("mmssl.pretrain.commands", "MLMConfig", "pretrain a masked language model (BERT/RoBERTa)"),
    "pretrain clm": Command("mmssl.pretrain.commands", "CLMConfig", "pretrain a causal language model (GPT-2)"),
    "pretrain contrastive": Command(
        "mmssl.pretrain.commands",
        "ContrastivePretrainConfig",
        "pretrain a code tower on pairs code gives itself (name, signature, halves)",
        entry="contrastive",
    ),
    **{
        f"pretrain {m}": Command("mmssl.pretrain.image_ssl", f"{c}Config", f"pretrain an image tower: {d}")
        for m, c, d in (
            ("simclr", "SimCLR", "SimCLR (contrastive, two views)"),
            ("byol", "BYOL", "BYOL (online/target networks, EMA)"),
            ("barlow", "Barlow", "Barlow Twins (cross-correlation)"),
            ("vicreg", "VICReg", "VICReg (variance, invariance, covariance)"),
            ("rotation", "Rotation", "rotation prediction (pretext)"),
            ("jigsaw", "Jigsaw", "jigsaw permutation prediction (pretext)"),
            ("deepcluster", "Deepcluster", "DeepCluster (FAISS k-means pseudo-labels)"),
        )
    },
    "eval": Command(
        "mmssl.commands",
        "EvalConfig",
        "score a model by its recipe (MRR, recall@k, zero-shot), with baselines",
        entry="evaluate",
    ),
    "index build": Command(
        "indexing.commands", "IndexBuildConfig", "embed a collection and build a search index", entry="build_main"
    ),
    "embed": Command(
        "indexing.parquet", "EmbedConfig", "embed a collection into parquet files (local or Spark)", entry="embed_main"
    ),
    "index add": Command("indexing.commands", "IndexAddConfig", "embed and add records to an index", entry="add_main"),
    "index remove": Command(
        "indexing.commands", "IndexRemoveConfig", "remove items by id or payload field", entry="remove_main"
    ),
    "index search": Command(
        "indexing.commands",
        "IndexSearchConfig",
        "search an index: dense, lexical (BM25) or hybrid",
        entry="search_main",
    ),
    "index info": Command(
        "indexing.commands", "IndexInfoConfig", "what an index holds, files checked", entry="info_main"
    ),
    "export": Command(
        "mmssl.export.commands", "ExportConfig", "write a model for other tools (ONNX, int8, sentence-transformers)"
    ),
    "push": Command(
        "mmssl.export.commands", "PushConfig", "upload a model or export to the Hugging Face hub", entry="push"
    ),
    "demo": Command("demo.commands", "DemoConfig", "the Gradio cross-modal search app over index directories"),
    "demo default": Command(
        "demo.commands",
        "DemoDefaultConfig",
        "build the offline default (corpus, model, indexes) and open the app",
        entry="demo_default",
    ),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<18} {cmd.summary}" for name, cmd in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="mmssl",
        description="Multimodal contrastive retrieval: train dual encoders, index, search.",
        epilog=f"commands:\n{lines}\n\nRun 'mmssl COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    """The registered command at the head of ``argv`` (one or two words) and the rest."""
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    return None, argv


def read_config_file(path: str) -> dict:
    """Values from a TOML, YAML or JSON file (chosen by extension)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    if p.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"--config {path}: use a .toml, .yaml/.yml or .json file")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif p.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as e:  # the parsers' own error types (with their line numbers), bad UTF-8
        message = " ".join(str(e).split())
        raise ValueError(f"--config {path}: {message}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a table of option = value")
    return {k.replace("-", "_"): v for k, v in values.items()}


def merge_repeated(argv: list[str], list_flags: set[str]) -> list[str]:
    """``--index a --index b c`` -> ``--index a b c``: a list option given several times accumulates
    (argparse's ``nargs='+'`` would keep only the last)."""
    values: dict[str, list[str]] = {}
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        flag, eq, inline = arg.partition("=")
        if flag in list_flags:
            if flag not in values:
                values[flag] = []
                out.append(flag)
            current = flag
            if eq:
                values[flag].append(inline)
            continue
        if arg.startswith("-"):
            current = None
        if current is not None:
            values[current].append(arg)
        else:
            out.append(arg)
    merged: list[str] = []
    for arg in out:
        merged.append(arg)
        if arg in values:
            merged += values[arg]
    return merged


def _group_types(config_cls) -> dict[str, type] | None:
    """A ``GroupedConfig``'s groups (name -> dataclass), or None for a flat config."""
    from mmssl.options import GroupedConfig

    return config_cls.group_types() if issubclass(config_cls, GroupedConfig) else None


def config_class(name: str) -> type:
    """The config class of command ``name`` (its module imported)."""
    spec = COMMANDS[name]
    return getattr(importlib.import_module(spec.module), spec.config)


def placeholder_argv(name: str) -> list[str]:
    """Arguments that fill command ``name``'s required options with placeholders (relative paths, a
    choice's first value), so that a probe of one option's check (``mmssl.checks.bad_values``) reaches it."""
    from mmssl.checks import field_kinds, option_fields

    spec, argv = COMMANDS[name], []
    fields = option_fields(config_class(name))
    for f, tp in fields:
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            choices = field_kinds(tp)[2]
            if f.name == spec.positional:
                argv = ["src", *argv]
            else:
                argv += [f"--{f.name}", choices[0] if choices else "out.jsonl" if f.name == "out" else "x"]
    if "--out" not in argv and "out" in {f.name for f, _ in fields}:
        argv += ["--out", "out"]
    return argv


def parse_config(name: str, argv: list[str]):
    """The command's config object from its arguments (and ``--config FILE``), without running it.

    A flat config is one dataclass; a ``GroupedConfig`` is parsed as its groups (each shown as a
    section of ``--help``) and assembled from them."""
    spec = COMMANDS[name]
    config_cls = config_class(name)
    from transformers import HfArgumentParser

    groups = _group_types(config_cls)
    parts = list(groups.values()) if groups else [config_cls]
    for part in parts:  # HfArgumentParser shows a dataclass with this attribute as its own section
        if groups:
            part._argument_group_name = getattr(part, "GROUP_TITLE", part.__name__)
    all_fields = [f for part in parts for f in dataclasses.fields(part)]
    argv = list(argv)
    if spec.positional:
        # Leading values before the first option are the positional list (``SRC...``).
        n = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
        if n:
            argv = [f"--{spec.positional}", *argv[:n], *argv[n:]]
    list_flags = {f"--{f.name}" for f in all_fields if str(f.type).startswith("list")}
    argv = merge_repeated(argv, list_flags)
    parser = HfArgumentParser(parts, prog=f"mmssl {name}", description=config_cls.__doc__)
    parser.error = _one_line_error  # argparse prints its whole usage first; the message names the option
    parser.add_argument("--config", default=None, help="TOML/YAML/JSON file of option values (flags override)")
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        values = read_config_file(pre.config)
        if groups:
            from mmssl.options import flatten_nested

            values = flatten_nested(values, groups, f"--config {pre.config}")
        unknown = sorted(set(values) - {f.name for f in all_fields})
        if unknown:
            raise ValueError(f"--config {pre.config}: unknown option {unknown[0]!r} for 'mmssl {name}'")
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the file satisfies a required flag
            if action.dest in values:
                action.required = False
    namespace = parser.parse_args(argv)
    if groups:
        config = config_cls(
            **{g: t(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(t)}) for g, t in groups.items()}
        )
    else:
        config = config_cls(**{f.name: getattr(namespace, f.name) for f in all_fields})
    from mmssl.checks import check_config

    check_config(config)  # ranges, types, NaN: before the command loads or writes anything
    return config


def _one_line_error(message: str):
    """argparse's error (a bad or missing flag) as the one-line error every other mistake gets."""
    message = re.sub(r"^argument (?:--[\w]+/)?(--[\w-]+)", r"\1", message)  # HfArgumentParser's two spellings
    raise ValueError(f"{message} (--help lists the options)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name, rest = _split_command(argv)
    if name is None:
        if argv and not argv[0].startswith("-"):
            print(f"mmssl: error: unknown command {' '.join(argv[:2])!r}; 'mmssl --help' lists them", file=sys.stderr)
            return 2
        args = _top_parser().parse_args(argv)  # --help or --version
        if args.version:
            from mmssl import __version__

            print(f"mmssl {__version__}")
        else:
            _top_parser().print_help()
        return 0
    try:
        config = parse_config(name, rest)
        module = importlib.import_module(COMMANDS[name].module)
        return int(getattr(module, COMMANDS[name].entry)(config) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmssl {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to the app: unwound (atomic writes, cleanup), one line
        print(f"mmssl {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
