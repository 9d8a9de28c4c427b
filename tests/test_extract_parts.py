"""The parts of `abaw extract`: backbones and their files, DeepSpectrum, faces, the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require

require("torchvision")
require("av")
require("cv2")
require("skimage")

from abaw.errors import ConfigError  # noqa: E402
from abaw.extract import media, spectrum  # noqa: E402
from abaw.extract import testmedia as tm  # noqa: E402
from abaw.extract.backbones import load_backbone, offline  # noqa: E402
from abaw.extract.faces import (  # noqa: E402
    ARCFACE_112,
    DetectorConfig,
    Face,
    build_detector,
    check_detector,
    crop_box,
    crop_face,
    iou,
)

ROOT = Path(__file__).resolve().parents[1]


def _feats(bb, x):
    with torch.inference_mode():
        return bb.module(x).numpy()


def test_weights_files_pth_and_safetensors_give_the_same_features(tmp_path):
    a = load_backbone(
        "torchvision:resnet18", tm.random_weights("torchvision:resnet18", tmp_path / "w.pth")
    )
    b = load_backbone(
        "torchvision:resnet18",
        tm.random_weights("torchvision:resnet18", tmp_path / "w.safetensors"),
    )
    assert a.width == b.width == 512 and a.ignored == ["fc.weight", "fc.bias"]
    assert a.feature == "input of `fc` (pooled)" and a.input_size == 224
    x = torch.rand(2, 3, 64, 64)
    np.testing.assert_allclose(_feats(a, x), _feats(b, x), rtol=1e-6)
    wrapped = tmp_path / "wrapped.pth"  # a training checkpoint: {"state_dict": {"module.*": ...}}
    sd = torch.load(tmp_path / "w.pth", weights_only=True)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    np.testing.assert_allclose(
        _feats(load_backbone("torchvision:resnet18", wrapped), x), _feats(a, x)
    )


def test_timm_and_inception_resnet_v1(tmp_path):
    require("timm")
    vit = load_backbone(
        "timm:test_vit", tm.random_weights("timm:test_vit", tmp_path / "v.safetensors")
    )
    assert (
        vit.input_size == 160 and vit.width > 0 and any(k.startswith("head.") for k in vit.ignored)
    )
    irv1 = load_backbone(
        "inception_resnet_v1", tm.random_weights("inception_resnet_v1", tmp_path / "f.pt")
    )
    assert (irv1.input_size, irv1.width, irv1.ignored) == (
        160,
        512,
        ["logits.weight", "logits.bias"],
    )
    assert irv1.std[0] == pytest.approx(128 / 255)
    y = _feats(irv1, torch.rand(2, 3, 160, 160))
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=1), 1.0, rtol=1e-5
    )  # FaceNet's unit embedding


def test_file_programs_torchscript_and_export(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    x = torch.rand(2, 3, 32, 32)
    want = net(x).mean((2, 3)).detach().numpy()
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    dynamic = ({0: torch.export.Dim.AUTO},)  # any batch size (docs/extract.md)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dynamic), tmp_path / "m.pt2")
    for f in ("m.ts", "m.pt2"):
        bb = load_backbone(f"file:{tmp_path / f}", None, input_size=32)
        assert bb.width == 8 and bb.sha256
        np.testing.assert_allclose(_feats(bb, x), want, rtol=1e-5, atol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="neither a TorchScript nor a torch.export file"):
        load_backbone(f"file:{tmp_path / 'junk.pt'}", None)


def test_nothing_is_downloaded_while_building():
    before = os.environ.get("TORCH_HOME")
    with offline() as empty:
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TORCH_HOME"] == str(empty)
        assert not any(empty.iterdir())
    assert os.environ.get("TORCH_HOME") == before
    with pytest.raises(ConfigError, match=r"--weights FILE is required|weights file not found"):
        load_backbone("torchvision:resnet18", "/no/such/file.pth")
    with pytest.raises(ConfigError, match="expected torchvision:NAME, timm:NAME"):
        load_backbone("resnet18", None)


def test_deepspectrum_windows_follow_the_original(tmp_path):
    path = tm.audio_file(tmp_path / "a.wav", seconds=2.3, sample_rate=16000)
    rows = list(media.audio_windows(path, 1.0, 0.5))
    # n < max(len // hop, 1) windows: 2.3 s // 0.5 s = 4, the last ones shorter than 1 s
    assert [r[0] for r in rows] == [0, 1, 2, 3] and [r[1] for r in rows] == [0, 0.5, 1.0, 1.5]
    assert [len(r[2]) for r in rows] == [16000, 16000, 16000, 12800]
    whole = list(media.audio_windows(path, None, None))
    assert len(whole) == 1 and len(whole[0][2]) == 36800
    signal = tm.audio_signal(2.3, 16000).mean(axis=0)
    np.testing.assert_allclose(rows[1][2], signal[8000:24000], atol=2e-4)  # mono = channel mean
    assert spectrum.nfft_for(16000) == 512 and spectrum.nfft_for(44100) == 2048
    assert spectrum.mel_filterbank(16000, 512).shape == (128, 257)


def test_deepspectrum_fast_path_matches_the_reference(tmp_path):
    """Images and DenseNet121 features of the torch path against matplotlib's drawing."""
    sr = 16000
    signal = tm.audio_signal(4.0, sr, seed=3).mean(axis=0)
    windows = [signal[s : s + sr] for s in range(0, 3 * sr + 1, sr // 2)]  # 7 windows
    ref = np.stack(
        [spectrum.resize_reference(spectrum.render_reference(w, sr), 224) for w in windows]
    )
    fast = spectrum.FastSpectrum(torch.device("cpu"), 224).images(
        torch.from_numpy(np.stack(windows)), sr
    )
    fast_u8 = fast.permute(0, 2, 3, 1).numpy() * 255
    for f, r in zip(fast_u8, ref, strict=True):  # PIL's bicubic resize smooths a little
        assert np.corrcoef(f.ravel(), r.ravel().astype(float))[0, 1] > 0.99
    drawn = spectrum.FastSpectrum(torch.device("cpu"), 227).images(
        torch.from_numpy(np.stack(windows[:2])), sr
    )
    exact = spectrum.render_reference(windows[1], sr).astype(float)
    assert np.abs(drawn[1].permute(1, 2, 0).numpy() * 255 - exact).max() <= 3  # same drawing
    bb = load_backbone(
        "torchvision:densenet121", tm.random_weights("torchvision:densenet121", tmp_path / "d.pth")
    )
    assert bb.width == 1024  # DenseNet121's pooled features, as Keras' avg_pool
    mean, std = torch.tensor(bb.mean).view(1, 3, 1, 1), torch.tensor(bb.std).view(1, 3, 1, 1)
    a = _feats(bb, (fast - mean) / std)
    b = _feats(bb, (torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 255 - mean) / std)
    corr = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]
    assert min(corr) >= 0.99, corr


def test_haar_finds_the_face_and_only_the_face(tmp_path):
    truth = tm.face_video(tmp_path / "f.mp4", seconds=3.0, fps=10, face_free=(1.0, 2.0))
    detect = build_detector(DetectorConfig())
    margin = DetectorConfig().crop_margin()
    hits, fps_, ious = 0, 0, []
    for i, _, rgb in media.video_frames(truth.path, None):
        face, box = detect(rgb), truth.boxes[i]
        if box is None:
            fps_ += face is not None
        elif face is not None:
            hits += 1
            ious.append(iou(crop_box(face, margin), box))
    faces = sum(b is not None for b in truth.boxes)
    assert (hits, fps_) == (faces, 0) and faces == 20
    assert min(ious) >= 0.8, ious
    crop = crop_face(rgb, face, 64, margin)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def test_landmark_alignment_and_detector_files(tmp_path):
    rgb = np.zeros((200, 200, 3), np.uint8)
    pts = ARCFACE_112 * 1.5 + 20  # a face 1.5x the template, shifted
    rgb[int(pts[0, 1]), int(pts[0, 0])] = 255  # the right eye, marked
    out = crop_face(rgb, Face((0, 0, 1, 1), pts.astype(np.float32), 1.0), 112, 1.0)
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert abs(x - ARCFACE_112[0, 0]) <= 1.5 and abs(y - ARCFACE_112[0, 1]) <= 1.5
    with pytest.raises(ConfigError, match="--detector yunet needs --detector-weights"):
        check_detector(DetectorConfig("yunet"))
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="x.onnx: OpenCV cannot load it as a YuNet ONNX model"):
        check_detector(DetectorConfig("yunet", str(tmp_path / "x.onnx")))
    (tmp_path / "c.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ConfigError, match="not an OpenCV cascade XML"):
        check_detector(DetectorConfig("haar", str(tmp_path / "c.xml")))


def test_benchmark_quick_mode_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_extract.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for needle in ("load average", "pipeline", "bare forward", "per-image PIL loop",
                   "DeepSpectrum", "peak RSS", "face detection"):  # fmt: skip
        assert needle in proc.stdout, needle
