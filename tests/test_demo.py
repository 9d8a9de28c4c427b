"""`abaw demo` end to end at its smoke-test size: every stage runs and hands the next one
what it needs; the submission it writes is valid; a rerun resumes instead of starting over."""

from __future__ import annotations

import json

import numpy as np

from abaw.cli import main
from abaw.cli.show import demo_summary
from abaw.demo import run_demo, synthetic_test_score
from abaw.predictions import Predictions
from abaw.submit import validate


def test_demo_both_tracks_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    results = run_demo(out, minutes=3, jobs=1, scale="tiny")  # tiny: 2 trials per variant
    assert [r.track for r in results] == ["eri", "expr"]
    for r in results:
        assert r.valid and r.zip.is_file() and r.zip.stat().st_size > 0
        assert not validate(r.track, r.zip, out / "data" / r.track)
        assert r.report.is_file() and "<img" in r.report.read_text(encoding="utf-8")
        assert [v.study for v in r.variants] and all(v.complete == 2 for v in r.variants)
        assert r.ensemble["ensemble_devel"] is not None
        # test scores come from the generator's hidden labels, which only the demo reads
        assert r.ensemble_test is not None and -1.0 <= r.ensemble_test <= 1.0
        assert 0 < r.oracle_devel <= 1
        manifest = json.loads(
            (out / "runs" / "ensembles" / f"demo-{r.track}" / "manifest.json").read_text()
        )
        assert manifest["track"] == r.track and manifest["members"]
    demo_summary(results, 1.0)
    text = capsys.readouterr().out
    assert "ensemble" in text and "oracle (ceiling)" in text and "demo-eri.zip" in text

    # Rerun: data reused, studies already hold their trials, so nothing is trained again.
    again = run_demo(out, tracks=("eri",), minutes=3, jobs=1, scale="tiny")
    assert "reusing eri data" in capsys.readouterr().out
    assert sum(v.complete for v in again[0].variants) == sum(
        v.complete for v in results[0].variants
    )


def test_synthetic_test_score_matches_truth(tmp_path):
    from abaw.eri.synth import write_eri

    data = tmp_path / "eri"
    write_eri(data, scale="tiny", seed=1, show_progress=False)
    truth = np.genfromtxt(
        data / ".oracle" / "test_labels.csv",
        delimiter=",",
        names=True,
        dtype=None,
        encoding="utf-8",
    )
    ids = np.array([str(i) for i in truth["File_ID"]])
    cols = ("Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise")
    y = np.stack(
        [
            truth[c.replace("-", "")] if c.replace("-", "") in truth.dtype.names else truth[c]
            for c in cols
        ],
        1,
    )
    perfect = Predictions("eri", "test", {"id": ids}, y, cols)
    assert synthetic_test_score("eri", data, perfect) > 0.999
    shuffled = Predictions("eri", "test", {"id": ids}, y[::-1], cols)
    assert synthetic_test_score("eri", data, shuffled) < 0.9


def test_demo_cli_rejects_bad_budget(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--minutes", "0"]) == 1
    assert "--minutes must be > 0" in capsys.readouterr().err
