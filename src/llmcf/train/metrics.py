"""Ranking metrics for CTR: AUC, LogLoss and user-grouped AUC (gAUC)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

EPS = 1e-7


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, probs))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gauc(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> float:
    """AUC per user, weighted by the user's row count, over users who have both labels."""
    users = np.asarray(users)
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    order = np.argsort(users, kind="stable")
    u, y, p = users[order], labels[order], probs[order]
    bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
    total, weight = 0.0, 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        yy = y[a:b]
        if yy.min() == yy.max():
            continue
        total += roc_auc_score(yy, p[a:b]) * (b - a)
        weight += b - a
    return float(total / weight) if weight else float("nan")


def ctr_metrics(labels, probs, users=None) -> dict[str, float]:
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}
    if users is not None:
        out["gauc"] = gauc(users, labels, probs)
    return out


def mean_std(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}
