"""Every shell command in README.md and docs/*.md runs, so the docs cannot rot (Contract D).

One test per page, plus one that runs every page in README's reading order in ONE folder
(as a reader who follows the quickstart and then each page does). A page's ```bash blocks
run in document order in a fresh temporary folder, each with `set -euo pipefail`, where `abaw` is this checkout's CLI and
tiny synthetic data sets already sit at data/eri and data/expr. Budgets are
rewritten to tiny ones (REWRITES). ```python blocks run too, each as its own
script, on pages that opt in with `<!-- docs-test: python -->`.
A block marked ```bash no-test is skipped, and must be preceded by an
`<!-- no-test: why -->` comment. The convention is documented in docs/contributing.md.

A command of a stage not built in this checkout (`abaw tune`, `ensemble`,
`submit`, `validate`, `studies`, `demo`) makes its page xfail (non-strict) with that
reason; once the module exists the page must pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONVENTION_PAGE = ROOT / "docs" / "contributing.md"
PYTHON_OPT_IN = "<!-- docs-test: python -->"
NO_TEST_COMMENT = re.compile(r"^\s*<!--\s*no-test:\s*(\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)\s*(.*)$")
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
# An unlabelled block that starts like this is a command that would never run: label it.
LOOKS_LIKE_A_COMMAND = re.compile(r"^\s*(\$ )?(abaw|pip|python|optuna-dashboard)\b")
BLOCK_TIMEOUT_S = 300
# Pages run two at a time: each is a chain of single-threaded processes, so two fill two
# cores. ABAW_DOCS_JOBS=1 runs them one by one.
DOCS_JOBS = 2

# Budget rewrites (Contract D): the commands a reader copies are the real ones;
# the test runs them at the smallest size that still exercises every code path.
REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"--scale[ =](small|full)\b"), "--scale tiny"),
    (re.compile(r"--trials[ =]\d+"), "--trials 2"),
    (re.compile(r"\btrain\.epochs=\d+"), "train.epochs=2"),
    (re.compile(r"--minutes[ =][0-9.]+"), "--minutes 0.5"),
    # `abaw demo` at its real size is ten minutes: the docs run its smoke-test size.
    (re.compile(r"\babaw demo\b(?![^\n]*--scale)"), "abaw demo --scale tiny --minutes 0.5"),
    # The checkout is already importable through the `abaw` shim: installing is a no-op.
    (re.compile(r"\bpip install\b[^&|;#\n]*"), "true "),
]

# Stages that other work streams are building; a page using one xfails until it exists.
PENDING = {
    "tune": "abaw.tune",
    "studies": "abaw.tune",
    "ensemble": "abaw.ensemble",
    "submit": "abaw.submit",
    "validate": "abaw.submit",
    "demo": "abaw.demo",
}


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    flags: str
    text: str
    before: str  # the last non-blank line before the fence
    end: int = 0  # 1-based line of the closing fence

    @property
    def no_test(self) -> bool:
        return "no-test" in self.flags.split()

    @property
    def where(self) -> str:
        return f"{_page_id(self.page)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """Fenced code blocks of a Markdown page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, flags = m.group(1), m.group(2).lower(), m.group(3)
        before = next((x for x in reversed(lines[:i]) if x.strip()), "")
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[j]
        ):
            j += 1
        blocks.append(
            Block(page, i + 1, lang, flags, "\n".join(lines[i + 1 : j]), before, end=j + 1)
        )
        i = j + 1
    return blocks


# Python blocks (opt-in pages) get the same rewrites plus keyword-argument forms.
PYTHON_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\btrials=\d+"), "trials=2"),
    (re.compile(r"""\bscale=(["'])(small|full)\1"""), 'scale="tiny"'),
    (re.compile(r"""(["']train\.epochs["']\s*:\s*)\d+"""), r"\g<1>2"),
]


TRAINING_COMMAND = re.compile(r"\babaw (train|tune)\b")


def _pin_epochs(text: str) -> str:
    """`abaw train|tune` without `train.epochs=` gets `--set train.epochs=2`: the sweep's own
    value (100 for the paper) would make one docs page take an hour."""
    text = text.replace("\\\n", " ")  # one logical line per command
    out = []
    for line in text.split("\n"):
        parts = re.split(r"(&&|\|\||;|\|)", line)
        for i, part in enumerate(parts):
            if TRAINING_COMMAND.search(part) and "train.epochs=" not in part:
                parts[i] = TRAINING_COMMAND.sub(r"abaw \1 --set train.epochs=2", part, count=1)
        out.append("".join(parts))
    return "\n".join(out)


def rewrite(text: str, lang: str = "bash") -> str:
    rules = REWRITES if lang == "bash" else REWRITES[:-1] + PYTHON_REWRITES
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return _pin_epochs(text) if lang == "bash" else text


def _in_checkout(module: str) -> bool:
    """Whether `module` is a file of THIS checkout. (importlib would also find another
    checkout's module through an editable install's finder, so it cannot tell.)"""
    rel = Path(*module.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _missing_stages() -> dict[str, str]:
    return {cmd: mod for cmd, mod in PENDING.items() if not _in_checkout(mod)}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Tiny synthetic data sets, made once: <root>/eri (MuSe layout) and <root>/expr."""
    from abaw.eri.data import load_eri
    from abaw.eri.synth import write_eri
    from abaw.expr.data import load_expr
    from abaw.expr.synth import write_expr

    root = tmp_path_factory.mktemp("docs-data")
    oracle = write_eri(root / "eri", scale="tiny", seed=0, n_jobs=1, show_progress=False)
    write_expr(root / "expr", scale="tiny", seed=0, show_progress=False)
    # Warm the loaders' caches (copied with the data, keyed on file names, sizes, mtimes),
    # so each page does not parse the same CSVs again.
    load_eri(root / "eri", oracle["features"], n_jobs=1)
    load_expr(root / "expr", show_progress=False)
    return root


@pytest.fixture(scope="session")
def shim_bin(tmp_path_factory) -> Path:
    """A bin folder whose `abaw` and `python` run this checkout with this interpreter."""
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    for name, cmd in (("abaw", f'"{sys.executable}" -m abaw'), ("python", f'"{sys.executable}"')):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        path.chmod(0o755)
    return bin_dir


def _env(shim_bin: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ABAW_CACHE", None)
    env.update(
        PATH=f"{shim_bin}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",  # tiny models on a shared machine: one thread is fastest
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _prepare(workdir: Path, tiny_data: Path, blocks: list[Block]) -> None:
    """Give a page its data/ (unless it synthesises that folder itself) and sweeps/."""
    shell = "\n".join(b.text for b in blocks if RUNNABLE.get(b.lang) == "bash")
    for track in ("eri", "expr"):
        if re.search(rf"abaw synth\b[^\n]*--out[ =]data/{track}(\s|$)", shell):
            continue
        shutil.copytree(tiny_data / track, workdir / "data" / track)
    (workdir / "sweeps").symlink_to(ROOT / "sweeps", target_is_directory=True)


def _pending_reason(block: Block, output: str) -> str | None:
    """Why a failed block is expected to fail in this checkout, or None if it is a real failure.

    Only when the block uses a stage whose module is not in this checkout and the output
    names it (the CLI's "not built yet", or an import of that module).
    """
    for cmd, mod in _missing_stages().items():
        uses = re.search(rf"\babaw {cmd}\b", block.text) or mod in block.text
        named = (
            f"abaw {cmd}: not built yet" in output
            or f"'{mod}'" in output
            or f"{mod.replace('.', '/')}.py" in output
        )
        if uses and named:
            return f"{block.where}: needs `abaw {cmd}` ({mod}), not in this checkout yet"
    return None


def _run_block(block: Block, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    kind = RUNNABLE[block.lang]
    if kind == "bash":
        script = workdir / f".block-{block.line}.sh"
        script.write_text("set -euo pipefail\n" + rewrite(block.text) + "\n")
        argv = ["bash", str(script)]
    else:
        script = workdir / f".block-{block.line}.py"
        script.write_text(rewrite(block.text, "python") + "\n")
        argv = [sys.executable, str(script)]
    return subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def _runnable(page: Path, blocks: list[Block]) -> list[Block]:
    python = PYTHON_OPT_IN in page.read_text(encoding="utf-8")
    return [
        b
        for b in blocks
        if not b.no_test and (RUNNABLE.get(b.lang) == "bash" or (python and b.lang == "python"))
    ]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def run_page(page: Path, tiny_data: Path, shim_bin: Path, workdir: Path) -> tuple[str, str]:
    """Run a page's blocks in order in `workdir`: ("pass" | "skip" | "xfail" | "fail", message)."""
    return run_pages([page], tiny_data, shim_bin, workdir)


def run_pages(pages: list[Path], tiny_data: Path, shim_bin: Path, workdir: Path) -> tuple[str, str]:
    """Run the pages' blocks in order, all in one `workdir`, as a reader following them does."""
    todo = [b for page in pages for b in _runnable(page, parse_blocks(page))]
    if not todo:
        return "skip", f"{', '.join(map(_page_id, pages))}: no runnable block"
    _prepare(workdir, tiny_data, todo)
    env = _env(shim_bin)
    for block in todo:
        try:
            r = _run_block(block, workdir, env)
        except subprocess.TimeoutExpired:
            return "fail", f"{block.where}: block ran longer than {BLOCK_TIMEOUT_S} s"
        if r.returncode == 0:
            continue
        output = r.stdout[-3000:] + "\n" + r.stderr[-3000:]
        reason = _pending_reason(block, output)
        if reason:
            return "xfail", reason
        return "fail", (
            f"{block.where}: block exited {r.returncode}\n--- block (as run) ---\n"
            f"{rewrite(block.text, RUNNABLE[block.lang])}\n--- output ---\n{output}"
        )
    return "pass", ""


def reading_order() -> list[Path]:
    """README, then the pages in the order README's documentation table links them (a
    row's further links right after its first), then any page it does not list, by name."""
    text = PAGES[0].read_text(encoding="utf-8")
    table = text.split("## Documentation", 1)[-1]
    order = [PAGES[0]]
    for name in re.findall(r"\(docs/([\w.-]+\.md)(?:#[\w-]*)?\)", table):
        page = ROOT / "docs" / name
        if page in PAGES and page not in order:
            order.append(page)
    return order + [p for p in PAGES if p not in order]


SEQUENCE = "reading order"  # the key of the one-folder run in page_outcomes


@pytest.fixture(scope="session")
def page_outcomes(request, tiny_data, shim_bin, tmp_path_factory) -> dict[Any, tuple[str, str]]:
    """Run the selected pages, DOCS_JOBS at a time (each in its own folder and processes),
    and, when its test is selected, every page in reading order in one folder (one job)."""
    names = {getattr(item, "originalname", "") for item in request.session.items}
    pages: list[Any] = [
        item.callspec.params["page"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_page_commands_run"
    ]
    if "test_pages_in_reading_order_in_one_folder" in names:
        pages.insert(0, SEQUENCE)  # the longest job first
    jobs = max(1, int(os.environ.get("ABAW_DOCS_JOBS", DOCS_JOBS)))

    def one(page: Any) -> tuple[str, str]:
        if page == SEQUENCE:
            workdir = tmp_path_factory.mktemp("reading-order")
            return run_pages(reading_order(), tiny_data, shim_bin, workdir)
        workdir = tmp_path_factory.mktemp(page.stem)
        return run_page(page, tiny_data, shim_bin, workdir)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(pages, pool.map(one, pages), strict=True))


# Pages with at least one runnable block (the others hold only text, tables and no-test blocks;
# their convention is still checked by the tests below).
RUNNABLE_PAGES = [p for p in PAGES if _runnable(p, parse_blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_page_id)
def test_page_commands_run(page, page_outcomes):
    """Every runnable block of the page succeeds, in order, in one fresh folder."""
    status, message = page_outcomes[page]
    if status == "skip":
        pytest.skip(message)
    if status == "xfail":
        pytest.xfail(message)
    if status == "fail":
        pytest.fail(message, pytrace=False)


def test_pages_in_reading_order_in_one_folder(page_outcomes):
    """Every page's commands, in README's reading order, in ONE folder: what a reader who
    follows the quickstart and then each page sees (no "exists; pass --force" half-way)."""
    status, message = page_outcomes[SEQUENCE]
    if status == "xfail":
        pytest.xfail(message)
    if status == "fail":
        pytest.fail(message, pytrace=False)


def test_reading_order_follows_the_readme():
    order = [p.name for p in reading_order()]
    assert order[:3] == ["README.md", "quickstart.md", "real-data.md"], order
    assert order.index("tuning.md") < order.index("ensembling.md") < order.index("report.md")
    assert sorted(order) == sorted(p.name for p in PAGES)


def test_docs_cite_nothing_outside_the_repository():
    """A reader has the repository, not the team's shared folder: facts live in docs/."""
    found = [
        f"{_page_id(p)}:{n}"
        for p in PAGES
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "../shared" in line or "../notes" in line
    ]
    assert not found, f"pages cite files outside the repository: {found}"


def test_code_cites_nothing_outside_the_repository():
    """Docstrings and comments point at docs/, which a user has, never at the team's folders."""
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("abaw/**/*.py"), *root.glob("benchmarks/*.py"), *root.glob("sweeps/*")]
    found = [
        f"{f.relative_to(root)}:{n}"
        for f in files
        if f.is_file()
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if "../shared" in line or "../notes" in line
    ]
    assert not found, f"code cites files outside the repository: {found}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_follows_the_convention(page):
    """no-test blocks say why; no command hides in an unlabelled block; no stale markers."""
    problems = []
    blocks = parse_blocks(page)
    for b in blocks:
        if b.no_test and not NO_TEST_COMMENT.match(b.before):
            problems.append(
                f"{b.where}: a no-test block must follow an `<!-- no-test: why -->` comment"
            )
        if not b.lang and LOOKS_LIKE_A_COMMAND.match(b.text):
            problems.append(
                f"{b.where}: unlabelled block looks like a command; label it ```bash "
                "(it will be run) or ```text (an example that is not run)"
            )
    lines = page.read_text(encoding="utf-8").splitlines()
    fences = {b.line for b in blocks if b.no_test}
    inside = {n for b in blocks for n in range(b.line, b.end + 1)}
    for n, line in enumerate(lines, 1):
        if n not in inside and NO_TEST_COMMENT.match(line):
            nxt = next((k for k in range(n, len(lines)) if lines[k].strip()), None)
            if nxt is None or nxt + 1 not in fences:
                problems.append(f"{_page_id(page)}:{n}: no-test comment without a no-test block")
    assert not problems, "\n".join(problems)


def test_convention_is_documented():
    text = CONVENTION_PAGE.read_text(encoding="utf-8")
    for needle in ("no-test", PYTHON_OPT_IN, "--scale tiny", "--trials 2", "train.epochs=2"):
        assert needle in text, f"docs/contributing.md does not explain {needle!r}"


def test_every_page_is_linked():
    """A page nobody links to is a page nobody reads: each is reachable from README.md."""
    by_name = {p.name: p for p in PAGES[1:]}
    seen, todo = set(), [PAGES[0]]
    while todo:
        text = todo.pop().read_text(encoding="utf-8")
        for name, page in by_name.items():
            if name not in seen and re.search(
                rf"\(([\w./-]*/)?{re.escape(name)}(#[\w-]*)?\)", text
            ):
                seen.add(name)
                todo.append(page)
    unlinked = sorted(set(by_name) - seen)
    assert not unlinked, f"no Markdown link reaches these pages from README.md: {unlinked}"


def test_harness_parses_and_rewrites():
    """The parts of the harness a wrong regex would silently break."""
    text = (
        "<!-- no-test: needs a GPU -->\n```bash no-test\nabaw x\n```\n"
        "````text\n```bash\nnot a fence\n```\n````\n"
        "```python\nprint(1)\n```\n"
    )
    tmp = ROOT / "tests" / ".docs-parse-check.md"
    try:
        tmp.write_text(text)
        blocks = parse_blocks(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    assert [(b.lang, b.no_test) for b in blocks] == [
        ("bash", True),
        ("text", False),
        ("python", False),
    ]
    assert NO_TEST_COMMENT.match(blocks[0].before)
    assert blocks[1].text == "```bash\nnot a fence\n```"
    cmd = (
        "pip install torch==2.13.0 -e . && abaw synth --scale small --out d && "
        "abaw tune --trials 40 --set train.epochs=100 && abaw demo --minutes 10"
    )
    assert rewrite(cmd) == (
        "true && abaw synth --scale tiny --out d && "
        "abaw tune --trials 2 --set train.epochs=2 && "
        "abaw demo --scale tiny --minutes 0.5 --minutes 0.5"
    )
    assert rewrite("abaw demo") == "abaw demo --scale tiny --minutes 0.5"
    assert rewrite("abaw demo --scale tiny --out x") == "abaw demo --scale tiny --out x"
    multi = (
        "abaw tune --sweep s.toml \\\n  --trials 50  # note\nabaw train --sweep s.toml --set x=1"
    )
    assert rewrite(multi) == (
        "abaw tune --set train.epochs=2 --sweep s.toml    --trials 2  # note\n"
        "abaw train --set train.epochs=2 --sweep s.toml --set x=1"
    )
    py = 'run_study(s, "d", trials=40, overrides={"train.epochs": 30}); write(scale="small")'
    assert rewrite(py, "python") == (
        'run_study(s, "d", trials=2, overrides={"train.epochs": 2}); write(scale="tiny")'
    )
    assert rewrite('["train.epochs=30"]', "python") == '["train.epochs=2"]'


def test_harness_runs_fails_and_xfails(tmp_path, tiny_data, shim_bin, monkeypatch):
    """A page passes, fails with the block and its output, or xfails only for a missing stage."""
    monkeypatch.setitem(PENDING, "frobnicate", "abaw.frobnicate")  # a stage that does not exist
    pages = {
        "ok": "```bash\nabaw --version\ntest -f data/eri/labels.csv && test -d sweeps\n```\n",
        "typo": "```bash\nabaw --version\nabaw inspect --track eri --dta data/eri\n```\n",
        "pending": '```bash\necho "abaw frobnicate: not built yet in this version" >&2; exit 2\n```\n',
        "built": '```bash\necho "abaw train: not built yet in this version" >&2; exit 2\n```\n',
        "skipped": "<!-- no-test: demo -->\n```bash no-test\nexit 1\n```\n",
    }
    outcomes = {}
    for name, text in pages.items():
        page = tmp_path / f"{name}.md"
        page.write_text(text)
        (tmp_path / name).mkdir()
        outcomes[name] = run_page(page, tiny_data, shim_bin, tmp_path / name)
    assert outcomes["ok"] == ("pass", "")
    status, message = outcomes["typo"]
    assert status == "fail" and "--dta data/eri" in message and "required: --data" in message
    assert outcomes["pending"][0] == "xfail" and "abaw.frobnicate" in outcomes["pending"][1]
    assert outcomes["built"][0] == "fail"  # abaw.train exists: its failure is a real one
    assert outcomes["skipped"][0] == "skip"


TRAINS = re.compile(r"\babaw (train|tune|demo|extract)\b|\b(fit|run_study|run_demo|train_sweep)\(")
COST_WINDOW = 16  # lines of prose around a block (or its own comments) that must state its cost


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_that_trains_says_what_it_costs(page):
    """A reader on a deadline plans with the cost: every runnable block that trains, tunes or
    extracts has, in its own comments or the prose around it, the word CPU (with a time)
    and the word GPU (a figure, or that none is measured yet), and the page links the cost
    table (training.md's own section needs no link)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines)
    problems = []
    for b in parse_blocks(page):
        if b.no_test or b.lang not in RUNNABLE or not TRAINS.search(b.text):
            continue
        before = lines[max(0, b.line - 1 - COST_WINDOW) : b.line - 1]
        after = lines[b.end : b.end + COST_WINDOW // 2]
        near = "\n".join([*before, b.text, *after])
        missing = [w for w in ("CPU", "GPU") if w not in near]
        if missing:
            problems.append(f"{b.where}: no {' or '.join(missing)} cost near this block")
    if problems and page.name != "training.md" and "what-training-costs" not in text:
        problems.append(f"{_page_id(page)}: no link to training.md#what-training-costs")
    assert not problems, problems
