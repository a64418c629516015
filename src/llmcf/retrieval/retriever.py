"""``Retriever``: online retrieval over a run directory's bank and indexes (what ``llmcf serve`` and the sequential
task use per query). Same keys (``bank.query_keys``), selection and order as the offline ``llmcf retrieve``.

Item ids absent from ``embed/item_ids.json`` (new items at serving time) are embedded as zero vectors: they add
nothing to a history mean and give a 0 target similarity. A user of None (unknown user) has no same-user rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from llmcf.config import RetrievalConfig
from llmcf.retrieval.bank import CoTBank, ItemVectors, query_keys
from llmcf.retrieval.index import load_index
from llmcf.retrieval.select import Selector
from llmcf.rundir import INDEX_FILES, RunDir


class Retriever:
    def __init__(self, bank: CoTBank, items: ItemVectors, indexes: dict[int, object], cfg: RetrievalConfig):
        self.bank, self.items, self.cfg = bank, items, cfg
        self.selector = Selector(bank.frame["user_id"].tolist(), bank.frame["pos"].to_numpy(), bank.labels,
                                 indexes, cfg)

    @classmethod
    def load(cls, run_dir: Path, cfg: RetrievalConfig | None = None) -> "Retriever":
        """Load what ``llmcf retrieve`` wrote (indexes memory-mapped); the retrieval config defaults to the one recorded in meta.json
        (index-building fields must match the saved indexes; search fields such as k, nprobe may differ)."""
        run = RunDir(run_dir)
        meta = run.read_json(run.need(run.retrieval_meta, "retrieve"))
        if cfg is None:
            saved = meta["config"]
            cfg = RetrievalConfig(**{k: v for k, v in saved.items() if k in RetrievalConfig.__dataclass_fields__})
        indexes = {lab: load_index(run.retrieval / name, mmap=True) for lab, name in INDEX_FILES.items()}
        return cls(CoTBank.load(run.retrieval), ItemVectors.load(run.root), indexes, cfg)

    def keys(self, histories: Sequence[Sequence[str]], targets: Sequence[str | None]) -> np.ndarray:
        return query_keys(self.items, histories, targets, self.cfg)

    def query(self, user_ids: Sequence[str | None], pos: np.ndarray, histories: Sequence[Sequence[str]],
              targets: Sequence[str | None], with_scores: bool = False):
        """[B, k] int64 bank rows (-1 = missing) for B requests; bank row i is ``self.bank.frame.iloc[i]``, its CoT
        embedding row is ``cot_row``. Same selection (and order) as the offline precomputation for the same input.
        ``with_scores``: (rows, retrieval scores [B, k] float32), as ``llmcf retrieve`` writes to ``<split>_sim.npy``."""
        pos = np.asarray(pos, dtype=np.int64).reshape(-1)
        return self.selector.select(self.keys(histories, targets), list(user_ids), pos,
                                    ["None" if t is None else str(t) for t in targets], with_scores=with_scores)

    def query_shared(self, user: str | None, history: Sequence[str], targets: Sequence[str],
                     pos: np.ndarray, with_scores: bool = False):
        """``query`` for one user and history with many targets (a request's candidates): the history mean is
        computed once. Same rows (and scores) as ``query`` with the user and history repeated."""
        targets = [str(t) for t in targets]
        keys = query_keys(self.items, [history], targets, self.cfg, repeat=len(targets))
        return self.selector.select(keys, [user] * len(targets), np.asarray(pos, np.int64).reshape(-1), targets,
                                    with_scores=with_scores)

    def similarity(self, history: Sequence[str], target: str | None, rows: Sequence[int]) -> np.ndarray:
        """The retrieval score of bank ``rows`` for one query: the inner product of the query key and each row's
        key, both from the one key composer (so it matches what the index ranked by)."""
        q = query_keys(self.items, [history], [target], self.cfg)[0]
        return self.bank.keys(self.cfg, np.asarray(rows, np.int64)) @ q

    def describe(self) -> dict:
        """Bank size and selection settings (for /v1/info)."""
        labels = self.bank.labels
        return {"rows": len(self.bank), "positives": int((labels == 1).sum()), "negatives": int((labels == 0).sum()),
                "k": int(self.cfg.k), "balanced": self.cfg.balanced, "leakage": self.cfg.leakage,
                "index": self.cfg.index}
