"""Out-of-the-box evaluation: RGB -> each modality, token to token, decoded by the tokenizers.

As 4M-21 evaluates its predicted modalities: the encoder sees all RGB patches, the decoder fills
one target domain (one ROAR step at temperature 0 for image-like and vector tokens;
autoregression at temperature 0.5, top-p 0.9 for text, since greedy text loops), the domain's
tokenizer decodes the tokens, and the result is scored
against the dataset's ground truth. The **tokenizer ceiling** scores the ground truth after a
round trip through the same tokenizer (encode, decode): no model can beat it.

==================  ==============  =====================================================
domain              ground truth    metrics (``fourm_lightning.transfer.metrics``)
==================  ==============  =====================================================
tok_depth           depth           abs_rel, delta1 (after ``align_log_depth``)
tok_normal          normal          mean_angle, within_11_25
tok_semseg          semseg          miou, pixel_acc
tok_instance_edge   instance_edge   f1, precision, recall
tok_camera          camera          rmse, position_error, forward_angle
caption             caption/scene   all, objects, colors, relations (share of true mentions)
det                 det             map, map_50
==================  ==============  =====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from fourm_lightning.generation.io import Detokenizer, condition_state
from fourm_lightning.generation.sampler import GenerationStep, State, generate
from fourm_lightning.models.domains import ImageTokenDomain, TextDomain, VectorTokenDomain
from fourm_lightning.models.fourm import FourM
from fourm_lightning.transfer import metrics as M


@dataclass(frozen=True)
class OutOfTheBoxTask:
    """How one target domain is scored.

    Args:
        domain: the 4M domain generated.
        truth: the dataset modality holding its ground truth.
        primary: the metric a results table shows first.
        higher_is_better: the primary metric's direction.
        scorer: builds the accumulator (``update(pred, truth, batch)``, ``compute() -> dict``).
        summary: how the input-free baseline summarises the ground truth over the split
            (``MeanField``); None: no such baseline (text).
        shown: the metrics a results table shows (all are in the CSV); empty: all.
    """

    domain: str
    truth: str
    primary: str
    higher_is_better: bool
    scorer: Callable[[], Scorer]
    summary: MeanField | None = None
    shown: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeanField:
    """An input-free prediction: the same map or vector for every image of the split.

    Args:
        rule: ``mean`` (per pixel / component), ``log_mean`` (geometric mean, for depth) or
            ``mode`` (the most frequent label per pixel).
        num_classes: labels for ``mode``.
    """

    rule: Literal["mean", "log_mean", "mode"]
    num_classes: int = 0

    def prepare(self, truth: Tensor) -> Tensor:
        """(B, ...) ground truth -> (B, ...) summands."""
        if self.rule == "log_mean":
            return truth.float().clamp_min(1e-3).log()
        if self.rule == "mode":
            return F.one_hot(truth.long(), self.num_classes).float()
        return truth.float()

    def finish(self, mean: Tensor) -> Tensor:
        """Mean summand -> the prediction (one sample's form)."""
        if self.rule == "log_mean":
            return mean.exp()
        if self.rule == "mode":
            return mean.argmax(-1)
        return mean


class Scorer:
    """Accumulates one domain's scores over batches."""

    def update(self, pred: list[Any], batch: Mapping[str, Any]) -> None:
        """Predictions (sample forms, one per sample) against the batch's ground truth."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metrics over everything seen."""
        raise NotImplementedError


class _MetricScorer(Scorer):
    """A dense metric: stack the predictions, compare with ``batch[truth]``."""

    def __init__(
        self,
        metric: Any,
        truth: str,
        prepare: Callable[[Tensor], Tensor],
        align: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.metric = metric
        self.truth = truth
        self.prepare = prepare
        self.align = align

    def update(self, pred: list[Any], batch: Mapping[str, Any]) -> None:
        truth = self.prepare(batch[self.truth])
        stacked = self.prepare(torch.stack([torch.as_tensor(p) for p in pred]))
        if self.align is not None:
            stacked = self.align(stacked, truth)
        self.metric.update(stacked, truth)

    def compute(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metric.compute().items()}


def _float(x: Tensor) -> Tensor:
    return x.float()


def _labels(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], *x.shape[-2:]).long()


class _CaptionScorer(Scorer):
    def __init__(self) -> None:
        self.metric = M.CaptionTruth()

    def update(self, pred: list[Any], batch: Mapping[str, Any]) -> None:
        self.metric.update([str(p) for p in pred], batch["scene"])

    def compute(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metric.compute().items()}


class _DetectionScorer(Scorer):
    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.preds: list[Any] = []
        self.truths: list[Any] = []

    def update(self, pred: list[Any], batch: Mapping[str, Any]) -> None:
        self.preds += list(pred)
        self.truths += list(batch["det"])

    def compute(self) -> dict[str, float]:
        return M.detection_map(self.preds, self.truths, self.class_names)


def default_tasks() -> dict[str, OutOfTheBoxTask]:
    """The built-in dataset's out-of-the-box tasks, by domain."""
    from fourm_lightning.modalities.vocab import SEMSEG_CLASSES, SHAPE_CLASSES

    def dense(
        metric: Callable[[], Any],
        truth: str,
        prepare: Callable[[Tensor], Tensor],
        align: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Callable[[], Scorer]:
        return lambda: _MetricScorer(metric(), truth, prepare, align)

    tasks = [
        OutOfTheBoxTask(
            "tok_depth",
            "depth",
            "abs_rel",
            False,
            dense(M.DepthMetrics, "depth", _float, M.align_log_depth),
            MeanField("log_mean"),
        ),
        OutOfTheBoxTask(
            "tok_normal",
            "normal",
            "mean_angle",
            False,
            dense(M.NormalAngularError, "normal", _float),
            MeanField("mean"),
        ),
        OutOfTheBoxTask(
            "tok_semseg",
            "semseg",
            "miou",
            True,
            dense(lambda: M.SegmentationIoU(len(SEMSEG_CLASSES)), "semseg", _labels),
            MeanField("mode", len(SEMSEG_CLASSES)),
        ),
        OutOfTheBoxTask(
            "tok_instance_edge",
            "instance_edge",
            "f1",
            True,
            dense(M.EdgeF1, "instance_edge", _labels),
            MeanField("mode", 2),
        ),
        OutOfTheBoxTask(
            "tok_camera",
            "camera",
            "rmse",
            False,
            dense(M.CameraError, "camera", _float),
            MeanField("mean"),
            ("rmse", "position_error", "forward_angle"),
        ),
        OutOfTheBoxTask(
            "caption",
            "caption",
            "all",
            True,
            _CaptionScorer,
            shown=("all", "objects", "colors", "relations", "mentions_per_caption"),
        ),
        OutOfTheBoxTask("det", "det", "map", True, lambda: _DetectionScorer(SHAPE_CLASSES)),
    ]
    return {t.domain: t for t in tasks}


def generation_step(model: FourM, name: str, guidance_scale: float = 1.0) -> GenerationStep:
    """The decoding used for out-of-the-box predictions of domain ``name``."""
    domain = model.domains[name]
    if isinstance(domain, TextDomain):
        # Greedy decoding of text loops ("a red cone, a red cone, ..."): sample, cooled, instead.
        return GenerationStep(name, scheme="autoregressive", temperature=0.5, top_p=0.9)
    if isinstance(domain, (ImageTokenDomain, VectorTokenDomain)):
        return GenerationStep(
            name, scheme="roar", steps=1, temperature=0.0, guidance_scale=guidance_scale
        )
    raise ValueError(f"{name!r} ({type(domain).__name__}) has no out-of-the-box decoding")


def _truth_state(
    model: FourM, names: Sequence[str], batch: Mapping[str, Any], det: Detokenizer
) -> State:
    """Ground-truth tokens of ``names`` for the tokenizer ceiling (tokens as training sees them)."""
    tokens: dict[str, Tensor] = {}
    texts: dict[str, list[list[int]]] = {}
    text_tokenizer = None
    for name in names:
        domain = model.domains[name]
        value = batch[domain.source_name]
        if isinstance(domain, TextDomain):
            text_tokenizer = det.text_tokenizer(domain.tokenizer)
            kind = det.kind(domain.source_name)
            texts[name] = []
            for sample in value:
                chunks = kind.text_chunks(kind.to_stored(sample))
                ids = list(text_tokenizer.encode(" ".join(chunks)))
                # Cut like training does, never the end-of-sequence token.
                texts[name].append([*ids[: domain.max_tokens - 1], text_tokenizer.eos_id])
        else:
            with torch.no_grad():
                tokens[name] = det.tokenizer(domain.tokenizer).encode(value)
    return condition_state(model, texts=texts, tokens=tokens, text_tokenizer=text_tokenizer)


def _batches(
    data_dir: str, modalities: list[str], batch_size: int, limit: int
) -> Iterator[dict[str, Any]]:
    """The first ``limit`` validation samples, full frame, in batches (the last one cut)."""
    from fourm_lightning.datamodules.multimodal import MultimodalDataModule

    data = MultimodalDataModule(
        data_dir, modalities=modalities, batch_size=batch_size, num_workers=1, augment=False
    )
    data.setup("validate")
    seen = 0
    for batch in data.val_dataloader():
        if seen >= limit:
            break
        take = min(limit - seen, len(batch["__key__"]))
        if take < len(batch["__key__"]):
            batch = {
                k: (v[:take] if isinstance(v, (list, Tensor)) else v) for k, v in batch.items()
            }
        seen += take
        yield batch


def evaluate(
    model: FourM,
    data_dir: str,
    *,
    domains: Sequence[str] | None = None,
    ceiling: bool = False,
    num_samples: int = 1000,
    batch_size: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    tasks: Mapping[str, OutOfTheBoxTask] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Score RGB -> each domain of ``model`` on the validation split of ``data_dir``.

    Args:
        model: a 4M model with a pixel input domain (eval mode).
        data_dir: the raw dataset (``manifest.json``; ground truth and the ``scene`` record).
        domains: the domains to score (default: every domain of the model with a task).
        ceiling: score the tokenizers' round trip of the ground truth instead of the model.
        num_samples: validation samples scored (the first ones, in order).
        batch_size: samples per generation batch.
        guidance_scale: classifier-free guidance of image-like and vector targets.
        seed: generation seed (text is sampled; image-like and vector decoding is greedy).
        tasks: domain -> task (default: ``default_tasks()``).
        progress: show a progress bar.

    Returns:
        ``{domain: {metric: value}}``.
    """
    tasks = dict(tasks or default_tasks())
    names = [n for n in (domains or model.domains) if n in tasks and n in model.domains]
    missing = [n for n in (domains or []) if n not in model.domains or n not in tasks]
    if missing:
        raise ValueError(
            f"cannot score {missing}: the model has {list(model.domains)}, tasks exist for "
            f"{list(tasks)}"
        )
    if not names:
        raise ValueError(f"the model's domains {list(model.domains)} have no out-of-the-box task")
    detok = Detokenizer(model)
    modalities = ["rgb", *sorted({tasks[n].truth for n in names} | {"scene"})]
    scorers = {n: tasks[n].scorer() for n in names}
    text_tokenizer = next(
        (
            detok.text_tokenizer(model.domains[n].tokenizer)
            for n in names
            if isinstance(model.domains[n], TextDomain)
        ),
        None,
    )
    bar = tqdm(
        total=num_samples, desc="ceiling" if ceiling else "out of the box", disable=not progress
    )
    with torch.no_grad():
        for batch in _batches(data_dir, modalities, batch_size, num_samples):
            if ceiling:
                state = _truth_state(model, names, batch, detok)
                values = detok.values(state, names)
            else:
                rgb = batch["rgb"].permute(0, 2, 3, 1).numpy()
                start = condition_state(model, images=list(rgb))
                values = {}
                for name in names:
                    step = generation_step(model, name, guidance_scale)
                    out = generate(model, start, [step], seed=seed, text_tokenizer=text_tokenizer)
                    values[name] = detok.values(out, [name])[name]
            for name in names:
                scorers[name].update(values[name], batch)
            bar.update(len(batch["__key__"]))
    bar.close()
    return {name: scorers[name].compute() for name in names}


def evaluate_mean_baseline(
    data_dir: str,
    domains: Sequence[str],
    *,
    num_samples: int = 1000,
    batch_size: int = 50,
    tasks: Mapping[str, OutOfTheBoxTask] | None = None,
) -> dict[str, dict[str, float]]:
    """Score the input-free baseline: every image gets the split's mean ground truth.

    What a model must beat to have used the image at all (e.g. the average room's depth layout,
    the mean camera). It reads the scored samples' ground truth twice: once to summarise it
    (``MeanField``), once to score the summary against each sample. Domains without a summary
    (text) are skipped.

    Returns:
        ``{domain: {metric: value}}``.
    """
    tasks = dict(tasks or default_tasks())
    names = [n for n in domains if n in tasks and tasks[n].summary is not None]
    modalities = sorted({tasks[n].truth for n in names})
    sums: dict[str, Tensor] = {}
    count = 0
    for batch in _batches(data_dir, modalities, batch_size, num_samples):
        for name in names:
            field = tasks[name].summary
            assert field is not None
            total = field.prepare(batch[tasks[name].truth]).sum(0)
            sums[name] = sums[name] + total if name in sums else total
        count += len(batch["__key__"])
    preds = {}
    for name in names:
        field = tasks[name].summary
        assert field is not None
        preds[name] = field.finish(sums[name] / max(count, 1))
    scorers = {n: tasks[n].scorer() for n in names}
    for batch in _batches(data_dir, modalities, batch_size, num_samples):
        for name in names:
            scorers[name].update([preds[name]] * len(batch["__key__"]), batch)
    return {name: scorers[name].compute() for name in names}


__all__ = [
    "MeanField",
    "OutOfTheBoxTask",
    "Scorer",
    "default_tasks",
    "evaluate",
    "evaluate_mean_baseline",
    "generation_step",
]
