"""Sequential (next-item retrieval) backbones, one per file, looked up by name (case-insensitive) in ``SEQ_BACKBONES``.

Every backbone is built as ``cls(n_items, n_users, hist_len, hidden=64, dropout=0.2, extra_dim=0, alpha=0.1,
**specific)`` and called as ``model(batch, extra=None)`` → ``{"user_vec": [B, hidden], "losses": {}}``; a batch holds
user [B], hist [B, L] (left-padded 0, most recent item last) and hist_len [B]. ``model.item_vectors()`` is the shared
item table [n_items, hidden]: the score of item i is ``user_vec · item_vectors()[i]``. ``extra`` is the ICT output
[B, extra_dim], required exactly when ``extra_dim > 0``.
"""
from llmcf.registry import Registry

SEQ_BACKBONES: Registry = Registry("sequential backbone")

from llmcf.models.sequential import gru4rec, sasrec, srgnn, youtubednn  # noqa: E402,F401  (registration)
from llmcf.models.sequential.base import SeqBackbone, SeqLLMCF, build_seq_model  # noqa: E402

__all__ = ["SEQ_BACKBONES", "SeqBackbone", "SeqLLMCF", "build_seq_model"]
