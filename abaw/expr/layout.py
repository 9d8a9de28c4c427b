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
# Every edition's names of the two test lists (docs/data-expr.md), looked for in the data
# root, then in its subfolders whose name contains "test" (`test_set/`, `test_set_examples/`),
# then in the annotation folder. The first names are what `abaw synth` writes.
TEST_FRAME_LISTS: tuple[str, ...] = (
    TEST_FRAME_LIST,  # ABAW5
    "CVPR_5th_ABAW_EXPR_test_set_sample.csv",  # ABAW5, a .csv spelling some teams read
    "CVPR_6th_ABAW_Expr_test_set_example.txt",  # ABAW6 (under test_set_examples/)
)
TEST_VIDEO_LISTS: tuple[str, ...] = (
    TEST_VIDEO_LIST,  # ABAW3-5
    "Expression_Recognition_Challenge_test_set_release.txt",  # ABAW6
    "expr_test_set_release.txt",  # some teams' copies
)
# A video's features may end this much before its annotation before the loader warns about
# that one video (the split-level share of filled frames alone hides one broken file).
SHORT_FEATURES_FRAMES = 30
SHORT_FEATURES_FRACTION = 0.2
# Where synth hides what a loader must never see (test labels); loaders do not look here.
ORACLE_DIR = ".oracle"
# A feature file may have this many trailing rows beyond its annotation (the video's last
# frames are counted differently by decoders); more means the files do not belong together.
EXTRA_ROWS_TOLERANCE = 5
