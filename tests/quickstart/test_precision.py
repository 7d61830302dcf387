"""The measured choice of training precision, and the 4M's time limit under a run deadline."""

import dataclasses
import json

import pytest
import torch

from fourm_lightning.quickstart import precision as precision_module
from fourm_lightning.quickstart.plan import ROOT, load_plan, seconds
from fourm_lightning.quickstart.precision import (
    PrecisionChoice,
    matmul_gflops,
    pick_precision,
    resolve_precision,
)
from fourm_lightning.quickstart.stages import pretrain_time_limit


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"),
    [
        (210.0, 885.0, "bf16-mixed"),  # the EPYC the quickstart was tuned on
        (326.0, 165.0, "32-true"),  # a Xeon whose bf16 runs at half speed
        (100.0, 110.0, "32-true"),  # within the margin: the exact dtype wins
        (100.0, 120.0, "bf16-mixed"),
    ],
)
def test_pick_precision_takes_bf16_only_when_clearly_faster(fp32, bf16, expected):
    assert pick_precision(fp32, bf16) == expected


def test_pick_precision_rejects_a_non_positive_throughput():
    with pytest.raises(ValueError, match="must be positive"):
        pick_precision(0.0, 10.0)


def test_matmul_gflops_measures_a_positive_rate():
    assert matmul_gflops(torch.float32, size=64, seconds=0.01) > 0


def test_a_named_precision_is_used_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "matmul_gflops", pytest.fail)
    assert resolve_precision("32-true", tmp_path) == PrecisionChoice("32-true")
    assert not (tmp_path / "precision.json").exists()
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("16-mixed", tmp_path)


def test_auto_measures_once_and_a_resumed_run_reuses_the_choice(tmp_path, monkeypatch):
    rates = {torch.float32: 300.0, torch.bfloat16: 150.0}
    calls = []

    def fake(dtype, **_):
        calls.append(dtype)
        return rates[dtype]

    monkeypatch.setattr(precision_module, "matmul_gflops", fake)
    first = resolve_precision("auto", tmp_path)
    assert first == PrecisionChoice("32-true", 300.0, 150.0)
    assert first.autocast == "32"
    rates[torch.bfloat16] = 900.0  # a noisy second measurement must not flip a resumed run
    assert resolve_precision("auto", tmp_path) == first
    assert calls == [torch.float32, torch.bfloat16]
    assert json.loads((tmp_path / "precision.json").read_text())["precision"] == "32-true"


def test_a_damaged_choice_file_is_named(tmp_path):
    path = tmp_path / "precision.json"
    path.write_text('{"precision": "fp8"}')
    with pytest.raises(ValueError, match=f"{path}: precision 'fp8' is not one of"):
        resolve_precision("auto", tmp_path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not a precision choice"):
        resolve_precision("auto", tmp_path)


def test_the_4m_time_limit_shrinks_to_the_run_deadline():
    plan = load_plan(ROOT / "configs/quickstart/full.yaml").pretrain
    assert plan.end_by is not None
    limit, end = seconds(plan.max_time), seconds(plan.end_by)
    # On a machine whose earlier stages end in time, the 4M gets its whole budget.
    assert pretrain_time_limit(plan, end - limit - 60) == plan.max_time
    assert pretrain_time_limit(plan, end - limit) == plan.max_time
    # On a slower machine the 4M gets what is left before the deadline...
    assert seconds(pretrain_time_limit(plan, end - limit + 120)) == limit - 120
    # ...but never less than a tenth of its budget.
    assert seconds(pretrain_time_limit(plan, end)) == limit // 10
    unbounded = dataclasses.replace(plan, end_by=None)
    assert pretrain_time_limit(unbounded, 10 * end) == plan.max_time
