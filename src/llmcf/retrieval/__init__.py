"""In-context CoT bank, inner-product indexes and balanced, leakage-safe retrieval (DESIGN.md §1.4).

    bank.py    bank rows + keys (mean history text embedding, target text embedding)
    index.py   FAISS index registry (flat | ivf | hnsw), search, atomic save/load
    select.py  vectorised selection: top k/2 per label, leakage rule, seeded order
    stage.py   ``run_retrieve`` (the `llmcf retrieve` stage)
    retriever.py  ``Retriever`` (online use: serving, the sequential task)
    seq_context.py  in-context ids of the sequential task's rows (history-only keys)
"""
from llmcf.retrieval.bank import CoTBank, ItemVectors, build_bank, compose_keys, query_keys
from llmcf.retrieval.index import INDEXES, build_index, load_index, save_index, search
from llmcf.retrieval.select import Selector
from llmcf.retrieval.retriever import Retriever
from llmcf.retrieval.stage import run_retrieve

__all__ = ["CoTBank", "ItemVectors", "build_bank", "compose_keys", "query_keys", "INDEXES", "build_index", "load_index",
           "save_index", "search", "Selector", "Retriever", "run_retrieve"]
