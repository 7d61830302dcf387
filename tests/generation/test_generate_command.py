"""The generate command end to end on the tiny fitted 4M, conditions, schedules, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fourm_lightning.cli import main
from fourm_lightning.commands.generate import load_model
from fourm_lightning.generation import GenerationStep
from fourm_lightning.generation.io import condition_state
from fourm_lightning.tokenizers.text import TextTokenizer

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = {
    "schedule": [
        {"target": "tok_depth", "scheme": "maskgit", "steps": 2},
        {"target": "tok_semseg", "scheme": "roar", "steps": 1, "guidance_scale": 2.0},
        {"target": "tok_camera", "scheme": "roar", "steps": 1},
        {"target": "caption", "scheme": "autoregressive", "temperature": 0.5, "max_tokens": 8},
        {"target": "det", "scheme": "autoregressive", "temperature": 0.5, "max_tokens": 8},
    ]
}


@pytest.fixture(scope="module")
def schedule_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("schedule") / "tiny2all.yaml"
    path.write_text(yaml.safe_dump(SCHEDULE))
    return path


def test_generate_from_validation_samples_writes_figures_and_raw_outputs(
    fitted, schedule_file, token_dataset, tmp_path
):
    _, checkpoint = fitted
    out = main(
        [
            "generate", "--config", str(schedule_file), "--model", str(checkpoint),
            "--val-samples", "3", "--data-dir", str(token_dataset), "--out", str(tmp_path),
            "--batch-size", "2",
        ]
    )  # fmt: skip
    record = json.loads((Path(out) / "generate.json").read_text())
    assert len(record["samples"]) == 3 and len(record["seconds_per_batch"]) == 2
    key = record["samples"][0]
    for name in ("png", "rgb.png", "tok_depth.npy", "tok_depth_true.npy", "tok_semseg.png"):
        assert (tmp_path / f"{key}.{name}").is_file(), name
    depth = np.load(tmp_path / f"{key}.tok_depth.npy")
    assert depth.shape == (32, 32) and np.isfinite(depth).all()
    boxes = json.loads((tmp_path / f"{key}.det.json").read_text())
    assert isinstance(boxes, list)
    assert isinstance((tmp_path / f"{key}.caption.txt").read_text(), str)


def test_generate_from_image_files_of_any_size(fitted, schedule_file, tmp_path):
    _, checkpoint = fitted
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)).save(image)
    main(
        [
            "generate", "--config", str(schedule_file), "--model", str(checkpoint),
            "--image", str(image), "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert (tmp_path / "out" / "photo.png").is_file()
    assert (tmp_path / "out" / "photo.tok_semseg.png").is_file()


def test_generate_from_a_caption(fitted, tmp_path):
    _, checkpoint = fitted
    schedule = tmp_path / "caption2depth.yaml"
    schedule.write_text(yaml.safe_dump({"schedule": [{"target": "tok_depth", "steps": 2}]}))
    main(
        [
            "generate", "--config", str(schedule), "--model", str(checkpoint),
            "--caption", "a red sphere", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert (tmp_path / "out" / "caption.tok_depth.npy").is_file()


def test_bad_conditions_give_clear_errors(fitted, schedule_file, text_tokenizer_dir):
    _, checkpoint = fitted
    model = load_model(str(checkpoint))
    text = TextTokenizer.load(text_tokenizer_dir)
    with pytest.raises(ValueError, match="expected 32x32 with 3 channels"):
        condition_state(model, images=[np.zeros((40, 40, 3), np.uint8)])
    with pytest.raises(ValueError, match="longer than the modality allows"):
        condition_state(model, texts={"caption": ["cube " * 40]}, text_tokenizer=text)
    with pytest.raises(ValueError, match="exactly one of"):
        main(["generate", "--config", str(schedule_file), "--model", str(checkpoint)])


def test_a_partial_caption_keeps_its_sentinel_for_the_model_to_fill(fitted, text_tokenizer_dir):
    _, checkpoint = fitted
    model = load_model(str(checkpoint))
    text = TextTokenizer.load(text_tokenizer_dir)
    state = condition_state(model, texts={"caption": ["a red [S_1]"]}, text_tokenizer=text)
    ids = state["caption"]["tensor"][0][state["caption"]["input_mask"][0]].tolist()
    assert ids[-1] == text.sentinel_id(1) and text.eos_id not in ids
    full = condition_state(model, texts={"caption": ["a red cube"]}, text_tokenizer=text)
    assert full["caption"]["tensor"][0][full["caption"]["input_mask"][0]].tolist()[-1] == 3


@pytest.mark.parametrize("name", ["rgb2all", "caption2rgb", "caption_boxes2all"])
def test_shipped_schedules_fit_the_nano_experiment(name):
    from fourm_lightning.cli import lightning_cli

    cli = lightning_cli(
        [
            "--config", str(ROOT / "configs/experiment/fourm_nano_synth.yaml"),
            "--model.init_args.check_tokenizers", "false",
        ],
        run=False,
    )  # fmt: skip
    config = yaml.safe_load((ROOT / "configs/generation" / f"{name}.yaml").read_text())
    assert isinstance(config["schedule"], list)
    for entry in config["schedule"]:
        GenerationStep(**entry).check(cli.model.model)


def test_a_missing_relative_tokenizer_path_says_where_it_looked(tmp_path, monkeypatch):
    import pytest

    from fourm_lightning.generation.io import Detokenizer
    from fourm_lightning.models import FourM, ImageTokenDomain

    domain = ImageTokenDomain("tok_depth", vocab_size=8, grid=2, tokenizer="runs/x/tok_depth")
    model = FourM([domain], dim=16, encoder_depth=1, decoder_depth=1, num_heads=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"runs/x/tok_depth \(relative to .*export"):
        Detokenizer(model).tokenizer("runs/x/tok_depth")
