"""The quickstart's plan: what each stage does and with what budget, read from one YAML file.

``configs/quickstart/full.yaml`` is the README's main job (under 30 minutes on 2 CPU cores) and
``configs/quickstart/tiny.yaml`` the smoke version CI runs. Every training stage names the
experiment config it starts from; the plan only sets budgets and paths on top of it, so what the
quickstart trains is what ``fourm-lightning fit --config <that config>`` trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fourm_lightning.datamodules.synth.config import SceneConfig

#: The repository root: configs named in a plan are relative to it.
ROOT = Path(__file__).resolve().parents[2]

#: Trainer precisions a plan may name (``auto``: measured, ``quickstart.precision``).
PRECISIONS = ("auto", "bf16-mixed", "32-true")


def seconds(duration: str) -> int:
    """Seconds in a Lightning ``max_time`` string ``DD:HH:MM:SS``."""
    parts = str(duration).split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected a duration DD:HH:MM:SS, got {duration!r}")
    days, hours, minutes, secs = (int(p) for p in parts)
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def duration(total: float) -> str:
    """``DD:HH:MM:SS`` of a number of seconds (rounded down)."""
    total = max(0, int(total))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class DatasetPlan:
    """The built-in dataset the quickstart renders (``fourm-lightning data synth``).

    ``scene`` holds ``SceneConfig`` fields that differ from the built-in defaults (objects per
    scene, camera distance, ...), as plain YAML values (lists for ranges).
    """

    num_train: int = 20000
    num_val: int = 1000
    resolution: int = 64
    seed: int = 0
    workers: int = 2
    scene: dict[str, Any] = field(default_factory=dict)

    def scene_config(self) -> SceneConfig:
        """The ``SceneConfig`` this plan renders (``resolution`` included).

        Raises:
            ValueError: an unknown ``scene`` key or a value ``SceneConfig`` rejects.
        """
        names = {f.name for f in dataclasses.fields(SceneConfig)} - {"resolution"}
        unknown = sorted(set(self.scene) - names)
        if unknown:
            raise ValueError(f"dataset.scene: unknown keys {unknown}; allowed: {sorted(names)}")
        # YAML gives ranges as lists; SceneConfig's ranges are tuples (hashable, JSON-safe).
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.scene.items()}
        try:
            return SceneConfig(resolution=self.resolution, **values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"dataset.scene: {error}") from None


@dataclass(frozen=True)
class TokenizerPlan:
    """One modality tokenizer trained with ``fourm-lightning fit --config CONFIG``.

    ``overrides`` are dotted config keys set on top of the config (e.g. a smaller codebook for
    the short budget); ``max_steps`` and ``warmup_steps`` set the budget. The data's epoch is
    sized so that the one validation pass comes after the last step.
    """

    modality: str
    config: str
    max_steps: int
    warmup_steps: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextPlan:
    """The WordPiece tokenizer shared by every text modality."""

    vocab_size: int = 5000


@dataclass(frozen=True)
class PretokenizePlan:
    """``fourm-lightning data pretokenize`` settings."""

    num_crops: int = 1
    batch_size: int = 64


@dataclass(frozen=True)
class PretrainPlan:
    """The 4M run: ``CONFIG`` with the quickstart's tokenizers, data and budget.

    With ``steps_from_time``, ``max_steps`` is only an upper bound: ``callbacks.StepsFromTime``
    times the first steps and plans the run (and its LR cosine) to end inside ``max_time``.
    Without it, a run that reaches ``max_time`` first stops mid-cosine.
    """

    config: str
    max_steps: int
    max_time: str
    warmup_steps: int
    val_check_interval: int
    limit_val_batches: int
    overrides: dict[str, Any] = field(default_factory=dict)
    #: A masking-mixture YAML list (``configs/mixture/*.yaml``) replacing the config's mixture.
    mixture: str | None = None
    steps_from_time: bool = False
    #: Run-relative deadline (``DD:HH:MM:SS`` since the quickstart command started, plus the
    #: recorded wall time of the stages it reused from an earlier run): the 4M's ``max_time``
    #: shrinks so that it ends by then, on a machine slower than the budget's.
    end_by: str | None = None


@dataclass(frozen=True)
class GenerationPlan:
    """RGB-to-all and caption-to-RGB on the first validation samples.

    ``num_samples`` are drawn in the figures; caption-to-RGB runs on ``caption_samples`` to
    count how often the named shapes and colours appear (``transfer.caption_image``).
    """

    rgb2all: str = "configs/generation/rgb2all.yaml"
    caption2rgb: str = "configs/generation/caption2rgb.yaml"
    num_samples: int = 8
    caption_samples: int = 32
    figure_modalities: tuple[str, ...] = ("tok_depth", "tok_normal", "tok_semseg")


@dataclass(frozen=True)
class EvaluationPlan:
    """Out-of-the-box RGB -> X scoring beside the tokenizer ceiling and the input-free mean.

    ``conditioning_samples`` validation samples also measure what the RGB image and the
    caption tell the model about the maps (``transfer.conditioning``; 0 skips it).
    """

    num_samples: int = 1000
    batch_size: int = 50
    conditioning_samples: int = 200


@dataclass(frozen=True)
class QuickstartPlan:
    """Every stage of the main job, in order."""

    dataset: DatasetPlan
    tokenizers: tuple[TokenizerPlan, ...]
    text: TextPlan
    pretokenize: PretokenizePlan
    pretrain: PretrainPlan
    generation: GenerationPlan
    evaluation: EvaluationPlan
    #: Tokenizers trained side by side, each in its own process (1: one after another, here).
    tokenizer_jobs: int = 1
    #: Trainer precision of every training stage: ``auto`` measures which of bf16 autocast and
    #: float32 runs faster on this CPU (``quickstart.precision``).
    precision: str = "auto"


def _build(cls: type, value: Any, where: str) -> Any:
    """``cls(**value)`` with errors that name the plan file's key at fault."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**value)
    except TypeError as error:  # a missing required key
        raise ValueError(f"{where}: {error}") from None


def merge_over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` on top: mappings merge key by key, anything else is replaced.

    Lists are replaced whole (a plan's ``tokenizers`` list, a ``scene`` range), so a derived plan
    never gets a mix of two lists.
    """
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_plan_mapping(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A plan file as one mapping, its ``base`` plan (if it names one) merged under it.

    ``base`` is a plan path relative to the repository root (or absolute); a derived plan lists
    only what differs, e.g. ``configs/quickstart/caption.yaml`` over ``full.yaml``.

    Raises:
        ValueError: the file is not a mapping, or the ``base`` chain loops or names no file.
    """
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a quickstart plan is a mapping of stages")
    if "base" not in raw:
        return raw
    base = Path(str(raw.pop("base")))
    base = base if base.is_absolute() else ROOT / base
    chain = (*seen, path.resolve())
    if base.resolve() in chain:
        raise ValueError(f"{path}: base {base} makes a loop of plans")
    if not base.is_file():
        raise ValueError(f"{path}: base names {base}, which is not a file")
    return merge_over(read_plan_mapping(base, chain), raw)


def load_plan(path: str | Path) -> QuickstartPlan:
    """Read a plan YAML (see ``configs/quickstart/*.yaml``), over its ``base`` plan if it has one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing section, an unknown key or a config file that does not exist; the
            message names the plan file and the key.
    """
    path = Path(path)
    raw = read_plan_mapping(path)
    optional = {"tokenizer_jobs", "precision"}
    sections = {f.name for f in dataclasses.fields(QuickstartPlan)} - optional
    if set(raw) - optional != sections:
        raise ValueError(
            f"{path}: stages {sorted(raw)} differ from the expected {sorted(sections)} "
            f"(and the optional {sorted(optional)})"
        )
    jobs = raw.get("tokenizer_jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"{path}: tokenizer_jobs must be a positive integer, got {jobs!r}")
    precision = raw.get("precision", "auto")
    if precision not in PRECISIONS:
        raise ValueError(f"{path}: precision must be one of {PRECISIONS}, got {precision!r}")
    tokenizers = raw["tokenizers"]
    if not isinstance(tokenizers, list) or not tokenizers:
        raise ValueError(f"{path}: 'tokenizers' must be a non-empty list")
    gen = dict(raw["generation"])
    if "figure_modalities" in gen:
        gen["figure_modalities"] = tuple(gen["figure_modalities"])
    plan = QuickstartPlan(
        dataset=_build(DatasetPlan, raw["dataset"], f"{path}: dataset"),
        tokenizers=tuple(
            _build(TokenizerPlan, t, f"{path}: tokenizers[{i}]") for i, t in enumerate(tokenizers)
        ),
        text=_build(TextPlan, raw["text"], f"{path}: text"),
        pretokenize=_build(PretokenizePlan, raw["pretokenize"], f"{path}: pretokenize"),
        pretrain=_build(PretrainPlan, raw["pretrain"], f"{path}: pretrain"),
        generation=_build(GenerationPlan, gen, f"{path}: generation"),
        evaluation=_build(EvaluationPlan, raw["evaluation"], f"{path}: evaluation"),
        tokenizer_jobs=jobs,
        precision=precision,
    )
    try:
        plan.dataset.scene_config()
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    for key, value in (("max_time", plan.pretrain.max_time), ("end_by", plan.pretrain.end_by)):
        if value is not None:
            try:
                seconds(value)
            except ValueError as error:
                raise ValueError(f"{path}: pretrain.{key}: {error}") from None
    configs = {f"tokenizers[{t.modality}].config": t.config for t in plan.tokenizers}
    configs |= {
        "pretrain.config": plan.pretrain.config,
        "generation.rgb2all": plan.generation.rgb2all,
        "generation.caption2rgb": plan.generation.caption2rgb,
    }
    if plan.pretrain.mixture is not None:
        configs["pretrain.mixture"] = plan.pretrain.mixture
    for key, config in configs.items():
        if not (ROOT / config).is_file():
            raise ValueError(f"{path}: {key} names {config}, which is not in {ROOT}")
    modalities = [t.modality for t in plan.tokenizers]
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"{path}: a modality is listed twice in tokenizers: {modalities}")
    return plan


def plan_dict(plan: QuickstartPlan) -> dict[str, Any]:
    """The plan as plain data (recorded with every stage, so a changed budget reruns it)."""
    return dataclasses.asdict(plan)


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested config dict, failing on a path the config does not have.

    A typo in an override must not silently add a key the training code never reads.
    """
    node: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"override {key!r}: the config has no {'.'.join(parts[: i + 1])!r}")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise KeyError(f"override {key!r}: the config has no {key!r}")
    node[parts[-1]] = value


__all__ = [
    "ROOT",
    "DatasetPlan",
    "EvaluationPlan",
    "GenerationPlan",
    "PretokenizePlan",
    "PretrainPlan",
    "QuickstartPlan",
    "TextPlan",
    "TokenizerPlan",
    "load_plan",
    "merge_over",
    "plan_dict",
    "read_plan_mapping",
    "set_dotted",
]
