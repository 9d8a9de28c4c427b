"""Backbones for `abaw extract`, built by name and loaded from a local file, never downloaded.

`ARCH` forms (docs/extract.md):

- `torchvision:NAME` (`torchvision.models.get_model(NAME, weights=None)`): ImageNet input
  (224 px unless the model fixes another size, mean/std of ImageNet); the feature is the input
  of the last Linear layer (the pooled penultimate output: 512 for resnet18, 1024 for
  densenet121, 768 for vit_b_16's class token);
- `timm:NAME` (`timm.create_model(NAME, pretrained=False, num_classes=0)`): input size and
  mean/std from the model's own pretrained config; the feature is timm's pooled output;
- `inception_resnet_v1`: FaceNet's network in facenet-pytorch's state-dict layout (abaw/extract/irv1.py);
- `file:PATH`: any TorchScript (`torch.jit.save`) or `torch.export` (`torch.export.save`)
  program; its output is taken as the feature (spatial maps are averaged), input 224 px and
  ImageNet mean/std unless `--input-size/--mean/--std` say otherwise.

Weights come from the file the user names: `.safetensors`, or `.pth`/`.pt`/`.bin` read with
`torch.load(weights_only=True)` (a `state_dict`/`model` wrapper and DataParallel's `module.`
prefix are unwrapped). Keys must match the architecture exactly (the classifier's are
ignored); anything else is one ConfigError naming the file, the expected keys and shapes, and
where such weights are published.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from abaw.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "params", "module")
_IRV1_FILES = (
    "facenet-pytorch's published state dicts 20180402-114759-vggface2.pt (VGGFace2) and "
    "20180408-102900-casia-webface.pt (CASIA-WebFace), linked from facenet-pytorch's "
    "models/inception_resnet_v1.py"
)


@contextlib.contextmanager
def offline() -> Iterator[Path]:
    """No hub or cache look-ups while building models: HF offline, TORCH_HOME an empty folder."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME", "HF_HOME")
    old = {k: os.environ.get(k) for k in keys}
    with tempfile.TemporaryDirectory(prefix="abaw-offline-") as empty:
        os.environ.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TORCH_HOME=empty, HF_HOME=empty
        )
        try:
            yield Path(empty)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Backbone:
    """A feature extractor ready for `forward`: (N, 3, S, S) normalised -> (N, width)."""

    arch: str
    module: nn.Module
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature: str  # which layer the features are, in words
    weights: Path | None
    ignored: list[str] = field(default_factory=list)  # file keys not used (the classifier)
    width: int = 0
    sha256: str = ""


_PIN = (
    "pip install torch==2.14.1 torchvision==0.29.1 -e '.[extract]' (docs/extract.md, "
    "Installing; on a GPU machine your CUDA build of torch with its matching torchvision)"
)


def _need(module: str, arch: str) -> ModuleType:
    """Import torchvision or timm, or one ConfigError saying which install fixes it.

    A torchvision built for another torch is installed but fails on import with RuntimeError
    ("operator torchvision::nms does not exist" under torch 2.13.0+cpu, and timm imports
    torchvision) or OSError (a missing shared library); uncaught, that reached the CLI as
    "unexpected RuntimeError ... This is a bug".
    """
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(
            f"--backbone {arch} needs {module}, which is not installed ({e}). Install the "
            f"extraction extra: {_PIN}"
        ) from None
    except (RuntimeError, OSError) as e:
        first = (str(e).splitlines() or [""])[0][:120]
        raise ConfigError(
            f"--backbone {arch}: {module} is installed but fails to import under torch "
            f"{torch.__version__} ({type(e).__name__}: {first}), as a {module} built for another "
            f"torch does. Install the pair extraction is tested with: {_PIN}"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (.safetensors or torch.load(weights_only=True)), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found (give --weights FILE, a local file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a wrong format raises many kinds; the user needs one sentence
        raise ConfigError(
            f"{path}: cannot read the weights file ({type(e).__name__}: {str(e)[:160]}); expected "
            "a .safetensors file or a state dict saved with torch.save (loaded with "
            "weights_only=True: no pickled classes)"
        ) from None
    for _ in range(3):
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, dict) or not sd:
        raise ConfigError(f"{path}: no tensors found (expected a state dict: name -> tensor)")
    sd = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _shape_list(items: list[tuple[str, torch.Size]], n: int = 4) -> str:
    shown = ", ".join(f"{k} {list(s)}" for k, s in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _expected(model: nn.Module) -> dict[str, torch.Size]:
    """The architecture's tensors by name (batch-norm counters aside), as a file must hold them."""
    return {
        k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }


def need_file(path: Path, arch: str, model: nn.Module, published: str) -> None:
    """A missing weights file is the same one sentence as a wrong one: the file, what the
    architecture expects, and where its weights are published (so a user knows what to fetch)."""
    if path.is_file():
        return
    want = _expected(model)
    what = "is a folder, not a weights file" if path.is_dir() else "weights file not found"
    raise ConfigError(
        f"{path}: {what} (--weights names a local file; nothing is "
        f"downloaded). {arch} expects {len(want)} tensors such as "
        f"{_shape_list(list(want.items()), 3)}. Weights for {arch} are published as {published}"
    )


def load_weights(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    path: Path,
    arch: str,
    published: str,
    ignore: tuple[str, ...] = (),
) -> list[str]:
    """Load `sd` into `model` exactly (keys and shapes); returns the ignored keys.

    Keys starting with one of `ignore` (the classifier) are dropped. Anything missing, extra
    or of another shape is one ConfigError naming the file, the architecture's expected
    tensors and where its weights are published.
    """
    ignored = [k for k in sd if ignore and k.startswith(ignore)]
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    want = _expected(model)
    got = {k: v.shape for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = [(k, s) for k, s in want.items() if k not in got]
    extra = [(k, s) for k, s in got.items() if k not in want]
    shapes = [(k, s) for k, s in want.items() if k in got and got[k] != s]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of its {len(want)} tensors missing ({_shape_list(missing)})"
            )
        if shapes:
            bad = ", ".join(f"{k} {list(got[k])} instead of {list(s)}" for k, s in shapes[:3])
            parts.append(f"{len(shapes)} of another shape ({bad})")
        if extra:
            parts.append(
                f"{len(extra)} tensors the architecture does not have ({_shape_list(extra)})"
            )
        raise ConfigError(
            f"{path}: not weights for {arch}: {'; '.join(parts)}. Expected "
            f"{len(want)} tensors such as {_shape_list(list(want.items()), 3)}. Weights for "
            f"{arch} are published as {published}"
        )
    model.load_state_dict(sd, strict=False)
    return ignored


def _last_linear(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = model.get_submodule(dotted.rpartition(".")[0]) if "." in dotted else model
    setattr(parent, dotted.rpartition(".")[2], new)


_DENSENET_OLD = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _torchvision(name: str, arch: str, weights: Path | None) -> Backbone:
    tv = _need("torchvision", arch)
    import torchvision.models  # noqa: F401  (registers the builders)

    try:
        model = tv.models.get_model(name, weights=None)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.models.list_models())[:12])
        raise ConfigError(
            f"--backbone {arch}: torchvision has no model {name!r} (e.g. {known}, ...)"
        ) from None
    head = _last_linear(model)
    if head is None:
        raise ConfigError(f"--backbone {arch}: no Linear classifier to take the features before")
    _replace(model, head, nn.Identity())
    try:
        url = tv.models.get_model_weights(name).DEFAULT.url
        published = f"torchvision's ImageNet weights ({url}; download it once, then --weights)"
    except (ValueError, KeyError, AttributeError):
        published = "torchvision's model zoo (torchvision.models)"
    size = 299 if name.startswith("inception") else 224
    bb = Backbone(
        arch, model, size, IMAGENET_MEAN, IMAGENET_STD, f"input of `{head}` (pooled)", weights
    )
    if weights is not None:
        need_file(weights, arch, model, published)
        sd = read_state_dict(weights)
        if name.startswith("densenet"):
            sd = {(_DENSENET_OLD.sub(r"\1\2", k)): v for k, v in sd.items()}
        bb.ignored = load_weights(model, sd, weights, arch, published, (head + ".",))
    return bb


def _timm(name: str, arch: str, weights: Path | None) -> Backbone:
    timm = _need("timm", arch)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:
        raise ConfigError(f"--backbone {arch}: {e}") from None
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    head = cfg.get("classifier", "head")
    heads = tuple(h + "." for h in ([head] if isinstance(head, str) else head))
    hub = cfg.get("hf_hub_id") or f"timm/{name}"
    published = f"the Hugging Face hub repository {hub} (model.safetensors; download it once)"
    bb = Backbone(arch, model, size, mean, std, "timm's pooled features (num_classes=0)", weights)
    if weights is not None:
        need_file(weights, arch, model, published)
        bb.ignored = load_weights(model, read_state_dict(weights), weights, arch, published, heads)
    return bb


def _irv1(arch: str, weights: Path | None) -> Backbone:
    from abaw.extract import irv1

    model = irv1.InceptionResnetV1()
    bb = Backbone(
        arch, model, irv1.INPUT_SIZE, irv1.MEAN, irv1.STD,
        "512-d embedding (last_bn), L2-normalised", weights,
    )  # fmt: skip
    if weights is not None:
        need_file(weights, arch, model, _IRV1_FILES)
        sd = read_state_dict(weights)
        bb.ignored = load_weights(model, sd, weights, arch, _IRV1_FILES, ("logits.",))
    return bb


_PROGRAM = (
    "a TorchScript or torch.export program taking a batch (N, 3, S, S) of normalised images "
    "(224 px unless --input-size) and returning features (N, D) or maps (N, D, h, w)"
)
_EXPORT = (
    "Export your own model where its code lives, with torch.jit.save(torch.jit.script(model), "
    "PATH) or torch.export.save(torch.export.export(model, (example,), "
    "dynamic_shapes=({0: Dim.AUTO},)), PATH) (docs/extract.md, Your own model)"
)


class _Pooled(nn.Module):
    """Wraps a foreign program: first output, spatial dimensions averaged, flattened."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True) -> _Pooled:
        """An exported program keeps the mode it was exported in (it cannot switch)."""
        self.training = mode
        with contextlib.suppress(NotImplementedError, AttributeError):
            self.inner.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        while isinstance(y, list | tuple):
            y = y[0]
        if isinstance(y, dict):
            y = next(iter(y.values()))
        if y.dim() > 2:
            y = y.flatten(2).mean(-1)
        return y.flatten(1)


def _gist(e: Exception) -> str:
    """The first sentence of a loader's error: torch's go on for lines about corrupt files."""
    return (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0][:100]


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise a logger's level for a block, then restore it.

    torch.export.load logs its whole failed-deserialisation traceback (about 24 lines) as a
    warning before it raises; we turn the failure into one sentence, so the lines are noise.
    """
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(old)


def _program(path: Path, arch: str) -> Backbone:
    if not path.is_file():
        raise ConfigError(
            f"{path}: model file not found (--backbone file:PATH names a local file; nothing is "
            f"downloaded). {arch} expects {_PROGRAM}. Such files are not published. {_EXPORT}"
        )
    errors = []
    module = None
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated but still what teams have
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # not TorchScript: try torch.export
        errors.append(f"TorchScript: {_gist(e)}")
        try:
            with quiet_logger("torch.export"):
                module = torch.export.load(str(path)).module()
        except Exception as e2:
            errors.append(f"torch.export: {_gist(e2)}")
    if module is None:
        raise ConfigError(
            f"{path}: neither a TorchScript nor a torch.export file ({'; '.join(errors)}). "
            f"{arch} expects {_PROGRAM}. {_EXPORT}"
        )
    return Backbone(
        arch, _Pooled(module), 224, IMAGENET_MEAN, IMAGENET_STD,
        "the program's output (spatial maps averaged)", path,
    )  # fmt: skip


def load_backbone(
    arch: str,
    weights: str | Path | None,
    *,
    input_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Backbone:
    """Build `arch` offline, load `weights`, measure the feature width; eval mode, CPU.

    `weights` may be None only for `file:PATH` (the program holds its weights) or for tests of
    the pipeline itself with random weights (`--weights none` is refused by the CLI).
    """
    kind, _, name = arch.partition(":")
    wpath = Path(weights) if weights is not None else None
    with offline():
        if kind == "torchvision" and name:
            bb = _torchvision(name, arch, wpath)
        elif kind == "timm" and name:
            bb = _timm(name, arch, wpath)
        elif arch == "inception_resnet_v1":
            bb = _irv1(arch, wpath)
        elif kind == "file" and name:
            bb = _program(Path(name), arch)
        else:
            raise ConfigError(
                f"--backbone {arch!r}: expected torchvision:NAME, timm:NAME, inception_resnet_v1 "
                "or file:PATH (docs/extract.md)"
            )
    bb.input_size = int(input_size or bb.input_size)
    bb.mean = tuple(mean or bb.mean)  # type: ignore[assignment]
    bb.std = tuple(std or bb.std)  # type: ignore[assignment]
    bb.module.eval()
    bb.sha256 = sha256_file(bb.weights) if bb.weights is not None else ""
    try:
        with torch.inference_mode():
            out = bb.module(torch.zeros(2, 3, bb.input_size, bb.input_size))
            bb.module(torch.zeros(1, 3, bb.input_size, bb.input_size))
    except Exception as e:
        hint = (
            "export it with a dynamic batch dimension (dynamic_shapes=({0: Dim.AUTO},))"
            if "Guard failed" in str(e) and "size()[0]" in str(e)
            else "give the size it was built for with --input-size"
        )
        raise ConfigError(
            f"--backbone {arch}: a batch of {bb.input_size} px inputs fails ({type(e).__name__}: "
            f"{str(e)[:160]}); {hint}"
        ) from None
    if not isinstance(bb.module, _Pooled) and out.dim() != 2:
        bb.module = _Pooled(bb.module)
        out = out.flatten(2).mean(-1) if out.dim() > 2 else out.flatten(1)
    bb.width = int(out.shape[-1])
    return bb
