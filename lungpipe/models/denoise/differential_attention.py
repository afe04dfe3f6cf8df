"""Multi-head differential attention and ADD4RSC's Differential Denoise Layer (DDL).

Differential attention (Ye et al., "Differential Transformer", ICLR 2025) replaces one softmax map
by the difference of two, cancelling attention noise common to both:

    DiffAttn(X) = [softmax(Q1 K1ᵀ / √h) − λ · softmax(Q2 K2ᵀ / √h)] · V           (DiffT §2.1)
    λ = exp(λq1 · λk1) − exp(λq2 · λk2) + λ_init                                 (DiffT §2.1)
    λ_init = 0.8 − 0.6 · exp(−0.3 · (l − 1)),  l = 1, 2, … the layer number      (DiffT §2.1)
    head_i = (1 − λ_init) · Norm(DiffAttn_i(X));  MHDA = Concat(head_i) · W_O    (DiffT §2.1,
                                                                   "multi-head differential attention")

(We cite sections with the formulas; the equation numbers could not be checked offline.)

:func:`lambda_init_for_depth` takes the zero-based ``depth = l − 1`` (the convention of the
Differential Transformer's and ADD4RSC's released code); ADD4RSC passes depth 6 → 0.7008.

ADD4RSC's DDL (paper Sec. "Differential Denoise Layer"; sizes from the released code, DESIGN.md
§4a) is a pre-norm block over the time tokens:

    y = MHDA(RMSNorm(x)) + x,    z = SwiGLU(RMSNorm(y)) + y

with 8 heads of width h = 32 at d_model 256: Q, K, V = Linear(d → 2d, no bias); each head's Q and K
split into halves Q1, Q2 / K1, K2 of width h, V of width 2h; a per-head RMSNorm over 2h (its scale
shared by the heads); W_O = Linear(2d → d, no bias); SwiGLU hidden 2d. The code is our own; the two
attention maps are applied to V through :func:`torch.nn.functional.scaled_dot_product_attention`,
using [A1 − λA2]·V = A1·V − λ·A2·V.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lambda_init_for_depth(depth: int) -> float:
    """λ_init = 0.8 − 0.6·exp(−0.3·depth) for a zero-based depth (= layer number − 1)."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class SwiGLU(nn.Module):
    """Gated feed-forward block: ``W_out(SiLU(W_gate x) ⊙ W_in x)`` (Shazeer, 2020)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, hidden)
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MultiHeadDifferentialAttention(nn.Module):
    """Multi-head differential self-attention on ``(B, N, d_model)`` tokens.

    ``lambda_init`` is the constant of the λ re-parameterisation. Initialisation as in ADD4RSC's
    release: the learnable vectors λq1, λk1, λq2, λk2 (one row per head, width
    ``d_model // num_heads``) with PyTorch's ``kaiming_uniform_`` at its defaults (uniform on
    ±√(6 / head width)), the Q/K/V/O projections with ``xavier_uniform_``.
    """

    def __init__(self, d_model: int, num_heads: int, lambda_init: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.lambda_init = float(lambda_init)
        self.q_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.k_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.v_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out_proj = nn.Linear(2 * d_model, d_model, bias=False)
        self.lambda_q1 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.head_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lam in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.kaiming_uniform_(lam)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)

    def lambda_value(self) -> torch.Tensor:
        """λ per head, shape ``(num_heads,)``."""
        first = torch.exp((self.lambda_q1 * self.lambda_k1).sum(-1))
        second = torch.exp((self.lambda_q2 * self.lambda_k2).sum(-1))
        return first - second + self.lambda_init

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, 2 * self.head_dim).transpose(1, 2)  # (B, H, N, 2h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self._split_heads(self.q_proj(x))
        k = self._split_heads(self.k_proj(x))
        v = self._split_heads(self.v_proj(x))
        q1, q2 = q.split(self.head_dim, dim=-1)
        k1, k2 = k.split(self.head_dim, dim=-1)
        # Default scale of SDPA is 1/sqrt(query width) = 1/sqrt(h).
        out1 = F.scaled_dot_product_attention(q1, k1, v)
        out2 = F.scaled_dot_product_attention(q2, k2, v)
        lam = self.lambda_value().to(out1.dtype).view(1, self.num_heads, 1, 1)
        heads = self.head_norm(out1 - lam * out2) * (1.0 - self.lambda_init)
        return self.out_proj(heads.transpose(1, 2).reshape(b, n, 2 * self.d_model))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, lambda_init={self.lambda_init:.4f}"


class DifferentialDenoiseLayer(nn.Module):
    """Pre-norm block ``y = MHDA(RMSNorm(x)) + x; z = SwiGLU(RMSNorm(y)) + y`` on (B, N, d)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        lambda_init: float,
        ffn_hidden: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=1e-5)
        self.attn = MultiHeadDifferentialAttention(d_model, num_heads, lambda_init)
        self.ffn_norm = nn.RMSNorm(d_model, eps=1e-5)
        self.ffn = SwiGLU(d_model, ffn_hidden or 2 * d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.dropout(self.attn(self.attn_norm(x)))
        return y + self.dropout(self.ffn(self.ffn_norm(y)))
