"""Data pipeline throughput: dataset generation and MultimodalDataModule training batches.

Prints one JSON line and a short table. Not a test: numbers depend on the machine and its load.

    .venv/bin/python benchmarks/data_throughput.py                 # 400 samples at 64x64
    .venv/bin/python benchmarks/data_throughput.py --data-dir DIR  # reuse an existing dataset
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def bench_generation(out: Path, args: argparse.Namespace) -> float:
    from fourm_lightning.datamodules.build import synthesize_dataset

    start = time.perf_counter()
    synthesize_dataset(
        out,
        num_train=args.num_train,
        num_val=args.num_val,
        resolution=args.resolution,
        seed=0,
        workers=args.workers,
        samples_per_shard=args.samples_per_shard,
        progress=False,
    )
    return (args.num_train + args.num_val) / (time.perf_counter() - start)


def bench_datamodule(data_dir: Path, args: argparse.Namespace) -> tuple[float, int]:
    from fourm_lightning.datamodules.multimodal import MultimodalDataModule

    dm = MultimodalDataModule(
        str(data_dir),
        modalities=None,  # all of them
        batch_size=args.batch_size,
        num_workers=args.workers,
        augment=True,
        # Enough batches for warm-up plus the timed run; persistent workers keep one stream going.
        epoch_samples=args.batch_size * (args.warmup + args.batches) * max(1, args.workers),
        persistent_workers=True,
    )
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    # Warm-up: worker start, imports, and filling the shuffle buffers.
    for _ in range(args.warmup):
        next(batches)
    samples = 0
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(batches)
        samples += len(batch["__key__"])
    return samples / (time.perf_counter() - start), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--data-dir", type=Path, default=None, help="skip generation, read this")
    args = parser.parse_args()

    results: dict[str, object] = {
        "resolution": args.resolution,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp) / "data"
            if args.num_val == 0:
                args.num_val = 1  # synthesize_dataset writes both splits
            results["generation_samples"] = args.num_train + args.num_val
            results["generation_samples_per_s"] = round(bench_generation(data_dir, args), 1)
        rate, samples = bench_datamodule(data_dir, args)
        results["datamodule_samples"] = samples
        results["datamodule_samples_per_s"] = round(rate, 1)

    print(json.dumps(results, sort_keys=True))
    print()
    print(f"{'stage':<40} {'samples/s':>10}  target")
    if "generation_samples_per_s" in results:
        print(
            f"{'generation, ' + str(args.workers) + ' workers':<40} "
            f"{results['generation_samples_per_s']:>10}  >= 100"
        )
    print(
        f"{'DataModule train, all modalities, aug':<40} "
        f"{results['datamodule_samples_per_s']:>10}  >= 500"
    )


if __name__ == "__main__":
    main()
