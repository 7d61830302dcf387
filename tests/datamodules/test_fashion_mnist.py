"""Fashion-MNIST conversion: idx reading, finding the files, shards read back by the DataModule."""

import gzip
import struct
import subprocess

import numpy as np
import pytest
import torch
from fakes import NUM_TEST, NUM_TRAIN
from fakes import fake_fashion_source as _fake_source
from fakes import write_idx as _write_idx
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from fourm_lightning.cli import main
from fourm_lightning.datamodules import fashion_mnist as fm
from fourm_lightning.datamodules.multimodal import MultimodalDataModule
from fourm_lightning.datamodules.shards import read_manifest
from fourm_lightning.modalities import ClassLabel, DataError


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No $FASHION_MNIST_DIR, no installed package, and no apt-get to call."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setattr(fm, "APT_GET", "no-such-apt-get-for-tests")


def test_read_idx_gzip_and_plain(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    _write_idx(tmp_path / "a", array, compress=False)
    for name in ("a.gz", "a"):
        out = fm.read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.flags.writeable
        np.testing.assert_array_equal(out, array)


def test_read_idx_names_the_file_on_bad_magic_or_size(tmp_path):
    bad_magic = tmp_path / "train-images-idx3-ubyte.gz"
    bad_magic.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100)))
    with pytest.raises(DataError, match="magic number 0x12340803") as info:
        fm.read_idx(bad_magic)
    assert str(bad_magic) in str(info.value)

    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(7))
    with pytest.raises(DataError, match="7 bytes") as info:
        fm.read_idx(short)
    assert str(short) in str(info.value)

    broken_gzip = tmp_path / "broken.gz"
    broken_gzip.write_bytes(gzip.compress(bytes(64))[:20])
    with pytest.raises(DataError, match="gzip") as info:
        fm.read_idx(broken_gzip)
    assert str(broken_gzip) in str(info.value)


def test_convert_and_read_back_through_the_datamodule(tmp_path):
    source = _fake_source(tmp_path / "src")
    out = tmp_path / "fmnist"
    manifest = fm.convert_fashion_mnist(out, source=tmp_path / "src", samples_per_shard=4)

    assert manifest.num_samples("train") == NUM_TRAIN and manifest.num_samples("val") == NUM_TEST
    assert len(manifest.shards("train")) == 3 and len(manifest.shards("val")) == 2
    stored = read_manifest(out)
    assert stored.resolution == 28 and list(stored.specs) == ["rgb", "label"]
    assert stored.specs["label"].kind == ClassLabel(class_names=fm.FASHION_MNIST_CLASSES)
    assert stored.class_names == {"label": list(fm.FASHION_MNIST_CLASSES)}
    assert stored.generator["dataset"]["splits"]["val"]["official_split"] == "test"

    images, labels = source["t10k"]
    dm = MultimodalDataModule(
        str(out), modalities=["rgb", "label"], resolution=64, num_workers=0, batch_size=4
    )
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert [len(b["__key__"]) for b in batches] == [4, 2]
    rgb = torch.cat([b["rgb"] for b in batches])
    label = torch.cat([b["label"] for b in batches])
    assert rgb.shape == (NUM_TEST, 3, 64, 64) and rgb.dtype == torch.uint8
    assert label.shape == (NUM_TEST,) and label.dtype == torch.int64
    assert label.tolist() == labels.tolist()  # in the order written
    assert all(b["__skipped__"] == 0 for b in batches)
    # Gray replicated to 3 channels, then resized 28 -> 64 like any evaluation crop.
    gray = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1)
    resized = tvf.resize(gray, [64, 64], InterpolationMode.BILINEAR, antialias=True)
    torch.testing.assert_close(rgb, resized, atol=0, rtol=0)

    # At the stored resolution the pixels are exactly the source's.
    native = MultimodalDataModule(
        str(out), modalities=["rgb", "label"], num_workers=0, batch_size=NUM_TEST
    )
    native.setup("validate")
    (batch,) = list(native.val_dataloader())
    for channel in range(3):
        np.testing.assert_array_equal(batch["rgb"][:, channel].numpy(), images)

    # The training stream (random crops and flips) carries the labels through unchanged.
    _, train_labels = source["train"]
    dm = MultimodalDataModule(
        str(out),
        modalities=["rgb", "label"],
        resolution=64,
        num_workers=0,
        batch_size=4,
        epoch_samples=8,
    )
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert batch["rgb"].shape == (4, 3, 64, 64) and batch["label"].dtype == torch.int64
        expected = [int(train_labels[int(key)]) for key in batch["__key__"]]
        assert batch["label"].tolist() == expected


def test_limit_skip_and_overwrite(tmp_path, capsys):
    _fake_source(tmp_path / "src")
    out = tmp_path / "fmnist"
    manifest = fm.convert_fashion_mnist(out, source=tmp_path / "src", limit=5)
    assert manifest.num_samples("train") == 5 and manifest.num_samples("val") == 5
    stamp = (out / "manifest.json").stat().st_mtime_ns

    # Same settings: nothing is rewritten.
    again = fm.convert_fashion_mnist(out, source=tmp_path / "src", limit=5)
    assert again.splits == manifest.splits
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    assert "nothing to do" in capsys.readouterr().out

    # Other settings, or other source files: refused without overwrite.
    with pytest.raises(FileExistsError, match="overwrite"):
        fm.convert_fashion_mnist(out, source=tmp_path / "src", limit=6)
    _fake_source(tmp_path / "other", seed=1)
    with pytest.raises(FileExistsError, match="other files"):
        fm.convert_fashion_mnist(out, source=tmp_path / "other", limit=5)
    manifest = fm.convert_fashion_mnist(out, source=tmp_path / "src", overwrite=True)
    assert manifest.num_samples("train") == NUM_TRAIN

    # A shard that changed on disk makes the conversion count as unfinished.
    (out / manifest.shards("val")[0]).write_bytes(b"")
    with pytest.raises(FileExistsError, match="missing or changed"):
        fm.convert_fashion_mnist(out, source=tmp_path / "src")


def test_corrupt_source_file_is_named(tmp_path):
    _fake_source(tmp_path / "src")
    bad = tmp_path / "src" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\xff\xff\xff\xff"))
    with pytest.raises(DataError, match="magic number") as info:
        fm.convert_fashion_mnist(tmp_path / "out", source=tmp_path / "src")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_find_honours_the_environment_variable(tmp_path, monkeypatch, no_system_data, capsys):
    _fake_source(tmp_path / "env")
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "env"))
    assert fm.find_fashion_mnist(cache=tmp_path / "cache") == tmp_path / "env"
    assert fm.ENV_VAR in capsys.readouterr().out

    (tmp_path / "env" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz"):
        fm.find_fashion_mnist(cache=tmp_path / "cache")


def test_find_uses_an_unpacked_package_in_the_cache(tmp_path, no_system_data):
    unpacked = tmp_path / "cache" / "usr/share/datasets/fashion-mnist"
    _fake_source(unpacked)
    assert fm.find_fashion_mnist(cache=tmp_path / "cache") == unpacked


def test_find_gives_a_clear_error_when_nothing_is_found(tmp_path, no_system_data):
    with pytest.raises(FileNotFoundError) as info:
        fm.find_fashion_mnist(cache=tmp_path / "cache")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "dpkg-deb -x" in message and fm.ENV_VAR in message
    assert "no-such-apt-get-for-tests not found" in message  # why the download was not tried


def test_find_downloads_and_unpacks_the_package_without_root(tmp_path, monkeypatch):
    # A real .deb built here, and a stand-in apt-get that "downloads" it into its cwd.
    root = tmp_path / "pkg"
    _fake_source(root / "usr/share/datasets/fashion-mnist")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test <t@example.com>\nDescription: test\n"
    )
    deb = tmp_path / "dataset-fashion-mnist_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(root), str(deb)], check=True)
    apt_get = tmp_path / "fake-apt-get"
    apt_get.write_text(f'#!/bin/sh\n[ "$1 $2" = "download dataset-fashion-mnist" ] && cp {deb} .\n')
    apt_get.chmod(0o755)
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setattr(fm, "APT_GET", str(apt_get))

    cache = tmp_path / "cache"
    folder = fm.find_fashion_mnist(cache=cache)
    assert folder == cache / "usr/share/datasets/fashion-mnist"
    assert not fm._missing(folder)
    assert [p.name for p in cache.iterdir()] == ["usr"]  # no .deb or temporary folder left


def test_cli_converts_with_the_environment_variable(tmp_path, monkeypatch):
    _fake_source(tmp_path / "src")
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "src"))
    out = tmp_path / "cli_out"
    main(["data", "fashion-mnist", "--out", str(out), "--limit", "3", "--samples-per-shard", "2"])
    manifest = read_manifest(out)
    assert manifest.num_samples("train") == 3 and len(manifest.shards("train")) == 2
