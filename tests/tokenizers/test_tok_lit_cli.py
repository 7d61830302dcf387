"""Every tokenizer experiment config runs `fit` through the real CLI on the tiny dataset."""

from pathlib import Path

import pytest
import torch

from fourm_lightning.cli import main
from fourm_lightning.tokenizers.loading import load_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiment").glob("tok_*.yaml"))


def _data_overrides(data_dir):
    return [
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2",
        "--data.init_args.resolution=32",
    ]


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_fast_dev_run(config, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # logs and checkpoints stay in the test folder
    main(
        ["fit", "--config", str(config), "--trainer.fast_dev_run=1", *_data_overrides(tiny_dataset)]
    )


def test_tiny_experiment_checkpoint_loads_with_load_tokenizer(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "experiment" / "tok_tiny_synth.yaml"),
            f"--data.init_args.data_dir={tiny_dataset}",
            "--trainer.max_steps=2",
        ]
    )
    ckpt = next(tmp_path.rglob("last.ckpt"))
    raw = torch.load(ckpt, weights_only=True)
    assert raw["hyper_parameters"]["_class_path"].endswith("VQVAETokenizer")
    tokenizer = load_tokenizer(ckpt, modality="depth", expected_vocab_size=64)
    depth = torch.rand(2, 1, 32, 32) * 5 + 1
    tokens = tokenizer.encode(depth)
    assert tokens.shape == (2, 4, 4)
    again = load_tokenizer(tokenizer.export(tmp_path / "export"))
    assert torch.equal(again.encode(depth), tokens)
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # TensorBoard scalars and image grid


@pytest.mark.parametrize(
    "model", sorted((CONFIGS / "model" / "tokenizer").glob("*.yaml")), ids=lambda p: p.stem
)
def test_group_files_compose(model, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--trainer",
                str(CONFIGS / "trainer" / "default.yaml"),
                "--data",
                str(CONFIGS / "data" / "synth.yaml"),
                "--model",
                str(model),
                "--print_config",
            ]
        )
    assert "class_path" in capsys.readouterr().out
