"""Quantizers: the discrete bottleneck every tokenizer core takes as a constructor argument.

Contract (``Quantizer``): a quantizer maps a batch of latent sequences ``z`` of shape (B, N, D) to

- ``z_q`` (B, N, D): the quantized latents, connected to ``z`` by a straight-through estimator in
  training so the encoder gets gradients;
- ``indices`` (B, N) int64 in ``[0, codebook_size)``: the tokens;
- ``loss``: a scalar to add to the reconstruction loss (commitment loss, or 0);
- usage statistics of this batch (share of the codebook used, perplexity), detached.

and back with ``indices_to_latent(indices) -> (B, N, D)``. ``latent_to_indices`` is the side-effect
free lookup used to tokenize (no EMA update, no dead-code restart, no gradient).

Two implementations wrap ``vector-quantize-pytorch``:

- ``CosineVQ``: 4M's quantizer. L2-normalised latents and codes, nearest code by cosine similarity,
  codebook updated by an exponential moving average (not by the optimizer), optional k-means init,
  and dead-code restart from the current batch.
- ``FSQQuantizer``: finite scalar quantization (each latent channel rounded to one of a few levels);
  no codebook state, no auxiliary loss, no dead codes. 4M advertised it but never implemented it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, VectorQuantize


@dataclass
class QuantizerOutput:
    """What a quantizer returns for a batch.

    Attributes:
        z_q: (B, N, D) quantized latents (straight-through in training mode).
        indices: (B, N) int64 code indices.
        loss: () scalar auxiliary loss (commitment loss; 0 when the quantizer has none, and in eval
            mode).
        share_used: () fraction of the codebook that occurs in ``indices`` (detached).
        perplexity: () exp(entropy) of the code histogram of ``indices`` (detached); equals the
            codebook size when codes are used uniformly.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    share_used: Tensor
    perplexity: Tensor


def codebook_usage(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Codebook usage statistics of a batch of indices.

    Args:
        indices: integer tensor of any shape; negative entries (padding) are ignored.
        codebook_size: K.

    Returns:
        ``(share_used, perplexity)``, two float32 scalars: the fraction of the K codes that occur,
        and exp(entropy) of the empirical code distribution (1 if one code is used, K if all are
        used equally). Both are 0 for an empty input.
    """
    flat = indices.detach().flatten().long()
    flat = flat[flat >= 0]
    counts = torch.bincount(flat, minlength=codebook_size).float()
    total = counts.sum()
    if total == 0:
        zero = counts.new_zeros(())
        return zero, zero
    probs = counts / total
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


def dead_code_threshold(
    batch_size: int, tokens_per_sample: int, codebook_size: int, coef: float = 32.0
) -> float:
    """4M's rule for the EMA dead-code threshold.

    A code is "dead" when its EMA cluster size falls below the mean number of tokens a code receives
    per batch divided by ``coef``: ``batch_size * tokens_per_sample / codebook_size / coef``.

    Args:
        batch_size: global batch size (all devices).
        tokens_per_sample: tokens per sample at the mean training resolution.
        codebook_size: K.
        coef: 4M's ``coef_ema_dead_code`` (32 in every config).

    Returns:
        The threshold to pass as ``CosineVQ(threshold_ema_dead_code=...)``.
    """
    return batch_size * tokens_per_sample / codebook_size / coef


class Quantizer(nn.Module, ABC):
    """Base class of the tokenizer bottlenecks (see the module docstring for the contract).

    Subclasses set ``dim`` (latent width D they take) and ``codebook_size`` (K).
    """

    dim: int
    codebook_size: int

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize a batch of latent sequences.

        In training mode this may update quantizer state (EMA codebook, dead-code restarts).

        Args:
            z: (B, N, D) latents.

        Returns:
            ``QuantizerOutput`` with z_q (B, N, D), indices (B, N) int64 and a scalar loss.
        """

    @abstractmethod
    def indices_to_latent(self, indices: Tensor) -> Tensor:
        """Look up the quantized latents of code indices.

        Args:
            indices: (B, N) integer codes in ``[0, codebook_size)``.

        Returns:
            (B, N, D) float latents, equal to ``forward(z).z_q`` in eval mode for the z that
            produced ``indices``.
        """

    @abstractmethod
    def latent_to_indices(self, z: Tensor) -> Tensor:
        """Tokenize latents without touching any state (no EMA, no restart, no gradient).

        Args:
            z: (B, N, D) latents.

        Returns:
            (B, N) int64 indices, equal to ``forward(z).indices`` in eval mode.
        """

    def _output(self, z_q: Tensor, indices: Tensor, loss: Tensor) -> QuantizerOutput:
        share_used, perplexity = codebook_usage(indices, self.codebook_size)
        return QuantizerOutput(z_q, indices, loss.reshape(()), share_used, perplexity)

    @staticmethod
    def _check_latent(z: Tensor, dim: int) -> None:
        if z.ndim != 3 or z.shape[-1] != dim:
            raise ValueError(f"expected latents of shape (B, N, {dim}), got {tuple(z.shape)}")


def _full_precision(z: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``z``'s device.

    ``vector-quantize-pytorch`` turns autocast off for CUDA only. Under CPU bf16 autocast its
    code similarities, EMA sums and code lookups ran in bf16, where codes closer than bf16's
    resolution tie and the lowest index wins, so the same config trained a different codebook
    on a CPU than on a GPU. (The quickstart's 256-code depth codebook, 400 steps: perplexity 58
    when the whole tokenizer trained in CPU bf16, 160 in float32; docs/RESULTS.md, "Quickstart".
    How much of that the quantizer's arithmetic caused was not separated.)
    """
    return torch.autocast(device_type=z.device.type, enabled=False)


class CosineVQ(Quantizer):
    """Cosine-similarity vector quantizer with an EMA codebook (4M's ``VectorQuantizerLucid``).

    Latents and codes are L2-normalised; a latent's code is the one of highest cosine similarity.
    The codebook is a buffer updated by an exponential moving average of the normalised latents
    assigned to each code, so only the commitment loss ``||sg(q) - l2norm(z)||²`` is trained by
    gradient descent. Codes whose EMA cluster size falls below ``threshold_ema_dead_code`` are
    replaced by random latents of the current batch at every training step (4M's ``batch_random``
    restart); ``dead_code_threshold`` computes 4M's value for it.

    The straight-through estimator is the plain one, ``q = n + sg(q - n)`` with ``n = l2norm(z)``
    (the library's default "rotation trick" is switched off to match 4M). The quantizer always
    runs in float32, also inside bf16 autocast, on every device.

    Args:
        dim: latent width D (4M: 32).
        codebook_size: number of codes K.
        decay: EMA decay of the codebook (4M's configs: 0.99).
        commitment_weight: weight of the commitment loss (4M: 1.0).
        kmeans_init: initialise the codebook by k-means on the first batch seen (in whatever mode
            that batch comes).
        kmeans_iters: k-means iterations for ``kmeans_init``.
        threshold_ema_dead_code: EMA cluster size under which a code is restarted; 0 disables
            restarts.
        sync_codebook: all-reduce codebook statistics across processes; None means "when
            torch.distributed is initialised".
    """

    def __init__(
        self,
        dim: int = 32,
        codebook_size: int = 1024,
        decay: float = 0.99,
        commitment_weight: float = 1.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
        sync_codebook: bool | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.vq = VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            decay=decay,
            commitment_weight=commitment_weight,
            use_cosine_sim=True,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            rotation_trick=False,
            sync_codebook=sync_codebook,
        )

    @property
    def codebook(self) -> Tensor:
        """(K, D) the current L2-normalised codes."""
        return self.vq.codebook

    @property
    def cluster_size(self) -> Tensor:
        """(K,) EMA count of latents assigned to each code (what dead-code restart watches)."""
        return self.vq._codebook.cluster_size[0]

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize; in training mode also update the EMA codebook and restart dead codes.

        Note that in training mode the returned ``z_q`` uses the codebook *before* this step's
        update, so ``indices_to_latent(indices)`` afterwards may differ slightly from it.

        Args:
            z: (B, N, D) latents (any scale; they are L2-normalised here).

        Returns:
            ``QuantizerOutput``: z_q (B, N, D) unit-norm codes, indices (B, N), commitment loss.
        """
        self._check_latent(z, self.dim)
        with _full_precision(z):
            z_q, indices, loss = self.vq(z.float())
        return self._output(z_q.to(z.dtype), indices.long(), loss)

    def indices_to_latent(self, indices: Tensor) -> Tensor:
        """Codes of indices (see ``Quantizer.indices_to_latent``).

        Args:
            indices: (B, N) integer codes.

        Returns:
            (B, N, D) unit-norm codes.
        """
        return self.vq.get_output_from_indices(indices.long())

    @torch.no_grad()
    def latent_to_indices(self, z: Tensor) -> Tensor:
        """Nearest code by cosine similarity (see ``Quantizer.latent_to_indices``).

        Args:
            z: (B, N, D) latents.

        Returns:
            (B, N) int64.
        """
        self._check_latent(z, self.dim)
        with _full_precision(z):
            similarity = F.normalize(z.float(), dim=-1) @ self.codebook.float().t()
        return similarity.argmax(dim=-1)


class FSQQuantizer(Quantizer):
    """Finite scalar quantization (Mentzer et al. 2023) with an implicit codebook.

    Each of the ``len(levels)`` latent channels is squashed with tanh and rounded to one of
    ``levels[i]`` values; the code index is the mixed-radix number of the per-channel levels, so
    ``codebook_size = prod(levels)``. There is no codebook to learn or collapse and no auxiliary
    loss; rounding uses a straight-through estimator.

    Args:
        levels: levels per channel, each at least 3 (e.g. [8, 5, 5, 5] gives 1000 codes).
        dim: latent width D the quantizer takes. ``None`` means ``len(levels)`` (no projection);
            otherwise the library adds linear projections D -> len(levels) -> D.
    """

    def __init__(self, levels: Sequence[int] = (8, 5, 5, 5), dim: int | None = None) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 3:
            # Levels of 2 need the library's "symmetry preserving" variant, which changes the
            # quantization grid; keep one well-tested grid instead.
            raise ValueError(f"FSQ levels must all be >= 3, got {levels}")
        self.levels = levels
        self.fsq = FSQ(levels=levels, dim=dim)
        self.dim = int(self.fsq.dim)
        self.codebook_size = math.prod(levels)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize (stateless, so training and eval mode behave the same).

        Args:
            z: (B, N, D) latents.

        Returns:
            ``QuantizerOutput``: z_q (B, N, D), indices (B, N), loss 0.
        """
        self._check_latent(z, self.dim)
        z_q, indices = self.fsq(z)
        return self._output(z_q, indices.long(), z.new_zeros((), dtype=torch.float32))

    def indices_to_latent(self, indices: Tensor) -> Tensor:
        """Latents of indices (see ``Quantizer.indices_to_latent``).

        Args:
            indices: (B, N) integer codes.

        Returns:
            (B, N, D).
        """
        return self.fsq.indices_to_codes(indices.long())

    @torch.no_grad()
    def latent_to_indices(self, z: Tensor) -> Tensor:
        """Indices of latents (see ``Quantizer.latent_to_indices``).

        Args:
            z: (B, N, D) latents.

        Returns:
            (B, N) int64.
        """
        self._check_latent(z, self.dim)
        return self.fsq(z)[1].long()

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Indices of *quantized* codes, the exact inverse of ``indices_to_latent``.

        ``latent_to_indices`` takes unbounded encoder latents (it squashes them with tanh before
        rounding), so it is not the inverse of ``indices_to_latent``; this is. Only defined
        without projections (``dim == len(levels)``), where the latent space is the code space.

        Args:
            codes: (B, N, len(levels)) values on the FSQ grid.

        Returns:
            (B, N) int64.
        """
        if self.fsq.has_projections:
            raise ValueError("codes_to_indices needs an FSQQuantizer without projection")
        return self.fsq.codes_to_indices(codes.float()).long()


__all__ = [
    "CosineVQ",
    "FSQQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "codebook_usage",
    "dead_code_threshold",
]
