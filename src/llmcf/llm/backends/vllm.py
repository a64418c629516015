"""vLLM offline engine (GPU users): same interface as the hf backend, much faster generation at scale."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llmcf.errors import LLMCFError
from llmcf.llm.backends.base import BACKENDS, Prompt, SamplingParams
from llmcf.llm.backends.hf import yes_probability


@BACKENDS.register("vllm")
class VLLMBackend:
    def __init__(self, model_path: str | Path, dtype: str = "float32", **engine_kwargs):
        try:
            import vllm
        except ImportError as e:
            raise LLMCFError("backend 'vllm' needs the vllm package, which only has GPU (CUDA) builds; on this machine "
                             "use llm.backend=hf (local transformers) or llm.backend=openai with llm.endpoint pointing "
                             f"at a vLLM/SGLang/TGI server ({e})") from e
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model_path), dtype="auto" if dtype == "float32" else dtype, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    @classmethod
    def from_config(cls, cfg, model_path: Path):
        return cls(model_path, dtype=cfg.dtype)

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        sp = self._vllm.SamplingParams(n=max(1, params.n), temperature=params.temperature, top_k=params.top_k or -1,
                                       top_p=params.top_p, max_tokens=params.max_new_tokens, seed=params.seed)
        outs = self.llm.chat(list(prompts), sp, use_tqdm=True)
        return [[c.text.strip() for c in o.outputs] for o in outs]

    def score_yes_no(self, prompts: list[Prompt]) -> np.ndarray:
        yes = self.tokenizer.encode("Yes", add_special_tokens=False)[0]
        no = self.tokenizer.encode("No", add_special_tokens=False)[0]
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        outs = self.llm.chat(list(prompts), sp, use_tqdm=True)
        res = []
        for o in outs:
            lps = o.outputs[0].logprobs[0]  # {token_id: Logprob}
            floor = min(v.logprob for v in lps.values())
            y = lps[yes].logprob if yes in lps else floor
            n = lps[no].logprob if no in lps else floor
            res.append(float(yes_probability(y, n)))
        return np.asarray(res, dtype=np.float64)
