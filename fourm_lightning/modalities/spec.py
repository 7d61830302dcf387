"""``ModalitySpec``: a modality as frozen, typed, YAML-describable data."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fourm_lightning.modalities.kinds import ModalityKind


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: its name, its kind (behaviour) and what later stages need to know about it.

    Specs are frozen: derive a per-run copy with ``dataclasses.replace`` (or ``spec.replace``),
    never mutate a shared one.

    Args:
        name: unique modality name; also the file name stem inside shards (``<key>.<name>.<ext>``).
        kind: the family behaviour (``RGBImage``, ``DepthMap``, ``CaptionText``, ...).
        description: one line for tables and ``--help``.
        vocab_size: size of the token vocabulary once tokenized (None while raw).
        num_tokens: tokens per sample once tokenized (None for variable length or raw).
        tokenizer: path of the tokenizer checkpoint that turns this modality into tokens, if any.
    """

    name: str
    kind: ModalityKind
    description: str = ""
    vocab_size: int | None = None
    num_tokens: int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(
                f"modality name {self.name!r} must be non-empty letters, digits and underscores "
                "(it becomes a file name inside shards)"
            )
        if not isinstance(self.kind, ModalityKind):
            raise TypeError(
                f"modality {self.name!r}: kind must be a ModalityKind, got {self.kind!r}"
            )

    @property
    def filename(self) -> str:
        """The sample-relative file name in a shard, e.g. ``depth.npy``."""
        return f"{self.name}.{self.kind.extension}"

    def replace(self, **changes: Any) -> ModalitySpec:
        """A copy with some fields changed (the spec itself stays untouched)."""
        return dataclasses.replace(self, **changes)

    def to_config(self) -> dict[str, Any]:
        """A JSON/YAML-safe dict, readable by ``ModalitySpec.from_config``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["kind"] = self.kind.to_config()
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModalitySpec:
        """Build a spec from ``to_config`` output (manifests, checkpoints, YAML).

        Only subclasses of ``ModalityKind`` can be named as ``kind.class_path``: a manifest from
        elsewhere cannot make this import and call arbitrary objects.
        """
        config = dict(config)
        kind = config.pop("kind")
        if isinstance(kind, Mapping):
            kind = kind_from_config(kind)
        return cls(kind=kind, **config)


def kind_from_config(config: Mapping[str, Any]) -> ModalityKind:
    """``{"class_path": "pkg.mod.Kind", "init_args": {...}}`` -> a kind instance."""
    path = config.get("class_path")
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"kind config needs a dotted class_path, got {config!r}")
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModalityKind)):
        raise ValueError(f"{path!r} is not a ModalityKind subclass")
    init_args = {}
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key, value in dict(config.get("init_args") or {}).items():
        if key not in fields:
            raise ValueError(f"{path}: unknown argument {key!r} (valid: {sorted(fields)})")
        # JSON has no tuples; kinds are frozen and hashable, so sequences go back to tuples.
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(value, dict):
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        init_args[key] = value
    return cls(**init_args)


def specs_by_name(specs: Iterable[ModalitySpec]) -> dict[str, ModalitySpec]:
    """Index specs by name; duplicate names are an error."""
    out: dict[str, ModalitySpec] = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f"modality {spec.name!r} is declared twice")
        out[spec.name] = spec
    return out
