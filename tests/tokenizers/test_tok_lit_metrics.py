"""Tokenizer metrics against hand-computed values, and the kind adapters' invariants."""

import math

import pytest
import torch

from fourm_lightning.modalities import DepthMap, EdgeMap, ModalitySpec, builtin_modalities
from fourm_lightning.tokenizers.adapters import (
    ADAPTERS,
    DepthAdapter,
    EdgeAdapter,
    LabelAdapter,
    NormalAdapter,
    RGBAdapter,
    VectorAdapter,
    adapter_class,
    default_adapter,
    register_adapter,
)
from fourm_lightning.tokenizers.metrics import (
    CodebookUsage,
    DepthAbsRel,
    DepthDelta,
    MeanAngularError,
)

SPECS = {spec.name: spec for spec in builtin_modalities()}


def test_abs_rel_and_delta1_by_hand():
    target = torch.tensor([[1.0, 2.0], [4.0, 0.0]])  # the 0 is an invalid pixel
    pred = torch.tensor([[1.1, 3.0], [4.0, 7.0]])
    abs_rel, delta = DepthAbsRel(), DepthDelta(1.25)
    # Split over two updates: the result must not depend on batching.
    abs_rel.update(pred[:1], target[:1])
    abs_rel.update(pred[1:], target[1:])
    delta.update(pred, target)
    # |1.1-1|/1 = 0.1, |3-2|/2 = 0.5, 0 -> mean 0.2; ratios 1.1, 1.5, 1.0 -> 2 of 3 under 1.25
    assert abs_rel.compute().item() == pytest.approx(0.2, abs=1e-6)
    assert delta.compute().item() == pytest.approx(2 / 3, abs=1e-6)


def test_mean_angular_error_by_hand():
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    pred = torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    metric = MeanAngularError(dim=1)
    metric.update(pred, target)  # 90 and 45 degrees; the zero target is ignored
    assert metric.compute().item() == pytest.approx(67.5, abs=1e-4)
    image = MeanAngularError(dim=1)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    image.update(normals, normals)
    assert image.compute().item() == pytest.approx(0.0, abs=1e-4)


def test_codebook_usage_by_hand():
    usage = CodebookUsage(4)
    usage.update(torch.tensor([0, 0, 1, 1]))
    out = usage.compute()
    assert out["share_used"].item() == pytest.approx(0.5)
    assert out["perplexity"].item() == pytest.approx(2.0)


def test_adapters_are_found_by_kind_mro_and_new_kinds_register():
    expected = {
        "rgb": RGBAdapter,
        "depth": DepthAdapter,
        "normal": NormalAdapter,
        "semseg": LabelAdapter,
        "canny_edge": EdgeAdapter,
        "instance_edge": EdgeAdapter,
        "camera": VectorAdapter,
    }
    for name, cls in expected.items():
        assert type(default_adapter(SPECS[name])) is cls

    class MyDepth(DepthMap):  # a subclass inherits its parent's adapter
        pass

    assert adapter_class(MyDepth()) is DepthAdapter

    class Sketch(EdgeMap):
        pass

    try:

        @register_adapter(Sketch)
        class SketchAdapter(EdgeAdapter):
            kind_type = Sketch

        assert adapter_class(Sketch()) is SketchAdapter
    finally:
        ADAPTERS.pop(Sketch, None)


def test_adapter_refuses_the_wrong_kind_and_bad_batches():
    with pytest.raises(ValueError, match=r"'depth'.*DepthMap"):
        RGBAdapter().bind(SPECS["depth"])
    depth = default_adapter(SPECS["depth"])
    with pytest.raises(ValueError, match=r"modality 'depth'.*shape"):
        depth.check(torch.rand(2, 3, 8, 8))
    label = default_adapter(SPECS["semseg"])
    with pytest.raises(ValueError, match=r"modality 'semseg'.*labels outside"):
        label.check(torch.full((1, 4, 4), 200, dtype=torch.uint8))


@pytest.mark.parametrize("normalization", ["log", "robust"])
def test_depth_round_trip_with_reference_is_metric(normalization):
    adapter = DepthAdapter(normalization)
    adapter.bind(SPECS["depth"])
    depth = torch.rand(2, 1, 8, 8) * 9 + 1
    depth[0, 0, 0, 0] = 0.0  # invalid pixel
    prepared = adapter.prepare(depth)
    valid = prepared.context["valid"]
    assert torch.isfinite(prepared.input).all()
    assert prepared.input[valid].abs().max() < 10
    back = adapter.to_sample(prepared.input, prepared)
    assert torch.allclose(back[valid], depth[valid], rtol=1e-4, atol=1e-4)


def test_angular_normal_loss_is_the_angle():
    adapter = NormalAdapter("angular")
    adapter.bind(SPECS["normal"])
    target = torch.zeros(1, 3, 2, 2)
    target[:, 2] = 1
    pred = torch.zeros(1, 3, 2, 2)
    pred[:, 0] = 3.0  # 90 degrees whatever the length
    loss = adapter.loss(pred, adapter.prepare(target))
    assert loss.item() == pytest.approx(math.pi / 2, abs=1e-3)


def test_label_adapter_maps_ignore_index_for_embedding_and_loss():
    spec = ModalitySpec("seg", SPECS["semseg"].kind.__class__(num_classes=3, ignore_index=255))
    adapter = default_adapter(spec)
    value = torch.tensor([[[0, 2], [255, 1]]], dtype=torch.uint8)
    prepared = adapter.prepare(value)
    assert prepared.input.max() < 3 and prepared.target[0, 1, 0] == 255
    logits = torch.nn.functional.one_hot(prepared.input, 3).permute(0, 3, 1, 2).float() * 20
    assert adapter.loss(logits, prepared).item() < 1e-6


def test_rgb_chroma_term_charges_a_gray_reconstruction_and_not_a_correct_one():
    plain, coloured = RGBAdapter(), RGBAdapter(chroma_weight=4.0)
    plain.bind(SPECS["rgb"])
    coloured.bind(SPECS["rgb"])
    image = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    image[:, 0] = 200  # a red image ...
    gray = image.float().mean(1, keepdim=True).expand(-1, 3, -1, -1).round().to(torch.uint8)
    target, gray_output = plain.prepare(image), plain.prepare(gray).input  # ... decoded gray
    # Its chroma error is (200 - 66.7)^2 per red pixel and 66.7^2 per other channel, in [0, 1]
    # units over the mean channel variance.
    std = torch.tensor(SPECS["rgb"].kind.std)
    expected = ((200 - 200 / 3) ** 2 + 2 * (200 / 3) ** 2) / 3 / 255**2 / std.pow(2).mean()
    extra = coloured.loss(gray_output, target) - plain.loss(gray_output, target)
    assert extra.item() == pytest.approx(4.0 * expected.item(), rel=2e-2)
    assert coloured.loss(target.input, target).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="chroma_weight"):
        RGBAdapter(chroma_weight=-1.0)
