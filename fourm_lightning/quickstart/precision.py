"""Pick the training precision the quickstart's CPU runs fastest in, by measuring it.

bf16 autocast is the quickstart's speed-up on CPUs whose matrix units take bf16 natively: on the
2-core AMD EPYC the project was tuned on, a bf16 matmul runs about 4x float32 (docs/RESULTS.md).
Other CPUs that report ``avx512_bf16`` run it at half the float32 speed instead (an Intel Xeon
of the same kind of machine, 2026-11-24: 165 against 326 GFLOP/s), and the quickstart then took
41.6 minutes instead of 26. A CPU flag does not tell the two apart, so the choice is measured:
a short matmul in each dtype, then the faster one, with a margin in favour of float32 (the
exact one) because bf16's gain must pay for autocast's casts.

The choice is written to ``RUN/precision.json`` and reused by later runs of the same folder, so
a resumed run does not retrain stages because a noisy measurement flipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fourm_lightning.quickstart.plan import PRECISIONS as CHOICES

#: bf16 must reach this many times the float32 matmul throughput to be chosen.
BF16_MARGIN = 1.2


@dataclass(frozen=True)
class PrecisionChoice:
    """The trainer precision and the measurement behind it (None when the plan named it)."""

    precision: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None

    def describe(self) -> str:
        """``"32-true (matmul float32 326.0 / bf16 165.0 GFLOP/s)"``, or just the precision."""
        if self.fp32_gflops is None:
            return self.precision
        return (
            f"{self.precision} (matmul float32 {self.fp32_gflops} / "
            f"bf16 {self.bf16_gflops} GFLOP/s)"
        )

    @property
    def autocast(self) -> str:
        """The pre-tokenizer's name for it: ``"bf16"`` or ``"32"``."""
        return "bf16" if self.precision == "bf16-mixed" else "32"


def matmul_gflops(dtype: torch.dtype, size: int = 512, seconds: float = 0.3) -> float:
    """Throughput of a (size x size) @ (size x size) matmul on the CPU, in GFLOP/s.

    Runs for about ``seconds`` after two warm-up products, with torch's current thread count.
    """
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count < 3:
        a @ b
        count += 1
    return 2 * size**3 * count / elapsed / 1e9


def pick_precision(fp32_gflops: float, bf16_gflops: float, margin: float = BF16_MARGIN) -> str:
    """``"bf16-mixed"`` if bf16 matmuls run ``margin`` times float32's speed, else ``"32-true"``."""
    if fp32_gflops <= 0 or bf16_gflops <= 0:
        raise ValueError(f"throughputs must be positive, got {fp32_gflops} and {bf16_gflops}")
    return "bf16-mixed" if bf16_gflops >= margin * fp32_gflops else "32-true"


def resolve_precision(setting: str, run_dir: Path) -> PrecisionChoice:
    """The precision of a quickstart run in ``run_dir``.

    Args:
        setting: the plan's ``precision``: ``auto``, ``bf16-mixed`` or ``32-true``.
        run_dir: the run folder; ``auto`` reuses ``run_dir/precision.json`` when it exists and
            writes it otherwise.

    Raises:
        ValueError: an unknown setting, or a ``precision.json`` that does not hold a choice
            (names the file).
    """
    if setting not in CHOICES:
        raise ValueError(f"precision must be one of {CHOICES}, got {setting!r}")
    if setting != "auto":
        return PrecisionChoice(setting)
    path = run_dir / "precision.json"
    if path.is_file():
        try:
            stored = PrecisionChoice(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a precision choice ({error}); delete it") from None
        if stored.precision not in CHOICES[1:]:
            raise ValueError(f"{path}: precision {stored.precision!r} is not one of {CHOICES[1:]}")
        return stored
    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)
    choice = PrecisionChoice(pick_precision(fp32, bf16), round(fp32, 1), round(bf16, 1))
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(choice), indent=2) + "\n")
    return choice


__all__ = ["CHOICES", "PrecisionChoice", "matmul_gflops", "pick_precision", "resolve_precision"]
