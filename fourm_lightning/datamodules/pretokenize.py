"""Pre-tokenization: raw shards + tokenizer checkpoints -> token shards with K aligned crops each.

4M pretraining never runs a tokenizer: it reads tokens written once, here. Every sample gets
``num_crops`` random-resized crops (one crop for evaluation splits: the full frame), each applied
to every modality at once through ``kind.augment``, so the tokens of all modalities of one crop
describe the same pixels. A token dataset folder mirrors the raw one::

    manifest.json                 format "fourm-lightning-tokens": source, tokenizers, crops, shards
    train/shard-000000.tar        one sample per key, members below
    train/shard-000000.tar.json   written after the shard: it is complete (resume skips it)

Members of one sample (``<key>.<name>``):

- ``crops.json``: the K crops (``Crop`` fields), so anything derived later can redo the same crop;
- ``tok_<modality>.npy``: int16 (or int32 for vocabularies over 32767) tokens, shape (K, ...)
  as the tokenizer's ``encode`` gives them per sample ((K, h, w) for image-like maps, (K, T) for
  vectors);
- raw modalities kept as they are needed by the model (RGB pixels for the pixel input, text, boxes,
  metadata): spatial ones once per crop as ``<modality>.<k>.<ext>`` (the augmented value written
  back with ``kind.to_stored``), others once as ``<modality>.<ext>``.

Tokenizers run under bf16 autocast by default (``precision="bf16"``): they were validated that
way (``precision: bf16-mixed``), and it is more than twice as fast end to end on this CPU.
``precision="32"`` gives the float32 tokens. Token ids differ between the two wherever a codebook
holds near-duplicate codes (on the built-in validation split 37% of semseg ids agree, 97% of RGB
ids), while the decoded maps barely do (99.9% of semseg pixels agree), so the precision is part
of the settings a resumed run must match.

Depth tokens decode to *relative* depth (the tokenizer standardises each image), exactly what the
tokenizer's own ``decode(tokens)`` gives without a reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourm_lightning.datamodules.shards import (
    MANIFEST_NAME,
    ShardWriter,
    decode_sample,
    file_sha256,
    iter_raw_samples,
    load_sample,
    path_sha256,
    read_manifest,
    select_specs,
)
from fourm_lightning.datamodules.transforms import apply_crop, full_crop, sample_crop
from fourm_lightning.modalities import Crop, DataError, ModalitySpec

#: Name and version of the token dataset layout.
TOKENS_FORMAT = "fourm-lightning-tokens"
TOKENS_FORMAT_VERSION = 1
#: Suffix of the per-shard completion record.
DONE_SUFFIX = ".json"
#: Raw modalities kept by default when the source has them: the pixel input and the sequences.
DEFAULT_KEEP_RAW = ("rgb", "caption", "det", "metadata", "color_palette")
#: Precisions of the tokenizers' forward pass: bf16 autocast or float32.
PRECISIONS = ("bf16", "32")
#: Splits evaluated on the full frame (one crop, no flip) rather than on random crops.
EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class TokenizerRecord:
    """What a token dataset records about the tokenizer of one modality.

    Args:
        modality: modality name.
        path: where the tokenizer was loaded from (as given).
        sha256: hash of the checkpoint file (of ``config.json`` + weights for export folders).
        vocab_size: number of distinct tokens.
        token_shape: tokens of one crop, e.g. ``[8, 8]`` (empty for variable-length tokens).
        dtype: numpy dtype of ``tok_<modality>.npy``.
    """

    modality: str
    path: str
    sha256: str
    vocab_size: int
    token_shape: list[int]
    dtype: str


@dataclass(frozen=True)
class TokenManifest:
    """The ``manifest.json`` of a token dataset.

    Args:
        root: the token dataset folder (not stored in the JSON).
        source: the raw dataset folder and the SHA-256 of its manifest.
        resolution: side in pixels of the crops the tokens describe.
        num_crops: crops per sample, by split.
        seed: seed of the crops.
        tokenizers: modality -> its tokenizer record.
        raw: modality -> spec of each raw modality kept.
        splits: split -> list of ``{"path", "num_samples", "sha256"}``.
        precision: the tokenizers' forward pass, one of ``PRECISIONS``.
    """

    root: Path
    source: dict[str, str]
    resolution: int
    num_crops: dict[str, int]
    seed: int
    tokenizers: dict[str, TokenizerRecord]
    raw: dict[str, ModalitySpec]
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    precision: str = "bf16"

    def num_samples(self, split: str) -> int:
        """Samples of ``split`` (0 for an unknown split)."""
        return sum(int(shard["num_samples"]) for shard in self.splits.get(split, ()))

    def shard_paths(self, split: str) -> list[Path]:
        """Absolute shard paths of ``split``."""
        return [self.root / shard["path"] for shard in self.splits.get(split, ())]

    def to_json(self) -> dict[str, Any]:
        """The JSON content (sorted, no timestamps)."""
        return {
            "format": {"name": TOKENS_FORMAT, "version": TOKENS_FORMAT_VERSION},
            "source": self.source,
            "resolution": self.resolution,
            "num_crops": self.num_crops,
            "seed": self.seed,
            "tokenizers": {name: asdict(record) for name, record in self.tokenizers.items()},
            "raw": [spec.to_config() for spec in self.raw.values()],
            "splits": self.splits,
            "precision": self.precision,
        }


def read_token_manifest(path: str | os.PathLike[str]) -> TokenManifest:
    """Read a token dataset's manifest (the folder or the file itself).

    Raises:
        FileNotFoundError: no manifest there.
        ValueError: the file is not a token dataset manifest (names the file).
    """
    file = Path(path)
    file = file / MANIFEST_NAME if file.is_dir() else file
    if not file.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {file.parent}; make a token dataset with "
            "`fourm-lightning data pretokenize`"
        )
    data = json.loads(file.read_text(encoding="utf-8"))
    fmt = data.get("format") or {}
    if fmt.get("name") != TOKENS_FORMAT or int(fmt.get("version", 99)) > TOKENS_FORMAT_VERSION:
        raise ValueError(
            f"{file}: not a {TOKENS_FORMAT} v{TOKENS_FORMAT_VERSION} manifest (format {fmt}); "
            "a raw dataset is read with read_manifest"
        )
    raw = [ModalitySpec.from_config(item) for item in data["raw"]]
    return TokenManifest(
        root=file.parent,
        source=data["source"],
        resolution=int(data["resolution"]),
        num_crops={k: int(v) for k, v in data["num_crops"].items()},
        seed=int(data["seed"]),
        tokenizers={k: TokenizerRecord(**v) for k, v in data["tokenizers"].items()},
        raw={spec.name: spec for spec in raw},
        splits=data["splits"],
        precision=str(data.get("precision", "32")),
    )


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------


def sample_crops(
    seed: int, split: str, index: int, source: int, size: int, num_crops: int
) -> list[Crop]:
    """The crops of one sample: a pure function of (seed, split, index), whatever the batching.

    Evaluation splits (``val``, ``test``) get one full-frame crop; others ``num_crops`` random
    resized crops with flips.
    """
    if split in EVAL_SPLITS:
        return [full_crop(size)]
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    return [sample_crop(rng, source, size) for _ in range(num_crops)]


def _crop_json(crops: Sequence[Crop]) -> bytes:
    return json.dumps([asdict(c) for c in crops], sort_keys=True).encode()


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_tokens(tokenizer: Any, batch: Any, precision: str = "bf16") -> torch.Tensor:
    """``tokenizer.encode(batch)`` without autograd, under bf16 autocast or in float32.

    Args:
        tokenizer: any tokenizer of the common API.
        batch: what its ``encode`` takes, e.g. (B, C, H, W) maps or (B, D) vectors.
        precision: one of ``PRECISIONS``.

    Returns:
        The tokens, e.g. (B, h, w) or (B, T) int64.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(getattr(tokenizer, "device", "cpu"))
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
    ):
        return tokenizer.encode(batch)


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Job:
    """Everything one shard needs (shared by all shards of a run)."""

    specs: dict[str, ModalitySpec]  # every modality read from the source
    tokenizers: dict[str, Any]
    records: dict[str, TokenizerRecord]
    raw: dict[str, ModalitySpec]
    source_resolution: int
    resolution: int
    num_crops: int
    seed: int
    batch_size: int
    precision: str


def _tokenize_chunk(job: _Job, split: str, samples: list[dict[str, Any]]) -> list[dict[str, bytes]]:
    """Members of each sample of a chunk (see the module docstring)."""
    crops_per_sample = []
    augmented: list[list[dict[str, Any]]] = []  # [sample][crop] -> modality -> sample form
    for sample in samples:
        index = int(sample["__key__"])
        crops = sample_crops(
            job.seed, split, index, job.source_resolution, job.resolution, job.num_crops
        )
        tensors = {n: job.specs[n].kind.to_tensor(sample[n]) for n in job.specs}
        augmented.append([apply_crop(tensors, job.specs, crop) for crop in crops])
        crops_per_sample.append(crops)

    tokens: dict[str, list[np.ndarray]] = {}
    for name, tokenizer in job.tokenizers.items():
        kind = job.specs[name].kind
        values = [views[name] for per_sample in augmented for views in per_sample]
        encoded = encode_tokens(tokenizer, kind.collate(values), job.precision).cpu().numpy()
        dtype = np.dtype(job.records[name].dtype)
        # Split the flat (sum of K_i, ...) batch back into one (K_i, ...) array per sample.
        bounds = np.cumsum([len(c) for c in crops_per_sample])[:-1]
        tokens[name] = [part.astype(dtype) for part in np.split(encoded, bounds)]

    out = []
    for i, (sample, crops) in enumerate(zip(samples, crops_per_sample, strict=True)):
        members: dict[str, bytes] = {"crops.json": _crop_json(crops)}
        for name in job.tokenizers:
            members[f"tok_{name}.npy"] = _npy_bytes(tokens[name][i])
        for name, spec in job.raw.items():
            kind = spec.kind
            if kind.spatial:
                for k, views in enumerate(augmented[i]):
                    value = kind.to_stored(views[name])
                    members[f"{name}.{k}.{kind.extension}"] = kind.encode(value)
            else:
                members[spec.filename] = kind.encode(sample[name])
        out.append(members)
    return out


def _write_token_shard(job: _Job, split: str, source: Path, target: Path, bar: Any) -> dict:
    """Tokenize one raw shard into ``target``; returns its manifest entry."""
    raw_samples = iter_raw_samples(source)
    writer = ShardWriter(target, [])
    count = 0
    try:
        for chunk in _chunks(raw_samples, job.batch_size):
            decoded = []
            for raw in chunk:
                try:
                    decoded.append(decode_sample(raw, job.specs, job.source_resolution))
                except DataError as error:
                    # A bad source sample stops the run with its file and key: a token dataset
                    # with silent holes would bias every later stage.
                    raise error.located(file=str(source)) from error
            for raw, members in zip(chunk, _tokenize_chunk(job, split, decoded), strict=True):
                writer.write_encoded(raw["__key__"], members)
            count += len(chunk)
            bar.update(len(chunk))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"num_samples": count, "sha256": file_sha256(target)}


def _fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def pretokenize_dataset(
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tokenizers: Mapping[str, str | os.PathLike[str]],
    num_crops: int = 4,
    keep_raw: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    resolution: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    precision: str = "bf16",
    progress: bool = True,
) -> TokenManifest:
    """Tokenize a raw dataset with trained tokenizers into a token dataset (resumable per shard).

    Args:
        data_dir: the raw dataset folder (with ``manifest.json``).
        out: the token dataset folder. Shards finished by an earlier run with the same settings
            are kept (resume); a folder made with other settings is an error.
        tokenizers: modality -> tokenizer checkpoint or export folder (``load_tokenizer``).
        num_crops: random crops per training sample (evaluation splits get the full frame).
        keep_raw: raw modalities to carry over (default: those of ``DEFAULT_KEEP_RAW`` the
            source has); a modality can be tokenized and kept raw (RGB: pixel input, token
            target).
        splits: splits to process (default: all of the source).
        resolution: side in pixels of the crops (default: the source resolution).
        batch_size: samples tokenized together (times their crops).
        seed: seed of the crops.
        precision: the tokenizers' forward pass: ``"bf16"`` autocast or ``"32"`` (float32).
        progress: show a progress bar.

    Returns:
        The written manifest.

    Raises:
        ValueError: an unknown modality or split, a tokenizer for another modality or kind, or
            an output folder made with other settings.
        DataError: a corrupt source sample (names the file, key and modality).
    """
    from tqdm.auto import tqdm

    from fourm_lightning.tokenizers.loading import load_tokenizer

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if num_crops < 1 or batch_size < 1:
        raise ValueError(f"num_crops and batch_size must be >= 1, got {num_crops}, {batch_size}")
    data_dir, out = Path(data_dir), Path(out)
    source = read_manifest(data_dir)
    size = resolution or source.resolution
    if not tokenizers:
        raise ValueError("no tokenizers given: pass modality -> checkpoint for at least one")
    tokenized = select_specs(source.specs, list(tokenizers))
    if keep_raw is None:
        keep_raw = [n for n in DEFAULT_KEEP_RAW if n in source.specs]
    # A modality may be both: 4M reads RGB pixels as its input and predicts RGB tokens.
    raw = select_specs(source.specs, keep_raw)

    loaded: dict[str, Any] = {}
    records: dict[str, TokenizerRecord] = {}
    split_names = list(splits) if splits is not None else list(source.splits)
    unknown = [s for s in split_names if s not in source.splits]
    if unknown:
        raise ValueError(f"unknown splits {unknown} in {data_dir}; it has {list(source.splits)}")
    first = next((s for s in split_names if source.num_samples(s)), None)
    if first is None:
        raise ValueError(f"the splits {split_names} of {data_dir} hold no samples")
    probe = load_sample(data_dir, first, 0, list(tokenized))
    for name, path in tokenizers.items():
        tokenizer = load_tokenizer(path, modality=name)
        spec = getattr(tokenizer, "spec", None)
        if spec is not None and spec.kind != source.specs[name].kind:
            raise ValueError(
                f"modality {name!r}: tokenizer {path} was trained for kind {spec.kind!r}, the "
                f"dataset {data_dir} has {source.specs[name].kind!r}"
            )
        # The shape of one crop's tokens, from a real encode (checks the tokenizer takes this
        # resolution before hours of work, and records what readers must find).
        kind = source.specs[name].kind
        value = kind.augment(kind.to_tensor(probe[name]), full_crop(size))
        try:
            shape = list(encode_tokens(tokenizer, kind.collate([value]), precision).shape[1:])
        except ValueError as error:
            raise ValueError(
                f"modality {name!r}: tokenizer {path} cannot encode {size}x{size} crops: {error}"
            ) from error
        loaded[name] = tokenizer
        records[name] = TokenizerRecord(
            modality=name,
            path=str(path),
            sha256=path_sha256(Path(path)),
            vocab_size=int(tokenizer.vocab_size),
            token_shape=shape,
            dtype=_token_dtype(int(tokenizer.vocab_size)).name,
        )

    settings = {
        "source_manifest": file_sha256(data_dir / MANIFEST_NAME),
        "tokenizers": {n: r.sha256 for n, r in records.items()},
        "raw": sorted(raw),
        "resolution": size,
        "num_crops": num_crops,
        "seed": seed,
        "precision": precision,
        "format": TOKENS_FORMAT_VERSION,
    }
    fingerprint = _fingerprint(settings)
    _check_output_folder(out, fingerprint)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(
        json.dumps({**settings, "fingerprint": fingerprint}, indent=2, sort_keys=True) + "\n"
    )

    job = _Job(
        specs={**tokenized, **raw},
        tokenizers=loaded,
        records=records,
        raw=raw,
        source_resolution=source.resolution,
        resolution=size,
        num_crops=num_crops,
        seed=seed,
        batch_size=batch_size,
        precision=precision,
    )
    total = sum(source.num_samples(s) for s in split_names)
    bar = tqdm(total=total, unit="sample", desc="pretokenizing", disable=not progress)
    entries: dict[str, list[dict[str, Any]]] = {}
    done_samples = 0
    start = time.perf_counter()
    try:
        for split in split_names:
            entries[split] = []
            for shard in source.splits[split]:
                target = out / shard.path
                record_file = target.with_name(target.name + DONE_SUFFIX)
                entry = _finished_entry(target, record_file, fingerprint)
                if entry is None:
                    entry = _write_token_shard(job, split, source.root / shard.path, target, bar)
                    done_samples += entry["num_samples"]
                    record_file.write_text(
                        json.dumps({**entry, "fingerprint": fingerprint}, sort_keys=True) + "\n"
                    )
                else:
                    bar.update(entry["num_samples"])
                if entry["num_samples"] != shard.num_samples:
                    raise DataError(
                        f"tokenized {entry['num_samples']} samples, the source manifest says "
                        f"{shard.num_samples}",
                        file=str(source.root / shard.path),
                    )
                entries[split].append({"path": shard.path, **entry})
    finally:
        bar.close()
    elapsed = time.perf_counter() - start

    manifest = TokenManifest(
        root=out,
        source={"path": str(data_dir), "manifest_sha256": settings["source_manifest"]},
        resolution=size,
        num_crops={s: 1 if s in EVAL_SPLITS else num_crops for s in split_names},
        seed=seed,
        tokenizers=records,
        raw=raw,
        splits=entries,
        precision=precision,
    )
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out / MANIFEST_NAME)
    if progress and done_samples:
        crops = sum(
            source.num_samples(s) * (1 if s in EVAL_SPLITS else num_crops) for s in split_names
        )
        print(
            f"pretokenized {done_samples} samples in {elapsed:.1f} s "
            f"({done_samples / elapsed:.0f} samples/s; {crops} crops in total) -> {out}"
        )
    return manifest


def _finished_entry(target: Path, record_file: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest entry of a shard finished by an earlier run with these settings, else None."""
    if not (target.is_file() and record_file.is_file()):
        return None
    record = json.loads(record_file.read_text())
    if record.get("fingerprint") != fingerprint or record.get("sha256") != file_sha256(target):
        return None
    return {"num_samples": int(record["num_samples"]), "sha256": record["sha256"]}


def _check_output_folder(out: Path, fingerprint: str) -> None:
    settings = out / "settings.json"
    if settings.is_file():
        previous = json.loads(settings.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise ValueError(
                f"{out} holds a token dataset made with other settings (source, tokenizers, crops "
                "or resolution); choose another --out or delete it"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a token dataset; choose another --out")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def decode_token_sample(raw: Mapping[str, Any], manifest: TokenManifest) -> dict[str, Any]:
    """Decode one sample of a token shard.

    Args:
        raw: ``{"__key__", "__url__", member name: bytes}`` as ``iter_raw_samples`` yields.
        manifest: the token dataset's manifest.

    Returns:
        ``{"__key__", "crops": list[Crop], "tok_<m>": int64 (K, ...) tensor per tokenized
        modality, "<raw m>": list of K stored-form values (spatial) or one value}``.

    Raises:
        DataError: a member is missing or unreadable (names the file, key and modality).
    """
    where = {"file": str(raw.get("__url__")), "key": str(raw.get("__key__"))}
    out: dict[str, Any] = {"__key__": raw["__key__"]}
    try:
        crops = [Crop(**c) for c in json.loads(raw["crops.json"])]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"no readable crops.json ({error})", **where) from error
    out["crops"] = crops
    for name, record in manifest.tokenizers.items():
        member = f"tok_{name}.npy"
        if member not in raw:
            raise DataError(f"missing {member}", modality=name, **where)
        array = np.load(io.BytesIO(raw[member]), allow_pickle=False)
        if array.shape[0] != len(crops) or (
            record.token_shape and list(array.shape[1:]) != record.token_shape
        ):
            raise DataError(
                f"tokens of shape {array.shape}, expected ({len(crops)}, "
                f"{', '.join(map(str, record.token_shape))})",
                modality=name,
                **where,
            )
        out[f"tok_{name}"] = torch.from_numpy(array.astype(np.int64))
    for name, spec in manifest.raw.items():
        kind = spec.kind
        try:
            if kind.spatial:
                out[name] = [
                    kind.decode(raw[f"{name}.{k}.{kind.extension}"]) for k in range(len(crops))
                ]
            else:
                out[name] = kind.decode(raw[spec.filename])
        except KeyError as error:
            raise DataError(f"missing member {error}", modality=name, **where) from error
    return out


def iter_token_samples(data_dir: str | os.PathLike[str], split: str) -> Iterator[dict[str, Any]]:
    """Decoded samples of one split of a token dataset, in stored order."""
    manifest = read_token_manifest(data_dir)
    for path in manifest.shard_paths(split):
        for raw in iter_raw_samples(path):
            yield decode_token_sample(raw, manifest)


__all__ = [
    "TokenManifest",
    "TokenizerRecord",
    "decode_token_sample",
    "iter_token_samples",
    "pretokenize_dataset",
    "read_token_manifest",
    "sample_crops",
]
