"""ViT VQ-VAE: shapes across resolutions, semseg stem, side-effect free encode, real learning."""

import pytest
import torch
import torch.nn.functional as F

from fourm_lightning.tokenizers.layers import ViTTrunk, resize_pos_embed, sincos_pos_embed_2d
from fourm_lightning.tokenizers.quantizers import CosineVQ, FSQQuantizer, Quantizer
from fourm_lightning.tokenizers.vit_vqvae import ViTVQVAE


def make_quantizer(kind: str) -> Quantizer:
    if kind == "cosine":
        return CosineVQ(dim=8, codebook_size=64, decay=0.9, threshold_ema_dead_code=0.1)
    return FSQQuantizer(levels=[5, 5, 5])


def tiny_model(kind: str = "fsq", **kwargs) -> ViTVQVAE:
    defaults = dict(image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    return ViTVQVAE(make_quantizer(kind), **(defaults | kwargs))


def smooth_images(n: int = 8, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    freq = torch.rand(n, 3, 1, 1, generator=g) * 3 + 1
    phase = torch.rand(n, 3, 1, 1, generator=g) * 6
    return torch.sin(freq * xx + phase) * torch.cos(freq * yy - phase)


@pytest.mark.parametrize("resolution", [32, 64, (32, 48)])
@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_encode_decode_shapes_across_resolutions(kind, resolution):
    torch.manual_seed(0)
    model = tiny_model(kind, in_channels=3).eval()
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    x = torch.randn(2, 3, h, w)
    tokens = model.encode(x)
    assert tokens.shape == (2, h // 8, w // 8)
    assert tokens.dtype == torch.int64
    assert model.num_tokens(resolution) == tokens[0].numel()
    recon = model.decode_indices(tokens)
    assert recon.shape == (2, 3, h, w)
    out, quantized = model(x)
    assert out.shape == (2, 3, h, w)
    assert torch.equal(quantized.indices, tokens)
    # in eval mode the token path and the forward path decode the same thing
    torch.testing.assert_close(recon, out)


def test_semseg_variant_embeds_classes_and_outputs_logits():
    torch.manual_seed(0)
    model = tiny_model("cosine", num_classes=6, class_embed_dim=8)
    labels = torch.randint(0, 6, (2, 32, 32))
    logits, quantized = model(labels)
    assert logits.shape == (2, 6, 32, 32)
    assert quantized.indices.shape == (2, 4, 4)
    loss = F.cross_entropy(logits, labels) + quantized.loss
    loss.backward()
    assert model.class_embed.weight.grad is not None
    assert model.encode(labels).shape == (2, 4, 4)
    assert model.decode_indices(model.encode(labels)).shape == (2, 6, 32, 32)


def test_semseg_variant_rejects_float_input():
    model = tiny_model(num_classes=6)
    with pytest.raises(ValueError, match="class map"):
        model(torch.randn(1, 32, 32))


@pytest.mark.parametrize(("channels", "out_channels"), [(1, 1), (3, 3), (5, 2)])
def test_channels_and_refine_head(channels, out_channels):
    model = tiny_model(in_channels=channels, out_channels=out_channels, refine_head=True)
    recon, _ = model(torch.randn(1, channels, 32, 32))
    assert recon.shape == (1, out_channels, 32, 32)


def test_size_not_a_patch_multiple_is_an_error():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_model(in_channels=3)(torch.randn(1, 3, 30, 32))


def test_encode_has_no_side_effects_in_training_mode():
    torch.manual_seed(0)
    model = tiny_model("cosine", in_channels=3).train()
    before = model.quantizer.codebook.clone()
    model.encode(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.quantizer.codebook, before)


def test_sincos_embedding_is_row_column_separable_on_non_square_grids():
    # First half of the channels encodes the row, second half the column, for any h != w.
    emb = sincos_pos_embed_2d(2, 3, 16).reshape(2, 3, 16)
    assert torch.equal(emb[0, 0, :8], emb[0, 2, :8])  # same row
    assert torch.equal(emb[0, 1, 8:], emb[1, 1, 8:])  # same column
    assert not torch.equal(emb[0, 0, :8], emb[1, 0, :8])
    assert not torch.equal(emb[0, 0, 8:], emb[0, 1, 8:])


def test_position_embedding_resampling():
    trunk = ViTTrunk(dim=16, depth=1, num_heads=2, base_grid=(4, 4))
    assert trunk.pos_embed_for((4, 4)) is trunk.pos_embed
    assert trunk.pos_embed_for((8, 6)).shape == (48, 16)
    # a resampled embedding varies smoothly: neighbours are closer than far-apart tokens
    big = resize_pos_embed(trunk.pos_embed, (4, 4), (8, 8)).reshape(8, 8, 16)
    assert (big[0, 0] - big[0, 1]).norm() < (big[0, 0] - big[7, 7]).norm()
    # not persistent: checkpoints stay independent of the formula
    assert "pos_embed" not in trunk.state_dict()


@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_few_steps_reduce_reconstruction_loss(kind):
    torch.manual_seed(0)
    x = smooth_images()
    model = tiny_model(kind, in_channels=3, image_size=16, patch_size=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        recon, quantized = model(x)
        reconstruction = F.mse_loss(recon, x)
        optimizer.zero_grad()
        (reconstruction + quantized.loss).backward()
        optimizer.step()
        losses.append(reconstruction.item())
    model.eval()
    final = F.mse_loss(model.decode_indices(model.encode(x)), x).item()
    # better than predicting the batch's mean image, i.e. the tokens carry per-image content
    mean_image_baseline = F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x).item()
    assert final < 0.5 * losses[0]
    assert final < 0.7 * mean_image_baseline, (final, mean_image_baseline)
