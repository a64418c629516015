"""Device choice for training, evaluation and serving (``train.device``, ``serve.device``): one resolver, no silent
fallback, plus the small helpers that move a batch and pick the autocast dtype."""
from __future__ import annotations

import re

import torch

from llmcf.config import ConfigError

_CUDA = re.compile(r"cuda(:\d+)?")


def resolve_device(name: str | None, field: str = "train.device") -> torch.device:
    """auto -> cuda when available, else cpu; cpu; cuda / cuda:N -> that GPU, or a ConfigError naming ``field``
    when torch sees no such GPU (never a fallback to cpu)."""
    value = str(name or "auto").strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if _CUDA.fullmatch(value):
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(f"{field}={value}: CUDA is not available here (torch {torch.__version__}, {built}); "
                              f"set {field}: cpu (or auto), or install a CUDA build of torch")
        dev = torch.device(value)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{field}={value}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    raise ConfigError(f"{field}='{name}': expected auto, cpu, cuda or cuda:N")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on ``device`` (the batch itself when already there)."""
    if all(v.device == device for v in batch.values()):
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter (cpu for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype:
    """float16 on cuda (with a gradient scaler), bfloat16 on cpu."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16
