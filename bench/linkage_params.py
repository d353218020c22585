"""The linkage benchmark's fixed parameters and targets, shared by its modules (bench/linkage.py
describes the benchmark)."""

from __future__ import annotations

from bench.common import OUT

SEED = 20250301
ROOT = OUT / "linkage"
THRESHOLD = 0.9
TARGET_F1 = 0.985           # cross-source, at every size (issue 15)
TARGET_WITHIN_F1 = 0.96      # within-source duplicates, at every size (issue 15)
TARGET_FEBRL = {"febrl4": ("cross_source", 0.995), "febrl3": ("within_source", 0.99)}
TARGET_RATIO = 1.2
TARGET_NEW_CHANGED = 0.001   # fraction of existing records whose person_id changes
HOLDOUT = 0.01
