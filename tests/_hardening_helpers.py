"""A small pipeline workspace for the hardening tests (issue #18), made once per module.

Tiny synthetic ERI and Expr data, a two-trial ERI study in a journal file, an ensemble of it
and a submission, plus the broken inputs the tests feed the commands: a file where a folder
goes, a CSV where a predictions .npz goes, a cut .npz, a journal with a cut or garbage line.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw.cli import main as cli_main
from abaw.predictions import Predictions

SWEEP = """
[study]
track = "eri"
model = "lstm"
name = "{name}"

[data]
features = {{ "PosterV2-ViT" = "visual" }}
max_len = 8

[fixed]
"model.hidden" = 8
"model.layers" = 1
"train.lr" = 3e-3
"train.batch_size" = 16
"train.epochs" = 2
"train.patience" = 0
"train.ema" = false
"train.scheduler" = "none"

[space]
{space}
"""
SPACE = '"train.lr" = { type = "float", low = 1e-3, high = 1e-2, log = true }'


def write_sweep(path: Path, name: str = "tiny", space: str = SPACE) -> Path:
    path.write_text(SWEEP.format(name=name, space=space))
    return path


@dataclass
class Workspace:
    root: Path
    eri: Path  # data sets
    expr: Path
    sweep: Path  # a tiny ERI sweep; its study "tiny" has 2 trials in `runs`
    runs: Path
    submission: Path  # the ERI submission CSV of ensemble "e"
    a_file: Path  # a plain text file (where a folder is expected)
    a_dir: Path  # an empty folder (where a file is expected)
    text: Path  # arbitrary text
    cut_npz: Path  # a predictions .npz cut in half
    member_csv: Path  # a folder whose predictions-*.npz are CSV text

    def runs_copy(self, name: str) -> Path:
        """A copy of `runs` to break (a journal, a manifest) without touching the original."""
        dest = self.root / name
        if not dest.exists():
            shutil.copytree(self.runs, dest)
        return dest


def run(argv: list[str]) -> int:
    """`abaw ARGV` in this process; argparse's exit is returned as its code."""
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


def make_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    eri, expr, runs = root / "data" / "eri", root / "data" / "expr", root / "runs"
    assert run(["synth", "--track", "eri", "--out", eri, "--scale", "tiny"]) == 0
    assert run(["synth", "--track", "expr", "--out", expr, "--scale", "tiny"]) == 0
    sweep = write_sweep(root / "tiny.toml")
    tune = ["tune", "--sweep", sweep, "--data", eri, "--trials", 2, "--runs", runs]
    assert run(tune) == 0
    assert (
        run(["ensemble", "--track", "eri", "--studies", "tiny", "--runs", runs, "--name", "e"]) == 0
    )
    subs = root / "submissions"
    assert (
        run(
            [
                "submit",
                "--track",
                "eri",
                "--ensemble",
                "e",
                "--data",
                eri,
                "--runs",
                runs,
                "--out",
                subs,
            ]
        )
        == 0
    )
    a_file, a_dir, text = root / "a-file", root / "a-dir", root / "notes.txt"
    a_file.write_text("not a folder\n")
    a_dir.mkdir()
    text.write_text("hello\nthis is not a submission\n")
    good = runs / "ensembles" / "e" / "predictions-test.npz"
    raw = good.read_bytes()
    cut = root / "cut" / "predictions-test.npz"
    cut.parent.mkdir()
    cut.write_bytes(raw[: len(raw) // 2])
    shutil.copy(runs / "ensembles" / "e" / "predictions-devel.npz", cut.parent)
    member = root / "csv-member"
    member.mkdir()
    for split in ("devel", "test"):
        (member / f"predictions-{split}.npz").write_text("id,Adoration\n[00001],0.5\n")
    return Workspace(
        root,
        eri,
        expr,
        sweep,
        runs,
        subs / "e" / "predictions.csv",
        a_file,
        a_dir,
        text,
        cut,
        member,
    )


def nan_ensemble(ws: Workspace) -> Path:
    """A runs folder whose ensemble "e" has a NaN in its test predictions (row 3)."""
    runs = ws.runs_copy("runs-nan")
    path = runs / "ensembles" / "e" / "predictions-test.npz"
    p = Predictions.load(path)
    values = p.values.copy()
    values[3, 2] = np.nan
    Predictions(p.track, p.split, p.keys, values, p.columns, p.labels, p.meta).save(path)
    return runs


def journal(runs: Path) -> Path:
    return runs / "optuna-journal.log"
