"""Quantizer contract: shapes, straight-through gradients, lookups, FSQ codebook, dead codes."""

import math

import pytest
import torch
import torch.nn.functional as F

from fourm_lightning.tokenizers.quantizers import (
    CosineVQ,
    FSQQuantizer,
    Quantizer,
    codebook_usage,
    dead_code_threshold,
)


def make_quantizer(kind: str) -> Quantizer:
    if kind == "cosine":
        return CosineVQ(dim=8, codebook_size=32, decay=0.9)
    return FSQQuantizer(levels=[5, 5, 3])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_output_shapes_and_dtypes(kind, training):
    torch.manual_seed(0)
    q = make_quantizer(kind).train(training)
    z = torch.randn(3, 7, q.dim)
    out = q(z)
    assert out.z_q.shape == (3, 7, q.dim)
    assert out.indices.shape == (3, 7)
    assert out.indices.dtype == torch.int64
    assert int(out.indices.min()) >= 0
    assert int(out.indices.max()) < q.codebook_size
    assert out.loss.shape == ()
    assert 0 < float(out.share_used) <= 1
    assert 1 <= float(out.perplexity) <= q.codebook_size


@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_wrong_latent_width_is_an_error(kind):
    q = make_quantizer(kind)
    with pytest.raises(ValueError, match="expected latents"):
        q(torch.randn(2, 3, q.dim + 1))


def test_cosine_straight_through_gradient_is_that_of_l2norm():
    # z_q = n + sg(q - n) with n = l2norm(z): the gradient wrt z is the gradient of l2norm.
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=16, commitment_weight=0.0).train()
    z = torch.randn(2, 5, 8, requires_grad=True)
    weights = torch.randn(2, 5, 8)
    (q(z).z_q * weights).sum().backward()
    z_ref = z.detach().clone().requires_grad_(True)
    (F.normalize(z_ref, dim=-1) * weights).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


def test_fsq_straight_through_gradient_reaches_input():
    torch.manual_seed(0)
    q = FSQQuantizer(levels=[8, 5, 5, 5])
    z = torch.randn(2, 5, 4, requires_grad=True)
    (q(z).z_q * torch.randn(2, 5, 4)).sum().backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert (z.grad != 0).all()


def test_cosine_commitment_loss_trains_the_encoder_side():
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=16, commitment_weight=1.0).train()
    z = torch.randn(2, 5, 8, requires_grad=True)
    out = q(z)
    assert out.loss.item() > 0
    out.loss.backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["cosine", "fsq"])
def test_indices_to_latent_equals_quantized_latents_in_eval(kind):
    torch.manual_seed(0)
    q = make_quantizer(kind).eval()
    z = torch.randn(4, 6, q.dim)
    out = q(z)
    torch.testing.assert_close(q.indices_to_latent(out.indices), out.z_q)
    torch.testing.assert_close(q.latent_to_indices(z), out.indices)


def test_cosine_lookup_is_idempotent_on_codes():
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=32)
    indices = torch.arange(32).reshape(2, 16)
    assert torch.equal(q.latent_to_indices(q.indices_to_latent(indices)), indices)


def test_latent_to_indices_does_not_touch_the_codebook():
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=16, threshold_ema_dead_code=1.0).train()
    before = q.codebook.clone()
    q.latent_to_indices(torch.randn(2, 50, 8))
    torch.testing.assert_close(q.codebook, before)
    q(torch.randn(2, 50, 8))  # the training forward does update it
    assert not torch.equal(q.codebook, before)


def test_cosine_codes_stay_unit_norm_after_updates():
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=16, threshold_ema_dead_code=0.5).train()
    for _ in range(5):
        q(torch.randn(2, 40, 8) * 3)
    torch.testing.assert_close(q.codebook.norm(dim=-1), torch.ones(16))


def _near_duplicate_codes(q: CosineVQ) -> torch.Tensor:
    """Give ``q`` pairs of codes 0.01 rad apart; return latents nearer each pair's second code.

    Cosine similarities near 1 differ by ~5e-5 between the two codes of a pair, far below
    bf16's resolution there (2**-8): a bf16 similarity cannot tell them apart.
    """
    torch.manual_seed(0)
    pairs = q.codebook_size // 2
    base = F.normalize(torch.randn(pairs, q.dim), dim=-1)
    step = F.normalize(torch.randn(pairs, q.dim), dim=-1)
    step = F.normalize(step - (step * base).sum(-1, keepdim=True) * base, dim=-1)
    first, second = base, F.normalize(base + 0.01 * step, dim=-1)
    codes = torch.stack([first, second], dim=1).reshape(q.codebook_size, q.dim)
    q.vq._codebook.embed.copy_(codes[None])
    q.vq._codebook.initted.fill_(True)
    return F.normalize(base + 0.012 * step, dim=-1)[None]  # (1, pairs, D)


@pytest.mark.parametrize("training", [False, True])
def test_cosine_vq_picks_the_same_codes_inside_bf16_autocast(training):
    # The library turns autocast off for CUDA only; the quantizer must do it on the CPU too,
    # or a bf16 run trains a different codebook than a float32 one.
    q = CosineVQ(dim=32, codebook_size=64, decay=0.99).train(training)
    z = _near_duplicate_codes(q)
    expected = torch.arange(1, q.codebook_size, 2)[None]  # every pair's second code
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # The lookup first: a training forward moves the codes (EMA) after assigning them.
        assert torch.equal(q.latent_to_indices(z), expected)
        assert torch.equal(q(z).indices, expected)


def test_kmeans_init_places_codes_on_the_data():
    torch.manual_seed(0)
    direction = F.normalize(torch.randn(8), dim=0)
    data = direction * 10 + torch.randn(1, 200, 8)
    q = CosineVQ(dim=8, codebook_size=8, kmeans_init=True, kmeans_iters=5).train()
    q(data)
    assert (q.codebook @ direction).min() > 0.8


@pytest.mark.parametrize(
    ("levels", "size"), [([8, 5, 5, 5], 1000), ([3, 3], 9), ([7, 5, 5, 5, 5], 4375)]
)
def test_fsq_codebook_size_and_index_round_trip(levels, size):
    q = FSQQuantizer(levels=levels)
    assert q.codebook_size == size == math.prod(levels)
    indices = torch.arange(size).reshape(1, size)
    latents = q.indices_to_latent(indices)
    assert latents.shape == (1, size, len(levels))
    assert torch.equal(q.codes_to_indices(latents), indices)
    # every index has its own latent
    assert torch.unique(latents[0], dim=0).shape[0] == size


def test_fsq_with_projection():
    q = FSQQuantizer(levels=[5, 5, 5], dim=16)
    assert q.dim == 16
    out = q(torch.randn(2, 3, 16))
    assert out.z_q.shape == (2, 3, 16)
    torch.testing.assert_close(q.indices_to_latent(out.indices), out.z_q)


def test_fsq_codes_to_indices_needs_the_code_space():
    with pytest.raises(ValueError, match="without projection"):
        FSQQuantizer(levels=[5, 5, 5], dim=16).codes_to_indices(torch.zeros(1, 1, 3))


def test_fsq_rejects_two_level_channels():
    with pytest.raises(ValueError, match=">= 3"):
        FSQQuantizer(levels=[2, 5])


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_dead_code_replacement_revives_unused_codes(threshold):
    # Every batch sits in a narrow cone, so only a handful of the 64 random codes are ever
    # nearest to a latent; the rest are dead. With restarts on, dead codes are re-initialised from
    # batch latents and the cone ends up covered by many codes; with restarts off nothing revives
    # them.
    torch.manual_seed(0)
    q = CosineVQ(dim=8, codebook_size=64, decay=0.8, threshold_ema_dead_code=threshold)
    direction = F.normalize(torch.randn(8), dim=0)

    def batch(n: int = 256) -> torch.Tensor:
        return (direction * 10 + torch.randn(n, 8)).reshape(1, n, 8)

    probe = batch(512)
    before = q.latent_to_indices(probe).unique().numel()
    q.train()
    for _ in range(30):
        q(batch())
    after = q.latent_to_indices(probe).unique().numel()
    codes_on_data = int(((q.codebook @ direction) > 0.8).sum())

    revived = after >= max(32, 4 * before)
    assert revived == (threshold > 0), (before, after)
    if threshold > 0:
        # restarted codes came from (normalised) batch latents
        assert codes_on_data == q.codebook_size
        assert float(q.cluster_size.min()) > 0
    else:
        assert codes_on_data <= before + 2


def test_dead_code_threshold_follows_4m_rule():
    # batch 64 x 196 tokens over 4096 codes, coef 32 -> ~0.096
    assert dead_code_threshold(64, 196, 4096) == pytest.approx(64 * 196 / 4096 / 32)


def test_codebook_usage_extremes():
    share, perplexity = codebook_usage(torch.arange(8).repeat(3), 8)
    assert float(share) == 1.0
    assert float(perplexity) == pytest.approx(8.0)
    share, perplexity = codebook_usage(torch.full((10,), 3), 8)
    assert float(share) == 1 / 8
    assert float(perplexity) == pytest.approx(1.0)
    share, perplexity = codebook_usage(torch.tensor([-1, -1]), 8)
    assert float(share) == 0.0
    assert float(perplexity) == 0.0
