"""Local generation with a transformers causal LM: batched, left-padded, KV-cached, seeded sampling.

Prompts are rendered with the tokenizer's chat template. Batches are formed from prompts of similar length (sorted),
so little compute goes to padding; results come back in the input order.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from llmcf.errors import LLMCFError
from llmcf.llm.backends.base import BACKENDS, Prompt, SamplingParams, generation_stats


def _pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively (CPU: oneDNN's AVX512-BF16 / AMX check; CUDA: the
    GPU's bf16 support). Where it does not, bf16 is emulated and slower than float32."""
    import torch

    if device.type == "cuda":  # no CUDA here: False, and loading the model onto it reports the error
        return torch.cuda.is_available() and bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: str = "auto", purpose: str = "inference") -> str:
    """The torch dtype name ``llm.dtype`` means on ``device``: an explicit value as is; ``auto`` = bfloat16 for
    inference where the device computes it natively, else float32, and float32 for training (``purpose="train"``)."""
    if str(dtype) != "auto":
        return str(dtype)
    if purpose == "train":
        return "float32"
    return "bfloat16" if native_bf16(_pick_device(device)) else "float32"


def render_chat(tokenizer, messages: Prompt, add_generation_prompt: bool = True) -> str:
    """The prompt text of one conversation (a plain ``role: content`` layout if the tokenizer has no template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def first_token_id(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if not ids:
        raise LLMCFError(f"tokenizer encodes {word!r} to no tokens")
    return ids[0]


@BACKENDS.register("hf")
class HFBackend:
    """transformers backend. ``model``/``tokenizer`` may be passed in directly (tests, training loops)."""

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 8, dtype: str = "auto",
                 device: str = "auto", progress: bool = True, model=None, tokenizer=None,
                 threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))

        if model is None or tokenizer is None:
            if model_path is None:
                raise LLMCFError("HFBackend needs model_path (or a model and tokenizer)")
            model_path = Path(model_path)
            if not (model_path / "config.json").exists():
                raise LLMCFError(f"{model_path}: not a Hugging Face model directory (no config.json)")
            dtype = resolve_dtype(dtype, device)
            torch_dtype = getattr(torch, dtype, None) if dtype in ("float32", "bfloat16", "float16") else None
            if torch_dtype is None:
                raise LLMCFError(f"llm.dtype: unknown dtype '{dtype}' (expected auto, float32, bfloat16, float16)")
            tokenizer = AutoTokenizer.from_pretrained(str(model_path))
            model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype)
            model.to(_pick_device(device))
        self.model = model.eval()
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.device = next(self.model.parameters()).device
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.eos_ids = sorted(e for e in eos if e is not None)
        self.last_stats: dict = {}

    @classmethod
    def from_config(cls, cfg, model_path: Path):
        return cls(model_path, batch_size=cfg.batch_size, dtype=cfg.dtype, device=getattr(cfg, "device", "auto"),
                   threads=getattr(cfg, "threads", None))

    # ---------------------------------------------------------------- helpers
    def _encode(self, texts: list[str]):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _length_order(self, texts: list[str]) -> np.ndarray:
        lens = [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        return np.argsort(-np.asarray(lens), kind="stable")

    def _bar(self, total: int, desc: str):
        from llmcf.estimate import EstimatingBar

        return EstimatingBar(total=total, desc=desc, unit="prompt", disable=not self.progress, dynamic_ncols=True,
                             rate_key=f"llm {desc}")

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        import torch

        texts = [render_chat(self.tokenizer, p) for p in prompts]
        out: list[list[str]] = [[] for _ in texts]
        order = self._length_order(texts)
        do_sample = params.temperature > 0
        n = max(1, int(params.n))
        new_tokens, t0 = 0, time.perf_counter()
        bar = self._bar(len(texts), "generate")
        with torch.no_grad():
            for b, start in enumerate(range(0, len(texts), self.batch_size)):
                idx = order[start:start + self.batch_size]
                enc = self._encode([texts[i] for i in idx])
                kwargs = dict(max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_ids,
                              pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
                if do_sample:
                    kwargs.update(do_sample=True, temperature=params.temperature, top_k=params.top_k or None,
                                  top_p=params.top_p, num_return_sequences=n)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
                # Seed per batch from the first prompt's index: reruns with the same inputs give the same text.
                torch.manual_seed(int(params.seed) * 1_000_003 + int(idx[0]))
                seqs = self.model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
                per_prompt = n if do_sample else 1  # greedy: one sequence, repeated n times below
                for j, i in enumerate(idx):
                    for row in seqs[j * per_prompt:(j + 1) * per_prompt]:
                        ids = row.tolist()
                        cut = next((k for k, t in enumerate(ids) if t in self.eos_ids), len(ids))
                        new_tokens += cut
                        out[i].append(cut_at_stop(self.tokenizer.decode(ids[:cut], skip_special_tokens=True),
                                                  params.stop).strip())
                    out[i] *= n // per_prompt
                dt = time.perf_counter() - t0
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{new_tokens / max(dt, 1e-9):.1f}")
        bar.close()
        self.last_stats = generation_stats(new_tokens, t0, len(texts))
        return out

    # ---------------------------------------------------------------- scoring
    def next_token_logits(self, texts: list[str], token_ids: list[int], desc: str = "score") -> np.ndarray:
        """Next-token logits after each (already rendered) text, restricted to ``token_ids``: [N, len(token_ids)]."""
        import torch

        res = np.zeros((len(texts), len(token_ids)), dtype=np.float64)
        order = self._length_order(texts)
        cols = torch.tensor(token_ids, device=self.device)
        bar = self._bar(len(texts), desc)
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self._encode([texts[i] for i in idx])
                logits = self.model(**enc, logits_to_keep=1, use_cache=False).logits[:, -1, :]
                res[idx] = logits.index_select(1, cols).float().cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return res

    def score_yes_no(self, prompts: list[Prompt]) -> np.ndarray:
        return score_yes_no(self, prompts)


def score_yes_no(backend, prompts: list[Prompt]) -> np.ndarray:
    """p(Yes) per prompt from one forward of ``backend`` (hf or llamacpp): softmax over the next-token logits of the
    first token of "Yes" and of "No", after the chat-rendered prompt."""
    texts = [render_chat(backend.tokenizer, p) for p in prompts]
    ids = [first_token_id(backend.tokenizer, "Yes"), first_token_id(backend.tokenizer, "No")]
    logits = backend.next_token_logits(texts, ids, desc="p(Yes)")
    return yes_probability(logits[:, 0], logits[:, 1])


def cut_at_stop(text: str, stop) -> str:
    """``text`` up to the first occurrence of any stop string (all of it when none occurs)."""
    cuts = [text.find(s) for s in (stop or ()) if s and s in text]
    return text[:min(cuts)] if cuts else text


def yes_probability(logit_yes: np.ndarray, logit_no: np.ndarray) -> np.ndarray:
    """softmax([yes, no])[0], computed stably."""
    return 1.0 / (1.0 + np.exp(np.asarray(logit_no, dtype=np.float64) - np.asarray(logit_yes, dtype=np.float64)))
