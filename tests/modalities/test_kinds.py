"""Invariant tests of modality kinds and specs (no data stack involved)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fourm_lightning.modalities import (
    BoxesText,
    CaptionText,
    ClassLabel,
    Crop,
    DataError,
    DepthMap,
    EdgeMap,
    FeatureMap,
    GlobalVector,
    JsonRecord,
    LabelMap,
    MetadataText,
    ModalitySpec,
    NormalMap,
    PaletteText,
    RGBImage,
    SequenceEmbedding,
    builtin_modalities,
    kind_from_config,
)

RNG = np.random.default_rng(0)


def _unit(shape):
    v = RNG.normal(size=shape).astype(np.float32)
    v[..., 2] = np.abs(v[..., 2]) + 0.1
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


VALID = [
    (RGBImage(), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
    (DepthMap(), RNG.uniform(0.5, 9.0, (8, 8)).astype(np.float32)),
    (NormalMap(), _unit((8, 8, 3))),
    (LabelMap(num_classes=6), RNG.integers(0, 6, (8, 8), dtype=np.uint8)),
    (EdgeMap(), RNG.integers(0, 2, (8, 8), dtype=np.uint8)),
    (FeatureMap(channels=4), RNG.normal(size=(4, 2, 2)).astype(np.float32)),
    (CaptionText(), "a small red sphere left of a blue cube"),
    (BoxesText(), [{"box": [0.1, 0.2, 0.5, 0.6], "class": "cube", "color": "red"}]),
    (MetadataText(ranges={"brightness": (0, 255)}), {"brightness": 97.5}),
    (PaletteText(), [{"rgb": [1, 2, 3], "weight": 0.7}, {"rgb": [200, 0, 9], "weight": 0.3}]),
    (JsonRecord(), {"objects": [{"shape": "cone"}]}),
    (GlobalVector(dim=3), np.array([1.0, -2.0, 0.5], dtype=np.float32)),
    (SequenceEmbedding(dim=4, max_length=5), RNG.normal(size=(3, 4)).astype(np.float32)),
    (ClassLabel(class_names=("cat", "dog", "T-shirt/top")), 2),
]


@pytest.mark.parametrize(("kind", "value"), VALID, ids=lambda x: type(x).__name__)
def test_encode_decode_round_trip(kind, value):
    decoded = kind.decode(kind.encode(value))
    kind.validate(
        decoded, resolution=8 if kind.spatial and not isinstance(kind, FeatureMap) else None
    )
    if isinstance(value, np.ndarray):
        # float16 depth/features keep ~3 significant digits; 8-bit normals about 0.5 degree.
        atol = {DepthMap: 1e-2, NormalMap: 1e-2, FeatureMap: 1e-2, SequenceEmbedding: 1e-2}
        np.testing.assert_allclose(decoded, value, atol=atol.get(type(kind), 0), rtol=1e-3)
    else:
        assert decoded == value


@pytest.mark.parametrize(("kind", "value"), VALID, ids=lambda x: type(x).__name__)
def test_to_tensor_and_collate(kind, value):
    item = kind.to_tensor(value)
    batch = kind.collate([item, item])
    if isinstance(item, torch.Tensor):
        if isinstance(batch, dict):  # padded sequences
            assert batch["emb"].shape[0] == 2 and batch["mask"].all()
        else:
            assert batch.shape == (2, *item.shape)
    else:
        assert batch == [item, item]


@pytest.mark.parametrize(
    ("kind", "value", "fragment"),
    [
        (DepthMap(), np.ones((8, 9), np.float32), "spatial size 8x8"),
        (DepthMap(), np.ones((8, 8, 1), np.float32), "shape (H, W)"),
        (DepthMap(), np.full((8, 8), np.nan, np.float32), "non-finite"),
        (RGBImage(), np.zeros((8, 8, 3), np.float32), "uint8"),
        (LabelMap(num_classes=3), np.full((8, 8), 5, np.uint8), "num_classes=3"),
        (EdgeMap(), np.full((8, 8), 255, np.uint8), "0 or 1"),
        (NormalMap(), np.ones((8, 8, 3), np.float32), "unit"),
        (BoxesText(), [{"box": [0.5, 0.2, 0.1, 0.6], "class": "cube"}], "x0<x1"),
        (BoxesText(class_names=("cube",)), [{"box": [0, 0, 1, 1], "class": "tree"}], "tree"),
        (MetadataText(ranges={"a": (0, 1)}), {"a": 3.0}, "outside"),
        (MetadataText(ranges={"a": (0, 1)}), {"b": 0.5}, "unknown metadata key"),
        (GlobalVector(dim=3), np.zeros(4, np.float32), "shape (3,)"),
        (CaptionText(), "", "length"),
        (ClassLabel(class_names=("a", "b")), 2, "class label 2 outside 0..1"),
        (ClassLabel(class_names=("a", "b")), -1, "class label -1"),
        (ClassLabel(class_names=("a", "b")), 1.0, "integer class label"),
    ],
)
def test_validate_rejects_bad_values(kind, value, fragment):
    with pytest.raises(DataError, match=None) as info:
        kind.validate(value, resolution=8)
    assert fragment in str(info.value)


def test_data_error_names_location():
    error = DataError("bad depth").located(modality="depth", key="00000007", file="a/shard.tar")
    text = str(error)
    assert "bad depth" in text and "'depth'" in text and "'00000007'" in text
    assert "a/shard.tar" in text


def test_corrupt_bytes_raise_data_error_or_value_error():
    with pytest.raises(DataError):
        CaptionText().decode(b"\xff\xfe\xfa")
    with pytest.raises(DataError):
        BoxesText().decode(b"[{")
    with pytest.raises(Exception):  # noqa: B017 - PIL/numpy raise their own types on garbage
        RGBImage().decode(b"not a png")


def test_class_label_round_trip_batch_and_manifest_config():
    kind = ClassLabel(class_names=("T-shirt/top", "Trouser", "Bag"))
    spec = ModalitySpec("label", kind)
    assert spec.filename == "label.cls"
    assert kind.encode(np.uint8(2)) == b"2" and kind.decode(b" 2\n") == 2
    # The class names travel through the manifest's JSON form and come back as a tuple.
    config = json.loads(json.dumps(spec.to_config()))
    assert config["kind"]["init_args"]["class_names"] == ["T-shirt/top", "Trouser", "Bag"]
    assert ModalitySpec.from_config(config) == spec
    items = [kind.to_tensor(kind.decode(kind.encode(v))) for v in (2, 0, 1)]
    assert all(item.shape == () for item in items)
    crop = Crop(top=0.5, left=0.0, height=0.5, width=0.5, hflip=True, size=4)
    batch = kind.collate([kind.augment(item, crop) for item in items])
    assert batch.dtype == torch.long and batch.tolist() == [2, 0, 1]
    assert kind.to_stored(items[0]) == 2
    assert kind.text_chunks(2) == ["Bag"] and kind.from_text("t - shirt / top") == 0


def test_class_label_rejects_bad_labels_and_names():
    kind = ClassLabel(class_names=("a", "b", "c"))
    with pytest.raises(DataError, match=r"class label 7 outside 0\.\.2"):
        kind.validate(kind.decode(b"7"))
    with pytest.raises(DataError, match="not an integer"):
        kind.decode(b"seven")
    with pytest.raises(ValueError, match="needs class_names"):
        ClassLabel()
    with pytest.raises(ValueError, match="repeat"):
        ClassLabel(class_names=("a", "a"))


def test_normal_hflip_negates_x_and_keeps_unit_length():
    normals = torch.from_numpy(_unit((6, 6, 3))).permute(2, 0, 1)
    flipped = NormalMap().hflip(normals)
    torch.testing.assert_close(flipped[0], -normals[0].flip(-1))
    torch.testing.assert_close(flipped[1:], normals[1:].flip(-1))
    torch.testing.assert_close(flipped.norm(dim=0), torch.ones(6, 6))


def test_crop_moves_maps_and_boxes_together():
    # An 8x8 label map with one object occupying rows 2..3, columns 4..6 (inclusive).
    labels = torch.zeros(8, 8, dtype=torch.uint8)
    labels[2:4, 4:7] = 1
    boxes = BoxesText().to_tensor([{"box": [4 / 8, 2 / 8, 7 / 8, 4 / 8], "class": "cube"}])
    crop = Crop(top=0.0, left=0.25, height=1.0, width=0.75, hflip=True, size=6)
    out_map = LabelMap(num_classes=2).augment(labels, crop)
    out_boxes = BoxesText().augment(boxes, crop)
    ys, xs = torch.nonzero(out_map, as_tuple=True)
    extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    # The crop is 6 px wide and 8 px high resized to 6x6: x unchanged, y scaled by 6/8.
    torch.testing.assert_close(out_boxes["boxes"][0] * 6, extent, atol=1.0, rtol=0)
    assert out_boxes["class"] == ["cube"]


def test_crop_drops_boxes_outside():
    boxes = BoxesText().to_tensor([{"box": [0.0, 0.0, 0.2, 0.2], "class": "cone"}])
    crop = Crop(top=0.5, left=0.5, height=0.5, width=0.5, hflip=False, size=8)
    out = BoxesText().augment(boxes, crop)
    assert out["boxes"].shape == (0, 4) and out["class"] == []


def test_specs_round_trip_through_config():
    for spec in builtin_modalities():
        assert ModalitySpec.from_config(spec.to_config()) == spec
        assert spec.filename.startswith(spec.name + ".")


def test_builtin_names_unique():
    names = [s.name for s in builtin_modalities()]
    assert len(names) == len(set(names)) == 13


def test_spec_rejects_bad_names_and_kinds():
    with pytest.raises(ValueError, match="must be non-empty"):
        ModalitySpec("my depth", DepthMap())
    with pytest.raises(TypeError, match="ModalityKind"):
        ModalitySpec("depth", "DepthMap")  # type: ignore[arg-type]


def test_kind_from_config_only_builds_kinds():
    with pytest.raises(ValueError, match="not a ModalityKind"):
        kind_from_config({"class_path": "os.system", "init_args": {}})
    with pytest.raises(ValueError, match="unknown argument"):
        kind_from_config(
            {"class_path": "fourm_lightning.modalities.DepthMap", "init_args": {"x": 1}}
        )
    kind = kind_from_config(
        {
            "class_path": "fourm_lightning.modalities.LabelMap",
            "init_args": {"num_classes": 2, "class_names": ["a", "b"]},
        }
    )
    assert kind == LabelMap(num_classes=2, class_names=("a", "b"))


def test_specs_are_frozen():
    spec = builtin_modalities()[0]
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert spec.replace(vocab_size=10).vocab_size == 10 and spec.vocab_size is None


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("fourm_lightning", ("torch", "lightning", "webdataset")),
        ("fourm_lightning.modalities", ("lightning", "webdataset", "torchvision")),
    ],
)
def test_imports_are_lazy(module, forbidden):
    code = f"import sys, {module}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


def test_to_stored_inverts_to_tensor_for_every_builtin_kind(scene_sample):
    # Pre-tokenization writes augmented values back into shards through to_stored.
    from fourm_lightning.datamodules.build import scene_to_stored

    stored = scene_to_stored(scene_sample(3, 16), 16)
    for spec in builtin_modalities():
        value = stored[spec.name]
        back = spec.kind.to_stored(spec.kind.to_tensor(value))
        assert spec.kind.encode(back) == spec.kind.encode(value), spec.name
