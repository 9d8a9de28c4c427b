"""The artifact store of a study: Optuna's file-system store, with files that are never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from optuna.artifacts import FileSystemArtifactStore

from abaw.io import writable_dir
from abaw.tune.recovery import artifact_file, temp_name


class AtomicArtifactStore(FileSystemArtifactStore):
    """A FileSystemArtifactStore whose files appear only when complete (temp file + rename).

    Same layout as Optuna's (one file per artifact ID under the root), so
    `optuna-dashboard --artifact-dir` and `abaw.trials.artifact_store` read it as is.
    """

    def __init__(self, base_path: str | os.PathLike[str]) -> None:
        writable_dir(base_path, "artifact folder (--artifacts)")
        super().__init__(Path(base_path))

    def write(self, artifact_id: str, content_body: Any) -> None:  # noqa: D102
        final = artifact_file(self, artifact_id=artifact_id)
        tmp = final.with_name(temp_name(artifact_id))
        try:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(content_body, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove_quietly(self, artifact_id: str) -> None:
        """Delete an artifact if it is there."""
        with contextlib.suppress(Exception):
            self.remove(artifact_id)
