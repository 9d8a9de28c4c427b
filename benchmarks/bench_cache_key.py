"""What the robust cache key costs at full ERI scale (issue #9).

The key of a cached feature set stats every feature file: size, mtime, inode and ctime
(abaw.io.cache_key / stat_token). This script creates N small files (default 25,067, one
per Hume-Reaction sample) in a temporary folder and times, over --repeat runs:

- key (size + mtime): the old key, for comparison;
- key (size + mtime + inode + ctime): the key the loaders use now;
- content hash: SHA-256 of every file, the alternative the issue mentions (scales with the
  bytes: --file-bytes 150000 is about one real DeepSpectrum CSV);
- cached load: opening a cache entry (manifest + np.load of offsets and a memory-mapped
  values array of --values-mb), i.e. what a cached `load_eri` does after the key.

Run: python benchmarks/bench_cache_key.py [--files 25067] [--file-bytes 200] [--values-mb 256]
Numbers under load from other jobs are noise; record `uptime` with them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's abaw
from abaw.eri.csvio import _listing  # noqa: E402
from abaw.io import cache_key  # noqa: E402


def _old_key(folder: Path) -> str:
    h = hashlib.sha256()
    for stem, st in sorted(_listing(folder).items()):
        h.update(f"{stem}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _new_key(folder: Path) -> str:
    return cache_key(["bench"], _listing(folder).items())


def _content_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def _cached_load(entry: Path) -> int:
    man = json.loads((entry / "manifest.json").read_text())
    offsets = np.load(entry / "offsets.npy", allow_pickle=False)
    values = np.load(entry / "values.npy", allow_pickle=False, mmap_mode="c")
    return int(offsets[-1]) + values.shape[1] + len(man)


def _time(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=25067)
    ap.add_argument("--file-bytes", type=int, default=200, help="size of each file")
    ap.add_argument("--values-mb", type=int, default=256, help="cached values array size")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="where to create the files (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "feats" / "DeepSpectrum"
        folder.mkdir(parents=True)
        line = (b"0.12345," * (args.file_bytes // 8 + 1))[: args.file_bytes - 1] + b"\n"
        t = time.perf_counter()
        for i in range(args.files):
            (folder / f"{i:05d}.csv").write_bytes(line)
        made = time.perf_counter() - t

        entry = Path(tmp) / "cache" / "DeepSpectrum--key"
        entry.mkdir(parents=True)
        rows = max(1, (args.values_mb << 20) // (1024 * 4))
        np.save(entry / "offsets.npy", np.linspace(0, rows, args.files + 1).astype(np.int64))
        v = np.lib.format.open_memmap(entry / "values.npy", "w+", np.float32, (rows, 1024))
        v[:] = 0
        v.flush()
        del v
        (entry / "manifest.json").write_text(json.dumps({"key": "key", "arrays": ["values"]}))

        results = {
            "key (size + mtime), old": _time(lambda: _old_key(folder), args.repeat),
            "key (size + mtime + inode + ctime), now": _time(lambda: _new_key(folder), args.repeat),
            "content hash (SHA-256 of every file)": _time(
                lambda: _content_hash(folder), max(1, args.repeat // 2)
            ),
            f"cached load (manifest + mmap of {args.values_mb} MB)": _time(
                lambda: _cached_load(entry), args.repeat
            ),
        }
    load = os.getloadavg()
    print(
        f"{args.files:,} files of {args.file_bytes} B (created in {made:.1f} s); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"{'what':<52} {'median s':>9} {'min s':>9}")
    for k, (med, best) in results.items():
        print(f"{k:<52} {med:>9.4f} {best:>9.4f}")


if __name__ == "__main__":
    main()
