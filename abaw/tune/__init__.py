"""`abaw tune` and `abaw studies`: Optuna studies from sweep files.

One job per module (this file only re-exports their public names):

- study.py: create or resume a study and run it (`run_study`); list studies (`study_rows`);
- storage.py: where a study lives (journal file or RDB URL: `open_storage`, `load_study`),
  with connect and statement timeouts for a database;
- journal.py: the journal file, safe against a crash mid-append (a cut last line skipped and
  set aside, a damaged line named);
- identity.py: what a study is (its sweep and data set), checked on every resume;
- search.py: sampler, pruner and each trial's training seed;
- worker.py: one worker's ask / train / tell loop and the top-K files (`retain`);
- pool.py: `--jobs N` worker processes and Ctrl-C across them;
- recovery.py: owners of running trials, and stale trials failed and retried (the only
  module that touches Optuna's private API);
- artifacts.py: the artifact store whose files are never half-written;
- view.py: the live table or the plain lines while a study runs;
- signals.py: Ctrl-C held off around journal appends and bookkeeping.
"""

from abaw.tune.artifacts import AtomicArtifactStore
from abaw.tune.recovery import OWNER_ATTR, UNCLAIMED_S, recover_stale
from abaw.tune.search import (
    MEDIAN_STARTUP_TRIALS,
    MEDIAN_WARMUP,
    PRUNERS,
    SAMPLERS,
    TRIAL_SEEDS,
    make_pruner,
    make_sampler,
    median_warmup,
    trial_seed,
)
from abaw.tune.storage import HEARTBEAT_S, JOURNAL_FILE, load_study, open_storage, storage_label
from abaw.tune.study import run_study, study_rows
from abaw.tune.view import FINISHED, Monitor, fmt_value
from abaw.tune.worker import MAX_FAILS_IN_A_ROW, retain

__all__ = [
    "FINISHED",
    "HEARTBEAT_S",
    "JOURNAL_FILE",
    "MAX_FAILS_IN_A_ROW",
    "MEDIAN_STARTUP_TRIALS",
    "MEDIAN_WARMUP",
    "OWNER_ATTR",
    "PRUNERS",
    "SAMPLERS",
    "TRIAL_SEEDS",
    "UNCLAIMED_S",
    "AtomicArtifactStore",
    "Monitor",
    "fmt_value",
    "load_study",
    "make_pruner",
    "make_sampler",
    "median_warmup",
    "open_storage",
    "recover_stale",
    "retain",
    "run_study",
    "storage_label",
    "study_rows",
    "trial_seed",
]
