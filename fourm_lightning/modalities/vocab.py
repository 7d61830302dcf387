"""Names and fields of the built-in procedural scene dataset.

These are the closed vocabularies every stage shares (renderer, captions, boxes, segmentation
classes, metadata and camera vectors). They live in ``modalities`` rather than beside the
renderer so that model and tokenizer code can read class names without importing the data stack.
"""

from __future__ import annotations

#: Semantic classes of the ``semseg`` map, by index. Floor and wall first, then the shape classes.
SEMSEG_CLASSES: tuple[str, ...] = ("floor", "wall", "sphere", "cube", "cylinder", "cone")

#: Shape classes an object can have (a suffix of ``SEMSEG_CLASSES``).
SHAPE_CLASSES: tuple[str, ...] = SEMSEG_CLASSES[2:]

#: Named object colours and their base albedo in sRGB 0..255.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30),
    "orange": (235, 130, 20),
    "yellow": (230, 210, 40),
    "green": (40, 160, 60),
    "cyan": (40, 190, 200),
    "blue": (40, 70, 210),
    "purple": (130, 50, 180),
    "pink": (235, 120, 170),
    "brown": (120, 75, 40),
    "gray": (128, 128, 128),
}

#: Object size names, smallest first.
SIZES: tuple[str, ...] = ("small", "large")

#: Entries of the ``camera`` global vector, in order. World frame: y up, metres, unit directions.
CAMERA_FIELDS: tuple[str, ...] = (
    "position_x",
    "position_y",
    "position_z",
    "forward_x",
    "forward_y",
    "forward_z",
    "fov_deg",
    "light_x",
    "light_y",
    "light_z",
)

#: Keys of the ``metadata`` modality (the 4M-21 image metadata kinds that make sense for renders),
#: with the (low, high) range each value is documented to fall in.
METADATA_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.0, 255.0),
    "contrast": (0.0, 127.0),
    "saturation": (0.0, 255.0),
    "colorfulness": (0.0, 150.0),
    "entropy": (0.0, 10.0),
    "instance_count": (0.0, 999.0),
    "semantic_diversity": (0.0, 999.0),
    "occlusion": (0.0, 1.0),
    "walkability": (0.0, 1.0),
    "geometric_complexity": (0.0, 1.0),
}

#: Maximum number of objects in a scene (instance ids run 1..MAX_OBJECTS, 0 is background).
MAX_OBJECTS: int = 6

#: Maximum number of dominant colours stored in ``color_palette``.
MAX_PALETTE_COLORS: int = 7
