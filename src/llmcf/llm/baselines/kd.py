"""The KD baseline's teacher scores: the RecGen model's p(Yes) for a seeded sample of train rows, resumable.

``run_dir/baselines/kd/``: pool.parquet (key, row = position in data/train.parquet, user_id, pos, item_id, label),
manifest.json (gen_id over the pool, prompt settings and model identity; ``cost``: rows scored, seconds) and
shards/shard_<k>.jsonl ({key, p_yes}). The prompt is RecGen's (``llmcf.llm.recgen.prompts``), the score the
backend's ``score_yes_no``. Sample: ``baseline.kd_rows`` rows, uniform without replacement, seeded by
``baseline.kd_seed``, in train-file order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import Config
from llmcf.fingerprint import pool_hash
from llmcf.llm.baselines.common import read_generation, run_generation, teacher_model
from llmcf.llm.executors import BackendJob
from llmcf.llm.recgen.data import read_item_texts, read_split, sample_rows
from llmcf.llm.recgen.prompts import rec_prompts_for
from llmcf.rundir import RunDir

RERUN = "llmcf train --baseline kd"


def kd_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).root / "baselines" / "kd"


def build_kd_pool(train: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    b = cfg.baseline
    if b.kd_rows < 1:
        raise ValueError(f"baseline.kd_rows must be >= 1, got {b.kd_rows}")
    df = train.reset_index(drop=True)
    df = df.assign(row=np.arange(len(df), dtype=np.int64))
    pool = sample_rows(df, b.kd_rows, b.kd_seed)
    key = [f"{r}|{u}|{int(p)}|{i}" for r, u, p, i in zip(pool["row"], pool["user_id"], pool["pos"], pool["item_id"])]
    return pd.DataFrame({"key": key, "row": pool["row"].to_numpy(), "user_id": pool["user_id"].astype(str).to_numpy(),
                         "pos": pool["pos"].astype("int64").to_numpy(), "item_id": pool["item_id"].astype(str).to_numpy(),
                         "label": pool["label"].astype("int8").to_numpy(), "history": pool["history"].to_numpy()})


class KDJob(BackendJob):
    """The shard job of the KD teacher: p(Yes) of each row's RecGen prompt, one ``score_yes_no`` call per shard."""

    columns = ("key",)

    def __init__(self, llm, model_path, prompts: dict[str, list[dict]], backend=None):
        super().__init__(llm, model_path, backend)
        self.prompts = prompts

    def run(self, rows: pd.DataFrame, k: int) -> tuple[list[dict], int]:
        p = self.backend.score_yes_no([self.prompts[key] for key in rows["key"]])
        return [{"key": key, "p_yes": float(v)} for key, v in zip(rows["key"], p)], 0


def run_kd_score(run_dir: Path, cfg: Config, backend=None) -> dict:
    """Score the pool (resuming finished shards); returns the manifest."""
    run_dir = Path(run_dir)
    train = read_split(run_dir, "train")
    pool = build_kd_pool(train, cfg)
    texts = read_item_texts(run_dir, cfg.llm.prompt_style)
    hist_items = cfg.baseline.kd_history_items if cfg.baseline.kd_history_items is not None else cfg.recgen.history_items
    prompts = rec_prompts_for(pool, texts, cfg.data, hist_items, cfg.llm.prompt_style)
    model_path, ident = teacher_model(run_dir, cfg)
    parts = {"pool_hash": pool_hash("kd", pool["key"], ["\n".join(m["content"] for m in p) for p in prompts]),
             "model": ident}
    pool_out = pool.drop(columns=["history"])
    job = KDJob(cfg.llm, model_path, dict(zip(pool["key"], prompts)), backend)
    return run_generation(kd_dir(run_dir), pool_out, parts, cfg.baseline.kd_shard_size, job, cfg.llm,
                          desc="kd teacher p(Yes)", unit="row", log="kd",
                          check=lambda r: isinstance(r.get("p_yes"), float))


def read_kd_scores(run_dir: Path, n_train: int, partial: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """(p_yes [n_train] float32, scored [n_train] bool, manifest) of the finished teacher scores (``partial``: of
    the finished shards)."""
    manifest, pool, recs = read_generation(kd_dir(run_dir), "KD teacher scoring", RERUN, partial)
    prob = np.zeros(n_train, dtype=np.float32)
    mask = np.zeros(n_train, dtype=bool)
    rows = pool["row"].to_numpy()
    if len(rows) and rows.max() >= n_train:
        from llmcf.errors import RunError

        raise RunError(f"{kd_dir(run_dir)}: the teacher scores index train rows the current data/train.parquet "
                       f"does not have ({rows.max()} >= {n_train}); rerun `{RERUN}`")
    prob[rows] = np.array([r["p_yes"] for r in recs], dtype=np.float32)
    mask[rows] = True
    return prob, mask, manifest
