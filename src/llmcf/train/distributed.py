"""One training code path for one process or N (``torchrun``): rank, world size, DDP wrapping, row sharding.

``torchrun --nproc-per-node N`` (or ``llmcf train --nproc N``, which launches it) sets RANK / WORLD_SIZE /
LOCAL_RANK; ``init_from_env`` then joins the process group with gloo, or with what ``LLMCF_DIST_BACKEND`` names
(``nccl`` once models train on GPU: the trainer places every tensor on the CPU today, and nccl reduces CUDA tensors
only, so gloo is the default and the one tested).
Without those variables everything here is the identity: world 1, rank 0, no process group, no wrapper.

Sharding rules (the same for every rank, so no rank waits on another at a collective):
- train rows: every rank draws the same seeded permutation, pads it by wrapping to a multiple of the world size and
  takes every ``world``-th row from its rank (``torch.utils.data.DistributedSampler``'s partition, applied to the
  trainer's own permutation so that one process sees exactly the rows it saw before DDP existed); the per-rank batch
  is ``batch_size / world`` so the global batch, and with DDP's gradient averaging the update, stay the same;
- evaluation rows: contiguous chunks, one per rank; the per-row predictions are gathered in order on every rank, so
  every rank computes the same full-split metrics (AUC does not decompose over shards) and takes the same
  early-stopping decision;
- files: rank 0 writes, the others wait at a barrier.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel over ``model`` (the model itself for one process). A model with an ICT module may
        leave parameters out of a step's graph (the no-CoT token on a batch whose examples all have CoTs, the CoT
        projector of the no_cot variant), so DDP is told to look for unused ones there; a plain backbone skips that
        extra pass over the autograd graph."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, find_unused_parameters=getattr(model, "ict", None) is not None)

    def train_rows(self, order: np.ndarray) -> np.ndarray:
        """This rank's share of an epoch's permutation (DistributedSampler's pad-and-stride partition)."""
        if not self.active:
            return order
        pad = (-len(order)) % self.world
        if pad:
            order = np.concatenate([order, order[:pad]])
        return order[self.rank::self.world]

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.world:
            from llmcf.config import ConfigError

            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by the number of processes "
                              f"({self.world}): the global batch is split evenly across ranks")
        return batch_size // self.world

    def eval_chunk(self, n: int) -> slice:
        """Rows [a, b) of an n-row evaluation split predicted by this rank."""
        step = -(-n // self.world)
        return slice(min(n, self.rank * step), min(n, (self.rank + 1) * step))

    def gather_rows(self, part: np.ndarray, n: int) -> np.ndarray:
        """The per-row arrays of every rank's ``eval_chunk``, concatenated in row order (on every rank)."""
        if not self.active:
            return part
        step = -(-n // self.world)
        buf = torch.zeros((step, *part.shape[1:]), dtype=torch.from_numpy(part[:0]).dtype)
        buf[:len(part)] = torch.from_numpy(np.ascontiguousarray(part))
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return torch.cat(parts)[:n].numpy()

    def same_everywhere(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on every rank (e.g. "this seed is cached")."""
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())


def current() -> Dist:
    """The process group this process is in (world 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def init_from_env() -> Dist:
    """Join the process group torchrun described in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return current()
    if not dist.is_initialized():
        backend = os.environ.get("LLMCF_DIST_BACKEND") or "gloo"
        dist.init_process_group(backend=backend)
        import atexit

        atexit.register(shutdown)
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
