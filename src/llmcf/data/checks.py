"""Build-time checks of `llmcf data build`: everything a later stage would trip over is refused here, before any file
of the run directory is touched, with a message naming the file, line or field and what was expected.

- ``check_out_dir``: ``--out`` must be (or become) a writable directory, not a file.
- ``check_duplicates``: exact duplicate interactions (dropped by the loader) are an error under
  ``data.on_duplicate: error``; with ``drop`` (default) their count goes to stats.json.
- ``check_splits``: train, valid and test must each be non-empty and hold both labels (AUC, LogLoss and early stopping
  need both classes); an empty valid/test split is explained by the users with too few rows for the split rule.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import DataConfig
from llmcf.data.schema import SPLITS, RawDataset
from llmcf.errors import DataError

DUPLICATE_POLICIES = ("drop", "error")
MIN_ROWS_PER_USER = 3
"""A user enters valid/test under the loo and ratio splits only with at least this many positions."""


def check_out_dir(run_dir: Path, flag: str = "--out") -> None:
    """Raise unless ``run_dir`` (and its data/ folder) is an existing directory or can be created as one."""
    run_dir = Path(run_dir)
    for p in (run_dir, run_dir / "data"):
        if p.exists() and not p.is_dir():
            raise DataError(f"{flag} names an existing file; expected a run directory (new or existing)",
                            file=str(p))
    anc = run_dir
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise DataError(f"{flag} lies under a file; expected a run directory path", file=str(anc))
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        raise DataError(f"not writable; {flag} needs a folder this user can write", file=str(anc))


def check_duplicates(ds: RawDataset, cfg: DataConfig) -> None:
    if cfg.on_duplicate not in DUPLICATE_POLICIES:
        raise DataError(f"unknown policy {cfg.on_duplicate!r}; expected drop | error", field="data.on_duplicate")
    d = ds.duplicates
    if d is not None and cfg.on_duplicate == "error":
        raise DataError(f"exact duplicate interaction (repeats line {d.first_line}; {d.count} duplicate rows in all); "
                        "expected each interaction once (or data.on_duplicate: drop)", file=d.file, line=d.line)


def _too_few(samples: pd.DataFrame) -> tuple[int, int]:
    """(users with fewer than MIN_ROWS_PER_USER positions, all users)."""
    n = samples.groupby("user_id", sort=False)["pos"].max() + 1
    return int((n < MIN_ROWS_PER_USER).sum()), int(len(n))


def check_splits(parts: dict[str, pd.DataFrame], samples: pd.DataFrame, cfg: DataConfig, ds: RawDataset) -> None:
    """Raise when a split is empty or single-class (before anything is written)."""
    summary = {s: (len(df), int(df["label"].min()) if len(df) else 0, int(df["label"].max()) if len(df) else 0)
               for s, df in parts.items()}
    check_split_summary(summary, lambda: _too_few(samples), cfg, ds)


def check_split_summary(summary: dict[str, tuple[int, int, int]], too_few, cfg: DataConfig, ds: RawDataset) -> None:
    """``check_splits`` from (rows, min label, max label) per split; ``too_few()`` -> (users with fewer than
    MIN_ROWS_PER_USER positions, all users), called only for the message of an empty split."""
    where = ds.source or ds.name
    for s in SPLITS:
        if summary[s][0] == 0:
            if s == "train":
                why = "no interaction falls before the first cut point"
                fix = "a larger train ratio in data.split_ratio"
            elif cfg.split == "time":
                why = "no interaction falls in its time range"
                fix = "other data.split_ratio values"
            elif cfg.split == "ratio" and _ratio_zero(cfg, s):
                why = "its ratio in data.split_ratio is 0"
                fix = "a ratio > 0 for it"
            else:
                few, users = too_few()
                why = (f"{few} of {users} users have fewer than {MIN_ROWS_PER_USER} rows, and a user needs at least "
                       f"{MIN_ROWS_PER_USER} (train, valid, test) under data.split: {cfg.split}")
                fix = f"users with >= {MIN_ROWS_PER_USER} interactions (or data.split: time)"
            raise DataError(f"the {s} split is empty: {why}; expected {fix}", file=where, field="data.split")
    for s in SPLITS:
        rows, lo, hi = summary[s]
        if lo == hi:
            hint = {"rating": f"data.rating_threshold ({cfg.rating_threshold}) against the ratings",
                    "column": "the label column"}.get(_rule(ds, cfg), "data.label")
            raise DataError(f"every one of the {rows} {s} rows has label {lo}; expected both 0 and 1 (AUC and "
                            f"early stopping need both; check {hint})", file=where,
                            field="rating" if _rule(ds, cfg) == "rating" else "label")


def _ratio_zero(cfg: DataConfig, split: str) -> bool:
    r = np.asarray(cfg.split_ratio, dtype=np.float64)
    return r.shape == (3,) and r[SPLITS.index(split)] == 0


def _rule(ds: RawDataset, cfg: DataConfig) -> str:
    from llmcf.data.samples import resolve_label_rule

    return resolve_label_rule(ds, cfg)
