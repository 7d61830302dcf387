"""``fourm-lightning data synth|show``."""

from __future__ import annotations

from pathlib import Path


def synth(
    out: str,
    num_train: int = 20000,
    num_val: int = 1000,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 2,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
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
    import matplotlib.pyplot as plt

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
    plt.close(fig)
    print(f"wrote {path}")
    return path
