"""What `abaw extract --track expr` extracts, and how an output is written (the Expr side).

Targets: every annotated video (train and devel, `_left`/`_right` each their own) and every
test video of the test lists, each read from `<images>/<video>/00001.jpg ...` (default
`<data>/cropped_aligned`, as Aff-Wild2 ships it). Output: `<data>/features/<name>/<video>.npy`
exactly as the loader reads it: one float32 row per frame 1..length, row i-1 = frame i, a row
of NaN where the frame has no image (Aff-Wild2 has no cropped face there). The length is the
annotation's; for a test video, the largest of its last listed frame and its last image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.errors import DataError
from abaw.expr.layout import FEATURES_DIR
from abaw.expr.scan import (
    Problems,
    _annotation_root,
    _scan_annotations,
    _scan_test_lists,
    find_expr_root,
)
from abaw.extraction import ExtractedRows, ExtractPlan, ExtractTarget

IMAGES_DIR = "cropped_aligned"
_IMAGE = (".jpg", ".jpeg", ".png")


def _last_image(folder: Path) -> int:
    best = 0
    for p in folder.iterdir():
        if p.suffix.lower() in _IMAGE and p.stem.isdigit():
            best = max(best, int(p.stem))
    return best


def extract_plan(root: Path, *, name: str, images: str | Path | None = None) -> ExtractPlan:
    """The videos to extract, their frame folders and lengths, and the output folder."""
    found, note = find_expr_root(Path(root))
    ann_root = _annotation_root(found)
    pr = Problems()
    ann = _scan_annotations(ann_root, pr)
    tests = _scan_test_lists(found, ann_root, ann, pr, None, None)
    img_root = Path(images) if images else found / IMAGES_DIR
    if not img_root.is_dir():
        raise DataError(
            img_root,
            "frame image folder not found",
            expected="Aff-Wild2's cropped_aligned/<video>/00001.jpg tree",
            found="no such folder",
            hint="Give its place with --images DIR",
        )
    out = found / FEATURES_DIR / name
    lengths = {v: len(lab) for v, lab in zip(ann.videos, ann.labels, strict=True)}
    listed = tests.rows.n_frames if tests.rows is not None else {}
    missing = [v for v in [*lengths, *tests.videos] if not (img_root / v).is_dir()]
    if missing:
        raise DataError(
            img_root / missing[0],
            "image folder missing for a video of the annotations or test lists",
            expected=f"one folder per video in {img_root}",
            found=f"{len(missing)} video(s) without one: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else ""),
            hint="Point --images at the folder that holds them (Aff-Wild2's cropped_aligned)",
        )
    for v in tests.videos:
        lengths[v] = max(listed.get(v, 0), _last_image(img_root / v))
    targets = [
        ExtractTarget(v, img_root / v, out / f"{v}.npy", n) for v, n in sorted(lengths.items())
    ]
    notes = [note] if note else []
    return ExtractPlan(targets, out, "frames", {}, {"images": _where(img_root, found)}, notes)


def _where(images: Path, root: Path) -> str:
    """The image tree as the manifest compares it: relative to the data root when inside it
    (a root moved or mounted elsewhere is the same tree), else its absolute path."""
    images, root = images.resolve(), root.resolve()
    return images.relative_to(root).as_posix() if images.is_relative_to(root) else str(images)


def write_extracted(target: ExtractTarget, rows: ExtractedRows, path: Path) -> int:
    """One .npy of (length, width) float32: row i-1 = frame i, NaN rows where no image was."""
    length = int(target.length if target.length is not None else (rows.index.max(initial=0)))
    out = np.full((length, rows.values.shape[1]), np.nan, np.float32)
    keep = (rows.index >= 1) & (rows.index <= length)
    out[rows.index[keep] - 1] = rows.values[keep]
    with open(path, "wb") as fh:
        np.save(fh, out, allow_pickle=False)
    return length
