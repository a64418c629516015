import numpy as np
import pytest

from llmcf.train.metrics import auc, gauc, logloss, mean_std


def test_auc_hand_computed():
    # positives 0.8, 0.4; negatives 0.5, 0.1 -> pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.5, 0.1]) == pytest.approx(0.75)


def test_logloss_hand_computed():
    y = np.array([1, 0])
    p = np.array([0.9, 0.2])
    expected = -(np.log(0.9) + np.log(0.8)) / 2
    assert logloss(y, p) == pytest.approx(expected)
    assert np.isfinite(logloss([1], [0.0]))  # clipped, not inf


def test_gauc_weights_users_by_rows_and_skips_single_label_users():
    users = np.array([1, 1, 1, 2, 2, 3])
    labels = np.array([1, 0, 0, 1, 0, 1])
    probs = np.array([0.9, 0.1, 0.95, 0.2, 0.7, 0.5])
    # user 1: pos 0.9 vs negs 0.1, 0.95 -> 1/2 ; user 2: 0.2 vs 0.7 -> 0 ; user 3 skipped (one label)
    assert gauc(users, labels, probs) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


def test_mean_std_uses_sample_std():
    ms = mean_std([1.0, 2.0, 3.0])
    assert ms["mean"] == pytest.approx(2.0)
    assert ms["std"] == pytest.approx(1.0)
    assert mean_std([0.5])["std"] == 0.0
