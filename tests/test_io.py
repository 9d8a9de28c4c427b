"""Atomic writes: a failure never leaves a half-written or clobbered output."""

import pytest

from abaw.io import atomic_open, cache_dir_for, safe_name


def test_atomic_open_writes_whole_file(tmp_path):
    p = tmp_path / "sub" / "out.csv"
    with atomic_open(p) as fh:
        fh.write("a,b\n1,2\n")
    assert p.read_bytes() == b"a,b\n1,2\n"


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(p) as fh:
        fh.write("new partial")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_open_binary(tmp_path):
    p = tmp_path / "b.bin"
    with atomic_open(p, "wb") as fh:
        fh.write(b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "x\x00"])
def test_safe_name_rejects(bad):
    with pytest.raises(ValueError):
        safe_name(bad)


def test_safe_name_accepts_plain():
    assert safe_name("14-30-1920x1080_left") == "14-30-1920x1080_left"


def test_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ABAW_CACHE", raising=False)
    assert cache_dir_for(tmp_path, "eri") == tmp_path.resolve() / ".abaw_cache" / "eri"
    monkeypatch.setenv("ABAW_CACHE", str(tmp_path / "c"))
    d = cache_dir_for(tmp_path / "data", "expr")
    assert d.parent == tmp_path / "c" and d.name.startswith("expr-")


def test_atomic_writes_publish_with_the_umask_mode(tmp_path):
    """mkstemp files are 0600; what lands (reports, submissions) must be team-readable."""
    import os

    from abaw.io import atomic_open

    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "r.txt") as fh:
            fh.write("x")
        assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    """A multi-file output (ensemble, submission) is swapped in whole; a failure leaves the
    old folder as it was and no temporary folder behind."""
    import pytest

    from abaw.io import atomic_dir

    out = tmp_path / "ens"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.txt").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (out / "a.txt").read_text() == "1"
    with atomic_dir(out) as d:
        (d / "b.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ens"]
