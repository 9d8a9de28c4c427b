"""`abaw inspect --track expr`: what the loader finds, and every problem (not just the first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.errors import DataError
from abaw.expr.features import read_features, short_features_warning
from abaw.expr.layout import CLASSES, FEATURES_DIR, NUM_CLASSES
from abaw.expr.loader import ExprData, load_expr
from abaw.expr.scan import (
    Layout,
    Problems,
    find_expr_root,
    no_test_list_warning,
    scan_layout,
)
from abaw.extraction import coverage_sections
from abaw.findings import InspectReport, Section

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
            short = short_features_warning(ff, len(lab)) if s != "test" else None
            if short:
                pr.warnings.append(short)
            face &= ~np.isnan(x).any(axis=1)
        out[s][0] += int((need & ~face).sum())
        out[s][1] += int(need.sum())
    return {s: (a, b) for s, (a, b) in out.items()}


def _missing_from_store(data: ExprData) -> dict[str, tuple[int, int]]:
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
    root: Path,
    *,
    features: list[str] | None = None,
    use_cache: bool = True,
    test_frames: str | Path | None = None,
    test_videos: str | Path | None = None,
) -> InspectReport:
    """Build the InspectReport for an Expr data folder."""
    found, note = find_expr_root(Path(root))
    report = InspectReport("expr", found)
    pr = Problems(collect=True)
    lists = {"test_frames": test_frames, "test_videos": test_videos}
    chosen = sorted(set(features)) if features else features
    try:
        layout = scan_layout(found, chosen, pr, **lists)
    except DataError as e:  # nothing further can be read
        report.problems.append(str(e))
        return report
    report.summary = _summary(layout)
    report.sections += [_backbones_section(layout), *coverage_sections(found / FEATURES_DIR)]
    missing = None
    if not pr.errors:
        try:
            data = load_expr(found, chosen, use_cache=use_cache, **lists)
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
    report.sections += [
        _missing_section(missing),
        _class_section(layout),
        _pairs_section(layout),
    ]
    if note:
        report.warnings.insert(0, note)
    if not len(layout.test_frame) and not any("NO TEST SET" in w for w in report.warnings):
        tests = [v for v, s in zip(layout.videos, layout.split, strict=True) if s == "test"]
        report.warnings.append(no_test_list_warning(found, tests, None))
    report.warnings = list(dict.fromkeys(report.warnings))
    report.problems += list(dict.fromkeys(str(e) for e in pr.errors))
    return report


def _summary(layout: Layout) -> dict[str, object]:
    """Videos and frames per split, annotated frames, test frame list rows."""
    split = np.array(layout.split)
    frames = {
        s: sum(len(lab) for lab, sp in zip(layout.labels, layout.split, strict=True) if sp == s)
        for s in _SPLITS
    }
    return {
        "annotation folder": layout.annotation_dir,
        **{f"videos ({s})": int((split == s).sum()) for s in _SPLITS},
        **{f"frames ({s})": frames[s] for s in _SPLITS},
        "annotated frames": int(sum(int((lab >= 0).sum()) for lab in layout.labels)),
        "test frame list rows": len(layout.test_frame),
    }


def _backbones_section(layout: Layout) -> Section:
    files = {b: sum(1 for (bb, _) in layout.files if bb == b) for b in layout.backbones}
    return Section(
        "Backbones",
        ["backbone", "width", "files", "format"],
        [
            [b, layout.dims.get(b, "?"), files[b], layout.formats.get(b, "?")]
            for b in layout.backbones
        ],
    )


def _missing_section(missing: dict[str, tuple[int, int]]) -> Section:
    counted = {
        "train": "annotated frames",
        "devel": "annotated frames",
        "test": "frames of the test list",
    }
    return Section(
        "Frames a model needs that have no features, for some backbone (filled by the "
        "fill policy); the warnings count all frames of a split instead",
        ["split", "without features", "of", "frames counted", "%"],
        [[s, a, b, counted[s], 100.0 * a / b if b else 0.0] for s, (a, b) in missing.items()],
    )


def _class_section(layout: Layout) -> Section:
    rows = []
    for s in ("train", "devel"):
        lab = np.concatenate(
            [lab for lab, sp in zip(layout.labels, layout.split, strict=True) if sp == s]
            or [np.zeros(0, np.int8)]
        )
        counts = np.bincount(lab[lab >= 0].astype(np.int64), minlength=NUM_CLASSES)
        tot = max(1, int(counts.sum()))
        rows += [[s, c, int(n), 100.0 * n / tot] for c, n in zip(CLASSES, counts, strict=True)]
    return Section("Class frequencies", ["split", "class", "frames", "%"], rows)


def _pairs_section(layout: Layout) -> Section:
    """The split of each person of a two-person video: a pair split across splits leaks."""
    split_of = dict(zip(layout.videos, layout.split, strict=True))
    pairs = sorted({v.rsplit("_", 1)[0] for v in layout.videos if v.endswith(("_left", "_right"))})
    rows = []
    for b in pairs:
        left, right = split_of.get(b + "_left", "-"), split_of.get(b + "_right", "-")
        rows.append([b, left, right, "yes" if "-" not in (left, right) and left != right else ""])
    return Section(
        "Videos with two people: the split of each person (_left/_right); '-' = no such "
        "file; test members come from the test lists",
        ["video", "_left", "_right", "members in different splits"],
        rows,
    )
