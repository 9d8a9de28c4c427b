"""Feature files shared across splits: a devel or test file that is a hard link of, or
byte-identical to, a training file.

Both are leakage: the model has trained on exactly the features it is then scored on, so the
devel score (and every choice made on it: early stopping, tuning, ensembling) is inflated.
It happens when features are extracted once per source video and copied or linked under
several sample names. Checked by both tracks when a data set is first read; the cost is a
stat per file and a hash of only those files whose size equals a training file's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

LEAKAGE = "LEAKAGE"  # first word of the warning, so a task can repeat it at train time
_HEAD = 1 << 16  # bytes hashed first; the whole file only when these agree


def _digest(path: Path, limit: int | None) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            if limit is not None:
                h.update(fh.read(limit))
            else:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    except OSError:
        return None  # unreadable files are reported by the loader itself
    return h.hexdigest()


def copies_across_splits(files: Iterable[tuple[str, Path]]) -> list[tuple[Path, str, Path, str]]:
    """(file, its split, the training file it copies, "a hard link of" | "byte-identical to").

    `files` are (split, path) of one feature set; a path missing or unreadable is skipped.
    """
    train: dict[int, list[tuple[Path, os.stat_result]]] = {}
    others: list[tuple[str, Path, os.stat_result]] = []
    for split, path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_size == 0:
            continue
        if split == "train":
            train.setdefault(st.st_size, []).append((path, st))
        else:
            others.append((split, path, st))
    cache: dict[tuple[Path, bool], str | None] = {}

    def digest(p: Path, whole: bool) -> str | None:
        if (p, whole) not in cache:
            cache[(p, whole)] = _digest(p, None if whole else _HEAD)
        return cache[(p, whole)]

    found = []
    for split, path, st in others:
        for tpath, tst in train.get(st.st_size, ()):
            if (tst.st_dev, tst.st_ino) == (st.st_dev, st.st_ino):
                found.append((path, split, tpath, "a hard link of"))
                break
            head = digest(path, False)
            same = head is not None and head == digest(tpath, False)
            if same and (st.st_size <= _HEAD or digest(path, True) == digest(tpath, True)):
                found.append((path, split, tpath, "byte-identical to"))
                break
    return found


def leakage_warning(folder: Path, files: Iterable[tuple[str, Path]]) -> str | None:
    """One warning naming the devel / test files of `folder` that copy training files."""
    found = copies_across_splits(files)
    if not found:
        return None
    shown = "; ".join(
        f"{p.name} ({split}) is {how} {t.name} (train)" for p, split, t, how in found[:5]
    )
    more = f"; ... ({len(found)} in all)" if len(found) > 5 else ""
    return (
        f"{LEAKAGE}: {folder}: {len(found)} feature file(s) of devel or test samples are "
        f"copies of training files ({shown}{more}). The model trains on exactly what it is "
        "then scored on, so the devel score is inflated: check how the features were "
        "extracted or copied, and the split table."
    )
