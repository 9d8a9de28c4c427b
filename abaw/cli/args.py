"""The arguments of every `abaw` command, and the one registry of commands (COMMANDS).

Each command is registered once with its help, an example, a function that adds its
arguments, and the `module:function` that runs it (abaw/cli/commands.py). Nothing here
imports the library beyond the track registry, so `abaw --help` starts fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from abaw.track import track_names

TRACK_CHOICES = track_names()  # the one registry in abaw/track.py


def _track(p: argparse.ArgumentParser, required: bool = True) -> None:
    help = "challenge track" + (
        ""
        if required
        else " (default: the one the study, ensemble, predictions or "
        "submission records; needed only when none does)"
    )
    p.add_argument("--track", choices=TRACK_CHOICES, required=required, help=help)


def _runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="runs", metavar="DIR", help="run directory (default: runs/)")


def _storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage (default: the journal file <runs>/optuna-journal.log; "
        "postgresql://user:pw@host/db to share one study across machines)",
    )


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads per process for torch (default: cores divided among --jobs; "
        "or ABAW_THREADS)",
    )


def _overrides(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _args_synth(p: argparse.ArgumentParser) -> None:
    _track(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the data set into")
    g = p.add_argument_group("size and content")
    g.add_argument(
        "--scale",
        choices=("tiny", "small", "full"),
        default="small",
        help="tiny: seconds (tests); small: a CPU demo; full: the real challenge sizes",
    )
    g.add_argument(
        "--difficulty",
        choices=("normal", "hard"),
        default="normal",
        help="hard: fewer training samples, longer and more variable sequences, weaker "
        "per-step signal, so overfitting shows (e.g. --scale small --difficulty hard)",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="random seed (output is deterministic per seed)"
    )
    g.add_argument(
        "--layout",
        choices=("muse", "abaw5"),
        default="muse",
        help="ERI only: MuSe-2022 (feats/ + labels.csv + partition.csv) or ABAW5 (data_info.csv)",
    )
    g.add_argument(
        "--features",
        metavar="A,B",
        help="comma-separated feature sets / backbones to write "
        "(default: all at tiny/small scale, the paper's at full scale)",
    )
    g.add_argument(
        "--format",
        dest="feature_format",
        choices=("npy", "csv"),
        default="npy",
        help="Expr only: per-frame feature files as .npy (default) or .csv",
    )
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def _args_inspect(p: argparse.ArgumentParser) -> None:
    _track(p)
    p.add_argument("--data", required=True, metavar="DIR", help="data set root folder")
    p.add_argument(
        "--features",
        metavar="A,B",
        help="only these feature sets / backbones; ERI sets of your own with their modality, "
        "as data.features takes them: --features 'DeepSpectrum,MyNet=visual' "
        "(or '{MyNet = \"visual\"}')",
    )
    p.add_argument(
        "--test-frames",
        metavar="FILE",
        help="Expr: the test frame list (default: found by any edition's file name)",
    )
    p.add_argument(
        "--test-videos",
        metavar="FILE",
        help="Expr: the test video list (default: found by any edition's file name)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="parse every file again, ignoring the cache"
    )


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep",
        required=True,
        metavar="FILE",
        help="sweep file (sweeps/*.toml); its [fixed] values are used",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="data set root folder")
    _overrides(p, "override a setting, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    _threads(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _runs(p)
    p.add_argument(
        "--name",
        metavar="NAME",
        help="run folder name under <runs>/train/ (default: sweep name + time)",
    )


def _args_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep", required=True, metavar="FILE", help="sweep file with a [space] to search"
    )
    p.add_argument("--data", required=True, metavar="DIR", help="data set root folder")
    g = p.add_argument_group("budget")
    g.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="finished (complete + pruned) trials the study should hold IN TOTAL, counting "
        "earlier runs and other workers: rerunning the same command after a crash finishes "
        "the job instead of adding N more (default: no limit)",
    )
    g.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    g.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes on this machine, each with cores/N CPU threads "
        "(on one GPU: several small trials at once)",
    )
    _threads(g)
    g = p.add_argument_group("study")
    _storage(g)
    g.add_argument("--study", metavar="NAME", help="study name (default: the sweep's name)")
    _runs(g)
    g.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifact folder for checkpoints and predictions (default: the study's, "
        "else <runs>/artifacts; a shared folder for workers on several machines)",
    )
    g.add_argument(
        "--keep",
        type=int,
        default=10,
        metavar="K",
        help="keep checkpoint + predictions of the top K completed trials (default 10)",
    )
    g.add_argument(
        "--data-moved",
        action="store_true",
        help="resume a study whose data set (same layout, split sizes and labels) now lies at "
        "another path, e.g. moved or mounted elsewhere on another machine",
    )
    g = p.add_argument_group("search")
    g.add_argument(
        "--sampler",
        choices=("tpe", "random", "gp"),
        default="tpe",
        help="tpe (multivariate, seeded; default), random, gp",
    )
    g.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="median (default; never in the first third of the epochs, 3 to 10, nor before 5 "
        "trials finished), hyperband, none",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seeds the sampler and each trial's training"
    )
    g.add_argument(
        "--trial-seeds",
        choices=("fixed", "per-trial"),
        default="fixed",
        help="fixed (default): every trial trains with --seed; per-trial: trial k trains "
        "with seed + k, so the top trials are different initialisations",
    )
    g.add_argument(
        "--no-default-first",
        dest="default_first",
        action="store_false",
        help="a new study's first trial is the sweep's [fixed] configuration, so a few trials "
        "never end below the defaults; this flag lets the sampler choose it",
    )
    g.add_argument(
        "--no-retry-interrupted",
        dest="retry_interrupted",
        action="store_false",
        help="on resume, trials stopped by Ctrl-C run again with the same parameters; this "
        "flag leaves them failed",
    )
    _overrides(p, "pin a setting for every trial (removed from the search space)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def _args_studies(p: argparse.ArgumentParser) -> None:
    _storage(p)
    _runs(p)


def _args_ensemble(p: argparse.ArgumentParser) -> None:
    _track(p, required=False)
    g = p.add_argument_group("members")
    g.add_argument(  # repeatable: a second --studies adds, it does not replace the first
        "--studies",
        action="append",
        metavar="A,B",
        help="comma-separated study names (kept trials); repeatable",
    )
    g.add_argument(
        "--top-k", type=int, default=5, metavar="K", help="best trials taken from each study"
    )
    g.add_argument(  # repeatable: every --predictions adds its paths (one flat list)
        "--predictions",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="members made outside abaw: a folder with predictions-devel.npz and "
        "predictions-test.npz, or a *devel*.npz file whose test file is the same name with "
        "'test'; repeatable",
    )
    p.add_argument(
        "--method",
        choices=("mean", "greedy", "stack"),
        default="greedy",
        help="mean; greedy ensemble selection (Caruana, default); stack (ERI: non-negative "
        "per-emotion weights, used only when it beats greedy in cross-validation)",
    )
    p.add_argument(
        "--no-postprocess",
        action="store_true",
        help="Expr: no smoothing or class offsets (default: both chosen on devel)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the devel halves and CV folds")
    g = p.add_argument_group("where")
    g.add_argument(
        "--storage",
        action="append",
        metavar="URL",
        help="Optuna storage URL, repeatable (default: the journal file <runs>/optuna-journal.log)",
    )
    _runs(g)
    g.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifact store folder (default: the one each study records)",
    )
    p.add_argument(
        "--name", required=True, help="name of the ensemble (folder under <runs>/ensembles/)"
    )
    p.add_argument("--force", action="store_true", help="replace an ensemble of the same name")
    p.add_argument(
        "--keep-ensemble",
        action="store_true",
        help="write the ensemble even when its honest gain over the best single member is "
        "not positive (default: then the best single member is written and submitted)",
    )


def _args_submit(p: argparse.ArgumentParser) -> None:
    _track(p, required=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ensemble", metavar="NAME", help="an ensemble made by `abaw ensemble`")
    src.add_argument("--predictions", metavar="FILE", help="a test-split predictions .npz")
    p.add_argument(
        "--data", required=True, metavar="DIR", help="data set root (for the test IDs / frame list)"
    )
    _runs(p)
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("single", "per-video"),
        help="Expr: one file in frame-list order (ABAW5/6; the default) or one <video>.txt per "
        "video (ABAW3/4)",
    )
    p.add_argument(
        "--id-style",
        choices=("as-data", "bracketed", "bare"),
        help="ERI: File_IDs as spelled in the data (default), or forced to [00000] / 00000",
    )
    p.add_argument(
        "--frames",
        metavar="FILE",
        help="Expr: the organisers' test frame list (default: found in --data)",
    )
    p.add_argument(
        "--out", default="submissions", metavar="DIR", help="output folder (default: submissions/)"
    )
    p.add_argument("--name", metavar="NAME", help="submission name (default: ensemble / file name)")
    p.add_argument("--force", action="store_true", help="replace a submission of the same name")


def _args_validate(p: argparse.ArgumentParser) -> None:
    _track(p, required=False)
    p.add_argument("path", metavar="PATH", help="submission file, folder of <video>.txt, or zip")
    p.add_argument(
        "--data", required=True, metavar="DIR", help="data set root (for the expected IDs / frames)"
    )
    p.add_argument(
        "--frames",
        metavar="FILE",
        help="Expr: the organisers' test frame list (default: found in --data)",
    )


def _args_report(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", metavar="NAME", help="an Optuna study made by `abaw tune`")
    src.add_argument("--ensemble", metavar="NAME", help="an ensemble made by `abaw ensemble`")
    _storage(p)
    _runs(p)
    p.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifact store folder (default: the one the study records)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder for report.html and the PNG figures (default: <runs>/reports/NAME/)",
    )


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo", metavar="DIR", help="working folder (default: demo/)")
    p.add_argument(
        "--track",
        choices=("both", *TRACK_CHOICES),
        default="both",
        help="which tracks (default: both)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        metavar="M",
        help="wall-clock budget for all tuning (default 8: the whole demo in about 10 min "
        "on a 2-core CPU); more minutes = more trials, up to 12 per variant",
    )
    p.add_argument(
        "--jobs", type=int, help="trials in parallel (default: 2 on 2+ cores; 1 with --scale tiny)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the search")
    p.add_argument(
        "--scale",
        choices=("small", "tiny"),
        default="small",
        help="small: the demo; tiny: a smoke test in well under a minute",
    )


def _args_extract(p: argparse.ArgumentParser) -> None:
    _track(p)
    p.add_argument("--data", required=True, metavar="DIR", help="data set root folder")
    p.add_argument("--name", required=True, metavar="FEATURE", help="feature set (folder) to write")
    g = p.add_argument_group("media")
    g.add_argument(
        "--images",
        metavar="DIR",
        help="Expr: the cropped-aligned frames, <DIR>/<video>/00001.jpg "
        "(default: <data>/cropped_aligned)",
    )
    g.add_argument("--videos", metavar="DIR", help="ERI: the folder of <id>.mp4 files")
    g.add_argument(
        "--audio",
        choices=("deepspectrum",),
        help="ERI: audio features instead of faces (DeepSpectrum: mel spectrogram images "
        "through an ImageNet CNN)",
    )
    g.add_argument(
        "--fps", type=float, metavar="F", help="ERI faces: frames per second sampled (default 4)"
    )
    g.add_argument(
        "--window", type=float, metavar="S", help="ERI audio: window in seconds (default 1)"
    )
    g.add_argument("--hop", type=float, metavar="S", help="ERI audio: hop in seconds (default 0.5)")
    g.add_argument(
        "--sample-rate", type=int, metavar="HZ", help="ERI audio: resample to HZ (default: as is)"
    )
    g.add_argument(
        "--reference",
        action="store_true",
        help="ERI audio: draw each spectrogram with matplotlib as the original DeepSpectrum "
        "does (slow; the default torch path matches it, correlation >= 0.99)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone",
        metavar="ARCH",
        help="torchvision:NAME, timm:NAME, inception_resnet_v1 or file:PATH (TorchScript / "
        "torch.export); default for --audio: torchvision:densenet121",
    )
    g.add_argument(
        "--weights", metavar="FILE", help="local weights file (.pth/.pt or .safetensors)"
    )
    g.add_argument("--input-size", type=int, metavar="N", help="input side in pixels")
    g.add_argument("--mean", type=float, nargs=3, metavar="M", help="input mean per channel")
    g.add_argument("--std", type=float, nargs=3, metavar="S", help="input std per channel")
    g = p.add_argument_group("faces (ERI videos)")
    g.add_argument(
        "--detector",
        choices=("haar", "yunet", "mtcnn"),
        default="haar",
        help="haar (default: ships in the OpenCV wheel), yunet (your ONNX file) or mtcnn "
        "(facenet-pytorch's published weights: their folder)",
    )
    g.add_argument(
        "--detector-weights",
        metavar="PATH",
        help="cascade XML, YuNet ONNX file, or the folder of MTCNN's pnet.pt, rnet.pt, onet.pt",
    )
    g.add_argument(
        "--face-margin", type=float, metavar="X", help="crop side / detected side (haar: 1.1)"
    )
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    g.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto: bf16 autocast on CUDA, float32 on CPU",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="decoding processes (default: cores - 1, at most 8; 0 = in this process)",
    )
    g.add_argument(
        "--shard",
        metavar="I/N",
        help="take every N-th target from the I-th: N processes or machines cover the set",
    )
    g.add_argument(
        "--force", action="store_true", help="extract the whole set again (not with --shard)"
    )


@dataclass(frozen=True)
class Command:
    """One sub-command: its help, example, arguments and implementation."""

    name: str
    help: str
    example: str
    add_args: Callable[[argparse.ArgumentParser], None]
    target: str  # "module:function", function(args) -> int


COMMANDS: tuple[Command, ...] = (
    Command(
        "synth",
        "write a synthetic data set in the real challenge layout",
        "abaw synth --track eri --out data/eri-small --scale small --seed 0",
        _args_synth,
        "abaw.cli.commands:synth",
    ),
    Command(
        "extract",
        "turn the challenge's media into feature files (faces, backbones, DeepSpectrum audio)",
        "abaw extract --track expr --data data/expr --backbone inception_resnet_v1 "
        "--weights 20180402-114759-vggface2.pt --name IRv1-VGGFace2\n"
        "  abaw extract --track eri --data data/eri --videos data/eri-videos "
        "--audio deepspectrum --weights densenet121-a639ec97.pth --name DeepSpectrum",
        _args_extract,
        "abaw.cli.commands:extract",
    ),
    Command(
        "inspect",
        "show what the loaders find in a data folder, and every problem",
        "abaw inspect --track eri --data data/eri-small",
        _args_inspect,
        "abaw.cli.commands:inspect",
    ),
    Command(
        "train",
        "train one configuration of a sweep file (no search)",
        "abaw train --sweep sweeps/eri-fusion.toml --data data/eri-small --set train.epochs=20",
        _args_train,
        "abaw.cli.commands:train",
    ),
    Command(
        "tune",
        "search hyperparameters with Optuna (many workers may share one study)",
        "abaw tune --sweep sweeps/eri-lstm.toml --data data/eri-small --trials 20 --jobs 2",
        _args_tune,
        "abaw.cli.commands:tune",
    ),
    Command(
        "studies",
        "list studies with best values and trial counts",
        "abaw studies --runs runs  (or --storage postgresql://user:pw@host/abaw)",
        _args_studies,
        "abaw.cli.commands:studies",
    ),
    Command(
        "ensemble",
        "combine the best trials of one or more studies (and prediction files), with an honest gain",
        "abaw ensemble --studies eri-fusion-mean,eri-pooled --top-k 5 --method greedy --name final",
        _args_ensemble,
        "abaw.cli.commands:ensemble",
    ),
    Command(
        "submit",
        "write a validated challenge submission from an ensemble or predictions",
        "abaw submit --ensemble final --data data/eri-small",
        _args_submit,
        "abaw.cli.commands:submit",
    ),
    Command(
        "validate",
        "check a submission file as the challenge server would (exit 0 = accepted)",
        "abaw validate submissions/final/predictions.csv --data data/eri-small",
        _args_validate,
        "abaw.cli.commands:validate",
    ),
    Command(
        "report",
        "tables and plots of a study or an ensemble",
        "abaw report --study eri-fusion --out reports/eri-fusion",
        _args_report,
        "abaw.cli.commands:report",
    ),
    Command(
        "demo",
        "synth -> tune -> ensemble -> submit -> validate -> report on built-in demo data (~10 min on a CPU)",
        "abaw demo --out demo/ --minutes 8",
        _args_demo,
        "abaw.cli.commands:demo",
    ),
)
