"""Transformer blocks of the 4M encoder-decoder: attention through SDPA, SwiGLU or GELU MLPs.

Plain PyTorch (no Lightning). Boolean attention masks follow ``scaled_dot_product_attention``'s
convention: **True means "may attend"**. Every query row must keep at least one True (callers
unmask the diagonal or a null slot), otherwise SDPA returns NaN for that row.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

MlpType = Literal["swiglu", "gelu"]
AttentionImpl = Literal["auto", "sdpa", "matmul"]


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, impl: AttentionImpl = "auto"
) -> Tensor:
    """Softmax attention: (B, H, N, d), (B, H, M, d), (B, H, M, d) -> (B, H, N, d).

    ``impl="sdpa"`` calls ``F.scaled_dot_product_attention``; ``"matmul"`` spells it out
    (``naive_attention``). ``"auto"`` uses SDPA everywhere except for bf16 on the CPU, where
    SDPA's kernels with a boolean mask are 1.8-2.5x slower than two matmuls at 4M's sequence
    lengths (128 tokens, fwd + bwd, 2-core EPYC, torch 2.14, 2026-11-23: flash 28 ms, math
    backend 20 ms, matmul 11 ms per call; in float32 SDPA is the faster one, 16 vs 26 ms).

    Args:
        q: queries.
        k: keys.
        v: values.
        mask: bool, broadcastable to (B, H, N, M), True = may attend.
        impl: implementation.
    """
    if impl == "matmul" or (
        impl == "auto" and q.device.type == "cpu" and q.dtype == torch.bfloat16
    ):
        return naive_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class LayerNorm(nn.LayerNorm):
    """LayerNorm with an optional fixed zero bias (4M's "nobias" variants), eps 1e-6.

    Args:
        dim: normalized size.
        bias: learn a bias (True) or keep none (False).
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__(dim, eps=1e-6, bias=bias)


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """Hidden width of a SwiGLU MLP with the parameter count of a GELU MLP of ``mlp_ratio``.

    ``int(2 * mlp_ratio * dim / 3)``: 1024 for D=384, 2048 for 768, 2730 for 1024 (4M's sizes).
    """
    return int(2 * mlp_ratio * dim / 3)


class Mlp(nn.Module):
    """Position-wise MLP: SwiGLU ``fc2(silu(fc1 x) * fc3 x)`` or GELU ``fc2(gelu(fc1 x))``.

    Args:
        dim: model width D.
        mlp_ratio: hidden width over D (SwiGLU scales it by 2/3 to keep the parameter count).
        kind: ``"swiglu"`` or ``"gelu"``.
        bias: biases in the linear layers.

    Shapes: (..., D) -> (..., D).
    """

    def __init__(
        self, dim: int, mlp_ratio: float, kind: MlpType = "swiglu", bias: bool = False
    ) -> None:
        super().__init__()
        if kind not in ("swiglu", "gelu"):
            raise ValueError(f"mlp kind must be 'swiglu' or 'gelu', got {kind!r}")
        self.kind = kind
        hidden = swiglu_hidden(dim, mlp_ratio) if kind == "swiglu" else int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias) if kind == "swiglu" else None
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h = self.fc1(x)
        h = F.silu(h) * self.fc3(x) if self.fc3 is not None else F.gelu(h)
        return self.fc2(h)


class Attention(nn.Module):
    """Multi-head attention (self- or cross-) through ``F.scaled_dot_product_attention``.

    Args:
        dim: model width D.
        num_heads: heads H (D must be divisible by H).
        bias: biases in the q/k/v and output projections.
        qk_norm: LayerNorm on each head's queries and keys before the dot product.
        cross: cross-attention (queries from ``x``, keys/values from ``context``).
        impl: attention implementation (see ``attend``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        bias: bool = False,
        qk_norm: bool = False,
        cross: bool = False,
        impl: AttentionImpl = "auto",
    ) -> None:
        super().__init__()
        self.impl = impl
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.cross = cross
        head_dim = dim // num_heads
        if cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = LayerNorm(head_dim, bias) if qk_norm else nn.Identity()
        self.k_norm = LayerNorm(head_dim, bias) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None
    ) -> Tensor:
        """Attend.

        Args:
            x: (B, N, D) queries (and keys/values for self-attention).
            mask: bool, broadcastable to (B, H, N, M), True = may attend.
            context: (B, M, D) keys/values for cross-attention.

        Returns:
            (B, N, D).
        """
        h = self.num_heads
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            k, v = self.context_kv(context)
            return self.attend_kv(x, k, v, mask)
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=h)
        q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q, k, v, mask, self.impl)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of a context: (B, M, D) -> 2 x (B, H, M, d).

        Computed once per encoder pass when decoding token by token.
        """
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        return self.k_norm(k), v

    def attend_kv(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Cross-attention of queries ``x`` (B, N, D) to given keys/values -> (B, N, D)."""
        q = self.q_norm(rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads))
        out = attend(q, k, v, mask, self.impl)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))

    def forward_cached(self, x: Tensor, cache: dict[str, Tensor]) -> Tensor:
        """Self-attention of new tokens (B, n, D) to the cached ones and themselves (causal).

        ``cache`` holds ``"k"``/``"v"`` (B, H, t, d) of earlier tokens and is extended in place.
        The n new tokens attend every cached token and the new ones up to themselves.
        """
        q, k, v = rearrange(
            self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads
        )
        q, k = self.q_norm(q), self.k_norm(k)
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        n, total = q.shape[2], k.shape[2]
        mask = None
        if n > 1:  # new tokens see the past and themselves causally
            rows = torch.arange(total - n, total, device=x.device)[:, None]
            mask = torch.arange(total, device=x.device)[None, :] <= rows
        out = attend(q, k, v, mask, self.impl)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax attention spelled out: (B, H, N, d), (B, H, M, d) -> (B, H, N, d)."""
    scores = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class Block(nn.Module):
    """Pre-LN encoder block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``.

    Args:
        dim: width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden ratio.
        mlp: ``"swiglu"`` or ``"gelu"``.
        bias: biases in linear layers and LayerNorms.
        qk_norm: per-head query/key LayerNorm.
        drop_path: stochastic depth rate.
        attention: attention implementation (``attend``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp: MlpType = "swiglu",
        bias: bool = False,
        qk_norm: bool = False,
        drop_path: float = 0.0,
        attention: AttentionImpl = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, bias)
        self.attn = Attention(dim, num_heads, bias, qk_norm, impl=attention)
        self.norm2 = LayerNorm(dim, bias)
        self.mlp = Mlp(dim, mlp_ratio, mlp, bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, D) with a (B, 1, N, N) or (B, 1, 1, N) bool mask -> (B, N, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-LN decoder block: self-attention, cross-attention to the encoder, MLP.

    The cross-attention normalises queries and context separately (``query_norm``,
    ``context_norm``), as 4M does. Arguments as for ``Block``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp: MlpType = "swiglu",
        bias: bool = False,
        qk_norm: bool = False,
        drop_path: float = 0.0,
        attention: AttentionImpl = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, bias)
        self.self_attn = Attention(dim, num_heads, bias, qk_norm, impl=attention)
        self.query_norm = LayerNorm(dim, bias)
        self.context_norm = LayerNorm(dim, bias)
        self.cross_attn = Attention(dim, num_heads, bias, qk_norm, cross=True, impl=attention)
        self.norm2 = LayerNorm(dim, bias)
        self.mlp = Mlp(dim, mlp_ratio, mlp, bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, context: Tensor, self_mask: Tensor, cross_mask: Tensor) -> Tensor:
        """Decode.

        Args:
            x: (B, M, D) decoder tokens.
            context: (B, N, D) encoder output (projected, with positions re-added).
            self_mask: (B, 1, M, M) bool, True = may attend.
            cross_mask: (B, 1, 1, N) bool, True = a valid encoder token.

        Returns:
            (B, M, D).
        """
        x = x + self.drop_path(self.self_attn(self.norm1(x), self_mask))
        ctx = self.context_norm(context)
        x = x + self.drop_path(self.cross_attn(self.query_norm(x), cross_mask, ctx))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """This block's cross-attention keys/values of the (projected) encoder output."""
        return self.cross_attn.context_kv(self.context_norm(context))

    def step(
        self,
        x: Tensor,
        cache: dict[str, Tensor],
        cross_kv: tuple[Tensor, Tensor],
        cross_mask: Tensor,
    ) -> Tensor:
        """Incremental decoding (inference): new tokens (B, n, D) with a KV cache -> (B, n, D).

        Equal to ``forward`` on the whole prefix for the new positions when the decoder holds
        one causal sequence (``cache`` grows in place; ``cross_kv`` from ``context_kv``).
        """
        x = x + self.self_attn.forward_cached(self.norm1(x), cache)
        x = x + self.cross_attn.attend_kv(self.query_norm(x), *cross_kv, cross_mask)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module, embedding_std: float = 0.02) -> None:
    """MAE-style init: xavier-uniform linears (fused q/k/v as if separate), zero biases.

    A fused ``qkv`` (or ``kv``) weight is initialised with the bound its parts would get as
    separate D x D layers, so fusing does not change the init. ``nn.Embedding`` weights are
    drawn from N(0, ``embedding_std``) (4M: 0.02).
    """
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            fan_out, fan_in = sub.weight.shape
            parts = 3 if name.endswith("qkv") else 2 if name.endswith(".kv") else 1
            bound = math.sqrt(6.0 / (fan_in + fan_out / parts))
            nn.init.uniform_(sub.weight, -bound, bound)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            if sub.weight is not None:
                nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=embedding_std)
