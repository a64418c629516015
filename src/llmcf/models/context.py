"""In-context example tensors for the ICT: the CoT bank as encoded arrays, gathered by retrieved bank row ids.

Files (read through ``llmcf.rundir``; written by the retrieval and embedding stages):
    run_dir/retrieval/bank.parquet   user_id, pos, item_id, label, history list<str>, cot_row (row of embed/cot.npy)
    run_dir/embed/cot.npy            [n_cot, D] float CoT embeddings
    run_dir/embed/items.npy          [n_text, D] item text embeddings, rows named by embed/item_ids.json
    run_dir/data/vocab.json          the vocabulary (llmcf.data.vocab.Vocab), used when none is passed
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from llmcf.data.features import encode_history
from llmcf.data.schema import OOV
from llmcf.data.vocab import VOCAB_FIELDS, Vocab
from llmcf.errors import DataError
from llmcf.rundir import RunDir

CONTEXT_COLUMNS = ("user_id", "item_id", "label", "history", "cot_row")
"""The bank.parquet columns the ICT reads (the retrieval stage writes ``llmcf.rundir.BANK_FILE_COLUMNS``)."""


def as_vocab(vocab, run_dir: str | Path | None = None) -> Vocab:
    """A Vocab as given, built from a {"user": [...], "item": [...], ...} mapping, or (None) the run's vocab.json."""
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, Mapping):
        return Vocab(**{f: [str(x) for x in vocab.get(f, [])] for f in VOCAB_FIELDS})
    if vocab is not None:
        raise TypeError(f"vocab: expected a Vocab, a mapping or None, got {type(vocab).__name__}")
    if run_dir is None:
        raise DataError("no vocabulary given and no run directory to read data/vocab.json from", field="vocab")
    run = RunDir(run_dir)
    return Vocab.load(run.need(run.vocab))


class ContextBank:
    """The CoT bank as encoded arrays: user [n], item [n], hist [n, L], label [n], and CoT embeddings.

    cot: [n_cot, D] float32; cot_row [n] picks each bank row's CoT (default: row i ↔ cot i).
    ``gather(ctx_idx)`` turns retrieved bank row ids [B, K] (-1 = missing) into the ctx_* tensors of the ICT.
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, hist: np.ndarray, label: np.ndarray, cot: np.ndarray,
                 cot_row: np.ndarray | None = None):
        n = len(user)
        hist = np.asarray(hist, dtype=np.int64)
        cot = np.asarray(cot, dtype=np.float32)
        cot_row = np.arange(n) if cot_row is None else np.asarray(cot_row, dtype=np.int64)
        if len(item) != n or len(label) != n or len(cot_row) != n or hist.ndim != 2 or len(hist) != n:
            raise DataError(f"bank arrays disagree: user {n}, item {len(item)}, hist {hist.shape}, "
                            f"label {len(label)}, cot_row {len(cot_row)}", field="bank")
        if cot.ndim != 2:
            raise DataError(f"CoT embeddings must be [n, D], got shape {cot.shape}", field="cot")
        if n and (cot_row.min() < -1 or cot_row.max() >= len(cot)):
            raise DataError(f"cot_row must lie in [-1, {len(cot)}) (-1: a row without CoT, hybrid bank), got "
                            f"[{cot_row.min()}, {cot_row.max()}]", field="cot_row")
        label = np.asarray(label, dtype=np.int64)
        if n and not np.isin(label, (0, 1)).all():
            raise DataError("labels must be 0 or 1", field="label")
        # one extra all-zero row at index n (and a zero CoT row) serves the missing (-1) slots
        self._user = np.append(np.asarray(user, dtype=np.int64), 0)
        self._item = np.append(np.asarray(item, dtype=np.int64), 0)
        self._hist = np.vstack([hist, np.zeros((1, hist.shape[1]), dtype=np.int64)])
        self._label = np.append(label, 0)
        self._cot = np.vstack([cot, np.zeros((1, cot.shape[1]), dtype=np.float32)])
        self._has_cot = np.append(cot_row >= 0, False)
        self._cot_row = np.append(np.where(cot_row >= 0, cot_row, len(cot)), len(cot))
        self.n, self.hist_len, self.cot_dim = n, hist.shape[1], cot.shape[1]
        self.cot_gaps = bool(n and (cot_row < 0).any())
        """Some rows carry no CoT (a hybrid bank): the ICT then needs its learned "no CoT" token."""

    def __len__(self) -> int:
        return self.n

    def gather(self, ctx_idx: np.ndarray) -> dict[str, torch.Tensor]:
        """ctx_idx [B, K] bank rows (-1 = missing) -> ctx_user/ctx_item [B,K], ctx_hist [B,K,L], ctx_label [B,K]
        int64, ctx_cot [B,K,D] float32, ctx_mask [B,K] bool, ctx_row [B,K] int64 (bank row; ``n`` for a missing
        slot — lets the ICT compute each distinct example's features once per batch), and for a bank with rows
        without CoT ctx_has_cot [B,K] bool; missing slots are zeros with mask False."""
        idx = np.asarray(ctx_idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f"expected integer bank row ids [B, K], got {idx.dtype} {idx.shape}", field="ctx_idx")
        if idx.size and (idx.min() < -1 or idx.max() >= self.n):
            raise DataError(f"bank row ids must lie in [-1, {self.n}), got [{idx.min()}, {idx.max()}]: the "
                            "in-context ids belong to another bank; rerun `llmcf retrieve`", field="ctx_idx")
        mask = idx >= 0
        rows = np.where(mask, idx, self.n)
        return {
            "ctx_user": torch.from_numpy(self._user[rows]),
            "ctx_item": torch.from_numpy(self._item[rows]),
            "ctx_hist": torch.from_numpy(self._hist[rows]),
            "ctx_label": torch.from_numpy(self._label[rows]),
            "ctx_cot": torch.from_numpy(self._cot[self._cot_row[rows]]),
            "ctx_mask": torch.from_numpy(mask),
            "ctx_row": torch.from_numpy(rows.astype(np.int64, copy=False)),
            **({"ctx_has_cot": torch.from_numpy(self._has_cot[rows])} if self.cot_gaps else {}),
        }

    def all_rows(self) -> dict[str, torch.Tensor]:
        """``gather`` of every bank row and then the missing-slot row, as [n + 1, 1] tensors: row r of each is what a
        slot with ctx_row r carries (the ICT's ``cache_examples`` input)."""
        return self.gather(np.append(np.arange(self.n), -1)[:, None])

    def gather_rows(self, ctx_idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The slots alone: ctx_row [B,K] int64 (``n`` for a missing slot) and ctx_mask [B,K] bool — what an ICT
        with cached example tokens (``ICT.cache_examples``) reads."""
        idx = np.asarray(ctx_idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f"expected integer bank row ids [B, K], got {idx.dtype} {idx.shape}", field="ctx_idx")
        if idx.size and (idx.min() < -1 or idx.max() >= self.n):
            raise DataError(f"bank row ids must lie in [-1, {self.n}), got [{idx.min()}, {idx.max()}]: the "
                            "in-context ids belong to another bank; rerun `llmcf retrieve`", field="ctx_idx")
        mask = idx >= 0
        return {"ctx_row": torch.from_numpy(np.where(mask, idx, self.n).astype(np.int64, copy=False)),
                "ctx_mask": torch.from_numpy(mask)}

    @classmethod
    def from_run(cls, run_dir: str | Path, vocab=None, hist_len: int = 20) -> "ContextBank":
        """The bank of a run (retrieval/bank.parquet and embed/cot.npy, read by ``llmcf.rundir``), with ids encoded
        by ``vocab`` (default: the run's vocabulary)."""
        run = RunDir(run_dir)
        table = run.read_bank_table(CONTEXT_COLUMNS)
        cot = run.read_cot_embeddings()
        vocab = as_vocab(vocab, run_dir)
        label = table.column("label").to_numpy(zero_copy_only=False)
        try:
            return cls(
                user=vocab.encode_users(table.column("user_id").to_numpy(zero_copy_only=False).astype(str)),
                item=vocab.encode_items(table.column("item_id").to_numpy(zero_copy_only=False).astype(str)),
                hist=encode_history(table.column("history"), vocab, hist_len)[0],
                label=label,
                cot=cot,
                cot_row=table.column("cot_row").to_numpy(zero_copy_only=False),
            )
        except DataError as e:
            raise DataError(str(e), file=str(run.bank)) from e


def item_text_matrix(run_dir: str | Path, vocab=None) -> np.ndarray:
    """Text embedding per vocabulary item id, float32 [n_items, D]: rows of embed/items.npy placed at the ids of
    embed/item_ids.json (read by ``llmcf.rundir``); pad, OOV and items without a text embedding stay zero."""
    ids, emb = RunDir(run_dir).read_item_vectors()
    return place_item_vectors(ids, emb, as_vocab(vocab, run_dir))


def place_item_vectors(ids: list[str], emb: np.ndarray, vocab: Vocab) -> np.ndarray:
    """[n_items, D]: row ``emb[j]`` at the vocabulary id of ``ids[j]`` (unknown ids dropped, other rows zero)."""
    out = np.zeros((vocab.n_items, emb.shape[1]), dtype=np.float32)
    enc = vocab.encode_items(ids)
    known = enc > OOV
    out[enc[known]] = emb[known]
    return out
