"""Input-free baselines of a token dataset: what a 4M loss must beat beyond ln(V).

For each tokenized modality: ln(V) (a uniform guess), the cross-entropy on the validation split of
the token frequencies counted on training samples (a model that ignores its inputs; add-1/2
smoothing), and the entropy of the validation tokens themselves::

    python scripts/token_baselines.py runs/tokens --train-samples 5000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np

from fourm_lightning.datamodules.pretokenize import iter_token_samples, read_token_manifest


def token_counts(data_dir: str, split: str, limit: int | None) -> dict[str, np.ndarray]:
    """Token id counts per tokenized modality over (the first ``limit`` samples of) a split."""
    manifest = read_token_manifest(data_dir)
    counts = {name: np.zeros(r.vocab_size) for name, r in manifest.tokenizers.items()}
    for sample in itertools.islice(iter_token_samples(data_dir, split), limit):
        for name, count in counts.items():
            ids = sample[f"tok_{name}"].reshape(-1).numpy()
            count += np.bincount(ids, minlength=len(count))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="token dataset folder")
    parser.add_argument("--train-samples", type=int, default=5000)
    args = parser.parse_args()
    train = token_counts(args.data_dir, "train", args.train_samples)
    val = token_counts(args.data_dir, "val", None)
    out = {}
    for name, counts in train.items():
        p = (counts + 0.5) / (counts + 0.5).sum()
        q = val[name] / val[name].sum()
        out[name] = {
            "ln_vocab": round(math.log(len(p)), 3),
            "frequency_xent_val": round(float(-(q * np.log(p)).sum()), 3),
            "val_entropy": round(float(-(q[q > 0] * np.log(q[q > 0])).sum()), 3),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
