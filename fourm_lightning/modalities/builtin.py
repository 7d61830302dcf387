"""The modalities of the built-in procedural scene dataset, as specs."""

from __future__ import annotations

from fourm_lightning.modalities.kinds import (
    BoxesText,
    CaptionText,
    DepthMap,
    EdgeMap,
    GlobalVector,
    JsonRecord,
    LabelMap,
    MetadataText,
    NormalMap,
    PaletteText,
    RGBImage,
)
from fourm_lightning.modalities.spec import ModalitySpec
from fourm_lightning.modalities.vocab import (
    CAMERA_FIELDS,
    MAX_OBJECTS,
    MAX_PALETTE_COLORS,
    METADATA_RANGES,
    SEMSEG_CLASSES,
    SHAPE_CLASSES,
)


def builtin_modalities() -> tuple[ModalitySpec, ...]:
    """The 13 aligned modalities every built-in sample has, in a stable order."""
    return (
        ModalitySpec("rgb", RGBImage(), "anti-aliased sRGB render"),
        ModalitySpec("depth", DepthMap(max_depth=50.0), "metric z-depth, metres"),
        ModalitySpec("normal", NormalMap(), "camera-space unit surface normals"),
        ModalitySpec(
            "semseg",
            LabelMap(num_classes=len(SEMSEG_CLASSES), class_names=SEMSEG_CLASSES),
            "semantic classes: floor, wall, one per shape",
        ),
        ModalitySpec(
            "instance",
            LabelMap(num_classes=MAX_OBJECTS + 1),
            "object instance ids (0 = floor and walls)",
        ),
        ModalitySpec("det", BoxesText(class_names=SHAPE_CLASSES), "boxes with class and colour"),
        ModalitySpec("caption", CaptionText(), "scene-graph caption with spatial relations"),
        ModalitySpec("canny_edge", EdgeMap(), "Canny edges of the RGB image"),
        ModalitySpec("instance_edge", EdgeMap(), "exact segment boundaries (SAM-edge analogue)"),
        ModalitySpec(
            "color_palette", PaletteText(max_colors=MAX_PALETTE_COLORS), "dominant colours"
        ),
        ModalitySpec("metadata", MetadataText(ranges=METADATA_RANGES), "4M-21 image metadata"),
        ModalitySpec(
            "camera",
            GlobalVector(dim=len(CAMERA_FIELDS), field_names=CAMERA_FIELDS),
            "camera pose, field of view and light direction",
        ),
        ModalitySpec("scene", JsonRecord(), "the scene graph (objects, camera, light) as JSON"),
    )
