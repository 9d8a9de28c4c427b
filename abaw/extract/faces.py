"""Face detection, cropping and alignment for video frames, offline by construction.

Detectors (docs/extract.md has the measured figures):

- `haar` (default): OpenCV's frontal-face Haar cascade, which ships inside the
  opencv-python-headless wheel (4.x; OpenCV 5 no longer ships it), so nothing is fetched.
  Its box covers brows to mouth; the crop is that box made square and scaled by
  `HAAR_MARGIN` (measured on the astronaut photograph: the whole face, hairline to chin).
  `--detector-weights FILE` may name another cascade XML.
- `yunet`: OpenCV's `FaceDetectorYN` with the user's ONNX file (`face_detection_yunet_*.onnx`
  from the OpenCV model zoo); it gives five landmarks, so the face is aligned to the
  ArcFace five-point template (a similarity transform) instead of cropped.
- `mtcnn`: our MTCNN (abaw/extract/mtcnn.py) on the published facenet-pytorch weights, the
  folder holding pnet.pt, rnet.pt, onet.pt (`--detector-weights`); five landmarks, aligned as
  yunet. It runs on `DetectorConfig.device` in the main process; in a worker process on the
  CPU (CUDA cannot be used in a forked worker).

The largest face of a frame is taken (a reaction video shows one person). Detectors hold
OpenCV objects, which cannot be pickled: each worker process builds its own from a
`DetectorConfig`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw.errors import ConfigError

DETECTORS = ("haar", "yunet", "mtcnn")
HAAR_MARGIN = 1.1  # Haar box (brows to mouth) -> whole face; measured in docs/extract.md
HAAR_FILE = "haarcascade_frontalface_default.xml"
# ArcFace's 5-point template on a 112 x 112 face: eyes, nose tip, mouth corners.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], np.float32,
)  # fmt: skip
YUNET_HINT = (
    "YuNet's ONNX file is published in the OpenCV model zoo "
    "(models/face_detection_yunet/face_detection_yunet_2023mar.onnx); download it once"
)


@dataclass(frozen=True)
class DetectorConfig:
    """Which detector, its weights file (None: the one in the wheel), the crop margin and
    the device of a torch detector (mtcnn)."""

    name: str = "haar"
    weights: str | None = None
    margin: float | None = None  # None: the detector's default
    device: str = "cpu"

    def crop_margin(self) -> float:
        if self.margin is not None:
            return float(self.margin)
        return HAAR_MARGIN if self.name == "haar" else 1.0


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    landmarks: np.ndarray | None  # (5, 2) or None
    score: float


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "face detection needs OpenCV: pip install -e '.[extract]' (opencv-python-headless 4.x)"
        ) from None
    return cv2


def haar_path(cfg: DetectorConfig) -> Path:
    """The cascade XML: the user's, else the one shipped in the OpenCV wheel."""
    if cfg.weights:
        return Path(cfg.weights)
    cv2 = _cv2()
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = Path(folder) / HAAR_FILE
    if not path.is_file():
        raise ConfigError(
            f"OpenCV {cv2.__version__} ships no {HAAR_FILE} (OpenCV 5 dropped the cascades): "
            "install opencv-python-headless>=4.8,<5 (the extract extra pins it), or give a "
            "cascade XML with --detector-weights, or --detector yunet --detector-weights FILE.onnx"
        )
    return path


def _mtcnn_hint() -> str:
    from abaw.extract.mtcnn import PUBLISHED

    return PUBLISHED


def detector_files(cfg: DetectorConfig) -> list[Path]:
    """Every weights file the detector reads (mtcnn: three), for the manifest's checksum."""
    if cfg.name == "mtcnn":
        from abaw.extract.mtcnn import weight_files

        return weight_files(str(cfg.weights))
    return [haar_path(cfg) if cfg.name == "haar" else Path(str(cfg.weights))]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def detector_sha256(cfg: DetectorConfig) -> str:
    """SHA-256 of the detector's file; with several (mtcnn), of their digests in order, so
    changing any one of them changes it."""
    digests = [_sha256(p) for p in detector_files(cfg)]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def check_detector(cfg: DetectorConfig) -> Path:
    """Fail early, in the main process, on a detector that workers could not build.

    Returns its weights file (mtcnn: onet.pt; `detector_files` lists all three).
    """
    if cfg.name not in DETECTORS:
        raise ConfigError(f"--detector must be one of {', '.join(DETECTORS)}, got {cfg.name!r}")
    if cfg.name == "yunet" and not cfg.weights:
        raise ConfigError(f"--detector yunet needs --detector-weights FILE.onnx. {YUNET_HINT}")
    if cfg.name == "mtcnn":
        if not cfg.weights:
            raise ConfigError(
                "--detector mtcnn needs --detector-weights FOLDER (holding pnet.pt, rnet.pt, "
                f"onet.pt). {_mtcnn_hint()}"
            )
        files = detector_files(cfg)  # a missing folder or file: one error naming it
        build_detector(cfg)  # a wrong file fails here, once, with its name and layout
        return files[-1]
    path = haar_path(cfg) if cfg.name == "haar" else Path(str(cfg.weights))
    if not path.is_file():
        raise ConfigError(
            f"{path}: detector weights file not found"
            + (f". {YUNET_HINT}" if cfg.name == "yunet" else "")
        )
    build_detector(cfg)  # a wrong file fails here, once, with its name
    return path


class _Haar:
    def __init__(self, path: Path) -> None:
        cv2 = _cv2()
        try:
            self.cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # OpenCV raises on some malformed XML
            self.cascade = None
        if self.cascade is None or self.cascade.empty():
            raise ConfigError(f"{path}: not an OpenCV cascade XML (the detector cannot load it)")

    def __call__(self, rgb: np.ndarray) -> Face | None:
        cv2 = _cv2()
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        h, w = gray.shape
        side = max(24, min(h, w) // 10)
        found = self.cascade.detectMultiScale(gray, 1.1, 5, minSize=(side, side))
        if len(found) == 0:
            return None
        x, y, bw, bh = max(found.tolist(), key=lambda b: b[2] * b[3])
        return Face((float(x), float(y), float(x + bw), float(y + bh)), None, 1.0)


class _YuNet:
    def __init__(self, path: Path) -> None:
        cv2 = _cv2()
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.7, 0.3, 50)
        except cv2.error as e:
            raise ConfigError(
                f"{path}: OpenCV cannot load it as a YuNet ONNX model ({str(e)[:120]}). {YUNET_HINT}"
            ) from None
        self.size: tuple[int, int] | None = None

    def __call__(self, rgb: np.ndarray) -> Face | None:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        if self.size != (w, h):
            self.net.setInputSize((w, h))
            self.size = (w, h)
        _, faces = self.net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return None
        f = max(faces, key=lambda r: r[2] * r[3])
        x, y, bw, bh = (float(v) for v in f[:4])
        return Face(
            (x, y, x + bw, y + bh), np.asarray(f[4:14], np.float32).reshape(5, 2), float(f[14])
        )


class _Mtcnn:
    def __init__(self, cfg: DetectorConfig) -> None:
        import torch
        from torch.utils.data import get_worker_info

        from abaw.extract.mtcnn import MTCNN

        if not cfg.weights:
            raise ConfigError(f"--detector mtcnn needs --detector-weights FOLDER. {_mtcnn_hint()}")
        device = torch.device(cfg.device)
        if device.type != "cpu" and get_worker_info() is not None:
            device = torch.device("cpu")  # CUDA cannot be initialised in a forked worker
        self.model = MTCNN.from_path(str(cfg.weights), device)

    def __call__(self, rgb: np.ndarray) -> Face | None:
        return _largest(self.model.detect(rgb[None])[0])

    def batch(self, frames: np.ndarray) -> list[Face | None]:
        """The largest face of each of a batch of same-size frames (one pass per stage)."""
        return [_largest(d) for d in self.model.detect(frames)]


def _largest(det) -> Face | None:
    if not len(det.scores):
        return None
    b = det.boxes
    i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    x0, y0, x1, y1 = (float(v) for v in b[i])
    return Face((x0, y0, x1, y1), det.landmarks[i].copy(), float(det.scores[i]))


def build_detector(cfg: DetectorConfig):
    """A callable RGB frame -> the largest Face or None."""
    if cfg.name == "haar":
        return _Haar(haar_path(cfg))
    if cfg.name == "mtcnn":
        return _Mtcnn(cfg)
    return _YuNet(Path(str(cfg.weights)))


def crop_box(face: Face, margin: float) -> tuple[float, float, float, float]:
    """The square crop of a detection: centred on its box, side = longer side x margin."""
    x0, y0, x1, y1 = face.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * margin / 2
    return cx - half, cy - half, cx + half, cy + half


def _alignment(face: Face, size: int, margin: float) -> np.ndarray | None:
    """The similarity transform frame -> size x size crop putting the landmarks on the
    ArcFace template (scaled out by `margin`), or None without landmarks."""
    if face.landmarks is None:
        return None
    cv2 = _cv2()
    template = ((ARCFACE_112 - 56.0) / margin + 56.0) * (size / 112.0)
    m, _ = cv2.estimateAffinePartial2D(face.landmarks, template, method=cv2.LMEDS)
    return m


def crop_region(face: Face, size: int, margin: float) -> tuple[float, float, float, float]:
    """What the crop covers in the frame, as an (x0, y0, x1, y1) box: the aligned square
    mapped back (its bounding box when tilted), else `crop_box`. Benchmarks compare it with
    the known face box."""
    m = _alignment(face, size, margin)
    if m is None:
        return crop_box(face, margin)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    pts = corners @ inv.T
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
            float(pts[:, 1].max()))  # fmt: skip


def crop_face(rgb: np.ndarray, face: Face, size: int, margin: float) -> np.ndarray:
    """size x size RGB face: aligned on landmarks when the detector gives them, else the
    square crop of the box (parts outside the frame are black)."""
    cv2 = _cv2()
    m = _alignment(face, size, margin)
    if m is not None:
        return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    x0, y0, x1, y1 = crop_box(face, margin)
    scale = size / max(x1 - x0, 1e-6)
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if scale < 1:  # area filter on a resized copy: no aliasing on large faces
        x0i, y0i = int(np.floor(x0)), int(np.floor(y0))
        side = int(np.ceil(x1 - x0)) + 2
        pad = side
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        region = padded[y0i + pad : y0i + pad + side, x0i + pad : x0i + pad + side]
        small = cv2.resize(region, None, fx=scale, fy=scale, interpolation=interp)
        m2 = np.array([[1, 0, -(x0 - x0i) * scale], [0, 1, -(y0 - y0i) * scale]], np.float32)
        return cv2.warpAffine(small, m2, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
