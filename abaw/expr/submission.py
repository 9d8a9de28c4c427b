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

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.strings as nps
import pandas as pd

from abaw.errors import AbawError, DataError, SubmissionError
from abaw.expr.layout import HEADER, TEST_FRAME_HEADER
from abaw.predictions import Predictions
from abaw.problems import Problem, add_rows, header_layout_problem, read_submission, text_lines

FILE_NAME = "predictions.txt"
FORMATS = ("single", "per-video")  # one file in frame-list order (ABAW5/6); <video>.txt (ABAW3/4)
LABELS = [str(i) for i in range(8)]


@dataclass
class FrameList:
    """The organisers' test frame list: one image location per row, in order."""

    path: Path
    video: np.ndarray  # (n,) str
    frame: np.ndarray  # (n,) int64, 1-based
    videos: list[str]  # test videos: the video list's order if there is one, else first-seen
    _blob: np.ndarray | None = None
    _locs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def blob(self) -> np.ndarray:
        """uint8 bytes of every location followed by "\\n" (the writer's and checker's input)."""
        if self._blob is None:
            text = "\n".join(self.locs.tolist()) + "\n"
            self._blob = np.frombuffer(text.encode(), np.uint8)
        return self._blob

    @property
    def locs(self) -> np.ndarray:
        """(n,) str image locations as spelled in the list, e.g. "14-30-1920x1080/00001.jpg"."""
        if self._locs is None:
            self._locs = np.array(bytes(self.blob).decode().split("\n")[:-1], dtype=str)
        return self._locs

    @cached_property
    def n_frames(self) -> dict[str, int]:
        """Frames per test video: its last listed frame (per-video files have 1..n)."""
        s = pd.Series(self.frame).groupby(self.video).max()
        return {v: int(s[v]) for v in self.videos if v in s.index}


def _parse_fast(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(video, frame, blob) of a plain ASCII frame list, all in NumPy; None = not plain.

    Plain: `\\n` line ends, optional `image_location` header, rows `<video>/<digits>.jpg`
    optionally followed by `,...`, no spaces, no blank lines inside. Anything else goes
    through the pandas parser, which names the offending row.
    """
    buf = np.frombuffer(raw, np.uint8)
    if buf.size == 0 or (buf >= 128).any() or (buf == 13).any() or (buf == 32).any():
        return None
    nl = np.flatnonzero(buf == 10)
    if buf[-1] != 10:
        nl = np.append(nl, len(buf))
    starts = np.concatenate([[0], nl[:-1] + 1])
    ends = nl
    if raw.startswith(b"image_location"):
        starts, ends = starts[1:], ends[1:]
    nonempty = np.flatnonzero(ends > starts)
    if len(nonempty) == 0:
        return None
    last = nonempty[-1] + 1
    starts, ends = starts[:last], ends[:last]
    if (ends <= starts).any():
        return None
    commas = np.flatnonzero(buf == 44)
    ci = np.searchsorted(commas, starts)
    after = commas[ci.clip(max=len(commas) - 1)] if len(commas) else ends
    loc_end = np.where((ci < len(commas)) & (after < ends), after, ends)
    slashes = np.flatnonzero(buf == 47)
    hi, lo = np.searchsorted(slashes, loc_end), np.searchsorted(slashes, starts)
    if (hi - lo != 1).any():
        return None
    sl = slashes[hi - 1]
    nd = loc_end - sl - 5  # digits of "<digits>.jpg"
    if (nd < 1).any() or (nd > 9).any() or (sl <= starts).any():
        return None
    for k, ch in enumerate(b".jpg"):
        if (buf[loc_end - 4 + k] != ch).any():
            return None
    frame = np.zeros(len(starts), np.int64)
    for j in range(int(nd.max())):
        has = nd > j
        d = buf[np.where(has, loc_end - 5 - j, 0)].astype(np.int64) - 48
        if ((d < 0) | (d > 9))[has].any():
            return None
        frame += np.where(has, d, 0) * 10**j
    vl = sl - starts
    width = int(vl.max())
    # Names as UTF-32 code points (ASCII bytes are their own code points): a (n, width) uint32
    # matrix viewed as fixed-width unicode, gathered in row chunks, no per-row Python.
    names = np.zeros((len(starts), width), np.uint32)
    cols = np.arange(width)
    for a in range(0, len(starts), 1 << 17):
        st, ln = starts[a : a + (1 << 17)], vl[a : a + (1 << 17)]
        idx = np.minimum(st[:, None] + cols, len(buf) - 1)
        names[a : a + len(st)] = np.where(cols < ln[:, None], buf[idx], 0)
    video = names.view(f"<U{width}").reshape(-1)
    tail = ends - loc_end
    if (tail <= 1).all():  # rows are "<loc>," or "<loc>": drop the commas, keep the newlines
        keep = np.zeros(len(buf), bool)
        keep[starts[0] : ends[-1] + 1] = True
        keep[loc_end[tail == 1]] = False
        blob = buf[keep]
        if buf[-1] != 10 and ends[-1] == len(buf):
            blob = np.append(blob, np.uint8(10))
        return video, frame, blob
    mark = np.zeros(len(buf) + 1, np.int8)
    mark[starts] = 1
    mark[loc_end] -= 1
    inside = np.cumsum(mark[:-1], dtype=np.int8) > 0  # rows never nest: stays 0 or 1
    loc_bytes = buf[inside]
    lengths = loc_end - starts
    blob = np.empty(len(loc_bytes) + len(starts), np.uint8)
    nlpos = np.cumsum(lengths + 1) - 1
    keep = np.ones(len(blob), bool)
    keep[nlpos] = False
    blob[keep] = loc_bytes
    blob[nlpos] = 10
    return video, frame, blob


def read_frame_list(path: Path, video_list: Path | None = None) -> FrameList:
    """Parse a test frame list (rows `<video>/<frame>.jpg,`, maybe after a header line)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, "cannot read the test frame list", found=str(e)) from None
    fast = _parse_fast(raw)
    if fast is not None:
        vids, frames, blob = fast
        locs = None
    else:
        vids, frames, locs = _parse_pandas(path, raw)
        blob = None
    key = pd.Series(frames) + pd.Series(pd.factorize(vids)[0]) * (1 << 32)
    if key.duplicated().any():
        i = int(np.argmax(key.duplicated().to_numpy()))
        raise DataError(
            path,
            "frame listed twice",
            expected="each test frame once",
            found=f"{vids[i]}/{frames[i]:05d}.jpg",
        )
    order = list(pd.unique(vids).tolist())
    if video_list is not None:
        listed = [
            v.strip() for v in video_list.read_text(encoding="utf-8").splitlines() if v.strip()
        ]
        order = listed + [v for v in order if v not in set(listed)]
    return FrameList(path, vids, frames, order, blob, locs)


def _parse_pandas(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, "the test frame list is not UTF-8", found=str(e)) from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    skip = 1 if lines and lines[0].startswith("image_location") else 0
    s = pd.Series(lines[skip:], dtype=str).str.strip()
    loc = s.str.split(",", n=1, regex=False).str[0]
    head = loc.str.rpartition("/")
    video, fname = head[0], head[2]
    ok = (head[1] == "/") & fname.str.endswith(".jpg") & (video != "")
    digits = fname.str[:-4]
    ok &= digits.str.isdigit()
    ok &= ~video.str.contains("/", regex=False) & ~video.str.contains("\\", regex=False)
    ok &= video != ".."
    if not ok.all():
        i = int(np.argmax(~ok.to_numpy()))
        raise DataError(
            path,
            "malformed test frame row",
            row=i + 1 + skip,
            expected="'<video>/<frame>.jpg,'",
            found=repr(lines[i + skip][:80]),
        )
    return (
        video.to_numpy(dtype=str),
        digits.astype(np.int64).to_numpy(),
        loc.to_numpy(dtype=str),
    )


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
    so the frames predicted and the frames submitted come from the same file.
    """
    from abaw.expr.layout import TEST_FRAME_LISTS
    from abaw.expr.scan import find_expr_root, find_test_lists

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
    from abaw.ensemble import _codes

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
    ref, code = _codes([fl.video, fl.frame], [pv, pf])  # frame-list rows coded by prediction keys
    order = np.argsort(code, kind="stable")
    if len(code) > 1 and (np.diff(code[order]) == 0).any():
        i = int(order[np.flatnonzero(np.diff(code[order]) == 0)[0]])
        raise SubmissionError(f"the predictions list {pv[i]}/{pf[i]:05d} twice")
    pos = np.searchsorted(code[order], ref).clip(0, max(len(code) - 1, 0))
    hit = (ref >= 0) & (code[order][pos] == ref)
    if not hit.all():
        miss = np.flatnonzero(~hit)
        raise SubmissionError(
            f"{len(miss)} frame(s) of the test frame list {fl.path} have no prediction (first: "
            f"{fl.locs[miss[0]]}); every listed frame needs one"
        )
    if len(pv) > len(fl):
        notes.append(f"{len(pv) - len(fl)} predicted frame(s) are not in the frame list; left out")
    return lab[order[pos]], notes


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
        body = nps.partition(body, ",")[2]
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
    locs, _, labs = nps.partition(body[good], ",")
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
