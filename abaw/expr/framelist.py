"""The formats of the two Expr test lists: the frame list and the test video list.

One parser serves the loader (`scan_layout`), `abaw inspect` and `abaw submit` / `validate`:
they must read the same rows from the same file, or the frames predicted and the frames
submitted could differ.

- Frame list: an optional header line (any first line that is not a frame row, e.g.
  `image_location,Neutral,...`), then rows `<video>/<frame>.jpg`, optionally followed by
  `,...` (ignored); blank lines at the end are ignored, blank lines inside are malformed rows.
  Each (video, frame) once, frames >= 1, video names plain file names.
- Video list: one video name a line, blank lines ignored.

A plain frame list (ASCII, `\\n` line ends, no spaces) is parsed in NumPy over its bytes;
anything else goes through the pandas parser, which names each malformed row. Both give the
same rows. Problems are DataErrors handed to `report`: the default raises the first, the
loader's `Problems.add` collects them all for `abaw inspect` (then the bad rows are left out).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from abaw.errors import DataError
from abaw.io import read_text, reading, safe_name

Report = Callable[[DataError], None]  # where a problem goes: raise it, or collect it

# A frame row as the loader always read it: spaces around the location are allowed and the
# video is everything before the last '/' (a name with a '/' is then refused by safe_name).
_ROW = re.compile(r"^\s*([^,]+)/(\d+)\.jpg\s*(?:,.*)?$")
_HEADER = b"image_location"  # ABAW5's header; the fast parser skips only this one
_CHUNK = 1 << 17  # rows per gather when building the name matrix (bounded memory)


def raise_first(err: DataError) -> None:
    """The default `report`: stop at the first problem (loading, submitting)."""
    raise err


@dataclass
class FrameList:
    """The organisers' test frame list: one image location per row, in order."""

    path: Path
    video: np.ndarray  # (n,) str
    frame: np.ndarray  # (n,) int64, 1-based
    videos: list[str]  # test videos: the video list's order if there is one, then first-seen
    _blob: np.ndarray | None = None
    _locs: np.ndarray | None = None
    listed: list[str] = field(default_factory=list)  # the test video list's names, [] if none

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
            self._locs = _split_blob(self.blob)
        return self._locs

    @cached_property
    def n_frames(self) -> dict[str, int]:
        """Frames per test video: its last listed frame (per-video files have 1..n)."""
        s = pd.Series(self.frame).groupby(self.video).max()
        return {v: int(s[v]) for v in self.videos if v in s.index}

    def video_index(self, names: list[str]) -> np.ndarray:
        """(n,) position of each row's video in `names`; -1 where it is not there."""
        codes, uniques = pd.factorize(self.video)
        index = {v: i for i, v in enumerate(names)}  # a repeated name: its last position
        return np.array([index.get(v, -1) for v in uniques.tolist()], np.int64)[codes]


def _split_blob(blob: np.ndarray) -> np.ndarray:
    """(n,) str locations of a blob (each followed by "\\n")."""
    return np.array(bytes(blob).decode().split("\n")[:-1], dtype=str)


def read_video_list(path: Path, report: Report = raise_first) -> list[str]:
    """The test video list's names in file order, each once."""
    text = read_text(path, expected="the test video list, one name a line", encoding="utf-8-sig")
    names: list[str] = []
    for i, line in enumerate(text.splitlines()):
        name = line.strip()
        if not name:
            continue
        try:
            names.append(safe_name(name, what="video name"))
        except ValueError as e:
            report(
                DataError(path, str(e), row=i + 1, expected="a plain video name", found=repr(name))
            )
    return list(dict.fromkeys(names))


def read_frame_list(
    path: Path, video_list: Path | None = None, *, report: Report = raise_first
) -> FrameList:
    """Parse a test frame list (and the test video list, which orders the test videos).

    The one entry point for the loader, inspect, submit and validate. `report` gets every
    problem as a DataError: the default raises the first; a collector (`Problems.add`) gets
    them all, and the rows in question are then left out of the result.
    """
    file = Path(path)
    listed = read_video_list(video_list, report) if video_list is not None else []
    with reading(file, "the test frame list"):
        raw = file.read_bytes()
    fast = _parse_fast(raw)
    if fast is not None:
        video, frame, blob = fast
        locs, first = None, 2 if raw.startswith(_HEADER) else 1
        lines = np.arange(len(frame)) + first
    else:
        video, frame, locs, lines = _parse_pandas(file, raw, report)
        blob = None
    codes, uniques = pd.factorize(video)
    keep = _check_rows(file, video, frame, codes, uniques, lines, report)
    if not keep.all():  # only when collecting: the bad rows are left out
        locs = (locs if locs is not None else _split_blob(blob))[keep]
        video, frame, blob = video[keep], frame[keep], None
        uniques = pd.unique(video)
    order = list(dict.fromkeys(listed + uniques.tolist()))
    return FrameList(file, video, frame, order, blob, locs, listed)


def _check_rows(
    path: Path,
    video: np.ndarray,
    frame: np.ndarray,
    codes: np.ndarray,
    uniques: np.ndarray,
    lines: np.ndarray,
    report: Report,
) -> np.ndarray:
    """Rows that pass (plain video names, frames >= 1, each frame once); the others reported."""
    keep = np.ones(len(frame), bool)
    for k, v in enumerate(uniques.tolist()):
        try:
            safe_name(v, what="video name")
        except ValueError as e:
            i = int(np.argmax(codes == k))
            report(
                DataError(
                    path, str(e), row=int(lines[i]), expected="a plain video name", found=repr(v)
                )
            )
            keep &= codes != k
    if (frame < 1).any():
        i = int(np.argmax(frame < 1))
        report(DataError(path, "frame number below 1", row=int(lines[i]), expected=">= 1", found=0))
        keep &= frame >= 1
    dup = pd.Series(codes.astype(np.int64) * (1 << 32) + frame).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        report(
            DataError(
                path,
                "frame listed twice",
                expected="each test frame once",
                found=f"{video[i]}/{frame[i]:05d}.jpg",
            )
        )
        keep &= ~dup
    return keep


def _parse_pandas(
    path: Path, raw: bytes, report: Report
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(video, frame, location, line number) of every well-formed row of any frame list.

    The first malformed row is reported (with its line: header = line 1); every malformed row
    is left out.
    """
    with reading(path, "the test frame list"):
        text = raw.decode("utf-8-sig")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    # A header line (ABAW5: image_location,...; ABAW6 editions vary): any first line
    # that is not a frame row.
    skip = 1 if lines and not _ROW.match(lines[0]) else 0
    s = pd.Series(lines[skip:], dtype=str)
    m = s.str.extract(_ROW)
    bad = m[0].isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        report(
            DataError(
                path,
                "malformed test frame row",
                row=i + 1 + skip,
                expected="'<video>/<frame, 5 digits>.jpg,'",
                found=repr(s.iat[i][:80]),
            )
        )
        m = m[~bad]
    return (
        m[0].to_numpy(dtype=str),
        m[1].astype(np.int64).to_numpy(),
        (m[0] + "/" + m[1] + ".jpg").to_numpy(dtype=str),
        np.flatnonzero(~bad) + 1 + skip,
    )


def _parse_fast(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(video, frame, blob) of a plain ASCII frame list, all in NumPy; None = not plain.

    Plain: `\\n` line ends, optional `image_location` header, rows `<video>/<digits>.jpg`
    optionally followed by `,...`, no spaces or control characters, no blank lines inside.
    Anything else goes through the pandas parser, which names the offending row.
    """
    buf = np.frombuffer(raw, np.uint8)
    if buf.size == 0 or (buf >= 128).any():
        return None
    nl = np.flatnonzero(buf == 10)
    if np.count_nonzero(buf <= 32) != len(nl):  # a space, \r, \t or other control byte
        return None
    if buf[-1] != 10:
        nl = np.append(nl, len(buf))
    starts = np.concatenate([[0], nl[:-1] + 1])
    ends = nl
    if raw.startswith(_HEADER):
        if b"/" in raw[: ends[0]]:  # a row, not a header: let the pandas parser decide
            return None
        starts, ends = starts[1:], ends[1:]
    nonempty = np.flatnonzero(ends > starts)
    if len(nonempty) == 0:
        return None
    last = nonempty[-1] + 1
    starts, ends = starts[:last], ends[:last]
    if (ends <= starts).any():
        return None
    rows = _locate(buf, starts, ends)
    if rows is None:
        return None
    loc_end, sl, frame = rows
    return _names(buf, starts, sl), frame, _blob(buf, starts, ends, loc_end)


def _locate(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(end of each location, its '/', its frame number), or None if a row is not plain."""
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
    return loc_end, sl, frame


def _names(buf: np.ndarray, starts: np.ndarray, sl: np.ndarray) -> np.ndarray:
    """(n,) str video names: the bytes from each row's start to its '/'."""
    vl = sl - starts
    width = int(vl.max())
    # Names as UTF-32 code points (ASCII bytes are their own code points): a (n, width) uint32
    # matrix viewed as fixed-width unicode, gathered in row chunks, no per-row Python.
    names = np.zeros((len(starts), width), np.uint32)
    cols = np.arange(width)
    for a in range(0, len(starts), _CHUNK):
        st, ln = starts[a : a + _CHUNK], vl[a : a + _CHUNK]
        idx = np.minimum(st[:, None] + cols, len(buf) - 1)
        names[a : a + len(st)] = np.where(cols < ln[:, None], buf[idx], 0)
    return names.view(f"<U{width}").reshape(-1)


def _blob(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, loc_end: np.ndarray) -> np.ndarray:
    """Every location followed by "\\n", as uint8 bytes (what follows a location is dropped)."""
    tail = ends - loc_end
    if (tail <= 1).all():  # rows are "<loc>," or "<loc>": drop the commas, keep the newlines
        keep = np.zeros(len(buf), bool)
        keep[starts[0] : ends[-1] + 1] = True
        keep[loc_end[tail == 1]] = False
        blob = buf[keep]
        if buf[-1] != 10 and ends[-1] == len(buf):
            blob = np.append(blob, np.uint8(10))
        return blob
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
    return blob
