"""Validation metrics of the tokenizers that torchmetrics does not ship, as ``Metric`` subclasses.

Every metric accumulates sums over the whole validation set (not means of per-batch means), so the
value does not depend on how the set is cut into batches, and syncs across processes through
torchmetrics' ``dist_reduce_fx="sum"``.

- ``DepthAbsRel``: mean of ``|pred - target| / target`` over valid pixels (target > 0).
- ``DepthDelta``: share of valid pixels with ``max(pred / target, target / pred) < threshold``
  (delta1 for the usual threshold 1.25).
- ``MeanAngularError``: mean angle in degrees between predicted and target normal vectors.
- ``CodebookUsage``: share of the codebook used and perplexity of the code histogram.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

# Pixels whose depth is at or below this (metres) carry no measurement and are left out.
_MIN_VALID_DEPTH = 1e-6


def _valid_depth(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    mask = target > _MIN_VALID_DEPTH
    # Clamp the prediction: a tokenizer can output 0 or negative depth, which must count as a
    # large error, not as a division by zero.
    return pred[mask].float().clamp_min(_MIN_VALID_DEPTH), target[mask].float()


class DepthAbsRel(Metric):
    """Absolute relative depth error, ``mean(|pred - target| / target)`` over valid pixels.

    ``update(pred, target)`` takes two depth tensors of the same shape (any, e.g. (B, 1, H, W)),
    in the same unit; pixels with ``target <= 0`` are ignored.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("error_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate a batch. Shapes: pred and target identical, e.g. (B, 1, H, W)."""
        pred, target = _valid_depth(pred, target)
        self.error_sum += ((pred - target).abs() / target).sum().double()
        self.count += target.numel()

    def compute(self) -> Tensor:
        """The AbsRel over everything seen (NaN if no valid pixel was seen)."""
        return (self.error_sum / self.count).float()


class DepthDelta(Metric):
    """Share of valid pixels with ``max(pred / target, target / pred) < threshold``.

    Args:
        threshold: 1.25 gives the usual delta1 (1.25**2 and 1.25**3 give delta2 and delta3).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = 1.25) -> None:
        super().__init__()
        if threshold <= 1:
            raise ValueError(f"threshold must be > 1, got {threshold}")
        self.threshold = threshold
        self.add_state("hits", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate a batch. Shapes: pred and target identical, e.g. (B, 1, H, W)."""
        pred, target = _valid_depth(pred, target)
        ratio = torch.maximum(pred / target, target / pred)
        self.hits += (ratio < self.threshold).sum().double()
        self.count += target.numel()

    def compute(self) -> Tensor:
        """The share of pixels within the threshold (NaN if none was seen)."""
        return (self.hits / self.count).float()


class MeanAngularError(Metric):
    """Mean angle in degrees between predicted and target vectors along a channel dimension.

    Vectors need not be unit length (both are normalised); target vectors of (near) zero length
    mark unlabelled pixels and are ignored.

    Args:
        dim: the vector (channel) dimension of the inputs, 1 for (B, 3, H, W) normal maps.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.add_state("angle_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate a batch. Shapes: identical, e.g. (B, 3, H, W) with ``dim=1``."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        pred, target = pred.double(), target.double()
        target_norm = target.norm(dim=self.dim)
        valid = target_norm > 1e-6
        # atan2(|a x b|, a . b) is accurate for small and large angles alike, unlike acos(a . b),
        # whose rounding error near 0 degrees is larger than the errors being measured.
        cross = torch.linalg.cross(pred, target, dim=self.dim).norm(dim=self.dim)
        dot = (pred * target).sum(dim=self.dim)
        angle = torch.rad2deg(torch.atan2(cross, dot))
        self.angle_sum += angle[valid].sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """The mean angular error in degrees (NaN if nothing was seen)."""
        return (self.angle_sum / self.count).float()


class CodebookUsage(Metric):
    """Codebook usage over everything seen: share of codes used, and perplexity.

    ``compute`` returns ``{"share_used": ..., "perplexity": ...}``: the fraction of the K codes
    that occurred at least once, and exp(entropy) of the code histogram (K when all codes are
    used equally often, 1 when one code takes everything).

    Args:
        codebook_size: K.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, codebook_size: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.add_state(
            "counts", torch.zeros(codebook_size, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, indices: Tensor) -> None:
        """Accumulate a batch of code indices (any shape; negative entries are padding)."""
        flat = indices.detach().flatten().long()
        flat = flat[flat >= 0]
        if flat.numel() and int(flat.max()) >= self.codebook_size:
            raise ValueError(f"index {int(flat.max())} >= codebook size {self.codebook_size}")
        self.counts += torch.bincount(flat, minlength=self.codebook_size).double()

    def compute(self) -> dict[str, Tensor]:
        """``{"share_used": () float, "perplexity": () float}``."""
        total = self.counts.sum()
        if total == 0:
            nan = torch.tensor(math.nan)
            return {"share_used": nan, "perplexity": nan}
        probs = self.counts / total
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
        return {
            "share_used": (self.counts > 0).double().mean().float(),
            "perplexity": entropy.exp().float(),
        }


__all__ = ["CodebookUsage", "DepthAbsRel", "DepthDelta", "MeanAngularError"]
