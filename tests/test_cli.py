"""The command line: help for every command, clean one-line errors, and import costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmssl import cli


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name, cmd in cli.COMMANDS.items():
        assert name in out and cmd.summary in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "commands:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert f"mmssl {name}" in capsys.readouterr().out


def test_unknown_command_is_rejected(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_env_reports_this_machine_as_json(capsys):
    assert cli.main(["env", "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"] == "cpu"
    assert "fp32" in info["precisions"] and "fp16" not in info["precisions"]
    assert info["faiss"] is not None and info["torch"].startswith("2.")


def test_user_errors_are_one_line_without_traceback(capsys):
    assert cli.main(["env", "--device", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmssl env: error: --device 'nonsense'") and "Traceback" not in err


def test_an_interrupted_command_says_so_in_one_line(monkeypatch, capsys):
    """Ctrl-C (or the app's SIGTERM, raised as Ctrl-C) ends a command with exit status 130 and one line."""
    import importlib

    def interrupted(config):
        raise KeyboardInterrupt

    command = cli.COMMANDS["env"]
    monkeypatch.setattr(importlib.import_module(command.module), command.entry, interrupted)
    assert cli.main(["env", "--json"]) == 130
    assert capsys.readouterr().err == "mmssl env: interrupted\n"


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "mmssl"  # the venv's bin, whether or not it is on PATH
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith("mmssl ")


def test_importing_the_loss_library_stays_light():
    """Import cost stays where it belongs: `import mmssl.losses` pulls in neither gradio, faiss nor transformers."""
    code = (
        "import sys, mmssl.losses, mmssl.distributed, mmssl.runtime;"
        "print([m for m in ('gradio', 'faiss', 'transformers', 'open_clip') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
