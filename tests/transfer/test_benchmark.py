"""The tiny benchmark suite: pretraining, out of the box, transfer and tables, through the CLI."""

import csv
import json
from pathlib import Path

import yaml
from fakes import tiny_transfer_args

from fourm_lightning.cli import main

ROOT = Path(__file__).parents[2]
FASHION = str(ROOT / "configs/transfer/fashion_mnist.yaml")


def _suite(tmp_path, experiment, tiny_dataset, fashion_dataset):
    """The tiny suite: 2 pretrainings, 3 scored models, 2 tasks x 2 backbones (+ a probe)."""
    config = yaml.safe_load(experiment.read_text())
    depth_domains = [
        d
        for d in config["model"]["init_args"]["domains"]
        if d["init_args"]["name"] in ("rgb", "tok_depth")
    ]
    specialist = [
        "--model.init_args.domains", json.dumps(depth_domains),
        "--data.init_args.mixture",
        json.dumps([{"input_alphas": {"rgb": 1000.0}, "target_alphas": {"tok_depth": 1.0}}]),
    ]  # fmt: skip
    task_args = {
        name: tiny_transfer_args(name, tiny_dataset, fashion_dataset)
        for name in ("shape_cls_synth", "fashion_mnist")
    }
    return {
        "name": "tiny",
        "work_dir": str(tmp_path / "work"),
        "results_dir": str(tmp_path / "results"),
        "pretrain": [
            {"name": "4m", "configs": [str(experiment)]},
            {"name": "specialist_depth", "configs": [str(experiment)], "args": specialist},
        ],
        "pretrain_args": ["--trainer.max_steps", "2"],
        "ootb": {
            "data_dir": str(tiny_dataset),
            "models": ["4m"],
            "specialists": {"tok_depth": "specialist_depth"},
            "ceiling_from": "4m",
            "num_samples": 4,
            "batch_size": 4,
        },
        "transfer": {
            "backbones": {"scratch": None, "4m": "4m"},
            "tasks": [
                {"name": "shape_cls", "config": str(ROOT / "configs/transfer/shape_cls_synth.yaml"),
                 "metric": "acc", "seeds": [0, 1], "args": task_args["shape_cls_synth"]},
                {"name": "fashion_mnist", "config": FASHION,
                 "metric": "acc", "seeds": [0], "probe": True, "args": task_args["fashion_mnist"]},
            ],
        },
    }  # fmt: skip


def test_tiny_suite_writes_its_tables_and_resumes(
    tmp_path, experiment, tiny_dataset, fashion_dataset
):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(_suite(tmp_path, experiment, tiny_dataset, fashion_dataset)))
    results = main(["benchmark", "--config", str(suite)])
    assert results == tmp_path / "results"

    rows = list(csv.DictReader((results / "results.csv").open()))
    ootb = {(r["model"], r["task"]) for r in rows if r["section"] == "ootb"}
    assert ("4m", "tok_depth") in ootb and ("4m", "caption") in ootb
    assert ("specialist", "tok_depth") in ootb and ("tokenizer ceiling", "det") in ootb
    assert ("input-free mean", "tok_depth") in ootb and ("input-free mean", "caption") not in ootb
    transfer = [r for r in rows if r["section"] == "transfer" and r["metric"] == "acc"]
    runs = {(r["task"], r["model"], r["seed"]) for r in transfer}
    assert runs == {
        ("shape_cls", "scratch (finetune)", "0"), ("shape_cls", "scratch (finetune)", "1"),
        ("shape_cls", "4m (finetune)", "0"), ("shape_cls", "4m (finetune)", "1"),
        ("fashion_mnist", "scratch (finetune)", "0"), ("fashion_mnist", "4m (finetune)", "0"),
        ("fashion_mnist", "4m (probe)", "0"),
    }  # fmt: skip
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in transfer)

    table = (results / "results.md").read_text()
    assert "## Out of the box" in table and "## Transfer" in table and "**total**" in table
    # Two seeds: mean ± std in the table; the std is the two values' sample spread.
    assert "±" in table.split("| shape_cls |")[1].split("\n")[0]
    assert (results / "results.png").stat().st_size > 10_000

    # Every run recorded the command that repeats it; a second call runs nothing again.
    done = sorted((tmp_path / "work").rglob("done.json"))
    assert len(done) == 2 + 7
    assert all(
        json.loads(p.read_text())["command"].startswith("fourm-lightning fit ") for p in done
    )
    stamps = [p.stat().st_mtime_ns for p in done]
    main(["benchmark", "--config", str(suite)])
    assert [p.stat().st_mtime_ns for p in done] == stamps
