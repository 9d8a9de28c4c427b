"""InceptionResnetV1 (Szegedy et al. 2017, as trained by FaceNet): the paper's Expr backbone.

Our own implementation of the published architecture, with the module names of the state dicts
that facenet-pytorch publishes (VGGFace2: `20180402-114759-vggface2.pt`, CASIA-WebFace:
`20180408-102900-casia-webface.pt`), so those files load as they are. Input 160 x 160 RGB
scaled as `(x * 255 - 127.5) / 128`; the feature is the 512-d embedding (`last_bn`),
L2-normalised as FaceNet uses it. The classifier (`logits.*`) in the published files is not
part of the feature extractor and is ignored.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INPUT_SIZE = 160
MEAN = (0.5, 0.5, 0.5)
STD = (128 / 255, 128 / 255, 128 / 255)
WIDTH = 512


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, TensorFlow's) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """A scaled residual Inception block: branches -> concat -> 1x1 conv -> x + scale * out."""

    def __init__(self, scale: float, relu: bool) -> None:
        super().__init__()
        self.scale = scale
        if relu:
            self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([b(x) for b in self._branches()], 1)
        out = self.conv2d(out) * self.scale + x
        return self.relu(out) if hasattr(self, "relu") else out

    def _branches(self) -> list[nn.Module]:
        return [getattr(self, f"branch{i}") for i in range(3) if hasattr(self, f"branch{i}")]


class Block35(_Residual):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale, True)
        self.branch0 = BasicConv2d(256, 32, 1, 1)
        self.branch1 = _seq(BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, 1))
        self.branch2 = _seq(
            BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, 1), BasicConv2d(32, 32, 3, 1, 1)
        )
        self.conv2d = nn.Conv2d(96, 256, 1, 1)


class Block17(_Residual):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale, True)
        self.branch0 = BasicConv2d(896, 128, 1, 1)
        self.branch1 = _seq(
            BasicConv2d(896, 128, 1, 1),
            BasicConv2d(128, 128, (1, 7), 1, (0, 3)),
            BasicConv2d(128, 128, (7, 1), 1, (3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1, 1)


class Block8(_Residual):
    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__(scale, relu)
        self.branch0 = BasicConv2d(1792, 192, 1, 1)
        self.branch1 = _seq(
            BasicConv2d(1792, 192, 1, 1),
            BasicConv2d(192, 192, (1, 3), 1, (0, 1)),
            BasicConv2d(192, 192, (3, 1), 1, (1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1, 1)


class _Mixed(nn.Module):
    """A reduction block: its branches side by side, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n)], 1)


class Mixed6a(_Mixed):
    n = 3

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = _seq(
            BasicConv2d(256, 192, 1, 1), BasicConv2d(192, 192, 3, 1, 1), BasicConv2d(192, 256, 3, 2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)


class Mixed7a(_Mixed):
    n = 4

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _seq(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = _seq(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 2))
        self.branch2 = _seq(
            BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 1, 1), BasicConv2d(256, 256, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)


class InceptionResnetV1(nn.Module):
    """The FaceNet embedding network: (N, 3, 160, 160) -> (N, 512) unit vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = _seq(*[Block35(0.17) for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = _seq(*[Block17(0.10) for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = _seq(*[Block8(0.20) for _ in range(5)])
        self.block8 = Block8(relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in (
            "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
            "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8",
        ):  # fmt: skip
            x = getattr(self, name)(x)
        x = self.avgpool_1a(x).flatten(1)
        x = self.last_bn(self.last_linear(x))
        return F.normalize(x.float(), p=2, dim=1)
