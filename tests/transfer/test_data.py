"""Derived transfer labels, and the TransferDataModule that adds them in the workers."""

import numpy as np
import pytest
import torch

from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES
from fourm_lightning.transfer.data import (
    IGNORE,
    ColorClasses,
    LargestObjectShape,
    TransferDataModule,
)


def _sample(instance, objects):
    return {"instance": np.asarray(instance, np.uint8), "scene": {"objects": objects}}


OBJECTS = [
    {"instance": 1, "shape": "cone", "color": "red"},
    {"instance": 2, "shape": "sphere", "color": "blue"},
]


def test_largest_object_shape_counts_pixels_of_the_crop():
    # Object 2 covers 3 pixels, object 1 covers 2: the label is object 2's shape.
    sample = _sample([[0, 1, 1], [2, 2, 2], [0, 0, 0]], OBJECTS)
    assert int(LargestObjectShape()(sample)) == SHAPE_CLASSES.index("sphere")
    sample = _sample([[1, 1, 1], [2, 2, 0], [0, 0, 0]], OBJECTS)
    assert int(LargestObjectShape()(sample)) == SHAPE_CLASSES.index("cone")


def test_largest_object_shape_is_ignored_without_objects_and_checks_the_scene():
    assert int(LargestObjectShape()(_sample([[0, 0], [0, 0]], OBJECTS))) == IGNORE
    with pytest.raises(ValueError, match="instance 3"):
        LargestObjectShape()(_sample([[3, 3], [0, 0]], OBJECTS))


def test_color_classes_map_instances_to_colours():
    labels = ColorClasses()(_sample([[0, 1], [2, 0]], OBJECTS))
    colors = list(COLORS)
    expected = [[0, 1 + colors.index("red")], [1 + colors.index("blue"), 0]]
    assert labels.tolist() == expected
    assert ColorClasses().class_names[0] == "background"
    assert len(ColorClasses().class_names) == 1 + len(COLORS)
    with pytest.raises(ValueError, match=r"\[5\]"):
        ColorClasses()(_sample([[5, 0], [0, 0]], OBJECTS))


def test_datamodule_adds_targets_consistent_with_instances(tiny_dataset):
    data = TransferDataModule(
        str(tiny_dataset), target=ColorClasses(), modalities=["rgb"], batch_size=4,
        num_workers=0, augment=False,
    )  # fmt: skip
    assert data.modalities == ["rgb", "instance", "scene"]  # what the target needs is loaded
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    target, instance = batch["target"], batch["instance"]
    assert target.dtype == torch.int64 and target.shape == instance.shape
    assert ((target == 0) == (instance == 0)).all()  # background exactly where no object is
    for i, scene in enumerate(batch["scene"]):
        for obj in scene["objects"]:
            pixels = target[i][instance[i] == obj["instance"]]
            assert (pixels == 1 + list(COLORS).index(obj["color"])).all()


def test_datamodule_without_target_streams_plain_batches(tiny_dataset):
    data = TransferDataModule(
        str(tiny_dataset), modalities=["rgb", "depth"], batch_size=4, num_workers=0
    )
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert "target" not in batch and batch["depth"].shape[1] == 1


class _FailsOnFirstKey(LargestObjectShape):
    """A target that cannot label one sample (as a scene graph missing an instance would)."""

    def __call__(self, sample):
        if sample["__key__"] == "00000000":
            raise ValueError("no label for this one")
        return super().__call__(sample)


def test_a_sample_whose_target_fails_is_skipped_counted_and_named(tiny_dataset, caplog):
    data = TransferDataModule(
        str(tiny_dataset), target=_FailsOnFirstKey(), modalities=["rgb"], batch_size=4,
        num_workers=0, augment=False,
    )  # fmt: skip
    data.setup("fit")
    batches = list(data.val_dataloader())
    keys = [k for b in batches for k in b["__key__"]]
    assert "00000000" not in keys and len(keys) == 8 - 1
    assert sum(b["__skipped__"] for b in batches) == 1
    assert "00000000" in caplog.text and "shard-" in caplog.text and "no label" in caplog.text
