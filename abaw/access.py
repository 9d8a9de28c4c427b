"""Probes of what a permission error was about: a folder that cannot be entered, a file
that cannot be read.

Why: a folder with read but no search permission (mode 600 or 644, common after a copy
from another system) lists its entries, then refuses every one of them with EACCES; the
error names a child file, and a fix aimed at that file ("make it writable") is wrong
twice. abaw.io asks these probes so its messages name the folder and the read fix. Kept
apart from abaw.io (which is near the module size limit) and free of its imports.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DENIED = (errno.EACCES, errno.EPERM)


def search_denied(folder: str | os.PathLike[str]) -> OSError | None:
    """The error of entering `folder` (a stat of `folder/.`) when permission is refused."""
    try:
        os.stat(os.path.join(os.fspath(folder), "."))
    except OSError as e:
        return e if e.errno in DENIED else None
    return None


def closed_folder(path: str | os.PathLike[str]) -> tuple[Path, OSError] | None:
    """The first folder from the top down to `path` (itself included) that cannot be entered."""
    full = Path(os.path.abspath(path))
    for folder in [*reversed(full.parents), full]:
        err = search_denied(folder)
        if err is not None:
            return folder, err
    return None


def read_denied(path: str | os.PathLike[str]) -> bool:
    """Whether `path` exists but reading it (listing a folder, opening a file) is refused.

    Why: os.access answers for the real uid and as root says yes to everything; opening
    is the honest check.
    """
    try:
        if os.path.isdir(path):
            with os.scandir(path):
                return False
        with open(path, "rb"):
            return False
    except OSError as e:
        return e.errno in DENIED
