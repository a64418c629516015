"""A small causal decoder for the ICT module: pre-RMSNorm blocks with rotary attention and a SwiGLU MLP.

Attention uses the fused kernel, or is computed explicitly in the layer whose weights are asked for (explanations).
Masks are boolean ``[B, T]`` "key present" vectors; each position always sees itself, so a row whose earlier keys
are all absent never produces NaNs, and an absent token is never read by any other position.

CPU cost notes (issue 14, benchmarks/results/profile.md): the softmax kernel is ~10x slower over fewer than 16 keys
than over 16, so the fused path pads the keys (and values) of short sequences to 16 with never-visible slots (same
result up to float summation order); queries and keys are rotated together; the last block can compute its output
at a subset of positions only (``keep``: the positions whose hidden states are read), which skips the queries,
output projection and MLP of the other positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) · g (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # = x * rsqrt(mean(x²) + eps) * weight, fused


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (rotate-half form) for head dimension ``head_dim`` (even)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def tables(self, t: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [T, hd] for positions 0..t-1."""
        freqs = torch.outer(torch.arange(t, device=device, dtype=self.inv_freq.dtype), self.inv_freq)
        freqs = torch.cat([freqs, freqs], -1)
        return freqs.cos().to(dtype), freqs.sin().to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [..., T, hd] rotated by position (rotate-half form)."""
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], -1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                need_weights: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, dim], allowed [B, 1, T, T'] bool (T' >= T: key slots past T are padding, never allowed), rope
        (cos, sin) -> (output [B, T, dim], attention [B, H, T, T] when ``need_weights`` else None; the fused kernel
        is used when the weights are not needed). ``keep`` (positions [P], fused path only): the output at those
        positions alone, [B, P, dim]."""
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        qk, v = RotaryEmbedding.rotate(qkv[:2], *rope), qkv[2]  # queries and keys rotated in one pass
        q, k = qk[0], qk[1]
        drop = self.attn_drop.p if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            attn = scores.masked_fill(~allowed[..., :t], float("-inf")).softmax(-1)
            y = F.dropout(attn, drop, self.training) @ v  # [B, H, T, hd]
        else:
            attn = None
            if allowed.shape[-1] > t:  # padded key slots (masked out): the softmax is much faster over >= 16 keys
                pad = (0, 0, 0, allowed.shape[-1] - t)
                k, v = F.pad(k, pad), F.pad(v, pad)
            if keep is not None:
                q, allowed = q[:, :, keep], allowed[:, :, keep]
                t = len(keep)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, t, d)), attn


class SwiGLU(nn.Module):
    """W2(silu(W1 x) * W3 x); hidden size defaults to ~8/3·dim rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 8 * ((8 * dim // 3 + 7) // 8)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderBlock(nn.Module):
    """x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x)), with residual dropout."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.mlp = SwiGLU(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                need_weights: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, attn = self.attn(self.norm1(x), allowed, rope, need_weights, keep)
        if keep is not None:
            x = x[:, keep]
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, attn


MIN_KEYS = 16
"""Fused attention pads shorter key sequences to this many slots (see the module docstring)."""


def causal_mask(present: torch.Tensor, keys: int | None = None) -> torch.Tensor:
    """present [B, T] bool -> allowed [B, 1, T, keys or T]: key j visible from i iff j <= i and (j present or
    j == i); key slots j >= T (padding) are never visible."""
    t = present.shape[1]
    keys = max(keys or t, t)
    tri = torch.ones(t, keys, dtype=torch.bool, device=present.device).tril()
    eye = torch.eye(t, keys, dtype=torch.bool, device=present.device)
    if keys > t:
        present = F.pad(present, (0, keys - t))
    return (tri & (present[:, None, :] | eye))[:, None]


class CausalDecoder(nn.Module):
    """``layers`` decoder blocks and a final RMSNorm."""

    def __init__(self, dim: int, layers: int = 2, heads: int = 2, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, dropout) for _ in range(layers))
        self.rope = RotaryEmbedding(dim // heads)
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, present: torch.Tensor, need_weights: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, dim], present [B, T] bool -> (hidden [B, T, dim], last layer's attention [B, H, T, T] when
        ``need_weights`` else None). ``keep`` (positions [P], not with ``need_weights``): hidden [B, P, dim] at
        those positions only, equal to ``hidden[:, keep]`` of the full pass."""
        if need_weights and keep is not None:
            raise ValueError("keep: the attention weights are computed over every position")
        t = x.shape[1]
        allowed = causal_mask(present, t if need_weights else max(t, MIN_KEYS))
        rope = self.rope.tables(t, x.device, x.dtype)
        attn = None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, attn = block(x, allowed, rope, need_weights and i == last, keep if i == last else None)
        return self.norm(x), attn
