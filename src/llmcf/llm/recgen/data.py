"""The RecGen SFT mix: Yes/No recommendation instructions from the train split + general instruction data.

General data is either a JSON Lines file (or a folder of them) with ``instruction``/``input``/``output`` (multi-turn
rows, i.e. a non-empty ``history``, and rows with an empty instruction or output are skipped and counted), or, when
``recgen.general_data`` is None, *self-distilled* answers: the base model answers ``GENERAL_PROMPTS`` once before
tuning, cached in ``run_dir/llm/recgen/self_distill.jsonl``.

A seeded part of the general rows (``recgen.heldout_general``, at most a fifth) is held out of training for the
perplexity check of ``recgen eval``. The number of general training rows is ``num_rec · r / (1 − r)`` for
``r = recgen.general_ratio``, capped by what is available (the info dict reports the effective ratio).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import Config
from llmcf.errors import DataError
from llmcf.fingerprint import records_digest, self_distill_key
from llmcf.io import atomic_write_json, atomic_write_text
from llmcf.llm.prompt_style import DEFAULT_STYLE
from llmcf.llm.recgen.prompts import item_texts, rec_answer, rec_prompt
from llmcf.rundir import RunDir

IGNORE = -100
SAMPLE_NEEDED = ("item_id", "label", "history")


@dataclass
class SFTExample:
    messages: list[dict]
    answer: str
    kind: str  # "rec" | "general"


def recgen_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).recgen


# ---------------------------------------------------------------------------- rec instructions
def read_split(run_dir: Path, split: str) -> pd.DataFrame:
    path = RunDir(run_dir).need(RunDir(run_dir).split(split))
    df = pd.read_parquet(path)
    missing = [c for c in SAMPLE_NEEDED if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", file=str(path))
    return df


def read_item_texts(run_dir: Path, style: str = DEFAULT_STYLE) -> dict[str, str]:
    """The run's item lines for RecGen-style prompts in ``llm.prompt_style`` ``style``."""
    run = RunDir(run_dir)
    return item_texts(run.read_items(), file=str(run.items), style=style)


def sample_rows(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Seeded uniform sample of ``n`` rows without replacement (all rows if fewer), in file order."""
    if n >= len(df):
        return df
    idx = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[idx]


def rec_examples(df: pd.DataFrame, texts: dict[str, str], cfg: Config) -> list[SFTExample]:
    return [SFTExample(rec_prompt(list(h) if h is not None else [], t, texts, cfg.data, cfg.recgen.history_items,
                                  cfg.llm.prompt_style),
                       rec_answer(y), "rec")
            for h, t, y in zip(df["history"], df["item_id"], df["label"])]


# ---------------------------------------------------------------------------- general data
def read_general_jsonl(path: str | Path) -> tuple[list[SFTExample], dict]:
    """Single-turn rows of one JSON Lines file or of every ``*.jsonl`` in a folder, with counts of what was skipped."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise DataError("no such JSON Lines file (or folder without *.jsonl)", file=str(path), field="recgen.general_data")
    rows: list[SFTExample] = []
    counts = {"read": 0, "kept": 0, "skipped_multi_turn": 0, "skipped_empty": 0}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"not valid JSON ({e.msg})", file=str(f), line=lineno) from None
                if not isinstance(rec, dict):
                    raise DataError("expected a JSON object with instruction/input/output", file=str(f), line=lineno)
                counts["read"] += 1
                for key in ("instruction", "input", "output"):
                    if rec.get(key) is not None and not isinstance(rec[key], str):
                        raise DataError("expected a string", file=str(f), line=lineno, field=key)
                if rec.get("history"):
                    counts["skipped_multi_turn"] += 1
                    continue
                instr, inp, out = (rec.get(k) or "" for k in ("instruction", "input", "output"))
                if not instr.strip() or not out.strip():
                    counts["skipped_empty"] += 1
                    continue
                content = instr.strip() + (f"\n\n{inp.strip()}" if inp.strip() else "")
                rows.append(SFTExample([{"role": "user", "content": content}], out.strip(), "general"))
                counts["kept"] += 1
    return rows, counts


def self_distilled(run_dir: Path, cfg: Config) -> tuple[list[SFTExample], dict]:
    """The base model's own answers to GENERAL_PROMPTS (generated once, cached in the run directory)."""
    from llmcf.llm.backends.base import SamplingParams
    from llmcf.llm.recgen.general_prompts import GENERAL_PROMPTS
    from llmcf.llm.models import resolve_model

    base = resolve_model(cfg.llm.model)
    samples = max(1, cfg.recgen.self_distill_samples)
    key = self_distill_key(str(base), samples, cfg.recgen.self_distill_max_new_tokens, cfg.recgen.seed,
                           GENERAL_PROMPTS)
    path = recgen_dir(run_dir) / "self_distill.jsonl"
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    else:
        from llmcf.llm.backends.hf import HFBackend

        print(f"[recgen] self-distillation: the base model answers {len(GENERAL_PROMPTS)} general prompts "
              f"x {samples} (cached in {path})", flush=True)
        backend = HFBackend(base, batch_size=cfg.llm.batch_size, dtype=cfg.llm.dtype, device=cfg.llm.device,
                          threads=cfg.llm.threads)
        prompts = [[{"role": "user", "content": p}] for p in GENERAL_PROMPTS]
        params = SamplingParams(n=samples, temperature=0.7, top_k=50, top_p=0.9,
                                max_new_tokens=cfg.recgen.self_distill_max_new_tokens, seed=cfg.recgen.seed)
        answers = backend.generate(prompts, params)
        rows = [{"instruction": p, "input": "", "output": a} for p, cands in zip(GENERAL_PROMPTS, answers)
                for a in cands]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_json(meta_path, {"key": key, "model": str(base), "rows": len(rows)})
    out = [SFTExample([{"role": "user", "content": r["instruction"]}], r["output"].strip(), "general")
           for r in rows if r["output"].strip()]
    return out, {"read": len(rows), "kept": len(out), "skipped_empty": len(rows) - len(out), "source": "self-distilled"}


def general_examples(run_dir: Path, cfg: Config) -> tuple[list[SFTExample], list[SFTExample], dict]:
    """(train rows, held-out rows, info): a seeded split of the configured general data."""
    if cfg.recgen.general_data:
        rows, info = read_general_jsonl(cfg.recgen.general_data)
        info["source"] = str(cfg.recgen.general_data)
    else:
        rows, info = self_distilled(run_dir, cfg)
    perm = np.random.default_rng(cfg.recgen.seed + 1).permutation(len(rows))
    n_held = min(max(0, cfg.recgen.heldout_general), len(rows) // 5)
    held = [rows[i] for i in perm[:n_held]]
    train = [rows[i] for i in perm[n_held:]]
    info["heldout"] = n_held
    return train, held, info


def build_sft_mix(run_dir: Path, cfg: Config) -> tuple[list[SFTExample], dict]:
    """The shuffled training mix and a summary (counts, effective general share)."""
    rc = cfg.recgen
    if not 0.0 <= rc.general_ratio < 1.0:
        raise DataError(f"expected 0 <= general_ratio < 1, got {rc.general_ratio}", field="recgen.general_ratio")
    train = read_split(run_dir, "train")
    texts = read_item_texts(run_dir)
    rec = rec_examples(sample_rows(train, rc.num_rec, rc.seed), texts, cfg)
    general: list[SFTExample] = []
    info: dict = {"rec": len(rec), "rec_positive_share": float(np.mean([e.answer == "Yes" for e in rec])) if rec else 0}
    if rc.general_ratio > 0:
        pool, _, ginfo = general_examples(run_dir, cfg)
        want = int(round(len(rec) * rc.general_ratio / (1.0 - rc.general_ratio)))
        pick = np.random.default_rng(rc.seed + 2).permutation(len(pool))[:want]
        general = [pool[i] for i in np.sort(pick)]
        info.update(general_wanted=want, general=len(general), general_source=ginfo)
    mix = rec + general
    order = np.random.default_rng(rc.seed + 3).permutation(len(mix))
    mix = [mix[i] for i in order]
    info["general_share"] = len(general) / max(1, len(mix))
    return mix, info


def examples_digest(examples: list[SFTExample]) -> str:
    return records_digest(asdict(e) for e in examples)


# ---------------------------------------------------------------------------- tokenisation
def tokenize_example(tokenizer, ex: SFTExample, cutoff_len: int) -> dict | None:
    """input_ids = chat prompt + answer + EOS; labels = IGNORE on the prompt, the token ids on the answer.

    Returns None when the prompt alone does not fit ``cutoff_len`` (the caller counts these); long answers are cut.
    """
    from llmcf.llm.backends.hf import render_chat

    prompt = tokenizer(render_chat(tokenizer, ex.messages, True), add_special_tokens=False)["input_ids"]
    answer = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt) >= cutoff_len:
        return None
    answer = answer[: cutoff_len - len(prompt)]
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer, "kind": ex.kind}


def collate(batch: list[dict], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (IGNORE on padding)."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
