"""`llmcf data build`: RawDataset → run_dir/data/{items,users,train,valid,test}.parquet, vocab.json, stats.json.

Every file is written atomically (temp file + rename). Input is checked (``checks.py``) before anything is touched;
then stats.json is removed first and written last, with the size and sha256 of every file the build wrote, so a run
directory whose build was interrupted has no stats.json (and no half-written file at any final path), and
``RunDir.verify_data`` (what `llmcf train` calls) refuses a folder that mixes files of two builds.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from llmcf.config import DataConfig
from llmcf.data.checks import check_duplicates, check_out_dir, check_splits
from llmcf.data.samples import build_samples, resolve_label_rule
from llmcf.data.schema import ITEM_COLUMNS, SAMPLE_COLUMNS, SPLITS, RawDataset
from llmcf.data.splits import assign_splits
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError
from llmcf.fingerprint import file_digest
from llmcf.io import atomic_path, atomic_write_json
from llmcf.publish import writing
from llmcf.rundir import DATA_FILES

SAMPLE_SCHEMA = pa.schema([("user_id", pa.string()), ("pos", pa.int64()), ("item_id", pa.string()),
                           ("label", pa.int8()), ("rating", pa.float64()), ("timestamp", pa.float64()),
                           ("history", pa.list_(pa.string()))])


def write_table(table: pa.Table, path: Path) -> None:
    """Atomic Parquet write of an Arrow table."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def samples_table(df: pd.DataFrame) -> pa.Table:
    """CTR rows as an Arrow table with the exact types of the run-directory contract."""
    return pa.Table.from_pandas(df[list(SAMPLE_COLUMNS)], schema=SAMPLE_SCHEMA, preserve_index=False)


def items_table(items: pd.DataFrame) -> pa.Table:
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise DataError(f"items table lacks the columns {missing} (have {list(items.columns)})")
    df = items.copy()
    for c in ("item_id", "title", "brand", "text"):
        df[c] = df[c].fillna("").astype(str)
    if df["item_id"].duplicated().any():
        raise DataError(f"item {df['item_id'][df['item_id'].duplicated()].iloc[0]!r} listed twice", field="item_id")
    df["categories"] = [[] if v is None or (isinstance(v, float) and np.isnan(v)) else [str(x) for x in v]
                        for v in df["categories"]]
    table = pa.Table.from_pandas(df, preserve_index=False)
    i = table.schema.get_field_index("categories")
    return table.set_column(i, "categories", table.column("categories").cast(pa.list_(pa.string())))


def split_stats(df: pd.DataFrame) -> dict:
    pos = int((df["label"] == 1).sum())
    return {"users": int(df["user_id"].nunique()), "items": int(df["item_id"].nunique()), "rows": int(len(df)),
            "positives": pos, "positive_rate": pos / len(df) if len(df) else 0.0}


def _oov_rates(df: pd.DataFrame, vocab: Vocab) -> dict:
    if not len(df):
        return {"user": 0.0, "item": 0.0}
    return {"user": float((vocab.encode_users(df["user_id"]) == 1).mean()),
            "item": float((vocab.encode_items(df["item_id"]) == 1).mean())}


def _oov_ids(df: pd.DataFrame, train: pd.DataFrame) -> dict:
    """Share of the split's distinct users / items that never occur in train."""
    out = {}
    for f in ("user", "item"):
        ids = pd.unique(df[f"{f}_id"])
        # isin against the distinct train ids: the same answer, and pandas' Arrow-string isin is slow per value
        out[f] = float(np.mean(~pd.Series(ids).isin(pd.unique(train[f"{f}_id"])))) if len(ids) else 0.0
    return out


class PandasSamples:
    """The CTR samples of one build in memory (``data.engine: pandas``); ``duck.DuckSamples`` has the same
    interface (summary, too_few, vocab, write, split_stats, oov_rates, oov_ids, protocol, kept)."""

    def __init__(self, ds: RawDataset, cfg: DataConfig, rule: str):
        self.ds, self.cfg = ds, cfg
        self.samples = build_samples(ds, cfg)
        split, self.protocol = assign_splits(self.samples, cfg, real_time=ds.real_time, label_rule=rule,
                                             dataset=ds.source or ds.name)
        codes = split.cat.codes.to_numpy()
        self.parts = {s: self.samples[codes == i].reset_index(drop=True) for i, s in enumerate(SPLITS)}
        self.kept = int((self.samples["label"] == 1).sum() if rule == "implicit" else len(self.samples))

    def check(self) -> None:
        check_splits(self.parts, self.samples, self.cfg, self.ds)

    def vocab(self, items: pd.DataFrame | None) -> Vocab:
        return Vocab.from_train(self.parts["train"], items)

    def write(self, split: str, path: Path) -> None:
        write_table(samples_table(self.parts[split]), path)

    def split_stats(self, split: str) -> dict:
        return split_stats(self.parts[split])

    def oov_rates(self, split: str, vocab: Vocab) -> dict:
        return _oov_rates(self.parts[split], vocab)

    def oov_ids(self, split: str) -> dict:
        return _oov_ids(self.parts[split], self.parts["train"])

    def close(self) -> None:
        pass


def make_samples(ds: RawDataset, cfg: DataConfig, rule: str):
    """The samples of ``cfg.data.engine`` (``duck.choose_engine``): PandasSamples or DuckSamples."""
    from llmcf.data import duck

    if duck.choose_engine(cfg, len(ds.interactions)) == "duckdb":
        return duck.DuckSamples(ds, cfg, rule, SAMPLE_SCHEMA)
    return PandasSamples(ds, cfg, rule)


def build_run_data(ds: RawDataset, cfg: DataConfig, run_dir: str | Path, show_progress: bool = True) -> dict:
    """Build samples, splits and vocabulary; write them under run_dir/data; return the stats (as in stats.json)."""
    from llmcf.data.partition import without_forgotten

    t0 = time.perf_counter()
    ds = without_forgotten(ds, run_dir)  # users forgotten by `llmcf forget` stay out of every rebuild
    out = Path(run_dir) / "data"
    check_out_dir(Path(run_dir))
    check_duplicates(ds, cfg)
    steps = ["samples", "splits", "vocab", "items.parquet", "users.parquet"] + [f"{s}.parquet" for s in SPLITS] + \
        ["vocab.json", "stats.json"]
    bar = tqdm(total=len(steps), desc=f"[data] {ds.name}", disable=not show_progress, unit="step")

    def step(name):
        bar.set_postfix_str(name)
        bar.update(1)

    samples = None
    try:
        rule = resolve_label_rule(ds, cfg)
        samples = make_samples(ds, cfg, rule)
        step("samples")
        step("splits")
        samples.check()
        vocab = samples.vocab(ds.items)
        items = items_table(ds.items)
        step("vocab")
        writing(run_dir)  # every check passed: only now is anything of a finished build touched (llmcf.publish)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").unlink(missing_ok=True)
        write_table(items, out / "items.parquet")
        step("items.parquet")
        if ds.users is not None:
            users = ds.users.copy()
            users["user_id"] = users["user_id"].astype(str)
            write_table(pa.Table.from_pandas(users, preserve_index=False), out / "users.parquet")
        else:
            (out / "users.parquet").unlink(missing_ok=True)
        step("users.parquet")
        for s in SPLITS:
            samples.write(s, out / f"{s}.parquet")
            step(f"{s}.parquet")
        vocab.save(out / "vocab.json")
        step("vocab.json")
        stats = {"dataset": ds.name, "source": ds.source, "real_time": ds.real_time,
                 "interactions": int(len(ds.interactions)),
                 "duplicates_dropped": ds.duplicates.count if ds.duplicates else 0,
                 "kept_interactions": samples.kept,
                 "protocol": samples.protocol,
                 "splits": {s: samples.split_stats(s) for s in SPLITS},
                 "vocab": {f: vocab.size(f) for f in ("user", "item", "brand", "category")},
                 "oov_rate": {s: samples.oov_rates(s, vocab) for s in ("valid", "test")},
                 "oov_ids": {s: samples.oov_ids(s) for s in ("valid", "test")},
                 "files": {f: file_digest(out / f) for f in DATA_FILES if (out / f).exists()},
                 "seconds": round(time.perf_counter() - t0, 2)}
        atomic_write_json(out / "stats.json", stats)
        step("stats.json")
    finally:
        if samples is not None:
            samples.close()
        bar.close()
    return stats
