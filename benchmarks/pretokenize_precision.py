"""Pre-tokenization in bf16 autocast against float32: throughput, token and decoded agreement.

Tokenizes one split with both precisions, then reports per modality the share of token ids that
agree and how far the decoded maps are apart (semseg: share of equal pixels; normals: mean angle
in degrees; depth: mean absolute difference over mean absolute value of the relative depth;
others: mean absolute difference). Prints one JSON line. Not a test: throughput depends on the
machine and its load.

    .venv/bin/python benchmarks/pretokenize_precision.py  # data/synth, runs/tokenizers
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fourm_lightning.modalities import DepthMap, LabelMap, ModalityKind, NormalMap

MODALITIES = ("rgb", "depth", "normal", "semseg", "canny_edge", "instance_edge", "camera")


def checkpoints(record: Path) -> dict[str, str]:
    """Modality -> checkpoint from scripts/train_tokenizers.py's record (variants left out)."""
    results = json.loads(record.read_text())["results"]
    return {r["modality"]: r["checkpoint"] for r in results if r["modality"] in MODALITIES}


def decoded_distance(kind: ModalityKind, a: torch.Tensor, b: torch.Tensor) -> float:
    """How far two decoded batches of one modality are apart (see the module docstring).

    The measure follows the modality's kind: label agreement for label maps, mean angle for
    normals, relative error for depth, mean absolute difference otherwise.
    """
    a, b = a.float(), b.float()
    if isinstance(kind, LabelMap):
        return float((a == b).float().mean())
    if isinstance(kind, NormalMap):
        unit_a, unit_b = (torch.nn.functional.normalize(x, dim=1) for x in (a, b))
        cos = (unit_a * unit_b).sum(1)
        return float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))).mean())
    if isinstance(kind, DepthMap):
        return float((a - b).abs().mean() / b.abs().mean())
    return float((a - b).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/synth")
    parser.add_argument("--tokenizers", type=Path, default=Path("runs/tokenizers/tokenizers.json"))
    parser.add_argument("--split", default="val")
    args = parser.parse_args()

    from fourm_lightning.datamodules.pretokenize import (
        iter_token_samples,
        pretokenize_dataset,
    )
    from fourm_lightning.datamodules.shards import read_manifest
    from fourm_lightning.tokenizers.loading import load_tokenizer

    paths = checkpoints(args.tokenizers)
    machine = f"{platform.machine()}, {platform.python_version()}"
    report: dict = {"machine": machine, "split": args.split}
    with tempfile.TemporaryDirectory() as tmp:
        tokens = {}
        for precision in ("bf16", "32"):
            out = Path(tmp) / precision
            start = time.perf_counter()
            manifest = pretokenize_dataset(
                args.data_dir, out, paths, splits=[args.split], precision=precision, progress=False
            )
            seconds = time.perf_counter() - start
            rate = manifest.num_samples(args.split) / seconds
            report[f"samples_per_s_{precision}"] = round(rate, 1)
            samples = list(iter_token_samples(out, args.split))
            tokens[precision] = {
                n: torch.stack([s[f"tok_{n}"][0] for s in samples]).long() for n in paths
            }
        specs = read_manifest(args.data_dir).specs
        for name, path in paths.items():
            tokenizer = load_tokenizer(path)
            a, b = tokens["bf16"][name], tokens["32"][name]
            with torch.inference_mode():
                decoded = [
                    torch.cat([tokenizer.decode(t[i : i + 100]) for i in range(0, len(t), 100)])
                    for t in (a, b)
                ]
            report[name] = {
                "token_agreement": round(float((a == b).float().mean()), 4),
                "decoded_difference": round(decoded_distance(specs[name].kind, *decoded), 4),
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
