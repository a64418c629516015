"""Index choice by bank size (retrieval.index: auto) and memory-mapped loading for serving."""
from __future__ import annotations

import numpy as np

from llmcf.config import Config, RetrievalConfig
from llmcf.fingerprint import section_payload
from llmcf.retrieval.index import build_index, kind, load_index, save_index, search


def _keys(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_is_exact_up_to_the_threshold_and_ivf_above_it():
    keys = _keys(800)
    small = build_index(keys, RetrievalConfig(index="auto", auto_exact_max=800))
    assert kind(small) == "IndexFlatIP"
    flat = build_index(keys, RetrievalConfig(index="flat"))
    q = _keys(20, seed=1)
    assert np.array_equal(search(small, q, 5, RetrievalConfig())[1], search(flat, q, 5, RetrievalConfig())[1])
    big = build_index(keys, RetrievalConfig(index="auto", auto_exact_max=799, nlist=8, nprobe=8))
    assert kind(big) == "IndexIVFFlat" and big.ntotal == 800
    # all lists probed: IVF returns the exact neighbours
    cfg = RetrievalConfig(nlist=8, nprobe=8)
    assert np.array_equal(search(big, q, 5, cfg)[1], search(flat, q, 5, cfg)[1])


def test_the_auto_default_keeps_the_hashes_of_runs_retrieved_with_flat():
    a, b, c = Config(), Config(), Config()
    b.retrieval.index = "flat"
    c.retrieval.index = "hnsw"
    assert a.retrieval.index == "auto"
    assert section_payload(a, "retrieval") == section_payload(b, "retrieval") != section_payload(c, "retrieval")


def test_a_memory_mapped_index_answers_like_the_loaded_one(tmp_path):
    keys, q = _keys(3000, 32), _keys(10, 32, seed=2)
    for cfg in (RetrievalConfig(index="flat"), RetrievalConfig(index="ivf", nlist=16, nprobe=4),
                RetrievalConfig(index="hnsw", hnsw_m=8)):
        path = tmp_path / f"{cfg.index}.faiss"
        save_index(build_index(keys, cfg), path)
        plain, mapped = load_index(path), load_index(path, mmap=True)
        s1, i1 = search(plain, q, 7, cfg)
        s2, i2 = search(mapped, q, 7, cfg)
        assert np.array_equal(i1, i2) and np.allclose(s1, s2), cfg.index
        if cfg.index == "ivf":  # the inverted lists are mapped from the file, not copied
            import faiss

            lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped).invlists)
            assert isinstance(lists, faiss.OnDiskInvertedLists)
