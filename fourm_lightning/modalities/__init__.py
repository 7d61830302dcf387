"""Modalities as data: ``ModalitySpec`` plus one kind class per modality family.

Importing this package pulls in torch and numpy only (no Lightning, no data stack).
"""

from fourm_lightning.modalities.builtin import builtin_modalities
from fourm_lightning.modalities.errors import DataError
from fourm_lightning.modalities.kinds import (
    BoxesText,
    CaptionText,
    ClassLabel,
    Crop,
    DepthMap,
    EdgeMap,
    FeatureMap,
    GlobalVector,
    ImageKind,
    JsonRecord,
    LabelMap,
    MetadataText,
    ModalityKind,
    NormalMap,
    PaletteText,
    RGBImage,
    SequenceEmbedding,
)
from fourm_lightning.modalities.spec import ModalitySpec, kind_from_config, specs_by_name

__all__ = [
    "BoxesText",
    "CaptionText",
    "ClassLabel",
    "Crop",
    "DataError",
    "DepthMap",
    "EdgeMap",
    "FeatureMap",
    "GlobalVector",
    "ImageKind",
    "JsonRecord",
    "LabelMap",
    "MetadataText",
    "ModalityKind",
    "ModalitySpec",
    "NormalMap",
    "PaletteText",
    "RGBImage",
    "SequenceEmbedding",
    "builtin_modalities",
    "kind_from_config",
    "specs_by_name",
]
