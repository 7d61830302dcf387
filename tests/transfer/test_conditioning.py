"""conditioning_gain: target losses given own, another sample's and no inputs."""

import math

import pytest
import torch

from fourm_lightning.transfer.conditioning import CONDITIONS, _with_inputs, conditioning_gain


def test_inputs_are_swapped_or_hidden_and_nothing_else_changes():
    batch = {
        "__key__": ["a", "b", "c"],
        "caption": {
            "tensor": torch.tensor([[1, 1], [2, 2], [3, 3]]),
            "input_mask": torch.ones(3, 2, dtype=torch.bool),
            "target_mask": torch.zeros(3, 2, dtype=torch.bool),
        },
        "tok_depth": {
            "tensor": torch.tensor([[7], [8], [9]]),
            "input_mask": torch.zeros(3, 1, dtype=torch.bool),
            "target_mask": torch.ones(3, 1, dtype=torch.bool),
        },
    }
    assert _with_inputs(batch, ["caption"], "own") is batch
    another = _with_inputs(batch, ["caption"], "another")
    assert another["caption"]["tensor"][:, 0].tolist() == [3, 1, 2]  # each takes the previous
    assert another["tok_depth"] is batch["tok_depth"]
    none = _with_inputs(batch, ["caption"], "none")
    assert not none["caption"]["input_mask"].any()
    assert torch.equal(none["caption"]["tensor"], batch["caption"]["tensor"])
    assert batch["caption"]["input_mask"].all()  # the original batch is untouched


def test_losses_on_the_tiny_model(fitted, token_dataset):
    cli, _ = fitted
    model = cli.model.model.eval()
    kwargs = {"num_samples": 8, "batch_size": 4}
    scores = conditioning_gain(model, token_dataset, ["rgb"], ["tok_depth", "caption"], **kwargs)
    assert set(scores) == set(CONDITIONS)
    for how in CONDITIONS:
        assert set(scores[how]) == {"tok_depth", "caption"}
        assert all(math.isfinite(v) and v > 0 for v in scores[how].values())
    # The inputs change the predictions (a 4-step model still reads them).
    assert scores["own"]["tok_depth"] != scores["none"]["tok_depth"]
    again = conditioning_gain(model, token_dataset, ["rgb"], ["tok_depth", "caption"], **kwargs)
    assert again == scores


def test_bad_requests_are_named(fitted, token_dataset):
    model = fitted[0].model.model
    with pytest.raises(ValueError, match=r"unknown domains \['tok_nope'\]"):
        conditioning_gain(model, token_dataset, ["rgb"], ["tok_nope"])
    with pytest.raises(ValueError, match=r"both: \['caption'\]"):
        conditioning_gain(model, token_dataset, ["caption"], ["caption"])
    with pytest.raises(ValueError, match=r"\['rgb'\] are input-only"):
        conditioning_gain(model, token_dataset, ["caption"], ["rgb"])
