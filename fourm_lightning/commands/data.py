"""``fourm-lightning data synth|show|pretokenize|fashion-mnist``."""

from __future__ import annotations

from pathlib import Path

from fourm_lightning.datamodules.synth.config import SceneConfig


def synth(
    out: str,
    num_train: int = 20000,
    num_val: int = 1000,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 2,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    scene: SceneConfig | None = None,
) -> None:
    """Generate the built-in procedural multimodal scene dataset as WebDataset shards.

    Writes ``OUT/train/shard-*.tar``, ``OUT/val/shard-*.tar`` and ``OUT/manifest.json``. The same
    arguments give byte-identical files.

    Args:
        out: output folder (must be empty or absent unless --overwrite).
        num_train: training samples.
        num_val: validation samples.
        resolution: image side in pixels, 32..256.
        seed: dataset seed; every sample is a pure function of (seed, split, index).
        workers: processes generating shards in parallel.
        samples_per_shard: samples per tar file.
        overwrite: replace an existing dataset in ``out``.
        scene: scene settings (camera range, object sizes, ...), e.g.
            ``--scene.camera_distance [7,10]`` for a shifted distribution; default: the
            built-in dataset's.
    """
    from fourm_lightning.datamodules.build import synthesize_dataset

    synthesize_dataset(
        Path(out),
        num_train=num_train,
        num_val=num_val,
        resolution=resolution,
        seed=seed,
        workers=workers,
        samples_per_shard=samples_per_shard,
        overwrite=overwrite,
        scene=scene,
    )


def show(
    data_dir: str,
    out: str = "sample.png",
    split: str = "val",
    index: int = 0,
    modalities: list[str] | None = None,
    columns: int = 7,
) -> Path:
    """Draw every modality of one stored sample into a PNG figure.

    Args:
        data_dir: dataset folder (with ``manifest.json``).
        out: PNG file to write.
        split: split to read from.
        index: sample index within the split.
        modalities: which modalities to draw (default: all stored ones).
        columns: panels per row.

    Returns:
        The written file.
    """
    from fourm_lightning.datamodules.shards import load_sample, read_manifest
    from fourm_lightning.viz import plot_sample

    manifest = read_manifest(Path(data_dir))
    specs = manifest.specs
    names = modalities or [n for n in specs if n != "scene"]
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; {data_dir} has {sorted(specs)}")
    stored = load_sample(Path(data_dir), split, index, names)
    sample = {name: specs[name].kind.to_tensor(stored[name]) for name in names}
    fig = plot_sample(sample, specs, names, columns=columns, title=f"{split} sample {index}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return path


def pretokenize(
    data_dir: str,
    out: str,
    tokenizers: dict[str, str],
    num_crops: int = 4,
    keep_raw: list[str] | None = None,
    splits: list[str] | None = None,
    resolution: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    precision: str = "bf16",
) -> None:
    """Tokenize a raw dataset with trained tokenizers into token shards (resumable per shard).

    Example::

        fourm-lightning data pretokenize --data_dir data/synth --out data/synth_tokens
            --tokenizers '{depth: runs/tok_depth/version_0/checkpoints/last.ckpt, ...}'

    Args:
        data_dir: the raw dataset folder (with ``manifest.json``).
        out: the token dataset folder; a rerun skips the shards already finished.
        tokenizers: modality -> tokenizer checkpoint (``.ckpt``) or export folder.
        num_crops: random resized crops per training sample (val/test: the full frame).
        keep_raw: raw modalities to carry over (default: rgb, caption, det, metadata,
            color_palette, those the dataset has; rgb is kept even when tokenized, as 4M's
            pixel input).
        splits: splits to process (default: all).
        resolution: crop side in pixels (default: the dataset's).
        batch_size: samples tokenized together.
        seed: seed of the crops.
        precision: the tokenizers' forward pass: ``bf16`` autocast (as they were validated,
            about twice as fast on CPU) or ``32`` (float32).
    """
    from fourm_lightning.datamodules.pretokenize import pretokenize_dataset

    pretokenize_dataset(
        data_dir,
        out,
        tokenizers,
        num_crops=num_crops,
        keep_raw=keep_raw,
        splits=splits,
        resolution=resolution,
        batch_size=batch_size,
        seed=seed,
        precision=precision,
    )


def fashion_mnist(
    out: str,
    cache: str | None = None,
    source: str | None = None,
    limit: int | None = None,
    samples_per_shard: int = 10000,
    overwrite: bool = False,
) -> None:
    """Convert Fashion-MNIST (60k train, 10k test images, 10 classes) into a shard dataset.

    Writes ``OUT/train`` (60,000), ``OUT/val`` (the 10,000 images of the official TEST split, so
    that validation and test read them) and ``OUT/manifest.json``, with modalities ``rgb``
    (28x28, gray replicated to 3 channels) and ``label`` (the class). Read it with
    ``MultimodalDataModule(data_dir=OUT, modalities=["rgb", "label"], resolution=64)``.

    The data comes from ``$FASHION_MNIST_DIR``, ``/usr/share/datasets/fashion-mnist`` (``apt-get
    install dataset-fashion-mnist``), an unpacked .deb in the cache, or else ``apt-get download
    dataset-fashion-mnist`` into the cache (no root needed). A finished conversion with the same
    settings is left alone.

    Args:
        out: dataset folder to write.
        cache: download cache (default: ``~/.cache/fourm_lightning``, or under $XDG_CACHE_HOME).
        source: folder with the four idx files (skips the search above).
        limit: keep only the first N samples of each split (quick trials).
        samples_per_shard: samples per tar file.
        overwrite: replace whatever dataset ``out`` holds.
    """
    from fourm_lightning.datamodules.fashion_mnist import convert_fashion_mnist

    convert_fashion_mnist(
        Path(out),
        source=Path(source) if source is not None else None,
        cache=Path(cache) if cache is not None else None,
        samples_per_shard=samples_per_shard,
        overwrite=overwrite,
        limit=limit,
    )
