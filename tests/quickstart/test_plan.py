"""The quickstart plan files: the shipped plans load, and bad plans fail naming file and key."""

import pytest
import yaml

from fourm_lightning.quickstart.plan import (
    ROOT,
    duration,
    load_plan,
    merge_over,
    plan_dict,
    seconds,
    set_dotted,
)


@pytest.mark.parametrize("name", ["full", "tiny", "caption"])
def test_shipped_plans_load_and_cover_every_tokenized_domain(name):
    plan = load_plan(ROOT / "configs" / "quickstart" / f"{name}.yaml")
    pretrain = yaml.safe_load((ROOT / plan.pretrain.config).read_text())
    needed = {
        d["init_args"]["name"].removeprefix("tok_")
        for d in pretrain["model"]["init_args"]["domains"]
        if "tokenizer" in d["init_args"] and not d["class_path"].endswith("TextDomain")
    }
    assert needed == {t.modality for t in plan.tokenizers}


def test_the_tiny_plan_has_the_same_stages_and_configs_as_the_full_one():
    full = load_plan(ROOT / "configs/quickstart/full.yaml")
    tiny = load_plan(ROOT / "configs/quickstart/tiny.yaml")
    assert [(t.modality, t.config) for t in tiny.tokenizers] == [
        (t.modality, t.config) for t in full.tokenizers
    ]
    assert tiny.pretrain.config == full.pretrain.config
    assert sum(t.max_steps for t in tiny.tokenizers) < sum(t.max_steps for t in full.tokenizers)


@pytest.mark.parametrize("name", ["full", "tiny", "caption"])
def test_every_override_of_the_shipped_plans_names_a_key_of_its_config(name):
    # set_dotted refuses new keys; without this a typo or a key the experiment config does not
    # list fails only when the quickstart reaches that stage, minutes into the run.
    plan = load_plan(ROOT / "configs" / "quickstart" / f"{name}.yaml")
    stages = [(t.config, t.overrides) for t in plan.tokenizers]
    stages.append((plan.pretrain.config, plan.pretrain.overrides))
    checked = 0
    for config, overrides in stages:
        target = yaml.safe_load((ROOT / config).read_text())
        for key, value in overrides.items():
            set_dotted(target, key, value)
            checked += 1
    assert checked >= 5  # the plans override the map quantizers and the 4M's size


def test_the_caption_plan_is_the_full_plan_with_more_4m_time():
    full = plan_dict(load_plan(ROOT / "configs/quickstart/full.yaml"))
    caption = plan_dict(load_plan(ROOT / "configs/quickstart/caption.yaml"))
    more = seconds(caption["pretrain"]["max_time"]) - seconds(full["pretrain"]["max_time"])
    assert more > 0
    # The deadline moves by at least as much, so the extra time is not cut away again.
    assert seconds(caption["pretrain"]["end_by"]) - seconds(full["pretrain"]["end_by"]) >= more
    for plan in (caption, full):
        del plan["pretrain"]["max_time"], plan["pretrain"]["end_by"]
    assert caption == full


def test_a_base_plan_is_merged_under_the_derived_one(tmp_path):
    base = _write(tmp_path, lambda raw: None)
    derived = tmp_path / "derived.yaml"
    rgb = {"modality": "rgb", "config": "configs/experiment/tok_rgb_synth.yaml", "max_steps": 3}
    changes = {
        "base": str(base),
        "pretrain": {"overrides": {"model.init_args.lr": 0.5}},
        "tokenizers": [{**rgb, "warmup_steps": 1}],
    }
    derived.write_text(yaml.safe_dump(changes))
    plan, tiny = load_plan(derived), load_plan(base)
    # Mappings merge key by key: the new override joins the base plan's.
    assert plan.pretrain.overrides == {**tiny.pretrain.overrides, "model.init_args.lr": 0.5}
    assert plan.pretrain.max_steps == tiny.pretrain.max_steps
    # Lists are replaced whole.
    assert [t.modality for t in plan.tokenizers] == ["rgb"]
    assert merge_over({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}


def test_a_base_that_is_missing_or_loops_is_named(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump({"base": str(tmp_path / "nope.yaml")}))
    with pytest.raises(ValueError, match=r"first\.yaml: base names .*nope\.yaml, which is not a"):
        load_plan(first)
    first.write_text(yaml.safe_dump({"base": str(second)}))
    second.write_text(yaml.safe_dump({"base": str(first)}))
    with pytest.raises(ValueError, match="makes a loop of plans"):
        load_plan(first)


def _write(tmp_path, change):
    raw = yaml.safe_load((ROOT / "configs/quickstart/tiny.yaml").read_text())
    change(raw)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_an_unknown_key_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, lambda raw: raw["pretrain"].update(max_step=3))
    with pytest.raises(ValueError, match=r"plan\.yaml: pretrain: unknown keys \['max_step'\]"):
        load_plan(path)


def test_a_missing_stage_is_an_error(tmp_path):
    path = _write(tmp_path, lambda raw: raw.pop("evaluation"))
    with pytest.raises(ValueError, match="stages"):
        load_plan(path)


def test_a_missing_config_file_names_the_tokenizer(tmp_path):
    def change(raw):
        raw["tokenizers"][1]["config"] = "configs/experiment/tok_dpeth.yaml"

    with pytest.raises(ValueError, match=r"tokenizers\[depth\]\.config names .*tok_dpeth"):
        load_plan(_write(tmp_path, change))


def test_a_required_key_missing_names_the_entry(tmp_path):
    path = _write(tmp_path, lambda raw: raw["tokenizers"][2].pop("max_steps"))
    with pytest.raises(ValueError, match=r"tokenizers\[2\].*max_steps"):
        load_plan(path)


def test_set_dotted_changes_existing_keys_and_refuses_new_ones():
    config = {"model": {"init_args": {"lr": 1.0}}}
    set_dotted(config, "model.init_args.lr", 2.0)
    assert config["model"]["init_args"]["lr"] == 2.0
    with pytest.raises(KeyError, match=r"model\.init_args\.lrr"):
        set_dotted(config, "model.init_args.lrr", 3.0)
    with pytest.raises(KeyError, match="'modle'"):
        set_dotted(config, "modle.init_args.lr", 3.0)


def test_tokenizer_jobs_is_optional_and_checked(tmp_path):
    path = _write(tmp_path, lambda raw: raw.pop("tokenizer_jobs", None))
    assert load_plan(path).tokenizer_jobs == 1
    path = _write(tmp_path, lambda raw: raw.update(tokenizer_jobs=2))
    assert load_plan(path).tokenizer_jobs == 2
    for bad in (0, "2", True):
        path = _write(tmp_path, lambda raw, bad=bad: raw.update(tokenizer_jobs=bad))
        with pytest.raises(ValueError, match=f"{path}: tokenizer_jobs must be a positive integer"):
            load_plan(path)


def test_a_missing_mixture_file_names_the_key(tmp_path):
    path = _write(tmp_path, lambda raw: raw["pretrain"].update(mixture="configs/mixture/nope.yaml"))
    with pytest.raises(ValueError, match=r"pretrain\.mixture names configs/mixture/nope\.yaml"):
        load_plan(path)


def test_precision_is_optional_and_checked(tmp_path):
    path = _write(tmp_path, lambda raw: raw.pop("precision", None))
    assert load_plan(path).precision == "auto"
    path = _write(tmp_path, lambda raw: raw.update(precision="32-true"))
    assert load_plan(path).precision == "32-true"
    path = _write(tmp_path, lambda raw: raw.update(precision="fp16"))
    with pytest.raises(ValueError, match=f"{path}: precision must be one of"):
        load_plan(path)


@pytest.mark.parametrize("key", ["max_time", "end_by"])
def test_a_malformed_pretrain_duration_is_named(tmp_path, key):
    path = _write(tmp_path, lambda raw: raw["pretrain"].update({key: "14:30"}))
    with pytest.raises(ValueError, match=f"{path}: pretrain.{key}: expected a duration"):
        load_plan(path)


def test_durations_convert_both_ways():
    assert seconds("00:00:14:30") == 870
    assert seconds("01:02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4
    assert duration(870.9) == "00:00:14:30"
    assert duration(seconds("01:02:03:04")) == "01:02:03:04"
    assert duration(-5) == "00:00:00:00"


def test_scene_settings_reach_the_scene_config_as_tuples(tmp_path):
    path = _write(
        tmp_path, lambda raw: raw["dataset"].update(scene={"max_objects": 3, "fov_deg": [40, 50]})
    )
    scene = load_plan(path).dataset.scene_config()
    assert (scene.max_objects, scene.fov_deg) == (3, (40, 50))
    assert scene.resolution == load_plan(path).dataset.resolution


def test_a_bad_scene_setting_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, lambda raw: raw["dataset"].update(scene={"max_objekts": 3}))
    unknown = r"plan\.yaml: dataset\.scene: unknown keys \['max_objekts'\]"
    with pytest.raises(ValueError, match=unknown):
        load_plan(path)
    path = _write(tmp_path, lambda raw: raw["dataset"].update(scene={"camera_distance": [9, 3]}))
    with pytest.raises(ValueError, match=r"plan\.yaml: dataset\.scene: SceneConfig\.camera_dist"):
        load_plan(path)


def test_the_dataset_stage_renders_the_plans_scene_settings(tmp_path):
    from fourm_lightning.datamodules.shards import read_manifest
    from fourm_lightning.quickstart.plan import DatasetPlan
    from fourm_lightning.quickstart.record import StageBook
    from fourm_lightning.quickstart.stages import dataset_stage

    plan = DatasetPlan(
        num_train=2,
        num_val=1,
        resolution=32,
        workers=1,
        scene={"max_objects": 2, "fov_deg": [40, 41]},
    )
    dataset_stage(plan, tmp_path, StageBook(tmp_path))
    config = read_manifest(tmp_path / "data").generator["config"]
    assert (config["max_objects"], config["fov_deg"], config["resolution"]) == (2, [40, 41], 32)
