"""Fashion-MNIST as a dataset in this project's shard format: modalities ``rgb`` and ``label``.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; MIT licence) has 70,000 grayscale 28x28 images of
10 kinds of clothing: 60,000 for training and 10,000 for testing, as four idx files. Debian ships
them in the package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
``find_fashion_mnist`` finds them, or fetches and unpacks that package without root.

``convert_fashion_mnist`` writes the usual dataset folder (see ``shards``)::

    manifest.json
    train/shard-000000.tar ... shard-000005.tar    the 60,000 training images
    val/shard-000000.tar                           the 10,000 images of the OFFICIAL TEST split

The official test split is named ``val`` so that ``MultimodalDataModule``'s validation, test and
predict loaders all read it (they fall back to ``val``); the manifest records this under
``generator.dataset.splits``. There is no separate validation split: hold one out of ``train`` if
model selection needs one.

Images are stored at their native 28x28, gray replicated to 3 channels (``RGBImage`` PNG), labels
as ``ClassLabel``. ``MultimodalDataModule(data_dir, modalities=["rgb", "label"], resolution=64)``
resizes the images when it crops them, so batches hold ``rgb`` (B, 3, 64, 64) uint8 and
``label`` (B,) int64.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fourm_lightning.datamodules.build import _prepare_folder, is_partial_dataset
from fourm_lightning.datamodules.shards import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardWriter,
    file_sha256,
    read_manifest,
    sample_key,
    shard_name,
    write_manifest,
)
from fourm_lightning.modalities import (
    ClassLabel,
    DataError,
    ModalitySpec,
    RGBImage,
    specs_by_name,
)

logger = logging.getLogger(__name__)

#: Class names in label order (index 0 .. 9), as the dataset's authors list them.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: (images, labels) idx files of each split written, by the split's name in OUR dataset.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: The four files ``find_fashion_mnist`` looks for (each may also be present uncompressed).
REQUIRED_FILES = tuple(name for pair in IDX_FILES.values() for name in pair)
#: Environment variable naming a folder that holds the four files (checked first).
ENV_VAR = "FASHION_MNIST_DIR"
#: The Debian package with the data, the files' folder inside it, and where it installs them.
DEBIAN_PACKAGE = "dataset-fashion-mnist"
PACKAGE_DIR = "usr/share/datasets/fashion-mnist"
SYSTEM_DIR = Path("/") / PACKAGE_DIR
#: Commands used to fetch and unpack the package without root (tests point them elsewhere).
APT_GET = "apt-get"
DPKG_DEB = "dpkg-deb"
#: Side of the stored images (the dataset's native size).
RESOLUTION = 28
#: Pixel mean and std (0..1 scale) of the 60,000 training images, for consumers that normalise.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530
#: Generator name and version recorded in manifests (bump the version when the output changes).
GENERATOR_NAME = "fourm_lightning.datamodules.fashion_mnist"
CONVERTER_VERSION = "1"
HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"

# idx type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _announce(message: str) -> None:
    """Log ``message`` and print it (the CLI does not configure logging)."""
    logger.info(message)
    print(message, flush=True)


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/fourm_lightning``, or ``~/.cache/fourm_lightning``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fourm_lightning"


def fashion_mnist_specs() -> tuple[ModalitySpec, ...]:
    """The two modalities of the converted dataset: ``rgb`` and ``label``."""
    return (
        ModalitySpec(
            "rgb",
            RGBImage(mean=(PIXEL_MEAN,) * 3, std=(PIXEL_STD,) * 3),
            "Fashion-MNIST 28x28 grayscale photo, gray replicated to 3 channels",
        ),
        ModalitySpec(
            "label", ClassLabel(class_names=FASHION_MNIST_CLASSES), "Fashion-MNIST clothing class"
        ),
    )


# ----------------------------------------------------------------------------------------------
# Finding the files
# ----------------------------------------------------------------------------------------------


def idx_path(folder: Path, name: str) -> Path | None:
    """``folder/name`` (``*.gz``), else the same file uncompressed, else None."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if idx_path(folder, name) is None]


def _run(command: list[str], cwd: Path | None = None) -> str:
    """Run ``command``; its output on success, a ``RuntimeError`` quoting stderr on failure."""
    try:
        done = subprocess.run(
            command, cwd=cwd, check=True, capture_output=True, text=True, timeout=1800
        )
    except subprocess.CalledProcessError as error:
        tail = (error.stderr or error.stdout or "").strip()[-600:]
        raise RuntimeError(f"`{' '.join(command)}` failed ({error.returncode}): {tail}") from error
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"`{' '.join(command)}` failed: {error}") from error
    return (done.stdout + done.stderr).strip()


def download_debian_package(cache: Path) -> Path:
    """Fetch ``dataset-fashion-mnist`` with ``apt-get download`` and unpack it, without root.

    The ``.deb`` is downloaded and unpacked (``dpkg-deb -x``) in a temporary folder inside
    ``cache``; only a complete data folder is moved to ``cache/usr/share/datasets/fashion-mnist``
    (so an interrupted run leaves nothing that looks finished), and the ``.deb`` is deleted.

    Args:
        cache: the cache folder (created if needed).

    Returns:
        The folder holding the four idx files.

    Raises:
        RuntimeError: apt-get or dpkg-deb is missing or fails (the message quotes its error).
    """
    apt_get, dpkg_deb = shutil.which(APT_GET), shutil.which(DPKG_DEB)
    if apt_get is None or dpkg_deb is None:
        raise RuntimeError(f"{APT_GET if apt_get is None else DPKG_DEB} not found on PATH")
    target = cache / PACKAGE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    _announce(f"Fashion-MNIST: downloading the Debian package {DEBIAN_PACKAGE} into {cache} ...")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        work = Path(tmp)
        log = _run([apt_get, "download", DEBIAN_PACKAGE], cwd=work)
        logger.info("apt-get download: %s", log)
        debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download left no {DEBIAN_PACKAGE}_*.deb in {work}")
        deb = debs[-1]
        size_mb = deb.stat().st_size / 1e6
        _run([dpkg_deb, "-x", str(deb), str(work / "root")])
        unpacked = work / "root" / PACKAGE_DIR
        missing = _missing(unpacked)
        if missing:
            raise RuntimeError(f"{deb.name} holds no {missing} under /{PACKAGE_DIR}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # an incomplete folder from elsewhere: replace it
            shutil.rmtree(target)
        os.replace(unpacked, target)
    _announce(f"Fashion-MNIST: unpacked {deb.name} ({size_mb:.1f} MB) into {target}")
    return target


def find_fashion_mnist(cache: Path | None = None) -> Path:
    """The folder holding Fashion-MNIST's four idx files, fetching them if needed.

    Looks, in order, at:

    1. ``$FASHION_MNIST_DIR`` (an error if it is set but lacks a file);
    2. ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``);
    3. ``cache/usr/share/datasets/fashion-mnist`` (an unpacked ``.deb``);
    4. else, where ``apt-get`` exists, ``apt-get download dataset-fashion-mnist`` and
       ``dpkg-deb -x`` into ``cache`` (no root needed), giving folder 3.

    The four files are ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (each may be uncompressed).
    Where the data came from is logged and printed.

    Args:
        cache: where packages are downloaded and unpacked (default: ``default_cache()``).

    Returns:
        The folder.

    Raises:
        FileNotFoundError: no way worked; the message lists the three ways to provide the data
            and why each attempt failed.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env).expanduser()
        missing = _missing(folder)
        if missing:
            raise FileNotFoundError(
                f"${ENV_VAR}={env} does not hold {missing}; point it at the folder with the four "
                f"Fashion-MNIST files ({', '.join(REQUIRED_FILES)}) or unset it"
            )
        _announce(f"Fashion-MNIST: using {folder} (from ${ENV_VAR})")
        return folder
    tried = [f"${ENV_VAR}: not set"]
    missing = _missing(SYSTEM_DIR)
    if not missing:
        _announce(f"Fashion-MNIST: using {SYSTEM_DIR} (Debian package {DEBIAN_PACKAGE})")
        return SYSTEM_DIR
    tried.append(f"{SYSTEM_DIR}: lacks {', '.join(missing)}")
    cache = Path(cache).expanduser() if cache is not None else default_cache()
    unpacked = cache / PACKAGE_DIR
    missing = _missing(unpacked)
    if not missing:
        _announce(f"Fashion-MNIST: using {unpacked} (unpacked {DEBIAN_PACKAGE} .deb in the cache)")
        return unpacked
    tried.append(f"{unpacked}: lacks {', '.join(missing)}")
    try:
        return download_debian_package(cache)
    except RuntimeError as error:
        tried.append(f"apt-get download {DEBIAN_PACKAGE}: {error}")
    raise FileNotFoundError(
        "Fashion-MNIST not found. Provide it in one of three ways:\n"
        f"  1. sudo apt-get install {DEBIAN_PACKAGE}   (installs it in {SYSTEM_DIR})\n"
        f"  2. apt-get download {DEBIAN_PACKAGE} && dpkg-deb -x {DEBIAN_PACKAGE}_*.deb {cache}"
        "   (no root; or rerun where apt-get can download)\n"
        f"  3. export {ENV_VAR}=/folder/with/the/four/files   ({', '.join(REQUIRED_FILES)};"
        f" from {HOMEPAGE})\n"
        "Tried:\n  - " + "\n  - ".join(tried)
    )


# ----------------------------------------------------------------------------------------------
# Reading idx files
# ----------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzip-compressed or plain.

    The header is two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions N,
    then N big-endian uint32 sizes; the data follows, big-endian, C order.

    Args:
        path: the file (compression is detected from its first bytes, not its name).

    Returns:
        The array in native byte order, e.g. images (N, 28, 28) uint8 or labels (N,) uint8.

    Raises:
        DataError: not an idx file (wrong magic number), a corrupt gzip stream, or a size that
            does not match the header; the error names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"corrupt gzip data: {error}", file=str(path)) from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"not an idx file: magic number 0x{raw[:4].hex()} (expected 0x0000, a type code in "
            f"{[hex(c) for c in _IDX_DTYPES]} and the number of dimensions)",
            file=str(path),
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"idx header cut short: {len(raw)} bytes for {ndim} dimensions", file=str(path)
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"idx data has {len(raw) - header} bytes; the header's shape {shape} of {dtype.name} "
            f"needs {count * dtype.itemsize}",
            file=str(path),
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of ``split`` (``train`` or ``val``).

    Raises:
        FileNotFoundError: a file is missing.
        DataError: a file is not a valid idx file, or images and labels do not fit together.
    """
    arrays = []
    for name in IDX_FILES[split]:
        path = idx_path(source, name)
        if path is None:
            raise FileNotFoundError(f"{source} has no {name} (or {name.removesuffix('.gz')})")
        arrays.append((path, read_idx(path)))
    (image_path, images), (label_path, labels) = arrays
    if images.dtype != np.uint8 or images.shape[1:] != (RESOLUTION, RESOLUTION):
        raise DataError(
            f"expected uint8 images (N, {RESOLUTION}, {RESOLUTION}), got {images.dtype} "
            f"{images.shape}",
            file=str(image_path),
        )
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DataError(
            f"expected {images.shape[0]} uint8 labels (one per image), got {labels.dtype} "
            f"{labels.shape}",
            file=str(label_path),
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        bad = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise DataError(
            f"label {int(labels[bad])} at index {bad} is not a Fashion-MNIST class (0..9)",
            file=str(label_path),
        )
    return images, labels


# ----------------------------------------------------------------------------------------------
# Converting
# ----------------------------------------------------------------------------------------------


def _config(samples_per_shard: int, limit: int | None) -> dict[str, Any]:
    return {"samples_per_shard": samples_per_shard, "limit": limit}


def _digests(folder: Path) -> dict[str, str] | None:
    """SHA-256 of each of the four files in ``folder`` (None if one is missing)."""
    paths = {name: idx_path(folder, name) for name in REQUIRED_FILES}
    if any(path is None for path in paths.values()):
        return None
    return {name: file_sha256(path) for name, path in paths.items() if path is not None}


def _finished(
    out: Path, config: dict[str, Any], source: Path | None
) -> tuple[Manifest | None, str]:
    """The manifest in ``out`` if it is a complete conversion with ``config``, and why not.

    With a ``source`` folder, the conversion must also have been made from the same files.
    """
    if not (out / MANIFEST_NAME).is_file():
        return None, "no manifest"
    try:
        manifest = read_manifest(out)
    except DataError as error:
        return None, str(error)
    generator = manifest.generator
    if generator.get("name") != GENERATOR_NAME:
        return None, f"it was made by {generator.get('name')!r}"
    made = {"version": generator.get("version"), **dict(generator.get("config") or {})}
    wanted = {"version": CONVERTER_VERSION, **config}
    if made != wanted:
        return None, f"it was converted with {made}, not {wanted}"
    if source is not None:
        recorded = dict(generator.get("dataset") or {}).get("files")
        if _digests(source) != recorded:
            return None, f"it was converted from other files than those in {source}"
    for split, shards in manifest.splits.items():
        for shard in shards:
            path = out / shard.path
            if not path.is_file() or (shard.sha256 and file_sha256(path) != shard.sha256):
                return None, f"{split} shard {shard.path} is missing or changed"
    return manifest, ""


def _write_split(
    out: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    specs: tuple[ModalitySpec, ...],
    samples_per_shard: int,
) -> tuple[ShardInfo, ...]:
    """Write images (N, 28, 28) uint8 and labels (N,) as ``out/<split>/shard-*.tar``."""
    shards = []
    for number, start in enumerate(range(0, len(images), samples_per_shard)):
        stop = min(len(images), start + samples_per_shard)
        # Gray -> RGB by replication: (n, 28, 28) -> (n, 28, 28, 3).
        rgb = np.repeat(images[start:stop, :, :, None], 3, axis=3)
        rel = shard_name(split, number)
        with ShardWriter(out / rel, specs, resolution=RESOLUTION) as writer:
            for offset, index in enumerate(range(start, stop)):
                writer.write(sample_key(index), {"rgb": rgb[offset], "label": int(labels[index])})
        shards.append(ShardInfo(rel, stop - start, file_sha256(out / rel)))
    return tuple(shards)


def convert_fashion_mnist(
    out: Path,
    source: Path | None = None,
    cache: Path | None = None,
    samples_per_shard: int = 10000,
    overwrite: bool = False,
    limit: int | None = None,
) -> Manifest:
    """Convert Fashion-MNIST into a shard dataset: ``out/train``, ``out/val``, ``manifest.json``.

    ``train`` holds the 60,000 training images, ``val`` the 10,000 images of the official test
    split (recorded in the manifest), each sample an ``rgb`` (28, 28, 3) uint8 PNG (gray
    replicated) and a ``label`` (``ClassLabel`` with ``FASHION_MNIST_CLASSES``), keyed by its
    index in the source file. The output is deterministic. A folder that already holds a
    complete conversion with the same settings is left alone (and its manifest returned) unless
    ``overwrite``; the data is then not even looked for.

    Args:
        out: dataset folder (created; must be empty, absent, a leftover of an interrupted
            conversion, or an earlier conversion with the same settings unless ``overwrite``).
        source: folder with the four idx files (default: ``find_fashion_mnist(cache)``).
        cache: download cache for ``find_fashion_mnist`` (default: ``default_cache()``).
        samples_per_shard: samples per tar file.
        overwrite: replace whatever dataset ``out`` holds.
        limit: keep only the first ``limit`` samples of each split (tests, quick trials).

    Returns:
        The manifest written (or found).

    Raises:
        FileExistsError: ``out`` holds something else and ``overwrite`` is False.
        FileNotFoundError: the data cannot be found (see ``find_fashion_mnist``).
        DataError: an idx file is corrupt (the error names it).
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    out = Path(out)
    config = _config(samples_per_shard, limit)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        given = Path(source).expanduser() if source is not None else None
        manifest, reason = _finished(out, config, given)
        if manifest is not None:
            _announce(f"Fashion-MNIST: {out} already holds this conversion; nothing to do")
            return manifest
        if not is_partial_dataset(out):
            raise FileExistsError(
                f"{out} is not empty and not this conversion ({reason}); pass overwrite=True "
                "(--overwrite) to replace it"
            )
    folder = Path(source).expanduser() if source is not None else find_fashion_mnist(cache)
    if source is not None:
        _announce(f"Fashion-MNIST: using {folder} (given as source)")
    missing = _missing(folder)
    if missing:
        raise FileNotFoundError(f"{folder} has no {missing} (compressed or not)")
    digests = _digests(folder)
    # Replaces an interrupted conversion's leftovers, or anything with overwrite=True.
    _prepare_folder(out, overwrite=True)

    started = time.perf_counter()
    specs = fashion_mnist_specs()
    splits: dict[str, tuple[ShardInfo, ...]] = {}
    for split in IDX_FILES:
        images, labels = read_split(folder, split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        splits[split] = _write_split(out, split, images, labels, specs, samples_per_shard)
    manifest = Manifest(
        root=out,
        resolution=RESOLUTION,
        specs=specs_by_name(specs),
        splits=splits,
        generator={
            "name": GENERATOR_NAME,
            "version": CONVERTER_VERSION,
            "config": config,
            "dataset": {
                "name": "Fashion-MNIST",
                "homepage": HOMEPAGE,
                "license": "MIT",
                "debian_package": DEBIAN_PACKAGE,
                "files": digests,
                "splits": {
                    "train": {
                        "official_split": "train",
                        "files": list(IDX_FILES["train"]),
                        "note": "the official training set",
                    },
                    "val": {
                        "official_split": "test",
                        "files": list(IDX_FILES["val"]),
                        "note": "the OFFICIAL TEST SET, named val so that validation and test "
                        "read it; there is no separate validation split",
                    },
                },
            },
        },
        class_names={"label": list(FASHION_MNIST_CLASSES)},
    )
    write_manifest(manifest)
    counts = ", ".join(f"{manifest.num_samples(s)} {s}" for s in splits)
    _announce(
        f"Fashion-MNIST: wrote {counts} samples to {out} in {time.perf_counter() - started:.1f} s"
    )
    return manifest
