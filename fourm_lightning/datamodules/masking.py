"""4M's multimodal masking: Dirichlet token budgets, random image masks, span masking for text.

Runs per sample inside DataLoader workers (numpy only). For each sample:

1. a mixture component ``k`` is drawn (``weight`` of each component);
2. totals ``N_in ~ U{input_tokens}`` and ``N_tgt ~ U{target_tokens}``;
3. ``N_in`` is split across modalities by a Dirichlet draw with the component's input alphas,
   capped per modality; **budget a cap removes is handed to modalities with room left** (the
   original leaves it as padding), so every sample uses its full budget when the data allow;
4. the same for ``N_tgt`` with the target alphas. An image-like modality's target cap is what its
   inputs left, so no token is both input and target. Input-only modalities never get targets
   (the original silently dropped such budgets, see reference section 11.8);
5. each modality builds its masks from its two budgets (``Domain.mask``).

Masks are positive: ``input_mask`` True = the token is an encoder input, ``target_mask`` True =
the token is a decoder target (the original used True for "masked out", a source of confusion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

KeepScheme = Literal["random", "all", "binary"]


@dataclass
class MixtureComponent:
    """One Dirichlet component of a masking mixture.

    Args:
        input_alphas: modality -> Dirichlet alpha of its share of the input budget (absent or 0:
            never an input in this component).
        target_alphas: modality -> alpha of its share of the target budget.
        keep: modality -> span-masking keep scheme for sequences: ``random`` (keep probability
            ~ U(0, 1)), ``all`` (the whole sequence is input when it gets any budget) or
            ``binary`` (all or nothing). Default ``random``.
        weight: sampling weight of this component.
        name: a label for logs and docs.
    """

    input_alphas: dict[str, float]
    target_alphas: dict[str, float]
    keep: dict[str, KeepScheme] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""


def sample_budget(
    alphas: np.ndarray, total: int, caps: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split ``total`` tokens across modalities by a Dirichlet draw, within per-modality caps.

    Args:
        alphas: (M,) Dirichlet concentrations; modalities with alpha 0 get nothing.
        total: tokens to hand out.
        caps: (M,) most tokens each modality can take.
        rng: generator.

    Returns:
        (M,) int64 budgets with ``sum == min(total, sum(caps[alphas > 0]))`` and
        ``budget <= caps``: what a cap removes goes to the modalities with room left, in
        proportion to their Dirichlet shares.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    budget = np.zeros(len(alphas), dtype=np.int64)
    active = (alphas > 0) & (caps > 0)
    total = int(min(total, caps[active].sum()))
    if total <= 0:
        return budget
    share = np.zeros(len(alphas))
    share[active] = rng.dirichlet(alphas[active])
    share /= share.sum()
    budget[:] = np.floor(share * total)
    budget += rng.multinomial(total - int(budget.sum()), share)
    for _ in range(len(alphas) + 1):
        over = np.maximum(budget - caps, 0)
        excess = int(over.sum())
        if excess == 0:
            break
        budget -= over
        room = active & (budget < caps)
        weights = share * room
        if weights.sum() <= 0:  # every share with room left is ~0: spread evenly instead
            weights = room.astype(np.float64)
        budget += rng.multinomial(excess, weights / weights.sum())
    return budget


def image_masks(
    num_tokens: int, num_input: int, num_target: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint input and target positions of an image-like modality.

    Args:
        num_tokens: L, token positions.
        num_input: positions that become inputs.
        num_target: positions that become targets (``num_input + num_target <= L``).
        rng: generator.

    Returns:
        ``(input_mask, target_mask)``, two (L,) bool arrays, disjoint.
    """
    if num_input + num_target > num_tokens:
        raise ValueError(f"{num_input} inputs + {num_target} targets exceed {num_tokens} tokens")
    order = rng.permutation(num_tokens)
    input_mask = np.zeros(num_tokens, dtype=bool)
    target_mask = np.zeros(num_tokens, dtype=bool)
    input_mask[order[:num_input]] = True
    target_mask[order[num_input : num_input + num_target]] = True
    return input_mask, target_mask


def keep_probability(scheme: KeepScheme, rng: np.random.Generator) -> float:
    """The span-masking keep probability of one sample under ``scheme``."""
    if scheme == "random":
        return float(rng.uniform())
    if scheme == "all":
        return 1.0
    if scheme == "binary":
        return float(rng.integers(2))
    raise ValueError(f"keep scheme must be random, all or binary, got {scheme!r}")


def span_mask(
    units: Sequence[np.ndarray],
    num_input: int,
    num_target: int,
    sentinels: np.ndarray,
    scheme: KeepScheme,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """T5-style span masking over units (tokens, or whole chunks for chunked sequences).

    Each unit is kept with probability ``p`` (from ``scheme``); every maximal run of dropped units
    becomes one sentinel ``S_i`` in the input, and the target lists ``S_i`` followed by the run's
    tokens, closed by the next unused sentinel. While the input is longer than ``num_input``,
    ``p`` shrinks by 0.9 and the draw is repeated (dropping everything always fits: the input is
    then empty). A target longer than ``num_target`` is cut to start at a sentinel: a random
    one if ``num_target`` tokens follow it, else the earliest whose suffix fits.

    Example: units ``a b c d [EOS]`` with b, c dropped -> input ``a S1 d [EOS]``, target
    ``S1 b c S2``.

    Args:
        units: the sequence as a list of int arrays (one token each unless chunked).
        num_input: input budget (0: no input, everything is target material).
        num_target: target budget (0: no target).
        sentinels: ids of S_1, S_2, ... (at least half the number of units + 1).
        scheme: keep scheme (see ``keep_probability``).
        rng: generator.

    Returns:
        ``(input_ids, target_ids)``, int64 arrays of lengths <= the budgets.
    """
    if not units:
        raise ValueError("span masking needs at least one unit (sequences end with [EOS])")
    lengths = np.array([len(u) for u in units], dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError("span masking units must not be empty")
    ids = np.concatenate(units).astype(np.int64) if len(units) else np.zeros(0, np.int64)
    p = 0.0 if num_input == 0 else keep_probability(scheme, rng)
    while True:
        keep_units = rng.random(len(units)) < p
        starts_units = ~keep_units & np.r_[True, keep_units[:-1]]
        num_runs = int(starts_units.sum())
        input_len = int(lengths[keep_units].sum()) + num_runs
        if input_len <= num_input or not keep_units.any():
            break
        p *= 0.9
    if num_runs + 1 > len(sentinels):
        raise ValueError(f"{num_runs} masked spans need more than {len(sentinels)} sentinels")
    keep = np.repeat(keep_units, lengths)
    first_token = np.zeros(len(ids), dtype=bool)
    unit_starts = np.cumsum(lengths) - lengths
    first_token[unit_starts[lengths > 0]] = True
    # The first token of each unit that starts a dropped run carries that run's sentinel.
    starts = np.repeat(starts_units, lengths) & first_token
    run_index = np.cumsum(starts) - 1  # which run a dropped token belongs to
    if num_input == 0 or not keep_units.any():
        input_ids = np.zeros(0, np.int64)
    else:
        with_sentinels = np.where(starts, sentinels[np.maximum(run_index, 0)], ids)
        input_ids = with_sentinels[keep | starts]
    dropped = ~keep
    positions = np.flatnonzero(starts[dropped])
    target = np.insert(ids[dropped], positions, sentinels[:num_runs])
    target = np.append(target, sentinels[num_runs]).astype(np.int64)
    return input_ids, _cut_target(target, num_target, sentinels[: num_runs + 1], rng)


def _cut_target(
    target: np.ndarray, budget: int, sentinels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Keep at most ``budget`` target tokens, starting at a sentinel (see ``span_mask``)."""
    if len(target) <= budget:
        return target
    if budget <= 0:
        return target[:0]
    sentinel_pos = np.flatnonzero(np.isin(target, sentinels))
    start = int(rng.choice(sentinel_pos[:-1])) if len(sentinel_pos) > 1 else 0
    if len(target) - start >= budget:
        return target[start : start + budget]
    fitting = sentinel_pos[len(target) - sentinel_pos <= budget]
    return target[int(fitting[0]) :]


def pick_component(components: Sequence[MixtureComponent], rng: np.random.Generator) -> int:
    """Index of a mixture component drawn by weight."""
    weights = np.array([c.weight for c in components], dtype=np.float64)
    return int(rng.choice(len(components), p=weights / weights.sum()))


#: What a mixture can be given as: a YAML file of components, or the components themselves
#: (mappings of ``MixtureComponent`` fields, or instances).
MixtureSpec = str | Path | Sequence[Mapping[str, Any] | MixtureComponent]


def read_mixture(spec: MixtureSpec) -> list[MixtureComponent]:
    """The components of a mixture given as a YAML file path or a list (see ``MixtureSpec``).

    Every component is built from its own fields and the dataclass defaults only. Config
    tools that merge a new list into an old one item by item (jsonargparse does this for
    lists of dataclasses, so ``--data.init_args.mixture m.yaml`` over a config kept the old
    components' weights and keep schemes wherever ``m.yaml`` left them out) cannot leak a
    field from one mixture into another this way.

    Raises:
        ValueError: naming the file, the component and the key at fault.
    """
    source = ""
    items: Any = spec
    if isinstance(spec, str | Path):
        path = Path(spec)
        source = f"{path}: "
        if not path.is_file():
            raise ValueError(f"mixture file {path} does not exist")
        try:
            items = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"mixture file {path} is not valid YAML: {error}") from error
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError(f"{source}a mixture is a list of components, got {type(items).__name__}")
    known = {f.name for f in fields(MixtureComponent)}
    components = []
    for i, item in enumerate(items):
        if isinstance(item, MixtureComponent):
            components.append(item)
            continue
        label = f"{source}mixture component {i}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{label} must be a mapping, got {type(item).__name__}")
        unknown = set(item) - known
        if unknown:
            raise ValueError(
                f"{label}: unknown keys {sorted(unknown)}; a component has {sorted(known)}"
            )
        missing = {"input_alphas", "target_alphas"} - set(item)
        if missing:
            raise ValueError(f"{label}: missing {sorted(missing)}")
        components.append(MixtureComponent(**dict(item)))
    return components


def check_mixture(components: Sequence[MixtureComponent], names: Sequence[str]) -> None:
    """Raise ``ValueError`` for an empty mixture, unknown modality names or bad weights."""
    if not components:
        raise ValueError("the masking mixture has no component")
    known = set(names)
    for i, component in enumerate(components):
        label = f"mixture component {i}" + (f" ({component.name})" if component.name else "")
        for field_name in ("input_alphas", "target_alphas", "keep"):
            unknown = set(getattr(component, field_name)) - known
            if unknown:
                raise ValueError(
                    f"{label}: {field_name} names unknown modalities {sorted(unknown)}; "
                    f"the model has {sorted(known)}"
                )
        alphas = [*component.input_alphas.values(), *component.target_alphas.values()]
        if any(a < 0 for a in alphas) or component.weight <= 0:
            raise ValueError(f"{label}: alphas must be >= 0 and the weight > 0")
        if not any(a > 0 for a in component.input_alphas.values()):
            raise ValueError(f"{label}: no modality has a positive input alpha")


def budgets(
    component: MixtureComponent,
    names: Sequence[str],
    input_caps: Mapping[str, int],
    target_caps: Mapping[str, int],
    input_total: int,
    target_total: int,
    image_like: Mapping[str, bool],
    rng: np.random.Generator,
) -> tuple[dict[str, int], dict[str, int]]:
    """Input and target budgets of one sample.

    Args:
        component: the drawn mixture component.
        names: modality names in model order.
        input_caps: most input tokens per modality for this sample.
        target_caps: most target tokens per modality (before inputs are taken out).
        input_total: N_in.
        target_total: N_tgt.
        image_like: whether a modality's inputs and targets share positions (then the target
            cap shrinks by the input budget).
        rng: generator.

    Returns:
        ``(input_budget, target_budget)`` by modality name.
    """
    a_in = np.array([component.input_alphas.get(n, 0.0) for n in names])
    a_tgt = np.array([component.target_alphas.get(n, 0.0) for n in names])
    caps_in = np.array([input_caps[n] for n in names])
    b_in = sample_budget(a_in, input_total, caps_in, rng)
    caps_tgt = np.array(
        [target_caps[n] - (int(b_in[i]) if image_like[n] else 0) for i, n in enumerate(names)]
    )
    b_tgt = sample_budget(a_tgt, target_total, np.maximum(caps_tgt, 0), rng)
    return (
        {n: int(b_in[i]) for i, n in enumerate(names)},
        {n: int(b_tgt[i]) for i, n in enumerate(names)},
    )


__all__ = [
    "KeepScheme",
    "MixtureComponent",
    "MixtureSpec",
    "budgets",
    "check_mixture",
    "image_masks",
    "keep_probability",
    "pick_component",
    "read_mixture",
    "sample_budget",
    "span_mask",
]
