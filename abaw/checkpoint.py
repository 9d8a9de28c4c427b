"""Checkpoints that hold only tensors and plain values, so loading never unpickles code.

A checkpoint is a dict saved with `torch.save`::

    {"format": 1, "track": "eri", "state_dict": {name: tensor},
     "model_spec": {...} | None,   # what the track needs to rebuild the model (plain values)
     "config": {...}, "metrics": {...}}

It loads with `torch.load(weights_only=True)`. `rebuild_model` asks the track
(`Track.build_model(spec)`) for a fresh model and loads the weights, so a
checkpoint is usable without the data set it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abaw.errors import DataError
from abaw.io import atomic_path

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    track: str,
    model_spec: dict | None,
    config: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write `model`'s weights (moved to CPU) and plain metadata atomically."""
    path = Path(path)
    plain = json.loads(
        json.dumps({"spec": model_spec, "config": config or {}, "metrics": metrics or {}})
    )
    ckpt = {
        "format": FORMAT_VERSION,
        "track": track,
        "state_dict": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "model_spec": plain["spec"],
        "config": plain["config"],
        "metrics": plain["metrics"],
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a damaged or foreign file raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise DataError(
            path, "not a readable abaw checkpoint", found=f"{type(e).__name__}: {e}"
        ) from None
    if (
        not isinstance(ckpt, dict)
        or "state_dict" not in ckpt
        or ckpt.get("format") != FORMAT_VERSION
    ):
        raise DataError(
            path, "not an abaw checkpoint", expected=f"format {FORMAT_VERSION} with a state_dict"
        )
    return ckpt


def rebuild_model(ckpt: dict[str, Any] | str | Path) -> nn.Module:
    """A model with the checkpoint's weights, in eval mode on CPU, rebuilt through its track."""
    from abaw.track import get_track

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    spec = ckpt.get("model_spec")
    track = get_track(ckpt["track"])
    if spec is None:
        raise DataError("checkpoint", "no model_spec stored, so the model cannot be rebuilt")
    model = track.build_model(spec)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
