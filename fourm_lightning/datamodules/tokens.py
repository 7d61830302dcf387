"""``TokenDataModule``: masked 4M batches from a pre-tokenized dataset.

It streams the token shards that ``fourm-lightning data pretokenize`` writes, picks one of each
sample's K aligned crops (a random one in training, the full frame in evaluation), asks every
model domain for its value (``Domain.load``), draws the sample's token budgets from the masking
mixture and builds the fixed-size masks (``Domain.mask``), all inside the DataLoader workers.

The domains are the model's: when ``domains`` is not given, ``setup`` takes them from the
LightningModule the Trainer runs (``model.domains``), so a config names them once.

Evaluation masks are deterministic (seeded by the dataset seed and the sample key), so the
validation loss of two checkpoints or two runs compares like with like; the original kept them
random, which made its validation curves noisy.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from fourm_lightning.datamodules.masking import (
    MixtureComponent,
    budgets,
    check_mixture,
    pick_component,
    read_mixture,
)
from fourm_lightning.datamodules.pretokenize import (
    TokenManifest,
    decode_token_sample,
    read_token_manifest,
)
from fourm_lightning.datamodules.stream import (
    EpochDataLoader,
    ErrorTally,
    ShardStream,
    epoch_batches_per_worker,
    make_loader,
)
from fourm_lightning.modalities import DataError
from fourm_lightning.models.domains import Domain, LoadContext

#: How often a training stream draws a mixture component: for every sample or every batch.
ComponentPer = Literal["sample", "batch"]


def check_component_per(value: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a ``ComponentPer``."""
    if value not in get_args(ComponentPer):
        raise ValueError(f"component_per must be 'sample' or 'batch', got {value!r}")


class MultimodalMasking:
    """Per-sample masking of a set of domains under a mixture (see ``datamodules.masking``).

    Args:
        domains: the model's domains.
        mixture: the Dirichlet mixture components.
        input_tokens: (min, max) of the input budget N_in, drawn uniformly.
        target_tokens: (min, max) of the target budget N_tgt.
    """

    def __init__(
        self,
        domains: Sequence[Domain],
        mixture: Sequence[MixtureComponent],
        input_tokens: tuple[int, int],
        target_tokens: tuple[int, int],
    ) -> None:
        names = [d.name for d in domains]
        check_mixture(mixture, names)
        for label, (low, high) in (
            ("input_tokens", input_tokens),
            ("target_tokens", target_tokens),
        ):
            if not 0 <= low <= high:
                raise ValueError(
                    f"{label} must be (min, max) with 0 <= min <= max, got {low, high}"
                )
        self.domains = list(domains)
        self.names = names
        self.mixture = list(mixture)
        self.input_tokens = (int(input_tokens[0]), int(input_tokens[1]))
        self.target_tokens = (int(target_tokens[0]), int(target_tokens[1]))
        self.image_like = {d.name: d.image_like for d in domains}

    def pick(self, rng: np.random.Generator) -> int:
        """Index of a mixture component drawn by weight."""
        return pick_component(self.mixture, rng)

    def __call__(
        self,
        values: Mapping[str, Any],
        rng: np.random.Generator,
        component_index: int | None = None,
    ) -> dict[str, Any]:
        """Domain values of one sample -> ``{name: {"tensor", "input_mask", "target_mask"}}``.

        Domains missing from ``values`` get a fully masked placeholder. ``component_index``
        fixes the mixture component (one drawn per batch); None draws one for this sample.
        """
        if component_index is None:
            component_index = self.pick(rng)
        component = self.mixture[component_index]
        present = [d for d in self.domains if d.name in values]
        names = [d.name for d in present]
        in_caps = {d.name: d.input_capacity(values[d.name]) for d in present}
        tgt_caps = {d.name: d.target_capacity(values[d.name]) for d in present}
        b_in, b_tgt = budgets(
            component,
            names,
            in_caps,
            tgt_caps,
            int(rng.integers(self.input_tokens[0], self.input_tokens[1] + 1)),
            int(rng.integers(self.target_tokens[0], self.target_tokens[1] + 1)),
            self.image_like,
            rng,
        )
        out: dict[str, Any] = {}
        for domain in self.domains:
            if domain.name not in values:
                out[domain.name] = domain.empty()
                continue
            keep = component.keep.get(domain.name, "random")
            out[domain.name] = domain.mask(
                values[domain.name], b_in[domain.name], b_tgt[domain.name], rng, keep
            )
        return out


def collate_masked(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack masked samples: ``{name: {field: (B, ...) tensor}, "__key__": [...]}``."""
    out: dict[str, Any] = {"__key__": [s["__key__"] for s in samples]}
    for name, first in samples[0].items():
        if name.startswith("__"):
            continue
        out[name] = {
            key: torch.from_numpy(np.stack([s[name][key] for s in samples])) for key in first
        }
    return out


class TokenStream(ShardStream):
    """A ``ShardStream`` over token shards that loads domain values and masks them."""

    def __init__(
        self,
        urls: Sequence[str],
        manifest: TokenManifest,
        masking: MultimodalMasking,
        batch_size: int,
        random_crop: bool = True,
        component_per: ComponentPer = "sample",
        **kwargs: Any,
    ) -> None:
        super().__init__(urls, {}, manifest.resolution, None, batch_size, **kwargs)  # type: ignore[arg-type]
        check_component_per(component_per)
        self.manifest = manifest
        self.masking = masking
        self.random_crop = random_crop
        self.component_per = component_per
        self._tokenizers: dict[str, Any] = {}

    def _sample_rng(self, key: str) -> np.random.Generator:
        # Evaluation: the same masks for a sample in every run and every epoch.
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def process(
        self,
        raws: Iterable[Mapping[str, Any]],
        rng: np.random.Generator | None,
        tally: ErrorTally,
    ) -> Iterator[dict[str, Any]]:
        """Raw token samples -> masked samples; bad ones are counted, logged and skipped.

        With ``component_per="batch"`` (training only) every run of ``batch_size`` yielded
        samples shares one mixture component: ``batch_samples`` groups exactly those samples,
        because skipped samples are never yielded.
        """
        per_batch = self.train and self.component_per == "batch" and rng is not None
        component: int | None = None
        yielded = 0
        for raw in raws:
            key, url = str(raw.get("__key__")), str(raw.get("__url__"))
            sample_rng = rng if rng is not None else self._sample_rng(key)
            try:
                sample = decode_token_sample(raw, self.manifest)
            except DataError as error:
                tally.record(error.located(key=key, file=url))
                continue
            random_crop = self.train and self.random_crop
            crop = int(sample_rng.integers(len(sample["crops"]))) if random_crop else 0
            context = LoadContext(self.manifest.raw, self.train, sample_rng, self._tokenizers)
            values: dict[str, Any] = {}
            error: DataError | None = None
            for domain in self.masking.domains:
                try:
                    values[domain.name] = domain.load(sample, crop, context)
                except (KeyError, ValueError, TypeError, IndexError) as exc:
                    error = DataError(
                        f"cannot load domain {domain.name!r}: {type(exc).__name__}: {exc}",
                        modality=domain.source_name,
                        key=key,
                        file=url,
                    )
                    break
            if error is not None:
                tally.record(error)
                continue
            tally.good()
            if per_batch:
                assert rng is not None
                if yielded % self.batch_size == 0:
                    component = self.masking.pick(rng)
                yielded += 1
            masked = self.masking(values, sample_rng, component)
            masked["__key__"] = key
            yield masked

    def collate(self, samples: list[Mapping[str, Any]]) -> dict[str, Any]:  # noqa: D102
        return collate_masked(samples)


class TokenDataModule(LightningDataModule):
    """Masked multimodal batches from a token dataset (``manifest.json`` of pretokenize).

    A batch is ``{domain: {"tensor", "input_mask", "target_mask"}, "__key__": [...],
    "__skipped__": int}`` (see ``fourm_lightning.models.domains`` for each family's tensor).

    Args:
        data_dir: token dataset folder.
        mixture: the masking mixture: a YAML file of components (``configs/mixture/``) or the
            list itself. Typed as plain mappings for the CLI, so that a mixture given on the
            command line replaces the config's whole (see ``masking.read_mixture``).
        input_tokens: (min, max) input budget per sample.
        target_tokens: (min, max) target budget per sample.
        domains: the domains to load; None takes the LightningModule's ``domains`` at setup.
        batch_size: samples per batch.
        num_workers: DataLoader workers (masking runs there).
        shuffle_buffer: samples in each worker's shuffle buffer (training).
        epoch_samples: samples per training epoch (one validation pass per epoch); None: the
            train split's size.
        val_batch_size: batch size of validation; None means ``batch_size``.
        random_crop: pick one of the K pre-tokenized crops at random in training (else crop 0).
        component_per: draw the mixture component per ``"sample"`` (4M's way) or per
            ``"batch"`` in training: every sample of a batch then uses one component. The
            decoder runs at the batch's largest target count, so with components per sample
            nearly every batch pays for the longest one; per batch, a component with few
            targets (caption -> semseg: 64 tokens against 256) makes a cheap batch. Validation
            keeps per-sample components, so its loss compares across both settings. On the
            quickstart's 4M, per batch took 1.22x the steps in the same time and scored worse
            on every measure (docs/RESULTS.md, "Mixture components per batch").
        on_error: ``"skip"`` logs, counts and skips bad samples; ``"raise"`` stops at the first.
        seed: seed of shard resampling, shuffling, crop choice and masks.
        pin_memory: pin batches (GPU training).
        persistent_workers: keep workers between epochs.
        shard_cache_mb: each training worker keeps up to this many MiB of raw token shards in
            memory (``stream.ShardCache``), so a dataset that fits is read and parsed once per
            worker instead of once per pass. Memory: up to workers x ranks x this. 0 (the
            default) reads every shard from disk each time.
    """

    def __init__(
        self,
        data_dir: str,
        mixture: str | list[dict[str, Any]] | list[MixtureComponent],
        input_tokens: tuple[int, int] = (128, 128),
        target_tokens: tuple[int, int] = (128, 128),
        domains: list[Domain] | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        epoch_samples: int | None = None,
        val_batch_size: int | None = None,
        random_crop: bool = True,
        component_per: ComponentPer = "sample",
        on_error: Literal["skip", "raise"] = "skip",
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        shard_cache_mb: int = 0,
    ) -> None:
        super().__init__()
        if shard_cache_mb < 0:
            raise ValueError(f"shard_cache_mb must be >= 0, got {shard_cache_mb}")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size}, {val_batch_size}")
        self.data_dir = Path(data_dir)
        self.mixture = read_mixture(mixture)
        self.input_tokens = tuple(input_tokens)
        self.target_tokens = tuple(target_tokens)
        self.domains = list(domains) if domains is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.epoch_samples = epoch_samples
        self.val_batch_size = val_batch_size or batch_size
        self.random_crop = random_crop
        check_component_per(component_per)
        self.component_per: ComponentPer = component_per
        self.on_error: Literal["skip", "raise"] = on_error
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.shard_cache_mb = shard_cache_mb
        self._manifest: TokenManifest | None = None
        self._masking: MultimodalMasking | None = None
        if self.domains is not None:
            self._masking = self._build_masking(self.domains)

    def _build_masking(self, domains: Sequence[Domain]) -> MultimodalMasking:
        return MultimodalMasking(domains, self.mixture, self.input_tokens, self.target_tokens)  # type: ignore[arg-type]

    @property
    def manifest(self) -> TokenManifest:
        """The token dataset manifest (read on first use)."""
        if self._manifest is None:
            self._manifest = read_token_manifest(self.data_dir)
        return self._manifest

    def check_domains(self, domains: Sequence[Domain]) -> None:
        """Raise ``ValueError`` if the dataset cannot feed ``domains`` (missing or wrong vocab).

        A token domain must match the dataset's tokenizer record (vocabulary and token count);
        every other domain must read a raw modality the dataset kept.
        """
        manifest = self.manifest
        for domain in domains:
            source = domain.source_name
            record = manifest.tokenizers.get(source)
            vocab = getattr(domain, "vocab_size", None)
            if domain.tokenized:
                if record is None:
                    raise ValueError(
                        f"{self.data_dir}: no tokens of {source!r} for domain {domain.name!r} "
                        f"(tokenized: {sorted(manifest.tokenizers)})"
                    )
                if vocab != record.vocab_size:
                    raise ValueError(
                        f"domain {domain.name!r}: vocab_size {vocab} but the dataset's {source!r} "
                        f"tokenizer ({record.path}) has {record.vocab_size} codes"
                    )
                if math.prod(record.token_shape) != domain.max_tokens:
                    raise ValueError(
                        f"domain {domain.name!r}: {domain.max_tokens} tokens but the dataset has "
                        f"{record.token_shape} per sample"
                    )
            elif source not in manifest.raw:
                raise ValueError(
                    f"{self.data_dir}: domain {domain.name!r} reads raw {source!r}, which the "
                    f"dataset did not keep (raw: {sorted(manifest.raw)})"
                )
            else:
                domain.tokenizer_record()  # a text vocabulary that differs is an error here

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, take the model's domains if none were given, check them."""
        self._manifest = read_token_manifest(self.data_dir)
        if self.domains is None:
            model = getattr(getattr(self, "trainer", None), "lightning_module", None)
            domains = getattr(model, "domains", None)
            if domains is None:
                raise ValueError(
                    "TokenDataModule needs domains: pass them, or run it with a model that has "
                    "a `domains` attribute"
                )
            self.domains = list(domains.values() if isinstance(domains, Mapping) else domains)
            self._masking = self._build_masking(self.domains)
        self.check_domains(self.domains)

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def stream(self, split: str, train: bool) -> TokenStream:
        """The ``TokenStream`` of one split (training: resampled, shuffled, random crops)."""
        if self._masking is None:
            self.setup()
        assert self._masking is not None
        manifest = self.manifest
        urls = [str(p) for p in manifest.shard_paths(split)]
        if not urls:
            raise ValueError(f"{self.data_dir} has no {split!r} shards")
        batch_size = self.batch_size if train else self.val_batch_size
        batches_per_worker = None
        if train:
            samples = self.epoch_samples or manifest.num_samples(split)
            batches_per_worker = epoch_batches_per_worker(
                samples, batch_size, self._world_size(), self.num_workers
            )
        return TokenStream(
            urls,
            manifest,
            self._masking,
            batch_size,
            random_crop=self.random_crop,
            component_per=self.component_per,
            train=train,
            shuffle_buffer=self.shuffle_buffer,
            batches_per_worker=batches_per_worker,
            shard_sizes=[int(s["num_samples"]) for s in manifest.splits[split]],
            num_workers=self.num_workers,
            on_error=self.on_error,
            seed=self.seed,
            cache_bytes=self.shard_cache_mb * 2**20 if train else 0,
        )

    def _loader(self, split: str, train: bool) -> EpochDataLoader:
        stream = self.stream(split, train)
        return make_loader(stream, self.num_workers, self.pin_memory, self.persistent_workers)

    def train_dataloader(self) -> EpochDataLoader:
        """Training batches: resampled shards, random crop per sample, random masks."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> EpochDataLoader:
        """Validation batches: the ``val`` split once, full frame, deterministic masks."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> EpochDataLoader:
        """Test batches: ``test`` if the dataset has it, else ``val``."""
        return self._loader("test" if self.manifest.splits.get("test") else "val", train=False)


__all__ = ["MultimodalMasking", "TokenDataModule", "TokenStream", "collate_masked"]
