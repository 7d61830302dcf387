"""``fourm-lightning generate``: run a generation schedule and write figures and raw outputs."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from fourm_lightning.generation.sampler import GenerationStep


def load_model(path: str) -> Any:
    """A ``FourM`` in eval mode from an export folder or a Lightning checkpoint."""
    from fourm_lightning.models.fourm import CONFIG_FILE, FourM

    where = Path(path)
    if where.is_dir() and (where / CONFIG_FILE).is_file():
        return FourM.from_pretrained(where)
    if where.is_file():
        from fourm_lightning.pretraining import FourMPretraining

        module = FourMPretraining.load_from_checkpoint(where, map_location="cpu")
        return module.model.eval()
    raise FileNotFoundError(f"{path}: neither a save_pretrained folder nor a checkpoint file")


def _text_tokenizer(model: Any) -> Any:
    from fourm_lightning.tokenizers.text import TextTokenizer

    for domain in model.domains.values():
        if getattr(domain, "causal", False) and getattr(domain, "tokenizer", None):
            return TextTokenizer.load(domain.tokenizer)
    return None


def _val_conditions(
    model: Any, data_dir: str, count: int, names: list[str], text_tokenizer: Any
) -> tuple[dict, list[str], Any]:
    """Conditions and ground truth from the first ``count`` validation samples of a token set."""
    import torch

    from fourm_lightning.datamodules.pretokenize import iter_token_samples, read_token_manifest
    from fourm_lightning.generation.io import condition_state
    from fourm_lightning.models.domains import PixelDomain, TextDomain

    manifest = read_token_manifest(data_dir)
    samples = list(itertools.islice(iter_token_samples(data_dir, "val"), count))
    if not samples:
        raise ValueError(f"{data_dir} has no validation samples")
    images, texts, tokens = None, {}, {}
    for name in names:
        domain = model.domains[name]
        source = domain.source_name
        if isinstance(domain, PixelDomain):
            images = [s[source][0] if isinstance(s[source], list) else s[source] for s in samples]
        elif isinstance(domain, TextDomain):
            # The sequences exactly as training reads them (cut to max_tokens, [EOS] kept).
            kind = manifest.raw[source].kind
            texts[name] = [
                [
                    int(i)
                    for unit in domain.units(
                        kind.text_chunks(s[source][0] if kind.spatial else s[source]),
                        text_tokenizer,
                        None,
                    )
                    for i in unit
                ]
                for s in samples
            ]
        else:
            tokens[name] = torch.stack([s[f"tok_{source}"][0] for s in samples])
    state = condition_state(
        model, images=images, texts=texts, tokens=tokens, text_tokenizer=text_tokenizer
    )
    return state, [str(s["__key__"]) for s in samples], manifest


def generate(
    schedule: list[GenerationStep],
    model: str,
    out: str = "runs/generate",
    image: list[str] | None = None,
    caption: str | None = None,
    caption_domain: str = "caption",
    val_samples: int = 0,
    data_dir: str = "runs/tokens",
    conditions: list[str] | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> Path:
    """Generate modalities from images, a caption or validation samples, and draw them.

    The schedule is a YAML list of steps (``configs/generation/*.yaml``); each finished target
    conditions the next ones. Writes per sample ``<out>/<id>.png`` (every modality, and the
    ground truth for validation samples) and ``<out>/<id>.<modality>.<ext>`` (raw outputs).

    Args:
        schedule: the generation steps (``--config configs/generation/rgb2all.yaml``).
        model: a ``save_pretrained`` folder or a Lightning checkpoint of FourMPretraining.
        out: output folder.
        image: image files (any size: centre-cropped and resized to the model's input).
        caption: a caption to generate from (may contain sentinels such as ``[S_1]`` to fill).
        caption_domain: the text modality ``caption`` conditions.
        val_samples: take the first N validation samples of ``data_dir`` instead.
        data_dir: token dataset for ``val_samples``.
        conditions: modalities of the validation samples to condition on (default: ``rgb``).
        batch_size: samples generated together.
        seed: seed of the first batch (batch i uses seed + 1000 i).

    Returns:
        The output folder.
    """
    import torch
    from tqdm.auto import tqdm

    from fourm_lightning.generation.io import (
        Detokenizer,
        condition_state,
        load_image,
        save_sample,
        write_json,
    )
    from fourm_lightning.generation.sampler import generate as run_schedule
    from fourm_lightning.models.domains import PixelDomain

    sources = sum(x is not None and x != [] and x != 0 for x in (image, caption, val_samples))
    if sources != 1:
        raise ValueError("give exactly one of --image FILE..., --caption TEXT or --val-samples N")
    net = load_model(model)
    for step in schedule:
        step.check(net)
    text_tokenizer = _text_tokenizer(net)
    truth = None
    manifest = None
    if image:
        pixel = next((d for d in net.domains.values() if isinstance(d, PixelDomain)), None)
        if pixel is None:
            raise ValueError("the model has no pixel input to condition on images")
        state = condition_state(net, images=[load_image(p, pixel.image_size) for p in image])
        ids = [Path(p).stem for p in image]
    elif caption is not None:
        state = condition_state(
            net, texts={caption_domain: [caption]}, text_tokenizer=text_tokenizer
        )
        ids = ["caption"]
    else:
        targets = [s.target for s in schedule]
        inputs = conditions or ["rgb"]
        state, ids, manifest = _val_conditions(
            net, data_dir, val_samples, [*inputs, *targets], text_tokenizer
        )
        truth = {n: state[n] for n in targets}
        state = {n: state[n] for n in inputs}
    specs = None
    if manifest is not None:
        from fourm_lightning.datamodules.shards import read_manifest
        from fourm_lightning.modalities import builtin_modalities, specs_by_name

        specs = specs_by_name(builtin_modalities())
        source = Path(manifest.source.get("path", ""))
        if (source / "manifest.json").is_file():
            specs.update(read_manifest(source).specs)
    detok = Detokenizer(net, specs)
    truth_names = set(truth or {})
    pixels = {n for n, d in net.domains.items() if isinstance(d, PixelDomain)}
    folder = Path(out)
    total = len(ids)
    timings = []
    with tqdm(total=total, desc="generate", unit="sample") as bar:
        for start in range(0, total, batch_size):
            part = {
                n: {k: v[start : start + batch_size] for k, v in e.items()}
                for n, e in state.items()
            }
            begin = time.perf_counter()
            result = run_schedule(
                net, part, schedule, seed=seed + 1000 * start, text_tokenizer=text_tokenizer
            )
            timings.append(time.perf_counter() - begin)
            values = detok.values(result)
            known = None
            if truth is not None:
                known = detok.values(
                    {
                        n: {k: v[start : start + batch_size] for k, v in e.items()}
                        for n, e in truth.items()
                    }
                )
            given = [n for n in state if n not in truth_names]
            for i in range(len(next(iter(values.values())))):
                panel = {
                    n: (n, values[n][i], detok.kind(net.domains[n].source_name)) for n in values
                }
                inputs = [panel[n] for n in given if n in panel]
                outputs = [panel[n] for n in values if n not in given]
                rows: list[list] = [[*inputs, *outputs]]
                if known is not None:
                    rows.append(
                        [None] * len(inputs)
                        + [(f"{n}_true", known[n][i], panel[n][2]) for n in known]
                    )
                pixel = next((panel[n] for n in given if n in pixels), None)
                title = f"{ids[start + i]}: " + " -> ".join(s.target for s in schedule)
                save_sample(folder, ids[start + i], rows, pixel, title)
                bar.update(1)
    write_json(
        folder / "generate.json",
        {
            "model": model,
            "schedule": [vars(s) for s in schedule],
            "samples": ids,
            "seconds_per_batch": timings,
            "torch": torch.__version__,
        },
    )
    return folder


__all__ = ["generate", "load_model"]
