"""`abaw inspect --track expr`: what the loader finds, and every problem (not just the first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.errors import DataError
from abaw.expr.layout import CLASSES, NUM_CLASSES, TEST_FRAME_LIST
from abaw.expr.scan import Layout, Problems, read_features, scan_layout
from abaw.inspect import InspectReport, Section

_SPLITS = ("train", "devel", "test")


def _missing_by_reading(layout: Layout, pr: Problems) -> dict[str, tuple[int, int]]:
    """(frames needing features but without them, frames needing features) per split, reading every file."""
    out = {s: [0, 0] for s in _SPLITS}
    for v, name in enumerate(layout.videos):
        s, lab = layout.split[v], layout.labels[v]
        need = lab >= 0 if s != "test" else np.zeros(len(lab), bool)
        if s == "test":
            need[layout.test_frame[layout.test_video == v] - 1] = True
        face = np.ones(len(lab), bool)
        for b in layout.backbones:
            ff = layout.files.get((b, name))
            if ff is None:
                continue
            try:
                x = read_features(ff, len(lab), annotated=s != "test")
            except DataError as e:
                pr.add(e)
                continue
            face &= ~np.isnan(x).any(axis=1)
        out[s][0] += int((need & ~face).sum())
        out[s][1] += int(need.sum())
    return {s: (a, b) for s, (a, b) in out.items()}


def _missing_from_store(data) -> dict[str, tuple[int, int]]:
    fs = data.frame_split()
    out = {}
    for s in ("train", "devel"):
        need = (fs == s) & (data.labels >= 0)
        out[s] = (int((need & ~data.has_face).sum()), int(need.sum()))
    tv, tf = data.test_order
    rows = data.offsets[tv] + tf - 1
    out["test"] = (int((~data.has_face[rows]).sum()), len(rows))
    return out


def inspect_expr(
    root: Path, *, features: list[str] | None = None, use_cache: bool = True
) -> InspectReport:
    """Build the InspectReport for an Expr data folder."""
    from abaw.expr.data import load_expr

    report = InspectReport("expr", root)
    pr = Problems(collect=True)
    try:
        layout = scan_layout(root, features, pr)
    except DataError as e:  # nothing further can be read
        report.problems.append(str(e))
        return report
    split = np.array(layout.split)
    frames = {
        s: sum(len(lab) for lab, sp in zip(layout.labels, layout.split, strict=True) if sp == s)
        for s in _SPLITS
    }
    report.summary = {
        "annotation folder": layout.annotation_dir,
        **{f"videos ({s})": int((split == s).sum()) for s in _SPLITS},
        **{f"frames ({s})": frames[s] for s in _SPLITS},
        "annotated frames": int(sum(int((lab >= 0).sum()) for lab in layout.labels)),
        "test frame list rows": len(layout.test_frame),
    }
    files = {b: sum(1 for (bb, _) in layout.files if bb == b) for b in layout.backbones}
    report.sections.append(
        Section(
            "Backbones",
            ["backbone", "width", "files", "format"],
            [
                [b, layout.dims.get(b, "?"), files[b], layout.formats.get(b, "?")]
                for b in layout.backbones
            ],
        )
    )
    missing = None
    if not pr.errors:
        try:
            data = load_expr(root, features, use_cache=use_cache)
            missing = _missing_from_store(data)
            report.warnings += data.warnings
        except DataError as e:
            pr.add(e)
    if missing is None:
        n_before = len(pr.errors)
        missing = _missing_by_reading(layout, pr)
        pr.errors = pr.errors[:n_before] + [
            e for e in pr.errors[n_before:] if str(e) not in {str(x) for x in pr.errors[:n_before]}
        ]
        report.warnings += pr.warnings
    report.sections.append(
        Section(
            "Frames that need features but have none (filled by the fill policy)",
            ["split", "frames without features", "frames needing features", "%"],
            [[s, a, b, 100.0 * a / b if b else 0.0] for s, (a, b) in missing.items()],
        )
    )
    rows = []
    for s in ("train", "devel"):
        lab = np.concatenate(
            [lab for lab, sp in zip(layout.labels, layout.split, strict=True) if sp == s]
            or [np.zeros(0, np.int8)]
        )
        counts = np.bincount(lab[lab >= 0].astype(np.int64), minlength=NUM_CLASSES)
        tot = max(1, int(counts.sum()))
        rows += [[s, c, int(n), 100.0 * n / tot] for c, n in zip(CLASSES, counts, strict=True)]
    report.sections.append(Section("Class frequencies", ["split", "class", "frames", "%"], rows))
    pairs = sorted({v.rsplit("_", 1)[0] for v in layout.videos if v.endswith(("_left", "_right"))})
    report.sections.append(
        Section(
            "Videos with two people (_left/_right)",
            ["video", "split", "annotation files"],
            [
                [
                    b,
                    layout.split[
                        layout.videos.index(next(v for v in layout.videos if v.startswith(b + "_")))
                    ],
                    ", ".join(v for v in layout.videos if v in (b + "_left", b + "_right")),
                ]
                for b in pairs
            ],
        )
    )
    if not len(layout.test_frame):
        report.warnings.append(
            f"{root / TEST_FRAME_LIST}: no test frame list; predictions cannot be submitted."
        )
    report.problems += [str(e) for e in pr.errors]
    return report
