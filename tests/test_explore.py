"""The notebooks' helpers (``fourm_lightning.explore``) on hand-made values with known answers."""

from __future__ import annotations

import csv
import math

import matplotlib
import numpy as np
import pytest
import torch

from fourm_lightning import explore
from fourm_lightning.explore import MetricKey, ResultRow

matplotlib.use("Agg")

CLASS_NAMES = {
    "semseg": ["floor", "wall", "sphere", "cube", "cylinder", "cone"],
    "shape": ["sphere", "cube", "cylinder", "cone"],
    "color": ["red", "blue", "green"],
    "size": ["small", "large"],
}


def _obj(shape: str, color: str, size: str) -> dict:
    return {"shape": shape, "color": color, "size": size}


# -- run folders ---------------------------------------------------------------------------------


def test_repo_root_is_the_parent_of_the_notebook_folder(tmp_path):
    (tmp_path / "notebooks").mkdir()
    assert explore.repo_root(tmp_path / "notebooks") == tmp_path.resolve()
    assert explore.repo_root(tmp_path) == tmp_path.resolve()


def test_run_folder_reads_the_variable_relative_to_the_root(tmp_path):
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    (tmp_path / "runs" / "other").mkdir()
    default = explore.run_folder(tmp_path, environ={})
    assert default.path == (tmp_path / "runs" / "quickstart").resolve()
    other = explore.run_folder(tmp_path, environ={"FOURM_RUN": "runs/other"})
    assert other.path == (tmp_path / "runs" / "other").resolve()
    absolute = explore.run_folder("/nowhere", environ={"FOURM_RUN": str(tmp_path / "runs/other")})
    assert absolute.path == other.path
    assert other.tokenizer_checkpoint("depth") == (
        other.path / "tokenizers/tok_depth/version_0/checkpoints/last.ckpt"
    )
    assert other.fourm_checkpoint == other.path / "fourm/version_0/checkpoints/last.ckpt"
    assert other.text_tokenizer == other.path / "tokenizers/tok_text"
    assert (other.data, other.tokens) == (other.path / "data", other.path / "tokens")
    assert other.evaluation_file == other.path / "evaluation.json"
    with pytest.raises(FileNotFoundError, match=r"runs/missing.*FOURM_RUN"):
        explore.run_folder(tmp_path, environ={"FOURM_RUN": "runs/missing"})


# -- datasets ------------------------------------------------------------------------------------


def test_load_batch_collates_the_first_samples(tmp_path, handmade_dataset, scene_sample):
    data = handmade_dataset(tmp_path / "data", num_val=6, resolution=16)
    batch = explore.load_batch(data, "val", ["rgb", "depth", "semseg", "caption", "camera"], 4)
    assert batch["rgb"].shape == (4, 3, 16, 16) and batch["rgb"].dtype == torch.uint8
    assert batch["depth"].shape == (4, 1, 16, 16) and batch["semseg"].shape == (4, 16, 16)
    assert batch["camera"].shape == (4, 10)
    assert batch["__key__"] == ["00000000", "00000001", "00000002", "00000003"]
    for i in range(4):
        truth = scene_sample(i, 16)
        assert torch.equal(batch["rgb"][i], torch.from_numpy(truth["rgb"]).permute(2, 0, 1))
        assert torch.equal(batch["semseg"][i], torch.from_numpy(truth["semseg"]))
        assert batch["caption"][i] == truth["caption"]
    assert len(explore.load_batch(data, "val", ["caption"], 100)["caption"]) == 6
    with pytest.raises(ValueError, match="no 'train' samples"):
        explore.load_batch(data, "train", ["rgb"], 2)


def test_describe_value():
    assert explore.describe_value(np.zeros((64, 64, 3), np.uint8)) == "uint8 (64, 64, 3)"
    assert explore.describe_value(torch.zeros(1, 2)) == "float32 (1, 2)"
    assert explore.describe_value("abc") == "str (3 chars)"
    assert explore.describe_value({"a": 1, "b": 2}) == "dict (2 keys)"
    assert explore.describe_value([1, 2, 3]) == "list (3 items)"
    assert explore.describe_value(3) == "int"


def test_modality_table_lists_every_modality_with_its_stored_form(tmp_path, handmade_dataset):
    from fourm_lightning.datamodules.shards import load_sample, read_manifest

    data = handmade_dataset(tmp_path / "data", num_val=3, resolution=16)
    manifest = read_manifest(data)
    table = explore.modality_table(manifest, load_sample(data, "val", 0))
    assert [row["modality"] for row in table] == list(manifest.specs)
    rows = {row["modality"]: row for row in table}
    assert rows["rgb"] == {
        "modality": "rgb",
        "kind": "RGBImage",
        "file": "<key>.rgb.png",
        "stored form": "uint8 (16, 16, 3)",
        "description": manifest.specs["rgb"].description,
    }
    assert rows["depth"]["stored form"] == "float32 (16, 16)"
    assert rows["camera"]["kind"] == "GlobalVector"
    assert rows["caption"]["file"] == "<key>.caption.txt"
    partial = explore.modality_table(manifest, {"rgb": np.zeros((16, 16, 3), np.uint8)})
    assert {row["modality"]: row["stored form"] for row in partial}["depth"] == ""


def test_dataset_statistics_counts_known_scenes():
    samples = [
        {
            "scene": {"objects": [_obj("cube", "red", "small"), _obj("sphere", "red", "large")]},
            "det": [{"box": [0, 0, 1, 1]}],
            "caption": "a red cube and a red sphere",
            "depth": np.array([[0.0, 2.0], [3.0, 4.0]], np.float32),
            "semseg": np.array([[0, 0], [1, 2]], np.uint8),
        },
        {
            "scene": {"objects": [_obj("cone", "blue", "large")]},
            "det": [{"box": [0, 0, 1, 1]}],
            "caption": "a blue cone",
            "depth": np.array([[1.0, 1.0], [5.0, 1.0]], np.float32),
            "semseg": np.array([[1, 1], [1, 5]], np.uint8),
        },
    ]
    stats = explore.dataset_statistics(samples, CLASS_NAMES)
    assert stats.num_samples == 2
    assert stats.objects_per_scene.tolist() == [2, 1]
    assert stats.boxes_per_scene.tolist() == [1, 1]
    assert stats.caption_words.tolist() == [7, 3]
    assert stats.depth_min.tolist() == [2.0, 1.0]  # 0 marks no measurement
    assert stats.depth_max.tolist() == [4.0, 5.0]
    assert stats.semseg_pixels.tolist() == [2, 4, 1, 0, 0, 1]
    np.testing.assert_allclose(stats.semseg_share, [0.25, 0.5, 0.125, 0, 0, 0.125])
    assert stats.shapes == {"sphere": 1, "cube": 1, "cylinder": 0, "cone": 1}
    assert stats.colors == {"red": 2, "blue": 1, "green": 0}
    assert stats.sizes == {"small": 1, "large": 2}
    with pytest.raises(ValueError, match="no samples"):
        explore.dataset_statistics([], CLASS_NAMES)


# -- tokenizers ----------------------------------------------------------------------------------


def test_reconstruction_metrics_of_a_depth_tokenizer(tokenizer_dirs):
    from fourm_lightning.tokenizers.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dirs["depth"])
    depth = torch.full((2, 1, 32, 32), 2.0)
    # Twice the true depth everywhere: relative error 1, no pixel within a factor of 1.25.
    assert explore.reconstruction_metrics(tokenizer, depth, depth * 2) == pytest.approx(
        {"abs_rel": 1.0, "delta1": 0.0}
    )
    assert explore.reconstruction_metrics(tokenizer, depth, depth) == pytest.approx(
        {"abs_rel": 0.0, "delta1": 1.0}
    )


def test_reconstruction_metrics_of_an_rgb_tokenizer(tokenizer_dirs):
    from fourm_lightning.tokenizers.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dirs["rgb"])
    black = torch.zeros((2, 3, 32, 32), dtype=torch.uint8)
    gray = torch.full_like(black, 51)  # 0.2 of the range: MSE 0.04, PSNR 10 log10(1 / 0.04)
    scores = explore.reconstruction_metrics(tokenizer, black, gray)
    assert scores["psnr"] == pytest.approx(10 * math.log10(25), abs=1e-4)
    assert set(scores) == {"psnr", "ssim"}


def test_code_usage_counts_codes_and_ignores_padding():
    usage = explore.code_usage(torch.tensor([[0, 0, 1, -1]]), 4)
    assert usage.counts.tolist() == [2, 1, 0, 0]
    assert usage.vocab_size == 4 and usage.num_tokens == 3
    assert usage.share_used == pytest.approx(0.5)
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert usage.perplexity == pytest.approx(math.exp(entropy), rel=1e-5)
    uniform = explore.code_usage(torch.arange(8).reshape(2, 2, 2), 8)
    assert uniform.share_used == 1.0 and uniform.perplexity == pytest.approx(8.0)


def test_collect_tokens_stacks_samples_and_crops(token_dataset):
    from fourm_lightning.datamodules.pretokenize import iter_token_samples

    val = explore.collect_tokens(token_dataset, "val")
    assert set(val) == {"rgb", "depth", "semseg", "camera"}
    assert val["rgb"].shape == (8, 4, 4) and val["camera"].shape == (8, 2)
    first = next(iter_token_samples(token_dataset, "val"))
    assert torch.equal(val["depth"][0], first["tok_depth"][0])
    train = explore.collect_tokens(token_dataset, "train", limit=3)
    assert train["semseg"].shape == (6, 4, 4)  # 3 samples x 2 crops
    with pytest.raises(ValueError, match="no tokenized 'test' samples"):
        explore.collect_tokens(token_dataset, "test")


# -- results -------------------------------------------------------------------------------------

RESULTS = [
    ResultRow("ootb", "tok_depth", "4m", None, "abs_rel", 0.25),
    ResultRow("ootb", "tok_depth", "4m", None, "delta1", 0.75),
    ResultRow("ootb", "tok_depth", "tokenizer ceiling", None, "abs_rel", 0.01),
    ResultRow("ootb", "tok_camera", "4m", None, "rmse", 2.0),
    ResultRow("ootb", "tok_camera", "4m", None, "position_error", 5.0),
    ResultRow("ootb", "tok_camera", "4m", None, "fov_error", 4.0),  # not a shown metric
    ResultRow("ootb", "caption", "4m", None, "all", 0.1),
    ResultRow("transfer", "shape_cls", "scratch", 0, "acc", 1.0),
    ResultRow("transfer", "shape_cls", "scratch", 1, "acc", 3.0),
    ResultRow("transfer", "shape_cls", "mae", 0, "acc", 0.5),
    ResultRow("transfer", "shape_cls", "scratch", 0, "loss", 9.0),
]


def test_read_results_parses_a_results_csv(tmp_path):
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["section", "task", "model", "seed", "metric", "value", "seconds"])
        writer.writerow(["ootb", "tok_depth", "4m_rgb2all", "", "abs_rel", "0.0632", "97.4"])
        writer.writerow(["transfer", "shape_cls", "mae (finetune)", "1", "acc", "0.34", ""])
    assert explore.read_results(path) == [
        ResultRow("ootb", "tok_depth", "4m_rgb2all", None, "abs_rel", 0.0632, 97.4),
        ResultRow("transfer", "shape_cls", "mae (finetune)", 1, "acc", 0.34, None),
    ]


def test_evaluation_rows_label_the_model_the_ceiling_and_the_mean():
    scores = {
        "num_samples": 20,
        "model": {"tok_depth": {"abs_rel": 0.2}},
        "ceiling": {"tok_depth": {"abs_rel": 0.05}, "caption": {"all": 1.0}},
        "mean": {"tok_depth": {"abs_rel": 0.3}},
    }
    assert explore.evaluation_rows(scores, model="quickstart") == [
        ResultRow("ootb", "tok_depth", "quickstart", None, "abs_rel", 0.2),
        ResultRow("ootb", "tok_depth", "tokenizer ceiling", None, "abs_rel", 0.05),
        ResultRow("ootb", "caption", "tokenizer ceiling", None, "all", 1.0),
        ResultRow("ootb", "tok_depth", "input-free mean", None, "abs_rel", 0.3),
    ]
    assert explore.evaluation_rows({"model": {}}) == []


def test_ootb_keys_follow_the_benchmark_order_and_directions():
    assert explore.ootb_keys(RESULTS) == [
        MetricKey("tok_depth", "abs_rel", False),
        MetricKey("tok_depth", "delta1", None),
        MetricKey("tok_camera", "rmse", False),
        MetricKey("tok_camera", "position_error", None),
        MetricKey("caption", "all", True),
    ]
    assert explore.ootb_keys(RESULTS, primary_only=True) == [
        MetricKey("tok_depth", "abs_rel", False),
        MetricKey("tok_camera", "rmse", False),
        MetricKey("caption", "all", True),
    ]


def test_pivot_table_gives_values_and_mean_std_over_seeds():
    keys = [MetricKey("shape_cls", "acc", True), MetricKey("tok_depth", "abs_rel", False)]
    table = explore.pivot_table(RESULTS, keys)
    assert table == [
        {
            "task": "shape_cls",
            "metric": "acc ↑",
            "scratch": "2.000 ± 1.414",
            "mae": "0.500",
            "4m": "",
            "tokenizer ceiling": "",
        },
        {
            "task": "tok_depth",
            "metric": "abs_rel ↓",
            "scratch": "",
            "mae": "",
            "4m": "0.250",
            "tokenizer ceiling": "0.010",
        },
    ]
    chosen = explore.pivot_table(RESULTS, keys[:1], models=["mae"], digits=1)
    assert chosen == [{"task": "shape_cls", "metric": "acc ↑", "mae": "0.5"}]


def test_markdown_table():
    text = explore.markdown_table([{"a": 1.23456, "b": None, "c": "x|y"}, {"a": 2, "c": "<k>"}])
    assert text == "| a | b | c |\n|---|---|---|\n| 1.235 |  | x\\|y |\n| 2 |  | &lt;k&gt; |"
    assert explore.markdown_table([]) == ""


def test_plot_metric_bars_draws_means_and_one_panel_per_key():
    import matplotlib.pyplot as plt

    keys = [MetricKey("shape_cls", "acc", True), MetricKey("tok_depth", "abs_rel", False)]
    fig = explore.plot_metric_bars(RESULTS, keys, columns=4)
    first, second = fig.axes[:2]
    assert [p.get_height() for p in first.patches] == [2.0, 0.5]  # scratch (2 seeds), mae
    assert [t.get_text() for t in first.get_xticklabels()] == ["scratch", "mae"]
    assert first.get_ylabel() == "acc ↑" and first.get_title() == "shape_cls"
    assert [p.get_height() for p in second.patches] == [0.25, 0.01]
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no \(task, metric\) to plot"):
        explore.plot_metric_bars(RESULTS, [])


def test_show_displays_a_png_and_closes_the_figure(monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    fig, _ = plt.subplots(figsize=(2, 1))
    explore.show(fig, dpi=50)
    assert not plt.fignum_exists(fig.number)
    (image,) = shown
    assert isinstance(image, IPython.display.Image)
    assert image.data.startswith(b"\x89PNG")


# -- generation ----------------------------------------------------------------------------------


def test_read_schedule_reads_steps_and_keeps_the_model_s_targets(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text(
        "schedule:\n"
        "  - {target: tok_depth, scheme: maskgit, steps: 4, temperature: 0.5}\n"
        "  - {target: caption, scheme: autoregressive, top_p: 0.9}\n"
    )
    steps = explore.read_schedule(path)
    assert [(s.target, s.scheme, s.steps) for s in steps] == [
        ("tok_depth", "maskgit", 4),
        ("caption", "autoregressive", 8),
    ]
    assert steps[0].temperature == 0.5 and steps[1].top_p == 0.9
    assert [s.target for s in explore.read_schedule(path, ["caption", "rgb"])] == ["caption"]


def test_comparison_rows_put_truths_under_predictions_and_wrap():
    from fourm_lightning.modalities import builtin_modalities, specs_by_name

    specs = specs_by_name(builtin_modalities())
    rgb, depth, true_depth = torch.zeros(3, 4, 4), torch.ones(1, 4, 4), torch.full((1, 4, 4), 2.0)
    values = {"rgb": [rgb], "tok_depth": [depth], "caption": ["a cube"]}
    truth = {"rgb": [rgb], "depth": [true_depth]}
    sources = {"rgb": "rgb", "tok_depth": "depth", "caption": "caption"}
    rows = explore.comparison_rows(values, truth, specs, sources, 0, given=["rgb"])
    rgb_kind, depth_kind = specs["rgb"].kind, specs["depth"].kind
    assert rows == [
        [
            ("rgb", rgb, rgb_kind),
            ("tok_depth", depth, depth_kind),
            ("caption", "a cube", specs["caption"].kind),
        ],
        [None, ("depth (true)", true_depth, depth_kind), None],  # no caption truth given
    ]
    wrapped = explore.comparison_rows(values, truth, specs, sources, 0, given=["rgb"], columns=2)
    assert [len(row) for row in wrapped] == [2, 2, 1, 1]
    assert wrapped[2][0][0] == "caption"
