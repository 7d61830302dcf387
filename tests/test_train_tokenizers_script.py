"""scripts/train_tokenizers.py trains from the real configs, records the final checkpoint, and
re-validates it with --evaluate-only without writing anywhere but its output folder."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_tokenizers.py"


def _run_script(monkeypatch, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location("train_tokenizers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    module.main()


def test_train_then_evaluate_only_records_the_final_checkpoint(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the script must not depend on, or write to, the current folder
    out = tmp_path / "out"
    common = [
        "--out",
        str(out),
        "--data-dir",
        str(tiny_dataset),
        "--set",
        "data.init_args.num_workers=0",
        "--set",
        "data.init_args.batch_size=4",
    ]
    _run_script(
        monkeypatch, "camera", *common, "--max-steps", "3", "--set", "trainer.max_time=null"
    )
    trained = json.loads((out / "tokenizers.json").read_text())["results"]
    assert [r["modality"] for r in trained] == ["camera"]
    assert trained[0]["steps"] == 3 and trained[0]["checkpoint_step"] == 3
    assert -1.0 <= trained[0]["metrics"]["val/cosine"] <= 1.0

    _run_script(monkeypatch, "--evaluate-only", "camera", "rgb", *common)
    assert "rgb: no checkpoint" in capsys.readouterr().err
    evaluated = json.loads((out / "tokenizers.json").read_text())["results"]
    # Same weights, same validation split: the metrics of the reloaded checkpoint are the same.
    assert evaluated[0]["metrics"] == trained[0]["metrics"]
    assert "| `camera` | 3 | 3 |" in (out / "tokenizers.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
