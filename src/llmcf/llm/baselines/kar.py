"""KAR's LLM texts (Xi et al. 2023, "Towards Open-World Recommendation with Knowledge Augmentation from LLMs"): one
preference reasoning per user and one factual-knowledge text per item, generated once, resumable.

Prompts (our wording of the paper's two factorised prompts):
    user: the user's most recent ``baseline.kar_history_items`` **training** interactions (liked / not liked), then
          "Analyse this user's preferences ... (factors)". Leakage rule: only data/train.parquet is read, so nothing
          of a user's valid/test rows reaches their text.
    item: the item's metadata text (items.parquet ``text``), then "Introduce this <noun> and describe its factual
          attributes ...".
Greedy decoding, ``baseline.kar_max_new_tokens`` new tokens. ``baseline.kar_users`` / ``kar_items`` take a budget
(None = all), e.g. to fit a CPU budget: a seeded uniform sample (``kar_sample: random``) or the users/items with the
most training rows (``popular``); the rest get no text (the adaptor's learned "missing" vector of their side).

``run_dir/baselines/kar/``: pool.parquet (key ``user:<id>`` | ``item:<id>``, kind, id, prompt), manifest.json (gen_id
over the prompts, decoding and model; ``cost``: texts generated, seconds), shards/shard_<k>.jsonl ({key, text}).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import Config, DataConfig
from llmcf.fingerprint import pool_hash
from llmcf.llm.backends.base import SamplingParams
from llmcf.llm.baselines.common import read_generation, run_generation, teacher_model
from llmcf.llm.executors import BackendJob
from llmcf.llm.recgen.prompts import base_form, item_texts
from llmcf.rundir import RunDir

RERUN = "llmcf train --baseline kar"
SYSTEM = "You are a knowledgeable recommendation assistant. Answer concisely and concretely."


def kar_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).root / "baselines" / "kar"


def user_prompt(rows: list[tuple[str, int]], data: DataConfig) -> str:
    """rows: (item text, label) of the user's training interactions, oldest first."""
    noun, like, dislike = data.item_noun, data.positive_verb, data.negative_verb
    lines = "\n".join(f"{k}. {t} — the user {like if y == 1 else dislike} it" for k, (t, y) in enumerate(rows, 1))
    return (f"A user's recent {noun}s, oldest first:\n{lines or '(none)'}\n\n"
            f"Analyse this user's preferences: which kinds of {noun}s they {base_form(like)} and avoid, considering "
            "genre or category, style, themes, quality, era and brand where they apply. Give the reasons behind each "
            "point in a few sentences.")


def item_prompt(text: str, data: DataConfig) -> str:
    noun = data.item_noun
    return (f"{noun.capitalize()}: {text}\n\nIntroduce this {noun} and describe its factual attributes precisely: "
            "what it is, its genre or category, its notable features, who it suits, and how it is generally "
            "received. A few sentences.")


def user_histories(train: pd.DataFrame, max_items: int) -> dict[str, list[tuple[str, int]]]:
    """user_id → their last ``max_items`` training rows as (item_id, label), in position order. Only the train split
    is read: this is the leakage rule of the user text."""
    df = train.loc[:, ["user_id", "pos", "item_id", "label"]].copy()
    df["user_id"] = df["user_id"].astype(str)
    df["item_id"] = df["item_id"].astype(str)
    df = df.sort_values(["user_id", "pos"], kind="stable")
    out = {}
    for u, g in df.groupby("user_id", sort=True):
        g = g.tail(max_items) if max_items > 0 else g.iloc[:0]
        out[u] = list(zip(g["item_id"], g["label"].astype(int)))
    return out


def _sample(ids: list[str], n: int | None, seed: int, how: str = "random", counts: dict | None = None) -> list[str]:
    """``n`` of ``ids`` (all when None or more): a seeded uniform sample, or with ``how="popular"`` the ``n`` with
    the most training rows (``counts``; ties by id), returned in id order."""
    if n is None or n >= len(ids):
        return ids
    if n < 0:
        raise ValueError(f"baseline.kar_users / kar_items must be >= 0, got {n}")
    if how == "popular":
        keep = set(sorted(ids, key=lambda i: (-(counts or {}).get(i, 0), i))[:n])
        return [i for i in ids if i in keep]
    if how != "random":
        raise ValueError(f"baseline.kar_sample must be random or popular, got {how!r}")
    idx = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in idx]


def build_kar_pool(train: pd.DataFrame, items: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    b = cfg.baseline
    texts = item_texts(items, blank="placeholder", style="full")  # KAR keeps its own (full) wording
    hists = user_histories(train, b.kar_history_items)
    u_counts = train["user_id"].astype(str).value_counts().to_dict()
    i_counts = train["item_id"].astype(str).value_counts().to_dict()
    users = _sample(sorted(hists), b.kar_users, b.kar_seed, b.kar_sample, u_counts)
    item_ids = _sample(sorted(texts), b.kar_items, b.kar_seed + 1, b.kar_sample, i_counts)
    rows = [("user", u, user_prompt([(texts.get(i, f"item {i}"), y) for i, y in hists[u]], cfg.data)) for u in users]
    rows += [("item", i, item_prompt(texts[i], cfg.data)) for i in item_ids]
    return pd.DataFrame({"key": [f"{k}:{i}" for k, i, _ in rows], "kind": [k for k, _, _ in rows],
                         "id": [i for _, i, _ in rows], "prompt": [p for _, _, p in rows]})


def sampling(cfg: Config) -> SamplingParams:
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.baseline.kar_max_new_tokens, seed=cfg.baseline.kar_seed)


class KARJob(BackendJob):
    """The shard job of KAR's texts: greedy generation of each pool prompt, ``llm.batch_size`` prompts per call."""

    columns = ("key", "prompt")

    def __init__(self, llm, model_path, params: SamplingParams, backend=None):
        super().__init__(llm, model_path, backend)
        self.params = params

    def run(self, rows: pd.DataFrame, k: int) -> tuple[list[dict], int]:
        out, bs = [], max(1, self.llm.batch_size)
        for s in range(0, len(rows), bs):
            chunk = rows.iloc[s:s + bs]
            prompts = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p in chunk["prompt"]]
            gens = self.backend.generate(prompts, self.params)
            out += [{"key": key, "text": str(g[0]).strip()} for key, g in zip(chunk["key"], gens)]
        return out, 0


def run_kar_generate(run_dir: Path, cfg: Config, backend=None) -> dict:
    """Generate every pool text (resuming finished shards); returns the manifest."""
    run = RunDir(run_dir)
    from llmcf.llm.recgen.data import read_split

    train = read_split(run.root, "train")
    pool = build_kar_pool(train, run.read_items(), cfg)
    model_path, ident = teacher_model(run.root, cfg)
    params = sampling(cfg)
    parts = {"pool_hash": pool_hash(SYSTEM, pool["key"], pool["prompt"]), "model": ident,
             "sampling": {k: v for k, v in vars(params).items()}}
    job = KARJob(cfg.llm, model_path, params, backend)
    return run_generation(kar_dir(run.root), pool, parts, cfg.baseline.kar_shard_size, job, cfg.llm,
                          desc="kar texts", unit="text", log="kar", check=lambda r: isinstance(r.get("text"), str))


def read_kar_texts(run_dir: Path, partial: bool = False) -> tuple[dict[str, str], dict[str, str], dict]:
    """({user_id: text}, {item_id: text}, manifest) of the finished generation (``partial``: of its finished
    shards)."""
    manifest, pool, recs = read_generation(kar_dir(run_dir), "KAR text generation", RERUN, partial)
    users, items = {}, {}
    for kind, i, r in zip(pool["kind"], pool["id"], recs):
        (users if kind == "user" else items)[str(i)] = r["text"]
    return users, items, manifest
