"""Any-to-any generation with a trained ``FourM``: MaskGIT, ROAR, autoregression, guidance, chains.

The generation *state* has the training batch format, ``{domain: {"tensor", "input_mask",
"target_mask"}}``. A step fills one target domain: positions of the target that are inputs
already (given or generated) never change, and when the step ends every filled token becomes an
input, so the next step of a chain conditions on it.

- ``maskgit``: each step predicts every unfilled position and keeps the most confident ones
  (optional Gumbel noise on the confidence, annealed to 0);
- ``roar``: each step fills a random subset of the unfilled positions (one step fills all);
- ``autoregressive``: sequences token by token from ``[S_1]``, with a KV cache: the encoder and the
  decoder's cross-attention keys/values are computed once, each new token runs the decoder on
  itself only. Spans fill the input's sentinels, so "a red sphere [S_1]" is completed.

Guidance combines logits of several passes that differ only in their inputs:
classifier-free ``l_u + s (l_c - l_u)`` (the unconditional pass drops the conditioning domains) and
multi-condition ``l_u + sum_i w_i (l_c_i - l_u)``. Tokens the step already generated stay inputs in
every pass (the original's ROAR guidance dropped them from the conditional passes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from fourm_lightning.generation.sampling import (
    TemperatureSchedule,
    TokenSchedule,
    guide,
    gumbel_noise,
    sample_tokens,
    temperatures,
    tokens_per_step,
)
from fourm_lightning.models.fourm import FourM

State = dict[str, dict[str, Tensor]]
Scheme = Literal["maskgit", "roar", "autoregressive"]


@dataclass
class GenerationStep:
    """One step of a generation schedule: how to fill one target domain.

    Args:
        target: the domain to generate.
        scheme: ``maskgit`` or ``roar`` for image-like domains, ``autoregressive`` for sequences.
        steps: decoding steps (MaskGIT / ROAR); ROAR with 1 step fills everything at once.
        token_schedule: tokens per step, ``cosine`` or ``linear`` (ROAR always uses linear).
        temperature: sampling temperature (0: greedy).
        temperature_schedule: ``constant``, ``linear`` or ``onex`` (see ``sampling.temperatures``).
        min_temperature: the end point of ``onex``.
        top_k: keep the k most likely tokens (0: off), after temperature.
        top_p: nucleus sampling mass (0: off), after temperature.
        gumbel: scale of the Gumbel noise added to MaskGIT's confidence, annealed to 0.
        guidance_scale: classifier-free guidance scale (1: none).
        conditions: domains the unconditional pass drops (default: every input domain).
        condition_groups: multi-condition guidance, one list of domains per condition.
        condition_weights: one weight per group (negative weights push away from it).
        max_tokens: most tokens an autoregressive step generates (default: the domain's).
    """

    target: str
    scheme: Scheme = "maskgit"
    steps: int = 8
    token_schedule: TokenSchedule = "cosine"
    temperature: float = 1.0
    temperature_schedule: TemperatureSchedule = "constant"
    min_temperature: float = 0.5
    top_k: int = 0
    top_p: float = 0.0
    gumbel: float = 0.0
    guidance_scale: float = 1.0
    conditions: list[str] | None = None
    condition_groups: list[list[str]] | None = None
    condition_weights: list[float] | None = None
    max_tokens: int | None = None

    def check(self, model: FourM) -> None:
        """Raise ``ValueError`` naming the problem: unknown target, wrong scheme, bad guidance."""
        if self.target not in model.domains:
            raise ValueError(
                f"unknown target modality {self.target!r}; the model has {list(model.domains)}"
            )
        domain = model.domains[self.target]
        if not domain.has_target:
            raise ValueError(f"{self.target!r} is input-only: the model cannot generate it")
        sequence = domain.causal
        if sequence != (self.scheme == "autoregressive"):
            wanted = "autoregressive" if sequence else "maskgit or roar"
            raise ValueError(f"{self.target!r} needs scheme {wanted}, got {self.scheme!r}")
        if self.condition_groups is not None or self.condition_weights is not None:
            groups, weights = self.condition_groups or [], self.condition_weights or []
            if len(groups) != len(weights) or not groups:
                raise ValueError(
                    f"step for {self.target!r}: {len(weights)} guidance weights for "
                    f"{len(groups)} condition groups; give one weight per group"
                )
        named = [*(self.conditions or []), *(d for g in self.condition_groups or [] for d in g)]
        unknown = [d for d in named if d not in model.domains]
        if unknown:
            raise ValueError(f"step for {self.target!r}: unknown condition modalities {unknown}")


# ----------------------------------------------------------------------------------------------
# State helpers
# ----------------------------------------------------------------------------------------------


def clone_state(state: Mapping[str, Mapping[str, Tensor]]) -> State:
    """A copy whose tensors can be written without touching ``state``."""
    return {n: {k: v.clone() for k, v in entry.items()} for n, entry in state.items()}


def empty_target(model: FourM, name: str, batch_size: int) -> dict[str, Tensor]:
    """A target domain with nothing known: every token position is to be generated."""
    entry = {k: torch.from_numpy(v) for k, v in model.domains[name].empty().items()}
    entry = {k: v[None].repeat(batch_size, *([1] * v.ndim)) for k, v in entry.items()}
    if not model.domains[name].causal:
        entry["target_mask"][:] = True
    return entry


def _without_inputs(state: State, names: Sequence[str], keep: str) -> State:
    """``state`` with the inputs of ``names`` (never ``keep``) removed (shallow copy)."""
    out = dict(state)
    for name in names:
        if name in out and name != keep:
            out[name] = {**out[name], "input_mask": torch.zeros_like(out[name]["input_mask"])}
    return out


def guided_passes(
    state: State, step: GenerationStep
) -> tuple[list[State], Callable[[list[Tensor]], Tensor]]:
    """The input variants a step's guidance needs and how to combine their logits.

    Returns:
        ``(states, combine)``: run the model on each state, then ``combine(logits_list)``.
    """
    target = step.target
    if step.condition_groups:
        every = sorted({d for group in step.condition_groups for d in group})
        unconditional = _without_inputs(state, every, target)
        conditionals = [
            _without_inputs(state, [d for d in every if d not in group], target)
            for group in step.condition_groups
        ]
        weights = list(step.condition_weights or [])
        return [unconditional, *conditionals], lambda out: guide(out[0], out[1:], weights)
    if step.guidance_scale != 1.0:
        conditions = step.conditions or [
            n for n, e in state.items() if n != target and bool(e["input_mask"].any())
        ]
        unconditional = _without_inputs(state, conditions, target)
        scale = step.guidance_scale
        return [unconditional, state], lambda out: guide(out[0], [out[1]], [scale])
    return [state], lambda out: out[0].float()


# ----------------------------------------------------------------------------------------------
# Image-like targets: MaskGIT and ROAR
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def position_logits(model: FourM, state: State, target: str, query: Tensor) -> Tensor:
    """Logits of ``target`` at the ``query`` positions given the state's inputs.

    Args:
        model: the 4M model.
        state: generation state (inputs are whatever ``input_mask`` marks).
        target: an image-like domain.
        query: (B, L) bool, the positions to predict.

    Returns:
        (B, L, V) float logits, -inf outside ``query``.
    """
    batch = dict(state)
    batch[target] = {**state[target], "target_mask": query}
    encoded = model.encode(batch)
    dec = model.decoder_inputs(batch, names=[target])
    hidden = model.decode(encoded, dec)
    logits = model.logits(target, hidden[dec["valid"]]).float()
    out = logits.new_full((*query.shape, logits.shape[-1]), float("-inf"))
    out[query] = logits  # both sides enumerate (sample, position) in the same order
    return out


def _per_sample_counts(todo: Tensor, steps: int, schedule: TokenSchedule) -> Tensor:
    """(B, S) tokens each sample fills at each step; samples may have different counts."""
    rows = [tokens_per_step(int(n), steps, schedule) for n in todo.sum(1)]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


def _commit(entry: dict[str, Tensor], choose: Tensor, ids: Tensor) -> None:
    """Write ``ids`` at ``choose`` positions and make them inputs."""
    entry["tensor"][choose] = ids[choose]
    entry["input_mask"][choose] = True


def _select(score: Tensor, todo: Tensor, counts: Tensor) -> Tensor:
    """Per sample, the ``counts[b]`` highest-scoring positions among ``todo``."""
    score = score.masked_fill(~todo, float("-inf"))
    rank = score.argsort(1, descending=True).argsort(1)
    return (rank < counts[:, None]) & todo


def _plan(
    state: State, step: GenerationStep, schedule: TokenSchedule
) -> tuple[State, dict[str, Tensor], Tensor, Tensor, list[float]]:
    """What a MaskGIT or ROAR fill starts from.

    Returns:
        A copy of the state, its target entry, the (B, L) positions to fill, the (B, S) tokens
        each sample fills per step and the temperature of each step.
    """
    state = clone_state(state)
    entry = state[step.target]
    todo = entry["target_mask"] & ~entry["input_mask"]
    counts = _per_sample_counts(todo, step.steps, schedule)
    temps = temperatures(
        step.temperature,
        counts.max(0).values.tolist(),
        step.temperature_schedule,
        step.min_temperature,
    )
    return state, entry, todo, counts, temps


def _guided_logits(model: FourM, state: State, step: GenerationStep, query: Tensor) -> Tensor:
    passes, combine = guided_passes(state, step)
    return combine([position_logits(model, s, step.target, query) for s in passes])


@torch.no_grad()
def maskgit(
    model: FourM, state: State, step: GenerationStep, generator: torch.Generator | None = None
) -> State:
    """Fill ``step.target`` by MaskGIT: predict all unfilled positions, keep the most confident.

    Returns:
        A new state in which every position of the target is filled and an input.
    """
    state, entry, todo, counts, temps = _plan(state, step, step.token_schedule)
    for i, temperature in enumerate(temps):
        if not todo.any():
            break
        logits = _guided_logits(model, state, step, todo)
        ids, probs = sample_tokens(logits[todo], temperature, step.top_k, step.top_p, generator)
        sampled = torch.zeros_like(entry["tensor"])
        sampled[todo] = ids
        confidence = torch.full(todo.shape, float("-inf"))
        confidence[todo] = probs.clamp_min(1e-30).log()
        if step.gumbel > 0:
            anneal = step.gumbel * (1.0 - i / len(temps))
            confidence = confidence + anneal * gumbel_noise(todo.shape, generator)
        choose = _select(confidence, todo, counts[:, i])
        _commit(entry, choose, sampled)
        todo &= ~choose
    entry["target_mask"][:] = False
    return state


@torch.no_grad()
def roar(
    model: FourM, state: State, step: GenerationStep, generator: torch.Generator | None = None
) -> State:
    """Fill ``step.target`` in random order: each step decodes a random subset and keeps it."""
    state, entry, todo, counts, temps = _plan(state, step, "linear")
    for i, temperature in enumerate(temps):
        if not todo.any():
            break
        choose = _select(torch.rand(todo.shape, generator=generator), todo, counts[:, i])
        logits = _guided_logits(model, state, step, choose)
        ids, _ = sample_tokens(logits[choose], temperature, step.top_k, step.top_p, generator)
        sampled = torch.zeros_like(entry["tensor"])
        sampled[choose] = ids
        _commit(entry, choose, sampled)
        todo &= ~choose
    entry["target_mask"][:] = False
    return state


# ----------------------------------------------------------------------------------------------
# Sequences: autoregression with a KV cache
# ----------------------------------------------------------------------------------------------


def _token_inputs(model: FourM, target: str, ids: Tensor, position: int) -> Tensor:
    """Decoder input of target-half tokens ``ids`` (B, n) starting at ``position``."""
    module = model.decoder_embeddings[target]
    length = model.domains[target].max_tokens
    pos = module.pos_emb[length + position : length + position + ids.shape[1]]
    return module.token_emb(ids) + pos[None] + module.mod_emb


@torch.no_grad()
def _next_logits_full(model: FourM, state: State, target: str, prefix: Tensor) -> Tensor:
    """Logits after ``prefix`` (B, t) by running the whole decoder on it (no cache)."""
    length = model.domains[target].max_tokens
    t = prefix.shape[1]
    batch = dict(state)
    entry = {k: v.clone() for k, v in state[target].items()}
    entry["tensor"][:, length:] = 0
    entry["tensor"][:, length : length + t] = prefix
    entry["target_mask"][:] = False
    # The position after the prefix is marked as a target too, so that the last prefix token
    # (whose successor is being predicted) counts as a valid decoder position.
    entry["target_mask"][:, length : length + t + 1] = True
    batch[target] = entry
    encoded = model.encode(batch)
    dec = model.decoder_inputs(batch, names=[target])
    hidden = model.decode(encoded, dec)
    return model.logits(target, hidden[:, t - 1]).float()


def _merge_spans(input_ids: list[int], generated: list[int], sentinels: Sequence[int]) -> list[int]:
    """Replace each sentinel of the input by the span the model generated after it."""
    spans: dict[int, list[int]] = {}
    current = None
    sentinel_set = set(sentinels)
    for token in generated:
        if token in sentinel_set:
            current = token
            spans.setdefault(current, [])
        elif current is not None:
            spans[current].append(token)
    if not input_ids:
        return spans.get(sentinels[0], [])
    out: list[int] = []
    for token in input_ids:
        out.extend(spans.get(token, []) if token in sentinel_set else [token])
    return out


@torch.no_grad()
def autoregressive(
    model: FourM,
    state: State,
    step: GenerationStep,
    generator: torch.Generator | None = None,
    *,
    sentinels: Sequence[int],
    eos_id: int,
    use_cache: bool = True,
) -> State:
    """Generate a sequence domain token by token and merge the spans into its input.

    The target starts with ``[S_1]`` and runs until the sentinel after the input's last one (or
    ``[EOS]`` when the input has none left to fill, or ``max_tokens``). Samples of a batch stop
    independently.

    Args:
        model: the 4M model.
        state: generation state; the target's input half may hold a partial text with sentinels.
        step: the step (temperature, top-k/p, guidance, ``max_tokens``).
        generator: random generator.
        sentinels: ids of ``S_1, S_2, ...`` (the text tokenizer's, without ``S_0``).
        eos_id: the ``[EOS]`` id.
        use_cache: decode with the KV cache (True) or by re-running the decoder on the whole
            prefix each token (False, the original's way; for tests and benchmarks).

    Returns:
        A new state where the target's input half holds the completed sequence (all inputs).
    """
    state = clone_state(state)
    entry = state[step.target]
    length = model.domains[step.target].max_tokens
    batch_size = entry["tensor"].shape[0]
    inputs = [
        entry["tensor"][b, :length][entry["input_mask"][b, :length]].tolist()
        for b in range(batch_size)
    ]
    sentinel_list = list(sentinels)
    stops = [sentinel_list[sum(t in sentinel_list for t in row)] for row in inputs]
    limit = min(step.max_tokens or length, length) - 1
    passes, combine = guided_passes(state, step)
    prefix = torch.full((batch_size, 1), sentinel_list[0], dtype=torch.long)
    caches = []
    if use_cache:
        for variant in passes:
            cache = model.start_decoding(model.encode(variant))
            caches.append(cache)
    done = torch.zeros(batch_size, dtype=torch.bool)
    ends = torch.full((batch_size,), limit + 1)  # prefix length kept per sample
    stop = torch.tensor(stops)
    # With no input sentinel to fill, the sequence is complete at [EOS] (its S_2 would follow).
    eos_ends = stop == sentinel_list[1]
    for t in range(limit):
        if use_cache:
            x = _token_inputs(model, step.target, prefix[:, -1:], t)
            outs = [
                model.logits(step.target, model.decode_step(x, cache)[:, 0]).float()
                for cache in caches
            ]
        else:
            outs = [_next_logits_full(model, variant, step.target, prefix) for variant in passes]
        ids, _ = sample_tokens(combine(outs), step.temperature, step.top_k, step.top_p, generator)
        ids = torch.where(done, torch.zeros_like(ids), ids)
        prefix = torch.cat([prefix, ids[:, None]], dim=1)
        finished = ~done & ((ids == stop) | ((ids == eos_id) & eos_ends))
        ends[finished] = t + 2
        done |= finished
        if done.all():
            break
    entry["tensor"][:] = 0
    entry["input_mask"][:] = False
    entry["target_mask"][:] = False
    for b in range(batch_size):
        generated = prefix[b, : int(ends[b])].tolist()
        merged = _merge_spans(inputs[b], generated, sentinel_list)[:length]
        entry["tensor"][b, : len(merged)] = torch.tensor(merged, dtype=torch.long)
        entry["input_mask"][b, : len(merged)] = True
    return state


# ----------------------------------------------------------------------------------------------
# Chains
# ----------------------------------------------------------------------------------------------


def generate(
    model: FourM,
    state: State,
    schedule: Sequence[GenerationStep],
    *,
    seed: int = 0,
    text_tokenizer: Any = None,
) -> State:
    """Run a chained schedule: each step fills its target, which then conditions the next ones.

    Args:
        model: the 4M model (eval mode).
        state: the conditions (``prepare_state``); targets not in it start empty.
        schedule: the steps, in order.
        seed: step i draws from a generator seeded ``seed + i`` (so a fixed seed reproduces).
        text_tokenizer: the ``TextTokenizer`` (sentinel and EOS ids) for sequence targets.

    Returns:
        The final state: every target filled and an input.
    """
    for step in schedule:
        step.check(model)
    batch_size = next(iter(state.values()))["input_mask"].shape[0]
    state = clone_state(state)
    for i, step in enumerate(schedule):
        generator = torch.Generator().manual_seed(seed + i)
        if step.target not in state:
            state[step.target] = empty_target(model, step.target, batch_size)
        if step.scheme == "autoregressive":
            if text_tokenizer is None:
                raise ValueError(f"generating {step.target!r} needs the text tokenizer")
            sentinels = list(text_tokenizer.sentinel_ids)[1:]
            state = autoregressive(
                model, state, step, generator, sentinels=sentinels, eos_id=text_tokenizer.eos_id
            )
        elif step.scheme == "roar":
            state = roar(model, state, step, generator)
        else:
            state = maskgit(model, state, step, generator)
    return state


__all__ = [
    "GenerationStep",
    "State",
    "autoregressive",
    "clone_state",
    "empty_target",
    "generate",
    "guided_passes",
    "maskgit",
    "position_logits",
    "roar",
]
