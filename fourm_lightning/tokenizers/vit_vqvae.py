"""ViT VQ-VAE: the tokenizer core for image-like modalities (4M's ``VQVAE``, ViT encoder/decoder).

Pipeline (shapes for a (B, C, H, W) input, patch p, grid h = H/p, w = W/p):

    input stem     (B, C, H, W) floats, or (B, H, W) class ids -> nn.Embedding -> (B, E, H, W)
    patchify       -> (B, h*w, p*p*C)          einops, row-major grid
    patch embed    -> (B, h*w, D_enc)          linear
    ViT encoder    -> (B, h*w, D_enc)          pre-norm blocks, resampled sin-cos positions
    quant proj     -> (B, h*w, D_latent)       linear to the quantizer's width
    quantizer      -> z_q (B, h*w, D_latent), indices (B, h, w)
    post-quant     -> (B, h*w, D_dec)          linear
    ViT decoder    -> (B, h*w, D_dec)
    out proj       -> (B, h*w, p*p*C_out)      (or p*p*C_refine with the conv refinement head)
    unpatchify     -> (B, C_out, H, W)         (+ ConvNeXt refinement + 1x1 conv when enabled)

Position embeddings are defined at ``image_size`` and bicubically resampled for other grids, so a
model trained at 64 px encodes 96 or 128 px inputs (more tokens, same meaning per token).

The loss is not computed here (it depends on the modality: MSE or smooth-L1 for maps, cross-entropy
over the logits for semantic segmentation); the LightningModule combines it with
``QuantizerOutput.loss``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from fourm_lightning.tokenizers.layers import ConvNeXtBlock, ViTTrunk, check_grid, init_weights
from fourm_lightning.tokenizers.quantizers import Quantizer, QuantizerOutput


class ViTVQVAE(nn.Module):
    """Vector-quantized autoencoder with ViT encoder and decoder.

    Args:
        quantizer: the bottleneck (any ``Quantizer``); its ``dim`` is the latent width.
        in_channels: input channels C of float inputs (ignored when ``num_classes`` is set).
        out_channels: output channels C_out; default ``num_classes`` (logits) for class-map inputs,
            else ``in_channels``.
        num_classes: if set, the input is a (B, H, W) integer class map embedded by a learned
            ``nn.Embedding(num_classes, class_embed_dim)`` (4M's semseg tokenizer).
        class_embed_dim: channels E of the class embedding.
        image_size: resolution (pixels) at which the position embeddings are defined.
        patch_size: patch side p.
        embed_dim: encoder width.
        depth: encoder blocks.
        num_heads: encoder attention heads.
        decoder_embed_dim: decoder width (default ``embed_dim``).
        decoder_depth: decoder blocks (default ``depth``).
        decoder_num_heads: decoder heads (default ``num_heads``).
        mlp_ratio: MLP hidden width as a multiple of the block width.
        refine_head: add two ConvNeXt blocks after unpatchifying (against patch-border
            artefacts), then a 1x1 conv to ``out_channels``.
        refine_channels: channels of the refinement head.
    """

    def __init__(
        self,
        quantizer: Quantizer,
        in_channels: int = 3,
        out_channels: int | None = None,
        num_classes: int | None = None,
        class_embed_dim: int = 16,
        image_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 192,
        depth: int = 4,
        num_heads: int = 3,
        decoder_embed_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        refine_head: bool = False,
        refine_channels: int = 32,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.image_size = image_size
        self.in_channels = class_embed_dim if num_classes is not None else in_channels
        self.out_channels = out_channels or num_classes or in_channels
        decoder_embed_dim = decoder_embed_dim or embed_dim
        base_grid = check_grid(image_size, image_size, patch_size)

        self.class_embed = (
            nn.Embedding(num_classes, class_embed_dim) if num_classes is not None else None
        )
        self.patch_embed = nn.Linear(self.in_channels * patch_size**2, embed_dim)
        self.encoder = ViTTrunk(embed_dim, depth, num_heads, base_grid, mlp_ratio)
        self.quant_proj = nn.Linear(embed_dim, quantizer.dim)
        self.post_quant_proj = nn.Linear(quantizer.dim, decoder_embed_dim)
        self.decoder = ViTTrunk(
            decoder_embed_dim,
            decoder_depth or depth,
            decoder_num_heads or num_heads,
            base_grid,
            mlp_ratio,
        )
        pixel_channels = refine_channels if refine_head else self.out_channels
        self.out_proj = nn.Linear(decoder_embed_dim, pixel_channels * patch_size**2)
        self.refine = (
            nn.Sequential(
                ConvNeXtBlock(refine_channels),
                ConvNeXtBlock(refine_channels),
                nn.Conv2d(refine_channels, self.out_channels, kernel_size=1),
            )
            if refine_head
            else None
        )
        # Only this module's own layers: the injected quantizer keeps its own initialisation.
        # (nn.Embedding keeps its default N(0, 1) init, which suits a class-embedding stem.)
        for name, child in self.named_children():
            if name != "quantizer":
                child.apply(init_weights)

    @property
    def codebook_size(self) -> int:
        """K, the number of distinct tokens."""
        return self.quantizer.codebook_size

    def num_tokens(self, resolution: int | tuple[int, int]) -> int:
        """Tokens per image at a resolution.

        Args:
            resolution: side S (square) or (H, W) in pixels, multiples of the patch size.

        Returns:
            (H / p) * (W / p).
        """
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        grid_h, grid_w = check_grid(height, width, self.patch_size)
        return grid_h * grid_w

    # -- encoder side -----------------------------------------------------------------------

    def prepare_input(self, x: Tensor) -> Tensor:
        """Apply the input stem.

        Args:
            x: (B, C, H, W) floats, or (B, H, W) integer class ids when ``num_classes`` is set.

        Returns:
            (B, C_in, H, W) floats, C_in = ``in_channels`` (or ``class_embed_dim``).
        """
        if self.class_embed is None:
            if x.ndim != 4 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
                )
            return x
        if x.ndim != 3 or x.is_floating_point():
            raise ValueError(f"expected an integer class map (B, H, W), got {tuple(x.shape)}")
        return rearrange(self.class_embed(x.long()), "b h w c -> b c h w")

    def encode_latent(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Continuous pre-quantization latents.

        Args:
            x: input as for ``prepare_input``, (B, C, H, W) or (B, H, W).

        Returns:
            ``(z, (h, w))``: z (B, h*w, D_latent) and the token grid.
        """
        x = self.prepare_input(x)
        p = self.patch_size
        grid = check_grid(x.shape[-2], x.shape[-1], p)
        patches = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)
        tokens = self.encoder(self.patch_embed(patches), grid)
        return self.quant_proj(tokens), grid

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Tokenize without side effects (no codebook update, no gradient).

        Args:
            x: (B, C, H, W) floats, or (B, H, W) class ids when ``num_classes`` is set.

        Returns:
            (B, H/p, W/p) int64 token indices.
        """
        z, (h, w) = self.encode_latent(x)
        indices = self.quantizer.latent_to_indices(z)
        return rearrange(indices, "b (h w) -> b h w", h=h, w=w)

    # -- decoder side -----------------------------------------------------------------------

    def decode_latent(self, z_q: Tensor, grid: tuple[int, int]) -> Tensor:
        """Decode quantized latents.

        Args:
            z_q: (B, h*w, D_latent) quantized latents.
            grid: (h, w).

        Returns:
            (B, C_out, h*p, w*p) reconstruction (logits when ``num_classes`` is set).
        """
        p = self.patch_size
        tokens = self.decoder(self.post_quant_proj(z_q), grid)
        out = rearrange(
            self.out_proj(tokens),
            "b (h w) (p1 p2 c) -> b c (h p1) (w p2)",
            h=grid[0],
            w=grid[1],
            p1=p,
            p2=p,
        )
        return self.refine(out) if self.refine is not None else out

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Detokenize.

        Args:
            indices: (B, h, w) integer tokens.

        Returns:
            (B, C_out, h*p, w*p) reconstruction.
        """
        if indices.ndim != 3:
            raise ValueError(f"expected indices (B, h, w), got {tuple(indices.shape)}")
        h, w = indices.shape[-2:]
        z_q = self.quantizer.indices_to_latent(rearrange(indices, "b h w -> b (h w)"))
        return self.decode_latent(z_q, (h, w))

    def forward(self, x: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Autoencode (the training path; in training mode the quantizer updates its state).

        Args:
            x: (B, C, H, W) floats, or (B, H, W) class ids when ``num_classes`` is set.

        Returns:
            ``(reconstruction, quantizer_output)``: reconstruction (B, C_out, H, W); the
            quantizer output's ``indices`` reshaped to the grid, (B, H/p, W/p).
        """
        z, (h, w) = self.encode_latent(x)
        quantized = self.quantizer(z)
        reconstruction = self.decode_latent(quantized.z_q, (h, w))
        quantized.indices = rearrange(quantized.indices, "b (h w) -> b h w", h=h, w=w)
        return reconstruction, quantized


__all__ = ["ViTVQVAE"]
