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

from abaw.access import DENIED, closed_folder, read_denied, search_denied
from abaw.errors import AbawError, DataError, UnsafeNameError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    Use for writers that want a file name (np.save, torch.save, sqlite).
    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    ensure_dir(path.parent, "output folder")
    with writing(path, "output file"):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            umask_mode(tmp_path)  # mkstemp makes 0600 files; publish with the usual mode
        with writing(path, "output file"):
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
    ensure_dir(path.parent, "output folder")
    if path.exists() and not path.is_dir():
        raise write_error(path, FileExistsError(errno.EEXIST, "a file"), "output folder")
    with writing(path, "output folder"):
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
    """Return `name` if it is safe as a single file or folder name, else raise UnsafeNameError.

    IDs and video names come from user files; one with a path separator or `..`
    could write outside the output folder, and a blank one (' ') makes a folder no one sees.
    """
    if not name.strip() or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        shown = f"'{name}'" if name.isprintable() else repr(name)  # as the user typed it
        raise UnsafeNameError(
            f"{what} {shown} is not a plain file name (no '/', '\\', '..', not blank)"
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
    if "folder" in expected:  # listing a folder, not reading a file
        return folder_error(path, err, expected)
    bad = path_error(path, expected)
    if bad is not None:
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


# ---------------------------------------------------------------- folders
#
# Every folder a command lists (a data set's) or creates (runs, artifacts, reports,
# submissions) goes through these, so an OSError on a folder is one DataError naming the
# folder and the fix, never "nothing found" and never a traceback.

_WRITE_FIX = {
    errno.EACCES: "Make it writable (chmod u+w) or choose another folder",
    errno.EPERM: "Make it writable (chmod u+w) or choose another folder",
    errno.EROFS: "It is on a read-only file system; choose a folder on a writable disk",
    errno.ENOSPC: "Free disk space, or choose a folder on another disk",
    errno.EDQUOT: "Free space within your disk quota, or choose another folder",
    errno.ENAMETOOLONG: "Choose a shorter path",
}


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder on the way down to `path` (a file where a folder goes)."""
    for p in reversed([path, *path.parents]):
        try:
            if not stat.S_ISDIR(os.stat(p).st_mode):
                return p
        except FileNotFoundError:
            return p if os.path.lexists(p) else None  # a dangling link is in the way
        except OSError:
            return None  # no permission to look: not a file in the way
    return None


def folder_error(path: str | os.PathLike[str], err: OSError, expected: str) -> DataError:
    """One DataError for an OSError raised while listing or opening the folder `path`."""
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None:
        return DataError(
            blocker,
            "not a folder" if blocker == path else f"a file on the way to {path}",
            expected=expected,
            found=describe_path(blocker) or "a file",
            hint="Move or rename it, or point the option at the folder itself",
        )
    if isinstance(err, FileNotFoundError):
        return DataError(path, "folder not found", expected=expected, found="nothing")
    if err.errno in DENIED:
        closed = closed_folder(path)  # a folder above it that cannot be entered: name that one
        if closed is not None and closed[0] != Path(os.path.abspath(path)):
            path, expected = closed[0], f"a folder it can enter (on the way to {path})"
        listed = not read_denied(path)  # r without x: its entries are named but refused
        return DataError(
            path,
            "cannot read the folder",
            expected=expected,
            found="permission denied" + (" (it can be listed but not entered)" if listed else ""),
            hint=READ_FOLDER_FIX,
        )
    return DataError(
        path, "cannot read the folder", expected=expected, found=err.strerror or str(err)
    )


READ_FOLDER_FIX = "Make it readable and searchable: chmod a+rx, or ask the data's owner"


def list_dir(folder: str | os.PathLike[str], expected: str = "a folder") -> list[Path]:
    """The entries of `folder`, sorted by name; a folder that cannot be listed is a DataError.

    Why: `Path.glob` and `Path.is_dir` answer "nothing" for a folder without read or
    search permission, and a loader that trusts them reports files as missing.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(Path(folder) / e.name for e in it)
    except OSError as e:
        raise folder_error(folder, e, expected) from None
    err = search_denied(folder)  # listed, but every entry would be refused
    if err is not None:
        raise folder_error(folder, err, expected)
    return entries


def folder_problem(folder: str | os.PathLike[str], expected: str) -> DataError | None:
    """A DataError when `folder` exists (or cannot be looked at) but is not a usable folder.

    None when it is a readable folder or does not exist at all (the caller's "missing").
    """
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return None if not os.path.lexists(folder) else path_error(folder, expected)
    except OSError as e:
        return folder_error(folder, e, expected)
    if not stat.S_ISDIR(st.st_mode):
        return folder_error(folder, NotADirectoryError(errno.ENOTDIR, "not a folder"), expected)
    try:
        with os.scandir(folder):
            pass
    except OSError as e:
        return folder_error(folder, e, expected)
    err = search_denied(folder)  # listed, but every entry would be refused
    return None if err is None else folder_error(folder, err, expected)


def write_error(path: str | os.PathLike[str], err: OSError, what: str) -> DataError:
    """One DataError for an OSError raised while creating or writing `path` (a `what`)."""
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None and err.errno in (errno.EEXIST, errno.ENOTDIR):
        where = "it is a file" if blocker == path else f"{blocker} is a file"
        return DataError(
            path,
            f"cannot create the {what}",
            expected="a folder (or nothing) at that path",
            found=where,
            hint="Move or rename the file, or choose another folder",
        )
    target = Path(err.filename) if isinstance(err.filename, str) else path
    found = (err.strerror or str(err)).lower()
    fix = _WRITE_FIX.get(err.errno or 0, "Check the folder, its permissions and the disk")
    closed = closed_folder(target) if err.errno in DENIED else None
    if closed is not None:  # r without x (mode 600): no entry can be made, whatever its w
        target, found = closed[0], "permission denied (it can be listed but not entered)"
        fix = "Make it searchable and writable: chmod u+rwx, or choose another folder"
    same = os.path.abspath(target) == os.path.abspath(path)
    target, what = (path, what) if same else (target, f"{what} {path}")
    return DataError(target, f"cannot write the {what}", found=found, hint=fix)


def os_failure(err: OSError) -> AbawError:
    """One sentence for an OSError that no loader or writer turned into a DataError.

    The CLI's last check before its "unexpected" line: a refusal of the file system or the
    network (a permission, a full disk, a lost mount) is the environment, not a bug.
    """
    reason = (err.strerror or str(err) or type(err).__name__).rstrip(".")
    fix = _WRITE_FIX.get(err.errno or 0, "Check the path, its permissions and the disk")
    if isinstance(err.filename, str):
        closed = closed_folder(err.filename) if err.errno in DENIED else None
        if closed is not None:  # a folder on the way that can be listed but not entered
            return folder_error(closed[0], closed[1], "a folder it can read and enter")
        if err.errno in DENIED and read_denied(err.filename):  # a read: never the write fix
            fix = "Make it readable (chmod a+r) or ask the data's owner"
        return DataError(err.filename, "the operating system refused it", found=reason, hint=fix)
    return AbawError(f"the operating system refused an operation: {reason}. {fix}.")


def ensure_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create the folder `path` (and its parents); any OSError is a DataError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, what) from None
    return path


def writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """`ensure_dir`, then a real write (a temporary file, removed): checked before the work.

    Why: a run folder that is read-only (or on a full or read-only disk) should fail in the
    first second, not after an hour of training; a test write is the only honest check.
    """
    path = ensure_dir(path, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".abaw-write-test.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:  # the folder is named, not the probe file (an internal name)
        raise write_error(path, OSError(e.errno, e.strerror, str(path)), what) from None
    return path


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], what: str = "output file") -> Iterator[None]:
    """Write `path` inside this block: an OSError becomes one DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except OSError as e:
        raise write_error(path, e, what) from None


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


def content_digest(*parts: np.ndarray | str) -> str:
    """A short sha256 over arrays (dtype, shape and bytes) and strings, in order.

    For fingerprints of what a data set holds (its keys and labels): equal digests mean
    equal content, whatever the files' names, times or folder.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            h.update(part.encode() + b"\0")
            continue
        a = np.ascontiguousarray(part)
        if a.dtype.kind == "f":
            a = np.where(np.isnan(a), np.float32(-1e30), a)  # one spelling of "no label"
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


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
    try:
        if not root.is_dir() or recognised(root):
            return root, []
    except OSError:  # a folder without permission: the loader names it
        return root, []
    subs = []
    with contextlib.suppress(OSError):
        subs = [
            d
            for d in sorted(root.iterdir())
            if not d.name.startswith(".") and d.is_dir() and recognised(d)
        ]
    return (subs[0] if len(subs) == 1 else root), subs
