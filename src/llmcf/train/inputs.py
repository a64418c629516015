"""What a trained model needs besides its weights, loaded one way for training and serving: the vocabulary, the
items table and feature schema, and for LLM-CF models the CoT bank as encoded arrays plus the item text matrix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmcf.data.features import make_schema
from llmcf.data.schema import FeatureSchema
from llmcf.data.vocab import Vocab
from llmcf.rundir import RunDir


@dataclass
class ContextInputs:
    """The ICT's inputs of a run: the bank (``ContextBank``) and the text embedding per vocabulary item id."""

    bank: object  # llmcf.models.context.ContextBank
    item_text: np.ndarray  # [n_items, D] float32

    @property
    def cot_dim(self) -> int:
        return int(self.bank.cot_dim)

    @property
    def item_text_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.item_text)

    @property
    def text_known(self) -> np.ndarray:
        """[n_items] bool: the item has a text embedding."""
        return np.abs(self.item_text).sum(1) > 0


def load_context(run: RunDir | str | Path, vocab: Vocab, hist_len: int) -> ContextInputs:
    """Bank (retrieval/bank.parquet + embed/cot.npy) and item text matrix (embed/items.npy), encoded with ``vocab``."""
    from llmcf.models.context import ContextBank, item_text_matrix

    run = run if isinstance(run, RunDir) else RunDir(run)
    return ContextInputs(ContextBank.from_run(run.root, vocab, hist_len), item_text_matrix(run.root, vocab))


@dataclass
class ModelInputs:
    """Vocabulary, items table and feature schema of a run's CTR samples (+ the ICT's context when asked)."""

    vocab: Vocab
    items: pd.DataFrame | None
    schema: FeatureSchema
    hist_len: int
    context: ContextInputs | None = None


def load_model_inputs(run: RunDir | str | Path, hist_len: int, ict: bool = False, vocab: Vocab | None = None,
                      items_required: bool = True) -> ModelInputs:
    """``vocab`` defaults to data/vocab.json; ``items_required=False`` accepts a run without data/items.parquet
    (the sequential task built from raw data alone)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if vocab is None:
        if not run.vocab.exists():
            from llmcf.errors import RunError

            raise RunError(f"{run.data}: no samples here; run `llmcf data build --out {run.root}` first")
        vocab = Vocab.load(run.vocab)
    items = run.read_items(required=items_required)
    schema = make_schema(vocab, items, hist_len)
    context = load_context(run, vocab, hist_len) if ict else None
    return ModelInputs(vocab, items, schema, hist_len, context)
