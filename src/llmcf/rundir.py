"""The run directory: every path of its contract (the README's tree) and the readers that check it.

Every stage reads and writes its files through a ``RunDir``, so the layout lives here only::

    config.yaml                          resolved config
    data/{train,valid,test}.parquet      CTR samples; data/items.parquet, users.parquet, vocab.json, stats.json
    data/seq_{train,valid,test}.parquet  sequential samples; seq_stats.json (+ seq_vocab.json without vocab.json)
    llm/recgen/                          tuned model, eval_{base,tuned}.json, self-distillation cache
    cot/                                 pool.parquet, shards/, selected.parquet, all_scores.parquet
    embed/                               items.npy + item_ids.json, cot.npy, meta.json, cache/
    retrieval/                           bank.parquet, bank_{hist,target}.npy, index_{pos,neg}.faiss,
                                         {split}_ctx.npy, meta.json, state.json; seq/{split}_ctx.npy, seq/meta.json
    models/<tag>/                        config.yaml, summary.json, seed_<s>/{model.safetensors,config.yaml,result.json}
    report/                              results.md, index.html, *.png
    stages/<stage>.json                  what `llmcf run` uses to skip unchanged stages
    partition.{json,parquet}, shards/<k>/, forget/   partitioned runs only (``llmcf.data.partition``): each shard is
                                         a run directory of this same layout; forget/ holds salted hashes only

A missing input is a ``RunError`` naming the file and the command that writes it. The readers here return plain
arrays and tables; turning them into vocabularies, features or tensors is the job of the layers above.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from llmcf.errors import DataError, RunError
from llmcf.io import load_npy

SPLITS = ("train", "valid", "test")
INDEX_FILES = {1: "index_pos.faiss", 0: "index_neg.faiss"}
"""FAISS index file per bank label."""
BANK_FILE_COLUMNS = ("user_id", "pos", "item_id", "label", "history", "cot_row")
"""Columns of retrieval/bank.parquet."""

DATA_FILES = ("items.parquet", "users.parquet", "train.parquet", "valid.parquet", "test.parquet", "vocab.json")
"""What a finished data build wrote beside data/stats.json, whose ``files`` records each one's size and SHA-256
(users.parquet only when the dataset has a user table)."""

WRITER = {"data": "data build", "seq": "train --task sequential", "recgen": "recgen train", "cot": "cot score",
          "embed": "embed", "retrieval": "retrieve", "models": "train", "report": "report"}
"""The command that writes each top-level folder (named in the error of a missing file)."""


class RunDir:
    """Paths and checked readers of one run directory (``RunDir(path)``; ``str()`` gives the path)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # ---- paths ---------------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def split(self, split: str) -> Path:
        return self.data / f"{split}.parquet"

    def seq_split(self, split: str) -> Path:
        return self.data / f"seq_{split}.parquet"

    @property
    def items(self) -> Path:
        return self.data / "items.parquet"

    @property
    def users(self) -> Path:
        return self.data / "users.parquet"

    @property
    def vocab(self) -> Path:
        return self.data / "vocab.json"

    @property
    def stats(self) -> Path:
        return self.data / "stats.json"

    @property
    def seq_stats(self) -> Path:
        return self.data / "seq_stats.json"

    @property
    def recgen(self) -> Path:
        return self.root / "llm" / "recgen"

    @property
    def recgen_model(self) -> Path:
        return self.recgen / "model"

    def recgen_eval(self, tag: str) -> Path:
        return self.recgen / f"eval_{tag}.json"

    @property
    def cot(self) -> Path:
        return self.root / "cot"

    @property
    def cot_selected(self) -> Path:
        return self.cot / "selected.parquet"

    @property
    def embed(self) -> Path:
        return self.root / "embed"

    @property
    def item_emb(self) -> Path:
        return self.embed / "items.npy"

    @property
    def item_ids(self) -> Path:
        return self.embed / "item_ids.json"

    @property
    def cot_emb(self) -> Path:
        return self.embed / "cot.npy"

    @property
    def embed_cache(self) -> Path:
        return self.embed / "cache"

    @property
    def retrieval(self) -> Path:
        return self.root / "retrieval"

    @property
    def bank(self) -> Path:
        return self.retrieval / "bank.parquet"

    def index(self, label: int) -> Path:
        return self.retrieval / INDEX_FILES[label]

    def ctx(self, split: str) -> Path:
        return self.retrieval / f"{split}_ctx.npy"

    @property
    def retrieval_meta(self) -> Path:
        return self.retrieval / "meta.json"

    @property
    def seq_retrieval(self) -> Path:
        return self.retrieval / "seq"

    def seq_ctx(self, split: str) -> Path:
        return self.seq_retrieval / f"{split}_ctx.npy"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, tag: str) -> Path:
        return self.models / tag

    def seed(self, tag: str, seed: int) -> Path:
        return self.model(tag) / f"seed_{seed}"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def stage_stamp(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def bank_files(self) -> list[Path]:
        """What the retrieval stage writes and serving reads (watched for a refresh)."""
        return [self.retrieval_meta, self.bank, self.index(1), self.index(0), self.cot_emb, self.item_emb]

    def trained_tags(self) -> list[str]:
        return sorted(p.name for p in self.models.iterdir()) if self.models.is_dir() else []

    # ---- checked readers -----------------------------------------------------------------------------------------
    def need(self, path: Path, writer: str | None = None) -> Path:
        """``path`` if it exists, else a RunError naming the command that writes it."""
        if not Path(path).exists():
            rel = Path(path).relative_to(self.root).parts[0] if Path(path).is_relative_to(self.root) else ""
            cmd = writer or WRITER.get(rel, "run")
            flag = f"--out {self.root}" if cmd == "data build" else f"--run {self.root}"
            raise RunError(f"{path}: missing; run `llmcf {cmd} {flag}` first")
        return Path(path)

    def read_json(self, path: Path, default: Any = None) -> Any:
        """A JSON file of the run (``default`` when absent and a default is given; a DataError when malformed)."""
        path = Path(path)
        if default is not None and not path.exists():
            return default
        try:
            return json.loads(self.need(path).read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e}", file=str(path)) from e

    def read_npy(self, path: Path) -> np.ndarray:
        """A plain .npy array of the run (no pickle; a DataError when it is not one)."""
        try:
            return load_npy(self.need(path))
        except ValueError as e:
            raise DataError(f"not a plain .npy array: {e}", file=str(path)) from e

    def verify_data(self) -> dict:
        """data/stats.json of a finished build, after checking that every file it recorded is still the one it wrote;
        a RunError naming the command to run for an unfinished, interrupted or mixed build. (stats.json is removed
        first and written last by `llmcf data build`; runs built before digests were recorded are not checked.)"""
        from llmcf.fingerprint import file_digest

        rebuild = f"run `llmcf data build --out {self.root}` (or `llmcf run --force data`) again"
        if not self.vocab.exists() and not self.stats.exists():
            raise RunError(f"{self.data}: no samples here; run `llmcf data build --out {self.root}` first")
        if not self.stats.exists():
            raise RunError(f"{self.data}: the data build did not finish (no stats.json, which is written last); "
                           f"{rebuild}")
        try:
            stats = json.loads(self.stats.read_text())
        except ValueError as e:
            raise RunError(f"{self.stats}: unreadable ({e}); {rebuild}") from None
        for name, want in (stats.get("files") or {}).items():
            path = self.data / name
            if not path.exists():
                raise RunError(f"{path}: missing, though the build that wrote stats.json made it; {rebuild}")
            got = file_digest(path)
            if got != want:
                raise RunError(f"{path}: not the file the last finished build wrote (sha256 {got['sha256'][:12]} vs "
                               f"{str(want.get('sha256'))[:12]}): an interrupted build or a hand edit mixed this "
                               f"folder; {rebuild}")
        return stats

    def read_stats(self) -> dict:
        """data/stats.json ({} when absent: a run built by an older version or a partial test fixture)."""
        return self.read_json(self.stats, {})

    def read_item_vectors(self) -> tuple[list[str], np.ndarray]:
        """(item ids, [n, D] text embeddings) of embed/items.npy + embed/item_ids.json, checked to be aligned."""
        emb = self.read_npy(self.item_emb)
        ids = self.read_json(self.need(self.item_ids))
        if not isinstance(ids, list) or emb.ndim != 2 or len(ids) != len(emb):
            raise DataError(f"expected a JSON list of {len(emb)} item ids matching {self.item_emb.name} "
                            f"{emb.shape}", file=str(self.item_ids))
        return [str(i) for i in ids], emb

    def read_cot_embeddings(self) -> np.ndarray:
        cot = self.read_npy(self.cot_emb)
        if cot.ndim != 2 or not np.issubdtype(cot.dtype, np.floating):
            raise DataError(f"expected a float matrix [n, D], got {cot.dtype} {cot.shape}", file=str(self.cot_emb))
        return cot

    def read_bank_table(self, columns=BANK_FILE_COLUMNS):
        """retrieval/bank.parquet as a pyarrow Table with ``columns`` (a DataError naming a missing column)."""
        import pyarrow.parquet as pq

        path = self.need(self.bank)
        names = pq.read_schema(path).names
        for col in columns:
            if col not in names:
                raise DataError(f"missing column (has {names})", file=str(path), field=col)
        return pq.read_table(path, columns=list(columns))

    def read_ctx(self, split: str, rows: int, seq: bool = False) -> np.ndarray:
        """In-context bank rows [rows, k] of one split (``retrieval/{split}_ctx.npy``, or ``retrieval/seq/`` for the
        sequential rows), checked against the split's row count."""
        path = self.seq_ctx(split) if seq else self.ctx(split)
        a = self.read_npy(self.need(path, "retrieve"))
        if len(a) != rows:
            what = f"data/seq_{split}.parquet" if seq else f"data/{split}.parquet"
            raise RunError(f"{path} has {len(a)} rows but {what} has {rows}: rerun `llmcf retrieve --run {self.root}`")
        return a

    def read_items(self, required: bool = True):
        """data/items.parquet as a DataFrame (None when absent and not ``required``)."""
        import pandas as pd

        if not required and not self.items.exists():
            return None
        return pd.read_parquet(self.need(self.items))
