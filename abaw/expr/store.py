"""The Expr feature store: one float16 .npy (total_frames, sum of widths) on disk, read by windows.

Why not np.memmap: every page of a map that a process touches counts toward its RSS and stays
resident while the map lives, so one epoch over a 10 GB store would pin 10 GB. `FeatureStore`
reads rows with `os.preadv` into fresh arrays instead; the kernel page cache still serves
repeated reads, but that memory is reclaimable and not charged to the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from abaw.io import read_npy_header

_MAX_PREAD = 1 << 30  # bytes per syscall (Linux caps a single read just under 2 GiB)


def _header(fh) -> tuple[tuple[int, ...], np.dtype, int]:
    shape, dtype, fortran = read_npy_header(fh)
    if fortran or len(shape) != 2:
        raise ValueError(f"{fh.name}: store must be a C-ordered 2-D array, found shape {shape}")
    return shape, dtype, fh.tell()


class FeatureStore:
    """Row reader over a 2-D .npy file; returns float32 copies, keeps nothing resident.

    Safe to pass to DataLoader workers: the file descriptor is reopened after unpickling.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            self.shape, self.dtype, self._offset = _header(fh)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd: int | None = None

    def is_complete(self) -> bool:
        """Whether the file holds every byte its header promises (a cut copy does not)."""
        need = self._offset + self.shape[0] * self._row_bytes
        try:
            return os.path.getsize(self.path) >= need
        except OSError:
            return False

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor (reopened on the next read)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        return self.shape[0]

    def _fdesc(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _pread_into(self, buf: np.ndarray, start: int) -> None:
        view = memoryview(buf).cast("B")
        pos, off = 0, self._offset + start * self._row_bytes
        while pos < len(view):
            n = os.preadv(self._fdesc(), [view[pos : pos + _MAX_PREAD]], off + pos)
            if n <= 0:
                from abaw.errors import DataError

                raise DataError(
                    self.path,
                    "feature store cut short",
                    expected=f"{len(view)} bytes at byte {off}",
                    found=f"end of file at byte {off + pos}",
                    hint="The cache was damaged (disk full? another process?); delete the "
                    "cache folder (abaw.expr.data.clear_cache) and load again",
                )
            pos += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop (all columns) as a new float32 array."""
        start, stop = max(0, int(start)), min(self.shape[0], int(stop))
        buf = np.empty((max(0, stop - start), self.shape[1]), self.dtype)
        if buf.size:
            self._pread_into(buf, start)
        return buf.astype(np.float32)

    def read_rows(self, index: np.ndarray) -> np.ndarray:
        """Rows at `index` (any order, repeats allowed) as float32; one read per contiguous run."""
        index = np.asarray(index, dtype=np.int64).ravel()
        if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"row index out of range 0..{self.shape[0] - 1}")
        uniq, inverse = np.unique(index, return_inverse=True)
        buf = np.empty((len(uniq), self.shape[1]), self.dtype)
        if len(uniq):
            breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
            starts = np.concatenate([[0], breaks])
            stops = np.concatenate([breaks, [len(uniq)]])
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                self._pread_into(buf[a:b], int(uniq[a]))
        return buf[inverse].astype(np.float32)

    def load_all(self) -> np.ndarray:
        """The whole store as float32 in RAM (small data sets, or a GPU that holds it)."""
        return self.read(0, self.shape[0])


class StoreWriter:
    """Writes a float16 .npy of known shape row block by row block (bounded memory)."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        self.shape, self.pos = shape, 0
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
            "fortran_order": False,
            "shape": shape,
        }
        self._fh = open(path, "wb")  # noqa: SIM115  (closed in close())
        np.lib.format.write_array_header_2_0(self._fh, header)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1] != self.shape[1] or self.pos + len(block) > self.shape[0]:
            raise ValueError(
                f"block {block.shape} does not fit store {self.shape} at row {self.pos}"
            )
        np.clip(block, -65000, 65000, out=block)
        self._fh.write(memoryview(np.ascontiguousarray(block, dtype=np.float16)).cast("B"))
        self.pos += len(block)

    def close(self, *, check: bool = True) -> None:
        """Close the file; with `check`, flush it to disk and insist every row was written.

        Why `check=False`: on the error path (a bad feature file half way through) the
        caller only needs the file closed so the real error surfaces; a "rows missing"
        ValueError raised here would replace it.
        """
        if not check:
            self._fh.close()
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self.pos != self.shape[0]:
            raise ValueError(f"store written with {self.pos} of {self.shape[0]} rows")


class ColumnStats:
    """Per-column mean and std over many row blocks (Chan et al. pairwise update, float64)."""

    def __init__(self, width: int) -> None:
        self.n = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def update(self, x: np.ndarray) -> None:
        """Add the rows of `x` (NaN rows skipped)."""
        x = x[~np.isnan(x).any(axis=1)]
        if not len(x):
            return
        n_b, mean_b = len(x), x.mean(axis=0, dtype=np.float64)
        m2_b = np.square(x - mean_b.astype(x.dtype)).sum(axis=0, dtype=np.float64)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def std(self) -> np.ndarray:
        """Population std; 1 where a column is constant or unseen (so it is left unscaled)."""
        var = np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0)
        sd = np.sqrt(var)
        return np.where(sd > 1e-6, sd, 1.0)


def fill_rows(x: np.ndarray, valid: np.ndarray, policy: str) -> np.ndarray:
    """Fill rows where `valid` is False in place: "nearest" valid row (ties: the earlier),
    "previous" valid row (the first valid one for leading gaps), or "zero". No valid row -> zeros."""
    if valid.all():
        return x
    if policy == "zero" or not valid.any():
        x[~valid] = 0.0
        return x
    vi = np.flatnonzero(valid)
    r = np.arange(len(x))
    prev_pos = np.searchsorted(vi, r, side="right") - 1
    prev = vi[np.maximum(prev_pos, 0)]
    nxt = vi[np.minimum(prev_pos + 1, len(vi) - 1)]
    if policy == "previous":
        src = np.where(prev_pos >= 0, prev, vi[0])
    elif policy == "nearest":
        use_next = (prev_pos < 0) | ((nxt - r) < (r - prev)) & (nxt >= r)
        src = np.where(use_next, nxt, prev)
    else:
        raise ValueError(f"unknown fill policy {policy!r}; use nearest, previous or zero")
    x[~valid] = x[src[~valid]]
    return x
