"""CoT generation: label-conditioned chains of thought for a seeded uniform sample of train rows, in resumable shards.

Layout of ``run_dir/cot/`` (one *generation*):
    pool.parquet        the sampled rows, written first: key (``user_id|pos|item_id``), user_id, pos, item_id, label,
                        history (the ids shown in the prompt), prompt (user turn), input_text (history + target text)
    manifest.json       gen_id = hash of (pool hash, sampling params, shard size, model identity), plus those parts
    shards/shard_<k>.jsonl  rows [k·S, (k+1)·S) of the pool, one JSON object per row:
                        {key, user_id, pos, item_id, label, candidates: [n strings]}; each written atomically

Resuming: a shard whose file exists (and holds exactly its rows) is never regenerated; an interrupted shard is simply
redone, so a crash or Ctrl-C loses at most one shard of work and never duplicates a row.

Config changes: if the new gen_id differs from the manifest's (other pool, sampling params, shard size or model), the
old generation is *moved*, not deleted, to ``cot/previous/<old gen_id>/`` and a fresh one starts; switching back to
a config seen before moves its generation back and resumes it.

The model: ``run_dir/llm/recgen/model`` (the RecGen-tuned model) when it exists and ``recgen.skip`` is false, else the
base ``llm.model``; the manifest records which (``model.kind`` = recgen | base) with a fingerprint of the tuned files.

Pool size: ``cot.count`` rows if set, else ``round(cot.fraction · len(train))``; the sample is uniform without
replacement, seeded by ``cot.seed``, then kept in train-file order.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from llmcf.estimate import EstimatingBar

from llmcf import fingerprint
from llmcf.config import Config
from llmcf.errors import DataError, LLMCFError, RunError
from llmcf.io import atomic_path, atomic_write_json, write_parquet
from llmcf.llm import executors, shards
from llmcf.llm.backends.base import SamplingParams
from llmcf.llm.cot.prompts import input_text, system_prompt, user_message
from llmcf.llm.prompt_style import DEFAULT_STYLE
from llmcf.llm.recgen.prompts import item_texts
from llmcf.rundir import RunDir

TRAIN_NEEDED = ("user_id", "pos", "item_id", "label", "history")
ITEM_NEEDED = ("item_id", "text")
SCORE_FILES = ("selected.parquet", "all_scores.parquet", "score_meta.json")


def row_key(user_id: str, pos: int, item_id: str) -> str:
    """Stable identity of a train row (negatives of implicit data share user and pos, not the item)."""
    return f"{user_id}|{int(pos)}|{item_id}"


def _read_table(path: Path, needed: tuple[str, ...], stage_hint: str) -> pd.DataFrame:
    if not path.exists():
        raise RunError(f"{path} is missing: run `{stage_hint}` first")
    df = pd.read_parquet(path)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; expected at least {list(needed)}", file=str(path))
    return df


def build_pool(train: pd.DataFrame, items: pd.DataFrame, cfg: Config, train_path: str = "train.parquet") -> pd.DataFrame:
    """The seeded uniform sample of train rows with their prompts (deterministic for a given input and config)."""
    c = cfg.cot
    df = train.loc[:, list(TRAIN_NEEDED)].copy()
    df["user_id"] = df["user_id"].astype(str)
    df["item_id"] = df["item_id"].astype(str)
    df["key"] = [row_key(u, p, i) for u, p, i in zip(df["user_id"], df["pos"], df["item_id"])]
    df = df.drop_duplicates("key", keep="first").reset_index(drop=True)
    n = len(df)
    if c.count is not None:
        if c.count < 1:
            raise LLMCFError(f"cot.count must be >= 1, got {c.count}")
        size = min(c.count, n)
    elif c.fraction is not None:
        if not 0 < c.fraction <= 1:
            raise LLMCFError(f"cot.fraction must be in (0, 1], got {c.fraction}")
        size = min(n, max(1, round(c.fraction * n)))
    else:
        raise LLMCFError("set cot.count or cot.fraction: how many train rows get a chain of thought")
    idx = np.sort(np.random.default_rng(c.seed).choice(n, size=size, replace=False)) if n else np.array([], int)
    pool = df.iloc[idx].reset_index(drop=True)
    style = cfg.llm.prompt_style
    texts = item_texts(items, blank="placeholder", style="full")  # the relevance reference keeps the full text
    lines = texts if style == "full" else item_texts(items, blank="placeholder", style=style)
    prompts, inputs, hists = [], [], []
    for r in pool.itertuples(index=False):
        if r.item_id not in texts:
            raise DataError(f"target item {r.item_id!r} (row {r.key}) is not in items.parquet", file=train_path,
                            field="item_id")
        hist = [str(h) for h in (list(r.history) if r.history is not None else [])][-c.history_items:] \
            if c.history_items > 0 else []
        unknown = [h for h in hist if h not in texts]
        if unknown:
            raise DataError(f"history item {unknown[0]!r} (row {r.key}) is not in items.parquet", file=train_path,
                            field="history")
        htexts = [texts[h] for h in hist]
        prompts.append(user_message([lines[h] for h in hist], lines[r.item_id], int(r.label), cfg.data, style))
        inputs.append(input_text(htexts, texts[r.item_id]))
        hists.append(hist)
    return pd.DataFrame({
        "key": pool["key"], "user_id": pool["user_id"], "pos": pool["pos"].astype("int64"),
        "item_id": pool["item_id"], "label": pool["label"].astype("int8"), "history": hists,
        "prompt": prompts, "input_text": inputs,
    })


def pool_hash(pool: pd.DataFrame, style: str = DEFAULT_STYLE) -> str:
    return fingerprint.pool_hash(system_prompt(style), pool["key"], pool["prompt"])


def resolve_cot_model(run_dir: Path, cfg: Config) -> tuple[Path | None, dict[str, Any]]:
    """(model_path for make_backend, identity recorded in the manifest)."""
    from llmcf.llm.backends.factory import backend_name

    ident: dict[str, Any] = {"backend": backend_name(cfg.llm), "endpoint": cfg.llm.endpoint}
    run = RunDir(run_dir)
    tuned = run.recgen_model
    if not cfg.recgen.skip and tuned.is_dir():
        # the path relative to the run directory: the same run reached by another path is the same generation
        ident.update(kind="recgen", path=tuned.relative_to(run.root).as_posix(),
                     fingerprint=fingerprint.dir_fingerprint(tuned))
        return tuned, ident
    ident.update(kind="base", name=cfg.llm.model)
    return None, ident


def sampling_params(cfg: Config, seed: int = 0) -> SamplingParams:
    c = cfg.cot
    return SamplingParams(n=c.candidates, temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
                          max_new_tokens=c.max_new_tokens, seed=seed)


def _shard_path(cot_dir: Path, k: int) -> Path:
    return shards.shard_path(cot_dir, k)


def _shard_complete(path: Path, keys: list[str], n: int) -> bool:
    return shards.shard_complete(path, keys, lambda r: len(r.get("candidates", [])) == n)


def _prepare_folder(cot_dir: Path, gen_id: str) -> str:
    """Archive a generation made with another config; restore this config's earlier generation if one was kept."""
    return shards.prepare_folder(cot_dir, gen_id, ("pool.parquet", *SCORE_FILES))


def _token_counter(backend) -> tuple[Callable[[str], int], str]:
    """Per-text token count for the progress bar (exact when the backend has a tokenizer); backends that report
    ``last_stats["new_tokens"]`` after each call are read from that instead."""
    if hasattr(backend, "count_tokens"):
        return backend.count_tokens, "tok/s"
    tok = getattr(backend, "tokenizer", None)
    if tok is not None and hasattr(tok, "encode"):
        return (lambda s: len(tok.encode(s, add_special_tokens=False))), "tok/s"
    return (lambda s: max(1, len(s) // 4)), "~tok/s"  # rough: 4 characters per token


def shard_rows(pool: pd.DataFrame, k: int, cfg: Config) -> pd.DataFrame:
    """Rows [k·S, (k+1)·S) of the pool: shard k."""
    return executors.shard_rows(pool, k, cfg.cot.shard_size)


def generate_shard(backend, rows: pd.DataFrame, k: int, cfg: Config) -> tuple[list[dict], int, str]:
    """(records, new tokens, rate unit) of shard ``k``: its rows in ``llm.batch_size`` calls, call b seeded with
    ``cot.seed + 1_000_003·k + b`` — the one definition every executor runs, so a shard's text does not depend on
    which process or machine wrote it."""
    params = sampling_params(cfg)
    count, unit = _token_counter(backend)
    bs = max(1, cfg.llm.batch_size)
    records, new_tokens = [], 0
    for b in range(0, len(rows), bs):
        chunk = rows.iloc[b:b + bs]
        system = system_prompt(cfg.llm.prompt_style)
        prompts = [[{"role": "system", "content": system}, {"role": "user", "content": p}] for p in chunk["prompt"]]
        outs = backend.generate(prompts, sampling_params(cfg, seed=cfg.cot.seed + 1_000_003 * k + b))
        if len(outs) != len(prompts) or any(len(o) != params.n for o in outs):
            raise LLMCFError(f"generation backend returned {[len(o) for o in outs]} completions for "
                             f"{len(prompts)} prompts; expected {params.n} per prompt")
        stats = getattr(backend, "last_stats", None)
        if isinstance(stats, dict) and "new_tokens" in stats:
            new_tokens += int(stats["new_tokens"])
        else:
            new_tokens += sum(count(str(c)) for o in outs for c in o)
        for r, cands in zip(chunk.itertuples(index=False), outs):
            records.append({"key": r.key, "user_id": r.user_id, "pos": int(r.pos), "item_id": r.item_id,
                            "label": int(r.label), "candidates": [str(c) for c in cands]})
    return records, new_tokens, unit


class CotJob(executors.BackendJob):
    """The shard job of CoT generation (``llmcf.llm.executors``): one backend, ``generate_shard`` per shard."""

    columns = ("key", "user_id", "pos", "item_id", "label", "prompt")

    def __init__(self, cfg: Config, model_path: Path | None, backend=None):
        super().__init__(cfg.llm, model_path, backend)
        self.cfg, self.unit = cfg, "tok/s"

    def setup(self) -> None:
        super().setup()
        self.unit = _token_counter(self.backend)[1]

    def run(self, rows: pd.DataFrame, k: int) -> tuple[list[dict], int]:
        records, tokens, self.unit = generate_shard(self.backend, rows, k, self.cfg)
        return records, tokens


def run_cot_generate(run_dir: Path, cfg: Config, backend=None) -> Path:
    """Generate ``cot.candidates`` CoTs per pool row; resumable. Returns ``run_dir/cot/shards``."""
    run_dir = Path(run_dir)
    data_dir, cot_dir = RunDir(run_dir).data, RunDir(run_dir).cot
    train = _read_table(data_dir / "train.parquet", TRAIN_NEEDED, "llmcf data build")
    items = _read_table(data_dir / "items.parquet", ITEM_NEEDED, "llmcf data build")
    pool = build_pool(train, items, cfg, str(data_dir / "train.parquet"))
    if cfg.cot.shard_size < 1 or cfg.cot.candidates < 1:
        raise LLMCFError("cot.shard_size and cot.candidates must be >= 1")
    model_path, model_ident = resolve_cot_model(run_dir, cfg)
    params = sampling_params(cfg)
    phash = pool_hash(pool, cfg.llm.prompt_style)
    parts = {"pool_hash": phash, "sampling": {k: v for k, v in vars(params).items() if k != "seed"},
             "seed": cfg.cot.seed, "shard_size": cfg.cot.shard_size, "model": model_ident}
    gen_id, parts = shards.generation_for(cot_dir, parts)
    cot_dir.mkdir(parents=True, exist_ok=True)
    note = _prepare_folder(cot_dir, gen_id)
    print(f"[cot] generation {gen_id} ({model_ident['kind']} model): {note}")

    S, n_rows = cfg.cot.shard_size, len(pool)
    n_shards = (n_rows + S - 1) // S
    write_parquet(pool, cot_dir / "pool.parquet")  # deterministic: identical when resuming
    manifest = {"gen_id": gen_id, **parts, "rows": n_rows, "shards": n_shards, "complete": False,
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(cot_dir / "manifest.json", manifest)

    keys = pool["key"].tolist()
    pending = [k for k in range(n_shards) if not _shard_complete(_shard_path(cot_dir, k), keys[k * S:(k + 1) * S],
                                                                   params.n)]
    done_rows = n_rows - sum(len(keys[k * S:(k + 1) * S]) for k in pending)
    t0, new_tokens = time.perf_counter(), 0
    if pending:
        job = CotJob(cfg, model_path, backend)
        with EstimatingBar(total=n_rows, initial=done_rows, unit="row", desc="cot generate", dynamic_ncols=True,
                           rate_key="cot generate") as bar:
            for k, records, tokens in executors.run_shards(job, pool, pending, S, cfg.llm):
                shards.write_shard(cot_dir, k, records)
                new_tokens += tokens
                bar.update(len(records))
                bar.set_postfix({job.unit: f"{new_tokens / max(time.perf_counter() - t0, 1e-9):.1f}"})
    secs = time.perf_counter() - t0
    manifest.update(complete=True, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                    last_run={"shards_generated": len(pending), "seconds": round(secs, 1),
                              "new_tokens": new_tokens, "rows_per_s": round((n_rows - done_rows) / secs, 3)
                              if pending and secs > 0 else None})
    atomic_write_json(cot_dir / "manifest.json", manifest)
    print(f"[cot] {n_rows} rows in {n_shards} shards ({len(pending)} generated now, {secs:.0f}s)")
    return cot_dir / "shards"


def read_generation(run_dir: Path) -> tuple[dict, pd.DataFrame, list[dict]]:
    """(manifest, pool, shard records in pool order) of a complete generation; RunError if it is not complete."""
    cot_dir = RunDir(run_dir).cot
    mpath = cot_dir / "manifest.json"
    if not mpath.exists() or not (cot_dir / "pool.parquet").exists():
        raise RunError(f"{mpath} is missing: run `llmcf cot generate` first")
    manifest = json.loads(mpath.read_text())
    pool = pd.read_parquet(cot_dir / "pool.parquet")
    recs = shards.read_records(cot_dir, pool["key"].tolist(), manifest["shard_size"],
                               f"CoT generation {manifest['gen_id']}", "llmcf cot generate")
    return manifest, pool, recs
