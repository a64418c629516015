"""``IdIndex``: the position of each string id in a fixed list, -1 for an unknown id.

A query of a few ids (the online path: one request's candidates and history) goes through a Python dict; a large one
(offline: every row of a split) through pandas' vectorised hash table. The answers are the same; each path is used
where it is faster (pandas costs ~0.2 ms per call whatever the size, a dict lookup ~50 ns per id).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SMALL = 512
"""Queries of at most this many ids use the dict."""


class IdIndex:
    def __init__(self, ids: Sequence[str]):
        self.index = pd.Index([str(i) for i in ids])
        self._dict: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def is_unique(self) -> bool:
        return bool(self.index.is_unique)

    def positions(self, values: Sequence[str]) -> np.ndarray:
        """int64 [N]: the position of each value (strings), -1 where it is not in the list."""
        n = len(values)
        if n == 0:
            return np.zeros(0, np.int64)
        if n <= SMALL:
            if self._dict is None:
                self._dict = {v: i for i, v in enumerate(self.index.tolist())}
            get = self._dict.get
            return np.fromiter((get(v, -1) for v in values), dtype=np.int64, count=n)
        return self.index.get_indexer(np.asarray(values, dtype=object)).astype(np.int64)
