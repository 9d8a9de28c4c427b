"""abaw: from ABAW challenge features to a tuned, ensembled, validated submission.

Two tracks share one data contract, one trainer, one tuner and one ensembler:
ERI (Hume-Reaction, 7 intensities) and Expr (Aff-Wild2, 8 per-frame classes).
"""

__version__ = "0.1.0"
