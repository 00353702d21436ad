"""The ``mmssl`` command line.

Each command is a frozen config dataclass plus ``main(config)`` in its own module, registered below
by name. The top level reads the command name; ``transformers.HfArgumentParser`` turns the rest of
the arguments into the command's config (flags come from the dataclass fields and their ``help``
metadata, so a command's options are declared once). Modules are imported only when their command
runs, so ``mmssl --help`` stays fast.

Errors a user can fix (bad paths, bad values) are ``ValueError``/``FileNotFoundError`` raised by the
commands; they are printed as one line, ``mmssl CMD: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    summary: str


COMMANDS: dict[str, Command] = {
    "env": Command("mmssl.envinfo", "EnvConfig", "show versions, devices, precisions and FAISS GPU support"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<16} {cmd.summary}" for name, cmd in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="mmssl",
        description="Multimodal contrastive retrieval: train dual encoders, index, search.",
        epilog=f"commands:\n{lines}\n\nRun 'mmssl COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND", help="one of the commands below"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _top_parser()
    # Only the first token (a command, or a top-level option) is ours; the rest belongs to the command.
    args = parser.parse_args(argv[:1])
    if args.version:
        from mmssl import __version__

        print(f"mmssl {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    spec = COMMANDS[args.command]
    module = importlib.import_module(spec.module)
    config_cls = getattr(module, spec.config)
    from transformers import HfArgumentParser

    sub = HfArgumentParser(config_cls, prog=f"mmssl {args.command}", description=config_cls.__doc__)
    (config,) = sub.parse_args_into_dataclasses(argv[1:])
    try:
        return int(module.main(config) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmssl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
