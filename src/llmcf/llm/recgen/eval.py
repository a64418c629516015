"""RecGen evaluation: rec ability (AUC/LogLoss of p(Yes) on test rows), 5-shot MMLU, general perplexity.

Writes ``run_dir/llm/recgen/eval_<tag>.json``. The model is ``model_path`` or the tuned ``run_dir/llm/recgen/model``;
p(Yes) and MMLU run through the configured local engine (llamacpp when selected: the tuned model is exported to GGUF
first; otherwise hf), perplexity through transformers (it needs the torch model). Perplexity is exp(mean NLL) over the answer tokens of the
held-out general rows (see recgen_data: with self-distilled data these are the base model's own answers, so the base
model's perplexity there is low by construction; the number then measures drift, not quality).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from llmcf.config import Config
from llmcf.errors import RunError
from llmcf.io import atomic_write_json
from llmcf.llm.recgen.prompts import rec_prompts_for
from llmcf.llm.recgen.data import (collate, general_examples, read_item_texts, read_split, recgen_dir,
                                   sample_rows, tokenize_example)


def rec_metrics(labels: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    both = len(np.unique(labels)) == 2
    return {"auc": float(roc_auc_score(labels, p)) if both else None,
            "logloss": float(log_loss(labels, p, labels=[0, 1])),
            "accuracy": float(np.mean((p >= 0.5) == labels)),
            "mean_p_yes": float(p.mean()), "positive_rate": float(labels.mean()), "n": int(len(labels))}


def perplexity(backend, examples, cutoff_len: int, batch_size: int = 4) -> dict:
    """exp(mean answer-token NLL) of ``examples`` under the backend's model."""
    import torch

    from llmcf.llm.recgen.train import token_nll

    tok = backend.tokenizer
    enc = [e for e in (tokenize_example(tok, x, cutoff_len) for x in examples) if e is not None]
    if not enc:
        return {"perplexity": None, "n": 0, "tokens": 0}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    from tqdm.auto import tqdm

    total, count = 0.0, 0
    with torch.no_grad():
        for i in tqdm(range(0, len(enc), batch_size), desc="perplexity", unit="batch", dynamic_ncols=True,
                      disable=not getattr(backend, "progress", True)):
            b = {k: v.to(backend.device) for k, v in collate(enc[i:i + batch_size], pad).items()}
            nll, _ = token_nll(backend.model, b)
            total += float(nll.sum())
            count += int(nll.numel())
    return {"perplexity": math.exp(total / count), "mean_nll": total / count, "n": len(enc), "tokens": count}


def run_recgen_eval(run_dir: Path, cfg: Config, model_path: Path | None = None, tag: str = "tuned") -> dict:
    """Evaluate one model and write ``eval_<tag>.json``; returns the same dict."""
    from llmcf.llm.backends.factory import backend_name, make_backend
    from llmcf.llm.backends.hf import HFBackend
    from llmcf.llm.recgen.mmlu import evaluate_mmlu

    run_dir = Path(run_dir)
    rc = cfg.recgen
    if model_path is None:
        model_path = recgen_dir(run_dir) / "model"
        if not (model_path / "config.json").exists():
            raise RunError(f"{model_path} is missing: run `llmcf recgen train` first (or evaluate the base model)")
    t0 = time.perf_counter()
    engine = backend_name(cfg.llm)
    if engine == "llamacpp":  # p(Yes) and MMLU through llama.cpp; perplexity below needs the torch model
        scorer = make_backend(cfg.llm, model_path)
        scorer.progress = True
    else:
        engine = "hf"
        scorer = None
    hf = None

    def hf_backend():
        nonlocal hf
        if hf is None:
            hf = HFBackend(model_path, batch_size=cfg.llm.batch_size, dtype=cfg.llm.dtype, device=cfg.llm.device,
                           threads=cfg.llm.threads)
        return hf

    backend = scorer or hf_backend()
    result: dict = {"tag": tag, "model": str(model_path), "engine": engine}
    if engine == "llamacpp":
        result["gguf"] = scorer.gguf_path.name
    else:
        result["dtype"] = backend.dtype

    test = sample_rows(read_split(run_dir, "test"), rc.eval_rows, rc.seed)
    style = cfg.llm.prompt_style
    prompts = rec_prompts_for(test, read_item_texts(run_dir, style), cfg.data, rc.history_items, style)
    result["rec"] = rec_metrics(test["label"].to_numpy(), backend.score_yes_no(prompts))

    if rc.mmlu_dir and rc.mmlu_subjects:
        result["mmlu"] = evaluate_mmlu(backend, rc.mmlu_dir, rc.mmlu_subjects, rc.mmlu_shots, rc.mmlu_max_questions)
    else:
        result["mmlu"] = {"skipped": "set recgen.mmlu_dir and recgen.mmlu_subjects to score MMLU"}

    _, held, ginfo = general_examples(run_dir, cfg)
    result["general"] = {**perplexity(hf_backend(), held, rc.cutoff_len), "source": ginfo.get("source")}
    info_path = recgen_dir(run_dir) / "train_info.json"
    if tag != "base" and info_path.exists():  # what the evaluated model was tuned on (llmcf.llm.recgen.summary)
        result["trained_on"] = json.loads(info_path.read_text()).get("trained_on")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(recgen_dir(run_dir) / f"eval_{tag}.json", result)
    mm = result["mmlu"].get("accuracy")
    auc, ppl = result["rec"]["auc"], result["general"]["perplexity"]
    print(f"[recgen eval:{tag}] p(Yes) AUC {auc:.4f} on {result['rec']['n']} test rows, "
          f"LogLoss {result['rec']['logloss']:.4f}, MMLU {f'{mm:.3f}' if mm is not None else '-'}, "
          f"general perplexity {ppl:.2f}" if auc is not None and ppl is not None else
          f"[recgen eval:{tag}] {result['rec']} {result['general']}", flush=True)
    return result
