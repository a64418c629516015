"""Build the configured generation backend (registry lookup, no if-chains)."""
from __future__ import annotations

from pathlib import Path

from llmcf.config import LLMConfig
from llmcf.errors import LLMCFError
from llmcf.llm.backend import BACKENDS, GenerationBackend


def _register_all() -> None:
    # Importing the modules registers their classes; vllm itself is only imported when that backend is built.
    import llmcf.llm.hf_backend  # noqa: F401
    import llmcf.llm.openai_backend  # noqa: F401
    import llmcf.llm.vllm_backend  # noqa: F401


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
