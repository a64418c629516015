"""Full-ranking metrics for next-item retrieval: Recall@K and NDCG@K over every item of the vocabulary.

Protocol: one held-out target per row; its 0-based rank = the number of OTHER rankable items scoring at least as
high (ties count against the model). Padding (0) and OOV (1) are never ranked; a target that cannot be ranked
(OOV, or removed with the history) is a miss. History items stay in the ranking unless ``remove_history``.
Recall@K = mean[rank < K]; NDCG@K = mean[rank < K] / log2(rank + 2) (a single relevant item, so IDCG = 1).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from llmcf.data.schema import OOV

MISS = np.iinfo(np.int64).max


def target_ranks(scores: torch.Tensor, target: torch.Tensor, hist: torch.Tensor | None = None,
                 remove_history: bool = False) -> np.ndarray:
    """scores [B, n_items] (column = item id), target [B] -> 0-based ranks int64 [B] (MISS when unrankable)."""
    scores = scores.clone()
    scores[:, : OOV + 1] = -torch.inf
    if remove_history:
        if hist is None:
            raise ValueError("remove_history needs the history ids")
        scores.scatter_(1, hist, -torch.inf)
        scores[:, : OOV + 1] = -torch.inf
    rows = torch.arange(len(target), device=scores.device)
    t = scores[rows, target.clamp(0, scores.shape[1] - 1)]
    ahead = (scores >= t[:, None]).sum(1) - 1  # others at least as high
    ok = (target > OOV) & (target < scores.shape[1]) & torch.isfinite(t)
    return torch.where(ok, ahead, torch.full_like(ahead, MISS)).cpu().numpy().astype(np.int64)


def ranking_metrics(ranks: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    """recall@K and ndcg@K for each K, plus mrr (all means over rows)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float] = {}
    if len(ranks) == 0:
        return {**{f"recall@{k}": math.nan for k in ks}, **{f"ndcg@{k}": math.nan for k in ks}, "mrr": math.nan}
    hit_gain = np.where(ranks == MISS, 0.0, 1.0 / np.log2(np.minimum(ranks, 2**62).astype(np.float64) + 2.0))
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, hit_gain, 0.0).mean())
    out["mrr"] = float(np.where(ranks == MISS, 0.0, 1.0 / (np.minimum(ranks, 2**62).astype(np.float64) + 1)).mean())
    return out


def protocol_line(remove_history: bool, n_items: int, ks=(5, 10, 20)) -> str:
    hist = "history items removed" if remove_history else "history items kept (paper protocol)"
    return (f"full ranking over {n_items} items, {hist}, ties count against the model, OOV/pad never ranked, "
            f"Recall/NDCG@{{{','.join(str(k) for k in ks)}}}")
