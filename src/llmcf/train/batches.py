"""Mini-batches of encoded samples as dicts of tensors, with in-context examples gathered on the fly."""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch

from llmcf.train.distributed import Dist, current


class ContextSource(Protocol):
    def gather(self, ctx_idx: np.ndarray) -> dict[str, torch.Tensor]: ...


class ArrayBatches:
    """Iterate over rows of equally long numpy arrays.

    arrays: name -> array [N, ...] (the encoded batch contract of llmcf.data.schema).
    ctx: optional (ctx_idx [N, K] int64 with -1 for missing, source) — the source turns bank indices into ctx_* tensors.
    dist: the process group (``llmcf.train.distributed``); with several processes a shuffled iteration yields this
    rank's share of each epoch's permutation, an ordered one this rank's contiguous chunk of rows (``rows``).
    """

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool = False, seed: int = 0,
                 ctx: tuple[np.ndarray, ContextSource] | None = None, max_batches: int | None = None,
                 dist: Dist | None = None):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        self.n = lengths.pop()
        if ctx is not None and len(ctx[0]) != self.n:
            raise ValueError(f"in-context ids have {len(ctx[0])} rows, samples have {self.n}")
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.ctx = ctx
        self.max_batches = max_batches
        self._gen = np.random.default_rng(seed)
        self.dist = dist or Dist()

    @property
    def rows(self) -> int:
        """Rows this process iterates over per pass (all of them for one process)."""
        if not self.dist.active:
            return self.n
        if self.shuffle:
            return -(-self.n // self.dist.world)
        c = self.dist.eval_chunk(self.n)
        return c.stop - c.start

    def __len__(self) -> int:
        n = (self.rows + self.batch_size - 1) // self.batch_size
        return min(n, self.max_batches) if self.max_batches else n

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.shuffle:
            order = self.dist.train_rows(self._gen.permutation(self.n))
        else:
            c = self.dist.eval_chunk(self.n) if self.dist.active else slice(0, self.n)
            order = np.arange(c.start, c.stop)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            tidx = torch.from_numpy(idx)
            batch = {k: v[tidx] for k, v in self.arrays.items()}
            if self.ctx is not None:
                ctx_idx, source = self.ctx
                batch.update(source.gather(ctx_idx[idx]))
            yield batch


def make_batches(arrays: dict[str, np.ndarray], train_cfg, seed: int, train: bool,
                 ctx: tuple[np.ndarray, ContextSource] | None = None) -> ArrayBatches:
    """The batches of one split for either task: shuffled ``train_cfg.batch_size`` rows (at most
    ``max_steps_per_epoch`` batches) when training, ``eval_batch_size`` rows in order otherwise. Under torchrun each
    process gets its share (``llmcf.train.distributed``): ``batch_size / world`` rows per step, the same global batch."""
    d = current()
    bs = d.per_rank_batch(train_cfg.batch_size) if train else train_cfg.eval_batch_size
    return ArrayBatches(arrays, bs, shuffle=train, seed=seed, ctx=ctx,
                        max_batches=train_cfg.max_steps_per_epoch if train else None, dist=d)
