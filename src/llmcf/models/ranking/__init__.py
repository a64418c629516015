"""Ranking (CTR) backbones, one per file, looked up by name (case-insensitive) in ``BACKBONES``.

Every backbone is built as ``cls(schema, embed_dim=32, mlp=(200, 80), dropout=0.1, extra_dim=0, **specific)`` and
called as ``model(batch, extra=None)`` → ``{"logit": [B] pre-sigmoid, "losses": {}}``. ``extra`` is the ICT output
[B, extra_dim], required exactly when ``extra_dim > 0``.
"""
from llmcf.registry import Registry

BACKBONES: Registry = Registry("ranking backbone")

from llmcf.models.ranking import autoint, dcn, dcnv2, deepfm, din, xdeepfm  # noqa: E402,F401  (registration)

__all__ = ["BACKBONES"]
