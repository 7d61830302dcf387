"""Training-step speed of the 4M model: ms per step, tokens/s, peak memory, MFU.

Cases (issue 4):

- ``ref_fp32`` / ``ref_bf16``: the reference's CPU configuration, width 256, 4 + 4 layers,
  4 heads, batch 8, 128 input + 128 target tokens over RGB pixels at 224 (patch 16, 196 patches),
  depth tokens (vocabulary 8192, 14 x 14) and a caption (vocabulary 30000, up to 64 tokens), in
  float32 and under bf16 autocast. The original takes about 0.9 s per forward + backward for
  this in float32 on this machine.
- ``base_fp32`` / ``base_bf16``: the base size (768, 12 + 12, 12 heads), batch 2, same data.

Each case runs with the default and with the fused AdamW kernel, each in its own process.
Batches come from the project's own masking (an all2all mixture, alpha 0.5). Each case runs in a
fresh subprocess so that its peak RSS is its own. FLOPs are counted by
``torch.utils.flop_counter`` on one forward + backward; MFU divides the achieved FLOP rate by a
matmul peak measured here (2048^3, fp32 and bf16).

    python benchmarks/train_step.py            # every case, a table + one JSON line per case
    python benchmarks/train_step.py --case ref_bf16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

CASES = {
    "ref_fp32": {"size": "ref", "batch": 8, "dtype": "fp32"},
    "ref_bf16": {"size": "ref", "batch": 8, "dtype": "bf16"},
    "base_fp32": {"size": "base", "batch": 2, "dtype": "fp32"},
    "base_bf16": {"size": "base", "batch": 2, "dtype": "bf16"},
}
SIZES = {
    "ref": {"dim": 256, "encoder_depth": 4, "decoder_depth": 4, "num_heads": 4},
    "base": {"dim": 768, "encoder_depth": 12, "decoder_depth": 12, "num_heads": 12},
}
ORIGINAL_REF_FP32_S = 0.9  # the original implementation, forward + backward, this machine


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured matmul FLOP/s for n^3 in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def make_batches(batch_size: int, count: int, seed: int = 0) -> tuple[list, list]:
    """Masked batches of the reference configuration, and the domains."""
    from fourm_lightning.datamodules.masking import MixtureComponent
    from fourm_lightning.datamodules.tokens import MultimodalMasking, collate_masked
    from fourm_lightning.models.domains import ImageTokenDomain, PixelDomain, TextDomain

    domains = [
        PixelDomain("rgb", image_size=224, patch_size=16),
        ImageTokenDomain("tok_depth", vocab_size=8192, grid=14),
        TextDomain("caption", vocab_size=30000, max_tokens=64),
    ]
    mixture = [
        MixtureComponent(
            input_alphas={"rgb": 0.5, "tok_depth": 0.5, "caption": 0.5},
            target_alphas={"tok_depth": 0.5, "caption": 0.5},
        )
    ]
    masking = MultimodalMasking(domains, mixture, (128, 128), (128, 128))
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        samples = []
        for i in range(batch_size):
            length = int(rng.integers(20, 64))
            values = {
                "rgb": rng.normal(size=(3, 224, 224)).astype(np.float32),
                "tok_depth": rng.integers(0, 8192, size=196),
                "caption": {
                    "units": [np.array([t]) for t in rng.integers(100, 30000, size=length - 1)]
                    + [np.array([3])],
                    "sentinels": np.arange(4, 68),
                },
            }
            sample = masking(values, rng)
            sample["__key__"] = str(i)
            samples.append(sample)
        batches.append(collate_masked(samples))
    return batches, domains


def run_case(name: str, steps: int, fused: bool = False) -> dict:
    """Time ``steps`` training steps of case ``name`` (after 3 warm-up steps)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fourm_lightning.models import FourM

    case = CASES[name]
    torch.manual_seed(0)
    batches, domains = make_batches(case["batch"], 4)
    model = FourM(domains, **SIZES[case["size"]])
    # One of the AdamW kernels FourMPretraining may use: fused (no gradient clipping under
    # mixed precision) or the default one (with clipping, as configs/experiment trains).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=fused)
    bf16 = case["dtype"] == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def forward_backward(batch: dict) -> None:
        with autocast():
            loss = model(batch).loss
        loss.backward()

    with FlopCounterMode(display=False) as counter:
        forward_backward(batches[0])
    flops = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    for i in range(3):
        forward_backward(batches[i % len(batches)])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    fwd_bwd, opt = [], []
    for i in range(steps):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        forward_backward(batch)
        middle = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        fwd_bwd.append(middle - start)
        opt.append(time.perf_counter() - middle)
    tokens = sum(
        int(v["input_mask"].sum() + v["target_mask"].sum())
        for v in batches[0].values()
        if isinstance(v, dict)
    )
    step_s = float(np.median(fwd_bwd))
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
    return {
        "case": name,
        "batch": case["batch"],
        "dtype": case["dtype"],
        "trunk_params_M": round(model.trunk_parameters() / 1e6, 2),
        "fwd_bwd_ms": round(1000 * step_s, 1),
        "optimizer": "fused AdamW" if fused else "AdamW",
        "optimizer_ms": round(1000 * float(np.median(opt)), 1),
        "tokens_per_s": round(tokens / (step_s + float(np.median(opt))), 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "mfu": round(flops / step_s / peak, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "speedup_vs_original_fp32": round(ORIGINAL_REF_FP32_S / step_s, 2)
        if case["size"] == "ref"
        else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    """Run the chosen case here, or every case in its own subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="one case, in this process")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--fused", action="store_true", help="fused AdamW (with --case)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.steps, args.fused)))
        return
    rows = []
    for name in CASES:
        for fused in ([], ["--fused"]):
            out = subprocess.run(
                [sys.executable, __file__, "--case", name, "--steps", str(args.steps), *fused],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    keys = ["case", "optimizer", "fwd_bwd_ms", "optimizer_ms", "tokens_per_s"]
    keys += ["gflop_per_step", "mfu"]
    keys += ["peak_rss_mb", "speedup_vs_original_fp32"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
