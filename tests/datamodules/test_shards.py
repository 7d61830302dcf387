"""Shards and manifests: round trips, determinism, and clear errors on bad input."""

import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from fourm_lightning.datamodules.build import scene_to_stored, synthesize_dataset
from fourm_lightning.datamodules.shards import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardWriter,
    decode_sample,
    iter_raw_samples,
    iter_samples,
    load_sample,
    read_manifest,
    sample_key,
    write_manifest,
)
from fourm_lightning.modalities import (
    DataError,
    DepthMap,
    RGBImage,
    builtin_modalities,
    specs_by_name,
)

RES = 16


def _json_normal(value):
    """What a value looks like after a JSON round trip (tuples become lists)."""
    return json.loads(json.dumps(value))


def _assert_same(name, decoded, original):
    if isinstance(original, np.ndarray):
        assert decoded.shape == original.shape, name
        if np.issubdtype(original.dtype, np.floating):
            # float16 depth keeps ~3 significant digits; 8-bit normals about half a degree.
            np.testing.assert_allclose(decoded, original, rtol=2e-3, atol=1e-2, err_msg=name)
        else:
            np.testing.assert_array_equal(decoded, original, err_msg=name)
    else:
        assert decoded == _json_normal(original), name


def test_round_trip_every_builtin_modality(tmp_path, scene_sample):
    specs = builtin_modalities()
    scene = scene_sample(3, RES)
    stored = scene_to_stored(scene, RES)
    path = tmp_path / "shard.tar"
    with ShardWriter(path, specs, RES) as writer:
        writer.write(sample_key(3), stored)

    # The strict reader and WebDataset's own tar iterator see the same sample.
    (raw,) = list(iter_raw_samples(path))
    (wds_raw,) = list(wds.tarfile_samples([{"url": str(path)}]))
    assert raw.keys() == wds_raw.keys() and raw["__key__"] == "00000003"
    assert sorted(k for k in raw if not k.startswith("__")) == sorted(s.filename for s in specs)

    decoded = decode_sample(wds_raw, specs_by_name(specs), RES)
    assert decoded["__key__"] == "00000003" and decoded["__url__"] == str(path)
    for spec in specs:
        _assert_same(spec.name, decoded[spec.name], stored[spec.name])
    # Boxes are stored NORMALIZED: pixel xyxy divided by the image size.
    for box, item in zip(decoded["det"], scene["det"], strict=True):
        assert box["box"] == [c / RES for c in item["box"]]
        assert box["class"] == item["class"] and box["instance"] == item["instance"]


def test_writer_is_deterministic_with_fixed_tar_metadata(tmp_path, scene_sample):
    specs = builtin_modalities()
    paths = [tmp_path / "a.tar", tmp_path / "b.tar"]
    for path in paths:
        with ShardWriter(path, specs, RES) as writer:
            for index in range(3):
                writer.write(sample_key(index), scene_to_stored(scene_sample(index, RES), RES))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with tarfile.open(paths[0]) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {
        (0, 0, 0, "fourm", 0o444)
    }
    # Fixed order: sample by sample, modalities in spec order.
    expected = [f"{sample_key(i)}.{s.filename}" for i in range(3) for s in specs]
    assert [m.name for m in members] == expected
    assert not list(tmp_path.glob("*.tmp"))


def test_writer_rejects_invalid_values_and_leaves_no_file(tmp_path, scene_sample):
    stored = scene_to_stored(scene_sample(0, RES), RES)
    stored["depth"] = stored["depth"][:, :-1]
    path = tmp_path / "bad.tar"
    with pytest.raises(DataError) as info, ShardWriter(path, builtin_modalities(), RES) as writer:
        writer.write(sample_key(0), stored)
    assert info.value.modality == "depth" and info.value.key == "00000000"
    assert not path.exists() and not list(tmp_path.iterdir())


def test_manifest_round_trip(tmp_path):
    specs = specs_by_name(builtin_modalities())
    manifest = Manifest(
        tmp_path,
        32,
        specs,
        {"train": (ShardInfo("train/shard-000000.tar", 5, "ab"),), "val": ()},
        generator={"name": "test", "seed": 7},
        class_names={"color": ["red"]},
    )
    path = write_manifest(manifest)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    loaded = read_manifest(tmp_path)
    assert loaded == manifest
    assert loaded.specs == specs and list(loaded.specs) == list(specs)
    assert loaded.seed == 7 and loaded.num_samples("train") == 5 and loaded.num_samples("x") == 0
    assert loaded.shards("train") == ["train/shard-000000.tar"]
    assert read_manifest(path) == manifest  # the file itself works too


def test_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dataset manifest at .*manifest\.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataError, match="invalid manifest") as info:
        read_manifest(tmp_path)
    assert info.value.file == str(tmp_path / MANIFEST_NAME)
    bad_kind = {
        "format": {"name": "fourm-lightning-webdataset", "version": 1},
        "resolution": 8,
        "splits": {},
        "modalities": [{"name": "x", "kind": {"class_path": "os.system", "init_args": {}}}],
    }
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(bad_kind))
    with pytest.raises(DataError, match="not a ModalityKind") as info:
        read_manifest(tmp_path)
    assert MANIFEST_NAME in str(info.value)


def _raw(tmp_path, scene_sample, override=None):
    stored = scene_to_stored(scene_sample(5, RES), RES)
    path = tmp_path / "shard.tar"
    with ShardWriter(path, builtin_modalities(), RES) as writer:
        writer.write(sample_key(5), stored)
    (raw,) = list(iter_raw_samples(path))
    for filename, payload in (override or {}).items():
        if payload is None:
            raw.pop(filename)
        else:
            raw[filename] = payload
    return raw, str(path)


@pytest.mark.parametrize(
    ("override", "modality", "fragment"),
    [
        ({"depth.npy": None}, "depth", "no 'depth.npy'"),
        ({"depth.npy": DepthMap().encode(np.ones((RES, RES + 1), np.float32))}, "depth", "spatial"),
        ({"rgb.png": b"not a png"}, "rgb", "cannot decode 'rgb.png'"),
        ({"rgb.png": RGBImage().encode(np.zeros((4, 4, 3), np.uint8))}, "rgb", "16x16"),
        ({"det.json": b'[{"box": [0.5, 0, 0.2, 1], "class": "cube"}]'}, "det", "x0<x1"),
        ({"caption.txt": b"\xff\xfe"}, "caption", "UTF-8"),
    ],
)
def test_decode_errors_name_file_key_and_modality(
    tmp_path, scene_sample, override, modality, fragment
):
    raw, url = _raw(tmp_path, scene_sample, override)
    with pytest.raises(DataError) as info:
        decode_sample(raw, specs_by_name(builtin_modalities()), RES)
    error = info.value
    assert (error.file, error.key, error.modality) == (url, "00000005", modality)
    text = str(error)
    assert fragment in text and url in text and "00000005" in text and repr(modality) in text


def test_decode_only_requested_modalities(tmp_path, scene_sample):
    raw, _ = _raw(tmp_path, scene_sample, {"depth.npy": None})
    specs = specs_by_name(builtin_modalities())
    decoded = decode_sample(raw, {"rgb": specs["rgb"], "det": specs["det"]}, RES)
    assert set(decoded) == {"rgb", "det", "__key__", "__url__"}


def test_random_access_matches_sequential_reading(tmp_path, handmade_dataset):
    root = handmade_dataset(tmp_path / "ds", num_val=7, samples_per_shard=3)
    sequential = list(iter_samples(root, "val", ["rgb", "caption"]))
    assert [s["__key__"] for s in sequential] == [sample_key(i) for i in range(7)]
    for index in (0, 3, 6):
        one = load_sample(root, "val", index, ["rgb", "caption"])
        assert one["caption"] == sequential[index]["caption"]
        np.testing.assert_array_equal(one["rgb"], sequential[index]["rgb"])
    with pytest.raises(IndexError):
        load_sample(root, "val", 7)
    with pytest.raises(ValueError, match="valid names are"):
        load_sample(root, "val", 0, ["rgb", "colour"])


def test_synthesize_is_byte_identical_across_worker_counts(tmp_path, tree_hashes):
    kwargs = {"num_train": 10, "num_val": 4, "resolution": 32, "seed": 3, "samples_per_shard": 4}
    one = synthesize_dataset(tmp_path / "one", workers=1, progress=False, **kwargs)
    two = synthesize_dataset(tmp_path / "two", workers=2, progress=False, **kwargs)
    hashes = tree_hashes(tmp_path / "one")
    assert hashes == tree_hashes(tmp_path / "two")
    assert sorted(hashes) == [
        MANIFEST_NAME,
        *[f"train/shard-00000{i}.tar" for i in range(3)],
        "val/shard-000000.tar",
    ]
    assert one.to_json() == two.to_json()
    assert one.num_samples("train") == 10 and [s.num_samples for s in one.splits["train"]] == [
        4,
        4,
        2,
    ]
    # Shard hashes in the manifest are those of the files.
    for shard in one.splits["train"]:
        assert shard.sha256 == hashes[shard.path]
    # A different seed gives different data.
    kwargs["seed"] = 4
    other = synthesize_dataset(tmp_path / "seed4", workers=1, progress=False, **kwargs)
    assert other.splits["val"][0].sha256 != one.splits["val"][0].sha256


def test_synthesize_refuses_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthesize_dataset(tmp_path, num_train=1, num_val=1, resolution=32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    manifest = synthesize_dataset(
        tmp_path, num_train=1, num_val=1, resolution=32, progress=False, overwrite=True
    )
    assert manifest.num_samples("val") == 1 and (tmp_path / MANIFEST_NAME).is_file()
    sample = load_sample(tmp_path, "train", 0)
    assert set(sample) - {"__key__", "__url__"} == {s.name for s in builtin_modalities()}
