"""Data: shards (write/read), the built-in dataset builder, aligned transforms, the DataModule.

Names are imported lazily so that ``fourm_lightning.datamodules.shards`` (numpy + torch only) does
not pull in Lightning, and the DataModule does not pull in the scene generator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fourm_lightning.datamodules.build import synthesize_dataset
    from fourm_lightning.datamodules.fashion_mnist import convert_fashion_mnist
    from fourm_lightning.datamodules.multimodal import MultimodalDataModule, SynthesizeConfig
    from fourm_lightning.datamodules.shards import (
        Manifest,
        ShardWriter,
        decode_sample,
        iter_samples,
        load_sample,
        read_manifest,
    )
    from fourm_lightning.datamodules.transforms import AlignedTransform, sample_crop

_EXPORTS = {
    "MultimodalDataModule": "multimodal",
    "SynthesizeConfig": "multimodal",
    "synthesize_dataset": "build",
    "convert_fashion_mnist": "fashion_mnist",
    "Manifest": "shards",
    "ShardWriter": "shards",
    "decode_sample": "shards",
    "iter_samples": "shards",
    "load_sample": "shards",
    "read_manifest": "shards",
    "AlignedTransform": "transforms",
    "sample_crop": "transforms",
}

__all__ = [
    "AlignedTransform",
    "Manifest",
    "MultimodalDataModule",
    "ShardWriter",
    "SynthesizeConfig",
    "convert_fashion_mnist",
    "decode_sample",
    "iter_samples",
    "load_sample",
    "read_manifest",
    "sample_crop",
    "synthesize_dataset",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
