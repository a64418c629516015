"""Client for any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, SGLang, TGI, llama.cpp, OpenAI).

Requests run concurrently on one ``httpx.AsyncClient`` with at most ``max_concurrency`` in flight; timeouts, 5xx and
429 answers are retried with exponential back-off (other 4xx fail at once). The public methods are synchronous, so
ordinary code calls them like the hf backend; inside a running event loop they run on a helper thread.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import threading

import numpy as np

from llmcf.errors import LLMCFError
from llmcf.llm.backends.base import BACKENDS, Prompt, SamplingParams

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIError(LLMCFError):
    """The server could not give an answer (after retries), or gave one we cannot use."""


def run_sync(coro_factory):
    """Run ``coro_factory()`` to completion from synchronous code, even if an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    box: dict = {}

    def target():
        try:
            box["v"] = asyncio.run(coro_factory())
        except BaseException as e:  # re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


@BACKENDS.register("openai")
class OpenAIBackend:
    def __init__(self, endpoint: str, model: str, max_concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 3, api_key: str | None = None, send_top_k: bool = True,
                 backoff_s: float = 0.5, progress: bool = True):
        if not endpoint:
            raise LLMCFError("llm.endpoint: backend 'openai' needs the base URL of a server, e.g. http://host:8000/v1")
        base = endpoint.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.model = model
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.send_top_k = send_top_k
        self.backoff_s = backoff_s
        self.progress = progress

    @classmethod
    def from_config(cls, cfg, model_path=None):
        return cls(cfg.endpoint, getattr(cfg, "api_model", None) or cfg.model, max_concurrency=cfg.max_concurrency,
                   timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, send_top_k=getattr(cfg, "send_top_k", True))

    # ---------------------------------------------------------------- transport
    async def _post(self, client, sem: asyncio.Semaphore, body: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + 0.1 * random.random()))
            async with sem:
                try:
                    r = await client.post(self.url, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    last = f"{type(e).__name__}: {e}"
                    continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError as e:
                    raise OpenAIError(f"{self.url}: answer is not JSON: {r.text[:200]!r}") from e
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code not in RETRY_STATUS:
                raise OpenAIError(f"{self.url}: request rejected ({last})")
        raise OpenAIError(f"{self.url}: no answer after {self.max_retries + 1} attempts (last error: {last})")

    async def _gather(self, bodies: list[dict], desc: str) -> list[dict]:
        import httpx
        from tqdm.auto import tqdm

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        sem = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        bar = tqdm(total=len(bodies), desc=desc, unit="req", disable=not self.progress, dynamic_ncols=True)

        async def one(client, body):
            res = await self._post(client, sem, body)
            bar.update(1)
            return res

        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers, limits=limits) as client:
                return await asyncio.gather(*(one(client, b) for b in bodies))
        finally:
            bar.close()

    def _body(self, messages: Prompt, **extra) -> dict:
        return {"model": self.model, "messages": list(messages), **extra}

    # ---------------------------------------------------------------- interface
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        n = max(1, int(params.n))
        out: list[list[str]] = [[] for _ in prompts]
        extra = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens}
        if self.send_top_k and params.top_k:
            extra["top_k"] = params.top_k
        for round_ in range(n + 1):  # servers may return fewer than n choices: ask again for the rest
            todo = [i for i in range(len(prompts)) if len(out[i]) < n]
            if not todo:
                return out
            if round_ == n:
                raise OpenAIError(f"{self.url}: server kept returning fewer than n={n} choices")
            bodies = [self._body(prompts[i], n=n - len(out[i]), seed=params.seed + 7919 * round_, **extra)
                      for i in todo]
            answers = run_sync(lambda: self._gather(bodies, "generate"))
            for i, ans in zip(todo, answers):
                texts = [(c.get("message") or {}).get("content") or "" for c in ans.get("choices", [])]
                out[i].extend(t.strip() for t in texts[: n - len(out[i])])
        return out

    def score_yes_no(self, prompts: list[Prompt]) -> np.ndarray:
        bodies = [self._body(p, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20) for p in prompts]
        answers = run_sync(lambda: self._gather(bodies, "p(Yes)"))
        return np.array([self._p_yes(a) for a in answers], dtype=np.float64)

    def _p_yes(self, ans: dict) -> float:
        try:
            top = ans["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise OpenAIError(f"{self.url}: the server returned no top_logprobs, so p(Yes) cannot be computed; "
                              "use a server with logprobs support (e.g. vLLM) or the hf backend") from None
        lp = {"Yes": -math.inf, "No": -math.inf}
        for t in top:
            tok = str(t.get("token", "")).strip()
            if tok in lp:
                lp[tok] = max(lp[tok], float(t["logprob"]))
        if not top:
            return 0.5
        floor = min(float(t["logprob"]) for t in top)  # a word outside the top list is at most this likely
        y = lp["Yes"] if lp["Yes"] > -math.inf else floor
        n = lp["No"] if lp["No"] > -math.inf else floor
        return float(1.0 / (1.0 + math.exp(n - y)))
