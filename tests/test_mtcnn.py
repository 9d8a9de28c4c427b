"""Our MTCNN (abaw/extract/mtcnn.py) on seeded random weights saved as the published files.

Random weights cannot find faces; these tests pin the wiring instead: the published layout
and its error messages, the nets' shapes, the crops (area averages, black past the frame),
NMS, the image orientation of boxes and landmarks, determinism and batch = one at a time,
and the faces.py path (largest face, aligned crop). The detection quality of the real
weights is measured by benchmarks/bench_extract.py --detector mtcnn (docs/extract.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require

require("cv2")

from abaw.errors import ConfigError  # noqa: E402
from abaw.extract import mtcnn as mt  # noqa: E402
from abaw.extract.faces import (  # noqa: E402
    DetectorConfig,
    build_detector,
    check_detector,
    crop_face,
    crop_region,
    detector_sha256,
)

HEADS = {"pnet.pt": "conv4_1", "rnet.pt": "dense5_1", "onet.pt": "dense6_1"}


def _weights(folder: Path, fire: bool | None = None, seed: int = 0) -> Path:
    """pnet.pt, rnet.pt, onet.pt with seeded random values; `fire`: every stage's face
    score forced to ~1 (True) or ~0 (False), so the whole cascade runs, or none of it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name, cls in mt.NETS.items():
        sd = cls().state_dict()
        if fire is not None:
            sd[f"{HEADS[name]}.weight"].zero_()
            sd[f"{HEADS[name]}.bias"] = torch.tensor([-8.0, 8.0] if fire else [8.0, -8.0])
        torch.save(sd, folder / name)
    return folder


def _frames(n: int, h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """Textured face-free frames (B, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
    return np.stack(
        [np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255) for _ in range(n)]
    ).astype(np.uint8)


def test_the_nets_have_the_published_layout_and_shapes():
    p, r, o = mt.PNet(), mt.RNet(), mt.ONet()
    assert tuple(p.state_dict()["conv1.weight"].shape) == (10, 3, 3, 3)
    assert {"prelu1.weight", "conv4_1.weight", "conv4_2.weight"} <= set(p.state_dict())
    assert {"conv3.weight", "dense4.weight", "dense5_1.weight", "dense5_2.weight"} <= set(
        r.state_dict()
    )
    assert {"conv4.weight", "dense5.weight", "dense6_1.bias", "dense6_3.weight"} <= set(
        o.state_dict()
    )
    with torch.inference_mode():
        prob, reg = p(torch.zeros(2, 3, 12, 12))
        assert prob.shape == (2, 1, 1) and reg.shape == (2, 4, 1, 1)
        prob, reg = p(torch.zeros(1, 3, 60, 80))
        assert prob.shape == (1, 25, 35) and reg.shape == (1, 4, 25, 35)
        prob, reg = r(torch.zeros(3, 3, 24, 24))
        assert prob.shape == (3,) and reg.shape == (3, 4)
        prob, reg, pts = o(torch.zeros(3, 3, 48, 48))
        assert prob.shape == (3,) and reg.shape == (3, 4) and pts.shape == (3, 10)
        assert torch.all((prob >= 0) & (prob <= 1))


def test_weights_load_from_the_folder_or_one_of_its_files(tmp_path):
    folder = _weights(tmp_path / "data")
    for path in (folder, folder / "rnet.pt"):
        model = mt.MTCNN.from_path(path)
        assert isinstance(model.onet, mt.ONet) and not model.onet.training
    assert check_detector(DetectorConfig("mtcnn", str(folder))) == folder / "onet.pt"


def test_a_missing_or_wrong_weights_file_is_one_clear_error(tmp_path):
    folder = _weights(tmp_path / "data")
    with pytest.raises(ConfigError, match="--detector mtcnn needs --detector-weights FOLDER"):
        check_detector(DetectorConfig("mtcnn"))
    with pytest.raises(ConfigError, match=r"nowhere: MTCNN weights not found.*pip download"):
        check_detector(DetectorConfig("mtcnn", str(tmp_path / "nowhere")))
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="needs the folder holding pnet.pt"):
        check_detector(DetectorConfig("mtcnn", str(tmp_path / "w.pth")))
    (folder / "rnet.pt").unlink()
    with pytest.raises(ConfigError, match=r"data: no rnet.pt there .*facenet-pytorch"):
        check_detector(DetectorConfig("mtcnn", str(folder)))
    torch.save(mt.ONet().state_dict(), folder / "rnet.pt")  # another net's weights
    with pytest.raises(ConfigError) as e:
        check_detector(DetectorConfig("mtcnn", str(folder)))
    msg = str(e.value)
    assert "rnet.pt: not MTCNN's rnet weights" in msg and "missing dense4.weight" in msg
    assert "conv1.weight (28, 3, 3, 3)" in msg and "pip download facenet-pytorch" in msg
    assert "torch<2.3" in msg
    sd = mt.RNet().state_dict()
    sd["conv1.weight"] = torch.zeros(28, 3, 5, 5)
    torch.save(sd, folder / "rnet.pt")
    with pytest.raises(ConfigError, match=r"wrong shapes: conv1.weight \(28, 3, 5, 5\)"):
        check_detector(DetectorConfig("mtcnn", str(folder)))
    torch.save(mt.RNet(), folder / "rnet.pt")  # a pickled module: refused by weights_only
    with pytest.raises(ConfigError, match="rnet.pt: cannot be read as a torch state dict"):
        check_detector(DetectorConfig("mtcnn", str(folder)))
    (folder / "rnet.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"rnet.pt: cannot be read.*expected rnet's tensors"):
        check_detector(DetectorConfig("mtcnn", str(folder)))


def test_the_checksum_covers_all_three_files(tmp_path):
    folder = _weights(tmp_path / "data")
    cfg = DetectorConfig("mtcnn", str(folder))
    before = detector_sha256(cfg)
    _weights(tmp_path / "other", seed=1)
    (folder / "pnet.pt").write_bytes((tmp_path / "other" / "pnet.pt").read_bytes())
    assert detector_sha256(cfg) != before


def test_crops_are_area_averages_padded_with_black():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8))
    integral = F.pad(img.to(torch.int64).cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0))
    boxes = np.array([[5, 3, 34, 32], [-9, 20, 20, 49], [2, 2, 11, 11]], np.float32)  # 1-based
    frames = torch.tensor([0, 1, 1])
    crops = mt.crop_area(integral, frames, boxes, 24)
    assert crops.shape == (3, 3, 24, 24)
    padded = F.pad(img.permute(0, 3, 1, 2).float(), (20, 20, 20, 20))  # black around
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        region = padded[frames[k], :, y0 - 1 + 20 : y1 + 20, x0 - 1 + 20 : x1 + 20]
        want = F.interpolate(region[None], size=(24, 24), mode="area")[0]
        assert torch.allclose(crops[k], want, atol=1e-3), k


def test_nms_and_the_geometry_helpers():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert mt.nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # 1 overlaps 0 (IoU 0.68)
    # 3 lies inside 0 and 1: over the smaller box they overlap fully, over the union little
    assert mt.nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]
    per = mt.nms_per_image(boxes, scores, np.array([0, 1, 0, 1]), 0.5)
    assert sorted(per.tolist()) == [0, 1, 2, 3]
    assert mt.nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0
    sq = mt.square(np.array([[10.0, 20.0, 30.0, 60.0]]))
    assert np.allclose(sq, [[0.0, 20.0, 40.0, 60.0]])
    assert np.allclose(mt.regress(np.array([[0.0, 0, 9, 19]]), np.array([[0.1, 0, 0, -0.1]])),
                       [[1.0, 0, 9, 17]])  # fmt: skip
    scales = mt.pyramid(120, 160)
    assert scales[0] == pytest.approx(0.6) and 120 * scales[-1] >= 12 > 120 * scales[-1] * 0.709


class _OneCell(torch.nn.Module):
    """P-Net stand-in: a face at one output cell (row 2, column 9) of the first scale."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width, self.real = width, mt.PNet()

    def forward(self, x):
        prob, reg = self.real(x)
        prob, reg = torch.zeros_like(prob), torch.zeros_like(reg)
        if x.shape[-1] == self.width:
            prob[0, 2, 9] = 0.99
        return prob, reg


class _Fixed(torch.nn.Module):
    """R-Net / O-Net stand-in: every crop a face, no box change, fixed landmarks."""

    def __init__(self, landmarks: bool) -> None:
        super().__init__()
        self.landmarks = landmarks

    def forward(self, x):
        n = len(x)
        prob, reg = torch.full((n,), 0.99), torch.zeros(n, 4)
        pts = torch.tensor([[0.3, 0.7, 0.5, 0.35, 0.65, 0.4, 0.4, 0.6, 0.8, 0.8]]).repeat(n, 1)
        return (prob, reg, pts) if self.landmarks else (prob, reg)


def test_boxes_and_landmarks_are_in_image_orientation():
    """x is the column, y the row; landmarks are five x then five y (the published order)."""
    h, w = 60, 100
    first = int(w * 0.6 + 1)
    model = mt.MTCNN([_OneCell(first), _Fixed(False), _Fixed(True)])
    det = model.detect(np.zeros((h, w, 3), np.uint8))[0]
    assert det.boxes.shape == (1, 4) and det.landmarks.shape == (1, 5, 2)
    x0, y0, x1, y1 = det.boxes[0]
    assert (x0, y0) == pytest.approx((19 / 0.6, 5 / 0.6), abs=1.0)  # column 9, row 2; stride 2
    assert x1 - x0 == pytest.approx(y1 - y0)  # squared
    side = x1 - x0 + 1
    lm = det.landmarks[0]
    assert lm[0].tolist() == pytest.approx([x0 - 1 + 0.3 * side, y0 - 1 + 0.4 * side], abs=1e-3)
    assert lm[1, 0] > lm[0, 0] and lm[3, 1] > lm[2, 1]  # right eye to the right, mouth below


def test_face_free_frames_deterministic_and_batch_equals_one_at_a_time(tmp_path):
    frames = _frames(3)
    quiet = mt.MTCNN.from_path(_weights(tmp_path / "never", fire=False))
    assert all(len(d.boxes) == 0 and d.landmarks.shape == (0, 5, 2) for d in quiet.detect(frames))
    loud = mt.MTCNN.from_path(_weights(tmp_path / "always", fire=True))
    batch = loud.detect(frames)
    assert all(len(d.boxes) > 0 for d in batch)  # every stage ran
    again = loud.detect(list(frames))
    for k, d in enumerate(batch):
        one = loud.detect(frames[k])[0]
        for other in (one, again[k]):
            assert np.allclose(d.boxes, other.boxes, atol=1e-3)
            assert np.allclose(d.landmarks, other.landmarks, atol=1e-3)
            assert np.allclose(d.scores, other.scores)
        assert np.all(np.diff(d.scores) <= 0) and np.isfinite(d.boxes).all()
    with pytest.raises(ValueError, match=r"RGB frames \(B, H, W, 3\)"):
        loud.detect(np.zeros((4, 5)))


def test_the_faces_path_takes_the_largest_face_and_aligns_it(tmp_path):
    frames = _frames(2)
    cfg = DetectorConfig("mtcnn", str(_weights(tmp_path / "always", fire=True)))
    assert cfg.crop_margin() == 1.0
    detect = build_detector(cfg)
    face = detect(frames[0])
    dets = detect.model.detect(frames[0])[0]
    areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    assert face.box == pytest.approx(tuple(dets.boxes[int(np.argmax(areas))]))
    assert face.landmarks.shape == (5, 2)
    crop = crop_face(frames[0], face, 64, cfg.crop_margin())
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert len(crop_region(face, 64, 1.0)) == 4
    for a, b in zip(detect.batch(frames), [detect(f) for f in frames], strict=True):
        assert a.box == pytest.approx(b.box, abs=1e-3)
    quiet = build_detector(DetectorConfig("mtcnn", str(_weights(tmp_path / "n", fire=False))))
    assert quiet(frames[0]) is None


def test_extract_with_mtcnn_records_all_three_files_and_refuses_a_changed_one(tmp_path):
    """`abaw extract --detector mtcnn` end to end (weights that always fire, so rows are
    written): the manifest's detector checksum covers pnet, rnet and onet, and a rerun after
    one of them changed is refused rather than mixed in."""
    from abaw.extract import extract
    from abaw.extract import testmedia as tm

    tm.eri_data(tmp_path / "eri", tmp_path / "videos", splits={"train": 1, "devel": 1,
                "test": 1}, seconds=1.0)  # fmt: skip
    r18 = tm.random_weights("torchvision:resnet18", tmp_path / "r18.pth")
    folder = _weights(tmp_path / "mtcnn", fire=True)
    kw = dict(backbone="torchvision:resnet18", weights=r18, input_size=32, workers=0,
              videos=tmp_path / "videos", detector="mtcnn", detector_weights=folder,
              show_progress=False)  # fmt: skip
    res = extract("eri", tmp_path / "eri", name="M", **kw)
    assert res.written == 3 and res.manifest is not None
    settings = json.loads(res.manifest.read_text(encoding="utf-8"))["settings"]
    assert settings["detector"] == "mtcnn"
    assert settings["detector_sha256"] == detector_sha256(DetectorConfig("mtcnn", str(folder)))
    _weights(tmp_path / "other", seed=1)
    (folder / "rnet.pt").write_bytes((tmp_path / "other" / "rnet.pt").read_bytes())
    with pytest.raises(ConfigError, match="detector weights"):
        extract("eri", tmp_path / "eri", name="M", **kw)
