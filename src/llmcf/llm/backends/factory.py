"""Build the configured generation backend (registry lookup, no if-chains).

Adding a backend: one file here defining a ``GenerationBackend`` subclass registered with ``@BACKENDS.register(name)``
and one ``BACKEND_MODULES`` entry naming that file; its heavy imports belong inside the class, so a backend that is
not configured costs nothing."""
from __future__ import annotations

from pathlib import Path

from llmcf.config import LLMConfig
from llmcf.errors import LLMCFError
from llmcf.llm.backends.base import BACKENDS, GenerationBackend


BACKEND_MODULES: dict[str, str] = {
    "hf": "llmcf.llm.backends.hf",
    "openai": "llmcf.llm.backends.openai",
    "vllm": "llmcf.llm.backends.vllm",
}
"""Backend name -> the module that registers it (imported on demand; vllm itself only when that backend is built)."""


def _register_all() -> None:
    import importlib

    for module in BACKEND_MODULES.values():
        importlib.import_module(module)


def make_backend(cfg: LLMConfig, model_path: Path | None = None) -> GenerationBackend:
    """``cfg.backend`` built from ``cfg``; ``model_path`` (default: ``resolve_model(cfg.model)``) for local backends."""
    _register_all()
    try:
        cls = BACKENDS.get(cfg.backend)
    except KeyError as e:
        raise LLMCFError(f"llm.backend: {e.args[0]}") from None
    if cfg.backend.lower() == "openai":
        return cls.from_config(cfg, None)
    if model_path is None:
        from llmcf.llm.models import resolve_model

        model_path = resolve_model(cfg.model)
    return cls.from_config(cfg, Path(model_path))
