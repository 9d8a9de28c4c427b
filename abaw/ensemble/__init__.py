"""`abaw ensemble`: tuned trials and teammates' prediction files combined, with an honest estimate.

One job per module (this file only re-exports their public names):

- predictions.py: members from studies and files, checked and aligned by key (`Member`,
  `collect_members`, `attach`, `align_to`, `load_lean`, `prediction_files`);
- recipes.py: the combination methods as scikit-learn-style estimators (mean, greedy
  ensemble selection, stacking) and `Pipeline`, a recipe plus the track's post-processing;
- honest.py: the honest estimate (each pipeline refitted on one half of devel, scored on
  the other, both ways);
- stream.py: the test side, one member's file in memory at a time;
- manifest.py: the ensemble folder and its manifest (`load_ensemble`, `keys_sha256`);
- build.py: `build_ensemble`, which runs the above.

Everything track-specific (scorers, devel halves, post-processing, allowed methods) comes
from the track object (`abaw.track.get_track`).
"""

from abaw.ensemble.build import EnsembleResult, build_ensemble
from abaw.ensemble.honest import honest_scores
from abaw.ensemble.manifest import (
    ensemble_dir,
    keys_sha256,
    load_ensemble,
    load_ensemble_devel,
    read_manifest,
)
from abaw.ensemble.predictions import (
    Member,
    align_to,
    attach,
    collect_members,
    load_lean,
    prediction_files,
)
from abaw.ensemble.recipes import (
    METHODS,
    GreedyRecipe,
    MeanRecipe,
    Pipeline,
    Recipe,
    StackRecipe,
    greedy_counts,
    make_recipe,
)
from abaw.ensemble.stream import stream_test

__all__ = [
    "METHODS",
    "EnsembleResult",
    "GreedyRecipe",
    "MeanRecipe",
    "Member",
    "Pipeline",
    "Recipe",
    "StackRecipe",
    "align_to",
    "attach",
    "build_ensemble",
    "collect_members",
    "ensemble_dir",
    "greedy_counts",
    "honest_scores",
    "keys_sha256",
    "load_ensemble",
    "load_ensemble_devel",
    "load_lean",
    "make_recipe",
    "prediction_files",
    "read_manifest",
    "stream_test",
]
