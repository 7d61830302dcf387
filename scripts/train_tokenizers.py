"""Train the built-in dataset's tokenizers one after another and tabulate their validation metrics.

Each tokenizer is trained with the real CLI config (``fourm-lightning fit --config
configs/experiment/tok_<name>_synth.yaml``), then validated on the whole validation split from its
last checkpoint. Results go to ``OUT/tokenizers.json`` and a markdown table ``OUT/tokenizers.md``.

    .venv/bin/python scripts/train_tokenizers.py --out runs/tokenizers rgb depth camera
    .venv/bin/python scripts/train_tokenizers.py --out runs/tokenizers_quick --max-steps 300 \
        --set model.init_args.warmup_steps=50  # the short budget the quickstart uses
    .venv/bin/python scripts/train_tokenizers.py --evaluate-only  # re-validate checkpoints
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ("rgb", "depth", "normal", "semseg", "canny_edge", "instance_edge", "camera")


def train_one(name: str, args: argparse.Namespace) -> dict:
    """Fit one tokenizer from its experiment config, then validate its last checkpoint."""
    from fourm_lightning.cli import lightning_cli

    overrides = [
        f"--trainer.logger.init_args.save_dir={args.out}",
        f"--trainer.logger.init_args.name=tok_{name}",
        "--trainer.enable_progress_bar=false",
    ]
    if args.max_steps is not None:
        overrides.append(f"--trainer.max_steps={args.max_steps}")
    if args.max_time is not None:
        overrides.append(f"--trainer.max_time={args.max_time}")
    if args.data_dir is not None:
        overrides.append(f"--data.init_args.data_dir={args.data_dir}")
    overrides += [f"--{item}" for item in args.set]
    config = f"configs/experiment/tok_{name}_synth.yaml"  # recorded relative to the repository
    if not (ROOT / config).is_file():
        raise SystemExit(f"no config {ROOT / config} for tokenizer {name!r}")
    start = time.perf_counter()
    cli = lightning_cli(["fit", f"--config={ROOT / config}", *overrides])
    train_s = time.perf_counter() - start
    trainer = cli.trainer
    checkpoint = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    steps = int(trainer.global_step)
    # Validation of the final weights on the whole split (the in-training passes may be stale
    # if max_time stopped the run between two of them).
    metrics = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {
        "modality": name,
        "config": config,
        "train_seconds": round(train_s, 1),
        "steps": steps,
        "steps_per_s": round(steps / train_s, 2),
        "checkpoint": checkpoint,
        "checkpoint_step": checkpoint_step(checkpoint),
        "log_dir": trainer.logger.log_dir if trainer.logger else None,
        "metrics": {k: round(float(v), 4) for k, v in sorted(metrics.items())},
    }


def checkpoint_step(path: str) -> int | None:
    """The optimizer step a checkpoint was saved at (None without a checkpoint)."""
    import torch

    if not path or not Path(path).is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def evaluate_one(result: dict, args: argparse.Namespace) -> dict:
    """Validate a recorded checkpoint again (in this process, with the current metric code)."""
    from fourm_lightning.cli import lightning_cli

    overrides = [
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        # Where LightningCLI writes the config it ran with (else: the current directory).
        f"--trainer.default_root_dir={args.out / 'eval' / ('tok_' + result['modality'])}",
    ]
    if args.data_dir is not None:
        overrides.append(f"--data.init_args.data_dir={args.data_dir}")
    overrides += [f"--{item}" for item in args.set if item.startswith("data.")]
    cli = lightning_cli(
        [
            "validate",
            f"--config={ROOT / result['config']}",
            f"--ckpt_path={result['checkpoint']}",
            *overrides,
        ]
    )
    # LightningCLI ran `validate` already; its logged metrics are the last ones.
    metrics = cli.trainer.callback_metrics
    return {
        **result,
        "checkpoint_step": checkpoint_step(result["checkpoint"]),
        "metrics": {k: round(float(v), 4) for k, v in sorted(metrics.items())},
    }


def markdown(results: list[dict]) -> str:
    """One row per tokenizer with its validation metrics."""
    lines = [
        "| modality | steps | checkpoint step | train time | validation metrics |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        shown = ", ".join(
            f"{k.removeprefix('val/')} {v:g}" for k, v in r["metrics"].items() if "loss" not in k
        )
        lines.append(
            f"| `{r['modality']}` | {r['steps']} | {r.get('checkpoint_step')} "
            f"| {r['train_seconds'] / 60:.1f} min | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modalities", nargs="*", default=list(ALL))
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizers"))
    parser.add_argument("--max-steps", type=int, default=None, help="override the config's")
    parser.add_argument("--max-time", default=None, help="override the config's, DD:HH:MM:SS")
    parser.add_argument("--data-dir", default=None, help="override the config's data_dir")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config override, e.g. model.init_args.warmup_steps=50 (data.* ones "
        "also apply to --evaluate-only)",
    )
    parser.add_argument(
        "--evaluate-only", action="store_true", help="re-validate the checkpoints in OUT"
    )
    args = parser.parse_args()
    # LightningCLI gets its arguments explicitly; leave it no script options to warn about.
    del sys.argv[1:]
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "tokenizers.json"
    results = json.loads(record.read_text())["results"] if record.is_file() else []
    previous = {r["modality"]: r for r in results}
    for name in args.modalities:
        if args.evaluate_only:
            if name not in previous or not previous[name].get("checkpoint"):
                print(f"{name}: no checkpoint in {record}; train it first", file=sys.stderr)
                continue
            result = evaluate_one(previous[name], args)
        else:
            result = train_one(name, args)
        results = [r for r in results if r["modality"] != name] + [result]
        record.write_text(
            json.dumps(
                {
                    "date": datetime.date.today().isoformat(),
                    "machine": f"{platform.machine()}, {platform.python_version()}",
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
        (args.out / "tokenizers.md").write_text(markdown(results))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
