"""MTCNN (Zhang et al. 2016) in torch, on the published facenet-pytorch weights, offline.

Why our own: facenet-pytorch's wheel ships the three nets' weights (MIT licence) but pins
torch<2.3, so it cannot be a dependency. Its state dicts (`facenet_pytorch/data/pnet.pt`,
`rnet.pt`, `onet.pt`) load here with `torch.load(weights_only=True)`; nothing is downloaded.

The conventions of those weights, read from facenet-pytorch 2.6.0 (`models/mtcnn.py`,
`models/utils/detect_face.py`, `models/utils/tensorflow2pytorch.py`) and checked by
measurement (docs/extract.md):

- input: RGB in 0..255, `(x - 127.5) * 0.0078125`;
- orientation: the original Caffe nets run on the transposed image (Matlab is column-major).
  The PyTorch conversion transposed every conv kernel instead, so these weights take the image
  in its ordinary (N, C, H, W) orientation; the dense layers still flatten in the transposed
  (W, H, C) order, hence the permute before `dense4` / `dense5`. Measured on the test videos
  (160x120 and 320x240): feeding the transposed image drops recall to 15/20 and 18/20 (boxes
  then come out with x and y swapped); flattening in (C, H, W) order fires on every face-free
  frame (10/10); as written, 20/20 and 0/10;
- P-Net's regression channels are dx1, dy1, dx2, dy2 (image x, y); O-Net's ten landmark
  outputs are five x then five y, relative to the box; boxes are in the original's 1-based
  pixel convention (corners as facenet-pytorch returns them).

The cascade: P-Net over an image pyramid (scale 12 / min_face, factor 0.709, down to 12 px),
candidates above 0.6, NMS 0.5 within each scale and 0.7 across scales, box regression and
squaring; R-Net on 24 x 24 crops (> 0.7, NMS 0.7, regression, squaring); O-Net on 48 x 48
crops (> 0.7) with five landmarks, regression, NMS 0.7 over the smaller box. Crops are area
averages (as facenet-pytorch's `interpolate(mode="area")`), taken for all boxes at once from
an integral image; a crop that reaches past the frame is padded with black, as in the
original MTCNN. facenet-pytorch clips it instead, which stretches faces at the border:
measured on a 120 px face leaving the frame by steps of 4 px, it loses the face once 56 px
are cut, black padding once 68 px are; while both find it, box IoU with the known box is
0.64-0.79 (mean 0.72) here, 0.56-0.81 (mean 0.67) there.

Checked against facenet-pytorch 2.6.0 itself (its code run at development time, not a
dependency) on the benchmark's test videos: the same faces in the same frames, boxes and
landmarks equal to 3e-5 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abaw.errors import ConfigError

FILES = ("pnet.pt", "rnet.pt", "onet.pt")
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
MIN_FACE = 20
CHUNK = 512  # R-Net / O-Net crops per forward pass (bounded memory on many candidates)
PUBLISHED = (
    "MTCNN's weights are published in the facenet-pytorch wheel on PyPI (MIT licence): "
    "`pip download facenet-pytorch==2.6.0 --no-deps -d DIR`, then "
    "`unzip DIR/facenet_pytorch-2.6.0-py3-none-any.whl 'facenet_pytorch/data/*.pt'` and pass "
    "--detector-weights facenet_pytorch/data (do not pip install it: it pins torch<2.3)"
)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    """Flatten (N, C, H, W) in (W, H, C) order: the Caffe nets' dense layers saw it so."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12 x 12 window, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24 x 24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_transposed(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48 x 48 crops: score, box regression and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)


NETS = {"pnet.pt": PNet, "rnet.pt": RNet, "onet.pt": ONet}


def weight_files(path: str | Path) -> list[Path]:
    """The three state dicts: PATH is their folder, or one of them (its siblings are used)."""
    p = Path(path)
    folder = p.parent if p.name in FILES and not p.is_dir() else p
    if not folder.exists():
        raise ConfigError(
            f"{p}: MTCNN weights not found (expected a folder holding {', '.join(FILES)}). "
            f"{PUBLISHED}"
        )
    if not folder.is_dir():
        raise ConfigError(
            f"{p}: --detector mtcnn needs the folder holding {', '.join(FILES)} (or one of "
            f"those files), not another file. {PUBLISHED}"
        )
    files = [folder / name for name in FILES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigError(
            f"{folder}: no {', '.join(missing)} there (MTCNN needs {', '.join(FILES)}). {PUBLISHED}"
        )
    return files


def _layout(net: nn.Module) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in net.state_dict().items())


def load_net(file: Path) -> nn.Module:
    """One net from its state dict; a wrong file is one error naming it and the layout."""
    net = NETS[file.name]()
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise ConfigError(
            f"{file}: cannot be read as a torch state dict with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); expected "
            f"{file.stem}'s tensors: {_layout(net)}. {PUBLISHED}"
        ) from None
    problems: list[str] = []
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        problems.append(f"found a {type(sd).__name__}, not a dict of tensors")
    else:
        found = {k: tuple(v.shape) for k, v in sd.items()}
        if missing := [k for k in expected if k not in found]:
            problems.append(
                f"missing {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else "")
            )
        if extra := [k for k in found if k not in expected]:
            problems.append(
                f"unexpected {', '.join(extra[:6])}" + (" ..." if len(extra) > 6 else "")
            )
        if shapes := [f"{k} {found[k]} (expected {v})" for k, v in expected.items()
                      if k in found and found[k] != v]:  # fmt: skip
            problems.append("wrong shapes: " + ", ".join(shapes[:4]))
    if problems:
        raise ConfigError(
            f"{file}: not MTCNN's {file.stem} weights ({'; '.join(problems)}); expected "
            f"{_layout(net)}. {PUBLISHED}"
        )
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    return net.eval()


@dataclass
class Detections:
    """The faces of one frame, best score first: boxes (n, 4) x0 y0 x1 y1, scores (n,),
    landmarks (n, 5, 2) x y: eyes, nose tip, mouth corners (image left first)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first. `min`: overlap over the
    smaller box, pixels counted inclusively (+1), as the original's last stage; `union`:
    intersection over union of the continuous boxes (torchvision's rule, which the published
    weights' reference code uses: with it our boxes equal facenet-pytorch's)."""
    order = np.argsort(-scores, kind="stable")
    one = 1.0 if mode == "min" else 0.0
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x1 - x0 + one) * (y1 - y0 + one)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + one)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + one)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-12) <= thresh]
    return np.asarray(keep, np.int64)


def nms_per_image(
    boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, thresh: float, mode: str = "union"
) -> np.ndarray:
    """`nms` within each frame of a batch; indices kept, in frame order."""
    keep = [np.flatnonzero(image == b)[nms(boxes[image == b], scores[image == b], thresh, mode)]
            for b in np.unique(image)]  # fmt: skip
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Box regression: corners moved by reg x the box's side (P-Net's stage without +1)."""
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    return boxes[:, :4] + reg * np.stack([w, h, w, h], 1)


def square(boxes: np.ndarray) -> np.ndarray:
    """The square around each box's centre, side = its longer side (the original's rerec)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x0, y0 = boxes[:, 0] + w / 2 - side / 2, boxes[:, 1] + h / 2 - side / 2
    return np.stack([x0, y0, x0 + side, y0 + side], 1)


def pyramid(height: int, width: int, min_face: int = MIN_FACE, factor: float = FACTOR) -> list:
    """P-Net's scales: the smallest face maps to its 12 px window; down to a 12 px image."""
    scale, side, out = 12.0 / min_face, min(height, width) * 12.0 / min_face, []
    while side >= 12:
        out.append(scale)
        scale, side = scale * factor, side * factor
    return out


def _bins(start: torch.Tensor, length: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of k adaptive-average bins over [start, start + length): torch's area rule."""
    i = torch.arange(k, device=start.device)
    lo = start[:, None] + torch.div(i[None] * length[:, None], k, rounding_mode="floor")
    hi = start[:, None] - torch.div(-(i[None] + 1) * length[:, None], k, rounding_mode="floor")
    return lo, hi


def crop_area(
    integral: torch.Tensor, image: torch.Tensor, boxes: np.ndarray, k: int
) -> torch.Tensor:
    """k x k area-averaged crops (n, 3, k, k) of integer boxes, all at once.

    `integral`: (B, H + 1, W + 1, 3) int64 summed-area tables of the frames; `boxes`: 1-based
    inclusive corners (the original's convention), truncated to ints. Bins past the frame add
    nothing but count in the area: black padding.
    """
    b = torch.from_numpy(np.trunc(boxes[:, :4]).astype(np.int64)).to(integral.device)
    h, w = integral.shape[1] - 1, integral.shape[2] - 1
    ylo, yhi = _bins(b[:, 1] - 1, b[:, 3] - b[:, 1] + 1, k)
    xlo, xhi = _bins(b[:, 0] - 1, b[:, 2] - b[:, 0] + 1, k)
    area = ((yhi - ylo)[:, :, None] * (xhi - xlo)[:, None, :]).clamp(min=1)
    ylo, yhi, xlo, xhi = ylo.clamp(0, h), yhi.clamp(0, h), xlo.clamp(0, w), xhi.clamp(0, w)
    n, y0, y1 = image[:, None, None], ylo[:, :, None], yhi[:, :, None]
    x0, x1 = xlo[:, None, :], xhi[:, None, :]
    s = integral[n, y1, x1] - integral[n, y0, x1] - integral[n, y1, x0] + integral[n, y0, x0]
    return (s.to(torch.float32) / area[..., None]).permute(0, 3, 1, 2)


class MTCNN:
    """The three nets on one device; `detect` takes a batch of same-size RGB frames."""

    def __init__(
        self,
        nets: Sequence[nn.Module],
        device: str | torch.device = "cpu",
        *,
        min_face: int = MIN_FACE,
        thresholds: Sequence[float] = THRESHOLDS,
        factor: float = FACTOR,
    ) -> None:
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = (n.to(self.device).eval() for n in nets)
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor

    @classmethod
    def from_path(cls, path: str | Path, device: str | torch.device = "cpu", **kw) -> MTCNN:
        """Load the published state dicts from their folder (or one of the three files)."""
        return cls([load_net(f) for f in weight_files(path)], device, **kw)

    def _run(self, net: nn.Module, crops: torch.Tensor) -> list[np.ndarray]:
        outs = [net(_normalise(crops[i : i + CHUNK])) for i in range(0, len(crops), CHUNK)]
        return [torch.cat(parts).float().cpu().numpy() for parts in zip(*outs, strict=True)]

    def _proposals(self, imgs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over the pyramid: (n, 5) boxes + score, (n,) frame index, squared."""
        h, w = imgs.shape[2:]
        found, frames = [], []
        for s in pyramid(h, w, self.min_face, self.factor):
            x = F.interpolate(imgs, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            prob, reg = self.pnet(_normalise(x))
            idx = torch.nonzero(prob >= self.thresholds[0])
            if not len(idx):
                continue
            score = prob[idx[:, 0], idx[:, 1], idx[:, 2]].float().cpu().numpy()
            r = reg[idx[:, 0], :, idx[:, 1], idx[:, 2]].float().cpu().numpy()
            idx = idx.cpu().numpy()
            xy = idx[:, [2, 1]].astype(np.float32)
            q0, q1 = np.floor((2 * xy + 1) / s), np.floor((2 * xy + 12) / s)
            boxes = np.concatenate([q0, q1, score[:, None], r], 1)
            keep = nms_per_image(boxes, score, idx[:, 0], 0.5)
            found.append(boxes[keep])
            frames.append(idx[keep, 0])
        if not found:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
        boxes, image = np.concatenate(found), np.concatenate(frames)
        keep = nms_per_image(boxes, boxes[:, 4], image, 0.7)
        boxes, image = boxes[keep], image[keep]
        moved = square(regress(boxes[:, :4], boxes[:, 5:9], plus_one=False))
        return np.concatenate([moved, boxes[:, 4:5]], 1), image

    def _refine(self, integral, boxes, image) -> tuple[np.ndarray, np.ndarray]:
        """R-Net on 24 x 24 crops: keep, suppress, regress, square."""
        if not len(boxes):
            return boxes, image
        crops = crop_area(integral, torch.from_numpy(image).to(self.device), boxes, 24)
        prob, reg = self._run(self.rnet, crops)
        ok = prob > self.thresholds[1]
        boxes, image, reg = np.concatenate([boxes[ok, :4], prob[ok, None]], 1), image[ok], reg[ok]
        keep = nms_per_image(boxes, boxes[:, 4], image, 0.7)
        boxes, image, reg = boxes[keep], image[keep], reg[keep]
        return np.concatenate([square(regress(boxes, reg)), boxes[:, 4:5]], 1), image

    def _output(self, integral, boxes, image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on 48 x 48 crops: keep, landmarks, regress, suppress (overlap over the
        smaller box)."""
        if not len(boxes):
            return boxes, np.zeros((0, 5, 2), np.float32), image
        crops = crop_area(integral, torch.from_numpy(image).to(self.device), boxes, 48)
        prob, reg, pts = self._run(self.onet, crops)
        ok = prob > self.thresholds[2]
        boxes, image, reg, pts = boxes[ok], image[ok], reg[ok], pts[ok]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        marks = np.stack([w * pts[:, :5] + boxes[:, :1] - 1, h * pts[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = np.concatenate([regress(boxes, reg), prob[ok, None]], 1)
        keep = nms_per_image(boxes, boxes[:, 4], image, 0.7, mode="min")
        return boxes[keep], marks[keep], image[keep]

    @torch.inference_mode()
    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Detections]:
        """Every face of each frame ((B, H, W, 3) or a list of (H, W, 3) uint8 RGB, one size)."""
        arr = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray)
                                   else frames.reshape((-1, *frames.shape[-3:])))  # fmt: skip
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"MTCNN.detect takes RGB frames (B, H, W, 3), got {arr.shape}")
        u8 = torch.from_numpy(arr).to(self.device)
        imgs = u8.permute(0, 3, 1, 2).float()
        integral = F.pad(u8.to(torch.int64).cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0))
        boxes, image = self._proposals(imgs)
        boxes, image = self._refine(integral, boxes, image)
        boxes, marks, image = self._output(integral, boxes, image)
        out = []
        for b in range(len(arr)):
            sel = np.flatnonzero(image == b)
            sel = sel[np.argsort(-boxes[sel, 4], kind="stable")]
            out.append(Detections(boxes[sel, :4].astype(np.float32),
                                  boxes[sel, 4].astype(np.float32),
                                  marks[sel].astype(np.float32)))  # fmt: skip
        return out
