"""Train / valid / test assignment of CTR rows, and the protocol dict that states how it was done.

Splits work on positions, so a sampled negative (same user and pos as its positive) always follows its positive.

- ``loo``: per user, the last position → test, the second-to-last → valid, the rest → train.
  Users with fewer than 3 positions go entirely to train.
- ``ratio`` (``split_ratio`` = [train, valid, test], normalised to sum 1): per user, chronologically by position.
  Rounding rule: n_valid = floor(n·r_valid), n_test = floor(n·r_test) (with a 1e-9 tolerance against float error);
  when n >= 3, a ratio > 0 that rounded to 0 is raised to 1; then test (first) and valid are lowered until at least
  one train position remains; train gets the rest. Train positions come first, then valid, then test.
  Users with fewer than 3 positions go entirely to train.
- ``time``: global timestamp cut points q1, q2 = the ``lower`` quantiles of the interaction timestamps at r_train and
  r_train + r_valid; train: t <= q1, valid: q1 < t <= q2, test: t > q2. Needs timestamps comparable across users
  (``RawDataset.real_time``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmcf.config import DataConfig
from llmcf.data.schema import SPLITS
from llmcf.errors import DataError

SPLIT_METHODS = ("loo", "ratio", "time")


def _ratios(cfg: DataConfig) -> np.ndarray:
    r = np.asarray(cfg.split_ratio, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r[0] <= 0:
        raise DataError(f"expected three non-negative ratios [train, valid, test] with train > 0, "
                        f"got {cfg.split_ratio}", field="data.split_ratio")
    return r / r.sum()


def ratio_counts(n: np.ndarray, ratios) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_train, n_valid, n_test) per user of ``n`` positions, by the rounding rule in the module docstring."""
    n = np.asarray(n, dtype=np.int64)
    r = np.asarray(ratios, dtype=np.float64)
    r = r / r.sum()
    big = n >= 3
    nv = np.floor(n * r[1] + 1e-9).astype(np.int64)
    nt = np.floor(n * r[2] + 1e-9).astype(np.int64)
    if r[1] > 0:
        nv = np.where(big, np.maximum(nv, 1), nv)
    if r[2] > 0:
        nt = np.where(big, np.maximum(nt, 1), nt)
    excess = np.maximum(nv + nt - (n - 1), 0)
    cut = np.minimum(excess, nt)
    nt, excess = nt - cut, excess - cut
    nv = nv - np.minimum(excess, nv)
    nv = np.where(big, nv, 0)
    nt = np.where(big, nt, 0)
    return n - nv - nt, nv, nt


def assign_splits(samples: pd.DataFrame, cfg: DataConfig, *, real_time: bool = True, label_rule: str = "",
                  dataset: str = "") -> tuple[pd.Series, dict]:
    """(split name per row as a Series aligned with ``samples``, protocol dict) for ``cfg.split``."""
    method = check_method(cfg, real_time, dataset)
    pos = samples["pos"].to_numpy(dtype=np.int64)
    protocol: dict = {"split": method}
    code = np.zeros(len(samples), dtype=np.int8)  # 0 train, 1 valid, 2 test
    if method in ("loo", "ratio"):
        n = samples.groupby("user_id", sort=False)["pos"].transform("max").to_numpy(dtype=np.int64) + 1
        if method == "loo":
            big = n >= 3
            code[big & (pos == n - 2)] = 1
            code[big & (pos == n - 1)] = 2
            protocol["rule"] = LOO_RULE
        else:
            r = _ratios(cfg)
            ntr, nv, _ = ratio_counts(n, r)
            code[pos >= ntr] = 1
            code[pos >= ntr + nv] = 2
            protocol["ratios"] = [float(x) for x in r]
            protocol["rule"] = RATIO_RULE
    else:
        r = _ratios(cfg)
        ts = samples["timestamp"].to_numpy(dtype=np.float64)
        first = ~samples.duplicated(["user_id", "pos"]).to_numpy()
        q1, q2 = time_cuts(ts[first], r)
        code[ts > q1] = 1
        code[ts > q2] = 2
        protocol.update(ratios=[float(x) for x in r], cut_timestamps=[q1, q2],
                        rule=TIME_RULE)
    split = pd.Series(pd.Categorical.from_codes(code, categories=list(SPLITS)), index=samples.index, name="split")
    return split, finish_protocol(protocol, cfg, label_rule)


def finish_protocol(protocol: dict, cfg: DataConfig, label_rule: str) -> dict:
    """The label, negatives and history parts of the split protocol (shared by every data engine)."""
    protocol.update(label=label_rule, rating_threshold=cfg.rating_threshold if label_rule == "rating" else None,
                    negatives=cfg.num_negatives if label_rule == "implicit" else 0,
                    negative_sampling=("uniform over catalogue items the user never interacted with, "
                                       "negatives follow their positive's split") if label_rule == "implicit" else None,
                    history_len=cfg.history_len,
                    history_rule="last history_len items strictly before the target position, oldest first, "
                                 "whatever their label",
                    max_users=cfg.max_users, seed=cfg.seed)
    return protocol


LOO_RULE = ("per user: last position -> test, second-to-last -> valid, rest -> train; "
            "users with < 3 positions: all train")
RATIO_RULE = ("per user, chronological by position: n_valid = floor(n*r_valid), "
              "n_test = floor(n*r_test), each raised to 1 when its ratio > 0 and n >= 3, lowered "
              "(test first) to keep >= 1 train position; users with < 3 positions: all train")
TIME_RULE = "global: train t <= q1 < valid t <= q2 < test (lower quantiles of interaction times)"


def check_method(cfg: DataConfig, real_time: bool, dataset: str = "") -> str:
    """``cfg.split``, refused when unknown or (time) when timestamps are per-user orders."""
    if cfg.split not in SPLIT_METHODS:
        raise DataError(f"unknown split {cfg.split!r}; expected loo | ratio | time", field="data.split")
    if cfg.split == "time" and not real_time:
        raise DataError("a global time split needs timestamps comparable across users, but this dataset's "
                        "timestamps are per-user orders (real_time=False); use data.split: loo or ratio",
                        file=dataset or None, field="data.split")
    return cfg.split


def time_cuts(first_ts: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """(q1, q2): the lower quantiles at r_train and r_train + r_valid of the interaction times (one per position)."""
    q1 = float(np.quantile(first_ts, r[0], method="lower"))
    q2 = float(np.quantile(first_ts, min(r[0] + r[1], 1.0), method="lower"))
    return q1, q2
