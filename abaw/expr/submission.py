"""The Expr submission, both formats, written and checked with NumPy over the whole file.

- single (ABAW5/6): `image_location,Neutral,...,Other` header, then one `<video>/<frame>.jpg,<label>`
  row per line of the organisers' test frame list, in its order.
- per-video (ABAW3/4): one `<video>.txt` per test video: the class header, then one label per
  frame 1..n (n = the video's last frame in the frame list; frames the list skips get the label
  of the nearest listed frame).

Labels are integers 0..7 (the argmax of the post-processed probabilities). The frame list is
found in the data root or a test-set subfolder under each edition's name (formats.md), or
named with `--frames`. Writing and the check of a correct file are vectorised over bytes (the
file is compared with the expected text, label bytes masked); only a file with problems goes
through the slower row-by-row diagnosis, still vectorised with pandas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.strings as nps
import pandas as pd

from abaw.errors import AbawError, DataError, SubmissionError
from abaw.expr.framelist import FrameList, read_frame_list
from abaw.expr.layout import HEADER, TEST_FRAME_HEADER, TEST_FRAME_LISTS
from abaw.expr.scan import find_expr_root, find_test_lists
from abaw.predictions import Predictions, match_rows
from abaw.problems import Problem, add_rows, header_layout_problem, read_submission, text_lines

FILE_NAME = "predictions.txt"
FORMATS = ("single", "per-video")  # one file in frame-list order (ABAW5/6); <video>.txt (ABAW3/4)
LABELS = [str(i) for i in range(8)]


_CACHE: dict[tuple, FrameList] = {}


def _stamp(p: Path | None) -> tuple:
    if p is None:
        return ()
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def frame_list(data: Path, frames: str | Path | None = None) -> FrameList:
    """The test frame list named by `frames`, or found in `data` exactly as the loader finds it.

    One search (`abaw.expr.scan.find_test_lists`: every edition's file names, in the data root,
    its test-set subfolders and the annotation folder) serves training, inspect and submit,
    so the frames predicted and the frames submitted come from the same file; one parser
    (`abaw.expr.framelist.read_frame_list`) reads it for all of them.
    """
    data = Path(data)
    root = data
    if data.is_dir():
        try:
            root = find_expr_root(data)[0]
        except DataError:  # no annotation folder: a folder holding only the test lists
            root = data
    found, vlist = find_test_lists(root) if root.is_dir() else (None, None)
    path = Path(frames) if frames else found  # --frames is relative to the working folder
    if path is None:
        raise AbawError(
            f"no test frame list found in {data} (looked for {', '.join(TEST_FRAME_LISTS)} "
            "in the data root, its test-set subfolders and the annotation folder); "
            "name it with --frames FILE"
        )
    if not path.is_file():
        raise AbawError(f"{path}: test frame list not found")
    key = (_stamp(path), _stamp(vlist))  # submit parses once for writing and checking
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = read_frame_list(path, vlist)
    return _CACHE[key]


# ---------------------------------------------------------------- writing


def _template(fl: FrameList, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of the single-file submission, positions of the label bytes).

    Row r is location_r "," label_r "\\n"; with labels None the label bytes are "0".
    """
    head = np.frombuffer((TEST_FRAME_HEADER + "\n").encode(), np.uint8)
    blob = fl.blob
    nl = np.flatnonzero(blob == 10)
    n = len(nl)
    size = len(head) + len(blob) + 2 * n
    out = np.empty(size, np.uint8)
    out[: len(head)] = head
    body = out[len(head) :]
    k2 = 2 * np.arange(n, dtype=np.int64)
    comma = nl + k2
    label_pos = comma + 1
    newline = comma + 2
    mask = np.ones(len(body), bool)
    mask[comma] = False
    mask[label_pos] = False
    body[mask] = blob  # locations and newlines in order (newline slots overwritten below)
    body[comma] = ord(",")
    body[label_pos] = ord("0") if labels is None else (labels.astype(np.uint8) + ord("0"))
    body[newline] = 10
    return out, label_pos + len(head)


def labels_for(pred: Predictions, fl: FrameList) -> tuple[np.ndarray, list[str]]:
    """Argmax labels of `pred`, one per frame-list row, in list order."""
    if "video" not in pred.keys or "frame" not in pred.keys:
        raise SubmissionError(
            f"Expr predictions need 'video' and 'frame' keys, found {list(pred.keys)}"
        )
    if pred.values.shape[1] != 8:
        raise SubmissionError(
            f"Expr predictions need 8 class columns, found {pred.values.shape[1]}"
        )
    if not np.isfinite(pred.values).all():
        raise SubmissionError("the test predictions contain NaN or inf")
    lab = pred.values.argmax(axis=1).astype(np.int8)
    pv, pf = pred.keys["video"].astype(str), pred.keys["frame"].astype(np.int64)
    notes: list[str] = []
    if len(pv) == len(fl) and np.array_equal(pv, fl.video) and np.array_equal(pf, fl.frame):
        return lab, notes
    # The predictions are the reference: every prediction row listed twice is caught (even
    # one the frame list lacks), and the frame-list rows without a prediction are the extras.
    m = match_rows({"video": fl.video, "frame": fl.frame}, {"video": pv, "frame": pf})
    if m.ref_duplicate is not None:
        i = m.ref_duplicate
        raise SubmissionError(f"the predictions list {pv[i]}/{pf[i]:05d} twice")
    if len(m.extra):
        raise SubmissionError(
            f"{len(m.extra)} frame(s) of the test frame list {fl.path} have no prediction (first: "
            f"{fl.locs[m.extra[0]]}); every listed frame needs one"
        )
    if len(pv) > len(fl):
        notes.append(f"{len(pv) - len(fl)} predicted frame(s) are not in the frame list; left out")
    row = np.empty(len(fl), np.int64)  # the prediction row of each frame-list row
    hit = m.take >= 0
    row[m.take[hit]] = np.flatnonzero(hit)
    return lab[row], notes


def write_submission(
    pred: Predictions, data: Path, folder: Path, *, fmt: str = "single", frames=None
) -> tuple[list[Path], int, list[str]]:
    """Write the single file or the per-video files into `folder`: (files, rows, notes)."""
    from abaw.io import atomic_path, safe_name

    fl = frame_list(data, frames)
    labels, notes = labels_for(pred, fl)
    if fmt == "single":
        buf, _ = _template(fl, labels)
        path = folder / FILE_NAME
        with atomic_path(path) as tmp:
            buf.tofile(tmp)
        return [path], len(fl), notes
    files, filled = [], 0
    order = np.lexsort((fl.frame, fl.video))
    v_sorted = fl.video[order]
    cuts = np.concatenate([[0], np.flatnonzero(v_sorted[1:] != v_sorted[:-1]) + 1, [len(order)]])
    seg = {v_sorted[a]: order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)}
    head = (HEADER + "\n").encode()
    for v in fl.videos:
        if v not in seg:
            raise SubmissionError(
                f"test video {v} has no frame in the frame list {fl.path}; cannot tell its length"
            )
        safe_name(v, what="video name")
        rows = seg[v]
        fr, lab = fl.frame[rows], labels[rows]
        n = int(fr.max())
        idx = np.searchsorted(fr, np.arange(1, n + 1)).clip(0, len(fr) - 1)
        prev = (idx - 1).clip(0)
        use_prev = np.abs(fr[prev] - np.arange(1, n + 1)) < np.abs(fr[idx] - np.arange(1, n + 1))
        full = lab[np.where(use_prev, prev, idx)]
        filled += n - len(fr)
        body = np.empty(2 * n, np.uint8)
        body[0::2] = full.astype(np.uint8) + ord("0")
        body[1::2] = 10
        path = folder / f"{v}.txt"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(head)
            fh.write(body.tobytes())
        files.append(path)
    if filled:
        notes.append(
            f"{filled} frame(s) not in the frame list got the nearest listed frame's label"
        )
    return files, int(sum(fl.n_frames.values())), notes


# ---------------------------------------------------------------- checking


def check_single(raw: bytes, file: str, fl: FrameList) -> list[Problem]:
    """Every problem of a single-file submission against the frame list."""
    tmpl, label_pos = _template(fl, None)
    buf = np.frombuffer(raw, np.uint8)
    if len(buf) in (len(tmpl), len(tmpl) - 1):  # fast path: the expected text, labels masked
        n = len(buf)
        lab = buf[label_pos]
        tmpl[label_pos] = lab
        if np.array_equal(buf, tmpl[:n]) and ((lab >= ord("0")) & (lab <= ord("7"))).all():
            return []
    return _diagnose_single(raw, file, fl)


def _partition(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy.strings.partition at the first comma, also of an empty array (numpy's own fails
    there: every row of a file without commas, an ERI file checked as Expr, is left out)."""
    if a.size == 0:
        empty = np.zeros(0, dtype=str)
        return empty, empty, empty
    return nps.partition(a, ",")


def _diagnose_single(raw: bytes, file: str, fl: FrameList) -> list[Problem]:
    lines, probs = text_lines(raw, file)
    if not lines:
        return probs
    want = TEST_FRAME_HEADER
    first_row, drop_first = 1, False
    if lines[0] != want:
        head = lines[0].split(",")
        layout, drop_first = header_layout_problem(head, want.split(","), file)
        if layout is not None:
            probs.append(layout)
        elif lines[0].split(",")[0] in set(fl.locs[:1].tolist()) or ".jpg" in lines[0]:
            probs.append(Problem(1, f"missing header: the first line must be {want!r}", file))
            first_row = 0
        else:
            probs.append(
                Problem(1, f"wrong header: expected {want!r}, found {lines[0][:200]!r}", file)
            )
    body = np.array(lines[first_row:], dtype=str)  # numpy.strings ufuncs: no per-row Python
    rownum = np.arange(len(body)) + first_row + 1
    if len(body) == 0:
        probs.append(Problem(None, f"no data rows ({len(fl)} frames expected)", file))
        return probs
    if drop_first:
        body = _partition(body)[2]
    empty = nps.str_len(nps.strip(body)) == 0
    add_rows(probs, rownum[empty], "empty row", file)
    ncomma = nps.count(body, ",")
    bad = (ncomma != 1) & ~empty
    add_rows(
        probs,
        rownum[bad],
        lambda i, c=ncomma[bad]: f"expected 2 fields (image_location,label), found {c[i] + 1}",
        file,
    )
    good = ~bad & ~empty
    locs, _, labs = _partition(body[good])
    rows = rownum[good]
    badlab = ~((nps.str_len(labs) == 1) & (labs >= "0") & (labs <= "7"))
    add_rows(
        probs,
        rows[badlab],
        lambda i, t=labs[badlab]: f"label {str(t[i])!r} is not an integer 0..7",
        file,
    )
    pathy = (nps.count(locs, "/") != 1) | (nps.find(locs, "\\") >= 0) | (nps.find(locs, "..") >= 0)
    add_rows(
        probs,
        rows[pathy],
        lambda i, t=locs[pathy]: (
            f"image_location {str(t[i])!r} must be <video>/<frame>.jpg (one '/', no '\\' or '..')"
        ),
        file,
    )
    pos = pd.Index(fl.locs).get_indexer(locs)
    unknown = (pos < 0) & ~pathy
    add_rows(
        probs,
        rows[unknown],
        lambda i, t=locs[unknown]: f"{str(t[i])!r} is not in the test frame list (extra row)",
        file,
    )
    known = pos >= 0
    dup = pd.Series(np.where(known, pos, -1 - np.arange(len(pos)))).duplicated().to_numpy()
    if dup.any():
        first = pd.Series(rows[known]).groupby(pos[known]).min()
        dpos = pos[dup]
        add_rows(
            probs,
            rows[dup],
            lambda i: f"{str(fl.locs[dpos[i]])!r} again (first on row {int(first[dpos[i]])})",
            file,
        )
    uniq = known & ~dup
    hit = np.zeros(len(fl), bool)
    hit[pos[uniq]] = True
    if not hit.all():
        miss = fl.locs[~hit]
        probs.append(
            Problem(
                None,
                f"{len(miss)} frame(s) of the test frame list missing (first: {', '.join(miss[:3])})",
                file,
            )
        )
    p = pos[uniq]
    if len(p) > 1:
        back = np.flatnonzero(np.diff(p) < 0) + 1
        if len(back):
            r = rows[uniq]
            add_rows(
                probs,
                r[back],
                lambda i: (
                    f"{str(fl.locs[p[back[i]]])!r} is out of order: the rows must follow the "
                    f"test frame list (it comes before {str(fl.locs[p[back[i] - 1]])!r} there)"
                ),
                file,
            )
    return probs


def check_video(raw: bytes, file: str, n: int) -> list[Problem]:
    """Problems of one per-video file expected to hold `n` frame labels."""
    lines, probs = text_lines(raw, file)
    if not lines:
        return probs
    first_row = 1
    if lines[0] != HEADER:
        if lines[0].strip().lstrip("-").isdigit():
            probs.append(Problem(1, f"missing header: the first line must be {HEADER!r}", file))
            first_row = 0
        else:
            probs.append(
                Problem(1, f"wrong header: expected {HEADER!r}, found {lines[0][:200]!r}", file)
            )
    labs = np.array(lines[first_row:], dtype=str)
    rows = np.arange(len(labs)) + first_row + 1
    bad = ~np.isin(labs, LABELS)
    add_rows(
        probs, rows[bad], lambda i, t=labs[bad]: f"label {str(t[i])!r} is not an integer 0..7", file
    )
    if len(labs) != n:
        probs.append(
            Problem(
                None,
                f"{len(labs)} frame label(s), expected {n} (frames 1..{n} of the test frame list)",
                file,
            )
        )
    return probs


def validate_submission(path: Path, data: Path, *, frames=None) -> list[Problem]:
    """Problems of an Expr submission: single file, folder of <video>.txt, or a zip of either."""
    fl = frame_list(data, frames)
    files, probs, kind = read_submission(path)
    per_video = kind == "folder" or (
        kind == "zip" and (len(files) > 1 or any(Path(n).stem in fl.n_frames for n in files))
    )
    if kind == "zip" and len(files) == 1 and not per_video:
        (name,) = files
        if not name.lower().endswith((".txt", ".csv")):
            probs.append(
                Problem(
                    None, f"the zip holds {name!r}; expected one .txt (or .csv) file", str(path)
                )
            )
            return probs
        return probs + check_single(files[name], f"{path}:{name}", fl)
    if not per_video:
        if not files:
            return probs
        return probs + check_single(next(iter(files.values())), str(path), fl)
    expect = fl.n_frames
    for name in files:
        stem = Path(name).stem
        if not name.endswith(".txt") or stem not in expect:
            probs.append(
                Problem(
                    None,
                    f"{name!r} is not <test video>.txt (wrong file name; test videos are e.g. "
                    f"{', '.join(list(expect)[:3])})",
                    str(path),
                )
            )
    missing = [v for v in expect if f"{v}.txt" not in files]
    if missing:
        probs.append(
            Problem(
                None,
                f"{len(missing)} test video file(s) missing (first: {', '.join(missing[:5])})",
                str(path),
            )
        )
    sep = ":" if kind == "zip" else "/"
    for v, n in expect.items():
        if f"{v}.txt" in files:
            probs += check_video(files[f"{v}.txt"], f"{path}{sep}{v}.txt", n)
    return probs
