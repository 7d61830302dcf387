"""Masking invariants: budgets, disjoint image masks, span masking structure, mixtures."""

import numpy as np
import pytest

from fourm_lightning.datamodules.masking import (
    MixtureComponent,
    budgets,
    check_mixture,
    image_masks,
    read_mixture,
    sample_budget,
    span_mask,
)
from fourm_lightning.datamodules.tokens import MultimodalMasking
from fourm_lightning.models.domains import ImageTokenDomain, PixelDomain, TextDomain

SENTINELS = np.arange(1000, 1064)


def reconstruct(input_ids: np.ndarray, target_ids: np.ndarray) -> list[int]:
    """Fill each input sentinel with the target tokens that follow the same sentinel."""
    spans: dict[int, list[int]] = {}
    current = None
    for token in target_ids.tolist():
        if token in SENTINELS:
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    if len(input_ids) == 0:  # everything was dropped: S_1 holds the whole sequence
        return spans[SENTINELS[0]]
    out: list[int] = []
    for token in input_ids.tolist():
        out.extend(spans[token] if token in SENTINELS else [token])
    return out


@pytest.mark.parametrize("seed", range(20))
def test_budget_sums_to_total_within_caps(seed):
    rng = np.random.default_rng(seed)
    alphas = rng.choice([0.0, 0.01, 0.5, 5.0], size=6)
    alphas[0] = 1.0  # at least one active modality
    caps = rng.integers(0, 40, size=6)
    caps[0] = 40
    total = int(rng.integers(0, 120))
    budget = sample_budget(alphas, total, caps, rng)
    active = (alphas > 0) & (caps > 0)
    assert budget.sum() == min(total, caps[active].sum())
    assert (budget <= caps).all() and (budget >= 0).all()
    assert (budget[~active] == 0).all()


def test_budget_a_cap_removes_is_redistributed():
    # One modality takes nearly everything (alpha 1000) but can hold only 10 tokens: the
    # original left the other 90 as padding; here the others absorb them.
    rng = np.random.default_rng(0)
    budget = sample_budget(np.array([1000.0, 0.5, 0.5]), 100, np.array([10, 64, 64]), rng)
    assert budget[0] == 10 and budget.sum() == 100


@pytest.mark.parametrize("seed", range(10))
def test_image_masks_are_disjoint_with_exact_counts(seed):
    rng = np.random.default_rng(seed)
    n_in, n_tgt = int(rng.integers(0, 30)), int(rng.integers(0, 34))
    input_mask, target_mask = image_masks(64, n_in, n_tgt, rng)
    assert input_mask.sum() == n_in and target_mask.sum() == n_tgt
    assert not (input_mask & target_mask).any()


def test_image_like_targets_never_overlap_inputs_through_budgets():
    component = MixtureComponent({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    rng = np.random.default_rng(0)
    for _ in range(50):
        b_in, b_tgt = budgets(
            component, ["a", "b"], {"a": 16, "b": 16}, {"a": 16, "b": 16}, 24, 24,
            {"a": True, "b": True}, rng,
        )  # fmt: skip
        assert all(b_in[m] + b_tgt[m] <= 16 for m in "ab")
        assert sum(b_in.values()) == 24 and sum(b_tgt.values()) == 8


@pytest.mark.parametrize("seed", range(30))
def test_span_mask_input_and_target_reconstruct_the_sequence(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 900, size=int(rng.integers(1, 40)))
    units = [np.array([t]) for t in ids] + [np.array([3])]  # 3 plays [EOS]
    input_ids, target_ids = span_mask(units, 64, 200, SENTINELS, "random", rng)
    assert reconstruct(input_ids, target_ids) == [*ids.tolist(), 3]
    # The target is a run of sentinel + tokens groups closed by the next unused sentinel.
    assert target_ids[0] in SENTINELS and target_ids[-1] in SENTINELS
    used = [t for t in input_ids.tolist() if t in SENTINELS]
    assert used == SENTINELS[: len(used)].tolist()
    in_target = [t for t in target_ids.tolist() if t in SENTINELS]
    assert in_target == SENTINELS[: len(in_target)].tolist()  # S_1, S_2, ... in order


def test_span_mask_keep_schemes_and_no_input_budget():
    rng = np.random.default_rng(0)
    units = [np.array([t]) for t in (11, 12, 13, 3)]
    full_in, full_tgt = span_mask(units, 10, 10, SENTINELS, "all", rng)
    assert full_in.tolist() == [11, 12, 13, 3] and full_tgt.tolist() == [SENTINELS[0]]
    no_in, all_tgt = span_mask(units, 0, 10, SENTINELS, "all", rng)
    assert no_in.size == 0
    assert all_tgt.tolist() == [SENTINELS[0], 11, 12, 13, 3, SENTINELS[1]]


@pytest.mark.parametrize("seed", range(10))
def test_span_mask_respects_budgets_and_cuts_targets_at_a_sentinel(seed):
    rng = np.random.default_rng(seed)
    units = [np.array([t]) for t in rng.integers(10, 900, size=30)] + [np.array([3])]
    input_ids, target_ids = span_mask(units, 8, 5, SENTINELS, "random", rng)
    assert len(input_ids) <= 8 and len(target_ids) <= 5
    if len(target_ids):
        assert target_ids[0] in SENTINELS


def test_chunked_span_mask_keeps_chunks_whole():
    rng = np.random.default_rng(1)
    chunks = [np.array([100 + 2 * i, 101 + 2 * i]) for i in range(8)] + [np.array([3])]
    for _ in range(20):
        input_ids, target_ids = span_mask(chunks, 40, 60, SENTINELS, "random", rng)
        plain = [t for t in input_ids.tolist() if t not in SENTINELS and t != 3]
        # Chunk (100+2i, 101+2i) is either entirely in the input or entirely not.
        assert all((t - 100) % 2 == 0 and t + 1 in plain for t in plain if t % 2 == 0)
        assert len(plain) % 2 == 0
        assert reconstruct(input_ids, target_ids) == np.concatenate(chunks).tolist()


def test_input_only_domains_never_get_targets():
    pixels = PixelDomain("rgb", image_size=16, patch_size=4)
    tokens = ImageTokenDomain("tok_depth", vocab_size=32, grid=4)
    mixture = [MixtureComponent({"rgb": 1.0, "tok_depth": 1.0}, {"rgb": 10.0, "tok_depth": 1.0})]
    masking = MultimodalMasking([pixels, tokens], mixture, (8, 8), (8, 8))
    rng = np.random.default_rng(0)
    values = {"rgb": np.zeros((3, 16, 16), np.float32), "tok_depth": np.arange(16)}
    for _ in range(20):
        out = masking(values, rng)
        assert out["rgb"]["target_mask"].sum() == 0
        assert out["tok_depth"]["target_mask"].sum() == 8  # the whole target budget
        assert out["rgb"]["input_mask"].sum() + out["tok_depth"]["input_mask"].sum() == 8


def test_text_domain_packs_input_and_target_halves():
    domain = TextDomain("caption", vocab_size=2000, max_tokens=8)
    value = {"units": [np.array([t]) for t in (11, 12, 13, 3)], "sentinels": np.arange(4, 68)}
    out = domain.mask(value, 0, 8, np.random.default_rng(0))
    assert out["tensor"].shape == (16,)
    assert not out["input_mask"].any()
    # S_1 is id 5 (id 4 is S_0, unused by span masking): target = S_1 11 12 13 EOS S_2.
    assert out["tensor"][8:14].tolist() == [5, 11, 12, 13, 3, 6]
    assert out["target_mask"].tolist() == [False] * 8 + [True] * 6 + [False] * 2


def test_missing_domain_gets_a_fully_masked_placeholder():
    tokens = ImageTokenDomain("tok_depth", vocab_size=32, grid=4)
    caption = TextDomain("caption", vocab_size=32, max_tokens=8)
    mixture = [MixtureComponent({"tok_depth": 1.0, "caption": 1.0}, {"caption": 1.0})]
    out = MultimodalMasking([tokens, caption], mixture, (4, 4), (4, 4))(
        {"tok_depth": np.arange(16)}, np.random.default_rng(0)
    )
    assert not out["caption"]["input_mask"].any() and not out["caption"]["target_mask"].any()
    assert out["tok_depth"]["input_mask"].sum() == 4


def test_mixture_errors_name_the_component_and_modality():
    with pytest.raises(ValueError, match=r"component 0 \(bad\).*unknown modalities \['depht'\]"):
        check_mixture([MixtureComponent({"depht": 1.0}, {}, name="bad")], ["depth"])
    with pytest.raises(ValueError, match="no modality has a positive input alpha"):
        check_mixture([MixtureComponent({"depth": 0.0}, {"depth": 1.0})], ["depth"])
    with pytest.raises(ValueError, match="no component"):
        check_mixture([], ["depth"])


def test_read_mixture_builds_each_component_from_its_own_fields(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "- {name: a, input_alphas: {rgb: 1.0}, target_alphas: {depth: 1.0}, weight: 3.0,"
        " keep: {caption: all}}\n"
        "- {name: b, input_alphas: {rgb: 1.0}, target_alphas: {depth: 1.0}}\n"
    )
    a, b = read_mixture(path)
    assert (a.weight, a.keep) == (3.0, {"caption": "all"})
    assert (b.weight, b.keep, b.name) == (1.0, {}, "b")
    assert read_mixture(str(path)) == [a, b]
    assert read_mixture([a, {"input_alphas": {"rgb": 1.0}, "target_alphas": {}}])[0] is a


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{name: a}", "a mixture is a list of components, got dict"),
        ("- {name: [a", "is not valid YAML"),
        ("- [1, 2]", "mixture component 0 must be a mapping, got list"),
        (
            "- {input_alphas: {rgb: 1}, target_alphas: {}, wieght: 2}",
            r"component 0: unknown keys \['wieght'\]",
        ),
        ("- {input_alphas: {rgb: 1}}", r"component 0: missing \['target_alphas'\]"),
    ],
)
def test_read_mixture_names_the_file_component_and_key_at_fault(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_mixture(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=r"mixture file .*nope\.yaml does not exist"):
        read_mixture(tmp_path / "nope.yaml")
