"""The `abaw` command line: argument parsing, printing and exit codes, in one place.

`args.py` defines every command's arguments and the one registry (COMMANDS);
`commands.py` turns a parsed command line into one library call (the same call a notebook
makes) and prints its result with `show.py`. A command whose module is not built yet says so
in one line and exits 2. Library errors (`AbawError`) print one sentence and exit 1; nothing
prints a traceback for bad user input (`abaw --debug ...` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

from abaw import __version__
from abaw.cli.args import COMMANDS, TRACK_CHOICES, Command
from abaw.errors import AbawError

__all__ = ["COMMANDS", "TRACK_CHOICES", "Command", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="abaw",
        description="From ABAW challenge features to a tuned, ensembled, validated submission "
        "(ERI on Hume-Reaction, Expr on Aff-Wild2).",
        epilog="Pipeline: synth/inspect -> train/tune -> ensemble -> submit/validate. "
        "Run `abaw COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"abaw {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help[0].upper() + cmd.help[1:] + ".",
            epilog=f"example:\n  {cmd.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_args(p)
        p.set_defaults(_target=cmd.target, _name=cmd.name)
    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int] | None:
    """The function behind `module:function`, or None when that module is not built yet."""
    module, _, func = target.partition(":")
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), func, None)


def _omp_wait_policy() -> None:
    """On a CPU that is already busy, idle OpenMP threads sleep instead of spinning.

    Set before torch is imported. With the load average at or above the cores, spinning
    threads take the cores from the working ones: an ERI fusion epoch took 10.6-37.8 s
    instead of 3.3-3.6 s under load 5-6; on a quiet machine spinning is faster (0.8-1.1 s vs
    1.5-1.8 s), so it stays the default there (docs/training.md). A user's own
    OMP_WAIT_POLICY always wins.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        busy = os.getloadavg()[0] >= len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `abaw` console script.

    `--debug` goes before the command (`abaw --debug train ...`); after it is accepted too.
    Without it, no traceback reaches the user: an AbawError prints its sentence, anything
    else one line naming the exception and how to see the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut]
    argv = [a for i, a in enumerate(argv) if a != "--debug" or i >= cut]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _omp_wait_policy()
    fn = _resolve(args._target)
    if fn is None:
        print(f"abaw {args._name}: not built yet in this version ({__version__}).", file=sys.stderr)
        return 2
    try:
        return int(fn(args) or 0)
    except AbawError as e:
        if debug:
            raise
        _print_error(str(e))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system or the network refused: the environment, not a bug
        if debug:
            raise
        from abaw.io import os_failure

        _print_error(str(os_failure(e)))
        return 1
    except Exception as e:  # the last resort: one line, not a traceback
        if debug:
            raise
        where = ""
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" (in {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})"
        _print_error(
            f"unexpected {type(e).__name__}{where}: {e or 'no message'}. "
            "This is a bug or an unhandled input; run with --debug for the traceback "
            f"(abaw --debug {args._name} ...)."
        )
        return 1


def _print_error(message: str) -> None:
    """One `error:` line on stderr; the message is escaped (user data may hold [brackets])."""
    from abaw.console import err_console, escape

    err_console.print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )


if __name__ == "__main__":
    raise SystemExit(main())
