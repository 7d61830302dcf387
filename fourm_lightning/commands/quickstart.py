"""``fourm-lightning quickstart``: the main job on the built-in dataset.

Stages run in order and each skips work whose output already exists and is valid, so a second run
resumes. Today the stages are: generate the dataset, draw validation samples, compute dataset
statistics. Tokenizers, 4M pretraining, generation and evaluation join as they land.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class QuickstartSize:
    """How much data the quickstart generates."""

    num_train: int
    num_val: int


FULL = QuickstartSize(num_train=20000, num_val=1000)
TINY = QuickstartSize(num_train=400, num_val=100)


def _dataset_is_complete(data_dir: Path, size: QuickstartSize, resolution: int, seed: int) -> bool:
    """True when ``data_dir`` holds a finished dataset made with these settings."""
    from fourm_lightning.datamodules.shards import read_manifest

    if not (data_dir / "manifest.json").is_file():
        return False
    manifest = read_manifest(data_dir)
    return (
        manifest.resolution == resolution
        and manifest.seed == seed
        and manifest.num_samples("train") == size.num_train
        and manifest.num_samples("val") == size.num_val
        and all(
            (data_dir / shard).is_file()
            for split in ("train", "val")
            for shard in manifest.shards(split)
        )
    )


def _statistics(data_dir: Path, limit: int) -> dict[str, Any]:
    """Label statistics over the first ``limit`` validation samples."""
    from fourm_lightning.datamodules.shards import iter_samples

    objects: Counter[int] = Counter()
    shapes: Counter[str] = Counter()
    colors: Counter[str] = Counter()
    caption_words: list[int] = []
    for count, sample in enumerate(iter_samples(data_dir, "val", ["det", "caption"])):
        if count >= limit:
            break
        objects[len(sample["det"])] += 1
        shapes.update(box["class"] for box in sample["det"])
        colors.update(box["color"] for box in sample["det"])
        caption_words.append(len(sample["caption"].split()))
    return {
        "samples": sum(objects.values()),
        "visible_objects_per_scene": dict(sorted(objects.items())),
        "shapes": dict(shapes.most_common()),
        "colors": dict(colors.most_common()),
        "caption_words_mean": sum(caption_words) / max(len(caption_words), 1),
    }


def quickstart(
    out: str = "runs/quickstart",
    tiny: bool = False,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 2,
    num_figures: int = 4,
) -> Path:
    """Run the main job on the built-in dataset and write ``OUT/results.md``.

    Args:
        out: run folder; the dataset goes to ``OUT/data``, figures to ``OUT/figures``.
        tiny: a small version (400 + 100 samples) for smoke tests and CI.
        resolution: image side in pixels.
        seed: dataset seed.
        workers: generator processes.
        num_figures: validation samples drawn.

    Returns:
        The path of ``results.md``.
    """
    from fourm_lightning.commands.data import show
    from fourm_lightning.datamodules.build import synthesize_dataset

    run_dir = Path(out)
    data_dir = run_dir / "data"
    size = TINY if tiny else FULL
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    print(f"[1/3] dataset: {size.num_train} train + {size.num_val} val at {resolution}px")
    if _dataset_is_complete(data_dir, size, resolution, seed):
        print(f"      {data_dir} is complete, skipping")
    else:
        start = time.perf_counter()
        synthesize_dataset(
            data_dir,
            num_train=size.num_train,
            num_val=size.num_val,
            resolution=resolution,
            seed=seed,
            workers=workers,
            overwrite=True,
        )
        timings["generation_s"] = time.perf_counter() - start

    print(f"[2/3] figures of {num_figures} validation samples")
    figures = []
    for index in range(min(num_figures, size.num_val)):
        path = run_dir / "figures" / f"val_{index:04d}.png"
        if not path.is_file():
            show(str(data_dir), out=str(path), split="val", index=index)
        figures.append(path)

    print("[3/3] dataset statistics")
    stats = _statistics(data_dir, limit=size.num_val)
    (run_dir / "dataset_stats.json").write_text(json.dumps(stats, indent=2) + "\n")

    lines = [
        "# Quickstart results",
        "",
        f"- dataset: `{data_dir}` ({size.num_train} train + {size.num_val} val, {resolution}px, "
        f"seed {seed})",
    ]
    if "generation_s" in timings:
        total = size.num_train + size.num_val
        lines.append(
            f"- generation: {timings['generation_s']:.1f} s "
            f"({total / timings['generation_s']:.0f} samples/s with {workers} workers)"
        )
    lines += [
        f"- visible objects per validation scene: {stats['visible_objects_per_scene']}",
        f"- shapes: {stats['shapes']}",
        f"- colours: {stats['colors']}",
        f"- mean caption length: {stats['caption_words_mean']:.1f} words",
        "",
        "## Figures",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
        "",
        "Tokenizer training, 4M pretraining, generation and evaluation are not part of the",
        "quickstart yet (see the README's Status table).",
        "",
    ]
    results = run_dir / "results.md"
    results.write_text("\n".join(lines))
    print(f"\ndone: {results}\n" + "\n".join(lines[2:6]))
    return results
