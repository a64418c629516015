"""Inner-product FAISS indexes over bank keys: a registry of builders (auto | flat | ivf | hnsw), search, atomic
save, and load (memory-mapped for serving: several server processes share one copy of the vectors in the page cache).

Every builder takes the key matrix [n, d] (float32) and the RetrievalConfig and returns an index holding the n vectors
with ids 0..n-1 in row order. Small inputs degrade gracefully: IVF uses at most n/39 lists (FAISS's minimum training
points per list) and falls back to exact search below 2 lists; an empty bucket is an empty flat index.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from llmcf.config import RetrievalConfig
from llmcf.errors import DataError
from llmcf.io import atomic_path
from llmcf.registry import Registry

IndexBuilder = Callable[[np.ndarray, RetrievalConfig], faiss.Index]
INDEXES: Registry[IndexBuilder] = Registry("index")
MIN_POINTS_PER_LIST = 39


@INDEXES.register("flat")
def build_flat(keys: np.ndarray, cfg: RetrievalConfig) -> faiss.Index:
    """Exact inner product (IndexFlatIP)."""
    index = faiss.IndexFlatIP(keys.shape[1])
    if len(keys):
        index.add(keys)
    return index


@INDEXES.register("ivf")
def build_ivf(keys: np.ndarray, cfg: RetrievalConfig) -> faiss.Index:
    """IVF-Flat, inner product: ``nlist`` k-means lists (capped at n/39), ``nprobe`` lists searched."""
    n, d = keys.shape
    nlist = min(int(cfg.nlist), n // MIN_POINTS_PER_LIST)
    if nlist < 2:
        return build_flat(keys, cfg)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(cfg.seed)
    index.train(keys)
    index.add(keys)
    index.nprobe = min(int(cfg.nprobe), nlist)
    return index


@INDEXES.register("auto")
def build_auto(keys: np.ndarray, cfg: RetrievalConfig) -> faiss.Index:
    """Exact search up to ``auto_exact_max`` vectors (today's results unchanged), IVF above it (``nlist``,
    ``nprobe``): measured recall@K and queries/s of each in benchmarks/results/scaling.md."""
    return (build_flat if len(keys) <= int(cfg.auto_exact_max) else build_ivf)(keys, cfg)


@INDEXES.register("hnsw")
def build_hnsw(keys: np.ndarray, cfg: RetrievalConfig) -> faiss.Index:
    """HNSW-Flat, inner product, ``hnsw_m`` links per node; efConstruction / efSearch from the config."""
    if len(keys) == 0:
        return build_flat(keys, cfg)
    index = faiss.IndexHNSWFlat(keys.shape[1], int(cfg.hnsw_m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(cfg.hnsw_ef_construction)
    index.hnsw.efSearch = int(cfg.hnsw_ef_search)
    index.add(keys)
    return index


def build_index(keys: np.ndarray, cfg: RetrievalConfig) -> faiss.Index:
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    if keys.ndim != 2:
        raise DataError(f"index keys: expected a 2-d array, got shape {keys.shape}")
    return INDEXES.get(cfg.index)(keys, cfg)


def search(index: faiss.Index, queries: np.ndarray, k: int, cfg: RetrievalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, k] float32, ids [N, k] int64, -1 where the index has fewer results); k is capped at ntotal."""
    n = len(queries)
    k = max(1, min(int(k), int(index.ntotal)))
    if index.ntotal == 0 or n == 0:
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    hnsw = _as(index, faiss.IndexHNSW)
    if hnsw is not None:
        hnsw.hnsw.efSearch = max(int(cfg.hnsw_ef_search), k)
    ivf = _as(index, faiss.IndexIVF)
    if ivf is not None:
        ivf.nprobe = min(int(cfg.nprobe), int(ivf.nlist))
    scores, ids = index.search(queries, k)
    scores[ids < 0] = -np.inf
    return scores, ids


def _as(index: faiss.Index, cls):
    try:
        down = faiss.downcast_index(index)
    except RuntimeError:
        return None
    return down if isinstance(down, cls) else None


def kind(index: faiss.Index) -> str:
    return type(faiss.downcast_index(index)).__name__


def save_index(index: faiss.Index, path: Path) -> None:
    """Write atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def mmap_flags(path: Path) -> int:
    """FAISS read flags that map the vectors from the file instead of copying them into the heap: IVF inverted lists
    by IO_FLAG_MMAP (as OnDiskInvertedLists), flat and HNSW storage by IO_FLAG_MMAP_IFC. Which applies is read from
    the file's four-byte type code (``Iw..`` = an IVF index)."""
    with open(path, "rb") as f:
        code = f.read(4)
    return faiss.IO_FLAG_MMAP if code.startswith(b"Iw") else faiss.IO_FLAG_MMAP_IFC


def load_index(path: Path, mmap: bool = False) -> faiss.Index:
    """Read an index file; ``mmap``: memory-map its vectors (read-only use; the file is replaced by rename, never
    rewritten in place, so a mapped index stays valid while ``llmcf retrieve`` publishes a new one)."""
    path = Path(path)
    if not path.exists():
        raise DataError("index file missing: rerun `llmcf retrieve`", file=str(path))
    try:
        return faiss.read_index(str(path), mmap_flags(path) if mmap else 0)
    except RuntimeError as e:
        raise DataError(f"not a readable FAISS index: {e}", file=str(path)) from e
