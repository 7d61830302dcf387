"""The main job end to end through ``fourm-lightning quickstart`` on a micro plan.

Every stage runs for real (dataset, 7 tokenizers, WordPiece, pre-tokenization, 4M, generation,
evaluation) with one or two steps each; then the resume rules are checked on the same run folder.
"""

import json

import pytest
import yaml

from fourm_lightning.cli import main
from fourm_lightning.quickstart.plan import ROOT, duration, load_plan, seconds
from fourm_lightning.quickstart.record import StageRecord, wall_seconds

SMALL_DATA = {"data.init_args.batch_size": 4, "data.init_args.num_workers": 0}


def micro_plan(tmp_path):
    raw = yaml.safe_load((ROOT / "configs/quickstart/tiny.yaml").read_text())
    raw["dataset"].update(num_train=16, num_val=8, workers=1)
    for tokenizer in raw["tokenizers"]:
        tokenizer.update(max_steps=2, warmup_steps=1)
        tokenizer["overrides"] = {**tokenizer.get("overrides", {}), **SMALL_DATA}
    # A deadline already passed: the 4M gets the floor, a tenth of its max_time.
    raw["pretrain"].update(max_steps=2, warmup_steps=1, val_check_interval=2, end_by="00:00:00:00")
    raw["pretrain"]["overrides"] = {
        **raw["pretrain"].get("overrides", {}),
        **SMALL_DATA,
        "data.init_args.epoch_samples": 8,
    }
    raw["generation"]["num_samples"] = 1
    raw["evaluation"].update(num_samples=4, batch_size=4)
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(plan, out, capsys):
    capsys.readouterr()
    main(["quickstart", "--plan", str(plan), "--out", str(out)])
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    plan, out = micro_plan(tmp), tmp / "run"
    main(["quickstart", "--plan", str(plan), "--out", str(out)])
    return plan, out


def test_every_stage_writes_its_outputs_and_results(finished):
    plan, out = finished
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    tokenizers = ["rgb", "depth", "normal", "semseg", "canny_edge", "instance_edge", "camera"]
    assert stages == sorted(
        ["dataset", "pretokenize", "pretrain", "generation", "evaluation", "tok_text"]
        + [f"tok_{m}" for m in tokenizers]
    )
    # The precision measured for this CPU (plan: auto) is the one every training stage used.
    chosen = json.loads((out / "precision.json").read_text())["precision"]
    assert chosen in ("bf16-mixed", "32-true")
    for m in tokenizers:
        assert (out / f"tokenizers/tok_{m}/version_0/checkpoints/last.ckpt").is_file()
        assert (
            yaml.safe_load((out / f"configs/tok_{m}.yaml").read_text())["trainer"]["precision"]
            == chosen
        )
        # The config written for the run is the one a user repeats with `fit --config`.
        config = yaml.safe_load((out / f"configs/tok_{m}.yaml").read_text())
        assert config["trainer"]["max_steps"] == 2
        assert config["data"]["init_args"]["data_dir"] == str(out / "data")
    fourm = yaml.safe_load((out / "configs/fourm.yaml").read_text())
    assert fourm["trainer"]["precision"] == chosen
    limit = duration(seconds(load_plan(plan).pretrain.max_time) // 10)
    assert fourm["trainer"]["max_time"] == limit
    assert json.loads((out / "stages/pretrain.json").read_text())["metrics"]["max_time"] == limit
    paths = [d["init_args"].get("tokenizer") for d in fourm["model"]["init_args"]["domains"]]
    assert all(p is None or p.startswith(str(out)) for p in paths)
    # The plan's masking mixture file replaces the experiment config's.
    mixture = yaml.safe_load((ROOT / load_plan(plan).pretrain.mixture).read_text())
    assert fourm["data"]["init_args"]["mixture"] == mixture
    # steps_from_time: the step budget is fitted to max_time, max_steps its cap (the run above
    # took its 2 steps with the callback in place).
    assert load_plan(plan).pretrain.steps_from_time
    budget = [c for c in fourm["trainer"]["callbacks"] if c["class_path"].endswith("StepsFromTime")]
    assert budget == [
        {"class_path": "fourm_lightning.callbacks.StepsFromTime", "init_args": {"max_steps": 2}}
    ]
    assert (out / "fourm/version_0/checkpoints/last.ckpt").is_file()
    assert (out / "figures/rgb2all.png").stat().st_size > 1000
    assert (out / "figures/caption2rgb.png").stat().st_size > 1000
    # The chain's last step alone, from the caption and the true semseg and depth: its RGB is
    # generated, its semseg is the condition (the true map, so every named shape is there
    # as often as in the true image row).
    generation = json.loads((out / "stages/generation.json").read_text())["metrics"]
    assert generation["caption2rgb_given"] == ["caption", "tok_semseg", "tok_depth"]
    layout = generation["caption2rgb_given_layout_agreement"]
    truth = generation["caption2rgb_agreement"]["true image"]
    assert layout["generated"]["shapes"] == truth["shapes"]
    assert (out / "generation/caption2rgb_given_layout/generate.json").is_file()

    scores = json.loads((out / "evaluation.json").read_text())
    assert scores["num_samples"] == 4
    assert set(scores["model"]) == set(scores["ceiling"])
    assert {"tok_depth", "tok_normal", "tok_semseg", "caption", "det"} <= set(scores["model"])
    # The ceiling scores the ground truth through the tokenizers: captions come back exactly.
    assert scores["ceiling"]["caption"]["all"] == 1.0
    results = (out / "results.md").read_text()
    assert f"Training precision: {chosen} (matmul float32 " in results
    for domain in scores["model"]:
        assert f"| `{domain}` |" in results
    assert "![RGB to all](figures/rgb2all.png)" in results
    assert "| last step alone, from `caption`, `tok_semseg`, `tok_depth` (true) |" in results
    assert "| `tok_semseg` | 2 |" in results  # the tokenizer table: name and steps
    # What the RGB image and the caption tell the model, every probe the model has.
    gains = scores["conditioning"]
    assert set(gains) == {"rgb", "caption"}
    assert set(gains["caption"]["own"]) == {"tok_depth", "tok_semseg", "tok_rgb"}
    assert set(gains["rgb"]["none"]) == {"tok_depth", "tok_normal", "tok_semseg", "caption"}
    assert "## What the inputs tell the model" in results
    own, none = gains["caption"]["own"]["tok_rgb"], gains["caption"]["none"]["tok_rgb"]
    assert f"| caption | `tok_rgb` | {own:.3f} |" in results
    assert f"{none - own:+.3f} |" in results


def test_a_second_run_skips_every_stage(finished, capsys):
    plan, out = finished
    checkpoint = out / "fourm/version_0/checkpoints/last.ckpt"
    before = checkpoint.stat().st_mtime_ns
    printed = run(plan, out, capsys)
    assert printed.count("skipped: valid output exists") == 13
    assert checkpoint.stat().st_mtime_ns == before


def test_a_deleted_checkpoint_reruns_that_stage_and_those_after_it(finished, capsys):
    plan, out = finished
    (out / "fourm/version_0/checkpoints/last.ckpt").unlink()
    printed = run(plan, out, capsys)
    assert printed.count("skipped: valid output exists") == 10
    for stage in ("4M pretraining", "generation", "evaluation"):
        assert f"] {stage}: " in printed and f"] {stage}: skipped" not in printed
    assert (out / "fourm/version_0/checkpoints/last.ckpt").is_file()


def test_an_edited_mixture_file_reruns_pretraining_and_what_follows(finished, capsys, tmp_path):
    plan, out = finished
    raw = yaml.safe_load(plan.read_text())
    mixture = yaml.safe_load((ROOT / raw["pretrain"]["mixture"]).read_text())
    mixture_file, edited_plan = tmp_path / "mixture.yaml", tmp_path / "plan.yaml"
    mixture_file.write_text(yaml.safe_dump(mixture))
    raw["pretrain"]["mixture"] = str(mixture_file)
    edited_plan.write_text(yaml.safe_dump(raw))
    run(edited_plan, out, capsys)  # a plan naming another file: pretraining reruns once
    assert run(edited_plan, out, capsys).count("skipped: valid output exists") == 13
    # Same plan, same file name, new content: the resolved config is fingerprinted.
    mixture[0]["weight"] = 2.0
    mixture_file.write_text(yaml.safe_dump(mixture))
    printed = run(edited_plan, out, capsys)
    assert printed.count("skipped: valid output exists") == 10
    for stage in ("4M pretraining", "generation", "evaluation"):
        assert f"] {stage}: " in printed and f"] {stage}: skipped" not in printed
    fourm = yaml.safe_load((out / "configs/fourm.yaml").read_text())
    assert fourm["data"]["init_args"]["mixture"][0]["weight"] == 2.0


def test_a_resumed_run_counts_the_reused_stages_against_the_deadline(finished, capsys, tmp_path):
    plan, out = finished
    raw = yaml.safe_load(plan.read_text())
    # A 1-hour 4M that must end 10 minutes into the run: only the deadline decides its limit.
    raw["pretrain"].update(max_time="00:01:00:00", end_by="00:00:10:00")
    edited_plan = tmp_path / "plan.yaml"
    edited_plan.write_text(yaml.safe_dump(raw))
    printed = run(edited_plan, out, capsys)
    assert printed.count("skipped: valid output exists") == 10  # all but 4M and what follows
    earlier = ["dataset", "tok_text", "pretokenize"] + [
        p.stem for p in (out / "stages").glob("tok_*.json") if p.stem != "tok_text"
    ]
    stored = [json.loads((out / f"stages/{name}.json").read_text()) for name in earlier]
    reused = wall_seconds(
        StageRecord(r["name"], r["fingerprint"], started=r["started"], made=r["made"])
        for r in stored
    )
    assert reused > 5  # the micro run's dataset and tokenizers take longer than that
    limit = seconds(yaml.safe_load((out / "configs/fourm.yaml").read_text())["trainer"]["max_time"])
    # What the first run's stages took comes off the 10 minutes, plus this run's own seconds.
    assert 600 - reused - 60 <= limit <= 600 - reused


def test_plan_and_tiny_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--plan or --tiny"):
        main(["quickstart", "--tiny", "--plan", "x.yaml", "--out", str(tmp_path)])
