"""Task heads on encoder tokens (B, L, D): classification and a light dense upsampler."""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn


class ClassificationHead(nn.Module):
    """Mean-pooled tokens -> LayerNorm -> Linear (4M's / MAE's fine-tuning head).

    ``forward(tokens (B, L, D)) -> logits (B, num_classes)``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: Tensor) -> Tensor:  # noqa: D102
        return self.linear(self.norm(tokens.mean(1)))


class DenseHead(nn.Module):
    """Token grid -> per-pixel outputs: 1x1 projection, then (2x upsample, 3x3 conv, GELU) stages.

    ``forward(tokens (B, g*g, D)) -> (B, out_channels, g*patch, g*patch)``. Light on purpose
    (about 0.3M parameters at D=256): the comparison is about the encoder, not the head.

    Args:
        dim: token width D.
        out_channels: outputs per pixel (classes, or 1 for depth).
        patch_size: upsampling factor, a power of two (one stage per factor 2).
        hidden: channels of the first stage (halved at every later stage, at least 32).
    """

    def __init__(self, dim: int, out_channels: int, patch_size: int, hidden: int = 128) -> None:
        super().__init__()
        stages = int(math.log2(patch_size))
        if 2**stages != patch_size:
            raise ValueError(f"patch_size must be a power of two, got {patch_size}")
        layers: list[nn.Module] = [nn.Conv2d(dim, hidden, 1)]
        channels = hidden
        for _ in range(stages):
            nxt = max(32, channels // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(channels, nxt, 3, padding=1),
                nn.GroupNorm(8, nxt),
                nn.GELU(),
            ]
            channels = nxt
        layers.append(nn.Conv2d(channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, tokens: Tensor) -> Tensor:  # noqa: D102
        grid = math.isqrt(tokens.shape[1])
        x = rearrange(tokens, "b (h w) d -> b d h w", h=grid, w=grid)
        return self.layers(x)
