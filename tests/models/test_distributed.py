"""Scale-out through Lightning on 2 CPU processes: DDP and FSDP2 match one process.

Each case runs ``distributed_run.py`` in a subprocess (Lightning re-launches the running command
for rank 1, which must not be pytest). A fixed global batch of 4 samples with equal per-domain
target counts is split 2 + 2 across ranks; the mean of the ranks' losses must equal the loss of
one process on all 4, and one optimizer step must leave the same weights. With
``length_groups=2`` each rank runs its short and its long sample as two passes, and must still
match the single process's one pass.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("distributed_run.py")


def run(mode: str, out: Path, length_groups: int = 1) -> tuple[list[dict], dict]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out), str(length_groups)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return records, torch.load(out / "weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run("single", tmp_path_factory.mktemp("single") / "out")


@pytest.mark.parametrize(("mode", "length_groups"), [("ddp", 1), ("fsdp", 1), ("fsdp", 2)])
def test_two_processes_match_one_process(mode, length_groups, single, tmp_path):
    (reference,), weights = single
    records, distributed = run(mode, tmp_path / "out", length_groups)
    assert len(records) == 2
    # The ranks saw disjoint halves of the global batch.
    assert sorted(records[0]["keys"] + records[1]["keys"]) == sorted(reference["keys"])
    assert not set(records[0]["keys"]) & set(records[1]["keys"])
    mean_loss = (records[0]["loss"] + records[1]["loss"]) / 2
    assert mean_loss == pytest.approx(reference["loss"], rel=1e-5)
    assert records[0]["loss"] != pytest.approx(records[1]["loss"], rel=1e-3)  # real halves
    assert distributed.keys() == weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    if mode == "fsdp":
        # FSDP2: each rank holds half of every block weight.
        assert all(r["sharded"] and r["local_share"] == 0.5 for r in records)
    else:
        assert not any(r["sharded"] for r in records)
