"""From per-frame feature rows to fixed-length windows, and back to per-frame probabilities.

A window is `size` consecutive frames of one video. Training uses windows every
`stride` frames; a video shorter than a window, and the last window of every
video, are edge-padded (the last real frame repeated) and the padding is masked.
Inference uses overlapping windows and averages each frame's probabilities
over every window that covers it, so every frame gets exactly one prediction.

The feature store can be ~10 GB at Aff-Wild2 scale, so windows are never read
one by one: they are grouped into chunks of consecutive store rows, each chunk is
read with one sequential `read(start, stop)`, and an epoch visits chunks in a
shuffled order, shuffling windows inside a small buffer of chunks (a shuffle
buffer, as in tf.data / WebDataset). When the whole split fits in a memory budget
the rows are read once and kept (on the GPU when there is one): that is the same
code with a single chunk that never leaves memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Windows:
    """Windows over the videos of one split (arrays of equal length W).

    Args:
        size: frames per window (L).
        video: (W,) index of the window's video.
        row: (W,) store row of the window's first frame.
        length: (W,) real frames in the window (<= size); the rest is edge padding.
        out: (W,) position of the window's first frame in the split's per-frame output.
        n_out: frames in the split's per-frame output (sum of the videos' lengths).
    """

    size: int
    video: np.ndarray
    row: np.ndarray
    length: np.ndarray
    out: np.ndarray
    n_out: int

    def __len__(self) -> int:
        return len(self.row)

    def take(self, idx: np.ndarray) -> Windows:
        """The windows at `idx` (same split, same output positions)."""
        return Windows(
            self.size, self.video[idx], self.row[idx], self.length[idx], self.out[idx], self.n_out
        )


def make_windows(
    video_ids: np.ndarray, first_rows: np.ndarray, n_frames: np.ndarray, *, size: int, stride: int
) -> Windows:
    """Windows every `stride` frames over each video; the last one may run past the end (padded).

    Args:
        video_ids: (V,) ids of the videos (kept in `Windows.video`).
        first_rows: (V,) store row of each video's frame 1.
        n_frames: (V,) frames per video (0 gives no window).
        size: window length in frames.
        stride: step between window starts.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be >= 1, got {size} and {stride}")
    video_ids = np.asarray(video_ids, dtype=np.int64)
    first_rows = np.asarray(first_rows, dtype=np.int64)
    n = np.asarray(n_frames, dtype=np.int64)
    # Enough windows that the last one reaches the last frame: 1 + ceil((n - size) / stride).
    count = np.where(n > 0, 1 + np.maximum(0, -(-(n - size) // stride)), 0)
    total = int(count.sum())
    vid = np.repeat(np.arange(len(n)), count)
    first_window = np.cumsum(count) - count
    local = (np.arange(total) - first_window[vid]) * stride
    out_base = np.cumsum(n) - n
    return Windows(
        size=size,
        video=video_ids[vid],
        row=first_rows[vid] + local,
        length=np.minimum(size, n[vid] - local),
        out=out_base[vid] + local,
        n_out=int(n.sum()),
    )


def window_positions(length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame offsets inside each window with edge padding, and the padding mask.

    Returns (offsets (B, L) int64 clipped to each window's last real frame, pad (B, L) bool).
    """
    pos = np.arange(size, dtype=np.int64)[None, :]
    length = np.asarray(length, dtype=np.int64)[:, None]
    return np.minimum(pos, length - 1), pos >= length


def average_overlaps(windows: Windows, probs: np.ndarray | torch.Tensor, sums=None, counts=None):
    """Average per-frame probabilities over every window covering each frame.

    Args:
        windows: the windows the probabilities belong to (B of them).
        probs: (B, L, C) per-window probabilities (padding positions are ignored).
        sums, counts: running accumulators from earlier calls (None starts new ones).

    Returns (sums (n_out, C) float64, counts (n_out,) int64); divide to get the average.
    """
    probs = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    b, size, c = probs.shape
    if sums is None:
        sums = torch.zeros(windows.n_out, c, dtype=torch.float64)
        counts = torch.zeros(windows.n_out, dtype=torch.int64)
    _, pad = window_positions(windows.length, size)
    keep = torch.from_numpy(~pad)
    target = torch.from_numpy(windows.out[:, None] + np.arange(size)[None, :])[keep]
    sums.index_add_(0, target, probs[keep])
    counts.index_add_(0, target, torch.ones_like(target))
    return sums, counts


def chunk_ids(windows: Windows, max_rows: int | None) -> np.ndarray:
    """Chunk of each window: windows whose first rows fall in the same `max_rows` block of the store.

    `None` puts every window in one chunk (the in-memory path).
    """
    if max_rows is None or len(windows) == 0:
        return np.zeros(len(windows), dtype=np.int64)
    _, chunk = np.unique((windows.row - windows.row.min()) // max(1, max_rows), return_inverse=True)
    return chunk.astype(np.int64)


class FrameSource:
    """Contiguous spans of feature rows, from the store or from a copy held in memory.

    Args:
        read: `read(start, stop) -> (n, D) float32` over store rows (the FeatureStore's `read`).
        columns: the feature columns to keep (None = all).
        device: where batches go.
        preload: (start, stop) store rows to read once and keep on `device`, or None to stream.
    """

    def __init__(
        self,
        read: Callable[[int, int], np.ndarray],
        *,
        columns: slice | np.ndarray | None = None,
        device: torch.device | str = "cpu",
        preload: tuple[int, int] | None = None,
    ) -> None:
        self._read = read
        self.columns = columns
        self.device = torch.device(device)
        self._held: torch.Tensor | None = None
        self._held_start = 0
        if preload is not None:
            self._held_start = int(preload[0])
            self._held = self._load(*preload).to(self.device)

    def _load(self, start: int, stop: int) -> torch.Tensor:
        rows = self._read(int(start), int(stop))
        if self.columns is not None:
            rows = rows[:, self.columns]
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))

    def span(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop): a view of the held copy, or a fresh sequential read."""
        if self._held is not None:
            a = start - self._held_start
            return self._held[a : a + (stop - start)]
        return self._load(start, stop)


@dataclass
class WindowBatch:
    """Windows gathered from one buffer: features, store rows and padding mask."""

    index: np.ndarray  # (B,) which windows (positions in the Windows given to the iterator)
    x: torch.Tensor  # (B, L, D) features, padding = edge frames
    rows: np.ndarray  # (B, L) store row of every position (edge-clipped)
    pad: np.ndarray  # (B, L) True at padding positions


def iter_windows(
    source: FrameSource,
    windows: Windows,
    order: np.ndarray,
    *,
    batch_size: int,
    chunk: np.ndarray,
    buffer_chunks: int = 1,
    generator: torch.Generator | None = None,
) -> Iterator[WindowBatch]:
    """Yield batches of the windows `order` (indices, repeats allowed), reading chunk by chunk.

    Without a generator the windows come in `order`'s order, chunk by chunk (inference).
    With one, the chunks are visited in a random order and windows are shuffled
    within each buffer of `buffer_chunks` chunks (training).
    """
    order = np.asarray(order, dtype=np.int64)
    if len(order) == 0:
        return
    chunk_of = chunk[order]
    if generator is None:
        groups = [order[chunk_of == c] for c in np.unique(chunk_of)]
    else:
        order = order[np.argsort(chunk_of, kind="stable")]
        _, starts = np.unique(chunk[order], return_index=True)
        parts = np.split(order, starts[1:])
        perm = torch.randperm(len(parts), generator=generator).numpy()
        parts = [parts[i] for i in perm]
        groups = [
            np.concatenate(parts[i : i + buffer_chunks])
            for i in range(0, len(parts), buffer_chunks)
        ]
    for group in groups:
        if generator is not None:
            group = group[torch.randperm(len(group), generator=generator).numpy()]
        # One contiguous read per chunk in this group; windows index into the concatenation.
        cs = np.unique(chunk[group])
        lo = np.zeros(cs[-1] + 1, dtype=np.int64)
        at = np.zeros(cs[-1] + 1, dtype=np.int64)
        buf, filled = [], 0
        for c in cs:
            sel = group[chunk[group] == c]
            lo[c] = windows.row[sel].min()
            hi = int((windows.row[sel] + windows.length[sel]).max())
            buf.append(source.span(int(lo[c]), hi))
            at[c] = filled
            filled += hi - int(lo[c])
        rows_all = torch.cat(buf) if len(buf) > 1 else buf[0]
        lo_of, at_of = lo[chunk[group]], at[chunk[group]]
        for i in range(0, len(group), batch_size):
            idx = group[i : i + batch_size]
            offs, pad = window_positions(windows.length[idx], windows.size)
            rows = windows.row[idx, None] + offs
            local = rows - lo_of[i : i + batch_size, None] + at_of[i : i + batch_size, None]
            x = rows_all[torch.from_numpy(local).to(rows_all.device)]
            yield WindowBatch(idx, x, rows, pad)
