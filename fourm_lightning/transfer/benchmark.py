"""``fourm-lightning benchmark --config configs/benchmark/<suite>.yaml``: a whole transfer suite.

A suite (a YAML file of this module's dataclasses) lists, in order:

1. ``datasets``: the transfer datasets it makes if missing (the shifted scene distribution,
   Fashion-MNIST from Debian's package);
2. ``pretrain``: the backbones, each a plain ``fourm-lightning fit`` (4M mixtures, the 4M-7
   subset, the MAE-like baseline, one specialist per modality), all with the same budget;
3. ``ootb``: out-of-the-box RGB -> X scores of the 4M models, the specialists and the
   tokenizer ceiling (``fourm_lightning.transfer.ootb``);
4. ``transfer``: every transfer task (a ``fourm-lightning fit`` config) for every backbone
   (``scratch`` = no pretraining) and seed, fine-tuned, and optionally with a frozen backbone.

Every run is skipped when its outputs exist (``done.json``), so an interrupted suite resumes.
Results go to ``results_dir``: ``results.csv`` (one row per run and metric), ``results.md``
(tables with mean +- std over seeds, the time of every stage) and ``results.png`` (bar plots).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fourm_lightning.transfer.runs import FitRun, execute, read_done


@dataclass
class ShiftedScenes:
    """A built-in dataset rendered with other scene settings (``fourm-lightning data synth``).

    Args:
        out: dataset folder.
        num_train: training samples.
        num_val: validation samples.
        seed: dataset seed (other than the pretraining data's, so no scene repeats).
        scene: ``SceneConfig`` fields that differ from the defaults.
    """

    out: str
    num_train: int = 4000
    num_val: int = 500
    seed: int = 1
    scene: dict[str, Any] = field(default_factory=dict)


@dataclass
class Datasets:
    """Datasets the suite makes when they are missing.

    Args:
        shifted: the shifted built-in scenes (None: not needed).
        fashion_mnist: the Fashion-MNIST shard folder (None: not needed).
        fashion_mnist_limit: samples per split (None: all 60k + 10k; the tiny suite caps it).
    """

    shifted: ShiftedScenes | None = None
    fashion_mnist: str | None = None
    fashion_mnist_limit: int | None = None


@dataclass
class OutOfTheBox:
    """Out-of-the-box section.

    Args:
        data_dir: the raw dataset whose validation split is scored.
        models: pretraining runs scored on every domain they have.
        specialists: domain -> the pretraining run of its RGB -> domain specialist.
        ceiling_from: a pretraining run whose domains name the tokenizers of the ceiling.
        num_samples: validation samples scored.
        batch_size: generation batch.
        mean_baseline: also score the input-free baseline (every image gets the split's mean
            ground truth: what a model must beat to have used the image).
    """

    data_dir: str
    models: list[str] = field(default_factory=list)
    specialists: dict[str, str] = field(default_factory=dict)
    ceiling_from: str | None = None
    num_samples: int = 1000
    batch_size: int = 50
    mean_baseline: bool = True


@dataclass
class TransferTask:
    """One transfer task.

    Args:
        name: task name in the tables.
        config: its ``fourm-lightning fit`` config.
        metric: the metric shown in the summary table (logged as ``val/<metric>``).
        higher_is_better: the metric's direction.
        seeds: seeds of every backbone.
        probe: also train with a frozen backbone (a linear probe for classification).
        args: overrides of this task's runs (e.g. another ``--data.init_args.data_dir``).
        probe_args: further overrides of the frozen-backbone runs (e.g. a higher learning rate).
    """

    name: str
    config: str
    metric: str
    higher_is_better: bool = True
    seeds: list[int] = field(default_factory=lambda: [0])
    probe: bool = False
    args: list[str] = field(default_factory=list)
    probe_args: list[str] = field(default_factory=list)


@dataclass
class Transfer:
    """Transfer section.

    Args:
        tasks: the tasks.
        backbones: table name -> pretraining run (``None``: from scratch).
        args: overrides appended to every transfer run (e.g. a shorter budget).
    """

    tasks: list[TransferTask] = field(default_factory=list)
    backbones: dict[str, str | None] = field(default_factory=lambda: {"scratch": None})
    args: list[str] = field(default_factory=list)


@dataclass
class Suite:
    """A benchmark suite (see the module docstring).

    Args:
        name: suite name (tables and logs).
        work_dir: where runs write checkpoints, logs and ``done.json`` records.
        results_dir: where ``results.csv``, ``results.md`` and ``results.png`` go.
        datasets: datasets to make when missing.
        pretrain: the pretraining runs (4M models, baselines, specialists).
        pretrain_args: overrides appended to every pretraining run.
        ootb: the out-of-the-box section (None: skipped).
        transfer: the transfer section (None: skipped).
    """

    name: str
    work_dir: str
    results_dir: str
    datasets: Datasets = field(default_factory=Datasets)
    pretrain: list[FitRun] = field(default_factory=list)
    pretrain_args: list[str] = field(default_factory=list)
    ootb: OutOfTheBox | None = None
    transfer: Transfer | None = None


def _make_datasets(datasets: Datasets, work: Path, log: Any) -> list[dict[str, Any]]:
    """Make the missing datasets; returns the time each took (recorded when it was made)."""
    record_file = work / "datasets.json"
    records: dict[str, float] = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if datasets.shifted is not None:
        s = datasets.shifted
        if not (Path(s.out) / "manifest.json").is_file():
            from fourm_lightning.datamodules.build import synthesize_dataset
            from fourm_lightning.datamodules.synth.config import SceneConfig

            log(f"making the shifted scenes in {s.out}")
            started = time.perf_counter()
            scene = SceneConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in s.scene.items()}
            )
            synthesize_dataset(Path(s.out), s.num_train, s.num_val, seed=s.seed, scene=scene)
            records[s.out] = round(time.perf_counter() - started, 1)
    if datasets.fashion_mnist is not None:
        from fourm_lightning.datamodules.fashion_mnist import convert_fashion_mnist

        out = Path(datasets.fashion_mnist)
        started = time.perf_counter()
        made = not (out / "manifest.json").is_file()
        convert_fashion_mnist(out, limit=datasets.fashion_mnist_limit)
        if made or datasets.fashion_mnist not in records:
            records[datasets.fashion_mnist] = round(time.perf_counter() - started, 1)
    record_file.write_text(json.dumps(records, indent=2))
    return [{"stage": "datasets", "seconds": seconds} for seconds in records.values()]


def _ootb_row(
    section: str, model: str, domain: str, scores: dict[str, float], seconds: float
) -> list[dict]:
    return [
        {
            "section": section,
            "task": domain,
            "model": model,
            "seed": "",
            "metric": k,
            "value": v,
            "seconds": seconds,
        }
        for k, v in scores.items()
    ]


MEAN_LABEL = "input-free mean"
#: Label of the tokenizer-ceiling rows (the ground truth through its tokenizer).
CEILING_LABEL = "tokenizer ceiling"


def _run_ootb(suite: Suite, work: Path, log: Any) -> list[dict[str, Any]]:
    """Score every model, specialist, the ceiling and the input-free mean; cached per entry."""
    from fourm_lightning.commands.generate import load_model
    from fourm_lightning.transfer.ootb import default_tasks, evaluate, evaluate_mean_baseline

    assert suite.ootb is not None
    spec = suite.ootb
    runs = {r.name: r for r in suite.pretrain}
    # (label, run, domains, kind): kind is "model", "ceiling" or "mean" (no run).
    entries: list[tuple[str, str | None, list[str] | None, str]] = [
        (m, m, None, "model") for m in spec.models
    ]
    entries += [
        (f"specialist ({run})", run, [domain], "model") for domain, run in spec.specialists.items()
    ]
    if spec.ceiling_from:
        entries.append((CEILING_LABEL, spec.ceiling_from, None, "ceiling"))
    if spec.mean_baseline:
        entries.append((MEAN_LABEL, None, list(default_tasks()), "mean"))
    rows: list[dict[str, Any]] = []
    for label, run_name, domains, kind in entries:
        if run_name is not None and run_name not in runs:
            raise ValueError(f"ootb names the run {run_name!r}, the suite pretrains {list(runs)}")
        cache = work / "ootb" / f"{label.replace(' ', '_').replace('(', '').replace(')', '')}.json"
        if cache.is_file():
            record = json.loads(cache.read_text())
        else:
            log(f"out of the box: {label}")
            started = time.perf_counter()
            if kind == "mean":
                assert domains is not None
                scores = evaluate_mean_baseline(
                    spec.data_dir, domains, num_samples=spec.num_samples, batch_size=spec.batch_size
                )
            else:
                assert run_name is not None
                scores = evaluate(
                    load_model(str(runs[run_name].checkpoint(work))),
                    spec.data_dir,
                    domains=domains,
                    ceiling=kind == "ceiling",
                    num_samples=spec.num_samples,
                    batch_size=spec.batch_size,
                )
            record = {"scores": scores, "seconds": round(time.perf_counter() - started, 1)}
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(record, indent=2))
        model_label = "specialist" if label.startswith("specialist") else label
        for domain, scores in record["scores"].items():
            rows += _ootb_row("ootb", model_label, domain, scores, record["seconds"])
    return rows


def transfer_runs(suite: Suite) -> list[tuple[TransferTask, str, str, int, FitRun]]:
    """(task, backbone, mode, seed, run) of every transfer run of the suite."""
    assert suite.transfer is not None
    work = Path(suite.work_dir)
    pretrained = {r.name: r for r in suite.pretrain}
    out = []
    for task in suite.transfer.tasks:
        modes = ["finetune", "probe"] if task.probe else ["finetune"]
        for backbone, run_name in suite.transfer.backbones.items():
            if run_name is not None and run_name not in pretrained:
                raise ValueError(f"backbone {backbone!r} names the unknown run {run_name!r}")
            for mode in modes:
                if mode == "probe" and run_name is None:
                    continue  # a frozen random encoder says nothing about pretraining
                for seed in task.seeds:
                    args = ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
                    if run_name is not None:
                        ckpt = str(pretrained[run_name].checkpoint(work))
                        args += ["--model.init_args.pretrained", ckpt]
                    if mode == "probe":
                        args += ["--model.init_args.freeze_encoder", "true", *task.probe_args]
                    name = f"transfer/{task.name}/{backbone}-{mode}-s{seed}"
                    run = FitRun(name, [task.config], args + task.args + list(suite.transfer.args))
                    out.append((task, backbone, mode, seed, run))
    return out


def _run_transfer(suite: Suite, work: Path, log: Any) -> list[dict[str, Any]]:
    rows = []
    plan = transfer_runs(suite)
    for i, (task, backbone, mode, seed, run) in enumerate(plan):
        log(f"transfer {i + 1}/{len(plan)}: {run.name}")
        done = execute(run, work, quiet=True)
        metrics = json.loads((run.folder(work) / "metrics.json").read_text())["metrics"]
        for key, value in metrics.items():
            if key.startswith("val/"):
                rows.append(
                    {
                        "section": "transfer",
                        "task": task.name,
                        "model": f"{backbone} ({mode})",
                        "seed": seed,
                        "metric": key[4:],
                        "value": value,
                        "seconds": done["seconds"],
                    }
                )
    return rows


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_tables(suite: Suite, rows: list[dict[str, Any]], timings: list[dict[str, Any]]) -> Path:
    """``results.csv``, ``results.md`` and ``results.png`` in the suite's results folder."""
    out = Path(suite.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["section", "task", "model", "seed", "metric", "value", "seconds"]
    with (out / "results.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Benchmark suite `{suite.name}`", "", _provenance(), ""]
    lines += _ootb_table(suite, rows) + _transfer_table(suite, rows) + _timing_table(timings)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(suite, rows, out / "results.png")
    return out


def _provenance() -> str:
    """When, where and with what the tables were written."""
    import os
    import platform

    import torch

    return (
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} on {platform.node() or 'a machine'} "
        f"({os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}). Each run's command is in its "
        "`done.json`; metrics are the final validation numbers of each run."
    )


def _ootb_table(suite: Suite, rows: list[dict[str, Any]]) -> list[str]:
    from fourm_lightning.transfer.ootb import default_tasks

    ootb = [r for r in rows if r["section"] == "ootb"]
    if not ootb or suite.ootb is None:
        return []
    tasks = default_tasks()
    models = [CEILING_LABEL, MEAN_LABEL, "specialist", *suite.ootb.models]
    models = [m for m in models if any(r["model"] == m for r in ootb)]
    lines = [
        "## Out of the box: RGB -> X on the validation split",
        "",
        "| domain | metric | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for domain, task in tasks.items():
        metrics = sorted(
            {r["metric"] for r in ootb if r["task"] == domain}, key=lambda m: m != task.primary
        )
        metrics = [m for m in metrics if not task.shown or m in task.shown]
        for metric in metrics:
            cells = []
            for model in models:
                hit = [
                    r["value"]
                    for r in ootb
                    if (r["task"], r["model"], r["metric"]) == (domain, model, metric)
                ]
                cells.append(f"{hit[0]:.3f}" if hit else "")
            arrow = ("↑" if task.higher_is_better else "↓") if metric == task.primary else ""
            lines.append(f"| {domain} | {metric} {arrow} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _transfer_table(suite: Suite, rows: list[dict[str, Any]]) -> list[str]:
    if suite.transfer is None:
        return []
    transfer = [r for r in rows if r["section"] == "transfer"]
    models = list(dict.fromkeys(r["model"] for r in transfer))
    lines = [
        "## Transfer: fine-tuned (and frozen) backbones, mean ± std over seeds",
        "",
        "| task | metric | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for task in suite.transfer.tasks:
        cells = []
        for model in models:
            values = [
                r["value"]
                for r in transfer
                if (r["task"], r["model"], r["metric"]) == (task.name, model, task.metric)
            ]
            cells.append(_mean_std(values) if values else "")
        arrow = "↑" if task.higher_is_better else "↓"
        lines.append(f"| {task.name} | {task.metric} {arrow} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _timing_table(timings: list[dict[str, Any]]) -> list[str]:
    total = sum(t["seconds"] for t in timings)
    lines = [
        "## Time (2 CPU cores unless stated)",
        "",
        "| stage | runs | minutes |",
        "|---|---|---|",
    ]
    stages: dict[str, list[float]] = {}
    for t in timings:
        stages.setdefault(t["stage"], []).append(t["seconds"])
    for stage, seconds in stages.items():
        lines.append(f"| {stage} | {len(seconds)} | {sum(seconds) / 60:.1f} |")
    lines.append(f"| **total** | {len(timings)} | **{total / 60:.1f}** |")
    return [*lines, ""]


def _plot(suite: Suite, rows: list[dict[str, Any]], path: Path) -> None:
    from fourm_lightning.viz import new_figure

    panels: list[tuple[str, str, list[dict[str, Any]]]] = []
    if suite.transfer is not None:
        for task in suite.transfer.tasks:
            hits = [
                r
                for r in rows
                if r["section"] == "transfer"
                and r["task"] == task.name
                and r["metric"] == task.metric
            ]
            panels.append((task.name, task.metric, hits))
    if suite.ootb is not None:
        from fourm_lightning.transfer.ootb import default_tasks

        for domain, task in default_tasks().items():
            hits = [
                r
                for r in rows
                if r["section"] == "ootb" and r["task"] == domain and r["metric"] == task.primary
            ]
            if hits:
                panels.append((f"{domain} (out of the box)", task.primary, hits))
    if not panels:
        return
    cols = min(4, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = new_figure(rows_n, cols, (4.2 * cols, 3.4 * rows_n))
    for ax, (title, metric, hits) in zip(axes.ravel(), panels, strict=False):
        models = list(dict.fromkeys(r["model"] for r in hits))
        values = [[r["value"] for r in hits if r["model"] == m] for m in models]
        means = [statistics.mean(v) for v in values]
        errs = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.bar(range(len(models)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(models)), models, rotation=35, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_suite(suite: Suite, quiet: bool = False) -> Path:
    """Run (or resume) a suite and write its tables; returns the results folder."""
    work = Path(suite.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[benchmark {suite.name}] {message}", flush=True)

    timings = _make_datasets(suite.datasets, work, log)
    for i, run in enumerate(suite.pretrain):
        log(f"pretrain {i + 1}/{len(suite.pretrain)}: {run.name}")
        run = FitRun(run.name, run.configs, list(run.args) + list(suite.pretrain_args))
        done = execute(run, work, quiet=quiet)
        timings.append({"stage": "pretrain", "seconds": done["seconds"]})
    rows: list[dict[str, Any]] = []
    if suite.ootb is not None:
        ootb = _run_ootb(suite, work, log)
        rows += ootb
        for path in sorted((work / "ootb").glob("*.json")):
            timings.append(
                {"stage": "out of the box", "seconds": json.loads(path.read_text())["seconds"]}
            )
    if suite.transfer is not None:
        rows += _run_transfer(suite, work, log)
        for *_, run in transfer_runs(suite):
            done = read_done(run.folder(work))
            if done is not None:
                timings.append({"stage": "transfer", "seconds": done["seconds"]})
    out = write_tables(suite, rows, timings)
    log(f"results in {out}/results.md, results.csv, results.png")
    return out
