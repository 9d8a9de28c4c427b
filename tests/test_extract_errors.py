"""`abaw extract` on bad input: one sentence naming the file, exit 1, nothing half-written.

A corrupt or truncated JPG, an unreadable or truncated video, a video without an audio
stream, weights for another architecture, an image folder missing for an annotated video, a
torchvision or timm that cannot be imported, a `file:` that is no program.
"""

from __future__ import annotations

import builtins
import logging
import shutil

import pytest
from conftest import require

require("torchvision")
require("av")
require("cv2")
require("skimage")

from abaw.cli import main  # noqa: E402
from abaw.extract import testmedia as tm  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    tm.expr_data(root / "expr", train={"a": 6, "b": 6}, devel={"c": 5}, test={"d": 4})
    tm.eri_data(root / "eri", root / "videos", splits={"train": 2, "devel": 1}, seconds=1.5)
    tm.random_weights("torchvision:resnet18", root / "r18.pth")
    tm.random_weights("torchvision:resnet34", root / "r34.pth")
    return root


def _run(capsys, *args) -> tuple[int, str]:
    code = main(["extract", *args, "--input-size", "64", "--workers", "1"])
    return code, capsys.readouterr().err


def _expr(base, data, name="R", weights="r18.pth"):
    return ["--track", "expr", "--data", str(data), "--name", name,
            "--backbone", "torchvision:resnet18", "--weights", str(base / weights)]  # fmt: skip


def _leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")] if folder.exists() else []


def _one_line(err: str, *needles: str) -> None:
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpg(base, tmp_path, capsys, damage):
    data = shutil.copytree(base / "expr", tmp_path / "expr")
    jpg = data / "cropped_aligned" / "c" / "00003.jpg"
    raw = jpg.read_bytes()
    jpg.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not an image")
    code, err = _run(capsys, *_expr(base, data))
    assert code == 1
    _one_line(err, str(jpg), "unreadable frame image", "delete it")
    folder = data / "features" / "R"
    assert not (folder / "c.npy").exists() and not _leftovers(folder)
    assert not (folder / "extract.json").exists()


def test_missing_image_folder(base, tmp_path, capsys):
    data = shutil.copytree(base / "expr", tmp_path / "expr")
    shutil.rmtree(data / "cropped_aligned" / "b")
    code, err = _run(capsys, *_expr(base, data))
    assert code == 1
    _one_line(err, "cropped_aligned/b", "image folder missing", "1 video(s) without one: b")
    assert not (data / "features" / "R").exists()


def test_weights_of_another_architecture(base, capsys):
    code, err = _run(capsys, *_expr(base, base / "expr", weights="r34.pth"))
    assert code == 1
    _one_line(err, "r34.pth: not weights for torchvision:resnet18", "tensors the architecture "
              "does not have (layer1.2.conv1.weight", "Expected 100 tensors such as conv1.weight "
              "[64, 3, 7, 7]", "resnet18-f37072fd.pth")  # fmt: skip
    code, err = _run(capsys, *_expr(base, base / "expr", weights="nothing.pth"))
    assert code == 1  # a missing file says as much as a wrong one: what to fetch, from where
    _one_line(err, "nothing.pth: weights file not found", "torchvision:resnet18 expects 100 "
              "tensors such as conv1.weight [64, 3, 7, 7]", "published as torchvision's "
              "ImageNet weights (https://download.pytorch.org/models/resnet18-f37072fd.pth")  # fmt: skip


@pytest.mark.parametrize(
    "arch, needles",
    [("timm:test_vit", ("timm:test_vit expects 78 tensors such as cls_token [1, 1, 64]",
                        "the Hugging Face hub repository timm/test_vit")),
     ("inception_resnet_v1", ("inception_resnet_v1 expects 602 tensors such as "
                              "conv2d_1a.conv.weight [32, 3, 3, 3]",
                              "20180402-114759-vggface2.pt (VGGFace2)")),
     ("file:PROGRAM", ("model file not found", "expects a TorchScript or torch.export program "
                       "taking a batch (N, 3, S, S)", "Such files are not published",
                       "torch.export.save("))],
)  # fmt: skip
def test_missing_weights_file_says_what_to_fetch(base, tmp_path, capsys, arch, needles):
    if arch.startswith("timm:"):
        require("timm")
    missing = tmp_path / "nothing.pt"
    arch = arch.replace("PROGRAM", str(missing))
    code, err = main(["extract", "--track", "expr", "--data", str(base / "expr"), "--name", "W",
                      "--backbone", arch, "--weights", str(missing)]), capsys.readouterr().err  # fmt: skip
    assert code == 1
    _one_line(err, f"{missing}: ", *needles)


@pytest.mark.parametrize(
    "arch, error",
    [("torchvision:resnet18", RuntimeError("operator torchvision::nms does not exist")),
     ("timm:resnet18", OSError("libtorchvision.so: undefined symbol"))],
)  # fmt: skip
def test_torchvision_or_timm_that_fails_to_import(base, capsys, monkeypatch, arch, error):
    """A torchvision built for another torch (torch 2.13.0+cpu here) raises on import."""
    real = builtins.__import__

    def broken(name, *args, **kwargs):
        if name.partition(".")[0] in ("torchvision", "timm"):
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    args = ["--track", "expr", "--data", str(base / "expr"), "--name", "T",
            "--backbone", arch, "--weights", str(base / "r18.pth")]  # fmt: skip
    code, err = _run(capsys, *args)
    assert code == 1 and "This is a bug" not in err
    module = arch.partition(":")[0]
    _one_line(err, f"--backbone {arch}: {module} is installed but fails to import",
              f"({type(error).__name__}: {error})", "pip install torch==2.14.1 "
              "torchvision==0.29.1 -e '.[extract]'", "docs/extract.md")  # fmt: skip
    assert not (base / "expr" / "features" / "T").exists()


def test_a_file_that_is_no_program_is_one_line(base, tmp_path, capfd):
    """torch.export.load logs a 24-line traceback before it raises; the user sees one line."""
    junk = tmp_path / "poster.pt2"
    junk.write_bytes(b"not a program")
    level = logging.getLogger("torch.export").level
    code = main(["extract", "--track", "expr", "--data", str(base / "expr"), "--name", "P",
                 "--backbone", f"file:{junk}"])  # fmt: skip
    assert code == 1
    _one_line(capfd.readouterr().err, f"{junk}: neither a TorchScript nor a torch.export file",
              "(TorchScript: PytorchStreamReader failed", "Export your own model")  # fmt: skip
    assert logging.getLogger("torch.export").level == level  # restored after the load


def _eri(base, videos, name="V", *more):
    return ["--track", "eri", "--data", str(base / "eri"), "--videos", str(videos),
            "--name", name, "--backbone", "torchvision:resnet18",
            "--weights", str(base / "r18.pth"), *more]  # fmt: skip


@pytest.mark.parametrize("damage", ["garbage", "cut", "truncated"])
def test_unreadable_or_truncated_video(base, tmp_path, capsys, damage):
    videos = shutil.copytree(base / "videos", tmp_path / "videos")
    bad = videos / "00001.mp4"
    if damage == "truncated":  # the index first (a web video): it opens, then stops short
        tm.face_video(bad, seconds=3.0, faststart=True)
    raw = bad.read_bytes()
    bad.write_bytes(
        {"garbage": b"\0" * 4096, "cut": raw[:2000], "truncated": raw[: len(raw) // 2]}[damage]
    )
    code, err = _run(capsys, *_eri(base, videos))
    assert code == 1
    want = "truncated or corrupt video" if damage == "truncated" else "unreadable media file"
    _one_line(err, str(bad), want)
    out = base / "eri" / "feats" / "V"
    assert not (out / "00001.csv").exists() and not _leftovers(out)


def test_video_without_audio(base, tmp_path, capsys):
    videos = shutil.copytree(base / "videos", tmp_path / "videos")
    tm.face_video(videos / "00002.mp4", seconds=1.5, audio=False)
    code, err = _run(capsys, *_eri(base, videos, "A", "--audio", "deepspectrum"))
    assert code == 1
    _one_line(err, "00002.mp4: no audio stream", "expected a video with an audio track")
    assert not (base / "eri" / "feats" / "A" / "00002.csv").exists()


def test_media_missing_for_a_sample(base, tmp_path, capsys):
    videos = shutil.copytree(base / "videos", tmp_path / "videos")
    (videos / "00000.mp4").unlink()
    code, err = _run(capsys, *_eri(base, videos, "M"))
    assert code == 1
    _one_line(err, "media missing for samples of the tables", "1 sample(s) without one: 00000")


def test_folders_and_files_where_the_other_is_expected(base, tmp_path, capsys):
    """--weights given a folder, --videos given a file: the message says which it is."""
    code, err = _run(capsys, *_expr(base, base / "expr", weights="."))
    assert code == 1
    _one_line(err, "is a folder, not a weights file", "torchvision:resnet18 expects 100 tensors")
    a_file = base / "r18.pth"
    code, err = _run(capsys, "--track", "eri", "--data", str(base / "eri"), "--videos",
                     str(a_file), "--name", "V", "--backbone", "torchvision:resnet18",
                     "--weights", str(a_file))  # fmt: skip
    assert code == 1
    _one_line(err, str(a_file), "video folder not found", "found a file")


def test_face_options_on_a_run_without_faces_are_refused(base, capsys):
    """Expr frames are already cropped: a --detector option there would be silently ignored."""
    code, err = _run(capsys, *_expr(base, base / "expr"), "--detector-weights", "x.onnx")
    assert code == 1
    _one_line(err, "--detector, --detector-weights and --face-margin apply to ERI videos")
    code, err = _run(capsys, *_expr(base, base / "expr"), "--face-margin", "1.3")
    assert code == 1 and "apply to ERI videos" in err
    assert not (base / "expr" / "features" / "R").exists()
