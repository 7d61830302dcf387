"""Per-modality validation curves of a 4M run, against each vocabulary's uniform baseline ln(V).

Reads the TensorBoard events and ``hparams.yaml`` of one run folder and writes a plot (one line
per target domain, its ln(V) dashed) plus a markdown table of first and final validation losses::

    python scripts/fourm_curves.py runs/fourm_nano/version_0 \
        --out docs/figures/fourm_nano_curves.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event files: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in out.items()}


def vocabularies(run: Path) -> dict[str, int]:
    """Target domain -> vocabulary size, from the run's ``hparams.yaml`` or ``config.yaml``."""
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    if "domains" not in hparams:  # runs from before the domains were logged as hparams
        hparams = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]
    out = {}
    for domain in hparams["domains"]:
        args = domain["init_args"]
        if "vocab_size" in args:
            out[args["name"]] = int(args["vocab_size"])
    return out


def summarize(run: Path) -> list[dict]:
    """One row per domain with validation losses: V, ln V, first and last value and step."""
    scalars = read_scalars(run)
    rows = []
    for name, vocab in vocabularies(run).items():
        losses = scalars.get(f"val/loss_{name}")
        if not losses:
            continue
        accuracy = scalars.get(f"val/acc_{name}", [(0, math.nan)])
        rows.append(
            {
                "domain": name,
                "vocab": vocab,
                "ln_vocab": round(math.log(vocab), 3),
                "first_step": losses[0][0],
                "first_val_loss": round(losses[0][1], 3),
                "final_step": losses[-1][0],
                "final_val_loss": round(losses[-1][1], 3),
                "final_over_ln_vocab": round(losses[-1][1] / math.log(vocab), 3),
                "final_val_acc": round(accuracy[-1][1], 3),
            }
        )
    return rows


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing) of a noisy per-batch curve."""
    out, last = [], values[0]
    for value in values:
        last = weight * last + (1 - weight) * value
        out.append(last)
    return out


def plot(run: Path, out: Path) -> None:
    """Training (smoothed) and validation loss per domain over steps, with dashed ln(V) lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    for i, (name, vocab) in enumerate(vocabularies(run).items()):
        color = plt.cm.tab20(i % 20)
        for ax, stage in zip(axes, ("train", "val"), strict=True):
            losses = scalars.get(f"{stage}/loss_{name}")
            if not losses:
                continue
            steps, values = zip(*losses, strict=True)
            if stage == "train":
                ax.plot(steps, smooth(list(values)), color=color, lw=1.2, label=name)
            else:
                ax.plot(steps, values, marker="o", ms=3, color=color, label=f"{name} (V={vocab})")
            ax.axhline(math.log(vocab), color=color, ls="--", lw=0.8)
    axes[0].set_title("training loss per modality (EMA 0.8 over logged batches)")
    axes[1].set_title("validation loss per modality (full val split, fixed masks)")
    axes[0].set_ylabel("cross-entropy (nats); dashed: ln V, the uniform baseline")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylim(bottom=0)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"4M per-modality losses: {run}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the TensorBoard version folder of the run")
    parser.add_argument("--out", type=Path, help="plot file (PNG)")
    args = parser.parse_args()
    rows = summarize(args.run)
    if args.out:
        plot(args.run, args.out)
    keys = list(rows[0]) if rows else []
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
