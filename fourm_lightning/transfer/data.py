"""Transfer-task data: the project's ``MultimodalDataModule`` plus a per-sample target.

A transfer task needs a label the pretraining never saw. On the built-in dataset such labels are
derived from what every sample already carries (the instance map and the scene graph), after the
aligned crop, so a label always describes the pixels the model sees:

- ``LargestObjectShape``: the shape of the object covering the most pixels (scene classification);
- ``ColorClasses``: per-pixel object colour, 0 for floor and walls (a new segmentation label set).

A target is computed in the DataLoader workers and collated as ``batch["target"]``. Tasks whose
label is a stored modality (``depth``, Fashion-MNIST's ``label``) need no target object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fourm_lightning.datamodules.multimodal import MultimodalDataModule
from fourm_lightning.datamodules.stream import ErrorTally, ShardStream
from fourm_lightning.modalities.errors import DataError
from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES

#: Value of a classification target when the crop shows no object (ignored by the loss).
IGNORE = -1


class Target(ABC):
    """A label computed from a sample's modalities (after the crop).

    Subclasses are small frozen dataclasses, so LightningCLI builds them from
    ``class_path``/``init_args`` and DataLoader workers can pickle them.
    """

    #: Modalities the target reads (they must be loaded by the DataModule).
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, index = label."""

    @abstractmethod
    def __call__(self, sample: Mapping[str, Any]) -> np.ndarray:
        """One sample (sample forms after the crop) -> its target (int64 array)."""


def _objects(scene: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(obj["instance"]): obj for obj in scene.get("objects", [])}


@dataclass(frozen=True)
class LargestObjectShape(Target):
    """Shape of the object covering the most pixels of the crop; ``IGNORE`` if none shows.

    A held-out label: 4M's pretraining sees shapes per pixel (semseg) and per box (det), never
    "which object dominates the view".
    """

    needs: ClassVar[tuple[str, ...]] = ("instance", "scene")

    @property
    def class_names(self) -> tuple[str, ...]:  # noqa: D102
        return tuple(SHAPE_CLASSES)

    def __call__(self, sample: Mapping[str, Any]) -> np.ndarray:  # noqa: D102
        instance = np.asarray(sample["instance"]).astype(np.int64)
        counts = np.bincount(instance.ravel(), minlength=2)
        counts[0] = 0  # floor and walls
        if counts.max() == 0:
            return np.asarray(IGNORE, dtype=np.int64)
        obj = _objects(sample["scene"]).get(int(counts.argmax()))
        if obj is None:
            raise ValueError(f"instance {int(counts.argmax())} is not in the scene graph")
        return np.asarray(SHAPE_CLASSES.index(obj["shape"]), dtype=np.int64)


@dataclass(frozen=True)
class ColorClasses(Target):
    """Per-pixel colour class: 0 for floor and walls, 1 + colour index for objects (11 classes).

    The ADE20K analogue: a segmentation label set the pretraining never predicted (its semseg
    classes are shapes, not colours).
    """

    needs: ClassVar[tuple[str, ...]] = ("instance", "scene")

    @property
    def class_names(self) -> tuple[str, ...]:  # noqa: D102
        return ("background", *COLORS)

    def __call__(self, sample: Mapping[str, Any]) -> np.ndarray:  # noqa: D102
        instance = np.asarray(sample["instance"]).astype(np.int64)
        # Lookup table instance id -> class; ids absent from the scene graph are an error below.
        table = np.full(max(int(instance.max()), 0) + 1, -1, dtype=np.int64)
        table[0] = 0
        colors = list(COLORS)
        for ident, obj in _objects(sample["scene"]).items():
            if ident < len(table):
                table[ident] = 1 + colors.index(obj["color"])
        labels = table[instance]
        if (labels < 0).any():
            missing = sorted(set(np.unique(instance[labels < 0]).tolist()))
            raise ValueError(f"instance ids {missing} are not in the scene graph")
        return labels


class TargetStream(ShardStream):
    """A ``ShardStream`` that adds ``target`` to each sample and stacks it in the batch."""

    def __init__(self, *args: Any, target: Target, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target

    def process(
        self,
        raws: Iterable[Mapping[str, Any]],
        rng: np.random.Generator | None,
        tally: ErrorTally,
    ) -> Iterator[dict[str, Any]]:
        """Decoded, cropped samples with their ``target``; a sample whose label fails is skipped."""
        for sample in super().process(raws, rng, tally):
            try:
                sample["target"] = self.target(sample)
            except (KeyError, ValueError, IndexError) as exc:
                tally.record(
                    DataError(
                        f"cannot compute the {type(self.target).__name__} target: {exc}",
                        modality=",".join(self.target.needs),
                        key=str(sample.get("__key__")),
                        file=str(sample.get("__url__")),
                    )
                )
                continue
            yield sample

    def collate(self, samples: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Each modality's collate, plus ``target`` stacked: (B,) or (B, H, W) int64."""
        batch = super().collate(samples)
        batch["target"] = torch.from_numpy(np.stack([s["target"] for s in samples]))
        return batch


class TransferDataModule(MultimodalDataModule):
    """``MultimodalDataModule`` with an optional derived ``target`` (see ``Target``).

    Args:
        data_dir: dataset folder (``manifest.json``).
        target: the derived label; None when the label is a stored modality (``depth``,
            ``label``).
        **kwargs: every other ``MultimodalDataModule`` argument (modalities, batch size,
            resolution, augmentation, ...). The modalities the target needs are loaded too.
    """

    def __init__(
        self,
        data_dir: str,
        target: Target | None = None,
        modalities: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if target is not None and modalities is not None:
            modalities = list(modalities) + [m for m in target.needs if m not in modalities]
        self.target = target
        super().__init__(data_dir, modalities=modalities, **kwargs)

    def new_stream(self, *args: Any, **kwargs: Any) -> ShardStream:  # noqa: D102
        if self.target is None:
            return super().new_stream(*args, **kwargs)
        return TargetStream(*args, target=self.target, **kwargs)
