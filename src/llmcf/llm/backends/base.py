"""The generation-backend interface and its registry (hf, llamacpp, openai, vllm)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmcf.registry import Registry

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
Prompt = list  # list[Message]: one chat conversation, rendered with the model's chat template


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.6
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()
    """Strings that end a completion early (the stop string itself is not returned)."""


class GenerationBackend(Protocol):
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        """For each prompt, ``params.n`` completions (new text only, special tokens stripped)."""

    def score_yes_no(self, prompts: list[Prompt]) -> np.ndarray:
        """p(Yes) = softmax over the next-token logits of "Yes" and "No" after each prompt's assistant turn starts."""


BACKENDS: Registry = Registry("generation backend")


def generation_stats(new_tokens: int, t0: float, prompts: int) -> dict:
    """A backend's ``last_stats`` after a generate call that started at ``time.perf_counter() == t0``."""
    import time

    dt = time.perf_counter() - t0
    return {"new_tokens": new_tokens, "seconds": dt, "tokens_per_s": new_tokens / max(dt, 1e-9), "prompts": prompts}
