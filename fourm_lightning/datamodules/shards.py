"""WebDataset shards and the dataset manifest: deterministic writing, validated reading.

A dataset folder looks like this (DESIGN.md section 4)::

    manifest.json
    train/shard-000000.tar  train/shard-000001.tar ...
    val/shard-000000.tar ...

One sample is one key (the 8-digit, zero-padded sample index) with one tar member per modality,
named ``<key>.<spec.filename>`` (``00000012.depth.npy``) and holding the bytes of
``spec.kind.encode``. Everything here goes through kind methods; nothing branches on a modality
name or kind type.

Writing is deterministic: members carry mtime 0, uid/gid 0, a fixed owner name and mode, and come in
a fixed order, so the same samples always give byte-identical tar files. ``manifest.json`` is
written with sorted keys and no timestamps for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fourm_lightning.modalities import DataError, ModalitySpec, specs_by_name

#: Name and version of this on-disk layout, recorded in every manifest.
FORMAT_NAME = "fourm-lightning-webdataset"
FORMAT_VERSION = 1
#: File name of the manifest inside a dataset folder.
MANIFEST_NAME = "manifest.json"
#: Owner name written into every tar member (a fixed value keeps shards byte-identical).
_TAR_OWNER = "fourm"
_TAR_MODE = 0o444


def sample_key(index: int) -> str:
    """The WebDataset key of sample ``index``: 8 digits, zero-padded (``12 -> "00000012"``)."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return f"{index:08d}"


def shard_name(split: str, number: int) -> str:
    """The dataset-relative path of shard ``number`` of ``split`` (``train/shard-000003.tar``)."""
    return f"{split}/shard-{number:06d}.tar"


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def encode_sample(
    sample: Mapping[str, Any], specs: Sequence[ModalitySpec], resolution: int | None = None
) -> dict[str, bytes]:
    """Encode one sample's stored-form values into tar member payloads.

    Args:
        sample: modality name -> stored-form value (see ``fourm_lightning.modalities.kinds``).
        specs: the modalities to write; every one must be present in ``sample``.
        resolution: the expected side of full-resolution maps, if known (checked before writing).

    Returns:
        ``{spec.filename: bytes}`` for every spec, e.g. ``{"depth.npy": b"..."}``.

    Raises:
        DataError: a modality is missing or its value does not validate.
    """
    out: dict[str, bytes] = {}
    for spec in specs:
        if spec.name not in sample:
            raise DataError(
                f"sample has no value for modality {spec.name!r} (has {sorted(sample)})",
                modality=spec.name,
            )
        value = sample[spec.name]
        try:
            spec.kind.validate(value, resolution)
            out[spec.filename] = spec.kind.encode(value)
        except DataError as error:
            raise error.located(modality=spec.name) from error
    return out


class ShardWriter:
    """Write samples into one deterministic WebDataset tar file.

    The tar is written to ``<path>.tmp`` and renamed on ``close``, so a crash never leaves a file
    that looks complete. Use it as a context manager::

        with ShardWriter(path, specs) as writer:
            writer.write(sample_key(i), sample)

    Args:
        path: the tar file to create.
        specs: the modalities every sample holds, written in this order.
        resolution: the expected side of full-resolution maps (validated before writing).
    """

    def __init__(
        self, path: Path, specs: Sequence[ModalitySpec], resolution: int | None = None
    ) -> None:
        self.path = Path(path)
        self.specs = tuple(specs)
        self.resolution = resolution
        self.num_samples = 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        # USTAR: no pax headers, which could otherwise carry timestamps or host-dependent fields.
        self._tar = tarfile.open(  # noqa: SIM115 - closed in close()
            fileobj=self._file, mode="w|", format=tarfile.USTAR_FORMAT
        )
        self._keys: set[str] = set()

    def write(self, key: str, sample: Mapping[str, Any]) -> None:
        """Encode and append one sample.

        Args:
            key: the sample key (``sample_key(index)``); no dots, unique within the shard.
            sample: modality name -> stored-form value.
        """
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/'")
        if key in self._keys:
            raise ValueError(f"sample key {key!r} written twice to {self.path}")
        self._keys.add(key)
        try:
            members = encode_sample(sample, self.specs, self.resolution)
        except DataError as error:
            raise error.located(key=key, file=str(self.path)) from error
        self.write_encoded(key, members)

    def write_encoded(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append already-encoded members ``{filename: bytes}`` of one sample, in the given order.

        This is also how tests write deliberately broken samples.
        """
        for filename, payload in members.items():
            info = tarfile.TarInfo(f"{key}.{filename}")
            info.size = len(payload)
            # Fixed metadata: the same bytes in give the same tar out, on any machine, any day.
            info.mtime = 0
            info.mode = _TAR_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = _TAR_OWNER
            self._tar.addfile(info, io.BytesIO(payload))
        self.num_samples += 1

    def close(self) -> None:
        """Finish the tar and move it into place."""
        if self._file.closed:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop a partly written shard."""
        if not self._file.closed:
            # Close the tar stream first: a stream left open would try to flush into a closed file
            # when it is garbage-collected.
            with contextlib.suppress(Exception):
                self._tar.close()
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_sha256(path: Path) -> str:
    """Hash of a file, or of a folder's files (relative names and contents, sorted by name)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode())
        digest.update(file_sha256(child).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a split, as listed in the manifest.

    Args:
        path: path relative to the dataset folder (``train/shard-000000.tar``).
        num_samples: samples in the shard.
        sha256: hex SHA-256 of the tar file ("" if not recorded).
    """

    path: str
    num_samples: int
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {"path": self.path, "num_samples": self.num_samples, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    """What a dataset folder holds: modalities, resolution, splits and provenance.

    Args:
        root: the dataset folder (not stored in the JSON; set by ``read_manifest``).
        resolution: side in pixels of every full-resolution map.
        specs: modality name -> spec, in the stored order.
        splits: split name -> its shards, in order.
        generator: provenance (``name``, ``version``, ``seed``, ``config``) of whatever made it.
        class_names: named vocabularies of the dataset (e.g. ``{"semseg": [...], "color": [...]}``).
    """

    root: Path
    resolution: int
    specs: dict[str, ModalitySpec]
    splits: dict[str, tuple[ShardInfo, ...]]
    generator: dict[str, Any] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The generator seed, if the manifest records one."""
        return self.generator.get("seed")

    def num_samples(self, split: str) -> int:
        """Samples in ``split`` (0 if the split does not exist)."""
        return sum(shard.num_samples for shard in self.splits.get(split, ()))

    def shards(self, split: str) -> list[str]:
        """Dataset-relative shard paths of ``split``, in order (empty for an unknown split)."""
        return [shard.path for shard in self.splits.get(split, ())]

    def shard_paths(self, split: str) -> list[Path]:
        """Absolute shard paths of ``split``."""
        return [self.root / path for path in self.shards(split)]

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` content (JSON-safe, no timestamps)."""
        return {
            "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
            "generator": self.generator,
            "resolution": self.resolution,
            "modalities": [spec.to_config() for spec in self.specs.values()],
            "splits": {
                name: {
                    "num_samples": self.num_samples(name),
                    "shards": [shard.to_json() for shard in shards],
                }
                for name, shards in self.splits.items()
            },
            "class_names": self.class_names,
        }


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``manifest.root`` (atomically: temp file, then rename).

    Returns:
        The manifest path.
    """
    path = Path(manifest.root) / MANIFEST_NAME
    text = json.dumps(manifest.to_json(), sort_keys=True, indent=2) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a dataset's ``manifest.json``.

    Args:
        path: the dataset folder, or the manifest file itself.

    Returns:
        The parsed manifest, with specs rebuilt by ``ModalitySpec.from_config``.

    Raises:
        FileNotFoundError: there is no manifest (the message says how to make a dataset).
        DataError: the manifest is not valid JSON or lacks a required field (names the file).
    """
    path = Path(path)
    file = path if path.suffix == ".json" else path / MANIFEST_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"no dataset manifest at {file}; generate the built-in dataset with "
            f"`fourm-lightning data synth --out {file.parent}` (a folder without a manifest is "
            "incomplete: the manifest is written last)"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        fmt = data["format"]
        if fmt.get("name") != FORMAT_NAME or int(fmt.get("version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"unsupported format {fmt!r} (this code reads {FORMAT_NAME} <= {FORMAT_VERSION})"
            )
        specs = specs_by_name(ModalitySpec.from_config(item) for item in data["modalities"])
        splits = {
            name: tuple(
                ShardInfo(str(s["path"]), int(s["num_samples"]), str(s.get("sha256", "")))
                for s in split["shards"]
            )
            for name, split in data["splits"].items()
        }
        return Manifest(
            root=file.parent,
            resolution=int(data["resolution"]),
            specs=specs,
            splits=splits,
            generator=dict(data.get("generator") or {}),
            class_names={k: list(v) for k, v in (data.get("class_names") or {}).items()},
        )
    except DataError as error:
        raise error.located(file=str(file)) from error
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        # json.JSONDecodeError is a ValueError; KeyError/TypeError mean a missing or mistyped field.
        raise DataError(f"invalid manifest: {type(error).__name__}: {error}", file=str(file)) from (
            error
        )


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _member(raw: Mapping[str, Any], spec: ModalitySpec) -> bytes | None:
    # WebDataset lower-cases extensions when it groups tar members into samples.
    value = raw.get(spec.filename)
    if value is None:
        value = raw.get(spec.filename.lower())
    return value


def decode_sample(
    raw: Mapping[str, Any],
    specs: Mapping[str, ModalitySpec],
    resolution: int | None = None,
) -> dict[str, Any]:
    """Decode and validate the requested modalities of one raw WebDataset sample.

    Args:
        raw: ``{"__key__": ..., "__url__": ..., "<filename>": bytes, ...}`` as WebDataset groups a
            tar's members (``"depth.npy": b"..."``).
        specs: the modalities to decode, by name (others in ``raw`` are ignored).
        resolution: the expected side of full-resolution maps, if known.

    Returns:
        ``{name: stored-form value}`` for every requested modality, plus ``"__key__"`` and
        ``"__url__"``.

    Raises:
        DataError: a requested modality is absent, undecodable or invalid; the error names the
            shard file (``raw["__url__"]``), the key and the modality.
    """
    key = str(raw.get("__key__"))
    url = str(raw.get("__url__", "<unknown file>"))
    out: dict[str, Any] = {"__key__": key, "__url__": url}
    for name, spec in specs.items():
        data = _member(raw, spec)
        if data is None:
            present = sorted(k for k in raw if not k.startswith("__"))
            raise DataError(
                f"sample has no {spec.filename!r} (has {present})", modality=name, key=key, file=url
            )
        try:
            value = spec.kind.decode(data)
            spec.kind.validate(value, resolution)
        except DataError as error:
            raise error.located(modality=name, key=key, file=url) from error
        except Exception as error:
            # PIL, numpy and json raise their own types on garbage; give them a location too.
            raise DataError(
                f"cannot decode {spec.filename!r}: {type(error).__name__}: {error}",
                modality=name,
                key=key,
                file=url,
            ) from error
        out[name] = value
    return out


def iter_raw_samples(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Read one shard sequentially into raw samples ``{"__key__", "__url__", filename: bytes}``.

    This reader is strict (any tar error propagates); the DataModule streams shards through
    WebDataset with a counting error handler instead.
    """
    url = str(path)
    current: dict[str, Any] | None = None
    with tarfile.open(url, mode="r:") as tar:
        for info in tar:
            if not info.isreg():
                continue
            key, _, filename = os.path.basename(info.name).partition(".")
            if current is not None and key != current["__key__"]:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            handle = tar.extractfile(info)
            assert handle is not None  # regular members always have a payload
            current[filename] = handle.read()
    if current is not None:
        yield current


def iter_samples(
    data_dir: str | os.PathLike[str], split: str, modalities: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Decoded, validated samples of one split, in stored order (stored forms, no augmentation).

    Args:
        data_dir: the dataset folder.
        split: ``train``, ``val``, ...
        modalities: names to decode (default: all in the manifest).

    Yields:
        ``{name: stored-form value, "__key__": str, "__url__": str}``.

    Raises:
        DataError: a sample is bad, or a shard holds fewer samples than the manifest says.
    """
    manifest = read_manifest(data_dir)
    specs = select_specs(manifest.specs, modalities)
    for shard in manifest.splits.get(split, ()):
        path = manifest.root / shard.path
        count = 0
        for raw in iter_raw_samples(path):
            count += 1
            yield decode_sample(raw, specs, manifest.resolution)
        if count != shard.num_samples:
            # tarfile ends quietly at a member boundary; the manifest count catches truncation.
            raise DataError(
                f"shard has {count} samples, the manifest says {shard.num_samples}", file=str(path)
            )


def load_sample(
    data_dir: str | os.PathLike[str],
    split: str,
    index: int,
    modalities: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Random access to one sample by index (stored forms), for figures and notebooks.

    Args:
        data_dir: the dataset folder.
        split: split name.
        index: sample index within the split (0-based, in stored order).
        modalities: names to decode (default: all in the manifest).

    Returns:
        ``{name: stored-form value, "__key__": str, "__url__": str}``.
    """
    manifest = read_manifest(data_dir)
    specs = select_specs(manifest.specs, modalities)
    total = manifest.num_samples(split)
    if not 0 <= index < total:
        raise IndexError(
            f"{split} has {total} samples in {data_dir}; index {index} is out of range"
        )
    offset = index
    for shard in manifest.splits[split]:
        if offset < shard.num_samples:
            break
        offset -= shard.num_samples
    path = manifest.root / shard.path
    with tarfile.open(path, mode="r:") as tar:
        names = tar.getnames()
        # Keys in stored order (dict keeps first-seen order and drops repeats).
        keys = list(dict.fromkeys(os.path.basename(n).partition(".")[0] for n in names))
        key = keys[offset]
        raw: dict[str, Any] = {"__key__": key, "__url__": str(path)}
        for name in names:
            stem, _, filename = os.path.basename(name).partition(".")
            if stem == key:
                handle = tar.extractfile(name)
                if handle is not None:
                    raw[filename] = handle.read()
    return decode_sample(raw, specs, manifest.resolution)


def select_specs(
    specs: Mapping[str, ModalitySpec], names: Iterable[str] | None
) -> dict[str, ModalitySpec]:
    """The specs of ``names`` in the given order (all of ``specs`` for None).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    if names is None:
        return dict(specs)
    names = list(names)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; valid names are {sorted(specs)}")
    if len(set(names)) != len(names):
        raise ValueError(f"modalities listed twice: {names}")
    return {n: specs[n] for n in names}
