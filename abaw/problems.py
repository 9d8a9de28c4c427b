"""What a submission checker reports, and the readers both tracks' checkers share.

`Problem` is one reason the server would reject a file (with its row); `text_lines` and
`read_submission` turn a file, folder or zip into lines while reporting encoding, line-end
and layout problems. These sit below both track wings (abaw/eri/submission.py,
abaw/expr/submission.py) and the `abaw submit` / `abaw validate` stage (abaw/submit.py).

Encoding decision (formats.md: "UTF-8, `\\n` line ends"): a UTF-8 byte-order mark and Windows
(`\\r\\n`) line ends are rejected, each reported once with the first row and a fix; the rest of
the file is still checked. One final newline is optional; blank lines at the end are rejected.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from abaw.errors import AbawError
from abaw.io import list_dir, reading

SHOWN = 20  # problems printed before "and N more"
KEPT = 1000  # problems of one kind materialised before one aggregate entry
BOM = b"\xef\xbb\xbf"


@dataclass
class Problem:
    """One reason the server would reject a submission.

    row is the 1-based line number in `file` (the header is line 1), None when the problem
    concerns the whole file (missing rows, wrong zip layout). `count` > 1 stands for that many
    occurrences summarised in one entry.
    """

    row: int | None
    message: str
    file: str | None = None
    count: int = 1

    def __str__(self) -> str:
        where = self.file or ""
        if self.row is not None:
            where += f"{', ' if where else ''}row {self.row}"
        return f"{where}: {self.message}" if where else self.message


def header_layout_problem(
    head: list[str], want: list[str], file: str | None
) -> tuple[Problem | None, bool]:
    """The two header mistakes both tracks share: an index column first, columns reordered.

    Returns (problem or None, whether the first column is an index to drop from every row).
    Other header problems (missing, wrong) depend on the track's rows and stay with it.
    """
    if head[1:] == want:
        msg = (
            f"an index column comes first ({head[0]!r}); write without it "
            "(pandas: to_csv(index=False))"
        )
        return Problem(1, msg, file), True
    if sorted(head) == sorted(want):
        found = ",".join(head)
        return Problem(
            1, f"columns out of order: expected {','.join(want)!r}, found {found!r}", file
        ), False
    return None, False


def add_rows(problems: list[Problem], rows, message, file: str | None) -> None:
    """One Problem per row (the first KEPT), then one entry counting the rest.

    `message` is a string or a function of the row index into `rows`.
    """
    rows = list(rows)
    for i, r in enumerate(rows[:KEPT]):
        text = message(i) if callable(message) else message
        problems.append(Problem(int(r), text, file))
    if len(rows) > KEPT:
        text = message(KEPT) if callable(message) else message
        problems.append(
            Problem(None, f"{len(rows) - KEPT} more rows: {text}", file, len(rows) - KEPT)
        )


def total(problems: list[Problem]) -> int:
    """How many problems the list stands for (aggregate entries count several)."""
    return sum(p.count for p in problems)


def text_lines(raw: bytes, file: str) -> tuple[list[str], list[Problem]]:
    """Decode a submission's bytes into lines, reporting encoding and line-end problems.

    The BOM is stripped, `\\r\\n` is read as `\\n` and undecodable bytes are replaced, each
    after one Problem saying how to fix it, so the content can still be checked.
    """
    probs: list[Problem] = []
    if not raw.strip():
        probs.append(
            Problem(None, "empty file (expected a header and one row per test item)", file)
        )
        return [], probs
    if raw.startswith(BOM):
        probs.append(
            Problem(
                1,
                "starts with a UTF-8 byte-order mark (BOM); save as plain UTF-8 without BOM "
                "(Python: encoding='utf-8', not 'utf-8-sig'; or `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)",
                file,
            )
        )
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        probs.append(
            Problem(
                line,
                f"not UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8",
                file,
            )
        )
        text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        n = text.count("\r")
        first = text.count("\n", 0, text.index("\r")) + 1
        probs.append(
            Problem(
                first,
                f"Windows line ends (\\r\\n) on {n} line(s); the server expects \\n: convert "
                "with `dos2unix FILE` or `sed -i 's/\\r$//' FILE`",
                file,
            )
        )
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # one final newline is normal
    blank = 0
    while lines and not lines[-1].strip():
        lines.pop()
        blank += 1
    if blank:
        probs.append(
            Problem(
                len(lines) + 1,
                f"{blank} blank line(s) at the end of the file; delete them",
                file,
            )
        )
    return lines, probs


def read_submission(path: str | os.PathLike[str]) -> tuple[dict[str, bytes], list[Problem], str]:
    """The files of a submission as {name: bytes}: one file, a folder's files, or a zip's entries.

    Returns (files, problems, kind) with kind "file", "folder" or "zip". Nested folders and
    names with path separators or `..` are problems (and their entries are skipped).
    """
    p = Path(path)
    probs: list[Problem] = []
    files: dict[str, bytes] = {}
    if not p.exists():
        raise AbawError(f"{p}: no such file or folder")
    if p.is_dir():
        for q in list_dir(p, "a folder of submission files"):
            if q.name.startswith("."):
                continue
            if q.is_dir():
                probs.append(
                    Problem(
                        None, f"nested folder {q.name}/; put the files at the top level", str(p)
                    )
                )
                continue
            with reading(q, "a submission file"):
                files[q.name] = q.read_bytes()
        if not files:
            probs.append(Problem(None, "empty folder", str(p)))
        return files, probs, "folder"
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                for info in z.infolist():
                    n = info.filename
                    if info.is_dir():
                        probs.append(
                            Problem(
                                None,
                                f"the zip holds a folder {n!r}; zip the files themselves "
                                "(top level, no folder)",
                                str(p),
                            )
                        )
                        continue
                    if "/" in n or "\\" in n or n in ("..", "."):
                        probs.append(
                            Problem(
                                None,
                                f"zip entry {n!r} is inside a folder or has a path separator; "
                                "the files must be at the top level of the zip",
                                str(p),
                            )
                        )
                        continue
                    files[n] = z.read(info)
        except (zipfile.BadZipFile, OSError) as e:
            raise AbawError(f"{p}: not a readable zip ({e})") from None
        if not files and not probs:
            probs.append(Problem(None, "empty zip", str(p)))
        return files, probs, "zip"
    with reading(p, "a submission file, folder or zip"):
        return {p.name: p.read_bytes()}, probs, "file"


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Whole-file problems first, then by file and row; summaries of many rows last."""

    def key(p: Problem):
        return (p.count > 1, p.row is not None, p.file or "", p.row or 0)

    return sorted(problems, key=key)
