"""``EnsembleScorer``: the served model of a partitioned run (``partition.shards > 1``): the S shard sub-models of one
tag, each with its own vocabulary and its own shard's bank, aggregated by the mean of their logits (uniform SISA
aggregation; no learned weights, so nothing is trained on more than one shard).

``forget_now(users)`` blocks the users' bank rows in every loaded shard's retriever at once (one array assignment
per shard, so a request sees the old or the new mask, never a mix): serving stops returning their in-context examples
before the retrained sub-models are swapped in by a reload.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from llmcf.serve.scorer import Scorer, ScoreResult


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


class EnsembleScorer:
    """S ``Scorer``s (``shards/<k>/models/<tag>/seed_<seed>``) averaged in logit space."""

    def __init__(self, run_dir: str | Path, model_tag: str, seed: int | None = None, device: str = "cpu"):
        from llmcf.data.partition import read_partition, shard_dir

        self.run_dir = Path(run_dir)
        part = read_partition(self.run_dir)
        self.shards = int(part["shards"])
        self.tag, self.requested_seed = model_tag, seed
        self.members = [Scorer(shard_dir(self.run_dir, k), model_tag, seed, device) for k in range(self.shards)]
        first = self.members[0]
        self.cfg, self.model_name, self.ict, self.hist_len = first.cfg, first.model_name, first.ict, first.hist_len
        self.seed, self.warnings, self.loaded_at = first.seed, [w for m in self.members for w in m.warnings], \
            first.loaded_at
        self.version = f"{model_tag} x {self.shards} shards (mean logit), seed {first.seed}"
        self.loaded_fingerprint = self.fingerprint()

    @classmethod
    def load(cls, run_dir, model_tag: str, seed: int | None = None) -> "EnsembleScorer":
        return cls(run_dir, model_tag, seed)

    def reload(self) -> "EnsembleScorer":
        return type(self)(self.run_dir, self.tag, self.requested_seed)

    def watched_files(self) -> list[Path]:
        return [f for m in self.members for f in m.watched_files()]

    def fingerprint(self) -> str:
        from llmcf.fingerprint import files_fingerprint

        return files_fingerprint(self.watched_files())

    @property
    def bank_frame(self):
        import pandas as pd

        return pd.concat([m.bank_frame for m in self.members], ignore_index=True) if self.ict else None

    @property
    def retriever(self):
        return self.members[0].retriever

    def score_rows(self, users: Sequence[str | None], histories: Sequence[Sequence[str]], items: Sequence[str],
                   pos=None, logits: bool = False) -> np.ndarray:
        z = np.mean([m.score_rows(users, histories, items, pos, logits=True) for m in self.members], axis=0)
        return z.astype(np.float32) if logits else _sigmoid(z)

    def score(self, candidates: Sequence[str], history: Sequence[str] = (), user: str | None = None,
              pos: int | None = None) -> ScoreResult:
        """Mean-logit scores; the other fields (known ids, notes, in-context rows) are those of the user's own
        shard's sub-model (``partition.shard_of``), the one that saw the user."""
        from llmcf.data.partition import shard_of

        n = len(candidates)
        users = [user] * n
        hists = [list(history)] * n
        scores = self.score_rows(users, hists, [str(c) for c in candidates],
                                 None if pos is None else np.full(n, int(pos)))
        own = self.members[0 if user is None else int(shard_of([str(user)], self.shards,
                                                                self.cfg.partition.seed)[0])]
        res = own.score(candidates, history, user, pos)
        res.scores = scores
        return res

    def explain(self, candidate: str, history: Sequence[str] = (), user: str | None = None, pos: int | None = None):
        from llmcf.data.partition import shard_of

        k = 0 if user is None else int(shard_of([str(user)], self.shards, self.cfg.partition.seed)[0])
        return self.members[k].explain(candidate, history, user, pos)

    def info(self) -> dict:
        out = self.members[0].info()
        out["partition"] = {"shards": self.shards, "aggregate": "mean_logit"}
        return out

    def forget_now(self, users: Sequence[str]) -> int:
        """Block the users' bank rows in every shard's retriever; returns the number of rows blocked."""
        return sum(m.retriever.selector.block_users(users) for m in self.members if m.ict)


def load_scorer(run_dir, model_tag: str, seed: int | None = None, device: str = "cpu"):
    """A ``Scorer`` for an ordinary run, an ``EnsembleScorer`` for a partitioned one."""
    if (Path(run_dir) / "partition.json").exists():
        return EnsembleScorer(run_dir, model_tag, seed, device)
    return Scorer(run_dir, model_tag, seed, device)
