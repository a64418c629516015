"""Loading a trained CTR model of a run directory for serving: its config, seed, weights and inputs.

``load_served(run_dir, tag, seed)`` reads run_dir/models/<tag>/seed_<s>/config.yaml (the config these weights were
trained with; runs trained before seeds kept their own config: <tag>/config.yaml), the seed's model.safetensors (default seed: best validation AUC), the vocabulary, items and feature schema, and for
LLM-CF models the retriever (bank, indexes, item vectors), the ICT's context (bank arrays, item text matrix: the ICT's
text buffers are not in the state dict) and the CoT texts; for a baseline model (``<backbone>+textemb|kd|kar``) the
frozen text tables its feature reads, rebuilt from the run as training built them. What it loads is named by ``version``: the tag, the seed
and the file-state fingerprint of ``watched_files`` when loading began.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from llmcf.config import Config, load_config
from llmcf.errors import DataError, RunError
from llmcf.fingerprint import ctr_config_hash, files_fingerprint, key_config_hash
from llmcf.publish import verify
from llmcf.rundir import RunDir
from llmcf.train.inputs import ContextInputs, load_context, load_model_inputs


@dataclass
class BaselineInputs:
    """What a baseline's ``build`` reads (``llmcf.train.baselines``): the feature schema, the vocabulary and the run
    directory (textemb: embed/items.npy; kar: the KAR texts and their cached embeddings; kd: nothing)."""

    schema: object
    vocab: object
    run_dir: Path
    rd: RunDir


@dataclass
class Served:
    """One loaded model and everything it needs to score (immutable once built)."""

    run_dir: Path
    tag: str
    requested_seed: int | None
    cfg: Config
    seed: int
    result: dict
    model_name: str
    model: torch.nn.Module
    inputs: object  # llmcf.train.inputs.ModelInputs
    fingerprint: str
    retriever: object | None = None  # llmcf.retrieval.retriever.Retriever
    context: ContextInputs | None = None
    cot_texts: list[str | None] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loaded_at: float = 0.0

    @property
    def ict(self) -> bool:
        return self.context is not None

    @property
    def version(self) -> str:
        return f"{self.tag}@seed{self.seed}:{self.fingerprint}"


def pick_seed(tag_dir: Path, seed: int | None) -> tuple[int, dict]:
    """(seed, result.json) of the requested seed, or of the one with the best validation AUC (ties: lowest seed)."""
    found = {}
    for d in sorted(tag_dir.glob("seed_*")):
        r, w = d / "result.json", d / "model.safetensors"
        if r.exists() and w.exists():
            try:
                found[int(d.name[5:])] = json.loads(r.read_text())
            except (ValueError, json.JSONDecodeError) as e:
                raise DataError(f"unreadable result: {e}", file=str(r)) from e
    if not found:
        raise RunError(f"{tag_dir}: no trained seed (seed_*/model.safetensors + result.json); train it with "
                       f"`llmcf train --run {tag_dir.parent.parent} ...` first")
    if seed is None:
        seed = min(found, key=lambda s: (-float(found[s].get("valid", {}).get("auc", float("-inf"))), s))
    elif seed not in found:
        raise RunError(f"{tag_dir}: no trained seed {seed} (have {sorted(found)})")
    return seed, found[seed]


def watched_files(run_dir: Path, tag: str, seed: int, requested_seed: int | None, ict: bool) -> list[Path]:
    """Files whose change means a new model or bank: the model's weights and the retrieval stage's outputs."""
    run = RunDir(run_dir)
    tag_dir = run.model(tag)
    files = [tag_dir / "summary.json", tag_dir / "config.yaml", run.seed(tag, seed) / "model.safetensors",
             run.seed(tag, seed) / "config.yaml"]
    if requested_seed is None:
        files += sorted(tag_dir.glob("seed_*/model.safetensors"))
    if ict:
        files += run.bank_files()
    return files


def load_served(run_dir: str | Path, tag: str, seed: int | None = None, device: str = "cpu") -> Served:
    """``device``: where the model scores (``serve.device``: cpu | cuda | cuda:N | auto)."""
    from safetensors.torch import load_file

    from llmcf.models.llmcf_model import build_model

    run = RunDir(run_dir)
    tag_dir = run.model(tag)
    if not tag_dir.is_dir():
        raise RunError(f"{tag_dir}: no such model (trained models here: {', '.join(run.trained_tags()) or 'none'})")
    seed_, result = pick_seed(tag_dir, seed)
    cfg_path = run.seed(tag, seed_) / "config.yaml"  # the config these weights were trained with
    if not cfg_path.exists():  # seeds trained before each seed kept its own config
        cfg_path = tag_dir / "config.yaml"
    if not cfg_path.exists():
        raise RunError(f"{cfg_path}: missing (written by `llmcf train`)")
    cfg = load_config(cfg_path)
    ict = bool(cfg.ict.enabled)
    # before reading: a file changing while we load shows up as a new version
    fingerprint = files_fingerprint(watched_files(run.root, tag, seed_, seed, ict))
    model_name = str(result.get("model", tag.split("+")[0]))
    warnings: list[str] = []
    want, have = key_config_hash(result.get("config_hash", "")), ctr_config_hash(cfg, model_name)
    if want and want != have:
        warnings.append(f"{cfg_path} was rewritten after seed {seed_} was trained (config hash {have} != {want} in "
                        "result.json): the weights loaded, but retrain if scores look off")
    inputs = load_model_inputs(run, int(cfg.data.history_len))
    retriever = context = None
    cot_texts: list[str | None] = []
    if ict:
        verify(run.root, "retrieve")  # never serve a bank left by an interrupted or mixed stage (llmcf.publish)
        retriever, context, cot_texts = _load_context(run, cfg, inputs, warnings)
        model = build_model(model_name, inputs.schema, cfg.model, cfg.ict, item_text=context.item_text_tensor,
                            cot_dim=context.cot_dim, cot_gaps=context.bank.cot_gaps)
    elif cfg.baseline.name:  # built as training builds it: its frozen text tables come from the run, not the weights
        from llmcf.train.baselines import get_baseline

        model = get_baseline(cfg.baseline.name).build(model_name, BaselineInputs(inputs.schema, inputs.vocab,
                                                                                 run.root, run), cfg)
    else:
        model = build_model(model_name, inputs.schema, cfg.model, None)
    wpath = run.seed(tag, seed_) / "model.safetensors"
    try:
        state = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise RunError(f"{wpath}: unreadable weights ({e}); retrain or restore the file") from e
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch: the data or model config changed since training
        raise RunError(f"{wpath} does not fit the model built from {cfg_path} and the run's vocabulary "
                       f"({str(e).strip().splitlines()[-1].strip()}): retrain with `llmcf train`") from e
    if missing or unexpected:
        raise RunError(f"{wpath}: weights do not match {model_name} (missing {missing[:3]}, unexpected "
                       f"{unexpected[:3]}): retrain with `llmcf train`")
    from llmcf.train.device import resolve_device

    model.to(resolve_device(device, "serve.device")).eval()
    if ict:  # every bank row's example tokens (features, CoT, label) computed once here, not per request
        model.ict.cache_examples(context.bank.all_rows())
    return Served(run.root, tag, seed, cfg, seed_, result, model_name, model, inputs, fingerprint,
                  retriever, context, cot_texts, warnings, time.time())


def _load_context(run: RunDir, cfg: Config, inputs, warnings: list[str]):
    from llmcf.retrieval.retriever import Retriever

    retriever = Retriever.load(run.root)  # the retrieval config the in-context ids were built with
    rc, mc = retriever.cfg, cfg.retrieval
    if (rc.k, rc.history_weight, rc.target_weight, rc.leakage, rc.balanced) != \
            (mc.k, mc.history_weight, mc.target_weight, mc.leakage, mc.balanced):
        warnings.append("retrieval/meta.json and the model's config.yaml disagree on retrieval settings; "
                        "serving with the ones of retrieval/meta.json (those of the saved index)")
    context = load_context(run, inputs.vocab, inputs.hist_len)
    frame = retriever.bank.frame
    if len(frame) != len(context.bank):
        raise RunError(f"{run.retrieval}: bank.parquet and the ContextBank disagree; rerun `llmcf retrieve`")
    cot_texts: list[str | None] = [None] * len(frame)
    if run.cot_selected.exists():
        sel = pd.read_parquet(run.cot_selected)
        aligned = len(sel) == len(frame) and "cot" in sel.columns and \
            (sel["user_id"].astype(str).to_numpy() == frame["user_id"].to_numpy()).all() and \
            (sel["pos"].to_numpy("int64") == frame["pos"].to_numpy("int64")).all()
        if aligned:
            cot_texts = sel["cot"].astype(str).tolist()
        else:
            warnings.append(f"{run.cot_selected} no longer matches retrieval/bank.parquet (rerun `llmcf retrieve`): "
                            "explanations come without CoT texts")
    return retriever, context, cot_texts
