"""Small building blocks shared by the tokenizer cores: ViT blocks, position embeddings, MLPs.

Everything here is plain PyTorch (no Lightning, no timm) so the tokenizers load in a notebook with
nothing but torch and einops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def sincos_pos_embed_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2D sine-cosine position embedding of a ``height x width`` grid, row-major.

    A quarter of the channels encodes the row with sines, a quarter with cosines, and the same for
    the column. The grid is built with ``indexing="ij"`` so the result is also correct for
    non-square grids (the original's helper is only right for square ones).

    Args:
        height: grid rows h.
        width: grid columns w.
        dim: embedding size D, a multiple of 4.
        temperature: wavelength base of the frequencies.

    Returns:
        (h * w, D) float32, token ``r * w + c`` is the cell at row r and column c.
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    row_angles = rearrange(rows, "h w -> (h w) 1") * omega
    col_angles = rearrange(cols, "h w -> (h w) 1") * omega
    return torch.cat(
        [row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1
    )


def resize_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Bicubically resample a grid position embedding to another grid size.

    Used so that a tokenizer trained at one resolution encodes others: token positions keep their
    meaning as *fractions of the image*, as in 4M's multi-resolution tokenizers.

    Args:
        pos_embed: (h0 * w0, D) embedding of the ``old_grid``.
        old_grid: (h0, w0).
        new_grid: (h, w).

    Returns:
        (h * w, D), the input itself when the grids are equal.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    grid = rearrange(pos_embed, "(h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return rearrange(grid, "1 d h w -> (h w) d")


class Attention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention``.

    Args:
        dim: token width D.
        num_heads: attention heads; D must be divisible by it.
        qkv_bias: whether the fused qkv projection has a bias (4M's ViTs do).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over all tokens.

        Args:
            x: (B, N, D) tokens.

        Returns:
            (B, N, D).
        """
        q, k, v = rearrange(
            self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    """Two-layer GELU MLP, ``D -> hidden -> D_out``.

    Args:
        dim: input width D.
        hidden_dim: hidden width.
        out_dim: output width (default D).
    """

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to the last axis.

        Args:
            x: (..., D).

        Returns:
            (..., D_out).
        """
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x: (B, N, D).

        Returns:
            (B, N, D).
        """
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTTrunk(nn.Module):
    """A stack of pre-norm blocks over a grid of tokens with a resizable sin-cos position embedding.

    The position embedding is computed for ``base_grid`` and bicubically resampled for any other
    grid, so a trunk trained on 8x8 tokens (64 px, patch 8) also runs on 12x12 or 16x16.

    Args:
        dim: token width D (multiple of 4 for the position embedding).
        depth: number of blocks.
        num_heads: attention heads per block.
        base_grid: (h0, w0) grid the position embedding is defined on.
        mlp_ratio: MLP hidden width as a multiple of D.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        base_grid: tuple[int, int],
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.base_grid = (int(base_grid[0]), int(base_grid[1]))
        # Non-persistent: the embedding is a pure function of the constructor arguments, so
        # checkpoints need not carry it (and stay loadable if the formula's dtype ever changes).
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(*self.base_grid, dim), persistent=False
        )
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """The position embedding for a token grid.

        Args:
            grid: (h, w).

        Returns:
            (h * w, D).
        """
        return resize_pos_embed(self.pos_embed, self.base_grid, grid)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Add positions and run the blocks.

        Args:
            x: (B, h * w, D) tokens in row-major grid order.
            grid: (h, w).

        Returns:
            (B, h * w, D), layer-normalised.
        """
        x = x + self.pos_embed_for(grid).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ResidualMLPBlock(nn.Module):
    """Pre-LN residual MLP block ``x + mlp(norm(x))`` (4M's BottleneckMLP block).

    Args:
        dim: width D.
        mlp_ratio: hidden width as a multiple of D.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x: (..., D).

        Returns:
            (..., D).
        """
        return x + self.mlp(self.norm(x))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-style refinement block: depthwise 7x7 conv, channel LayerNorm, pointwise MLP.

    4M appends two of these after unpatchifying ("out_conv") to smooth the checkerboard artefacts
    that independent per-patch linear outputs leave at patch borders.

    Args:
        channels: C.
        mlp_ratio: pointwise hidden width as a multiple of C.
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = Mlp(channels, round(channels * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """Refine a feature map.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, C, H, W).
        """
        y = rearrange(self.dwconv(x), "b c h w -> b h w c")
        y = self.mlp(self.norm(y))
        return x + rearrange(y, "b h w c -> b c h w")


def init_weights(module: nn.Module) -> None:
    """MAE-style initialisation, for ``model.apply``: xavier-uniform linears, zero biases.

    Args:
        module: any submodule; only ``nn.Linear`` and ``nn.LayerNorm`` are touched.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def check_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """The token grid of an image, or a clear error when the size is not a patch multiple.

    Args:
        height: image height H in pixels.
        width: image width W in pixels.
        patch_size: patch side p.

    Returns:
        (H / p, W / p).
    """
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the patch size {patch_size}"
        )
    return height // patch_size, width // patch_size


__all__ = [
    "Attention",
    "Block",
    "ConvNeXtBlock",
    "Mlp",
    "ResidualMLPBlock",
    "ViTTrunk",
    "check_grid",
    "init_weights",
    "resize_pos_embed",
    "sincos_pos_embed_2d",
]
