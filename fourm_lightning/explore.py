"""Helpers of the notebooks in ``notebooks/``: run folders, batches, statistics and result tables.

The notebooks read every artifact from one quickstart run folder (``$FOURM_RUN``); this module
holds what they need beyond the package's own API and is small enough to test:

- ``RunFolder`` / ``run_folder``: the layout of a ``fourm-lightning quickstart`` run;
- ``load_batch``: the first validation samples of a raw dataset in batch form;
- ``modality_table``, ``dataset_statistics``: what a dataset holds;
- ``reconstruction_metrics``, ``code_usage``, ``collect_tokens``: tokenizer quality and
  codebook usage;
- ``read_schedule`` (from ``generation.io``), ``comparison_rows``: generation schedules and
  prediction-over-truth figures;
- ``read_results``, ``evaluation_rows``, ``pivot_table``, ``plot_metric_bars``: benchmark
  tables (``results.csv``) and a run's ``evaluation.json`` as tables and bar plots;
- ``show``: display a figure in a notebook, whatever the matplotlib backend.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from fourm_lightning.generation.io import read_schedule
from fourm_lightning.transfer.benchmark import CEILING_LABEL, MEAN_LABEL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fourm_lightning.datamodules.shards import Manifest
    from fourm_lightning.modalities import ModalitySpec

#: A ``generation.io.render_sample`` panel: (title, sample-form value, kind).
Panel = tuple[str, Any, Any]

#: The environment variable naming the run folder, and its default (relative to the repository).
RUN_VARIABLE = "FOURM_RUN"
DEFAULT_RUN = "runs/quickstart"


# ----------------------------------------------------------------------------------------------
# Run folders
# ----------------------------------------------------------------------------------------------


def repo_root(cwd: str | os.PathLike[str] | None = None) -> Path:
    """The repository root seen from a notebook: the parent of ``notebooks/``, else ``cwd``.

    Args:
        cwd: the working directory (default: the process's).

    Returns:
        The absolute root folder.
    """
    here = Path(cwd if cwd is not None else Path.cwd()).resolve()
    return here.parent if here.name == "notebooks" else here


@dataclass(frozen=True)
class RunFolder:
    """The artifacts of one quickstart run, by the layout ``fourm-lightning quickstart`` writes.

    Args:
        path: the run folder (absolute).
    """

    path: Path

    @property
    def data(self) -> Path:
        """The raw dataset (``manifest.json`` + WebDataset shards)."""
        return self.path / "data"

    @property
    def tokens(self) -> Path:
        """The pre-tokenized dataset."""
        return self.path / "tokens"

    @property
    def text_tokenizer(self) -> Path:
        """The WordPiece text tokenizer folder."""
        return self.path / "tokenizers" / "tok_text"

    @property
    def fourm_checkpoint(self) -> Path:
        """The 4M model's Lightning checkpoint."""
        return self.path / "fourm" / "version_0" / "checkpoints" / "last.ckpt"

    @property
    def evaluation_file(self) -> Path:
        """``evaluation.json``: out-of-the-box scores, the tokenizer ceiling and the mean."""
        return self.path / "evaluation.json"

    def tokenizer_checkpoint(self, modality: str) -> Path:
        """The Lightning checkpoint of ``modality``'s tokenizer (e.g. ``depth``)."""
        return (
            self.path / "tokenizers" / f"tok_{modality}" / "version_0" / "checkpoints" / "last.ckpt"
        )


def run_folder(
    root: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> RunFolder:
    """The run folder named by ``$FOURM_RUN`` (default ``runs/quickstart``), relative to ``root``.

    Args:
        root: the repository root (``repo_root()``); an absolute ``$FOURM_RUN`` ignores it.
        environ: the environment to read (default: ``os.environ``).

    Returns:
        The run folder, with an absolute path.

    Raises:
        FileNotFoundError: the folder does not exist (the message says how to make one).
    """
    env = os.environ if environ is None else environ
    name = env.get(RUN_VARIABLE) or DEFAULT_RUN
    path = (Path(root) / name).resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"no run folder at {path} (${RUN_VARIABLE}={name!r}); make one with "
            "`make quickstart` or point $FOURM_RUN at an existing run"
        )
    return RunFolder(path)


def show(fig: Figure, dpi: int = 100) -> None:
    """Display ``fig`` in a notebook as a PNG image, then close it.

    The image is rendered here rather than left to Jupyter's inline backend: the package's
    figures (``viz.plot_sample``, ``generation.io.render_sample``, ...) are bare ``Figure``
    objects outside pyplot (``viz.new_figure``), which the inline backend does not show at the
    end of a cell unless the figure is the cell's value. Closing also frees pyplot figures a
    caller made. Outside IPython nothing is shown.

    Args:
        fig: the figure.
        dpi: resolution of the PNG.
    """
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    try:
        from IPython.display import Image, display
    except ImportError:  # not in IPython: nothing to show the image in
        return
    display(Image(data=buffer.getvalue(), format="png"))


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def load_batch(
    data_dir: str | os.PathLike[str], split: str, names: Sequence[str], count: int
) -> dict[str, Any]:
    """The first ``count`` samples of a split in batch form (``kind.to_tensor``, ``kind.collate``).

    Args:
        data_dir: a raw dataset folder.
        split: ``val``, ``train``, ...
        names: the modalities to load.
        count: samples wanted; fewer come back if the split is smaller.

    Returns:
        ``{name: batch value}`` (e.g. ``rgb`` (B, 3, H, W) uint8, ``depth`` (B, 1, H, W)
        float32, ``semseg`` (B, H, W) uint8, ``camera`` (B, 10), ``caption`` list of B strings),
        plus ``"__key__"``: the B sample keys.

    Raises:
        ValueError: the split has no samples.
    """
    from fourm_lightning.datamodules.shards import iter_samples, read_manifest

    specs = read_manifest(data_dir).specs
    samples = list(itertools.islice(iter_samples(data_dir, split, names), count))
    if not samples:
        raise ValueError(f"{data_dir} has no {split!r} samples")
    batch: dict[str, Any] = {
        name: specs[name].kind.collate([specs[name].kind.to_tensor(s[name]) for s in samples])
        for name in names
    }
    batch["__key__"] = [str(s["__key__"]) for s in samples]
    return batch


def describe_value(value: Any) -> str:
    """A short description of a stored-form value: dtype and shape, or type and length.

    Examples: ``uint8 (64, 64, 3)``, ``str (57 chars)``, ``list (3 items)``, ``dict (10 keys)``.
    """
    if isinstance(value, (np.ndarray, Tensor)):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{dtype} {tuple(value.shape)}"
    if isinstance(value, str):
        return f"str ({len(value)} chars)"
    if isinstance(value, Mapping):
        return f"dict ({len(value)} keys)"
    if isinstance(value, (list, tuple)):
        return f"list ({len(value)} items)"
    return type(value).__name__


def modality_table(manifest: Manifest, sample: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per modality of a dataset: name, kind, file, stored form and description.

    Args:
        manifest: the dataset's manifest (``read_manifest``).
        sample: one stored-form sample of the dataset (``load_sample``), whose values show the
            stored forms; modalities it lacks get an empty ``stored form``.

    Returns:
        Rows with keys ``modality``, ``kind``, ``file`` (``<key>.<name>.<ext>``), ``stored form``
        and ``description``, in the manifest's order.
    """
    return [
        {
            "modality": name,
            "kind": type(spec.kind).__name__,
            "file": f"<key>.{spec.filename}",
            "stored form": describe_value(sample[name]) if name in sample else "",
            "description": spec.description,
        }
        for name, spec in manifest.specs.items()
    ]


@dataclass
class DatasetStatistics:
    """Per-scene and pooled statistics of a built-in (rendered scenes) dataset split.

    Args:
        objects_per_scene: (N,) objects in each scene graph (visible or not).
        boxes_per_scene: (N,) boxes of each ``det`` (visible objects only).
        caption_words: (N,) whitespace-separated words of each caption.
        depth_min: (N,) nearest valid depth of each scene, metres.
        depth_max: (N,) farthest depth of each scene, metres.
        semseg_pixels: (C,) pixels of each semantic class over all scenes.
        semseg_classes: the C class names.
        shapes: objects per shape over all scenes.
        colors: objects per colour over all scenes.
        sizes: objects per size over all scenes.
    """

    objects_per_scene: np.ndarray
    boxes_per_scene: np.ndarray
    caption_words: np.ndarray
    depth_min: np.ndarray
    depth_max: np.ndarray
    semseg_pixels: np.ndarray
    semseg_classes: list[str]
    shapes: dict[str, int] = field(default_factory=dict)
    colors: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """N, the scenes counted."""
        return len(self.objects_per_scene)

    @property
    def semseg_share(self) -> np.ndarray:
        """(C,) share of all pixels that each semantic class takes (sums to 1)."""
        total = self.semseg_pixels.sum()
        return self.semseg_pixels / total if total else self.semseg_pixels.astype(np.float64)


def _ordered_counts(counter: Counter[str], names: Sequence[str]) -> dict[str, int]:
    """``counter`` as a dict: ``names`` first in their order (zeros kept), then any others."""
    out = {name: int(counter.get(name, 0)) for name in names}
    out.update({name: int(n) for name, n in sorted(counter.items()) if name not in out})
    return out


def dataset_statistics(
    samples: Iterable[Mapping[str, Any]],
    class_names: Mapping[str, Sequence[str]],
) -> DatasetStatistics:
    """Count objects, shapes, colours, sizes, caption words, depth ranges and class pixels.

    Args:
        samples: stored-form samples with ``scene`` (its ``objects`` carry ``shape``, ``color``
            and ``size``), ``det``, ``caption``, ``depth`` (H, W) and ``semseg`` (H, W).
        class_names: the manifest's ``class_names``; ``semseg`` is required, ``shape``,
            ``color`` and ``size`` order the counts (names never seen count 0).

    Returns:
        The statistics.

    Raises:
        ValueError: no samples.
    """
    semseg_classes = list(class_names["semseg"])
    objects, boxes, words, low, high = [], [], [], [], []
    pixels = np.zeros(len(semseg_classes), dtype=np.int64)
    shapes: Counter[str] = Counter()
    colors: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for sample in samples:
        items = sample["scene"].get("objects", [])
        objects.append(len(items))
        shapes.update(str(o["shape"]) for o in items)
        colors.update(str(o["color"]) for o in items)
        sizes.update(str(o["size"]) for o in items)
        boxes.append(len(sample["det"]))
        words.append(len(sample["caption"].split()))
        depth = np.asarray(sample["depth"], dtype=np.float32)
        valid = depth[depth > 0]
        low.append(float(valid.min()) if valid.size else math.nan)
        high.append(float(valid.max()) if valid.size else math.nan)
        labels = np.asarray(sample["semseg"]).ravel()
        pixels += np.bincount(labels, minlength=len(pixels))[: len(pixels)]
    if not objects:
        raise ValueError("no samples to count")
    return DatasetStatistics(
        objects_per_scene=np.array(objects),
        boxes_per_scene=np.array(boxes),
        caption_words=np.array(words),
        depth_min=np.array(low),
        depth_max=np.array(high),
        semseg_pixels=pixels,
        semseg_classes=semseg_classes,
        shapes=_ordered_counts(shapes, class_names.get("shape", ())),
        colors=_ordered_counts(colors, class_names.get("color", ())),
        sizes=_ordered_counts(sizes, class_names.get("size", ())),
    )


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------


def reconstruction_metrics(tokenizer: Any, value: Any, reconstruction: Any) -> dict[str, float]:
    """The tokenizer's own validation metrics of a reconstruction against its input.

    The metrics are those the tokenizer logs during training (its kind adapter's: PSNR and SSIM
    for RGB, AbsRel and delta1 for depth, angular error for normals, mIoU for labels, F1 for
    edges), computed here over one batch.

    Args:
        tokenizer: a ``VQVAETokenizer`` (``load_tokenizer``).
        value: the batch value that was encoded, e.g. (B, 3, H, W) uint8 RGB.
        reconstruction: ``tokenizer.decode(tokenizer.encode(value), reference=value)``, same
            batch form.

    Returns:
        Metric name -> value.
    """
    adapter = tokenizer.adapter
    metrics = adapter.metrics()
    with torch.no_grad():
        adapter.update_metrics(metrics, reconstruction, value)
        return {name: float(metric.compute()) for name, metric in metrics.items()}


@dataclass(frozen=True)
class CodeUsage:
    """How a tokenizer's codes are used over a set of tokens.

    Args:
        counts: (K,) occurrences of each code.
        share_used: share of the K codes that occur at least once.
        perplexity: exp(entropy) of the code histogram: K when all codes are used equally, 1 when
            one code takes everything.
    """

    counts: np.ndarray
    share_used: float
    perplexity: float

    @property
    def vocab_size(self) -> int:
        """K."""
        return len(self.counts)

    @property
    def num_tokens(self) -> int:
        """Tokens counted."""
        return int(self.counts.sum())


def code_usage(tokens: Tensor, vocab_size: int) -> CodeUsage:
    """Code histogram, share of codes used and perplexity (``tokenizers.metrics.CodebookUsage``).

    Args:
        tokens: integer tokens of any shape, e.g. (N, h, w); negative entries are padding.
        vocab_size: K.

    Returns:
        The usage.
    """
    from fourm_lightning.tokenizers.metrics import CodebookUsage

    metric = CodebookUsage(vocab_size)
    metric.update(tokens)
    usage = metric.compute()
    return CodeUsage(
        counts=metric.counts.numpy().astype(np.int64),
        share_used=float(usage["share_used"]),
        perplexity=float(usage["perplexity"]),
    )


def collect_tokens(
    data_dir: str | os.PathLike[str], split: str, limit: int | None = None
) -> dict[str, Tensor]:
    """Every tokenized modality's tokens of a pre-tokenized split, stacked over samples and crops.

    Args:
        data_dir: a token dataset folder (``fourm-lightning data pretokenize``).
        split: ``val``, ``train``, ...
        limit: read at most this many samples (default: all).

    Returns:
        Modality name (without ``tok_``) -> int64 tokens (N * K, ...) for N samples of K crops,
        e.g. ``depth`` (N * K, 8, 8), ``camera`` (N * K, 8).

    Raises:
        ValueError: the split has no samples.
    """
    from fourm_lightning.datamodules.pretokenize import iter_token_samples, read_token_manifest

    names = list(read_token_manifest(data_dir).tokenizers)
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    for sample in itertools.islice(iter_token_samples(data_dir, split), limit):
        for name in names:
            parts[name].append(sample[f"tok_{name}"])
    if not names or not parts[names[0]]:
        raise ValueError(f"{data_dir} has no tokenized {split!r} samples")
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def comparison_rows(
    values: Mapping[str, Sequence[Any]],
    truth: Mapping[str, Sequence[Any]],
    specs: Mapping[str, ModalitySpec],
    sources: Mapping[str, str],
    index: int,
    given: Iterable[str] = (),
    columns: int = 6,
) -> list[list[Panel | None]]:
    """``render_sample`` rows of one sample: generated values over their ground truth.

    Args:
        values: domain -> one sample-form value per sample (``Detokenizer.values``).
        truth: modality -> one sample-form value per sample (e.g. ``load_batch``); a domain
            whose modality is missing gets an empty cell under it.
        specs: modality -> spec (its kind draws the values).
        sources: domain -> the modality it holds (``model.domains[name].source_name``).
        index: the sample.
        given: domains that were conditions (no ground truth is drawn under them).
        columns: panels per row; more domains wrap into further pairs of rows.

    Returns:
        Rows of panels ``(title, value, kind)``: each chunk of ``columns`` domains gives a row
        of generated values and a row of ground truths (``None`` for empty cells).
    """
    given = set(given)
    names = list(values)
    rows: list[list[Panel | None]] = []
    for start in range(0, len(names), columns):
        chunk = names[start : start + columns]
        rows.append([(n, values[n][index], specs[sources[n]].kind) for n in chunk])
        rows.append(
            [
                (f"{sources[n]} (true)", truth[sources[n]][index], specs[sources[n]].kind)
                if n not in given and sources[n] in truth
                else None
                for n in chunk
            ]
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    """One row of a benchmark's ``results.csv``: one run's value of one metric.

    Args:
        section: ``ootb`` (out of the box) or ``transfer``.
        task: the target domain (``tok_depth``) or transfer task (``shape_cls``).
        model: the backbone, baseline or reference (``4m_rgb2all``, ``tokenizer ceiling``).
        seed: the run's seed (None when there is one run).
        metric: metric name.
        value: metric value.
        seconds: the run's wall time (None when unknown).
    """

    section: str
    task: str
    model: str
    seed: int | None
    metric: str
    value: float
    seconds: float | None = None


class MetricKey(NamedTuple):
    """A (task, metric) row of a table; ``higher_is_better`` None for unranked metrics."""

    task: str
    metric: str
    higher_is_better: bool | None = None


def read_results(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Read a benchmark ``results.csv`` (``transfer.benchmark.write_tables``).

    Args:
        path: the CSV file.

    Returns:
        Its rows, in file order.
    """
    with Path(path).open(newline="") as stream:
        return [
            ResultRow(
                section=row["section"],
                task=row["task"],
                model=row["model"],
                seed=int(row["seed"]) if row.get("seed") else None,
                metric=row["metric"],
                value=float(row["value"]),
                seconds=float(row["seconds"]) if row.get("seconds") else None,
            )
            for row in csv.DictReader(stream)
        ]


def evaluation_rows(scores: Mapping[str, Any], model: str = "4M") -> list[ResultRow]:
    """A quickstart's ``evaluation.json`` as out-of-the-box result rows.

    Args:
        scores: ``{"model": {domain: {metric: value}}, "ceiling": {...}, "mean": {...}}``
            (other keys, such as ``num_samples``, are ignored).
        model: the label of the model's rows.

    Returns:
        Rows of section ``ootb`` labelled ``model``, ``tokenizer ceiling`` and
        ``input-free mean``.
    """
    labels = {"model": model, "ceiling": CEILING_LABEL, "mean": MEAN_LABEL}
    return [
        ResultRow("ootb", domain, label, None, metric, float(value))
        for key, label in labels.items()
        for domain, metrics in (scores.get(key) or {}).items()
        for metric, value in metrics.items()
    ]


def ootb_keys(rows: Sequence[ResultRow], primary_only: bool = False) -> list[MetricKey]:
    """The out-of-the-box (domain, metric) rows a table shows, in the benchmark's order.

    Domains follow ``transfer.ootb.default_tasks``; each starts with its primary metric (with
    its direction), then the other metrics the benchmark shows. Only pairs present in ``rows``
    are kept.

    Args:
        rows: result rows (section ``ootb`` is used).
        primary_only: keep only each domain's primary metric.

    Returns:
        The keys.
    """
    from fourm_lightning.transfer.ootb import default_tasks

    present = {(r.task, r.metric) for r in rows if r.section == "ootb"}
    keys = []
    for domain, task in default_tasks().items():
        names = [task.primary]
        if not primary_only:
            others = task.shown or sorted(m for d, m in present if d == domain)
            names += [m for m in others if m != task.primary]
        keys += [
            MetricKey(domain, m, task.higher_is_better if m == task.primary else None)
            for m in names
            if (domain, m) in present
        ]
    return keys


def _values(rows: Sequence[ResultRow], key: MetricKey, model: str) -> list[float]:
    return [r.value for r in rows if (r.task, r.metric, r.model) == (key.task, key.metric, model)]


def _arrow(key: MetricKey) -> str:
    if key.higher_is_better is None:
        return ""
    return " ↑" if key.higher_is_better else " ↓"


def pivot_table(
    rows: Sequence[ResultRow],
    keys: Sequence[MetricKey],
    models: Sequence[str] | None = None,
    digits: int = 3,
) -> list[dict[str, str]]:
    """One row per (task, metric), one column per model: the value, or mean ± std over seeds.

    Args:
        rows: result rows.
        keys: the (task, metric) rows, in order; a direction adds ↑ or ↓ to the metric.
        models: the columns, in order (default: every model of ``rows`` matching a key, in
            order of appearance).
        digits: decimals shown.

    Returns:
        Rows with keys ``task``, ``metric`` and one per model (``""`` where no value exists).
    """
    wanted = {(k.task, k.metric) for k in keys}
    if models is None:
        models = list(dict.fromkeys(r.model for r in rows if (r.task, r.metric) in wanted))
    table = []
    for key in keys:
        line = {"task": key.task, "metric": key.metric + _arrow(key)}
        for model in models:
            values = _values(rows, key, model)
            if not values:
                line[model] = ""
            elif len(values) == 1:
                line[model] = f"{values[0]:.{digits}f}"
            else:
                mean, std = statistics.mean(values), statistics.stdev(values)
                line[model] = f"{mean:.{digits}f} ± {std:.{digits}f}"
        table.append(line)
    return table


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A GitHub-style markdown table of ``rows`` (columns: the first row's keys).

    Floats are shown with ``digits`` decimals, ``None`` as an empty cell; ``|``, ``<`` and ``>``
    are escaped so that cells cannot break the table or read as HTML tags.
    """
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        text = str(value).replace("|", "\\|")
        return text.replace("<", "&lt;").replace(">", "&gt;")

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows),
    ]
    return "\n".join(lines)


def plot_metric_bars(
    rows: Sequence[ResultRow],
    keys: Sequence[MetricKey],
    models: Sequence[str] | None = None,
    columns: int = 4,
) -> Figure:
    """One bar panel per (task, metric): a bar per model, mean over seeds, ± std as error bars.

    Args:
        rows: result rows.
        keys: the panels, in order.
        models: the bars, in order (default: every model with a value, in order of appearance).
        columns: panels per row.

    Returns:
        The matplotlib figure.
    """
    from fourm_lightning.viz import new_figure

    if not keys:
        raise ValueError("no (task, metric) to plot")
    columns = min(columns, len(keys))
    lines = math.ceil(len(keys) / columns)
    fig, axes = new_figure(lines, columns, (3.6 * columns, 3.2 * lines))
    for ax, key in zip(axes.flat, keys, strict=False):
        names = [
            m for m in (models or dict.fromkeys(r.model for r in rows)) if _values(rows, key, m)
        ]
        values = [_values(rows, key, m) for m in names]
        means = [statistics.mean(v) for v in values]
        errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        spread = errors if any(errors) else None  # no error bars without several seeds
        ax.bar(range(len(names)), means, yerr=spread, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
        ax.set_title(key.task, fontsize=9)
        ax.set_ylabel(key.metric + _arrow(key), fontsize=8)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


__all__ = [
    "CEILING_LABEL",
    "DEFAULT_RUN",
    "MEAN_LABEL",
    "RUN_VARIABLE",
    "CodeUsage",
    "DatasetStatistics",
    "MetricKey",
    "Panel",
    "ResultRow",
    "RunFolder",
    "code_usage",
    "collect_tokens",
    "comparison_rows",
    "dataset_statistics",
    "describe_value",
    "evaluation_rows",
    "load_batch",
    "markdown_table",
    "modality_table",
    "ootb_keys",
    "pivot_table",
    "plot_metric_bars",
    "read_results",
    "read_schedule",
    "reconstruction_metrics",
    "repo_root",
    "run_folder",
    "show",
]
