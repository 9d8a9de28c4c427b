"""`abaw extract` end to end on media the tests make: extract -> inspect -> train, both tracks.

Media (abaw/extract/testmedia.py): an Aff-Wild2-like `cropped_aligned/` tree with missing
frames and a `_left`/`_right` pair; webcam-like H.264 + AAC videos of the astronaut's face
moving over a texture, some with a face-free half second; backbones with random weights saved
to files. Small inputs (64 px) keep it to seconds on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

require("torchvision")
require("av")
require("cv2")
require("skimage")

from abaw.cli import main  # noqa: E402
from abaw.errors import ConfigError  # noqa: E402
from abaw.extract import extract  # noqa: E402
from abaw.extract import testmedia as tm  # noqa: E402
from abaw.extraction import LOG_PREFIX, MANIFEST_NAME, read_extraction  # noqa: E402

TRAIN = {"v1": 24, "v2_left": 20, "v2_right": 20, "v5": 18}
DEVEL = {"v3": 20, "v6": 16}
TEST = {"v4": 14}
MISSING = {"v1": [3, 4], "v4": [14], "v3": [1]}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    base = tmp_path_factory.mktemp("extract")
    expr = tm.expr_data(base / "expr", train=TRAIN, devel=DEVEL, test=TEST, missing=MISSING)
    truth = tm.eri_data(
        base / "eri", base / "videos", splits={"train": 4, "devel": 2, "test": 1}, seconds=2.0
    )
    return {
        "base": base,
        "expr": expr,
        "eri": base / "eri",
        "videos": base / "videos",
        "truth": truth,
        "r18": tm.random_weights("torchvision:resnet18", base / "r18.pth"),
        "r18b": tm.random_weights("torchvision:resnet18", base / "r18b.pth", seed=1),
        "r18st": tm.random_weights("torchvision:resnet18", base / "r18.safetensors"),
    }


def _expr_args(media, name, *more):
    return ["extract", "--track", "expr", "--data", str(media["expr"]), "--name", name,
            "--backbone", "torchvision:resnet18", "--weights", str(media["r18"]),
            "--input-size", "64", *more]  # fmt: skip


def test_expr_extract_inspect_train(media, tmp_path, capsys):
    assert main(_expr_args(media, "R18", "--batch-size", "16", "--workers", "1")) == 0
    out = capsys.readouterr().out
    assert "extracted 7 file(s)" in out and "manifest" in out
    folder = media["expr"] / "features" / "R18"
    for video, n in {**TRAIN, **DEVEL, **TEST}.items():
        x = np.load(folder / f"{video}.npy", allow_pickle=False)
        assert x.shape == (n, 512) and x.dtype == np.float32
        nan = np.flatnonzero(np.isnan(x).any(axis=1)) + 1
        assert nan.tolist() == sorted(MISSING.get(video, [])), video
    m = json.loads((folder / MANIFEST_NAME).read_text())
    assert m["complete"] and m["targets"] == 7 and m["settings"]["weights_sha256"]
    assert m["items"]["v1"]["gaps"] == 2 and m["items"]["v2_left"]["rows"] == 20
    assert m["settings"]["input_size"] == 64 and m["settings"]["mean"] == [0.485, 0.456, 0.406]
    assert {"torch", "torchvision", "av", "safetensors"} <= set(m["versions"])
    assert m["settings"]["images"] == "cropped_aligned"  # relative to the data root
    assert not list(folder.glob(f"{LOG_PREFIX}*")) and not list(folder.glob(".*.tmp"))
    assert main(["inspect", "--track", "expr", "--data", str(media["expr"])]) == 0
    shown = capsys.readouterr().out
    assert "Extracted feature sets" in shown and "7 / 7" in shown
    runs = tmp_path / "runs"
    code = main(["train", "--sweep", "sweeps/expr-regnet.toml", "--data", str(media["expr"]),
                 "--set", 'data.backbones=["R18"]', "--set", "train.epochs=2",
                 "--set", "data.window=16", "--runs", str(runs)])  # fmt: skip
    assert code == 0
    assert list(runs.glob("train/*/predictions-devel.npz"))


def test_eri_extract_inspect_train(media, tmp_path, capsys):
    common = ["--track", "eri", "--data", str(media["eri"]), "--videos", str(media["videos"]),
              "--weights", str(media["r18st"]), "--backbone", "torchvision:resnet18",
              "--input-size", "64", "--workers", "1"]  # fmt: skip
    assert main(["extract", *common, "--name", "ResNet18", "--fps", "4"]) == 0
    assert main(["extract", *common, "--name", "DeepSpectrum", "--audio", "deepspectrum"]) == 0
    feats = media["eri"] / "feats"
    for sid, truth in media["truth"].items():
        rows = (feats / "ResNet18" / f"{sid}.csv").read_text().splitlines()
        assert rows[0].startswith("timestamp,frame,f0,") and len(rows[0].split(",")) == 514
        times = [float(r.split(",")[0]) for r in rows[1:]]
        face_free = [t for t, b in zip(truth.times, truth.boxes, strict=True) if b is None]
        assert not any(abs(t - f) < 1e-6 for t in times for f in face_free)
        assert len(rows) - 1 == 8 - sum(1 for t in (0.5, 0.7) if t in face_free)
        audio = (feats / "DeepSpectrum" / f"{sid}.csv").read_text().splitlines()
        assert audio[0].startswith("timestamp,segment,") and len(audio) - 1 == 4  # 2 s / 0.5 s
        assert [r.split(",")[:2] for r in audio[1:3]] == [["0.000", "0"], ["0.500", "1"]]
    m = json.loads((feats / "ResNet18" / MANIFEST_NAME).read_text())
    assert m["settings"]["fps"] == 4.0 and m["settings"]["detector"] == "haar"
    assert m["totals"]["faces"] == m["totals"]["rows"] < m["totals"]["frames_read"]
    dm = json.loads((feats / "DeepSpectrum" / MANIFEST_NAME).read_text())
    ds = dm["settings"]
    assert (ds["window"], ds["hop"], ds["method"]) == (1.0, 0.5, "deepspectrum")
    assert (ds["n_mels"], ds["drawn_size"], ds["colormap"]) == (128, 227, "viridis")
    # the videos' AAC at 16 kHz, analysed at that rate: a 512-point FFT (next power of 2 of 25 ms)
    assert dm["audio_rates"] == {"source_rate": [16000], "sample_rate": [16000], "n_fft": [512]}
    assert dm["items"]["00000"]["source_rate"] == 16000 and dm["items"]["00000"]["n_fft"] == 512
    assert (
        main(["extract", *common, "--name", "DSref", "--audio", "deepspectrum", "--reference"]) == 0
    )
    for sid in media["truth"]:  # matplotlib's drawing through the same pipeline: same features
        fast, ref = (np.loadtxt(feats / n / f"{sid}.csv", delimiter=",", skiprows=1)[:, 2:]
                     for n in ("DeepSpectrum", "DSref"))  # fmt: skip
        assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(fast, ref, strict=True)) >= 0.99
    assert main(["inspect", "--track", "eri", "--data", str(media["eri"]),
                 "--features", "DeepSpectrum,ResNet18"]) == 0  # fmt: skip
    assert "Extracted feature sets" in capsys.readouterr().out
    code = main(["train", "--sweep", "sweeps/eri-pooled.toml", "--data", str(media["eri"]),
                 "--set", 'data.features={DeepSpectrum="audio", ResNet18="visual"}',
                 "--set", "train.epochs=2", "--runs", str(tmp_path / "runs")])  # fmt: skip
    assert code == 0


def _load_all(folder):
    return {p.stem: np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npy"))}


def test_features_equal_across_batch_sizes_workers_and_shards(media):
    kw = dict(backbone="torchvision:resnet18", weights=media["r18"], input_size=64)
    root = media["expr"]
    extract("expr", root, name="A", batch_size=3, workers=0, **kw)
    extract("expr", root, name="B", batch_size=32, workers=2, **kw)
    first = extract("expr", root, name="C", batch_size=8, workers=1, shard="1/2", **kw)
    assert first.manifest is None and first.remaining > 0
    assert read_extraction(root / "features" / "C").headers  # in progress: logs only
    second = extract("expr", root, name="C", batch_size=8, workers=1, shard="2/2", **kw)
    assert second.manifest is not None and second.remaining == 0
    assert first.written + second.written == 7
    a, b, c = (_load_all(root / "features" / n) for n in "ABC")
    assert a.keys() == b.keys() == c.keys() and len(a) == 7
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(a[k], c[k], rtol=1e-4, atol=1e-5, equal_nan=True)


def _load_csvs(folder):
    return {p.stem: np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
            for p in sorted(folder.glob("*.csv"))}  # fmt: skip


@pytest.mark.parametrize("modality", ["faces", "deepspectrum"])
def test_eri_features_equal_across_batch_sizes_workers_and_shards(media, modality):
    """The ERI side of the determinism claim: video faces and DeepSpectrum windows."""
    kw = dict(backbone="torchvision:resnet18", weights=media["r18"], input_size=32,
              videos=media["videos"], show_progress=False)  # fmt: skip
    if modality == "deepspectrum":
        kw["audio"] = "deepspectrum"
    root, tag = media["eri"], modality[:2].upper()
    extract("eri", root, name=f"{tag}a", batch_size=2, workers=0, **kw)
    extract("eri", root, name=f"{tag}b", batch_size=64, workers=2, **kw)
    first = extract("eri", root, name=f"{tag}c", batch_size=5, workers=1, shard="1/2", **kw)
    second = extract("eri", root, name=f"{tag}c", batch_size=5, workers=1, shard="2/2", **kw)
    assert first.manifest is None and second.manifest is not None
    assert first.written + second.written == len(media["truth"])
    a, b, c = (_load_csvs(root / "feats" / f"{tag}{n}") for n in "abc")
    assert a.keys() == b.keys() == c.keys() and len(a) == len(media["truth"])
    for k in a:
        for other in (b[k], c[k]):
            assert other.shape == a[k].shape and len(a[k]) > 0
            np.testing.assert_array_equal(other[:, :2], a[k][:, :2])  # timestamps, indices
            np.testing.assert_allclose(other[:, 2:], a[k][:, 2:], rtol=1e-4, atol=1e-5)


def test_resume_skips_done_and_refuses_other_settings(media):
    kw = dict(backbone="torchvision:resnet18", input_size=64, workers=0)
    root = media["expr"]
    extract("expr", root, name="R", weights=media["r18"], **kw)
    again = extract("expr", root, name="R", weights=media["r18"], **kw)
    assert (again.written, again.skipped) == (0, 7)
    victim = root / "features" / "R" / "v3.npy"
    victim.unlink()  # a lost output is made again, nothing else
    again = extract("expr", root, name="R", weights=media["r18"], **kw)
    assert (again.written, again.skipped) == (1, 6) and victim.is_file()
    with pytest.raises(ConfigError, match=r"other settings \(weights .*r18\.pth.* now .*r18b\.pth"):
        extract("expr", root, name="R", weights=media["r18b"], **kw)
    with pytest.raises(ConfigError, match="input_size 64 now 96"):
        extract("expr", root, name="R", weights=media["r18"], **{**kw, "input_size": 96})
    other = shutil.copytree(root / "cropped_aligned", media["base"] / "other-frames")
    changed = re.escape(f"other settings (images cropped_aligned now {other.resolve()})")
    with pytest.raises(ConfigError, match=changed):  # another image tree: refused like weights
        extract("expr", root, name="R", weights=media["r18"], images=other, **kw)
    same = extract("expr", root, name="R", weights=media["r18"],
                   images=root / "cropped_aligned", **kw)  # fmt: skip
    assert same.skipped == 7  # the default tree named explicitly is the same tree
    with pytest.raises(ConfigError, match="--force starts the whole set over"):
        extract("expr", root, name="R", weights=media["r18b"], force=True, shard="1/2", **kw)
    redo = extract("expr", root, name="R", weights=media["r18b"], force=True, **kw)
    assert redo.written == 7 and redo.manifest is not None


def test_options_of_the_other_track_are_refused(media, capsys):
    code = main(_expr_args(media, "X", "--videos", str(media["videos"])))
    assert code == 1
    assert "--videos do not apply to the expr track (tracks that take them: eri)" in (
        capsys.readouterr().err
    )


_AFTER_DETECTION = """
import sys
from pathlib import Path
from abaw.extract import extract, media
from abaw.extract.faces import DetectorConfig, build_detector
eri, videos, weights = sys.argv[1:4]
_, _, rgb = next(media.video_frames(Path(videos) / "00001.mp4", None))
assert build_detector(DetectorConfig())(rgb) is not None  # OpenCV's thread pool now runs here
got = extract("eri", eri, videos=videos, name="AfterHaar", backbone="torchvision:resnet18",
              weights=weights, input_size=64, workers=1, show_progress=False)
print("written", got.written)
"""


def test_workers_start_after_a_detection_in_the_main_process(media):
    """A notebook that detected a face in-process (an ERI run with workers=0) forks workers
    whose copy of OpenCV's thread pool has no threads: reconfiguring it there hung forever."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _AFTER_DETECTION, str(media["eri"]), str(media["videos"]),
         str(media["r18"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,  # on a hang, the hung worker goes too
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("extract(..., workers=1) hung after a face detection in the main process")
    assert proc.returncode == 0, err[-2000:]
    assert f"written {len(media['truth'])}" in out
