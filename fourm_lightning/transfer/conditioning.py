"""How much a 4M model's predictions use a given input: target losses with and without it.

A generation figure can look wrong because the sampler is off or because the model never learned
to use the condition. This separates the two: the targets' cross-entropy (nats per token) on
validation samples when the model sees

- ``own``: the sample's own inputs;
- ``another``: another sample's inputs (the next one in the batch): right kind, wrong content;
- ``none``: no input at all (what the model predicts from the modality priors alone).

``none - own`` is what the inputs tell the model about the targets; ``another`` above ``none``
means the model reads the inputs but they mislead it. A model that never trained without any
input can score ``none`` off its training distribution; ``another - own`` then measures the
inputs' content more cleanly. Measured values for the quickstart's models are in
docs/RESULTS.md ("Quickstart").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from fourm_lightning.models.fourm import FourM

CONDITIONS = ("own", "another", "none")


def _with_inputs(batch: dict[str, Any], inputs: Sequence[str], how: str) -> dict[str, Any]:
    """``batch`` with the input domains' entries replaced (``another``) or hidden (``none``)."""
    if how == "own":
        return batch
    out = dict(batch)
    size = len(batch["__key__"])
    shift = torch.roll(torch.arange(size), 1)
    for name in inputs:
        entry = dict(batch[name])
        if how == "another":
            entry = {k: v[shift] for k, v in entry.items()}
        else:
            entry["input_mask"] = torch.zeros_like(entry["input_mask"])
        out[name] = entry
    return out


@torch.no_grad()
def conditioning_gain(
    model: FourM,
    data_dir: str | os.PathLike[str],
    inputs: Sequence[str],
    targets: Sequence[str],
    num_samples: int = 200,
    batch_size: int = 50,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Target losses given the samples' own inputs, another sample's, and none.

    Every token of the ``inputs`` domains is an input and every token of the ``targets`` is a
    target, on the first ``num_samples`` validation samples of a token dataset, under bf16
    autocast on the CPU.

    Args:
        model: the 4M model (eval mode).
        data_dir: the token dataset (``manifest.json`` of ``data pretokenize``).
        inputs: input domains, e.g. ``["caption"]``.
        targets: target domains, e.g. ``["tok_semseg", "tok_rgb"]``.
        num_samples: validation samples scored (whole batches; at least one batch).
        batch_size: samples per batch (>= 2: ``another`` takes the next sample's inputs).
        seed: seed of the masking (positions are all taken, so only the order of text spans).

    Returns:
        ``{"own" | "another" | "none": {target: mean loss in nats per token}}``.

    Raises:
        ValueError: an unknown domain, a domain both input and target, an input-only domain
            as a target, or a batch smaller than 2.
    """
    from fourm_lightning.datamodules.masking import MixtureComponent
    from fourm_lightning.datamodules.tokens import TokenDataModule

    unknown = sorted((set(inputs) | set(targets)) - set(model.domains))
    if unknown:
        raise ValueError(f"unknown domains {unknown}; the model has {sorted(model.domains)}")
    both = sorted(set(inputs) & set(targets))
    if both or not inputs or not targets:
        raise ValueError(f"need disjoint, non-empty inputs and targets; both: {both}")
    no_head = [t for t in targets if not model.domains[t].has_target]
    if no_head:
        raise ValueError(f"{no_head} are input-only domains and cannot be targets")
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (another sample's inputs)")
    domains = list(model.domains.values())
    component = MixtureComponent(
        input_alphas=dict.fromkeys(inputs, 1.0),
        target_alphas=dict.fromkeys(targets, 1.0),
        keep=dict.fromkeys(inputs, "all"),
        name="conditioning",
    )
    # Budgets as large as the domains: every input token in, every target token out.
    num_in = sum(model.domains[n].max_tokens for n in inputs)
    num_out = sum(model.domains[n].max_tokens for n in targets)
    data = TokenDataModule(
        str(data_dir),
        [component],
        input_tokens=(num_in, num_in),
        target_tokens=(num_out, num_out),
        domains=domains,
        batch_size=batch_size,
        num_workers=0,
        seed=seed,
    )
    data.setup("validate")
    sums = {c: dict.fromkeys(targets, 0.0) for c in CONDITIONS}
    counts = {c: dict.fromkeys(targets, 0) for c in CONDITIONS}
    seen = 0
    for batch in data.val_dataloader():
        if len(batch["__key__"]) < 2:
            break
        for how in CONDITIONS:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(_with_inputs(batch, inputs, how))
            for name in targets:
                item = out.domains[name]
                sums[how][name] += float(item.loss) * item.num_targets
                counts[how][name] += item.num_targets
        seen += len(batch["__key__"])
        if seen >= num_samples:
            break
    if seen == 0:
        raise ValueError(f"{data_dir}: no validation batch of at least 2 samples")
    return {how: {n: sums[how][n] / max(1, counts[how][n]) for n in targets} for how in CONDITIONS}


__all__ = ["CONDITIONS", "conditioning_gain"]
