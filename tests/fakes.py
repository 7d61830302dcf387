"""Small fake inputs shared by tests (importable: pytest puts tests/ on sys.path)."""

import gzip
import json
import struct

import numpy as np

NUM_TRAIN, NUM_TEST = 12, 6


def write_idx(path, array, compress=True):
    """Write ``array`` (uint8) as an idx file, gzip-compressed like the official files."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)


def fake_fashion_source(folder, seed=0):
    """Four idx files: 12 train + 6 test random images, labels i % 10 and 9 - i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {
        "train": (
            rng.integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8),
            (np.arange(NUM_TRAIN) % 10).astype(np.uint8),
        ),
        "t10k": (
            rng.integers(0, 256, (NUM_TEST, 28, 28), dtype=np.uint8),
            (9 - np.arange(NUM_TEST) % 10).astype(np.uint8),
        ),
    }
    for prefix, (images, labels) in splits.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return splits


#: A tiny encoder matching the `experiment` fixture's 4M (a pretrained backbone must match).
TINY_ENCODER = {
    "image_size": 32,
    "patch_size": 8,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "mlp": "swiglu",
    "bias": False,
}


def tiny_transfer_args(config_name: str, tiny_dataset, fashion_dataset) -> list[str]:
    """Overrides that run a configs/transfer/*.yaml file on the tiny test data, fast."""
    data_dir = fashion_dataset if "fashion" in config_name else tiny_dataset
    return [
        "--data.init_args.data_dir", str(data_dir),
        "--data.init_args.resolution", "32",
        "--data.init_args.batch_size", "4",
        "--data.init_args.val_batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--data.init_args.epoch_samples", "8",
        "--data.init_args.shuffle_buffer", "8",
        "--model.init_args.encoder", json.dumps(TINY_ENCODER),
        "--model.init_args.warmup_steps", "1",
        "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "2",
        "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
