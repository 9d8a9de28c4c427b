"""benchmarks/gpu.py keeps working before a GPU is lent: its CPU --quick run, end to end.

The GPU benchmark is run rarely (a lent card, minutes of device time): a broken row found
then wastes the loan. Here the same script runs on CPU at tiny sizes, as a subprocess, and
every row of its table must be present with a finite positive number.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import require

require("torchvision")  # the ViT-B/16 row builds the extraction backbone (the extract extra)

REPO = Path(__file__).resolve().parents[1]
ROWS = [  # (start of the measurement, unit): every row the table must have
    ("matmul peak", "TFLOP/s"),
    ("ERI fusion step (", "s/step"),
    ("ERI fusion step (", "GFLOP/step"),
    ("ERI fusion step (", "%"),
    ("Expr fusion training", "frames/s"),
    ("Expr fusion inference", "frames/s"),
    ("ViT-B/16 extraction forward", "frames/s"),
    ("eri-fusion trial memory", "MiB"),
    ("abaw tune --jobs 1 ", "trials/h"),
    ("abaw tune --jobs 2 ", "trials/h"),
]


def _table(text: str) -> list[tuple[str, float, str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("measurement", "---"):
            rows.append((cells[0], float(cells[1].replace(",", "")), cells[2]))
    return rows


def test_cpu_quick_run_prints_every_row_with_a_finite_positive_number(tmp_path):
    out = tmp_path / "gpu.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
         "--threads", "1", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text == done.stdout  # --out holds exactly the printed table
    header = text.split("\n| measurement")[0]
    assert header.startswith("# abaw GPU benchmark on ") and " cores, CPU)" in header
    assert re.search(r"torch \d+\.\d+", header)
    assert re.search(r"load average \d+\.\d\d \d+\.\d\d \d+\.\d\d at the start", header)
    rows = _table(text)
    assert len(rows) == len(ROWS), text
    for (start, unit), (what, value, got_unit) in zip(ROWS, rows, strict=True):
        assert what.startswith(start) and got_unit == unit, (what, got_unit)
        assert math.isfinite(value) and value > 0, (what, value)
    assert "(d 64, T 30, batch 64, audio 1024 + visual 1536)" in rows[1][0]
    assert "1 complete, 0 failed" in text and "2 complete, 0 failed" in text
