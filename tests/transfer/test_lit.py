"""TransferModule: heads, losses, layer decay, frozen backbones, loading a pretrained 4M."""

import pytest
import torch
from fakes import TINY_ENCODER

from fourm_lightning.commands.generate import load_model
from fourm_lightning.transfer.encoder import EncoderConfig
from fourm_lightning.transfer.lit import TransferModule


def _module(task="classification", **kwargs):
    kwargs.setdefault("num_classes", None if task == "depth" else 3)
    return TransferModule(task, encoder=EncoderConfig(**TINY_ENCODER), **kwargs)


def _images(b=2):
    return torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)


@pytest.mark.parametrize(
    ("task", "shape"),
    [("classification", (2, 3)), ("segmentation", (2, 3, 32, 32)), ("depth", (2, 1, 32, 32))],
)
def test_forward_shapes(task, shape):
    out = _module(task)(_images())
    assert out.shape == shape
    if task == "depth":
        assert (out > 0).all()  # depth is predicted as log depth, returned in metres


def test_layer_decay_scales_each_encoder_layer():
    module = _module(layer_decay=0.5)
    groups = module.parameter_groups()
    n = module.encoder.num_layers  # embedding, 1 block, norm = 3
    assert n == 3
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5**3, 0.5**2, 0.5**1, 1.0]  # embedding, block, norm, head
    head_ids = {id(p) for p in module.head.parameters()}
    for group in groups:
        if any(id(p) in head_ids for p in group["params"]):
            assert group["lr_scale"] == 1.0
    # Norms and biases are not decayed.
    for group in groups:
        for p in group["params"]:
            if p.ndim == 1:
                assert group["weight_decay"] == 0.0


def test_frozen_encoder_does_not_change_and_the_head_does():
    module = _module(freeze_encoder=True)
    module.train()
    assert not module.encoder.training  # stays in eval mode while the head trains
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.AdamW(
        [p for g in module.parameter_groups() for p in g["params"]], lr=0.1
    )
    batch = {"rgb": _images(4), "target": torch.tensor([0, 1, 2, 0]), "__key__": ["a"] * 4}
    module._loss(batch)[0].backward()
    optimizer.step()
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["head.linear.weight"], after["head.linear.weight"])


def test_losses_ignore_what_carries_no_label():
    module = _module()
    batch = {"rgb": _images(2), "target": torch.tensor([-1, -1]), "__key__": ["a", "b"]}
    loss = module._loss(batch)[0]
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    depth = _module("depth", target_key="depth")
    target = torch.full((2, 1, 32, 32), 2.0)
    target[:, :, :16] = 0.0  # invalid pixels: no depth
    batch = {"rgb": _images(2), "depth": target, "__key__": ["a", "b"]}
    loss, pred, _ = depth._loss(batch)
    # L1 of log depth over the valid half only.
    expected = (pred.log() - torch.log(torch.tensor(2.0))).abs()[:, :, 16:].mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_pretrained_encoder_is_the_4m_encoder(fitted):
    _, checkpoint = fitted
    module = _module(pretrained=str(checkpoint))
    # Loaded weights come in eval mode; the module must train like a scratch one.
    assert all(m.training for m in module.encoder.modules())
    model = load_model(str(checkpoint))
    ours = module.encoder.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(ours[f"blocks.{name}"], value)
    assert torch.equal(ours["embed.proj.weight"], model.encoder_embeddings["rgb"].proj.weight)
    # Same weights, same features: the encoder is 4M's encoder on all RGB patches.
    images = _images(2)
    from fourm_lightning.generation.io import condition_state

    state = condition_state(model, images=list(images.permute(0, 2, 3, 1).numpy()))
    with torch.no_grad():
        expected = model.encode({"rgb": state["rgb"]}).tokens
        got = module.encoder(images)
    assert torch.allclose(got, expected, atol=1e-5)


def test_pretrained_sizes_must_match(fitted):
    _, checkpoint = fitted
    sizes = dict(TINY_ENCODER, dim=64)
    with pytest.raises(ValueError, match="dim"):
        TransferModule(
            "classification", 3, encoder=EncoderConfig(**sizes), pretrained=str(checkpoint)
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        TransferModule("segmentation", None)
    with pytest.raises(ValueError, match="layer_decay"):
        _module(layer_decay=1.5)
    with pytest.raises(KeyError, match="target"):
        _module()._loss({"rgb": _images(2), "__key__": ["a", "b"]})
