"""Offline LLM stage: generation backends, RecGen instruction tuning, CoT generation and selection.

    backends/  the generation backends (registry ``BACKENDS``; one file per backend: hf, llamacpp, openai, vllm) and
               ``make_backend``; add a backend with one file and one ``BACKEND_MODULES`` entry (backends/factory.py)
    recgen/    RecGen instruction data (prompts, general prompts), tuning, evaluation (p(Yes) AUC, MMLU, perplexity)
    cot/       CoT prompts, generation (sharded, resumable) and scoring / selection
    models.py  resolution of ``llm.model`` names (the embedded SmolLM2 GGUF -> a cached Hugging Face folder)

The module paths before this layout (``llmcf.llm.hf_backend``, ``llmcf.llm.cot_generate``, ...) still import: they
name the same module objects (``_MOVED``), so code written against them keeps working.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_MOVED = {
    "llmcf.llm.backend": "llmcf.llm.backends.base",
    "llmcf.llm.factory": "llmcf.llm.backends.factory",
    "llmcf.llm.hf_backend": "llmcf.llm.backends.hf",
    "llmcf.llm.openai_backend": "llmcf.llm.backends.openai",
    "llmcf.llm.vllm_backend": "llmcf.llm.backends.vllm",
    "llmcf.llm.rec_prompts": "llmcf.llm.recgen.prompts",
    "llmcf.llm.general_prompts": "llmcf.llm.recgen.general_prompts",
    "llmcf.llm.recgen_data": "llmcf.llm.recgen.data",
    "llmcf.llm.recgen_train": "llmcf.llm.recgen.train",
    "llmcf.llm.recgen_eval": "llmcf.llm.recgen.eval",
    "llmcf.llm.mmlu": "llmcf.llm.recgen.mmlu",
    "llmcf.llm.cot_prompts": "llmcf.llm.cot.prompts",
    "llmcf.llm.cot_generate": "llmcf.llm.cot.generate",
    "llmcf.llm.cot_score": "llmcf.llm.cot.score",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new path (one object under both names)."""

    def find_spec(self, name, path=None, target=None):
        if name in _MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system sets __spec__ to this alias spec: put it back
        return module

    def exec_module(self, module):  # already executed under its new name
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
