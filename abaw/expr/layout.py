"""Names fixed by the Aff-Wild2 Expr challenge layout (docs/data-expr.md), shared by synth and loader."""

from __future__ import annotations

from abaw.expr import CLASSES, NUM_CLASSES  # noqa: F401  (index order fixed by the challenge)

HEADER = ",".join(CLASSES)
# ABAW3-5 name first; ABAW6 renamed the folder.
ANNOTATION_DIRS: tuple[str, ...] = ("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge")
SPLIT_DIRS: dict[str, str] = {"train": "Train_Set", "devel": "Validation_Set"}
FEATURES_DIR = "features"
TEST_VIDEO_LIST = "Expression_Classification_Challenge_test_set_release.txt"
TEST_FRAME_LIST = "CVPR_5th_ABAW_EXPR_test_set_sample.txt"
TEST_FRAME_HEADER = "image_location," + HEADER
# Where synth hides what a loader must never see (test labels); loaders do not look here.
ORACLE_DIR = ".oracle"
# A feature file may have this many trailing rows beyond its annotation (the video's last
# frames are counted differently by decoders); more means the files do not belong together.
EXTRA_ROWS_TOLERANCE = 5
