"""Windows over videos: padding, masks, chunked streaming, and overlap averaging."""

from __future__ import annotations

import numpy as np
import torch

from abaw.expr.windows import (
    FrameSource,
    average_overlaps,
    chunk_ids,
    iter_windows,
    make_windows,
    window_positions,
)


def _windows(n_frames, size=4, stride=2):
    n = np.asarray(n_frames)
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    return make_windows(np.arange(len(n)), first, n, size=size, stride=stride)


def test_windows_cover_every_frame_and_last_is_edge_padded():
    w = _windows([10, 3, 0, 4], size=4, stride=3)
    # Video 0 (10 frames): starts 0, 3, 6 (6+4 = 10 reaches the end); video 1 (3 frames): one padded
    # window; video 2: none; video 3 (4 frames): exactly one full window.
    assert w.video.tolist() == [0, 0, 0, 1, 3]
    assert w.row.tolist() == [0, 3, 6, 10, 13]
    assert w.length.tolist() == [4, 4, 4, 3, 4]
    assert w.out.tolist() == [0, 3, 6, 10, 13]
    assert w.n_out == 17
    # 6 + 4 = 10 < 11 frames: a fourth window starts at 9 with 2 real frames.
    w = _windows([11], size=4, stride=3)
    assert w.row.tolist() == [0, 3, 6, 9]
    assert w.length.tolist() == [4, 4, 4, 2]


def test_positions_repeat_the_last_real_frame_and_mask_padding():
    offs, pad = window_positions(np.array([4, 2, 1]), 4)
    assert offs.tolist() == [[0, 1, 2, 3], [0, 1, 1, 1], [0, 0, 0, 0]]
    assert pad.tolist() == [[False] * 4, [False, False, True, True], [False, True, True, True]]


def test_overlap_average_matches_direct_per_frame_mean():
    rng = np.random.default_rng(0)
    n = np.array([23, 5, 40, 1])
    w = _windows(n, size=8, stride=3)
    probs = rng.random((len(w), 8, 3))
    sums, counts = average_overlaps(w.take(np.arange(0, len(w), 2)), probs[::2])
    sums, counts = average_overlaps(w.take(np.arange(1, len(w), 2)), probs[1::2], sums, counts)
    got = (sums / counts[:, None]).numpy()
    direct = np.zeros((w.n_out, 3))
    for f in range(w.n_out):  # every window whose real frames include output position f
        hits = [
            probs[i, f - w.out[i]] for i in range(len(w)) if w.out[i] <= f < w.out[i] + w.length[i]
        ]
        assert hits, f"frame {f} covered by no window"
        direct[f] = np.mean(hits, axis=0)
    np.testing.assert_allclose(got, direct, rtol=1e-12)
    assert counts.min() >= 1


class _CountingStore:
    def __init__(self, x):
        self.x = x
        self.reads = []

    def read(self, start, stop):
        self.reads.append((start, stop))
        return self.x[start:stop].astype(np.float32)


def test_streamed_epoch_reads_chunks_and_matches_direct_gather():
    rng = np.random.default_rng(1)
    n = np.array([50, 7, 90, 33])
    x = rng.standard_normal((n.sum(), 5)).astype(np.float32)
    w = _windows(n, size=8, stride=4)
    chunk = chunk_ids(w, 40)
    assert chunk.max() >= 3  # several chunks
    store = _CountingStore(x)
    src = FrameSource(store.read, columns=np.array([0, 2, 4]))
    g = torch.Generator().manual_seed(0)
    seen = []
    for b in iter_windows(
        src, w, np.arange(len(w)), batch_size=5, chunk=chunk, buffer_chunks=2, generator=g
    ):
        offs, pad = window_positions(w.length[b.index], 8)
        rows = w.row[b.index, None] + offs
        np.testing.assert_array_equal(b.x.numpy(), x[rows][:, :, [0, 2, 4]])
        np.testing.assert_array_equal(b.pad, pad)
        seen += b.index.tolist()
    assert sorted(seen) == list(range(len(w)))  # every window exactly once
    assert seen != sorted(seen)  # shuffled
    assert len(store.reads) == chunk.max() + 1  # one sequential read per chunk
    assert max(b - a for a, b in store.reads) <= 40 + 8


def test_in_memory_source_reads_once_and_gives_same_batches():
    rng = np.random.default_rng(2)
    n = np.array([30, 12])
    x = rng.standard_normal((n.sum(), 4)).astype(np.float32)
    w = _windows(n, size=6, stride=3)
    store = _CountingStore(x)
    src = FrameSource(store.read, preload=(0, len(x)))
    chunk = chunk_ids(w, None)
    for _ in range(2):
        got = {}
        for b in iter_windows(src, w, np.arange(len(w)), batch_size=4, chunk=chunk):
            for i, xi in zip(b.index, b.x, strict=True):
                got[int(i)] = xi.numpy()
        assert sorted(got) == list(range(len(w)))
        offs, _ = window_positions(w.length, 6)
        for i in got:
            np.testing.assert_array_equal(got[i], x[w.row[i] + offs[i]])
    assert store.reads == [(0, len(x))]
