"""Test-wide settings and shared fixtures.

Tiny models on a shared 2-core machine run many times faster on one intra-op
thread (no thread-pool hand-offs for kernels of a few microseconds), and one
thread keeps CPU results bit-for-bit reproducible across machines.

`postgres_url`: a PostgreSQL database for the tests that need a real RDB
storage. `.ci/run` starts a cluster and exports ABAW_TEST_POSTGRES_URL; without
it the fixture starts a throwaway cluster from the local binaries (as the
`postgres` user when run as root: initdb refuses root). Without binaries the
tests skip with the reason, except under CI (CI set), where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def _pg_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder, else wherever initdb + pg_ctl + createdb are."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    need = ("initdb", "pg_ctl", "createdb")
    dirs = [d for d in dirs if all((Path(d) / n).is_file() for n in need)]
    if dirs:
        return Path(dirs[-1])
    found = shutil.which("initdb")
    if found and all((Path(found).parent / n).is_file() for n in need):
        return Path(found).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(module: str) -> object:
    """`pytest.importorskip`, except under CI, where a missing optional package is a failure.

    The extraction tests need the `extract` extra (PyAV, torchvision, OpenCV, scikit-image,
    which `pip install -e ".[dev]"` brings); a developer's quick CPU install may lack them, a
    CI run must not silently skip them.
    """
    if os.environ.get("CI"):
        try:
            return __import__(module)
        except ImportError as e:
            pytest.fail(f"{module} is required under CI (pip install -e '.[dev]'): {e}")
    return pytest.importorskip(module)


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI but {reason}")
    pytest.skip(
        f"PostgreSQL tests skipped: {reason} (set ABAW_TEST_POSTGRES_URL or install postgresql)"
    )


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql://... of an empty-enough database (tests use unique study names)."""
    url = os.environ.get("ABAW_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        _unavailable("no PostgreSQL binaries (initdb, pg_ctl) were found")
    root = os.geteuid() == 0
    prefix: list[str] = []
    if root:
        if shutil.which("runuser") is None:
            _unavailable("running as root without runuser to drop to the postgres user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user for initdb")
        prefix = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="abaw-pg-"))
    data = tmp / "data"
    if root:
        shutil.chown(tmp, "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "abaw", "--no-sync")
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(tmp / "server.log"),
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        run(
            str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "abaw", "abaw_test"
        )
    except subprocess.CalledProcessError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _unavailable(f"a throwaway cluster did not start: {e.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://abaw@127.0.0.1:{port}/abaw_test"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
