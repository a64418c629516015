"""gAUC's vectorised rank form must equal per-user sklearn AUC weighted by rows (ties, one-label users, strings)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from llmcf.train.metrics import gauc


def _loop_gauc(users, labels, probs) -> float:
    total, weight = 0.0, 0
    for u in np.unique(users):
        m = users == u
        if labels[m].min() != labels[m].max():
            total += roc_auc_score(labels[m], probs[m]) * m.sum()
            weight += m.sum()
    return total / weight if weight else float("nan")


@pytest.mark.parametrize("seed", range(5))
def test_gauc_equals_the_per_user_sklearn_loop_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 600
    users = rng.integers(0, 40, n)
    labels = rng.integers(0, 2, n).astype(np.float32)
    probs = np.round(rng.random(n), 1).astype(np.float32)  # 11 distinct values: ties inside users
    assert gauc(users, labels, probs) == pytest.approx(_loop_gauc(users, labels, probs), abs=1e-12)


def test_gauc_string_users_perfect_and_inverted_and_degenerate():
    users = np.array(["a", "a", "b", "b", "b", "c"], dtype=object)
    labels = np.array([1, 0, 0, 1, 0, 1])
    probs = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.5])  # a perfect (2 rows), b inverted (3 rows), c one label
    assert gauc(users, labels, probs) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)
    assert math.isnan(gauc(np.array([1, 1]), np.array([1, 1]), np.array([0.2, 0.4])))
    assert gauc(np.array([7, 7]), np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts one half
