"""Writing + validating the full-size Expr single-file submission, against `pandas.read_csv`.

Builds a test frame list of the real ABAW5 size (1,022,656 frames over 228 videos) and
random test predictions for it (no data set needed), then times, in one run:
  - the frame list parse (done once per submit / validate),
  - writing the submission file (argmax, bytes, atomic write),
  - validating it with the same code as `abaw validate` (file read + checks),
  - a plain `pandas.read_csv` of the same file (the yardstick: target <= 3x),
  - the whole `abaw.submit.submit` call (write, validate, publish, zip, manifest),
  - the row-by-row diagnosis of a file with one wrong row (the slow path),
each as the best of --repeat runs, with `os.getloadavg()` printed beside every figure.

    python benchmarks/bench_submit.py              # full size
    python benchmarks/bench_submit.py --frames 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abaw.expr import CLASSES  # noqa: E402
from abaw.expr.framelist import read_frame_list  # noqa: E402
from abaw.expr.layout import TEST_FRAME_HEADER, TEST_FRAME_LIST, TEST_VIDEO_LIST  # noqa: E402
from abaw.expr.submission import check_single, write_submission  # noqa: E402
from abaw.predictions import Predictions  # noqa: E402


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def make_data(root: Path, frames: int, videos: int, seed: int = 0) -> None:
    """A data root holding only the test frame list and video list (all submit needs)."""
    rng = np.random.default_rng(seed)
    w = rng.gamma(2.0, 1.0, videos)
    n = np.maximum(1, np.floor(w / w.sum() * frames)).astype(int)
    n[np.argmax(n)] += frames - n.sum()
    res = ["1920x1080", "1280x720", "640x360"]
    names = [
        f"{i}-{24 + i % 7}-{res[i % 3]}"
        + ("_left" if i % 40 == 1 else "_right" if i % 40 == 2 else "")
        for i in range(videos)
    ]
    root.mkdir(parents=True, exist_ok=True)
    vid = np.repeat(np.array(names), n)
    fr = np.concatenate([np.arange(1, k + 1) for k in n])
    loc = pd.Series(vid) + "/" + pd.Series(fr).map("{:05d}".format) + ".jpg,"
    (root / TEST_FRAME_LIST).write_text(TEST_FRAME_HEADER + "\n" + "\n".join(loc) + "\n")
    (root / TEST_VIDEO_LIST).write_text("\n".join(names) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=1_022_656)
    ap.add_argument("--videos", type=int, default=228)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-submit-"))
    try:
        data = work / "data"
        make_data(data, args.frames, args.videos)
        print(f"frame list: {args.frames} frames, {args.videos} videos   [{load()}]")
        vlist = data / TEST_VIDEO_LIST
        t_parse, fl = best(lambda: read_frame_list(data / TEST_FRAME_LIST, vlist), args.repeat)
        rng = np.random.default_rng(1)
        values = rng.random((len(fl), 8), dtype=np.float32)
        pred = Predictions("expr", "test", {"video": fl.video, "frame": fl.frame}, values, CLASSES)
        out = work / "out"
        out.mkdir(exist_ok=True)

        def write_only():
            return write_submission(pred, data, out, fmt="single")[0][0]

        # Time the writer without its frame-list parse, as submit would with the list in hand:
        import abaw.expr.submission as sub

        real = sub.frame_list
        sub.frame_list = lambda d, f=None: fl
        try:
            t_write, path = best(write_only, args.repeat)
        finally:
            sub.frame_list = real
        raw_size = path.stat().st_size
        print(f"write:    {t_write:.3f} s  ({raw_size / 1e6:.1f} MB)   [{load()}]")

        t_val, probs = best(lambda: check_single(path.read_bytes(), str(path), fl), args.repeat)
        assert probs == [], probs[:3]
        print(f"validate: {t_val:.3f} s  (read + every check, 0 problems)   [{load()}]")

        t_pd, df = best(lambda: pd.read_csv(path), args.repeat)
        assert len(df) == len(fl)
        print(f"pandas.read_csv: {t_pd:.3f} s   [{load()}]")
        ratio = (t_write + t_val) / t_pd
        print(
            f"write + validate = {t_write + t_val:.3f} s = {ratio:.2f}x read_csv "
            f"(target <= 3x, < 1.5 s)   [{load()}]"
        )
        print(f"frame list parse (once per command): {t_parse:.3f} s   [{load()}]")

        from abaw.submit import submit
        from abaw.track import get_track

        t_imp = time.perf_counter()
        get_track("expr")  # imports torch: a one-off cost of every `abaw` command, not of submit
        t_imp = time.perf_counter() - t_imp
        print(f"import of the track modules (torch), once per process: {t_imp:.3f} s   [{load()}]")

        def full():
            return submit("expr", pred, data, out=work / "subs", name="bench", force=True)

        t_full, res = best(full, 1)
        print(
            f"submit() end to end (parse, write, validate, publish, zip, manifest): "
            f"{t_full:.3f} s; zip {res.zip.stat().st_size / 1e6:.1f} MB   [{load()}]"
        )
        bad = bytearray(path.read_bytes())
        i = bad.rindex(b",", 0, len(bad) // 2)
        bad[i + 1 : i + 2] = b"9"
        t_diag, probs = best(lambda: check_single(bytes(bad), "bad", fl), 1)
        print(
            f"diagnose a file with one bad label (slow path): {t_diag:.3f} s, "
            f"{len(probs)} problem (row {probs[0].row})   [{load()}]"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
