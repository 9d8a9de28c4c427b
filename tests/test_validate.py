"""`abaw validate`: broken submissions are rejected with the right row, valid ones accepted.

The data sets are the smallest the checks need (ERI tables; Expr test frame and video lists),
written by hand so each expected row is known.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from abaw.cli import main as cli
from abaw.submit import KEPT, Problem, total, validate

ROOT = Path(__file__).resolve().parents[1]
EMO = "Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise"
ERI_HEAD = "File_ID," + EMO
CLS = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
EXPR_HEAD = "image_location," + CLS
TEST_IDS = ["[00007]", "[00008]", "[00009]"]
VIDEOS = {"vidA": 4, "vidB_left": 3}


@pytest.fixture(scope="module")
def eri_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("eri")
    rows = [ERI_HEAD]
    part = ["Id,Partition"]
    for i in range(10):
        s = "train" if i < 4 else "devel" if i < 7 else "test"
        vals = ",".join(["1.0"] + ["0.5"] * 6) if s != "test" else ",,,,,,"
        rows.append(f"[{i:05d}],{vals}")
        part.append(f"[{i:05d}],{s}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    (d / "partition.csv").write_text("\n".join(part) + "\n")
    return d


@pytest.fixture(scope="module")
def expr_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("expr")
    lines = [EXPR_HEAD] + [f"{v}/{f:05d}.jpg," for v, n in VIDEOS.items() for f in range(1, n + 1)]
    (d / "CVPR_5th_ABAW_EXPR_test_set_sample.txt").write_text("\n".join(lines) + "\n")
    (d / "Expression_Classification_Challenge_test_set_release.txt").write_text(
        "\n".join(VIDEOS) + "\n"
    )
    return d


def eri_rows(ids=TEST_IDS, value="0.25") -> list[str]:
    return [f"{i}," + ",".join([value] * 7) for i in ids]


def eri_text(rows=None, head=ERI_HEAD) -> str:
    return "\n".join([head, *(eri_rows() if rows is None else rows)]) + "\n"


def expr_locs() -> list[str]:
    return [f"{v}/{f:05d}.jpg" for v, n in VIDEOS.items() for f in range(1, n + 1)]


def expr_text(rows=None, head=EXPR_HEAD) -> str:
    body = [f"{loc},{i % 8}" for i, loc in enumerate(expr_locs())] if rows is None else rows
    return "\n".join([head, *body]) + "\n"


def put(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


def zipped(tmp_path: Path, entries: dict[str, str], name="sub.zip") -> Path:
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as z:
        for n, c in entries.items():
            if n.endswith("/"):
                z.writestr(zipfile.ZipInfo(n), "")
            else:
                z.writestr(n, c)
    return p


def one(problems: list[Problem], needle: str) -> Problem:
    hits = [p for p in problems if needle in p.message]
    assert hits, f"no problem mentions {needle!r}: {[str(p) for p in problems]}"
    return hits[0]


# ------------------------------------------------------------------ valid files


def test_valid_eri_hand_written_and_variants(eri_data, tmp_path):
    assert validate("eri", put(tmp_path, "a.csv", eri_text()), eri_data) == []
    # any row order, bare IDs used consistently, no final newline: all accepted
    rows = eri_rows(["00009", "00007", "00008"], "1")
    assert validate("eri", put(tmp_path, "b.csv", eri_text(rows).rstrip("\n")), eri_data) == []
    z = zipped(tmp_path, {"predictions.csv": eri_text()})
    assert validate("eri", z, eri_data) == []


def test_valid_expr_single_hand_written(expr_data, tmp_path):
    assert validate("expr", put(tmp_path, "p.txt", expr_text()), expr_data) == []
    assert validate("expr", put(tmp_path, "q.txt", expr_text().rstrip("\n")), expr_data) == []
    assert validate("expr", zipped(tmp_path, {"predictions.txt": expr_text()}), expr_data) == []


def test_valid_expr_per_video_hand_written(expr_data, tmp_path):
    folder = tmp_path / "pv"
    folder.mkdir()
    for v, n in VIDEOS.items():
        (folder / f"{v}.txt").write_text(CLS + "\n" + "\n".join(["4"] * n) + "\n")
    assert validate("expr", folder, expr_data) == []
    entries = {f"{v}.txt": CLS + "\n" + "0\n" * n for v, n in VIDEOS.items()}
    assert validate("expr", zipped(tmp_path, entries), expr_data) == []


# ------------------------------------------------------------------ broken ERI

ERI_CASES = [
    ("wrong header", lambda: eri_text(head=ERI_HEAD.replace("Fear", "fear")), "wrong header", 1),
    ("missing header", lambda: "\n".join(eri_rows()) + "\n", "missing header", 1),
    (
        "columns out of order",
        lambda: eri_text(head=ERI_HEAD.replace("Anxiety,Disgust", "Disgust,Anxiety")),
        "out of order",
        1,
    ),
    ("missing row", lambda: eri_text(eri_rows(TEST_IDS[:2])), "missing (first: [00009]", None),
    ("extra row", lambda: eri_text(eri_rows([*TEST_IDS, "[00004]"])), "not a test ID", 5),
    (
        "duplicated row",
        lambda: eri_text(eri_rows([*TEST_IDS, "[00008]"])),
        "again (first on row 3)",
        5,
    ),
    ("NaN", lambda: eri_text([*eri_rows()[:2], eri_rows(["[00009]"], "nan")[0]]), "NaN", 4),
    ("inf", lambda: eri_text([eri_rows(["[00007]"], "inf")[0], *eri_rows()[1:]]), "infinite", 2),
    (
        "above 1",
        lambda: eri_text([*eri_rows()[:2], eri_rows(["[00009]"], "1.5")[0]]),
        "outside [0, 1]",
        4,
    ),
    (
        "below 0",
        lambda: eri_text([eri_rows(["[00007]"], "-0.1")[0], *eri_rows()[1:]]),
        "outside [0, 1]",
        2,
    ),
    (
        "not a number",
        lambda: eri_text([eri_rows(["[00007]"], "high")[0], *eri_rows()[1:]]),
        "not a number",
        2,
    ),
    (
        "empty value",
        lambda: eri_text([eri_rows(["[00007]"], "")[0], *eri_rows()[1:]]),
        "not a number",
        2,
    ),
    (
        "too few fields",
        lambda: eri_text([*eri_rows()[:2], "[00009],0.1,0.2"]),
        "expected 8 fields",
        4,
    ),
    ("Windows line ends", lambda: eri_text().replace("\n", "\r\n"), "dos2unix", 1),
    ("UTF-8 BOM", lambda: "\ufeff" + eri_text(), "byte-order mark", 1),
    ("trailing blank lines", lambda: eri_text() + "\n\n", "blank line(s) at the end", 5),
    (
        "index column",
        lambda: eri_text([f"{k},{r}" for k, r in enumerate(eri_rows())], head="," + ERI_HEAD),
        "index column",
        1,
    ),
    (
        "ID with a path separator",
        lambda: eri_text([*eri_rows(), eri_rows(["../00009"])[0]]),
        "path separator",
        5,
    ),
    (
        "IDs spelled two ways",
        lambda: eri_text(eri_rows(["[00007]", "00008", "[00009]"])),
        "spelled two ways",
        None,
    ),
    ("empty file", lambda: "", "empty file", None),
    ("two columns only", lambda: "File_ID,Adoration\n[00007],0.5\n", "expected 8 fields", 2),
    ("only a header", lambda: ERI_HEAD + "\n", "no data rows", None),
    ("blank row inside", lambda: eri_text([eri_rows()[0], "", *eri_rows()[1:]]), "empty row", 3),
]


@pytest.mark.parametrize("case,make,needle,row", ERI_CASES, ids=[c[0] for c in ERI_CASES])
def test_broken_eri(eri_data, tmp_path, case, make, needle, row):
    problems = validate("eri", put(tmp_path, "s.csv", make()), eri_data)
    assert problems
    assert one(problems, needle).row == row


def test_eri_not_utf8(eri_data, tmp_path):
    raw = eri_text().encode().replace(b"[00008]", b"[0000\xe9]")
    problems = validate("eri", put(tmp_path, "s.csv", raw), eri_data)
    assert one(problems, "not UTF-8").row == 3


def test_eri_zip_wrong_names_and_nested(eri_data, tmp_path):
    p = validate("eri", zipped(tmp_path, {"predictions.xlsx": eri_text()}, "a.zip"), eri_data)
    one(p, "not CSV")
    p = validate(
        "eri", zipped(tmp_path, {"sub/": "", "sub/predictions.csv": eri_text()}, "b.zip"), eri_data
    )
    one(p, "top level")
    p = validate(
        "eri", zipped(tmp_path, {"a.csv": eri_text(), "b.csv": eri_text()}, "c.zip"), eri_data
    )
    one(p, "exactly one CSV")


# ------------------------------------------------------------------ broken Expr, single file


def rows_with(i: int, label: str) -> list[str]:
    rows = [f"{loc},1" for loc in expr_locs()]
    rows[i] = f"{expr_locs()[i]},{label}"
    return rows


EXPR_CASES = [
    ("wrong header", lambda: expr_text(head="image,Neutral"), "wrong header", 1),
    (
        "missing header",
        lambda: "\n".join(f"{x},0" for x in expr_locs()) + "\n",
        "missing header",
        1,
    ),
    (
        "class columns out of order",
        lambda: expr_text(head=EXPR_HEAD.replace("Anger,Disgust", "Disgust,Anger")),
        "out of order",
        1,
    ),
    (
        "missing row",
        lambda: expr_text([f"{x},0" for x in expr_locs()[:-1]]),
        "missing (first: vidB_left/00003.jpg",
        None,
    ),
    (
        "extra row",
        lambda: expr_text([*(f"{x},0" for x in expr_locs()), "vidA/00009.jpg,0"]),
        "extra row",
        9,
    ),
    (
        "duplicated row",
        lambda: expr_text([*(f"{x},0" for x in expr_locs()), "vidA/00002.jpg,0"]),
        "again (first on row 3)",
        9,
    ),
    (
        "wrong row order",
        lambda: expr_text([f"{x},0" for x in [expr_locs()[1], expr_locs()[0], *expr_locs()[2:]]]),
        "out of order",
        3,
    ),
    ("label -1", lambda: expr_text(rows_with(2, "-1")), "not an integer 0..7", 4),
    ("label 8", lambda: expr_text(rows_with(0, "8")), "'8' is not an integer", 2),
    ("label 2.5", lambda: expr_text(rows_with(6, "2.5")), "'2.5' is not an integer", 8),
    ("Windows line ends", lambda: expr_text().replace("\n", "\r\n"), "Windows line ends", 1),
    ("UTF-8 BOM", lambda: "\ufeff" + expr_text(), "byte-order mark", 1),
    ("trailing blank lines", lambda: expr_text() + "\n", "blank line(s) at the end", 9),
    (
        "index column",
        lambda: expr_text([f"{k},{x},0" for k, x in enumerate(expr_locs())], head="," + EXPR_HEAD),
        "index column",
        1,
    ),
    (
        "location with a path separator",
        lambda: expr_text([*rows_with(0, "1")[:-1], "x/vidB_left/00003.jpg,1"]),
        "one '/'",
        8,
    ),
    (
        "three fields",
        lambda: expr_text([*rows_with(0, "1")[:-1], "vidB_left/00003.jpg,1,0"]),
        "expected 2 fields",
        8,
    ),
    ("empty file", lambda: "", "empty file", None),
]


@pytest.mark.parametrize("case,make,needle,row", EXPR_CASES, ids=[c[0] for c in EXPR_CASES])
def test_broken_expr_single(expr_data, tmp_path, case, make, needle, row):
    problems = validate("expr", put(tmp_path, "s.txt", make()), expr_data)
    assert problems
    assert one(problems, needle).row == row


def test_expr_zip_wrong_names_and_nested(expr_data, tmp_path):
    one(validate("expr", zipped(tmp_path, {"preds.xlsx": expr_text()}, "a.zip"), expr_data), ".txt")
    nested = {"out/": "", **{f"out/{v}.txt": CLS + "\n" + "0\n" * n for v, n in VIDEOS.items()}}
    p = validate("expr", zipped(tmp_path, nested, "b.zip"), expr_data)
    one(p, "top level")
    wrong = {"vidA.txt": CLS + "\n" + "0\n" * 4, "video_b.txt": CLS + "\n0\n"}
    one(validate("expr", zipped(tmp_path, wrong, "c.zip"), expr_data), "wrong file name")


# ------------------------------------------------------------------ broken Expr, per video


@pytest.fixture
def per_video(tmp_path) -> Path:
    folder = tmp_path / "pv"
    folder.mkdir()
    for v, n in VIDEOS.items():
        (folder / f"{v}.txt").write_text(CLS + "\n" + "\n".join(["1"] * n) + "\n")
    return folder


def test_per_video_missing_file(expr_data, per_video):
    (per_video / "vidA.txt").unlink()
    one(validate("expr", per_video, expr_data), "missing (first: vidA)")


def test_per_video_wrong_length_header_label(expr_data, per_video):
    (per_video / "vidA.txt").write_text(CLS + "\n0\n1\n")
    (per_video / "vidB_left.txt").write_text("labels\n0\n9\n1\n")
    p = validate("expr", per_video, expr_data)
    assert "expected 4" in one(p, "frame label(s)").message
    assert one(p, "wrong header").row == 1
    assert one(p, "'9' is not an integer").row == 3
    (per_video / "notes.txt").write_text("x")
    one(validate("expr", per_video, expr_data), "wrong file name")


def test_per_video_nested_folder(expr_data, per_video):
    (per_video / "sub").mkdir()
    one(validate("expr", per_video, expr_data), "nested folder")


# ------------------------------------------------------------------ scale of the report, CLI


def test_many_problems_are_counted_not_listed(expr_data, tmp_path):
    import numpy as np

    from abaw.submit import add_rows

    probs: list[Problem] = []
    add_rows(probs, np.arange(KEPT + 500) + 2, "bad", "f")
    assert len(probs) == KEPT + 1 and total(probs) == KEPT + 500


def test_cli_validate_exit_codes_and_listing(eri_data, tmp_path, capsys):
    good = put(tmp_path, "good.csv", eri_text())
    assert cli(["validate", "--track", "eri", str(good), "--data", str(eri_data)]) == 0
    assert "OK" in capsys.readouterr().out
    rows = [f"{i}," + ",".join(["7"] * 7) for i in TEST_IDS]  # 21 values out of range
    bad = put(tmp_path, "bad.csv", eri_text(rows))
    assert cli(["validate", "--track", "eri", str(bad), "--data", str(eri_data)]) == 1
    err = capsys.readouterr().err
    assert "21 problem(s)" in err and "row 2" in err and "and 1 more" in err


def test_cli_validate_subprocess(expr_data, tmp_path):
    bad = put(tmp_path, "bad.txt", expr_text(rows_with(2, "-1")))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "abaw",
            "validate",
            "--track",
            "expr",
            str(bad),
            "--data",
            str(expr_data),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "row 4" in r.stderr and "Traceback" not in r.stderr


def test_frames_flag_and_missing_list(tmp_path, expr_data):
    from abaw.errors import AbawError

    sub = put(tmp_path, "s.txt", expr_text())
    with pytest.raises(AbawError, match="--frames"):
        validate("expr", sub, tmp_path / "nothing-here")
    fl = expr_data / "CVPR_5th_ABAW_EXPR_test_set_sample.txt"
    assert validate("expr", sub, tmp_path, frames=fl) == []


def test_frame_list_fast_parser_agrees_with_pandas(tmp_path):
    import numpy as np

    from abaw.errors import DataError
    from abaw.expr.framelist import _parse_fast, _parse_pandas, read_frame_list

    rows = [
        f"{v}/{f:0{5 if f < 10**5 else 6}d}.jpg,"
        for v in ("a-1", "b_left", "c")
        for f in (1, 2, 99, 123456)
    ]
    raw = ("image_location," + CLS + "\n" + "\n".join(rows) + "\n").encode()
    fast = _parse_fast(raw)
    found: list[DataError] = []
    slow = _parse_pandas(tmp_path / "x", raw, found.append)
    assert fast is not None and found == []
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert bytes(fast[2]).decode().split("\n")[:-1] == list(slow[2])
    assert slow[3].tolist() == list(range(2, 2 + len(rows)))  # line numbers: header = line 1
    assert _parse_fast(raw.replace(b"\n", b"\r\n")) is None  # unusual: the pandas parser decides
    assert _parse_fast(raw.replace(b"\nc/", b"\n\tc/")) is None  # pandas strips the tab
    bad = tmp_path / "bad.txt"
    bad.write_text("image_location\nvid/00001.jpg,\nvid/00002.png,\n")
    with pytest.raises(DataError, match="line 3"):
        read_frame_list(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("vid/00001.jpg,\nvid/00001.jpg,\n")
    with pytest.raises(DataError, match="twice"):
        read_frame_list(dup)


def test_frame_list_problems_collected_and_bad_rows_left_out(tmp_path):
    """`abaw inspect` hands the parser a collector: every problem is listed (each with its
    line), and the rows that remain are the valid ones."""
    from abaw.expr.framelist import read_frame_list

    f = tmp_path / "f.txt"
    f.write_text(
        "image_location\nvid/00001.jpg,\nvid/00002.png,\n../x/00001.jpg,\nvid/00000.jpg,\n"
        "vid/00001.jpg,\nw/00003.jpg,\n"
    )
    found = []
    fl = read_frame_list(f, report=found.append)
    assert [(e.problem, e.row) for e in found] == [
        ("malformed test frame row", 3),
        ("video name '../x' is not a plain file name (no '/', '\\', '..', not blank)", 4),
        ("frame number below 1", 5),
        ("frame listed twice", None),
    ]
    assert fl.locs.tolist() == ["vid/00001.jpg", "w/00003.jpg"] and fl.videos == ["vid", "w"]


@pytest.mark.parametrize(
    "body",
    [
        "a/00001.jpg,\nb/00002.jpg,\n",
        "a/00001.jpg\nb/00002.jpg",
        "a/00001.jpg,x\nb/00002.jpg,yy\n\n",
    ],
    ids=["commas", "bare, no final newline", "long tails, trailing blank"],
)
def test_frame_list_fast_parser_row_shapes(body):
    from abaw.expr.framelist import _parse_fast

    video, frame, blob = _parse_fast(body.encode())
    assert video.tolist() == ["a", "b"] and frame.tolist() == [1, 2]
    assert bytes(blob) == b"a/00001.jpg\nb/00002.jpg\n"


@pytest.mark.parametrize("track", ["eri", "expr"])
def test_mangled_files_never_crash(track, eri_data, expr_data, tmp_path):
    """Random edits of a valid file: always a list of problems, never an exception."""
    import random

    rnd = random.Random(0)
    good = (eri_text() if track == "eri" else expr_text()).encode()
    data = eri_data if track == "eri" else expr_data
    pieces = [b",", b"\n", b"\r\n", b"", b"nan", b"\xff", b"\xef\xbb\xbf", b"/", b"..", b"9", b" "]
    for k in range(60):
        raw = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(raw) + 1)
            j = min(len(raw), i + rnd.randint(0, 12))
            raw[i:j] = rnd.choice(pieces)
        path = put(tmp_path, f"m{k}.txt", bytes(raw))
        problems = validate(track, path, data)
        assert isinstance(problems, list)
        if bytes(raw) != good and bytes(raw).rstrip(b"\n") != good.rstrip(b"\n"):
            assert all(isinstance(p, Problem) for p in problems)
