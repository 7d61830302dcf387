"""MultimodalDataModule: shapes, exact-once validation, epochs, bad input, LightningCLI."""

import logging
import shutil
from pathlib import Path

import pytest
import torch

from fourm_lightning.datamodules.multimodal import MultimodalDataModule, SynthesizeConfig
from fourm_lightning.datamodules.shards import read_manifest, sample_key
from fourm_lightning.datamodules.stream import ErrorTally, ShardCache, read_shards
from fourm_lightning.modalities import DataError, DepthMap, builtin_modalities

ALL = [spec.name for spec in builtin_modalities()]
# The session dataset of tests/conftest.py (tiny_dataset): 24 train + 8 val samples at 32x32.
TINY_TRAIN, TINY_VAL, TINY_RESOLUTION = 24, 8, 32


def _keys(loader):
    return [key for batch in loader for key in batch["__key__"]]


def _check_batch(batch, names, b, s):
    assert list(batch) == [*names, "__key__", "__skipped__"]
    assert len(batch["__key__"]) == b and batch["__skipped__"] == 0
    expected = {
        "rgb": ((b, 3, s, s), torch.uint8),
        "depth": ((b, 1, s, s), torch.float32),
        "normal": ((b, 3, s, s), torch.float32),
        "semseg": ((b, s, s), torch.uint8),
        "instance": ((b, s, s), torch.uint8),
        "canny_edge": ((b, s, s), torch.uint8),
        "instance_edge": ((b, s, s), torch.uint8),
        "camera": ((b, 10), torch.float32),
    }
    for name in names:
        value = batch[name]
        if name in expected:
            assert (tuple(value.shape), value.dtype) == expected[name], name
        else:  # text-like kinds batch as lists
            assert isinstance(value, list) and len(value) == b, name
    if "normal" in names:
        norms = batch["normal"].norm(dim=1)
        assert ((norms - 1).abs() < 0.05).float().mean() > 0.99
    if "det" in names:
        for boxes in batch["det"]:
            assert boxes["boxes"].ndim == 2 and boxes["boxes"].shape[1] == 4
            assert ((boxes["boxes"] >= 0) & (boxes["boxes"] <= 1)).all()
    for name in ("canny_edge", "instance_edge"):
        if name in names:
            assert batch[name].max() <= 1


@pytest.mark.parametrize("resolution", [None, 24])
def test_train_batches_have_every_modality_with_right_shapes(tiny_dataset, resolution):
    dm = MultimodalDataModule(
        str(tiny_dataset), batch_size=4, num_workers=0, resolution=resolution, shuffle_buffer=8
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == TINY_TRAIN // 4  # epoch = the train split by default
    for batch in batches:
        _check_batch(batch, ALL, 4, resolution or TINY_RESOLUTION)
    val = next(iter(dm.val_dataloader()))
    _check_batch(val, ALL, 4, resolution or TINY_RESOLUTION)


def test_modality_selection_and_order(tiny_dataset):
    dm = MultimodalDataModule(str(tiny_dataset), ["depth", "rgb", "caption"], 2, num_workers=0)
    dm.setup("validate")
    assert list(dm.specs) == ["depth", "rgb", "caption"]
    batch = next(iter(dm.val_dataloader()))
    _check_batch(batch, ["depth", "rgb", "caption"], 2, TINY_RESOLUTION)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_validation_sees_every_sample_exactly_once_in_a_fixed_order(tiny_dataset, num_workers):
    dm = MultimodalDataModule(
        str(tiny_dataset), ["rgb", "det"], batch_size=3, num_workers=num_workers
    )
    dm.setup("validate")
    loader = dm.val_dataloader()
    first, second = _keys(loader), _keys(loader)
    assert sorted(first) == [sample_key(i) for i in range(TINY_VAL)]
    assert first == second  # deterministic order
    assert len(list(loader)) <= len(loader)
    # test/predict fall back to the val split of a dataset without a test split.
    assert sorted(_keys(dm.test_dataloader())) == sorted(first)
    assert sorted(_keys(dm.predict_dataloader())) == sorted(first)


def test_training_epochs_are_reproducible_and_differ(tiny_dataset):
    def first_epochs(seed):
        dm = MultimodalDataModule(
            str(tiny_dataset), ["rgb", "det"], 4, num_workers=0, shuffle_buffer=8, seed=seed
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        return [
            [
                (k, b["rgb"][i].float().mean().item())
                for b in loader
                for i, k in enumerate(b["__key__"])
            ]
            for _ in range(2)
        ]

    a, b = first_epochs(0), first_epochs(0)
    assert a == b  # same seed, same epochs (keys, crops)
    assert a[0] != a[1]  # the next epoch draws new shards, order and crops
    assert first_epochs(1)[0] != a[0]


def test_epoch_samples_sets_the_epoch_length(tiny_dataset):
    dm = MultimodalDataModule(
        str(tiny_dataset), ["camera"], 4, num_workers=2, epoch_samples=40, shuffle_buffer=4
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    # 40 samples / (4 per batch * 2 workers) -> 5 batches per worker.
    assert len(loader) == 10 and len(list(loader)) == 10


def test_unknown_modality_is_a_value_error_listing_valid_names(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"unknown modalities \['colour'\]") as info:
        MultimodalDataModule(str(tiny_dataset), ["rgb", "colour"])
    assert "'depth'" in str(info.value) and "'scene'" in str(info.value)
    # Before the dataset exists, the names are checked against the built-in modalities.
    with pytest.raises(ValueError, match="valid names are"):
        MultimodalDataModule(str(tmp_path / "absent"), ["dpeth"])
    dm = MultimodalDataModule(str(tmp_path / "absent"), ["depth"])
    with pytest.raises(FileNotFoundError, match="no dataset manifest"):
        dm.setup("fit")


def _copy(tiny_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    return root


def _run(root, on_error, names=("rgb", "depth"), split="val", workers=0):
    dm = MultimodalDataModule(str(root), list(names), 2, num_workers=workers, on_error=on_error)
    dm.setup("validate")
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    keys, skipped = [], 0
    for batch in loader:
        keys += batch["__key__"]
        skipped += batch["__skipped__"]
    return keys, skipped


def test_truncated_shard_is_skipped_counted_and_logged(tiny_dataset, tmp_path, caplog):
    root = _copy(tiny_dataset, tmp_path)
    shard = read_manifest(root).shard_paths("val")[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        keys, skipped = _run(root, "skip")
    # The second shard is intact; the truncated one gives only whole samples, never a crash.
    assert {sample_key(i) for i in range(4, TINY_VAL)} <= set(keys)
    assert len(keys) < TINY_VAL and skipped == TINY_VAL - len(keys)
    assert str(shard) in caplog.text and "skipped bad data" in caplog.text
    with pytest.raises(DataError) as info:
        _run(root, "raise")
    assert info.value.file == str(shard)


def test_truncated_training_shard_does_not_stop_the_epoch(tiny_dataset, tmp_path, caplog):
    root = _copy(tiny_dataset, tmp_path)
    for shard in read_manifest(root).shard_paths("train"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) * 2 // 3])
    # All modalities: the last sample of a cut shard lacks some of them, so it is skipped.
    dm = MultimodalDataModule(str(root), None, 4, num_workers=2, shuffle_buffer=4)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader())
    assert sum(b["__skipped__"] for b in batches) >= 1


def test_missing_modality_is_skipped_or_raised(tmp_path, handmade_dataset, caplog):
    root = handmade_dataset(tmp_path / "ds", num_val=6, broken={4: {"depth.npy": None}})
    with caplog.at_level(logging.WARNING, logger="fourm_lightning.datamodules.stream"):
        keys, skipped = _run(root, "skip")
    assert keys == [sample_key(i) for i in (0, 1, 2, 3, 5)] and skipped == 1
    (record,) = [r for r in caplog.records if "skipped bad data" in r.getMessage()]
    message = record.getMessage()
    assert "shard-000001.tar" in message and "key=00000004" in message
    assert "modality=depth" in message and "no 'depth.npy'" in message
    # Only requested modalities are required.
    assert _run(root, "skip", names=("rgb",)) == ([sample_key(i) for i in range(6)], 0)
    with pytest.raises(DataError) as info:
        _run(root, "raise")
    error = info.value
    assert error.file.endswith("val/shard-000001.tar") and error.key == "00000004"
    assert error.modality == "depth" and "00000004" in str(error) and "shard-000001" in str(error)


def test_wrong_depth_shape_is_skipped_or_raised(tmp_path, handmade_dataset, caplog):
    bad_depth = DepthMap().encode(torch.ones(16, 12).numpy())
    root = handmade_dataset(tmp_path / "ds", num_val=6, broken={1: {"depth.npy": bad_depth}})
    with caplog.at_level(logging.WARNING):
        keys, skipped = _run(root, "skip")
    assert sample_key(1) not in keys and len(keys) == 5 and skipped == 1
    assert "expected spatial size 16x16, got 16x12" in caplog.text
    with pytest.raises(DataError, match="16x12") as info:
        _run(root, "raise")
    assert (info.value.key, info.value.modality) == ("00000001", "depth")
    assert info.value.file.endswith("val/shard-000000.tar")


def test_skips_in_worker_processes_reach_the_batches(tmp_path, handmade_dataset):
    broken = {1: {"rgb.png": b"garbage"}, 4: {"depth.npy": None}}
    root = handmade_dataset(tmp_path / "ds", num_val=6, broken=broken)
    keys, skipped = _run(root, "skip", workers=2)
    assert sorted(keys) == [sample_key(i) for i in (0, 2, 3, 5)] and skipped == 2


def test_prepare_data_synthesizes_when_asked(tmp_path):
    root = tmp_path / "made"
    config = SynthesizeConfig(num_train=3, num_val=2, resolution=32, workers=1)
    dm = MultimodalDataModule(str(root), ["rgb", "semseg"], 2, num_workers=0, synthesize=config)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.manifest.num_samples("train") == 3 and dm.manifest.resolution == 32
    assert sorted(_keys(dm.val_dataloader())) == [sample_key(0), sample_key(1)]
    dm.prepare_data()  # a second call finds the manifest and does nothing


def test_lightning_cli_builds_the_datamodule_from_yaml(tiny_dataset, tmp_path, monkeypatch):
    from fourm_lightning.cli import lightning_cli

    monkeypatch.setattr("sys.argv", ["fourm-lightning"])
    config = tmp_path / "config.yaml"
    config.write_text(
        "model:\n"
        "  class_path: lightning.pytorch.demos.boring_classes.BoringModel\n"
        "data:\n"
        "  class_path: fourm_lightning.datamodules.MultimodalDataModule\n"
        "  init_args:\n"
        f"    data_dir: {tiny_dataset}\n"
        "    modalities: [rgb, depth]\n"
        "    batch_size: 8\n"
        "    on_error: raise\n"
        "    synthesize:\n"
        "      num_train: 10\n"
        "trainer:\n"
        "  logger: false\n"
        f"  default_root_dir: {tmp_path}\n"
    )
    cli = lightning_cli(["--config", str(config)], run=False)
    dm = cli.datamodule
    assert isinstance(dm, MultimodalDataModule)
    assert dm.modalities == ["rgb", "depth"] and dm.batch_size == 8 and dm.on_error == "raise"
    assert dm.synthesize == SynthesizeConfig(num_train=10)
    with pytest.raises(SystemExit):
        lightning_cli(["--config", str(config), "--data.init_args.on_error", "ignore"], run=False)


def test_fits_with_a_trainer(tiny_dataset, tmp_path):
    import lightning.pytorch as pl

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.log("data/skipped", float(batch["__skipped__"]), reduce_fx="sum")
            return self.layer(batch["rgb"].float().mean((2, 3))).mean()

        def validation_step(self, batch, batch_idx):
            self.seen += batch["__key__"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Model()
    dm = MultimodalDataModule(str(tiny_dataset), ["rgb"], 4, num_workers=0, shuffle_buffer=4)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 2 * TINY_TRAIN // 4
    assert sorted(model.seen) == sorted(2 * [sample_key(i) for i in range(TINY_VAL)])


def test_ranks_split_validation_and_draw_different_training_shards(tiny_dataset):
    dm = MultimodalDataModule(str(tiny_dataset), ["camera"], 2, num_workers=0, shuffle_buffer=2)
    dm.setup("fit")
    per_rank = []
    for rank in range(2):
        stream = dm.stream("val", train=False)
        stream.node = (rank, 2)  # what EpochDataLoader captures under DDP
        per_rank.append([k for batch in stream for k in batch["__key__"]])
        assert len(per_rank[-1]) <= 2 * len(stream)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == [sample_key(i) for i in range(TINY_VAL)]
    firsts = []
    for rank in range(2):
        stream = dm.stream("train", train=True)
        stream.node = (rank, 2)
        firsts.append([k for batch in stream for k in batch["__key__"]])
    assert firsts[0] != firsts[1]


def _read(urls, cache, expected=None):
    tally = ErrorTally("skip")
    raws = list(read_shards([{"url": u} for u in urls], tally, expected, cache))
    return raws, tally


def test_shard_cache_serves_whole_shards_from_memory(tiny_dataset, tmp_path):
    root = _copy(tiny_dataset, tmp_path)
    urls = [str(p) for p in read_manifest(root).shard_paths("val")]
    cache = ShardCache(max_bytes=2**30)
    first, tally = _read(urls, cache)
    assert len(first) == TINY_VAL and tally.total == 0 and set(cache.shards) == set(urls)
    assert cache.bytes == sum(len(v) for r in first for v in r.values() if isinstance(v, bytes))
    for url in urls:  # the files are gone: a second pass can only come from memory
        Path(url).unlink()
    again, tally = _read(urls, cache)
    assert tally.total == 0
    assert [r["__key__"] for r in again] == [r["__key__"] for r in first]
    assert all(a["rgb.png"] == b["rgb.png"] for a, b in zip(again, first, strict=True))


def test_shard_cache_keeps_to_its_budget_and_skips_bad_shards(tiny_dataset, tmp_path):
    root = _copy(tiny_dataset, tmp_path)
    manifest = read_manifest(root)
    urls = [str(p) for p in manifest.shard_paths("val")]
    sizes = dict(zip(urls, [s.num_samples for s in manifest.splits["val"]], strict=True))
    one, _ = _read(urls[:1], ShardCache(2**30))
    first_size = sum(len(v) for r in one for v in r.values() if isinstance(v, bytes))
    # Room for the first shard only: the second is read from disk on every pass.
    cache = ShardCache(max_bytes=first_size)
    _read(urls, cache)
    assert list(cache.shards) == urls[:1] and cache.bytes == first_size
    # A truncated shard is not kept, so its shortfall is reported again on every pass.
    data = Path(urls[1]).read_bytes()
    Path(urls[1]).write_bytes(data[: len(data) // 2])
    cache = ShardCache(max_bytes=2**30)
    for _ in range(2):
        raws, tally = _read(urls, cache, sizes)
        assert tally.total == TINY_VAL - len(raws) > 0
    assert list(cache.shards) == urls[:1]
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        ShardCache(-1)
