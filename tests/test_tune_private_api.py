"""Optuna's private API: used in abaw/tune/recovery.py only, and pinned against the installed Optuna.

- No other module of `abaw` reads a private Optuna name: neither one of those recovery.py
  uses (`x._storage`, `t._trial_id`, ...: checked on any object, since `ast` cannot tell an
  Optuna object from another), nor anything imported from a private Optuna module
  (`optuna.storages._heartbeat`), nor a private attribute of a name bound by an Optuna import.
- Every private name recovery.py reads is pinned here with a check against the installed
  Optuna, so an upgrade that moves one fails with a sentence saying which.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

PKG = Path(__file__).resolve().parents[1] / "abaw"
RECOVERY = PKG / "tune" / "recovery.py"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_private_module(module: str) -> bool:
    return module.split(".")[0] == "optuna" and any(_private(p) for p in module.split("."))


def _used_private_names(tree: ast.AST) -> set[str]:
    """The private Optuna names a module reads: attribute names (`_storage`) and the
    dotted names of what it imports from a private module (`optuna.storages._heartbeat.x`)."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private_module(node.module):
                used |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module.split(".")[0] == "optuna":
                used |= {f"{node.module}.{a.name}" for a in node.names if _private(a.name)}
        elif isinstance(node, ast.Import):
            used |= {a.name for a in node.names if _is_private_module(a.name)}
    return used


RECOVERY_USES = _used_private_names(ast.parse(RECOVERY.read_text(encoding="utf-8")))
PRIVATE_ATTRS = {n for n in RECOVERY_USES if "." not in n}


def _violations(tree: ast.AST) -> list[str]:
    """Lines of a module that read Optuna's private API (see the module docstring)."""
    optuna_names = {"optuna"}  # names bound by an Optuna import
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            optuna_names |= {
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.split(".")[0] == "optuna"
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            optuna_names |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private_module(node.module) or (
                node.module.split(".")[0] == "optuna" and any(_private(a.name) for a in node.names)
            ):
                found.append(f"line {line}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"line {line}: import {a.name}" for a in node.names if _is_private_module(a.name)
            ]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if node.attr in PRIVATE_ATTRS:
                found.append(f"line {line}: .{node.attr}")
            elif isinstance(root, ast.Name) and root.id in optuna_names:
                found.append(f"line {line}: {root.id}...{node.attr}")
    return found


def test_only_recovery_touches_optunas_private_api():
    assert PRIVATE_ATTRS, "the scan of abaw/tune/recovery.py found no private name: is it broken?"
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        if path == RECOVERY:
            continue
        hits = _violations(ast.parse(path.read_text(encoding="utf-8")))
        if hits:
            found[str(path.relative_to(PKG.parent))] = hits
    assert not found, (
        "Optuna's private API outside abaw/tune/recovery.py (add a small public function "
        f"there instead): {found}"
    )


@pytest.mark.parametrize(
    "source",
    [
        "def f(study):\n    return study._storage\n",
        "def f(trial):\n    return trial._trial_id\n",
        "class S(FileSystemArtifactStore):\n    def f(self):\n        return self._get_filepath('a')\n",
        "from optuna.storages._heartbeat import get_heartbeat_thread\n",
        "import optuna.storages._heartbeat\n",
        "import optuna\nx = optuna.storages._rdb\n",
        "from optuna import storages as st\nx = st._anything\n",
    ],
)
def test_the_scan_catches_a_planted_use(source):
    assert _violations(ast.parse(source)), source


def _heartbeat_storage(tmp_path: Path, grace: int = 1) -> optuna.storages.RDBStorage:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=grace
        )


# Each private name recovery.py reads: what it is for, and a check of it on the installed Optuna.
def _study_storage(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    assert optuna.create_study(storage=storage)._storage is storage


def _study_id(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    assert study._study_id == storage.get_study_id_from_name("s")


def _trial_id(tmp_path: Path) -> None:
    study = optuna.create_study()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    assert isinstance(trial._trial_id, int) and frozen._trial_id == trial._trial_id
    assert study._storage.get_trial(trial._trial_id).number == trial.number


def _stale_trial_ids(tmp_path: Path) -> None:
    storage = _heartbeat_storage(tmp_path)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.1)  # > grace period (1 s; SQLite timestamps are whole seconds)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]


def _heartbeat_functions(tmp_path: Path) -> None:
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    storage = _heartbeat_storage(tmp_path, grace=2)
    assert is_heartbeat_enabled(storage)
    assert not is_heartbeat_enabled(optuna.storages.InMemoryStorage())
    trial = optuna.create_study(storage=storage).ask()
    thread = get_heartbeat_thread(trial._trial_id, storage)
    thread.start()
    thread.join()


def _artifact_base_path(tmp_path: Path) -> None:
    assert Path(FileSystemArtifactStore(tmp_path)._base_path) == tmp_path


def _artifact_get_filepath(tmp_path: Path) -> None:
    assert FileSystemArtifactStore(tmp_path)._get_filepath("abc") == tmp_path / "abc"
    with pytest.raises(ValueError):
        FileSystemArtifactStore(tmp_path)._get_filepath("../escape")


PINNED: dict[str, tuple[str, Callable[[Path], None]]] = {
    "_storage": ("Study._storage, the storage of a study", _study_storage),
    "_study_id": ("Study._study_id, a study's ID in its storage", _study_id),
    "_trial_id": ("Trial._trial_id / FrozenTrial._trial_id, a trial's storage ID", _trial_id),
    "_get_stale_trial_ids": (
        "RDBStorage._get_stale_trial_ids(study_id), trials without a recent heartbeat",
        _stale_trial_ids,
    ),
    "optuna.storages._heartbeat.is_heartbeat_enabled": (
        "optuna.storages._heartbeat.is_heartbeat_enabled(storage)",
        _heartbeat_functions,
    ),
    "optuna.storages._heartbeat.get_heartbeat_thread": (
        "optuna.storages._heartbeat.get_heartbeat_thread(trial_id, storage)",
        _heartbeat_functions,
    ),
    "_base_path": ("FileSystemArtifactStore._base_path, the store's folder", _artifact_base_path),
    "_get_filepath": (
        "FileSystemArtifactStore._get_filepath(artifact_id), an artifact's checked file",
        _artifact_get_filepath,
    ),
}


def test_every_private_name_recovery_reads_is_pinned():
    unpinned = sorted(RECOVERY_USES - set(PINNED))
    assert not unpinned, (
        f"abaw/tune/recovery.py reads {unpinned} of Optuna's private API: pin each in PINNED "
        "of tests/test_tune_private_api.py"
    )


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_installed_optuna_still_has(name, tmp_path):
    what, check = PINNED[name]
    try:
        check(tmp_path)
    except Exception as e:
        pytest.fail(
            f"Optuna {optuna.__version__} no longer has {what} as abaw/tune/recovery.py "
            f"expects ({type(e).__name__}: {e}); adapt the function of recovery.py that uses it"
        )


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_the_public_helpers_of_recovery_work_on_the_installed_optuna(tmp_path):
    from abaw.tune import recovery as R

    storage = _heartbeat_storage(tmp_path)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert R.storage_of(study).get_trial(R.trial_id(trial)).number == trial.number
    assert R.trial_id(trial) == R.trial_id(study.trials[0])
    assert R.has_heartbeat(study) and not R.has_heartbeat(optuna.create_study())
    hb = R.heartbeat(trial, storage=storage)
    hb.start()
    hb.join()
    time.sleep(2.1)  # > grace period (1 s; SQLite timestamps are whole seconds)
    assert R.silent_trial_ids(study) == {R.trial_id(trial)}
    store = FileSystemArtifactStore(tmp_path / "artifacts")
    assert R.artifact_root(store) == tmp_path / "artifacts"
    assert R.artifact_file(store, artifact_id="x") == tmp_path / "artifacts" / "x"


def test_the_journal_record_check_knows_every_optuna_operation():
    """abaw/tune/journal.py checks each journal line against the keys Optuna's replay reads,
    by operation code: an Optuna that adds, renumbers or drops an operation fails here with
    the difference, before a valid journal is called damaged."""
    from optuna.storages.journal._storage import JournalOperation

    from abaw.tune.journal import _OP_KEYS

    ours = set(_OP_KEYS)
    theirs = {op.value: op.name for op in JournalOperation}
    assert ours == set(theirs), (
        f"journal operations: Optuna has {sorted(theirs.items())}, abaw checks {sorted(ours)}"
    )
