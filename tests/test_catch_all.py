"""Every `abaw` command, fed its documented bad inputs, answers with one clear sentence: never
the CLI's last resort "unexpected ... This is a bug or an unhandled input" (issue #18).

Two walks over the registry of commands (abaw.cli.COMMANDS):
- the hand-written cases below: the mistakes of docs/*.md and issue #18, per command;
- a generated case per command, built from its own arguments: every path option gets the
  wrong kind of path (a file where a folder goes, a folder where a file goes), every name an
  unsafe one, so a command added later is walked too.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _hardening_helpers import Workspace, journal, make_workspace, nan_ensemble, run, write_sweep

import abaw.io
from abaw.cli import COMMANDS, build_parser

CATCH_ALL = "This is a bug or an unhandled input"
Case = Callable[[Workspace], list]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("walk"))


def _garbage_journal(ws: Workspace) -> Path:
    runs = ws.runs_copy("runs-garbage")
    lines = journal(runs).read_text().splitlines(keepends=True)
    lines[3] = "this line is not JSON\n"
    journal(runs).write_text("".join(lines))
    return runs


def _empty_space(ws: Workspace) -> Path:
    return write_sweep(ws.root / "nothing.toml", name="nothing", space="")


def _changed_sweep(ws: Workspace) -> Path:
    space = '"train.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }'
    return write_sweep(ws.root / "changed.toml", name="tiny", space=space)


def _other_data(ws: Workspace) -> Path:
    other = ws.root / "data" / "eri-seed1"
    if not other.exists():
        assert run(["synth", "--track", "eri", "--out", other, "--scale", "tiny", "--seed", 1]) == 0
    return other


def _read_only(ws: Workspace) -> Path:
    ro = ws.root / "read-only"
    ro.mkdir(exist_ok=True)
    return ro


def _nan_runs(ws: Workspace) -> Path:
    return nan_ensemble(ws)


def _manifest_not_an_object(ws: Workspace, text: str) -> Path:
    """A copy of the submission whose NAME.manifest.json is JSON but not an object."""
    subs = ws.root / f"subs-manifest-{len(text)}"
    if not subs.exists():
        shutil.copytree(ws.submission.parent.parent, subs)
        (subs / "e.manifest.json").write_text(text)
    return subs / "e" / ws.submission.name


def _ensemble_manifest_not_an_object(ws: Workspace, text: str) -> Path:
    runs = ws.runs_copy(f"runs-manifest-{len(text)}")
    (runs / "ensembles" / "e" / "manifest.json").write_text(text)
    return runs


def _media(ws: Workspace) -> Path:
    """An ERI set with its videos and random resnet18 weights, for `abaw extract` (made once;
    skipped without the extract extra, as tests/test_extract*.py are)."""
    from conftest import require

    for module in ("torchvision", "av", "cv2"):
        require(module)
    from abaw.extract import testmedia as tm

    media = ws.root / "media"
    if not (media / "r18.pth").exists():
        tm.eri_data(media / "eri", media / "videos", splits={"train": 1, "devel": 1}, seconds=1.0)
        tm.random_weights("torchvision:resnet18", media / "r18.pth")
    return media


def _extract(ws: Workspace, *more: object) -> list:
    """A good `abaw extract` of the media set (paths only: `_media` makes them) plus `more`,
    whose options replace the good ones of the same name."""
    m = ws.root / "media"
    good = {
        "--data": m / "eri",
        "--videos": m / "videos",
        "--name": "F",
        "--backbone": "torchvision:resnet18",
        "--weights": m / "r18.pth",
        "--input-size": 64,
        "--workers": 0,
        "--fps": 2,
    }
    pairs = dict(zip(more[::2], more[1::2], strict=True))
    return ["extract", "--track", "eri", *(x for kv in {**good, **pairs}.items() for x in kv)]


def _extract_case(*more: object) -> Case:
    """A CASES entry: the media made, then `_extract` with `more`."""

    def case(ws: Workspace) -> list:
        _media(ws)
        return _extract(ws, *more)

    return case


TUNE = ["tune", "--trials", 2]
CASES: dict[str, dict[str, Case]] = {
    "synth": {
        "out is a file": lambda w: ["synth", "--track", "eri", "--out", w.a_file],
        "out is a non-empty folder": lambda w: ["synth", "--track", "eri", "--out", w.eri],
    },
    "inspect": {
        "data is a file": lambda w: ["inspect", "--track", "eri", "--data", w.a_file],
        "data does not exist": lambda w: ["inspect", "--track", "expr", "--data", w.root / "no"],
        "data of the other track": lambda w: ["inspect", "--track", "expr", "--data", w.eri],
    },
    "train": {
        "runs is a file": lambda w: [
            "train",
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            w.a_file,
        ],
        "runs is read-only": lambda w: [
            "train",
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            _read_only(w),
        ],
        "sweep is a folder": lambda w: ["train", "--sweep", w.a_dir, "--data", w.eri],
        "sweep is arbitrary text": lambda w: ["train", "--sweep", w.text, "--data", w.eri],
        "name escapes the runs folder": lambda w: [
            "train",
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            w.runs,
            "--name",
            "../x",
        ],
    },
    "tune": {
        "study ''": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            w.runs,
            "--study",
            "",
        ],
        "negative timeout": lambda w: [*TUNE, "--sweep", w.sweep, "--data", w.eri, "--timeout", -5],
        "empty space": lambda w: [
            *TUNE,
            "--sweep",
            _empty_space(w),
            "--data",
            w.eri,
            "--runs",
            w.runs,
        ],
        "resume with a changed sweep": lambda w: [
            *TUNE,
            "--sweep",
            _changed_sweep(w),
            "--data",
            w.eri,
            "--runs",
            w.runs,
        ],
        "resume on other data": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            _other_data(w),
            "--runs",
            w.runs,
        ],
        "runs is a file": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            w.a_file,
        ],
        "runs is read-only": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            _read_only(w),
        ],
        "garbage journal line": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--runs",
            _garbage_journal(w),
        ],
        "storage is not a URL": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--storage",
            "runs/db",
        ],
        "storage driver unknown": lambda w: [
            *TUNE,
            "--sweep",
            w.sweep,
            "--data",
            w.eri,
            "--storage",
            "nosuch://h/db",
        ],
    },
    "studies": {
        "runs is a file": lambda w: ["studies", "--runs", w.a_file],
        "no journal": lambda w: ["studies", "--runs", w.a_dir],
        "garbage journal line": lambda w: ["studies", "--runs", _garbage_journal(w)],
        "journal is a folder": lambda w: [
            "studies",
            "--storage",
            w.a_dir.with_suffix(".log").mkdir(exist_ok=True) or w.a_dir.with_suffix(".log"),
        ],
    },
    "ensemble": {
        "a study named twice": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--studies",
            "tiny,tiny",
            "--runs",
            w.runs,
            "--name",
            "twice",
        ],
        "a study in two --studies": lambda w: [
            "ensemble",
            "--studies",
            "tiny",
            "--studies",
            "tiny",
            "--runs",
            w.runs,
            "--name",
            "twice2",
        ],
        "a CSV member": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--predictions",
            w.member_csv,
            "--runs",
            w.runs,
            "--name",
            "csv",
        ],
        "a cut .npz member": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--predictions",
            w.cut_npz.parent,
            "--runs",
            w.runs,
            "--name",
            "cut",
        ],
        "name escapes": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--studies",
            "tiny",
            "--runs",
            w.runs,
            "--name",
            "../x",
        ],
        "runs is a file": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--studies",
            "tiny",
            "--runs",
            w.a_file,
            "--name",
            "f",
        ],
        "garbage journal line": lambda w: [
            "ensemble",
            "--track",
            "eri",
            "--studies",
            "tiny",
            "--runs",
            _garbage_journal(w),
            "--name",
            "g",
        ],
        "other track": lambda w: [
            "ensemble",
            "--track",
            "expr",
            "--studies",
            "tiny",
            "--runs",
            w.runs,
            "--name",
            "t",
        ],
    },
    "submit": {
        "a CSV as predictions": lambda w: [
            "submit",
            "--track",
            "eri",
            "--predictions",
            w.submission,
            "--data",
            w.eri,
            "--out",
            w.root / "s1",
        ],
        "a cut .npz": lambda w: [
            "submit",
            "--track",
            "eri",
            "--predictions",
            w.cut_npz,
            "--data",
            w.eri,
            "--out",
            w.root / "s2",
        ],
        "NaN in the ensemble": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "e",
            "--runs",
            _nan_runs(w),
            "--data",
            w.eri,
            "--out",
            w.root / "s3",
        ],
        "out is a file": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "e",
            "--runs",
            w.runs,
            "--data",
            w.eri,
            "--out",
            w.a_file,
        ],
        "name escapes": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "e",
            "--runs",
            w.runs,
            "--data",
            w.eri,
            "--name",
            "../x",
        ],
        "data is a file": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "e",
            "--runs",
            w.runs,
            "--data",
            w.a_file,
            "--out",
            w.root / "s4",
        ],
        "no such ensemble": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "nope",
            "--runs",
            w.runs,
            "--data",
            w.eri,
        ],
        "ensemble manifest is a JSON list": lambda w: [
            "submit",
            "--ensemble",
            "e",
            "--runs",
            _ensemble_manifest_not_an_object(w, "[1, 2]"),
            "--data",
            w.eri,
            "--out",
            w.root / "s5",
        ],
        "ensemble manifest is a JSON string (with --track)": lambda w: [
            "submit",
            "--track",
            "eri",
            "--ensemble",
            "e",
            "--runs",
            _ensemble_manifest_not_an_object(w, '"track"'),
            "--data",
            w.eri,
            "--out",
            w.root / "s6",
        ],
    },
    "validate": {
        "an ERI file as Expr": lambda w: [
            "validate",
            "--track",
            "expr",
            w.submission,
            "--data",
            w.expr,
        ],
        "arbitrary text (ERI)": lambda w: ["validate", "--track", "eri", w.text, "--data", w.eri],
        "arbitrary text (Expr)": lambda w: [
            "validate",
            "--track",
            "expr",
            w.text,
            "--data",
            w.expr,
        ],
        "a binary file": lambda w: ["validate", "--track", "expr", w.cut_npz, "--data", w.expr],
        "no such file": lambda w: [
            "validate",
            "--track",
            "eri",
            w.root / "none.csv",
            "--data",
            w.eri,
        ],
        "data is a file": lambda w: [
            "validate",
            "--track",
            "eri",
            w.submission,
            "--data",
            w.a_file,
        ],
        "manifest is a JSON list": lambda w: [
            "validate",
            _manifest_not_an_object(w, "[1, 2]"),
            "--data",
            w.eri,
        ],
        "manifest is JSON null": lambda w: [
            "validate",
            _manifest_not_an_object(w, "null"),
            "--data",
            w.eri,
        ],
        "manifest's submission is a string": lambda w: [
            "validate",
            _manifest_not_an_object(w, '{"submission": "eri"}'),
            "--data",
            w.eri,
        ],
    },
    "report": {
        "ensemble name escapes": lambda w: ["report", "--ensemble", "../x", "--runs", w.runs],
        "study ''": lambda w: ["report", "--study", "", "--runs", w.runs],
        "out is a file": lambda w: [
            "report",
            "--ensemble",
            "e",
            "--runs",
            w.runs,
            "--out",
            w.a_file,
        ],
        "garbage journal line": lambda w: [
            "report",
            "--study",
            "tiny",
            "--runs",
            _garbage_journal(w),
        ],
        "no such study": lambda w: ["report", "--study", "nope", "--runs", w.runs],
    },
    "extract": {  # paths relative to the workspace (the cases run there)
        "weights file missing": _extract_case("--weights", "media/nothing.pth"),
        "weights is a folder": _extract_case("--weights", "media"),
        "data does not exist": _extract_case("--data", "media/nowhere"),
        "videos is a file": _extract_case("--videos", "media/r18.pth"),
        "shard 3/2": _extract_case("--shard", "3/2"),
        "shard x/y": _extract_case("--shard", "x/y"),
        "unknown backbone": _extract_case("--backbone", "nosuch"),
        "unknown torchvision model": _extract_case("--backbone", "torchvision:nosuch"),
        "an Expr option on ERI": _extract_case("--images", "media"),
    },
    "demo": {
        "out is a file": lambda w: ["demo", "--out", w.a_file, "--scale", "tiny", "--minutes", 0.1],
        "no minutes": lambda w: ["demo", "--out", w.root / "demo", "--minutes", 0],
    },
}

HAND_WRITTEN = [(cmd, name) for cmd, cases in CASES.items() for name in cases]


@pytest.fixture(autouse=True)
def _read_only_folder(monkeypatch, ws):
    """`read-only`: as root every folder is writable, so a write test there fails as the OS
    would for another user (EACCES)."""
    real = tempfile.mkstemp
    ro = str(ws.root / "read-only")

    def mkstemp(*a, dir=None, **kw):  # noqa: A002  (tempfile's own name)
        if dir is not None and str(dir).startswith(ro):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(abaw.io.tempfile, "mkstemp", mkstemp)
    monkeypatch.chdir(ws.root)  # relative defaults (runs/, demo/) land in the workspace
    yield
    torch.set_num_threads(1)  # a tune or train case may have changed it


def _check(argv: list, capsys) -> str:
    """Run `abaw ARGV`: a non-zero exit, something said, and never the catch-all."""
    rc = run(argv)
    out, err = capsys.readouterr()
    assert (out + err).strip(), f"abaw {' '.join(map(str, argv))} said nothing"
    assert CATCH_ALL not in out + err, f"abaw {' '.join(map(str, argv))}:\n{err}"
    assert "Traceback" not in out + err
    assert rc != 0, f"abaw {' '.join(map(str, argv))} accepted a bad input:\n{out}\n{err}"
    return err


@pytest.mark.parametrize(
    ("command", "case"), HAND_WRITTEN, ids=[f"{c}: {n}" for c, n in HAND_WRITTEN]
)
def test_documented_bad_input_is_one_clear_sentence(ws, capsys, command, case):
    err = _check(CASES[command][case](ws), capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) <= 1, err  # one sentence (validate and inspect list problems instead)


# ---------------------------------------------------------------- generated from the parser
#
# Each command's good invocation (BASE), then one case per path, name or URL argument of its
# parser with the wrong kind of value in its place: a file for a DIR, a folder for a FILE,
# arbitrary text for a PATH, "../x" for a NAME, an unknown driver for a URL.

_BAD = {"DIR": "a_file", "FILE": "a_dir", "PATH": "text", "NAME": "../x", "URL": "nosuch://h/db"}
BASE: dict[str, Case] = {
    "synth": lambda w: [
        "synth",
        "--track",
        "eri",
        "--out",
        w.root / "gen-synth",
        "--scale",
        "tiny",
    ],
    "inspect": lambda w: ["inspect", "--track", "expr", "--data", w.expr],
    "train": lambda w: ["train", "--sweep", w.sweep, "--data", w.eri, "--runs", w.runs],
    "tune": lambda w: [*TUNE, "--sweep", w.sweep, "--data", w.eri, "--runs", w.runs],
    "studies": lambda w: ["studies", "--runs", w.runs],
    "ensemble": lambda w: [
        "ensemble",
        "--track",
        "eri",
        "--studies",
        "tiny",
        "--runs",
        w.runs,
        "--name",
        "gen",
    ],
    "submit": lambda w: [
        "submit",
        "--track",
        "eri",
        "--ensemble",
        "e",
        "--runs",
        w.runs,
        "--data",
        w.eri,
        "--out",
        w.root / "gen-subs",
    ],
    "validate": lambda w: ["validate", "--track", "eri", w.submission, "--data", w.eri],
    "report": lambda w: [
        "report",
        "--study",
        "tiny",
        "--runs",
        w.runs,
        "--out",
        w.root / "gen-report",
    ],
    "demo": lambda w: ["demo", "--out", w.root / "gen-demo", "--scale", "tiny", "--minutes", 0.05],
    "extract": lambda w: _extract(w),
}
# What a BASE needs on disk, made when its cases run (BASE itself only names paths: the
# generated cases are listed with a fake workspace).
MAKE: dict[str, Callable[[Workspace], object]] = {"extract": _media}


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def _bad_value(ws: Workspace, action) -> object | None:
    kind = _BAD.get(str(action.metavar))
    return None if kind is None else getattr(ws, kind, kind)


def _substituted(ws: Workspace, command: str) -> list[tuple[str, list]]:
    """(what, argv): the command's BASE with one argument given the wrong kind of value."""
    p = _subparsers()[command]
    rivals = {
        a.dest: [b for b in g._group_actions if b is not a]
        for g in p._mutually_exclusive_groups
        for a in g._group_actions
    }
    out = []
    for a in p._actions:
        value = _bad_value(ws, a)
        if value is None:
            continue
        argv = [str(x) for x in BASE[command](ws)]
        flags = set(a.option_strings) | {
            f for b in rivals.get(a.dest, []) for f in b.option_strings
        }
        for i in range(len(argv) - 1, 0, -1):  # drop the argument and its rivals from BASE
            if argv[i] in flags:
                del argv[i : i + 2]
        if not a.option_strings:  # the positional: replace it where BASE has it
            pos = next(
                i
                for i, x in enumerate(argv[1:], 1)
                if not x.startswith("--") and not argv[i - 1].startswith("--")
            )
            argv[pos] = str(value)
        else:
            argv += [a.option_strings[0], str(value)]
        out.append((a.option_strings[0] if a.option_strings else a.dest, argv))
    return out


def _all_bad(ws: Workspace, command: str) -> list:
    """A command without a BASE: every path, name and URL wrong at once (and required
    arguments of other kinds given their first choice, or -1)."""
    p = _subparsers()[command]
    exclusive = {id(a) for g in p._mutually_exclusive_groups for a in g._group_actions[1:]}
    argv: list = [command]
    for a in p._actions:
        if a.dest == "help" or id(a) in exclusive or a.nargs == 0:
            continue
        value = _bad_value(ws, a)
        if value is None and (a.required or not a.option_strings):
            value = a.choices[0] if a.choices else "-1"
        if value is None:
            continue
        argv += [*a.option_strings[:1], value]
    return argv


GENERATED = [(c.name, "all wrong") for c in COMMANDS if c.name not in BASE]


def _generated_cases() -> list[tuple[str, str]]:
    from _hardening_helpers import Workspace as W

    fake = W(*(Path(f"/{f}") for f in W.__dataclass_fields__))
    return [(c, what) for c in BASE for what, _ in _substituted(fake, c)] + GENERATED


@pytest.mark.parametrize(("command", "what"), _generated_cases(), ids=lambda x: str(x))
def test_every_argument_survives_the_wrong_kind_of_value(ws, capsys, command, what):
    if command not in BASE:
        _check(_all_bad(ws, command), capsys)
        return
    if command in MAKE:
        MAKE[command](ws)
    argv = dict(_substituted(ws, command))[what]
    _check(argv, capsys)


def test_every_command_has_hand_written_cases():
    """A new command brings its documented mistakes here and a good invocation to BASE (its
    all-wrong case covers it meanwhile; this names the ones still missing)."""
    missing = [c.name for c in COMMANDS if c.name not in CASES or c.name not in BASE]
    assert not missing, f"commands without hand-written bad inputs: {missing}"
