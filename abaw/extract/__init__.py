"""`abaw extract`: the challenge's media -> the feature files the loaders read (docs/extract.md).

The Python API is the CLI's: `extract(track, data, name=..., backbone=..., weights=...)`
(abaw/extract/run.py). Parts, one job per file: `backbones.py` (building models offline and
loading weights), `irv1.py` (InceptionResnetV1), `faces.py` (detection, crop, alignment),
`mtcnn.py` (MTCNN on the published facenet-pytorch weights), `media.py` (frames, streaming
video and audio), `spectrum.py` (DeepSpectrum, fast and reference), `pipeline.py` (worker
processes feeding the device), `manifest.py` (resume, shards, manifest), `testmedia.py`
(media with known answers for tests and benchmarks).
The track-specific parts (which targets exist, the output files) are the tracks'
(`Track.extract_plan`, `Track.write_extracted`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from abaw.extract.run import ExtractResult

__all__ = ["ExtractResult", "extract", "load_backbone"]


def extract(track: str, data: Any, **kwargs: Any) -> ExtractResult:
    """Extract one feature set; see abaw.extract.run.extract for the arguments."""
    from abaw.extract.run import extract as run

    return run(track, data, **kwargs)


def load_backbone(arch: str, weights: Any, **kwargs: Any):
    """Build a backbone offline and load its weights (abaw.extract.backbones.load_backbone)."""
    from abaw.extract.backbones import load_backbone as load

    return load(arch, weights, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ExtractResult":
        from abaw.extract.run import ExtractResult

        return ExtractResult
    raise AttributeError(name)
