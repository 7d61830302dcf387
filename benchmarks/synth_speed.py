"""Scene generator speed: ms per sample in one process, samples/s with a pool of processes.

Prints one JSON line and a short table. Not a test: numbers depend on the machine and its load.

    .venv/bin/python benchmarks/synth_speed.py                  # 200 samples at 64x64, 2 workers
    .venv/bin/python benchmarks/synth_speed.py --samples 400 --resolution 128
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time


def _generate_range(job: tuple[int, int, int]) -> int:
    from fourm_lightning.datamodules.synth import SceneConfig, generate_sample

    start, stop, resolution = job
    config = SceneConfig(resolution=resolution)
    for index in range(start, stop):
        generate_sample(0, "bench", index, config)
    return stop - start


def bench_single(samples: int, resolution: int) -> float:
    _generate_range((10_000, 10_003, resolution))  # warm-up: imports and cached ray grids
    start = time.perf_counter()
    _generate_range((0, samples, resolution))
    return (time.perf_counter() - start) * 1000.0 / samples


def bench_pool(samples: int, resolution: int, workers: int) -> float:
    chunk = max(1, samples // (workers * 8))
    jobs = [(i, min(samples, i + chunk), resolution) for i in range(0, samples, chunk)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        # Warm-up: each worker imports the generator and builds its ray grids.
        warm = [(10_000 + 3 * w, 10_003 + 3 * w, resolution) for w in range(workers)]
        pool.map(_generate_range, warm, chunksize=1)
        start = time.perf_counter()
        done = sum(pool.map(_generate_range, jobs))
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # One BLAS thread per process: the generator's arrays are small, extra threads only contend.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    ms_per_sample = bench_single(args.samples, args.resolution)
    pool_rate = bench_pool(args.samples, args.resolution, args.workers)
    result = {
        "benchmark": "synth_speed",
        "resolution": args.resolution,
        "samples": args.samples,
        "ms_per_sample_1proc": round(ms_per_sample, 2),
        "samples_per_s_1proc": round(1000.0 / ms_per_sample, 1),
        "workers": args.workers,
        f"samples_per_s_{args.workers}proc": round(pool_rate, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    print(f"{'setting':<28}{'value':>12}")
    print(f"{'ms / sample, 1 process':<28}{ms_per_sample:>12.2f}")
    print(f"{'samples / s, 1 process':<28}{1000.0 / ms_per_sample:>12.1f}")
    print(f"{f'samples / s, {args.workers} processes':<28}{pool_rate:>12.1f}")


if __name__ == "__main__":
    main()
