"""MLP VQ for global vectors: standardisation buffers, shapes, real learning."""

import pytest
import torch
import torch.nn.functional as F

from fourm_lightning.tokenizers.mlp_vq import MLPVQ
from fourm_lightning.tokenizers.quantizers import CosineVQ, FSQQuantizer, Quantizer


def make_quantizer(kind: str) -> Quantizer:
    if kind == "cosine":
        return CosineVQ(dim=8, codebook_size=64, decay=0.9, threshold_ema_dead_code=0.1)
    return FSQQuantizer(levels=[5, 5, 5])


def camera_like(n: int = 64) -> torch.Tensor:
    # entries with very different scales and offsets, like metres, unit vectors and degrees
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 10, generator=g) * torch.linspace(0.1, 30, 10) + torch.linspace(
        -5, 50, 10
    )


@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_shapes(kind):
    torch.manual_seed(0)
    model = MLPVQ(make_quantizer(kind), input_dim=10, num_tokens=4, hidden_dim=32, depth=1).eval()
    v = camera_like(5)
    tokens = model.encode(v)
    assert tokens.shape == (5, 4)
    assert tokens.dtype == torch.int64
    assert model.decode_indices(tokens).shape == (5, 10)
    recon, quantized = model(v)
    assert recon.shape == (5, 10)
    assert torch.equal(quantized.indices, tokens)
    torch.testing.assert_close(model.decode_indices(tokens), recon)


def test_normalization_buffers_are_fit_and_saved():
    model = MLPVQ(FSQQuantizer([5, 5, 5]), input_dim=10, hidden_dim=16, depth=1)
    v = camera_like()
    model.fit_normalization(v)
    torch.testing.assert_close(model.mean, v.mean(0))
    torch.testing.assert_close(model.std, v.std(0))
    normalized = model.normalize(v)
    torch.testing.assert_close(normalized.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.denormalize(normalized), v)
    state = model.state_dict()
    assert "mean" in state and "std" in state
    # a constant entry gets a floor on its std instead of dividing by zero
    constant = v.clone()
    constant[:, 3] = 7.0
    model.fit_normalization(constant)
    assert torch.isfinite(model.normalize(constant)).all()


def test_wrong_input_width_is_an_error():
    model = MLPVQ(FSQQuantizer([5, 5, 5]), input_dim=10, hidden_dim=16, depth=1)
    with pytest.raises(ValueError, match="expected vectors"):
        model.encode(torch.randn(2, 9))
    with pytest.raises(ValueError, match="expected data"):
        model.fit_normalization(torch.randn(1, 10))


@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_few_steps_learn_to_reconstruct(kind):
    torch.manual_seed(0)
    v = camera_like()
    model = MLPVQ(make_quantizer(kind), input_dim=10, num_tokens=4, hidden_dim=64, depth=1)
    model.fit_normalization(v)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        recon, quantized = model(v)
        loss = F.mse_loss(model.normalize(recon), model.normalize(v)) + quantized.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    final = F.mse_loss(model.normalize(model.decode_indices(model.encode(v))), model.normalize(v))
    # predicting the mean scores 1.0 in standardised units
    assert final.item() < 0.3
