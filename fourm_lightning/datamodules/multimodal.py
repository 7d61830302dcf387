"""``MultimodalDataModule``: aligned multimodal batches from a WebDataset shard folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule

from fourm_lightning.datamodules.shards import MANIFEST_NAME, Manifest, read_manifest, select_specs
from fourm_lightning.datamodules.stream import (
    EpochDataLoader,
    ShardStream,
    epoch_batches_per_worker,
    make_loader,
)
from fourm_lightning.datamodules.transforms import AlignedTransform
from fourm_lightning.modalities import ModalitySpec, builtin_modalities, specs_by_name


@dataclass(frozen=True)
class SynthesizeConfig:
    """How ``prepare_data`` generates the built-in dataset when ``data_dir`` has none yet.

    Args:
        num_train: training samples.
        num_val: validation samples.
        resolution: image side in pixels.
        seed: dataset seed.
        workers: generator processes.
        samples_per_shard: samples per tar file.
    """

    num_train: int = 2000
    num_val: int = 200
    resolution: int = 64
    seed: int = 0
    workers: int = 2
    samples_per_shard: int = 1000


class MultimodalDataModule(LightningDataModule):
    """Aligned multimodal batches streamed from a WebDataset shard folder (``manifest.json``).

    Training reads an infinite stream of resampled shards (each worker and rank draws its own),
    shuffles samples in a buffer, applies ONE random resized crop and flip per sample to every
    modality (``kind.augment``) and batches with each kind's ``collate``; an epoch is
    ``epoch_samples`` samples. Validation/test/predict read their split once, in order, split
    across ranks and workers so that every sample is seen exactly once.

    A batch is ``{modality: batch form, "__key__": list[str], "__skipped__": int}``; for the
    built-in modalities ``rgb`` is (B, 3, S, S) uint8, ``depth`` (B, 1, S, S) float32 metres,
    ``normal`` (B, 3, S, S) float32, ``semseg``/``instance`` (B, S, S) uint8, edges (B, S, S) uint8
    in {0, 1}, ``camera`` (B, 10) float32, and text-like modalities lists (boxes: dicts with a
    ``boxes`` (N, 4) normalized xyxy tensor). ``__skipped__`` is how many corrupt or lost samples
    (undecodable, invalid, missing a modality, or cut off by a truncated shard) the batch's worker
    skipped since its previous batch: sum it in the
    LightningModule (e.g. ``self.log("data/skipped", float(batch["__skipped__"]),
    reduce_fx="sum")``) to track data problems. Each skip is also logged as a warning naming the
    file, key, modality and reason.

    Args:
        data_dir: dataset folder holding ``manifest.json`` and ``<split>/shard-*.tar``.
        modalities: modality names to load, in batch order; None loads every modality in the
            manifest. Unknown names are an error at construction.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (2 uses both cores of a small machine).
        resolution: output side in pixels of image-like modalities; None keeps the stored size.
        augment: random resized crop (scale ``crop_scale``, ratio 3/4..4/3) and horizontal flip for
            training; validation and test always use the full frame.
        crop_scale: range of the crop area as a fraction of the image area.
        shuffle_buffer: samples in each worker's shuffle buffer (training).
        epoch_samples: samples in one training epoch over the infinite resampled stream (all
            ranks and workers together); None means the size of the train split.
        val_batch_size: batch size of validation/test/predict; None means ``batch_size``.
        on_error: ``"skip"`` skips, counts and logs corrupt samples; ``"raise"`` raises the
            ``DataError`` (naming file, key and modality) at the first one.
        seed: seed of shard resampling, shuffling and crops (combined with rank, worker, epoch).
        pin_memory: pin batches in page-locked memory (useful with a GPU).
        persistent_workers: keep workers alive between epochs.
        synthesize: if set and ``data_dir`` has no manifest, ``prepare_data`` generates the
            built-in dataset there with these settings.
    """

    def __init__(
        self,
        data_dir: str,
        modalities: list[str] | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        resolution: int | None = None,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        shuffle_buffer: int = 1000,
        epoch_samples: int | None = None,
        val_batch_size: int | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        synthesize: SynthesizeConfig | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size}, {val_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if isinstance(synthesize, dict):  # plain Python callers may pass the settings as a dict
            synthesize = SynthesizeConfig(**synthesize)
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.resolution = resolution
        self.augment = augment
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.shuffle_buffer = shuffle_buffer
        self.epoch_samples = epoch_samples
        self.val_batch_size = val_batch_size or batch_size
        self.on_error: Literal["skip", "raise"] = on_error
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.synthesize = synthesize
        self._manifest: Manifest | None = None
        # Fail now, not an hour into a run: the names are checked against the manifest, or the
        # built-in modalities when the dataset is still to be generated.
        available = self._available_specs()
        self.modalities = list(select_specs(available, modalities))
        self.save_hyperparameters(
            {**self._init_hparams(), "synthesize": asdict(synthesize) if synthesize else None}
        )

    def _init_hparams(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "modalities": list(self.modalities),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "resolution": self.resolution,
            "augment": self.augment,
            "crop_scale": list(self.crop_scale),
            "shuffle_buffer": self.shuffle_buffer,
            "epoch_samples": self.epoch_samples,
            "val_batch_size": self.val_batch_size,
            "on_error": self.on_error,
            "seed": self.seed,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }

    def _available_specs(self) -> dict[str, ModalitySpec]:
        if (self.data_dir / MANIFEST_NAME).is_file():
            return self.manifest.specs
        return specs_by_name(builtin_modalities())

    @property
    def manifest(self) -> Manifest:
        """The dataset manifest (read on first use)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.data_dir)
        return self._manifest

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        """The selected modalities' specs, in batch order (from the manifest)."""
        return select_specs(self.manifest.specs, self.modalities)

    @property
    def output_resolution(self) -> int:
        """Side in pixels of image-like modalities in batches."""
        return self.resolution or self.manifest.resolution

    def prepare_data(self) -> None:
        """Generate the built-in dataset into ``data_dir`` if ``synthesize`` is set and none exists.

        Lightning calls this on one process per node before ``setup``.
        """
        if self.synthesize is None or (self.data_dir / MANIFEST_NAME).is_file():
            return
        from fourm_lightning.datamodules.build import is_partial_dataset, synthesize_dataset

        synthesize_dataset(
            self.data_dir,
            **asdict(self.synthesize),
            # Leftovers of an interrupted generation (split folders, no manifest) are replaced;
            # anything else in a non-empty folder is refused.
            overwrite=is_partial_dataset(self.data_dir),
        )
        self._manifest = None

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest (the dataset must exist: see ``synthesize`` and ``prepare_data``)."""
        self._manifest = read_manifest(self.data_dir)
        select_specs(self._manifest.specs, self.modalities)  # the manifest may have changed

    def _eval_split(self, preferred: str) -> str:
        return preferred if self.manifest.shards(preferred) else "val"

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def stream(self, split: str, train: bool) -> ShardStream:
        """The ``ShardStream`` of one split (training: resampled and augmented; else one pass).

        Args:
            split: split name in the manifest.
            train: training stream (infinite, shuffled, random crops when ``augment``).

        Returns:
            The stream (an ``IterableDataset`` of batches).
        """
        manifest = self.manifest
        urls = [str(p) for p in manifest.shard_paths(split)]
        if not urls:
            raise ValueError(
                f"{self.data_dir} has no {split!r} shards (splits: {sorted(manifest.splits)})"
            )
        transform = AlignedTransform(
            size=self.output_resolution, train=train and self.augment, scale=self.crop_scale
        )
        batch_size = self.batch_size if train else self.val_batch_size
        batches_per_worker = None
        if train:
            samples = self.epoch_samples or manifest.num_samples(split)
            batches_per_worker = epoch_batches_per_worker(
                samples, batch_size, self._world_size(), self.num_workers
            )
        return self.new_stream(
            urls,
            self.specs,
            manifest.resolution,
            transform,
            batch_size,
            train=train,
            shuffle_buffer=self.shuffle_buffer,
            batches_per_worker=batches_per_worker,
            shard_sizes=[shard.num_samples for shard in manifest.splits[split]],
            num_workers=self.num_workers,
            on_error=self.on_error,
            seed=self.seed,
        )

    def new_stream(self, *args: Any, **kwargs: Any) -> ShardStream:
        """Construct the stream (``ShardStream`` arguments); subclasses add a processing step."""
        return ShardStream(*args, **kwargs)

    def _loader(self, split: str, train: bool) -> EpochDataLoader:
        return make_loader(
            self.stream(split, train),
            self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> EpochDataLoader:
        """Training batches: resampled shards, shuffled, augmented; ``epoch_samples`` per epoch."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> EpochDataLoader:
        """Validation batches: the ``val`` split once, in order, full-frame crops."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> EpochDataLoader:
        """Test batches: the ``test`` split if the dataset has one, else ``val``."""
        return self._loader(self._eval_split("test"), train=False)

    def predict_dataloader(self) -> EpochDataLoader:
        """Prediction batches: the ``predict`` split if present, else ``test``, else ``val``."""
        split = "predict" if self.manifest.shards("predict") else self._eval_split("test")
        return self._loader(split, train=False)
