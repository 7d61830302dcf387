"""Generation: schedules, filtering, MaskGIT/ROAR/autoregression, guidance and chains."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fourm_lightning.generation import (
    GenerationStep,
    generate,
    maskgit,
    roar,
    sample_tokens,
    temperatures,
    tokens_per_step,
)
from fourm_lightning.generation.sampler import (
    _guided_logits,
    _merge_spans,
    autoregressive,
    empty_target,
    guided_passes,
)
from fourm_lightning.models import FourM, ImageTokenDomain, PixelDomain, TextDomain

TEXT = SimpleNamespace(sentinel_ids=range(4, 40), eos_id=3)
SENTINELS = list(range(5, 40))  # S_1 = 5 (S_0 = 4 is unused by span masking)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    domains = [
        PixelDomain("rgb", image_size=16, patch_size=4),
        ImageTokenDomain("tok_depth", vocab_size=50, grid=4),
        ImageTokenDomain("tok_semseg", vocab_size=40, grid=4),
        TextDomain("caption", vocab_size=120, max_tokens=12),
    ]
    return FourM(domains, dim=32, encoder_depth=2, decoder_depth=2, num_heads=2).eval()


def rgb_state(batch=3, seed=0):
    torch.manual_seed(seed)
    return {
        "rgb": {
            "tensor": torch.randn(batch, 3, 16, 16),
            "input_mask": torch.ones(batch, 16, dtype=torch.bool),
            "target_mask": torch.zeros(batch, 16, dtype=torch.bool),
        }
    }


def test_token_schedules_match_the_reference():
    assert tokens_per_step(196, 8, "cosine") == [7, 21, 32, 38, 38, 32, 21, 7]
    assert tokens_per_step(196, 8, "linear") == [25] * 4 + [24] * 4
    assert tokens_per_step(196, 49, "linear") == [4] * 49
    assert tokens_per_step(5, 8, "cosine") and sum(tokens_per_step(5, 8, "cosine")) == 5
    assert temperatures(2.0, [4, 4], "linear") == [2.0, 1.0]


def test_top_p_is_applied_after_temperature():
    # At T=1 the 0.7-nucleus of softmax([2, 1, 0]) holds ids 0 and 1; at T=0.5 only id 0.
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(400, 1)
    generator = torch.Generator().manual_seed(0)
    cold, _ = sample_tokens(logits, 0.5, top_p=0.7, generator=generator)
    warm, _ = sample_tokens(logits, 1.0, top_p=0.7, generator=generator)
    assert set(cold.tolist()) == {0}
    assert set(warm.tolist()) == {0, 1}
    top1, _ = sample_tokens(logits, 5.0, top_k=1, generator=generator)
    assert set(top1.tolist()) == {0}


@pytest.mark.parametrize("scheme", ["maskgit", "roar"])
def test_only_target_positions_change_and_inputs_are_untouched(model, scheme):
    state = rgb_state()
    depth = empty_target(model, "tok_depth", 3)
    known = torch.zeros(3, 16, dtype=torch.bool)
    known[:, :5] = True  # in-painting: 5 tokens given
    depth["tensor"][known] = 7
    depth["input_mask"] = known.clone()
    state["tok_depth"] = depth
    fill = maskgit if scheme == "maskgit" else roar
    out = fill(model, state, GenerationStep("tok_depth", scheme=scheme, steps=3))
    assert torch.equal(out["tok_depth"]["tensor"][known], depth["tensor"][known])
    assert out["tok_depth"]["input_mask"].all() and not out["tok_depth"]["target_mask"].any()
    assert torch.equal(out["rgb"]["tensor"], state["rgb"]["tensor"])
    assert torch.equal(state["tok_depth"]["input_mask"], known)  # the input state is not mutated


@pytest.mark.parametrize(("scheme", "steps"), [("roar", 1), ("maskgit", 16), ("maskgit", 4)])
def test_every_position_is_filled(model, scheme, steps):
    step = GenerationStep("tok_semseg", scheme=scheme, steps=steps, temperature=1.0)
    out = generate(model, rgb_state(), [step])
    assert out["tok_semseg"]["input_mask"].all()
    assert out["tok_semseg"]["tensor"].max() < 40


def test_fixed_seed_reproduces_and_another_seed_differs(model):
    schedule = [GenerationStep("tok_depth", steps=4, temperature=3.0)]
    first = generate(model, rgb_state(), schedule, seed=1)["tok_depth"]["tensor"]
    again = generate(model, rgb_state(), schedule, seed=1)["tok_depth"]["tensor"]
    other = generate(model, rgb_state(), schedule, seed=2)["tok_depth"]["tensor"]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_guidance_scale_one_is_the_conditional_pass(model):
    state = rgb_state()
    state["tok_depth"] = empty_target(model, "tok_depth", 3)
    query = state["tok_depth"]["target_mask"]
    plain = _guided_logits(model, state, GenerationStep("tok_depth"), query)
    # Force the two-pass path with weight 1: l_u + 1 (l_c - l_u) = l_c.
    one = GenerationStep("tok_depth", condition_groups=[["rgb"]], condition_weights=[1.0])
    assert len(guided_passes(state, one)[0]) == 2
    torch.testing.assert_close(_guided_logits(model, state, one, query)[query], plain[query])


@pytest.mark.parametrize("weight", [3.0, -1.5])
def test_one_condition_multi_guidance_equals_cfg(model, weight):
    state = rgb_state()
    state["tok_depth"] = empty_target(model, "tok_depth", 3)
    query = state["tok_depth"]["target_mask"]
    cfg = GenerationStep("tok_depth", guidance_scale=weight, conditions=["rgb"])
    multi = GenerationStep("tok_depth", condition_groups=[["rgb"]], condition_weights=[weight])
    unconditional = _guided_logits(
        model, state, GenerationStep("tok_depth", guidance_scale=0.0), query
    )
    a = _guided_logits(model, state, cfg, query)[query]
    torch.testing.assert_close(a, _guided_logits(model, state, multi, query)[query])
    assert not torch.allclose(a, unconditional[query])


def test_greedy_decoding_with_the_kv_cache_equals_decoding_without(model):
    state = rgb_state()
    state["caption"] = empty_target(model, "caption", 3)
    step = GenerationStep("caption", scheme="autoregressive", temperature=0.0)
    kwargs = {"sentinels": SENTINELS, "eos_id": 3}
    cached = autoregressive(model, state, step, use_cache=True, **kwargs)
    full = autoregressive(model, state, step, use_cache=False, **kwargs)
    assert torch.equal(cached["caption"]["tensor"], full["caption"]["tensor"])
    assert cached["caption"]["input_mask"].any()


def test_spans_fill_the_input_sentinels():
    # input "a [S_1] d [S_2]" and generated "[S_1] b c [S_2] e [S_3]" -> "a b c d e"
    a, b, c, d, e = 50, 51, 52, 53, 54
    assert _merge_spans([a, 5, d, 6], [5, b, c, 6, e, 7], SENTINELS) == [a, b, c, d, e]
    assert _merge_spans([], [5, b, c, 3], SENTINELS) == [b, c, 3]


def test_a_chain_feeds_each_finished_target_to_the_next(model, monkeypatch):
    seen = []
    encode = model.encode

    def spy(batch):
        seen.append({n: bool(e["input_mask"].all()) for n, e in batch.items()})
        return encode(batch)

    monkeypatch.setattr(model, "encode", spy)
    schedule = [
        GenerationStep("tok_depth", steps=2),
        GenerationStep("tok_semseg", scheme="roar", steps=2),
        GenerationStep("caption", scheme="autoregressive", temperature=0.0, max_tokens=4),
    ]
    out = generate(model, rgb_state(), schedule, text_tokenizer=TEXT)
    depth_calls = [s for s in seen if not s.get("tok_depth", False)]
    later = seen[len(depth_calls) :]
    assert depth_calls and later
    assert all(s["tok_depth"] for s in later)  # every later step conditions on the depth
    assert all(s["tok_semseg"] for s in later if "caption" in s)
    assert out["caption"]["input_mask"].any()


def test_bad_schedules_give_clear_errors(model):
    with pytest.raises(ValueError, match="unknown target modality 'tok_dpeth'"):
        generate(model, rgb_state(), [GenerationStep("tok_dpeth")])
    with pytest.raises(ValueError, match="2 guidance weights for 1 condition groups"):
        step = GenerationStep("tok_depth", condition_groups=[["rgb"]], condition_weights=[1, 2])
        generate(model, rgb_state(), [step])
    with pytest.raises(ValueError, match="'caption' needs scheme autoregressive"):
        generate(model, rgb_state(), [GenerationStep("caption", scheme="maskgit")])
    with pytest.raises(ValueError, match="'rgb' is input-only"):
        generate(model, rgb_state(), [GenerationStep("rgb")])


def test_batches_with_different_amounts_to_fill(model):
    state = rgb_state()
    depth = empty_target(model, "tok_depth", 3)
    known = torch.from_numpy(
        np.array([[True] * 15 + [False], [False] * 16, [True] * 8 + [False] * 8])
    )
    depth["input_mask"] = known
    state["tok_depth"] = depth
    out = maskgit(model, state, GenerationStep("tok_depth", steps=8))
    assert out["tok_depth"]["input_mask"].all()
