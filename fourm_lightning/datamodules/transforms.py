"""Aligned augmentation: one crop and flip per sample, applied to every modality by its kind.

4M keeps modalities aligned by drawing ONE random-resized-crop and flip per sample and applying it
to every pixel modality, the boxes and anything else spatial. Here a ``Crop`` (fractions of the
source extent, see ``fourm_lightning.modalities.kinds.Crop``) is sampled once and handed to
``kind.augment`` of every modality; non-spatial kinds ignore it, ``NormalMap`` negates x on a flip
and ``BoxesText`` maps its normalized boxes. Nothing here knows a modality name or kind type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fourm_lightning.modalities import Crop, DataError, ModalitySpec


def sample_crop(
    rng: np.random.Generator,
    source: int,
    size: int,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip_prob: float = 0.5,
) -> Crop:
    """Draw RandomResizedCrop-style parameters for a square ``source x source`` map.

    The crop is snapped to whole source pixels (as torchvision's ``RandomResizedCrop.get_params``
    does), so that ``Crop.pixel_box`` recovers it exactly and boxes, which follow the crop's
    fractions, stay aligned with the cropped maps.

    Args:
        rng: the per-worker random generator (the caller seeds it for reproducibility).
        source: side in pixels of the stored full-resolution maps.
        size: output side in pixels.
        scale: range of the crop area as a fraction of the source area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        hflip_prob: probability of a left-right flip.

    Returns:
        The crop, in fractions of the source extent.
    """
    area = source * source
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    hflip = bool(rng.random() < hflip_prob)
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        width = round(math.sqrt(target_area * aspect))
        height = round(math.sqrt(target_area / aspect))
        if 0 < width <= source and 0 < height <= source:
            top = int(rng.integers(0, source - height + 1))
            left = int(rng.integers(0, source - width + 1))
            return Crop(top / source, left / source, height / source, width / source, hflip, size)
    # Fallback (rare with these ranges): the whole frame, like torchvision's central fallback.
    return Crop(0.0, 0.0, 1.0, 1.0, hflip, size)


def full_crop(size: int) -> Crop:
    """The evaluation crop: the whole frame, no flip, resized to ``size``."""
    return Crop(0.0, 0.0, 1.0, 1.0, False, size)


def apply_crop(
    sample: Mapping[str, Any], specs: Mapping[str, ModalitySpec], crop: Crop
) -> dict[str, Any]:
    """Apply one crop to every modality of a sample-form sample through ``kind.augment``.

    Args:
        sample: modality name -> sample-form value (entries whose name is not in ``specs``, such
            as ``__key__``, are passed through untouched).
        specs: modality name -> spec.
        crop: the sample's single crop and flip.

    Returns:
        The augmented sample (a new dict; e.g. ``rgb`` (3, H, W) -> (3, S, S), S = ``crop.size``).
    """
    return {
        name: specs[name].kind.augment(value, crop) if name in specs else value
        for name, value in sample.items()
    }


@dataclass(frozen=True)
class AlignedTransform:
    """Stored-form sample -> augmented sample-form sample, the same crop for every modality.

    Args:
        size: output side in pixels of full-resolution maps.
        train: draw a random crop and flip (True) or use the deterministic full frame (False).
        scale: crop area range (fraction of the source area), training only.
        ratio: crop aspect-ratio range, training only.
        hflip_prob: flip probability, training only.
    """

    size: int
    train: bool = True
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5

    def crop(self, rng: np.random.Generator | None, source: int) -> Crop:
        """The crop of one sample (needs ``rng`` when training)."""
        if not self.train:
            return full_crop(self.size)
        if rng is None:
            raise ValueError("a training transform needs a random generator")
        return sample_crop(rng, source, self.size, self.scale, self.ratio, self.hflip_prob)

    def __call__(
        self,
        sample: Mapping[str, Any],
        specs: Mapping[str, ModalitySpec],
        source: int,
        rng: np.random.Generator | None = None,
    ) -> dict[str, Any]:
        """Convert to sample form (``kind.to_tensor``) and apply one aligned crop.

        Args:
            sample: modality name -> stored-form value (plus ``__key__`` etc., passed through).
            specs: the specs of the modalities in ``sample``.
            source: stored side in pixels (the manifest resolution).
            rng: the worker's generator (training only).

        Returns:
            modality name -> augmented sample-form value.

        Raises:
            DataError: a value cannot be converted or augmented (names the modality).
        """
        crop = self.crop(rng, source)
        out: dict[str, Any] = {}
        for name, value in sample.items():
            if name not in specs:
                out[name] = value
                continue
            kind = specs[name].kind
            try:
                out[name] = kind.augment(kind.to_tensor(value), crop)
            except DataError as error:
                raise error.located(modality=name) from error
            except Exception as error:
                # A value that validated but cannot be augmented is still bad data, not a crash.
                raise DataError(
                    f"cannot augment: {type(error).__name__}: {error}", modality=name
                ) from error
        return out


def collate(samples: Sequence[Mapping[str, Any]], specs: Mapping[str, ModalitySpec]) -> dict:
    """Batch sample-form samples with each kind's ``collate``.

    Args:
        samples: sample-form samples with the same modalities.
        specs: the modalities to batch, in output order.

    Returns:
        ``{name: batch form (e.g. rgb (B, 3, S, S) uint8), "__key__": list[str]}``.
    """
    batch: dict[str, Any] = {
        name: spec.kind.collate([s[name] for s in samples]) for name, spec in specs.items()
    }
    batch["__key__"] = [str(s.get("__key__")) for s in samples]
    return batch
