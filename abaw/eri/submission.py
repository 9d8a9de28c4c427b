"""The ERI submission: one CSV, `File_ID` then the 7 emotions, one row per test ID.

Rules (docs/submitting.md: "ERI: one CSV", "Validation rules"): exact header in challenge
order; every test ID of the user's data exactly once (those missing a modality too), nothing
else; values finite in [0, 1]. IDs are written as the data spells them (labels.csv / data_info.csv) unless
`--id-style bracketed|bare` says otherwise; `validate` accepts any one of the three
spellings used consistently through the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from abaw.eri import EMOTIONS
from abaw.errors import AbawError, SubmissionError
from abaw.predictions import Predictions
from abaw.problems import Problem, add_rows, header_layout_problem, read_submission, text_lines

HEADER = ",".join(("File_ID", *EMOTIONS))
FILE_NAME = "predictions.csv"
ID_STYLES = ("as-data", "bracketed", "bare")  # File_IDs as the data spells them, [00000], 00000


def bare(ids: np.ndarray) -> np.ndarray:
    """IDs without surrounding brackets (`[00012]` -> `00012`)."""
    s = pd.Series(np.asarray(ids, dtype=str))
    br = s.str.startswith("[") & s.str.endswith("]")
    return np.where(br, s.str[1:-1], s).astype(str)


def test_ids(data: Path) -> np.ndarray:
    """The test IDs of the data set, spelled as in its tables, in table order."""
    from abaw.eri.tables import detect_layout, find_eri_root, read_tables

    root = find_eri_root(Path(data))[0]  # --data one folder above the release, as the loader
    ids, split, _, _ = read_tables(root, detect_layout(root))
    out = ids[split == "test"]
    if len(out) == 0:
        raise AbawError(f"{data}: the tables list no test IDs")
    return out


def styled(ids: np.ndarray, style: str) -> np.ndarray:
    """IDs in the requested spelling."""
    if style == "as-data":
        return ids
    b = bare(ids)
    return np.char.add(np.char.add("[", b), "]") if style == "bracketed" else b


def write_submission(
    pred: Predictions, data: Path, folder: Path, *, id_style: str = "as-data"
) -> tuple[list[Path], int, list[str]]:
    """Write predictions.csv into `folder`: (files, rows, notes)."""
    from abaw.io import atomic_open

    if tuple(pred.columns) != EMOTIONS:
        raise SubmissionError(
            f"prediction columns {list(pred.columns)} are not the 7 emotions {list(EMOTIONS)}"
        )
    expected = test_ids(data)
    if "id" not in pred.keys:
        raise SubmissionError(f"ERI predictions need an 'id' key, found {list(pred.keys)}")
    got = bare(pred.keys["id"])
    index = pd.Index(got)
    if index.has_duplicates:
        raise SubmissionError(f"the predictions list ID {got[index.duplicated()][0]!r} twice")
    pos = index.get_indexer(bare(expected))
    missing = np.flatnonzero(pos < 0)
    if len(missing):
        raise SubmissionError(
            f"{len(missing)} test ID(s) of {data} have no prediction (first: "
            f"{', '.join(expected[missing[:5]])}); every test ID must be submitted"
        )
    values = pred.values[pos].astype(np.float64)
    notes = []
    if not np.isfinite(values).all():
        raise SubmissionError("the test predictions contain NaN or inf")
    out_of = int(((values < 0) | (values > 1)).sum())
    if out_of:
        notes.append(f"{out_of} value(s) outside [0, 1] clipped to [0, 1]")
        values = np.clip(values, 0.0, 1.0)
    extra = len(got) - len(expected)
    if extra > 0:
        notes.append(f"{extra} predicted ID(s) are not test IDs of the data and were left out")
    df = pd.DataFrame(values, columns=list(EMOTIONS))
    df.insert(0, "File_ID", styled(expected, id_style))
    path = folder / FILE_NAME
    with atomic_open(path) as fh:
        df.to_csv(fh, index=False, lineterminator="\n", float_format="%.6f")
    return [path], len(df), notes


def check_csv(raw: bytes, file: str, expected: np.ndarray) -> list[Problem]:
    """Every problem of one ERI CSV against the expected test IDs."""
    lines, probs = text_lines(raw, file)
    if not lines:
        return probs
    first_row, drop_first = _check_header(lines, expected, file, probs)
    body = pd.Series(lines[first_row:], dtype=str)
    rownum = np.arange(len(body)) + first_row + 1
    if len(body) == 0:
        probs.append(Problem(None, f"no data rows ({len(expected)} test IDs expected)", file))
        return probs
    parts, rows = _fields(body, rownum, drop_first, file, probs)
    _check_values(parts, rows, file, probs)
    _check_ids(parts[0].to_numpy(dtype=str), rows, expected, file, probs)
    return probs


def _check_header(
    lines: list[str], expected: np.ndarray, file: str, probs: list[Problem]
) -> tuple[int, bool]:
    """(index of the first data line, whether a leading index column is to be dropped)."""
    want = HEADER.split(",")
    head = lines[0].split(",")
    if head == want:
        return 1, False
    layout, drop_first = header_layout_problem(head, want, file)
    if layout is not None:
        probs.append(layout)
    elif head and bare(np.array([head[0]]))[0] in set(bare(expected)):
        probs.append(Problem(1, f"missing header: the first line must be {HEADER!r}", file))
        return 0, drop_first
    else:
        probs.append(
            Problem(1, f"wrong header: expected {HEADER!r}, found {lines[0][:200]!r}", file)
        )
    return 1, drop_first


def _fields(
    body: pd.Series, rownum: np.ndarray, drop_first: bool, file: str, probs: list[Problem]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The fields of the rows that have exactly File_ID and 7 values, and those rows' numbers.

    Empty rows and rows with another field count are reported.
    """
    n = len(HEADER.split(","))
    parts = body.str.split(",", expand=True, regex=False)
    if drop_first:
        parts = parts.iloc[:, 1:]
        parts.columns = range(parts.shape[1])
    parts = parts.reindex(columns=range(max(parts.shape[1], n)))
    nfields = parts.notna().sum(axis=1).to_numpy()
    good = nfields == n
    empty = (body.str.strip() == "").to_numpy()
    add_rows(probs, rownum[empty], "empty row", file)
    bad = ~good & ~empty
    if bad.any():
        nf = nfields[bad]
        add_rows(
            probs,
            rownum[bad],
            lambda i: f"expected {n} fields (File_ID and 7 values), found {nf[i]}",
            file,
        )
    return parts.loc[good, list(range(n))].astype(str), rownum[good]


def _check_values(parts: pd.DataFrame, rows: np.ndarray, file: str, probs: list[Problem]) -> None:
    """Values: parse, then NaN / inf / range."""
    for j, col in enumerate(EMOTIONS, start=1):
        text = parts[j].str.strip()
        num = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        isnan_text = text.str.lower().isin(["nan", "-nan", "+nan"]).to_numpy()
        unparsed = np.isnan(num) & ~isnan_text
        t = text.to_numpy(dtype=str)
        add_rows(
            probs,
            rows[unparsed],
            lambda i, t=t[unparsed], col=col: f"{col}: {str(t[i])!r} is not a number",
            file,
        )
        add_rows(
            probs, rows[isnan_text], f"{col}: NaN (every value must be a number in [0, 1])", file
        )
        inf = np.isinf(num)
        add_rows(probs, rows[inf], f"{col}: infinite value (must be in [0, 1])", file)
        out = np.isfinite(num) & ((num < 0) | (num > 1))
        v = num[out]
        add_rows(
            probs, rows[out], lambda i, v=v, col=col: f"{col}: {v[i]:g} is outside [0, 1]", file
        )


def _check_ids(
    ids: np.ndarray, rows: np.ndarray, expected: np.ndarray, file: str, probs: list[Problem]
) -> None:
    """IDs: path separators, spelling, unknown, duplicated, missing."""
    sep = np.char.find(ids, "/") >= 0
    sep |= np.char.find(ids, "\\") >= 0
    sep |= np.char.find(ids, "..") >= 0
    add_rows(
        probs,
        rows[sep],
        lambda i, s=ids[sep]: f"File_ID {str(s[i])!r} contains a path separator or '..'",
        file,
    )
    pos = pd.Index(bare(expected)).get_indexer(bare(ids))
    unknown = (pos < 0) & ~sep
    add_rows(
        probs,
        rows[unknown],
        lambda i, s=ids[unknown]: f"File_ID {str(s[i])!r} is not a test ID of the data (extra row)",
        file,
    )
    known = pos >= 0
    dup = pd.Series(pos).where(known).duplicated(keep="first").to_numpy() & known
    if dup.any():
        first_at: dict[int, int] = {}
        for p, r in zip(pos[known], rows[known], strict=True):
            first_at.setdefault(int(p), int(r))
        dpos = pos[dup]
        add_rows(
            probs,
            rows[dup],
            lambda i: (
                f"File_ID {str(expected[dpos[i]])!r} again (first on row {first_at[int(dpos[i])]})"
            ),
            file,
        )
    bracketed = np.char.startswith(ids, "[") & np.char.endswith(ids, "]")
    if known.any() and 0 < int(bracketed[known].sum()) < int(known.sum()):
        nb = int(bracketed[known].sum())
        probs.append(
            Problem(
                None,
                f"File_IDs spelled two ways ({nb} with brackets, {int(known.sum()) - nb} without);"
                f" use one (the data spells them like {expected[0]!r})",
                file,
            )
        )
    hit = np.zeros(len(expected), bool)
    hit[pos[known]] = True
    if not hit.all():
        miss = expected[~hit]
        probs.append(
            Problem(
                None,
                f"{len(miss)} test ID(s) missing (first: {', '.join(miss[:5])}); "
                "every test ID needs a row",
                file,
                1,
            )
        )


def validate_submission(path: Path, data: Path) -> list[Problem]:
    """Problems of an ERI submission: a CSV, or a zip holding exactly one CSV at its top level."""
    files, probs, kind = read_submission(path)
    expected = test_ids(data)
    if kind == "folder":
        probs.append(
            Problem(
                None, "an ERI submission is one CSV file (or a zip of it), not a folder", str(path)
            )
        )
        return probs
    if kind == "zip":
        names = list(files)
        csvs = [n for n in names if n.lower().endswith(".csv")]
        others = [n for n in names if n not in csvs]
        if others:
            probs.append(
                Problem(
                    None,
                    f"the zip holds files that are not CSV: {', '.join(others[:5])}",
                    str(path),
                )
            )
        if len(csvs) != 1:
            if csvs or not others:
                probs.append(
                    Problem(
                        None, f"the zip must hold exactly one CSV, found {len(csvs)}", str(path)
                    )
                )
            return probs
        return probs + check_csv(files[csvs[0]], f"{path}:{csvs[0]}", expected)
    name = next(iter(files))
    return probs + check_csv(files[name], str(path), expected)
