"""Out-of-the-box evaluation on the tiny fitted 4M: every task scored, the ceiling, bad input."""

import math

import pytest
import torch

from fourm_lightning.commands.generate import load_model
from fourm_lightning.datamodules.shards import read_manifest
from fourm_lightning.modalities import specs_by_name
from fourm_lightning.tokenizers.serializers import BoxSerializer
from fourm_lightning.tokenizers.text import TextTokenizer
from fourm_lightning.transfer import ootb
from fourm_lightning.transfer.metrics import align_log_depth, detection_map


@pytest.fixture(scope="module")
def model(fitted):
    return load_model(str(fitted[1]))


def test_every_domain_with_a_task_is_scored(model, tiny_dataset):
    scores = ootb.evaluate(model, str(tiny_dataset), num_samples=4, batch_size=2, progress=False)
    tasks = ootb.default_tasks()
    assert set(scores) == {n for n in model.domains if n in tasks}
    for name, values in scores.items():
        assert tasks[name].primary in values
        assert all(math.isfinite(v) for v in values.values()), (name, values)


def test_ceiling_of_text_is_perfect_and_of_maps_is_finite(model, tiny_dataset):
    scores = ootb.evaluate(
        model, str(tiny_dataset), ceiling=True, num_samples=4, batch_size=2, progress=False,
        domains=["caption", "det", "tok_depth"],
    )  # fmt: skip
    # Captions round-trip through WordPiece exactly.
    assert scores["caption"]["all"] == 1.0
    # Boxes come back quantized to the serializer's bins and cut to the domain's max_tokens (24
    # here, fewer than some box lists need): the ceiling is the mAP of that round trip.
    kind = specs_by_name(read_manifest(tiny_dataset).specs.values())["det"].kind
    serializer = BoxSerializer(class_names=kind.class_names)
    domain = model.domains["det"]
    text = TextTokenizer.load(domain.tokenizer)
    truths = next(ootb._batches(str(tiny_dataset), ["det"], 4, 4))["det"]
    parsed = []
    for truth in truths:
        ids = text.encode(serializer.serialize(kind.to_stored(truth)))[: domain.max_tokens - 1]
        parsed.append(kind.to_tensor(kind.from_text(text.decode(ids))))
    expected = detection_map(parsed, truths, kind.class_names)
    assert scores["det"]["map_50"] == pytest.approx(expected["map_50"], abs=1e-6)
    assert 0.0 <= scores["tok_depth"]["abs_rel"] < 10


def test_unknown_domain_is_an_error(model, tiny_dataset):
    with pytest.raises(ValueError, match="tok_nope"):
        ootb.evaluate(model, str(tiny_dataset), domains=["tok_nope"], num_samples=2)


def test_align_log_depth_recovers_a_power_and_scale():
    # pred = 3 * target ** 0.5, so log pred = 0.5 log target + log 3: the fit inverts it exactly.
    target = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    pred = 3 * target**0.5
    assert torch.allclose(align_log_depth(pred, target), target, rtol=1e-4)
    # Invalid target pixels do not enter the fit.
    broken = target.clone()
    broken[..., 0, 0] = 0.0
    assert torch.allclose(align_log_depth(pred, broken)[..., 1, :], target[..., 1, :], rtol=1e-4)
    # A flat prediction can only move to the mean log depth (geometric mean 2.83 of 1, 2, 4, 8).
    flat = align_log_depth(torch.ones_like(target), target)
    assert torch.allclose(flat, torch.full_like(target, 64**0.25), rtol=1e-4)


def test_mean_baseline_predicts_the_split_mean(tiny_dataset):
    domains = ["tok_camera", "tok_semseg", "caption"]
    scores = ootb.evaluate_mean_baseline(str(tiny_dataset), domains, num_samples=8, batch_size=3)
    assert set(scores) == {"tok_camera", "tok_semseg"}  # text has no mean
    batches = list(ootb._batches(str(tiny_dataset), ["camera", "semseg"], 8, 8))
    camera = torch.cat([b["camera"] for b in batches])
    semseg = torch.cat([b["semseg"] for b in batches]).long()
    # Camera: the mean vector for everyone; RMSE over all components.
    expected = (camera - camera.mean(0)).pow(2).mean().sqrt()
    assert scores["tok_camera"]["rmse"] == pytest.approx(float(expected), rel=1e-5)
    # Semseg: the most frequent class per pixel; pixel accuracy = share of pixels it matches.
    counts = torch.stack([(semseg == c).sum(0) for c in range(int(semseg.max()) + 1)])
    mode = counts.argmax(0)
    assert scores["tok_semseg"]["pixel_acc"] == pytest.approx(
        float((semseg == mode).float().mean())
    )
