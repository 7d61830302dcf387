"""MLP VQ: the tokenizer core for global vectors (4M's BottleneckMLP tokenizers).

A vector of D numbers (the 10-d camera vector here; in 4M-21 the 207-d body pose and the DINOv2 /
ImageBind global embeddings) becomes ``num_tokens`` codes:

    standardise    (B, D) -> (B, D)                  (v - mean) / std, buffers set from data
    encoder        -> (B, hidden)                    linear + pre-LN residual MLP blocks
    to latents     -> (B, num_tokens, D_latent)      linear, einops split
    quantizer      -> z_q (B, num_tokens, D_latent), indices (B, num_tokens)
    decoder        -> (B, hidden) -> (B, D)          linear + residual blocks + linear
    de-standardise -> (B, D)

Standardisation matters because the camera vector mixes metres, unit directions and degrees; without
it the reconstruction loss (and the encoder's first layer) would be dominated by the field of view.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from fourm_lightning.tokenizers.layers import ResidualMLPBlock, init_weights
from fourm_lightning.tokenizers.quantizers import Quantizer, QuantizerOutput


def _mlp_stack(
    in_dim: int, hidden_dim: int, out_dim: int, depth: int, mlp_ratio: float
) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        *(ResidualMLPBlock(hidden_dim, mlp_ratio) for _ in range(depth)),
        nn.LayerNorm(hidden_dim),
        nn.Linear(hidden_dim, out_dim),
    )


class MLPVQ(nn.Module):
    """Vector-quantized MLP autoencoder for one vector per sample.

    Args:
        quantizer: the bottleneck (any ``Quantizer``); its ``dim`` is the per-token latent width.
        input_dim: vector length D.
        num_tokens: tokens per vector T.
        hidden_dim: width of the residual MLP trunks.
        depth: residual blocks in the encoder.
        decoder_depth: residual blocks in the decoder (default ``depth``).
        mlp_ratio: hidden width of each block as a multiple of ``hidden_dim``.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        quantizer: Quantizer,
        input_dim: int,
        num_tokens: int = 4,
        hidden_dim: int = 256,
        depth: int = 2,
        decoder_depth: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.input_dim = input_dim
        self.num_tokens = num_tokens
        latent = num_tokens * quantizer.dim
        # Persistent buffers: the statistics are part of the trained tokenizer and must travel
        # with its checkpoint.
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("std", torch.ones(input_dim))
        self.encoder = _mlp_stack(input_dim, hidden_dim, latent, depth, mlp_ratio)
        self.decoder = _mlp_stack(
            latent,
            hidden_dim,
            input_dim,
            depth if decoder_depth is None else decoder_depth,
            mlp_ratio,
        )
        self.encoder.apply(init_weights)
        self.decoder.apply(init_weights)

    @property
    def codebook_size(self) -> int:
        """K, the number of distinct tokens."""
        return self.quantizer.codebook_size

    # -- standardisation --------------------------------------------------------------------

    @torch.no_grad()
    def set_normalization(self, mean: Tensor, std: Tensor, eps: float = 1e-6) -> None:
        """Set the input statistics.

        Args:
            mean: (D,) per-entry mean.
            std: (D,) per-entry standard deviation; clamped to at least ``eps`` so that constant
                entries do not divide by zero.
            eps: smallest std kept.
        """
        mean = torch.as_tensor(mean, dtype=self.mean.dtype, device=self.mean.device)
        std = torch.as_tensor(std, dtype=self.std.dtype, device=self.std.device)
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"expected mean and std of shape ({self.input_dim},), "
                f"got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(eps))

    def fit_normalization(self, data: Tensor, eps: float = 1e-6) -> None:
        """Set the input statistics from a sample of vectors.

        Args:
            data: (N, D) vectors, N >= 2.
            eps: smallest std kept.
        """
        data = torch.as_tensor(data, dtype=torch.float32)
        if data.ndim != 2 or data.shape[1] != self.input_dim or data.shape[0] < 2:
            raise ValueError(f"expected data (N>=2, {self.input_dim}), got {tuple(data.shape)}")
        self.set_normalization(data.mean(0), data.std(0), eps)

    def normalize(self, v: Tensor) -> Tensor:
        """Standardise vectors.

        Args:
            v: (B, D) in data units.

        Returns:
            (B, D) standardised.
        """
        return (v - self.mean) / self.std

    def denormalize(self, v: Tensor) -> Tensor:
        """Undo ``normalize``.

        Args:
            v: (B, D) standardised.

        Returns:
            (B, D) in data units.
        """
        return v * self.std + self.mean

    # -- encode / decode --------------------------------------------------------------------

    def encode_latent(self, v: Tensor) -> Tensor:
        """Continuous pre-quantization latents.

        Args:
            v: (B, D) vectors in data units.

        Returns:
            (B, T, D_latent).
        """
        if v.ndim != 2 or v.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors (B, {self.input_dim}), got {tuple(v.shape)}")
        z = self.encoder(self.normalize(v))
        return rearrange(z, "b (t d) -> b t d", t=self.num_tokens)

    @torch.no_grad()
    def encode(self, v: Tensor) -> Tensor:
        """Tokenize without side effects (no codebook update, no gradient).

        Args:
            v: (B, D) vectors in data units.

        Returns:
            (B, T) int64 token indices.
        """
        return self.quantizer.latent_to_indices(self.encode_latent(v))

    def decode_latent(self, z_q: Tensor) -> Tensor:
        """Decode quantized latents.

        Args:
            z_q: (B, T, D_latent).

        Returns:
            (B, D) reconstruction in data units.
        """
        return self.denormalize(self.decoder(rearrange(z_q, "b t d -> b (t d)")))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Detokenize.

        Args:
            indices: (B, T) integer tokens.

        Returns:
            (B, D) reconstruction in data units.
        """
        if indices.ndim != 2 or indices.shape[1] != self.num_tokens:
            raise ValueError(f"expected indices (B, {self.num_tokens}), got {tuple(indices.shape)}")
        return self.decode_latent(self.quantizer.indices_to_latent(indices))

    def forward(self, v: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Autoencode (the training path; in training mode the quantizer updates its state).

        Compute the reconstruction loss on ``normalize(reconstruction)`` against ``normalize(v)``
        so every entry weighs the same whatever its unit.

        Args:
            v: (B, D) vectors in data units.

        Returns:
            ``(reconstruction, quantizer_output)``: reconstruction (B, D) in data units, indices
            (B, T).
        """
        quantized = self.quantizer(self.encode_latent(v))
        return self.decode_latent(quantized.z_q), quantized


__all__ = ["MLPVQ"]
