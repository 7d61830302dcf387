"""Streaming shards into batches with WebDataset: resampled training, exact-once evaluation.

Training streams are infinite: every DataLoader worker (on every rank) resamples shards with
replacement from its own seed (``wds.ResampledShards``), shuffles samples in a buffer, decodes,
augments and batches them, and stops after ``batches_per_worker`` batches (the epoch length).
Evaluation streams split the shard list by rank (``wds.split_by_node``) and then by worker
(``wds.split_by_worker``) and read it once in order, so every sample is seen exactly once.

Bad input never ends an epoch when ``on_error="skip"``: a corrupt sample (undecodable file, wrong
shape or dtype, missing modality) or an unreadable shard is logged with its file, key, modality and
reason, counted, and skipped. Each batch carries ``"__skipped__"``: how many samples its worker
dropped since its previous batch (samples a truncated shard never delivered included, from the
manifest's per-shard counts).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Literal

import numpy as np
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from fourm_lightning.datamodules.shards import decode_sample
from fourm_lightning.datamodules.transforms import AlignedTransform, collate
from fourm_lightning.modalities import DataError, ModalitySpec

logger = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]


class ErrorTally:
    """Counts, logs (or raises) the bad samples and shard read errors of one worker's stream.

    Args:
        on_error: ``"skip"`` logs a warning, counts and continues; ``"raise"`` raises ``DataError``.
        max_consecutive: give up (raise) after this many errors in a row without one good sample,
            so an infinite resampled stream over unreadable data fails instead of spinning.
    """

    def __init__(self, on_error: OnError = "skip", max_consecutive: int = 1000) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.max_consecutive = max_consecutive
        self.pending = 0
        self.total = 0
        #: Errors recorded (a shard read error counted with 0 samples included).
        self.errors = 0
        self._consecutive = 0

    def record(self, error: DataError, count: int = 1) -> None:
        """Handle bad data: raise it, or log it and count ``count`` skipped samples."""
        if self.on_error == "raise":
            raise error
        self.pending += count
        self.total += count
        self.errors += 1
        self._consecutive += 1
        logger.warning(
            "skipped bad data: file=%s key=%s modality=%s reason=%s",
            error.file,
            error.key,
            error.modality,
            error.message,
        )
        if self._consecutive >= self.max_consecutive:
            raise DataError(
                f"{self._consecutive} bad samples or shards in a row, the data looks unreadable; "
                f"last error: {error.message}",
                modality=error.modality,
                key=error.key,
                file=error.file,
            )

    def good(self) -> None:
        """A sample went through: the run of consecutive errors is over."""
        self._consecutive = 0

    def pop(self) -> int:
        """Samples skipped since the previous call (what a batch reports as ``__skipped__``)."""
        count, self.pending = self.pending, 0
        return count

    def shard_handler(self, url: str, count: int = 1) -> Callable[[Exception], bool]:
        """A WebDataset exception handler for reading shard ``url`` (True = continue).

        Args:
            url: the shard being read (named in the warning or error).
            count: skipped samples to count per error; 0 when the caller counts the samples the
                shard failed to deliver itself (from the manifest's per-shard sample count).
        """
        reported = False

        def handler(exn: Exception) -> bool:
            nonlocal reported
            # WebDataset appends streams and urls to exn.args; the first argument is the reason.
            reason = exn.args[0] if exn.args else ""
            error = DataError(f"unreadable shard data: {type(exn).__name__}: {reason}", file=url)
            if self.on_error == "raise":
                raise error from exn
            if reported:
                # One broken tar makes both WebDataset's member and shard loops call the handler
                # for the same cause: report it once.
                logger.debug("further read error in %s: %s", url, reason)
                return True
            reported = True
            self.record(error, count)
            return True

        return handler


class ShardCache:
    """Raw samples of whole shards kept in memory, up to a byte budget (one per worker).

    A training stream resamples shards with replacement, so on a small dataset (the quickstart's
    12,000 token samples: ~80 MB of members, 24 per sample, in ~210 MB of tar) every worker
    reads and parses every tar many times over. Kept in memory, the quickstart's token loader
    ran 1.22x faster (docs/RESULTS.md, "Smaller tokenizers"). Shards are kept whole, in the order
    they were first read, until the budget is spent; later shards are read from disk every time.
    Only shards read without error and with their full sample count are kept, so a bad shard
    keeps being reported on every pass.

    Args:
        max_bytes: budget for the members' bytes (Python's per-object overhead not counted).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.shards: dict[str, list[dict]] = {}

    def get(self, url: str) -> list[dict] | None:
        """The cached raw samples of shard ``url``, or None."""
        return self.shards.get(url)

    def offer(self, url: str, samples: list[dict]) -> bool:
        """Keep ``samples`` (one whole shard) if they fit in what is left of the budget."""
        size = sum(len(v) for raw in samples for v in raw.values() if isinstance(v, bytes))
        if url in self.shards or self.bytes + size > self.max_bytes:
            return False
        self.shards[url] = samples
        self.bytes += size
        return True


def read_shards(
    shards: Iterable[Mapping[str, Any]],
    tally: ErrorTally,
    expected: Mapping[str, int] | None = None,
    cache: ShardCache | None = None,
) -> Iterator[dict]:
    """Shard dicts ``{"url": path}`` -> raw samples, one shard at a time.

    Each shard is read by its own WebDataset tar iterator whose handler knows the shard's path, so
    an unreadable tar is reported with its file name and the stream moves on to the next shard. A
    truncated last sample comes out incomplete and fails in ``decode_sample``.

    Python's ``tarfile`` treats a tar cut at a member boundary as a normal end of archive, so
    truncation can go unnoticed by the tar reader. The manifest's per-shard sample counts
    (``expected``) catch it: a shard that yields fewer samples is reported, and its missing samples
    are counted as skipped.

    With a ``cache``, a shard it holds is served from memory (the raw dicts are shared, not
    copied: nothing downstream writes to them), and a shard read cleanly is offered to it.
    """
    for shard in shards:
        url = str(shard["url"])
        cached = cache.get(url) if cache is not None else None
        if cached is not None:
            yield from cached
            continue
        want = (expected or {}).get(url)
        # With a known sample count, the shortfall below counts the lost samples exactly, so read
        # errors are logged without being counted twice.
        handler = tally.shard_handler(url, count=1 if want is None else 0)
        errors = tally.errors
        kept: list[dict] | None = [] if cache is not None else None
        keys = 0
        for raw in wds.tarfile_samples([{"url": url}], handler=handler):
            keys += 1
            if kept is not None:
                kept.append(raw)
            yield raw
        if want is not None and keys < want:
            tally.record(
                DataError(f"shard ends after {keys} of {want} samples (truncated?)", file=url),
                count=want - keys,
            )
        elif kept is not None and cache is not None and tally.errors == errors:
            cache.offer(url, kept)


def process_samples(
    raws: Iterable[Mapping[str, Any]],
    specs: Mapping[str, ModalitySpec],
    source: int,
    transform: AlignedTransform,
    rng: np.random.Generator | None,
    tally: ErrorTally,
) -> Iterator[dict[str, Any]]:
    """Raw samples -> decoded, validated, augmented sample-form samples (bad ones go to ``tally``).

    Args:
        raws: raw WebDataset samples.
        specs: the requested modalities.
        source: stored side of full-resolution maps (the manifest resolution).
        transform: the aligned crop/flip (random for training, full frame for evaluation).
        rng: the worker's generator for crops (None for evaluation).
        tally: where bad samples are counted.
    """
    for raw in raws:
        key = str(raw.get("__key__"))
        url = str(raw.get("__url__"))
        try:
            stored = decode_sample(raw, specs, source)
            sample = transform(stored, specs, source, rng)
        except DataError as error:
            tally.record(error.located(key=key, file=url))
            continue
        tally.good()
        yield sample


def batch_samples(
    samples: Iterable[Mapping[str, Any]],
    collate_fn: Callable[[list[Mapping[str, Any]]], dict[str, Any]],
    batch_size: int,
    tally: ErrorTally,
    partial: bool,
) -> Iterator[dict[str, Any]]:
    """Group samples into collated batches, each with its worker's ``__skipped__`` count."""
    buffer: list[Mapping[str, Any]] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) == batch_size:
            batch = collate_fn(buffer)
            batch["__skipped__"] = tally.pop()
            yield batch
            buffer = []
    if buffer and partial:
        batch = collate_fn(buffer)
        batch["__skipped__"] = tally.pop()
        yield batch


def _worker_info() -> tuple[int, int, int, int]:
    """(rank, world_size, worker, num_workers) of the calling process."""
    rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
    return int(rank), int(world_size), int(worker), int(num_workers)


def _split_by_node(
    src: Iterable[Mapping[str, Any]], node: tuple[int, int] | None
) -> Iterator[Mapping[str, Any]]:
    """``wds.split_by_node`` with the rank captured in the main process, when known.

    Workers started with ``spawn`` or ``forkserver`` (Python 3.14's default on Linux) do not see
    the main process's ``torch.distributed`` group, so ``wds.split_by_node`` inside them would
    think every rank is rank 0 and all ranks would read the same shards.
    """
    if node is None:
        yield from wds.split_by_node(src)
        return
    rank, world_size = node
    yield from islice(src, rank, None, world_size)


def epoch_batches_per_worker(
    epoch_samples: int, batch_size: int, world_size: int, num_workers: int
) -> int:
    """Batches each worker of each rank yields per training epoch of ``epoch_samples``."""
    readers = world_size * max(1, num_workers)
    return max(1, math.ceil(epoch_samples / (batch_size * readers)))


class ShardStream(IterableDataset):
    """An ``IterableDataset`` of collated batches streamed from WebDataset shards.

    Use it with ``DataLoader(batch_size=None)`` (``EpochDataLoader`` below): batching, shuffling
    and augmentation happen inside the workers.

    Args:
        urls: shard paths.
        specs: the modalities to load, in batch order.
        source: stored side in pixels of full-resolution maps (the manifest resolution).
        transform: the aligned transform (``AlignedTransform(size, train=...)``).
        batch_size: samples per batch.
        train: resampled infinite stream with shuffling (True) or one ordered pass (False).
        shuffle_buffer: samples held by the shuffle buffer (training).
        batches_per_worker: epoch length in batches per worker (training; required there).
        shard_sizes: samples per shard (from the manifest), to detect truncated shards and for
            ``len`` of evaluation streams.
        num_workers: DataLoader workers reading this stream (for ``len``).
        on_error: ``"skip"`` (log, count, continue) or ``"raise"``.
        seed: base seed; each (rank, worker, epoch) derives its own generator from it.
        cache_bytes: training streams keep up to this many bytes of raw shard data in each
            worker's memory (``ShardCache``), so a small dataset is parsed once per worker
            rather than once per pass; 0 turns it off. With non-persistent workers the cache
            lasts one epoch.
    """

    def __init__(
        self,
        urls: Sequence[str],
        specs: Mapping[str, ModalitySpec],
        source: int,
        transform: AlignedTransform,
        batch_size: int,
        *,
        train: bool,
        shuffle_buffer: int = 1000,
        batches_per_worker: int | None = None,
        shard_sizes: Sequence[int] | None = None,
        num_workers: int = 0,
        on_error: OnError = "skip",
        seed: int = 0,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("ShardStream needs at least one shard")
        if train and batches_per_worker is None:
            raise ValueError("a training stream needs batches_per_worker (the epoch length)")
        self.urls = [str(u) for u in urls]
        self.specs = dict(specs)
        self.source = source
        self.transform = transform
        self.batch_size = batch_size
        self.train = train
        self.shuffle_buffer = shuffle_buffer
        self.batches_per_worker = batches_per_worker
        self.shard_sizes = list(shard_sizes) if shard_sizes is not None else None
        self.num_workers = num_workers
        self.on_error: OnError = on_error
        self.seed = seed
        self.cache_bytes = cache_bytes
        # Empty here; every worker fills its own copy and keeps it across its iterations.
        self._cache = ShardCache(cache_bytes) if cache_bytes else None
        #: Bumped by ``EpochDataLoader`` in the main process before each epoch (fresh workers get
        #: a copy of this object, so the epoch must live here for their seeds to change).
        self.epoch = 0
        # Bumped by every ``__iter__`` in this process (persistent workers keep their copy).
        self._iterations = 0
        #: (rank, world_size) captured in the main process by ``EpochDataLoader``.
        self.node: tuple[int, int] | None = None

    def _rank(self) -> tuple[int, int]:
        """(rank, world_size): as captured by ``EpochDataLoader``, else asked from torch."""
        if self.node is not None:
            return self.node
        rank, world_size, _, _ = _worker_info()
        return rank, world_size

    def _seed(self) -> int:
        rank, _ = self._rank()
        _, _, worker, _ = _worker_info()
        self._iterations += 1
        sequence = np.random.SeedSequence([self.seed, rank, worker, self.epoch, self._iterations])
        return int(sequence.generate_state(1)[0])

    def _expected(self) -> dict[str, int] | None:
        if self.shard_sizes is None:
            return None
        return dict(zip(self.urls, self.shard_sizes, strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield collated batches (see ``collate``) with ``__key__`` and ``__skipped__``."""
        tally = ErrorTally(self.on_error)
        if self.train:
            seed = self._seed()
            rng = np.random.default_rng(seed)
            # Each worker of each rank draws shards independently from its own seed.
            shards: Iterable[Mapping[str, Any]] = wds.ResampledShards(
                self.urls, seed=seed, deterministic=True
            )
            raws: Iterable[Mapping[str, Any]] = read_shards(
                shards, tally, self._expected(), self._cache
            )
            if self.shuffle_buffer > 1:
                initial = min(self.shuffle_buffer, max(self.batch_size, 100))
                shuffle = wds.shuffle(self.shuffle_buffer, initial, rng=random.Random(seed))
                raws = shuffle(iter(raws))
        else:
            rng = None
            shards = wds.split_by_worker(_split_by_node(wds.SimpleShardList(self.urls), self.node))
            raws = read_shards(shards, tally, self._expected())
        samples = self.process(raws, rng, tally)
        batches = batch_samples(samples, self.collate, self.batch_size, tally, not self.train)
        if self.train:
            batches = islice(batches, self.batches_per_worker)
        yield from batches

    def process(
        self,
        raws: Iterable[Mapping[str, Any]],
        rng: np.random.Generator | None,
        tally: ErrorTally,
    ) -> Iterator[dict[str, Any]]:
        """Raw samples -> ready samples (decode, validate, aligned crop); subclasses change it.

        Args:
            raws: raw WebDataset samples.
            rng: the worker's generator (None for evaluation streams).
            tally: where bad samples are counted.
        """
        return process_samples(raws, self.specs, self.source, self.transform, rng, tally)

    def collate(self, samples: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Samples -> one batch (each kind's ``collate``)."""
        return collate(samples, self.specs)

    def __len__(self) -> int:
        """Batches per epoch over all workers of this rank (an upper bound for evaluation)."""
        workers = max(1, self.num_workers)
        if self.train:
            assert self.batches_per_worker is not None
            return self.batches_per_worker * workers
        rank, world_size = self._rank()
        sizes = self.shard_sizes or [0] * len(self.urls)
        mine = sizes[rank::world_size] if world_size > 1 else sizes
        return sum(math.ceil(sum(mine[w::workers]) / self.batch_size) for w in range(workers))


class EpochDataLoader(DataLoader):
    """A ``DataLoader`` that tells its ``ShardStream`` which epoch starts and which rank it is on.

    Without the epoch, non-persistent workers would receive a fresh copy of the dataset each epoch
    and draw the same shards, shuffles and crops every epoch. The rank is read here, in the main
    process, because workers started with spawn/forkserver cannot see the process group.
    """

    def __iter__(self) -> Any:
        if isinstance(self.dataset, ShardStream):
            self.dataset.epoch += 1
            # Captured here, in the main process, where torch.distributed is initialized.
            rank, world_size, _, _ = _worker_info()
            self.dataset.node = (rank, world_size)
        return super().__iter__()


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch unchanged (the stream already collated it)."""
    return batch


def make_loader(
    stream: ShardStream,
    num_workers: int,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> EpochDataLoader:
    """A DataLoader over a ``ShardStream`` (``batch_size=None``: the stream batches itself)."""
    return EpochDataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        # With batch_size=None, DataLoader would walk every batch with default_convert (~0.1 ms
        # per sample for the JSON-like modalities) only to find it already made of tensors.
        collate_fn=_as_is,
        # Two batches in flight per worker (the default) are enough: a batch is ~10 ms of work.
        prefetch_factor=2 if num_workers > 0 else None,
    )
