"""Atomic file writes: a crash or a bad row never leaves a half-written output.

Everything the toolkit writes (predictions, checkpoints, caches, submissions)
goes to a temporary file in the destination folder and is renamed into place
only when complete, so a file that exists is always a whole file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from abaw.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    Use for writers that want a file name (np.save, torch.save, sqlite).
    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            umask_mode(tmp_path)  # mkstemp makes 0600 files; publish with the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file for writing and move it onto `path` when the block ends cleanly.

    Text mode writes UTF-8 with `\\n` line ends, as the challenge servers expect.
    """
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        kwargs = {"encoding": encoding, "newline": "\n"} if encoding else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; put it in place of `path` when the block ends.

    For outputs that are several files read together (an ensemble, a submission): a reader
    sees the old folder or the new one, never a mix. An existing `path` is replaced (the
    caller decides whether that is allowed); on an exception the temporary folder is removed
    and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask_mode(tmp)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def umask_mode(path: str | os.PathLike[str]) -> None:
    """Give `path` the mode a plain `open()` / `mkdir()` would (0666 / 0777 less the umask).

    Temporary files and folders (mkstemp, mkdtemp) are private (0600 / 0700); a report,
    submission or checkpoint renamed into place should be readable by the team like any
    other file the user makes.
    """
    mask = os.umask(0)
    os.umask(mask)
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~mask)


def safe_name(name: str, *, what: str = "name") -> str:
    """Return `name` if it is safe as a single file or folder name, else raise ValueError.

    IDs and video names come from user files; one with a path separator or `..`
    could write outside the output folder.
    """
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(
            f"{what} {name!r} is not a plain file name (no '/', '\\\\', '..' or empty)"
        )
    return name


def cache_dir_for(root: str | os.PathLike[str], kind: str) -> Path:
    """Where derived caches of a data set live.

    `$ABAW_CACHE/<kind>-<hash of root>` when ABAW_CACHE is set (for read-only
    shared data sets), else `<root>/.abaw_cache/<kind>`. Deleting it is always safe.
    """
    root = Path(root).resolve()
    env = os.environ.get("ABAW_CACHE")
    if env:
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
        return Path(env) / f"{kind}-{digest}"
    return root / ".abaw_cache" / kind


# ---------------------------------------------------------------- reading user files
#
# Every loader reads user files through these helpers (or inside `reading(path)`), so an OS
# error, a decode error or a short read becomes one DataError naming the file, what was
# expected, what was found and how to fix it, never a traceback.

UTF8_HINT = (
    "Re-save it as UTF-8: in a spreadsheet choose 'CSV UTF-8', or run "
    "`iconv -f cp1252 -t utf-8 FILE > FILE.new && mv FILE.new FILE`"
)


def describe_path(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with `path` as a readable regular file, or None when it is one.

    Why: `Path.is_file()` is False for a directory, a dangling link and a link loop alike,
    and a loader that only asks it can only say "missing"; the user needs to know which.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a dangling symbolic link (to {os.readlink(path)!r}, which does not exist)"
        return None if not os.path.lexists(path) else "not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"not accessible ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, socket or pipe)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def path_error(path: str | os.PathLike[str], expected: str) -> DataError | None:
    """A DataError for a path that exists but cannot be read as a file, else None."""
    what = describe_path(path)
    if what is None:
        return None
    hint = {
        "a directory": "Move or rename the folder; a file is expected at this path",
        "a symbolic link loop": "Fix or remove the link",
        "not readable (permission denied)": "Make it readable (chmod a+r) or ask the data's owner",
    }.get(what, "Fix or remove the link" if "link" in what else None)
    return DataError(path, "cannot read the file", expected=expected, found=what, hint=hint)


def os_error(path: str | os.PathLike[str], err: OSError, expected: str) -> DataError:
    """One DataError for an OSError raised while opening or reading `path`."""
    bad = path_error(path, expected)
    if bad is not None and not (bad.found == "a directory" and "folder" in expected):
        return bad
    if isinstance(err, FileNotFoundError):
        return DataError(path, "file not found", expected=expected, found="nothing")
    return DataError(
        path,
        "cannot read the file",
        expected=expected,
        found=err.strerror or str(err),
        hint="Check the disk and the file (an interrupted copy?)",
    )


def decode_error(path: str | os.PathLike[str], err: UnicodeDecodeError | None = None) -> DataError:
    """A DataError naming the first byte of `path` that is not UTF-8: offset, line, column."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return os_error(path, e, "a UTF-8 text file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start
    else:  # the whole file decodes: the error came from a partial read; report it as is
        return DataError(path, "not UTF-8 text", expected="a UTF-8 text file", found=str(err))
    byte = data[start]
    line = data.count(b"\n", 0, start) + 1
    col = start - (data.rfind(b"\n", 0, start) + 1) + 1
    guess = ""
    with contextlib.suppress(UnicodeDecodeError):
        guess = f", {bytes([byte]).decode('cp1252')!r} in Windows-1252"
    return DataError(
        path,
        "not UTF-8 text",
        row=line,
        expected="a UTF-8 text file",
        found=f"byte 0x{byte:02x} at offset {start} (character {col} of the line{guess})",
        hint=UTF8_HINT,
    )


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], expected: str = "a readable file") -> Iterator[None]:
    """Read `path` inside this block: OS and decode errors become one DataError."""
    try:
        yield
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise decode_error(path, e) from None
    except OSError as e:
        raise os_error(path, e, expected) from None


def read_text(
    path: str | os.PathLike[str], *, expected: str = "a UTF-8 text file", encoding: str = "utf-8"
) -> str:
    """The text of a user file (strict UTF-8); every failure is a DataError."""
    with reading(path, expected):
        return Path(path).read_text(encoding=encoding)


def read_npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of the .npy array starting at `fh`'s position.

    The one reader of .npy headers (feature files, the Expr store, arrays inside a
    predictions .npz); leaves `fh` at the first data byte. Raises ValueError or EOFError
    on anything that is not a .npy header.
    """
    version = np.lib.format.read_magic(fh)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(fh)
    return shape, dtype, fortran


def npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, reading only its header."""
    with reading(path, "a .npy file written by numpy"), open(path, "rb") as fh:
        try:
            shape, dtype, fortran = read_npy_header(fh)
        except (ValueError, EOFError) as e:
            raise DataError(
                path, "not a .npy array", expected="a .npy file written by numpy", found=str(e)[:80]
            ) from None
        return shape, dtype, fortran, fh.tell()


def load_npy(path: str | os.PathLike[str], *, mmap_mode: str | None = None) -> np.ndarray:
    """np.load(allow_pickle=False) of a user file; a truncated file is a DataError, not a traceback.

    The header says how many bytes of data follow; an interrupted copy has fewer.
    """
    shape, dtype, _, offset = npy_header(path)
    if dtype.hasobject:
        raise DataError(
            path, "wrong feature array", expected="a numeric array", found="Python objects"
        )
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with reading(path, "a .npy file written by numpy"):
        size = os.stat(path).st_size
        if size < need:
            raise DataError(
                path,
                "truncated .npy file",
                expected=f"{need:,} bytes for shape {tuple(shape)} {dtype}",
                found=f"{size:,} bytes",
                hint="The file was cut short (an interrupted copy or download?); copy it again",
            )
        try:
            return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
        except (ValueError, EOFError) as e:
            raise DataError(
                path, "unreadable .npy file", expected="a .npy array", found=str(e)[:80]
            ) from None


# ---------------------------------------------------------------- caches

STALE_TMP_SECONDS = 900  # a temporary file untouched this long belongs to an interrupted write


def stat_token(st: os.stat_result) -> str:
    """What identifies a file's content for a cache key: size, mtime, inode and ctime.

    Size and mtime alone miss an in-place change that keeps both (`rsync -a`, `cp -p`,
    `touch -r`); no copy tool can set the ctime back, and a replaced file has a new inode.
    """
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def cache_key(
    params: object, files: Iterable[tuple[str, os.stat_result]], texts: Iterable[str] = ()
) -> str:
    """The one cache-key function of both tracks: a hash of settings, file stats and text.

    Args:
        params: JSON-able settings the cached content depends on (loader version, options).
        files: (name, stat) of every input file; order does not matter.
        texts: other inputs (IDs, splits), hashed in order.
    """
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    for name, st in sorted(files, key=lambda f: f[0]):
        h.update(f"{name}\0{stat_token(st)}\n".encode())
    return h.hexdigest()[:20]


def remove_stale_tmp(
    folder: str | os.PathLike[str], *, older_than: float = STALE_TMP_SECONDS
) -> int:
    """Delete temporary files of interrupted atomic writes under `folder`; returns how many.

    Only files named like `atomic_path` names them (`.<name>.<random>.tmp`) and untouched
    for `older_than` seconds: a writer still at work touches its file continuously.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now, n = time.time(), 0
    for p in folder.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if p.is_file() and now - p.stat().st_mtime >= older_than:
                p.unlink()
                n += 1
    return n


# ---------------------------------------------------------------- data roots


def find_data_root(
    root: str | os.PathLike[str], recognised: Callable[[Path], bool]
) -> tuple[Path, list[Path]]:
    """`root` if it holds a recognised layout, else the one subfolder that does.

    Returns (folder to use, candidates): candidates lists the recognised subfolders when
    `root` itself is not one (empty if none, several if ambiguous; then folder is `root`).
    A release often unpacks into a folder of its own (`c2_muse_reaction/`), so a user who
    points `--data` at its parent should not be told "nothing found".
    """
    root = Path(root)
    if not root.is_dir() or recognised(root):
        return root, []
    subs = []
    with contextlib.suppress(OSError):
        subs = [
            d
            for d in sorted(root.iterdir())
            if not d.name.startswith(".") and d.is_dir() and recognised(d)
        ]
    return (subs[0] if len(subs) == 1 else root), subs
