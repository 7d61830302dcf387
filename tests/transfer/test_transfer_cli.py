"""Every transfer config runs `fit` through the real CLI (fast_dev_run), on the tiny test data."""

import json
from pathlib import Path

import pytest
from fakes import tiny_transfer_args

from fourm_lightning.cli import main

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs", "transfer").glob("*.yaml"))


def test_there_are_transfer_configs():
    names = {p.stem for p in CONFIGS}
    assert {"shape_cls_synth", "color_seg_synth", "depth_shifted_synth", "fashion_mnist"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_fast_dev_run(config, tiny_dataset, fashion_dataset, tmp_path):
    args = [
        "fit",
        "--config",
        str(config),
        *tiny_transfer_args(config.stem, tiny_dataset, fashion_dataset),
    ]
    args += ["--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path)]
    cli = main(args)
    assert cli.trainer.global_step == 1
    assert all(p.isfinite().all() for p in cli.model.parameters())


def test_fit_from_a_pretrained_4m_writes_metrics(tiny_dataset, fashion_dataset, fitted, tmp_path):
    _, checkpoint = fitted
    config = next(p for p in CONFIGS if p.stem == "shape_cls_synth")
    args = [
        "fit",
        "--config",
        str(config),
        *tiny_transfer_args(config.stem, tiny_dataset, fashion_dataset),
    ]
    args += [
        "--model.init_args.pretrained", str(checkpoint),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]  # fmt: skip
    cli = main(args)
    record = json.loads((Path(cli.trainer.log_dir) / "metrics.json").read_text())
    assert record["global_step"] == 2
    assert 0.0 <= record["metrics"]["val/acc"] <= 1.0
    assert (Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt").is_file()
