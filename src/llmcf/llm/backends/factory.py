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
    "llamacpp": "llmcf.llm.backends.llamacpp",
    "openai": "llmcf.llm.backends.openai",
    "vllm": "llmcf.llm.backends.vllm",
}
"""Backend name -> the module that registers it (imported on demand; vllm itself only when that backend is built)."""


def _register_all() -> None:
    import importlib

    for module in BACKEND_MODULES.values():
        importlib.import_module(module)


def backend_name(cfg: LLMConfig) -> str:
    """The engine ``cfg.backend`` names. ``auto`` is llamacpp when llama-cpp-python is installed and the model is the
    embedded SmolLM2 (its GGUF is the export template, so RecGen's tuned copy exports too), else hf."""
    name = str(cfg.backend).lower()
    if name == "auto":
        from llmcf.llm.backends.llamacpp import llama_cpp_available
        from llmcf.llm.models import SMOLLM2_NAME

        embedded = str(cfg.model).lower() in (SMOLLM2_NAME, "smollm2-135m-instruct")
        return "llamacpp" if embedded and llama_cpp_available() else "hf"
    return name


def hf_dtype_text(cfg: LLMConfig) -> str:
    """The hf engine's inference dtype as the engine line shows it (``auto`` resolved on this machine)."""
    from llmcf.llm.backends.hf import resolve_dtype

    real = resolve_dtype(cfg.dtype, cfg.device)
    return f"{real} (llm.dtype=auto)" if str(cfg.dtype) == "auto" else real


def engine_line(cfg: LLMConfig) -> str:
    """One line naming the generation engine a run will use (printed by ``llmcf run`` and the demo)."""
    from importlib.metadata import PackageNotFoundError, version

    name = backend_name(cfg)
    pkg = {"llamacpp": "llama-cpp-python", "hf": "transformers", "vllm": "vllm", "openai": "httpx"}.get(name)
    try:
        ver = f"{pkg} {version(pkg)}" if pkg else ""
    except PackageNotFoundError:
        ver = f"{pkg} not installed"
    how = {"llamacpp": "GGUF on CPU", "hf": "torch " + hf_dtype_text(cfg),
           "openai": f"endpoint {cfg.endpoint}"}.get(name, "")
    auto = " (llm.backend=auto" + ("" if name == "llamacpp" else "; pip install 'llmcf[llamacpp]' for the llama.cpp "
                                     "engine: less memory, not faster on a 2-core CPU here") + ")" if str(cfg.backend).lower() == "auto" else ""
    return f"LLM engine: {name} ({', '.join(x for x in (ver, how) if x)}){auto}"


def make_backend(cfg: LLMConfig, model_path: Path | None = None) -> GenerationBackend:
    """``cfg.backend`` built from ``cfg``; ``model_path`` (default: ``resolve_model(cfg.model)``) for local backends."""
    _register_all()
    name = backend_name(cfg)
    try:
        cls = BACKENDS.get(name)
    except KeyError as e:
        raise LLMCFError(f"llm.backend: {e.args[0]} (or 'auto')") from None
    if name == "openai":
        return cls.from_config(cfg, None)
    if model_path is None:
        from llmcf.llm.models import resolve_model

        model_path = resolve_model(cfg.model)
    return cls.from_config(cfg, Path(model_path))
