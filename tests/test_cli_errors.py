"""The CLI never shows a raw traceback unless asked (--debug), prints user data escaped,
and does not wrap lines when its output is not a terminal (issue #9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import abaw.cli as cli
from abaw.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _fake_command(monkeypatch, exc: BaseException) -> None:
    def run(args):
        raise exc

    monkeypatch.setattr(cli, "_resolve", lambda target: run)


def test_unexpected_exception_is_one_line_with_debug_hint(monkeypatch, capsys):
    _fake_command(monkeypatch, ZeroDivisionError("division by zero"))
    assert cli.main(["inspect", "--track", "eri", "--data", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "unexpected ZeroDivisionError" in err and "division by zero" in err
    assert "run with --debug for the traceback" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "inspect", "--track", "eri", "--data", "x"],
        ["inspect", "--track", "eri", "--data", "x", "--debug"],
    ],
)
def test_debug_before_or_after_the_command_reraises(monkeypatch, argv):
    _fake_command(monkeypatch, ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError):
        cli.main(argv)


def test_debug_is_in_the_top_level_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--debug" in capsys.readouterr().out


def test_error_message_keeps_square_brackets(monkeypatch, capsys):
    _fake_command(monkeypatch, DataError("labels.csv", "bad ID", row=3, found="[batch2/00030]"))
    assert cli.main(["inspect", "--track", "eri", "--data", "x"]) == 1
    assert "[batch2/00030]" in capsys.readouterr().err


def test_subprocess_traceback_only_with_debug(tmp_path):
    """A real process: an unreadable data folder path (a file) -> sentence; and --debug works."""
    bad = tmp_path / "not-a-folder"
    bad.write_text("x")
    cmd = [sys.executable, "-m", "abaw", "inspect", "--track", "expr", "--data", str(bad)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout


def test_no_wrapping_when_not_a_terminal(tmp_path):
    """A long path printed to a pipe stays on one line (rich would wrap at 80 columns)."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "data"
    deep.mkdir(parents=True)
    cmd = [sys.executable, "-m", "abaw", "inspect", "--track", "eri", "--data", str(deep)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert len(str(deep)) > 120
    assert any(str(deep) in line for line in out.stdout.splitlines()), out.stdout


def test_tables_do_not_wrap_when_not_a_terminal():
    code = (
        "from rich.table import Table\n"
        "from abaw.console import console\n"
        "t = Table(title='runs')\n"
        "t.add_column('run folder')\n"
        "t.add_row('runs/train/' + 'x' * 200)\n"
        "console.print(t)\n"
        "console.print('plain ' + 'y' * 200)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert any("runs/train/" + "x" * 200 in line for line in out.stdout.splitlines())
    assert any("plain " + "y" * 200 in line for line in out.stdout.splitlines())
