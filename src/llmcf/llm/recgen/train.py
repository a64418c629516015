"""RecGen instruction tuning: full fine-tuning or LoRA on the rec + general mix, loss on answer tokens only.

A plain torch loop: AdamW, linear warm-up then cosine decay, gradient accumulation, ``max_steps`` (else
``epochs`` over the mix). The loss is the mean NLL over the answer tokens of each optimizer step; logits are computed
only at answer positions (a rec prompt of ~400 tokens has 2 answer tokens), which saves most of the LM-head cost.

Outputs in ``run_dir/llm/recgen/``:
    model/            the tuned model (LoRA merged into the base, so it loads as a plain HF model), with
                      ``recgen_train.json``: training config, data summary, loss curve, timing
    ckpt/             resumable checkpoint every ``recgen.save_every`` steps (trainable weights + AdamW moments as
                      safetensors, step and loss curve as JSON); removed once the model is saved
Re-running with the same config and data returns the saved model at once, or resumes from the checkpoint.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from llmcf.config import Config
from llmcf.fingerprint import recgen_fingerprint
from llmcf.errors import LLMCFError
from llmcf.io import atomic_write_json
from llmcf.llm.backends.hf import resolve_dtype
from llmcf.llm.models import install_dir, resolve_model
from llmcf.llm.recgen.data import (IGNORE, build_sft_mix, collate, examples_digest, recgen_dir,
                                   tokenize_example)
from llmcf.llm.recgen.summary import trained_on, trained_on_line

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INFO_FILE = "recgen_train.json"


def token_nll(model, batch):
    """Per-token NLL at answer positions: (nll [M], row index [M]) for a right-padded batch with labels."""
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                use_cache=False).last_hidden_state
    target = batch["labels"][:, 1:]
    sel = target != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][sel]).float()
    rows = sel.nonzero()[:, 0]
    return F.cross_entropy(logits, target[sel], reduction="none"), rows


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def prepare_model(model, method: str, r: int, alpha: int, dropout: float, layers: int | None = None):
    """LoRA-wrap (peft) or unfreeze every parameter (full fine-tuning). ``layers`` (LoRA only): adapt only the top
    ``layers`` decoder layers; nothing below them needs a gradient, so the backward pass stops there."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method != "lora":
        raise LLMCFError(f"recgen.method: expected 'full' or 'lora', got '{method}'")
    from peft import LoraConfig, get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present]
    if not targets:
        raise LLMCFError(f"LoRA: none of {LORA_TARGETS} found in the model")
    extra = {}
    if layers is not None:
        total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if not 1 <= int(layers) <= total:
            raise LLMCFError(f"recgen.lora_layers={layers}: expected 1..{total} (the model's decoder layers) or null "
                             "for all")
        extra["layers_to_transform"] = list(range(total - int(layers), total))
    lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM",
                      **extra)
    return get_peft_model(model, lcfg)


def step_schedule(n_examples: int, batch_size: int, accum: int, total_steps: int, seed: int) -> list[np.ndarray]:
    """Micro-batches (example indices) for every step: seeded epoch permutations, concatenated."""
    need = total_steps * accum * batch_size
    rng = np.random.default_rng(seed)
    chunks, have = [], 0
    while have < need:
        chunks.append(rng.permutation(n_examples))
        have += n_examples
    flat = np.concatenate(chunks)[:need]
    return [flat[i:i + batch_size] for i in range(0, need, batch_size)]


def train_loop(model, tokenizer, encoded: list[dict], rc, total_steps: int, ckpt_dir: Path | None = None,
               fingerprint: str = "", progress: bool = True) -> list[dict]:
    """Optimise ``model`` in place; returns the loss curve [{step, loss, lr}]. Resumes from ``ckpt_dir`` if valid."""
    import torch
    from llmcf.estimate import EstimatingBar

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=rc.lr, weight_decay=0.0)
    warmup = max(1, int(round(rc.warmup_ratio * total_steps)))
    micro = step_schedule(len(encoded), rc.batch_size, rc.grad_accum, total_steps, rc.seed)
    curve: list[dict] = []
    start = 0
    if ckpt_dir is not None:
        start, curve = load_checkpoint(ckpt_dir, model, opt, fingerprint)
    for g in opt.param_groups:
        g.setdefault("initial_lr", rc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup), last_epoch=start - 1)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    amp = bool(rc.amp)
    model.train()
    bar = EstimatingBar(total=total_steps, initial=start, desc="recgen train", unit="step", disable=not progress,
                        dynamic_ncols=True, warmup_units=1, rate_key="recgen train")
    for step in range(start, total_steps):
        rows = micro[step * rc.grad_accum:(step + 1) * rc.grad_accum]
        chunk = max(1, int(rc.micro_batch or rc.batch_size))  # forward/backward passes of ≤ chunk rows (memory)
        batches = [collate([encoded[i] for i in mb[j:j + chunk]], pad) for mb in rows for j in range(0, len(mb), chunk)]
        n_tok = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
        total = 0.0
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                nll, _ = token_nll(model, b)
            loss = nll.sum() / max(1, n_tok)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "loss": round(total, 5), "lr": sched.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}", lr=f"{curve[-1]['lr']:.2e}")
        if ckpt_dir is not None and rc.save_every > 0 and (step + 1) % rc.save_every == 0 and step + 1 < total_steps:
            save_checkpoint(ckpt_dir, model, opt, step + 1, curve, fingerprint)
    bar.close()
    model.eval()
    return curve


# ---------------------------------------------------------------------------- checkpoints (safetensors + JSON)
def save_checkpoint(ckpt_dir: Path, model, opt, step: int, curve: list[dict], fingerprint: str) -> None:
    from safetensors.torch import save_file

    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.", dir=ckpt_dir.parent))
    try:
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(weights, str(tmp / "trainable.safetensors"))
        moments = {}
        for i, p in enumerate(opt.param_groups[0]["params"]):
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq", "step"):
                if key in st:
                    moments[f"{i}.{key}"] = torch_tensor(st[key]).cpu().contiguous()
        save_file(moments, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint, "curve": curve}))
        install_dir(tmp, ckpt_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def torch_tensor(x):
    import torch

    return x if isinstance(x, torch.Tensor) else torch.tensor(x)


def load_checkpoint(ckpt_dir: Path, model, opt, fingerprint: str) -> tuple[int, list[dict]]:
    from safetensors.torch import load_file

    state_path = ckpt_dir / "state.json"
    if not state_path.exists():
        return 0, []
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != fingerprint:
        print(f"[recgen] ignoring checkpoint {ckpt_dir} (made with another config or data)", flush=True)
        return 0, []
    weights = load_file(str(ckpt_dir / "trainable.safetensors"))
    named = dict(model.named_parameters())
    for n, t in weights.items():
        named[n].data.copy_(t.to(named[n].device))
    moments = load_file(str(ckpt_dir / "optimizer.safetensors"))
    for i, p in enumerate(opt.param_groups[0]["params"]):
        if f"{i}.exp_avg" in moments:
            opt.state[p] = {k: moments[f"{i}.{k}"].to(p.device) for k in ("exp_avg", "exp_avg_sq", "step")}
    print(f"[recgen] resuming from step {state['step']} ({ckpt_dir})", flush=True)
    return int(state["step"]), list(state["curve"])


# ---------------------------------------------------------------------------- stage
def total_steps_for(n_examples: int, rc) -> int:
    if rc.max_steps:
        return int(rc.max_steps)
    return max(1, math.ceil(rc.epochs * n_examples / (rc.batch_size * rc.grad_accum)))


def run_recgen_train(run_dir: Path, cfg: Config) -> Path:
    """Tune ``cfg.llm.model`` on the RecGen mix of ``run_dir``; returns ``run_dir/llm/recgen/model``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    rc = cfg.recgen
    out_dir = recgen_dir(run_dir) / "model"
    base = resolve_model(cfg.llm.model)
    examples, info = build_sft_mix(run_dir, cfg)
    train_dtype = resolve_dtype(cfg.llm.dtype, purpose="train")
    fingerprint = recgen_fingerprint(dict(vars(rc)), str(base), examples_digest(examples), train_dtype)
    info_path = out_dir / INFO_FILE
    if info_path.exists() and json.loads(info_path.read_text()).get("fingerprint") == fingerprint:
        print(f"[recgen] {out_dir} is up to date", flush=True)
        return out_dir
    if cfg.llm.threads:
        torch.set_num_threads(cfg.llm.threads)
    torch.manual_seed(rc.seed)

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = [e for e in (tokenize_example(tokenizer, x, rc.cutoff_len) for x in examples) if e is not None]
    info["dropped_too_long"] = len(examples) - len(encoded)
    if not encoded:
        raise LLMCFError(f"recgen: no training example fits recgen.cutoff_len={rc.cutoff_len}")
    total = total_steps_for(len(encoded), rc)
    print(f"[recgen] {rc.method} tuning of {base.name}: {len(encoded)} examples ({info['rec']} rec, "
          f"{info.get('general', 0)} general), {total} steps of {rc.batch_size}x{rc.grad_accum}", flush=True)
    t_on = trained_on(info, [e["kind"] for e in encoded],
                      step_schedule(len(encoded), rc.batch_size, rc.grad_accum, total, rc.seed), rc.num_rec, total)
    print(f"[recgen] {trained_on_line(t_on)}", flush=True)

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, train_dtype))
    if cfg.llm.device != "cpu" and torch.cuda.is_available():
        model.to("cuda" if cfg.llm.device == "auto" else cfg.llm.device)
    model = prepare_model(model, rc.method, rc.lora_r, rc.lora_alpha, rc.lora_dropout, rc.lora_layers)
    ckpt = recgen_dir(run_dir) / "ckpt"
    t0 = time.perf_counter()
    curve = train_loop(model, tokenizer, encoded, rc, total, ckpt_dir=ckpt, fingerprint=fingerprint)
    seconds = time.perf_counter() - t0
    if rc.method == "lora":
        model = model.merge_and_unload()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        record = {"fingerprint": fingerprint, "base_model": str(base), "config": cfg.to_dict()["recgen"],
                  "data": info, "trained_on": t_on, "examples": len(encoded), "steps": total, "train_seconds": round(seconds, 1),
                  "loss_first": curve[0]["loss"] if curve else None, "loss_last": curve[-1]["loss"] if curve else None,
                  "curve": curve}
        atomic_write_json(tmp / INFO_FILE, record)
        install_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(recgen_dir(run_dir) / "train_info.json", {k: v for k, v in record.items() if k != "fingerprint"})
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"[recgen] saved {out_dir} (loss {record['loss_first']} -> {record['loss_last']}, {seconds:.0f}s)", flush=True)
    return out_dir
