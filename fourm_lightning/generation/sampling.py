"""Sampling primitives: token schedules, temperature schedules, filtering, guidance.

Pure functions over tensors. Filtering (top-k, top-p) is applied **after** temperature scaling;
the original filtered the unscaled logits first (reference section 5.3), which makes top-p keep
a different set than the distribution that is actually sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

TokenSchedule = Literal["cosine", "linear"]
TemperatureSchedule = Literal["constant", "linear", "onex"]


def tokens_per_step(num_tokens: int, steps: int, schedule: TokenSchedule = "cosine") -> list[int]:
    """How many tokens each of ``steps`` decoding steps fills; the counts sum to ``num_tokens``.

    ``cosine`` (MaskGIT): step i fills ``round(n (s_i - s_{i+1}))`` with ``s_i = (1 + cos(pi i /
    T)) / 2`` and the last step the remainder (196 tokens in 8 steps: 7, 21, 32, 38, 38, 32, 21, 7).
    ``linear``: equal chunks, larger ones first. Zero-token steps are dropped; at most
    ``num_tokens`` steps remain.
    """
    if steps < 1:
        raise ValueError(f"decoding needs at least one step, got {steps}")
    steps = min(steps, max(num_tokens, 1))
    if schedule == "linear":
        base, extra = divmod(num_tokens, steps)
        counts = [base + (1 if i < extra else 0) for i in range(steps)]
    elif schedule == "cosine":
        s = [0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps + 1)]
        counts = [round(num_tokens * (s[i] - s[i + 1])) for i in range(steps - 1)]
        counts.append(num_tokens - sum(counts))
    else:
        raise ValueError(f"token schedule must be cosine or linear, got {schedule!r}")
    return [c for c in counts if c > 0]


def temperatures(
    temperature: float,
    counts: Sequence[int],
    schedule: TemperatureSchedule = "constant",
    min_temperature: float = 0.5,
    power: float = 0.5,
) -> list[float]:
    """Temperature of each decoding step.

    - ``constant``: ``temperature`` at every step;
    - ``linear``: ``temperature`` times the share of tokens still unfilled before the step;
    - ``onex``: from ``temperature`` down to ``min_temperature`` along ``x^-power``, weighted by
      the share still unfilled (4M's ``onex:min:power``).
    """
    total = max(sum(counts), 1)
    before = [1.0 - sum(counts[:i]) / total for i in range(len(counts))]
    if schedule == "constant":
        return [temperature] * len(counts)
    if schedule == "linear":
        return [temperature * share for share in before]
    if schedule == "onex":
        xs = torch.linspace(1, 100, max(len(counts), 2))[: len(counts)]
        ys = xs ** (-power)
        ys = (ys - ys.min()) / max(float(ys.max() - ys.min()), 1e-12)
        return [
            min_temperature + (temperature - min_temperature) * share * float(y)
            for share, y in zip(before, ys, strict=True)
        ]
    raise ValueError(f"temperature schedule must be constant, linear or onex, got {schedule!r}")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Keep the top-k logits and/or the smallest set with probability mass >= top_p.

    Args:
        logits: (..., V), already divided by the temperature.
        top_k: keep the k largest (0: off).
        top_p: nucleus mass in (0, 1) (0 or 1: off); the most likely token is always kept.

    Returns:
        (..., V) with the filtered-out entries at -inf.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ids from logits: temperature first, then top-k / top-p, then the draw.

    Args:
        logits: (..., V).
        temperature: 0 (or below 1e-5) means greedy argmax.
        top_k: see ``filter_logits``.
        top_p: see ``filter_logits``.
        generator: random generator (for reproducible draws).

    Returns:
        ``(ids (...), probability of each drawn id under the filtered distribution (...))``.
    """
    logits = logits.float()
    if temperature < 1e-5:
        probs = logits.softmax(-1)
        ids = probs.argmax(-1)
        return ids, probs.gather(-1, ids[..., None])[..., 0]
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    ids = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    return ids, probs.gather(-1, ids[..., None])[..., 0]


def guide(
    unconditional: Tensor, conditionals: Sequence[Tensor], weights: Sequence[float]
) -> Tensor:
    """Weighted guidance ``l_u + sum_i w_i (l_c_i - l_u)`` (negative weights push away).

    With one condition and weight w this is classifier-free guidance at scale w; w = 1 gives the
    conditional logits themselves.
    """
    if len(conditionals) != len(weights):
        raise ValueError(
            f"guidance has {len(weights)} weights for {len(conditionals)} conditions; give one "
            "weight per condition"
        )
    out = unconditional.float()
    for logits, weight in zip(conditionals, weights, strict=True):
        out = out + weight * (logits.float() - unconditional.float())
    return out


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise of ``shape`` (for MaskGIT's confidence annealing)."""
    uniform = torch.rand(shape, generator=generator).clamp(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(uniform))


__all__ = [
    "TemperatureSchedule",
    "TokenSchedule",
    "filter_logits",
    "guide",
    "gumbel_noise",
    "sample_tokens",
    "temperatures",
    "tokens_per_step",
]
