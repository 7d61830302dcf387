"""Generation speed: caption decoding with and without the KV cache, MaskGIT/ROAR, a full chain.

    python benchmarks/generation.py --model runs/fourm_nano/version_0/checkpoints/last.ckpt
    python benchmarks/generation.py            # the nano preset with random weights

- ``caption``: 63 tokens after ``[S_1]`` (the caption domain's 64 slots), greedy, batch 1 and 8,
  with the KV cache and by re-running the decoder on the whole prefix (the original's way).
  Stopping is disabled so both decode exactly the same number of tokens.
- ``maskgit`` / ``roar``: one image-like target (tok_depth, 64 tokens) from RGB, 8 steps and 1 step.
- ``chain``: ``configs/generation/rgb2all.yaml`` (10 targets) from RGB.

Prints one JSON line per measurement and a table; figures are medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_model(path: str | None) -> torch.nn.Module:
    """The checkpoint's model, or the nano experiment's domains with random weights."""
    if path:
        from fourm_lightning.commands.generate import load_model

        return load_model(path)
    from jsonargparse import ArgumentParser

    from fourm_lightning.models import FourM
    from fourm_lightning.models.domains import Domain

    config = yaml.safe_load((ROOT / "configs/experiment/fourm_nano_synth.yaml").read_text())
    args = config["model"]["init_args"]
    parser = ArgumentParser()
    parser.add_argument("--domains", type=list[Domain])
    domains = parser.instantiate(parser.parse_object({"domains": args["domains"]})).domains
    sizes = {k: args[k] for k in ("dim", "encoder_depth", "decoder_depth", "num_heads")}
    torch.manual_seed(0)
    return FourM(domains, **sizes).eval()


def rgb_state(model: torch.nn.Module, batch: int) -> dict:
    """Random RGB conditions of the model's pixel domain."""
    from fourm_lightning.generation.io import condition_state
    from fourm_lightning.models.domains import PixelDomain

    pixel = next(d for d in model.domains.values() if isinstance(d, PixelDomain))
    images = torch.randint(
        0, 256, (batch, 3, pixel.image_size, pixel.image_size), dtype=torch.uint8
    )
    return condition_state(model, images=list(images.numpy()))


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint or export folder (default: random nano)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from fourm_lightning.generation import GenerationStep, generate, maskgit, roar
    from fourm_lightning.generation.sampler import autoregressive, empty_target

    model = build_model(args.model)
    rows = []
    caption = model.domains["caption"]
    # Stop ids that can never be sampled: both paths decode all 63 tokens.
    sentinels = [5, -2, -3]
    step = GenerationStep("caption", scheme="autoregressive", temperature=0.0)
    for batch in (1, 8):
        state = rgb_state(model, batch)
        state["caption"] = empty_target(model, "caption", batch)
        tokens = (caption.max_tokens - 1) * batch
        for cache in (True, False):

            def run(state=state, cache=cache) -> None:
                autoregressive(model, state, step, sentinels=sentinels, eos_id=-1, use_cache=cache)

            seconds = timed(run, args.repeats)
            rows.append(
                {
                    "what": f"caption {caption.max_tokens - 1} tokens, batch {batch}",
                    "kv_cache": cache,
                    "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds, 1),
                }
            )
    for scheme, steps, fill in (("maskgit", 8, maskgit), ("roar", 8, roar), ("roar", 1, roar)):
        state = rgb_state(model, 1)
        state["tok_depth"] = empty_target(model, "tok_depth", 1)
        step = GenerationStep("tok_depth", scheme=scheme, steps=steps)
        seconds = timed(
            lambda state=state, step=step, fill=fill: fill(model, state, step), args.repeats
        )
        rows.append(
            {"what": f"tok_depth {scheme} {steps} steps, batch 1", "seconds": round(seconds, 3)}
        )
    schedule_yaml = yaml.safe_load((ROOT / "configs/generation/rgb2all.yaml").read_text())
    schedule = [GenerationStep(**s) for s in schedule_yaml["schedule"]]
    text = SimpleText()
    for batch in (1, 8):
        state = rgb_state(model, batch)
        seconds = timed(
            lambda state=state: generate(model, state, schedule, text_tokenizer=text), args.repeats
        )
        rows.append(
            {
                "what": f"rgb2all chain ({len(schedule)} targets), batch {batch}",
                "seconds": round(seconds, 3),
                "seconds_per_sample": round(seconds / batch, 3),
            }
        )
    for row in rows:
        row["torch"] = torch.__version__
        print(json.dumps(row))
    cached = {r["what"]: r for r in rows if r.get("kv_cache")}
    for row in rows:
        if row.get("kv_cache") is False:
            speedup = row["seconds"] / cached[row["what"]]["seconds"]
            print(f"KV cache speed-up, {row['what']}: {speedup:.1f}x")


class SimpleText:
    """Sentinel/EOS ids of the project's text layout ([EOS]=3, S_0=4) without a vocabulary."""

    sentinel_ids = range(4, 68)
    eos_id = 3


if __name__ == "__main__":
    main()
