"""``results.md`` and the closing summary of a quickstart run."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fourm_lightning.quickstart.record import StageRecord, wall_seconds

#: Tokenizer validation metrics shown in results.md (all are in ``stages/tok_*.json``).
TOKENIZER_METRICS = (
    "psnr",
    "abs_rel",
    "angular_error_deg",
    "miou",
    "f1",
    "cosine",
    "codebook_share_used",
    "codebook_perplexity",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _rel(path: str | Path, run_dir: Path) -> str:
    """A path relative to the run folder (results.md links work from there)."""
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def machine() -> str:
    """One line naming the machine, date and library versions (for every quoted figure)."""
    import torch

    return (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}"
    )


def stage_table(records: Sequence[StageRecord]) -> list[str]:
    """Markdown rows: each stage, whether it ran or was skipped, and its wall time."""
    lines = ["| stage | this run | wall time when made |", "|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r.name} | {'skipped (valid output)' if r.skipped else 'ran'} "
            f"| {r.seconds / 60:.1f} min |"
        )
    total = wall_seconds(records)
    lines.append(f"| **all** | | **{total / 60:.1f} min** |")
    if sum(r.seconds for r in records) > total + 1.0:
        lines += [
            "",
            "Some stages ran side by side (the tokenizers); **all** counts that time once.",
        ]
    return lines


def tokenizer_table(records: Sequence[StageRecord]) -> list[str]:
    """Markdown rows: each tokenizer's steps and final validation metrics."""
    lines = ["| tokenizer | steps | validation metrics |", "|---|---|---|"]
    for r in records:
        shown = []
        for key in TOKENIZER_METRICS:
            value = r.metrics.get(f"val/{key}")
            if value is not None:
                shown.append(f"{key} {_fmt(value)}")
        lines.append(f"| `{r.name}` | {r.metrics.get('steps', '-')} | {', '.join(shown)} |")
    return lines


def pretrain_table(record: StageRecord) -> list[str]:
    """Markdown rows: the 4M validation loss and accuracy of each domain."""
    lines = ["| domain | validation loss | validation accuracy |", "|---|---|---|"]
    domains = sorted(
        k.removeprefix("val/loss_") for k in record.metrics if k.startswith("val/loss_")
    )
    for d in domains:
        loss = record.metrics[f"val/loss_{d}"]
        accuracy = record.metrics.get(f"val/acc_{d}")
        lines.append(f"| `{d}` | {loss:.3f} | {_fmt(accuracy) if accuracy is not None else '-'} |")
    return lines


def agreement_table(
    agreement: Mapping[str, Mapping[str, float]],
    count: int,
    given_layout: Mapping[str, Mapping[str, float]],
    given: Sequence[str],
) -> list[str]:
    """Markdown rows: named shapes and colours found in caption-to-RGB outputs, with controls.

    ``given_layout`` scores the chain's last step run alone from the modalities ``given`` (the
    caption and the true earlier outputs): its colours row says whether the image step follows
    the caption once the layout is right.
    """
    inputs = ", ".join(f"`{n}`" for n in given)
    rows = [
        ("generated from its caption", agreement["generated"]),
        ("true semseg and image (through the tokenizers)", agreement["true image"]),
        ("generated, against another sample's caption (chance)", agreement["another caption"]),
        (f"last step alone, from {inputs} (true)", given_layout["generated"]),
        ("the same, against another caption (chance)", given_layout["another caption"]),
    ]
    lines = [
        f"| {count} validation captions | named shapes shown | named colours shown | both |",
        "|---|---|---|---|",
    ]
    for label, shares in rows:
        lines.append(
            f"| {label} | {shares['shapes']:.2f} | {shares['colors']:.2f} | {shares['all']:.2f} |"
        )
    return lines


def evaluation_table(scores: Mapping[str, Any]) -> list[str]:
    """Markdown rows: RGB -> X, the 4M model beside the tokenizer ceiling and the mean."""
    from fourm_lightning.transfer.ootb import default_tasks

    tasks = default_tasks()
    lines = [
        "| RGB -> | metric | 4M | tokenizer ceiling | input-free mean |",
        "|---|---|---|---|---|",
    ]
    for domain, metrics in scores["model"].items():
        task = tasks[domain]
        names = task.shown or (task.primary,)
        for name in names:
            arrow = ""
            if name == task.primary:
                arrow = " ↑" if task.higher_is_better else " ↓"
            ceiling = scores["ceiling"].get(domain, {}).get(name)
            mean = scores["mean"].get(domain, {}).get(name)
            lines.append(
                f"| `{domain}` | {name}{arrow} | {_fmt(metrics[name])} "
                f"| {_fmt(ceiling) if ceiling is not None else '-'} "
                f"| {_fmt(mean) if mean is not None else '-'} |"
            )
    return lines


def conditioning_table(gains: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Markdown rows: each target's loss given its own input, another sample's, and none."""
    lines = [
        "| input | target | own input | another sample's | no input | what the input tells |",
        "|---|---|---|---|---|---|",
    ]
    for source, scores in gains.items():
        for target, own in scores["own"].items():
            none, another = scores["none"][target], scores["another"][target]
            lines.append(
                f"| {source} | `{target}` | {own:.3f} | {another:.3f} | {none:.3f} "
                f"| {none - own:+.3f} |"
            )
    return lines


def conditioning_section(scores: Mapping[str, Any]) -> list[str]:
    """The conditioning table with its heading and reading, if the evaluation measured it."""
    gains = scores.get("conditioning")
    if not gains:
        return []
    return [
        "## What the inputs tell the model",
        "",
        "Validation loss of each target (nats per token, every token a target) given only the",
        "sample's own input, another sample's, or no input at all",
        "(`transfer.conditioning.conditioning_gain`). The last column is no input minus own:",
        "how much the input informs the target. Another sample's input scoring above no input",
        "means the model reads the input but a wrong one misleads it. With no input at all the",
        "model can be off its training distribution: another sample's minus own is then the",
        "cleaner measure of what the input's content tells.",
        "",
        *conditioning_table(gains),
        "",
    ]


def write_results(
    run_dir: Path,
    plan_path: Path,
    records: Mapping[str, StageRecord],
    tokenizers: Sequence[StageRecord],
    precision: str | None = None,
) -> Path:
    """Write ``RUN/results.md`` from the stage records.

    ``precision`` is a line on the trainer precision and why it was chosen.
    """
    pretrain = records["pretrain"]
    evaluation = records["evaluation"]
    generation = records["generation"]
    text = records["tok_text"].metrics
    data = records["dataset"].metrics
    lines = [
        "# Quickstart results",
        "",
        f"Plan `{plan_path}`; {machine()}.",
        "Skipped stages show the wall time of the run that made their output.",
        *([precision] if precision else []),
        "",
        *stage_table(list(records.values())),
        "",
        f"Dataset: `data/`, {data['train']} training and {data['val']} validation scenes.",
        "",
        "## RGB to all (validation samples, not selected)",
        "",
        "Each prediction sits beside the ground truth as its tokenizer reconstructs it.",
        "",
        f"![RGB to all]({_rel(generation.outputs['rgb2all'], run_dir)})",
        "",
        "## Caption to RGB (the validation samples' own captions)",
        "",
        "Chained: caption -> semseg -> depth -> RGB, the last column the true image.",
        "",
        f"![caption to RGB]({_rel(generation.outputs['caption2rgb'], run_dir)})",
        "",
        "How often the generated semseg shows each shape the caption names, and the generated",
        "image each named colour (at least 8 pixels; colours by the nearest object colour in RGB",
        "direction, so shading does not matter):",
        "",
        *agreement_table(
            generation.metrics["caption2rgb_agreement"],
            generation.metrics["caption_samples"],
            generation.metrics["caption2rgb_given_layout_agreement"],
            generation.metrics["caption2rgb_given"],
        ),
        "",
        f"## Out of the box: RGB -> X on {evaluation.metrics['num_samples']} validation scenes",
        "",
        "The tokenizer ceiling scores the ground truth after its tokenizer's round trip (the best",
        "a token predictor can do); the input-free mean gives every image the split's mean map.",
        "",
        *evaluation_table(evaluation.metrics),
        "",
        *conditioning_section(evaluation.metrics),
        "## Tokenizers",
        "",
        *tokenizer_table(tokenizers),
        "",
        f"WordPiece text tokenizer: vocabulary {text['vocab_size']}, exact round trip on "
        f"{text['texts']} validation captions {text['exact_round_trip']:.3f}.",
        "",
        f"## 4M pretraining ({pretrain.metrics['steps']} steps)",
        "",
        *pretrain_table(pretrain),
        "",
        "## Where things are",
        "",
        "- `configs/`: the exact config of every training run (`fourm-lightning fit --config ...`"
        " repeats it)",
        "- `tokenizers/`, `fourm/`: checkpoints and TensorBoard logs "
        "(`tensorboard --logdir " + str(run_dir) + "`)",
        "- `tokens/`: the pre-tokenized dataset; `generation/`: every generated sample, raw files",
        "- `evaluation.json`, `stages/*.json`: all measured figures",
        "",
    ]
    path = run_dir / "results.md"
    path.write_text("\n".join(lines))
    return path


def summary(run_dir: Path, records: Mapping[str, StageRecord]) -> str:
    """The few lines printed at the end: where things are and the key numbers."""
    evaluation = records["evaluation"].metrics
    model, ceiling = evaluation["model"], evaluation["ceiling"]
    keys = {
        "tok_depth": "abs_rel",
        "tok_normal": "mean_angle",
        "tok_semseg": "miou",
        "caption": "all",
    }
    numbers = ", ".join(
        f"{d} {m} {model[d][m]:.3g} (ceiling {ceiling[d][m]:.3g})"
        for d, m in keys.items()
        if d in model and m in model[d]
    )
    total = wall_seconds(r for r in records.values() if not r.skipped)
    agreement = records["generation"].metrics["caption2rgb_agreement"]
    own, chance = agreement["generated"], agreement["another caption"]
    caption = (
        f"named shapes {own['shapes']:.2f} / colours {own['colors']:.2f} shown "
        f"(chance {chance['shapes']:.2f} / {chance['colors']:.2f})"
    )
    layout = records["generation"].metrics["caption2rgb_given_layout_agreement"]
    caption += (
        f"; colours from the true layout {layout['generated']['colors']:.2f} "
        f"(chance {layout['another caption']['colors']:.2f})"
    )
    return "\n".join(
        [
            f"quickstart done in {total / 60:.1f} min (this run)",
            f"  results:     {run_dir / 'results.md'}",
            f"  figures:     {run_dir / 'figures'}",
            f"  TensorBoard: tensorboard --logdir {run_dir}",
            f"  4M checkpoint: {records['pretrain'].outputs['checkpoint']}",
            f"  RGB -> X: {numbers}",
            f"  caption -> RGB: {caption}",
        ]
    )


__all__ = ["machine", "summary", "write_results"]
