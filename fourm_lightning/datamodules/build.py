"""Generate the built-in procedural scene dataset as deterministic WebDataset shards.

Every sample is a pure function of ``(seed, split, index)`` (``synth.generate_sample``) and every
shard a pure function of its sample range, so shards are generated in parallel, one whole shard
per task, and the output is byte-identical whatever the number of workers. The manifest is written
last: a folder without ``manifest.json`` is an incomplete dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import queue
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fourm_lightning.datamodules.shards import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardWriter,
    file_sha256,
    sample_key,
    shard_name,
    write_manifest,
)
from fourm_lightning.modalities import builtin_modalities, specs_by_name
from fourm_lightning.modalities.vocab import COLORS, SEMSEG_CLASSES, SHAPE_CLASSES, SIZES

if TYPE_CHECKING:
    from fourm_lightning.datamodules.synth import SceneConfig

#: The generator name recorded in manifests.
GENERATOR_NAME = "fourm_lightning.datamodules.synth"
#: Splits of the built-in dataset, in the order they are generated.
SPLITS = ("train", "val")
# Workers report progress every this many samples (a queue message per sample would cost more
# than it tells at 64x64).
_PROGRESS_EVERY = 8


def scene_to_stored(scene_sample: Mapping[str, Any], resolution: int) -> dict[str, Any]:
    """Turn one generator output into the stored forms of the built-in modalities.

    The only conversion is ``det``: the generator gives PIXEL xyxy boxes (x1, y1 exclusive) and
    ``BoxesText`` stores NORMALIZED xyxy (x by the width, y by the height), so boxes follow crops
    without knowing the image size. Every other value already has its stored form.

    Args:
        scene_sample: ``generate_sample`` output (``rgb`` (H, W, 3) uint8, ``det`` pixel boxes).
        resolution: the image side H = W in pixels.

    Returns:
        modality name -> stored-form value, for every built-in modality.
    """
    out = {spec.name: scene_sample[spec.name] for spec in builtin_modalities()}
    height, width = scene_sample["rgb"].shape[:2] if "rgb" in scene_sample else (resolution,) * 2
    out["det"] = [
        {
            **item,
            "box": [
                item["box"][0] / width,
                item["box"][1] / height,
                item["box"][2] / width,
                item["box"][3] / height,
            ],
        }
        for item in scene_sample["det"]
    ]
    return out


@dataclass(frozen=True)
class _ShardTask:
    """One shard to generate: samples ``start .. stop - 1`` of ``split``."""

    out: str
    split: str
    number: int
    start: int
    stop: int
    seed: int
    resolution: int
    scene: Any  # SceneConfig (a frozen dataclass, picklable for spawn workers)


# Set in each worker process by ``_init_worker``; None in the parent process.
_progress_queue: Any = None


def _init_worker(progress: Any) -> None:
    global _progress_queue
    _progress_queue = progress
    # Two workers on two cores: intra-op threads inside each would only oversubscribe the CPU.
    import torch

    torch.set_num_threads(1)


def _report(count: int) -> None:
    if _progress_queue is not None and count:
        _progress_queue.put(count)


def _write_shard(task: _ShardTask) -> ShardInfo:
    """Generate and write one whole shard (runs in a worker process, or inline for 1 worker)."""
    from fourm_lightning.datamodules.synth import generate_sample

    specs = builtin_modalities()
    rel = shard_name(task.split, task.number)
    path = Path(task.out) / rel
    pending = 0
    with ShardWriter(path, specs, resolution=task.resolution) as writer:
        for index in range(task.start, task.stop):
            scene = generate_sample(task.seed, task.split, index, task.scene)
            writer.write(sample_key(index), scene_to_stored(scene, task.resolution))
            pending += 1
            if pending == _PROGRESS_EVERY:
                _report(pending)
                pending = 0
    _report(pending)
    return ShardInfo(rel, task.stop - task.start, file_sha256(path))


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; pass overwrite=True (--overwrite) to replace the dataset"
            )
        # The manifest goes first, so an interrupted overwrite leaves an "incomplete" folder.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for split in SPLITS:
            if (out / split).is_dir():
                shutil.rmtree(out / split)
    out.mkdir(parents=True, exist_ok=True)


def is_partial_dataset(out: Path) -> bool:
    """True when ``out`` holds only the leftovers of an interrupted generation (no manifest)."""
    if not out.is_dir() or (out / MANIFEST_NAME).exists():
        return False
    return all(child.name in SPLITS for child in out.iterdir())


def _run_tasks(tasks: list[_ShardTask], workers: int, total: int, progress: bool) -> list[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="sample", desc="generating", disable=not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            results = []
            for task in tasks:
                results.append(_write_shard(task))
                bar.update(task.stop - task.start)
            return results
        # spawn: safe beside torch's thread pools (fork can deadlock them) and on every platform.
        ctx = multiprocessing.get_context("spawn")
        progress_queue = ctx.Queue()
        with ctx.Pool(min(workers, len(tasks)), _init_worker, (progress_queue,)) as pool:
            pending = [pool.apply_async(_write_shard, (task,)) for task in tasks]
            while not all(result.ready() for result in pending):
                with contextlib.suppress(queue.Empty):
                    bar.update(progress_queue.get(timeout=0.2))
                for result in pending:
                    if result.ready() and not result.successful():
                        result.get()  # re-raises the worker's exception here
            results = [result.get() for result in pending]
            while True:  # drain late progress messages so the bar ends at the total
                try:
                    bar.update(progress_queue.get_nowait())
                except queue.Empty:
                    break
        bar.n = total
        bar.refresh()
        return results
    finally:
        bar.close()


def synthesize_dataset(
    out: Path,
    num_train: int,
    num_val: int,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 2,
    samples_per_shard: int = 1000,
    scene: SceneConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Generate the built-in dataset: ``out/train/shard-*.tar``, ``out/val/...``, ``manifest.json``.

    The same arguments give byte-identical files, whatever ``workers`` is.

    Args:
        out: dataset folder (created; must be empty or absent unless ``overwrite``).
        num_train: training samples.
        num_val: validation samples.
        resolution: image side in pixels (overrides ``scene.resolution``).
        seed: dataset seed; sample ``i`` of a split is a pure function of (seed, split, i).
        workers: processes generating shards in parallel (one whole shard per task).
        samples_per_shard: samples per tar file.
        scene: scene settings (objects per scene, supersampling, ...); default ``SceneConfig()``.
        progress: show a progress bar over samples.
        overwrite: replace an existing dataset in ``out``.

    Returns:
        The manifest that was written.
    """
    from fourm_lightning.datamodules import synth

    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need at least one sample, got num_train={num_train}, num_val={num_val}")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    config = synth.SceneConfig() if scene is None else scene
    config = dataclasses.replace(config, resolution=resolution)
    out = Path(out)
    _prepare_folder(out, overwrite)

    tasks = []
    for split, count in zip(SPLITS, (num_train, num_val), strict=True):
        for number in range(math.ceil(count / samples_per_shard)):
            start = number * samples_per_shard
            stop = min(count, start + samples_per_shard)
            tasks.append(
                _ShardTask(os.fspath(out), split, number, start, stop, seed, resolution, config)
            )
    infos = _run_tasks(tasks, workers, num_train + num_val, progress)

    splits: dict[str, tuple[ShardInfo, ...]] = {split: () for split in SPLITS}
    for task, info in zip(tasks, infos, strict=True):
        splits[task.split] += (info,)
    manifest = Manifest(
        root=out,
        resolution=resolution,
        specs=specs_by_name(builtin_modalities()),
        splits=splits,
        generator={
            "name": GENERATOR_NAME,
            "version": str(getattr(synth, "__version__", getattr(synth, "GENERATOR_VERSION", "0"))),
            "seed": seed,
            "config": dataclasses.asdict(config),
        },
        class_names={
            "semseg": list(SEMSEG_CLASSES),
            "shape": list(SHAPE_CLASSES),
            "color": list(COLORS),
            "size": list(SIZES),
        },
    )
    write_manifest(manifest)
    return manifest
