"""Modality kinds: the behaviour a family of modalities shares.

A kind knows how its modality is stored in a shard (``encode``/``decode``), what a valid value looks
like (``validate``), how it becomes a tensor and a batch (``to_tensor``/``collate``), how it follows
an aligned crop and flip (``augment``) and how a person sees it (``render``). Generic code (shard
reader, DataModule, plots) calls these methods and never branches on a modality name or kind string.

Value forms, per kind (``decode`` returns the *stored* form, ``to_tensor`` the *sample* form):

=================  ===============================  ==========================================
kind               stored form (numpy / python)     sample form (torch / python), batch form
=================  ===============================  ==========================================
RGBImage           uint8 (H, W, 3)                  uint8 (3, H, W) -> (B, 3, H, W)
DepthMap           float32 (H, W) metres            float32 (1, H, W) -> (B, 1, H, W)
NormalMap          float32 (H, W, 3) unit vectors   float32 (3, H, W) in [-1, 1] -> (B, 3, H, W)
LabelMap           uint8 (H, W) class / instance    uint8 (H, W) -> (B, H, W)
EdgeMap            uint8 (H, W) in {0, 1}           uint8 (H, W) -> (B, H, W)
FeatureMap         float32 (C, h, w)                float32 (C, h, w) -> (B, C, h, w)
CaptionText        str                              str -> list[str]
BoxesText          list[dict] (normalized xyxy)     dict(boxes=(N, 4), fields...) -> list
MetadataText       dict[str, float]                 same -> list
PaletteText        list[dict(rgb, weight)]          same -> list
JsonRecord         any JSON object or list          same -> list
ClassLabel         int in [0, len(class_names))     int64 () -> (B,) int64
GlobalVector       float32 (D,)                     float32 (D,) -> (B, D)
SequenceEmbedding  float32 (L, D)                   float32 (L, D) -> dict(emb (B, L, D), mask)
=================  ===============================  ==========================================
"""

from __future__ import annotations

import io
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from einops import rearrange

from fourm_lightning.modalities.errors import DataError

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class Crop:
    """One aligned crop-and-flip, shared by every modality of a sample.

    Coordinates are fractions of the source extent so that maps of different resolutions (an RGB
    image and a 16x16 feature map, say) take exactly the same region.

    Args:
        top: top edge of the crop, fraction of the source height in [0, 1).
        left: left edge of the crop, fraction of the source width in [0, 1).
        height: crop height, fraction of the source height in (0, 1].
        width: crop width, fraction of the source width in (0, 1].
        hflip: whether the crop is mirrored left-right after cropping.
        size: output side in pixels for full-resolution maps (feature maps keep their grid size).
    """

    top: float
    left: float
    height: float
    width: float
    hflip: bool
    size: int

    def pixel_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """The crop in pixels of a ``h x w`` map, as (top, left, height, width), at least 1x1."""
        top = min(round(self.top * h), h - 1)
        left = min(round(self.left * w), w - 1)
        height = max(1, min(round(self.height * h), h - top))
        width = max(1, min(round(self.width * w), w - left))
        return top, left, height, width


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # compress_level 1: shards are written once per sample in the generator's hot loop; level 1 is
    # ~3x faster than the default 6 and only ~10% larger on these renders.
    Image.fromarray(array).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        # np.array (a writable copy), not np.asarray (a read-only view of PIL's bytes): torch
        # warns on, and must not write through, tensors made from read-only arrays.
        return np.array(image)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npy_array(data: bytes) -> np.ndarray:
    # allow_pickle=False: shards may come from anyone; an object array must never be unpickled.
    return np.load(io.BytesIO(data), allow_pickle=False)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _json_value(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise DataError(message)


class ModalityKind(ABC):
    """Behaviour shared by a family of modalities (see the module docstring for value forms).

    Subclasses are frozen dataclasses so that a kind is plain, comparable, YAML-describable data.
    """

    #: File extension of this kind inside a WebDataset sample (``<key>.<modality>.<extension>``).
    extension: ClassVar[str]
    #: Whether ``augment`` moves content (so aligned crops and flips apply to it).
    spatial: ClassVar[bool] = False
    #: Whether ``render`` draws over the image already on the axis (figures put one there).
    overlay: ClassVar[bool] = False

    @abstractmethod
    def encode(self, value: Any) -> bytes:
        """Stored form -> file bytes."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """File bytes -> stored form. Raises ``DataError`` when the bytes cannot be parsed."""

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: B027
        """Raise ``DataError`` if ``value`` (stored form) is not a valid instance of this kind.

        Args:
            value: the stored form, as returned by ``decode``.
            resolution: the expected side of full-resolution maps, if known.
        """

    def to_tensor(self, value: Any) -> Any:
        """Stored form -> sample form (the default is the value itself)."""
        return value

    def to_stored(self, value: Any) -> Any:
        """Sample form -> stored form, the inverse of ``to_tensor`` (the default is the value).

        Used to write an augmented value back into a shard (pre-tokenized datasets keep their
        raw RGB crops and boxes this way).
        """
        return value

    def augment(self, value: Any, crop: Crop) -> Any:
        """Apply an aligned crop and flip to a sample-form value (non-spatial kinds ignore it)."""
        return value

    def collate(self, values: Sequence[Any]) -> Any:
        """A list of sample-form values -> batch form (the default stacks tensors)."""
        return torch.stack(list(values))

    @abstractmethod
    def render(self, value: Any, ax: Axes) -> None:
        """Draw one sample-form value on a matplotlib axis for figures and notebooks."""

    def text_chunks(self, value: Any) -> list[str]:
        """Stored form -> the text the shared vocabulary tokenizes, as chunks.

        Span masking treats a chunk as one unit (metadata: one chunk per key); plain sequences
        are one chunk. Only text-like kinds have a text form.
        """
        raise TypeError(f"{type(self).__name__} values have no text form")

    def from_text(self, text: str) -> Any:
        """Decoded text -> stored form, the tolerant inverse of ``text_chunks`` (generation)."""
        raise TypeError(f"{type(self).__name__} values have no text form")

    def to_config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": {...}}``, the form jsonargparse and manifests use."""
        from dataclasses import asdict

        cls = type(self)
        init_args = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


# ----------------------------------------------------------------------------------------------
# Image-like maps
# ----------------------------------------------------------------------------------------------


class ImageKind(ModalityKind):
    """Dense maps aligned with the RGB image, stored as (H, W[, C]) and augmented together."""

    spatial: ClassVar[bool] = True
    #: Channels of the stored map (0 for a single-channel (H, W) map).
    stored_channels: ClassVar[int] = 0
    #: torchvision interpolation used by crops ("bilinear" for continuous maps, else "nearest").
    interpolation: ClassVar[str] = "nearest"

    def _check_shape(self, value: Any, resolution: int | None) -> None:
        _expect(
            isinstance(value, np.ndarray), f"expected a numpy array, got {type(value).__name__}"
        )
        expected_ndim = 3 if self.stored_channels else 2
        _expect(
            value.ndim == expected_ndim
            and (not self.stored_channels or value.shape[-1] == self.stored_channels),
            f"expected shape (H, W{f', {self.stored_channels}' if self.stored_channels else ''})"
            f", got {tuple(value.shape)}",
        )
        if resolution is not None:
            _expect(
                value.shape[:2] == (resolution, resolution),
                f"expected spatial size {resolution}x{resolution}, got "
                f"{value.shape[0]}x{value.shape[1]}",
            )

    def augment(self, value: torch.Tensor, crop: Crop) -> torch.Tensor:
        """Crop, resize to ``crop.size`` and optionally mirror.

        Shape: (..., H, W) -> (..., S, S) with S = ``crop.size``.
        """
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        h, w = value.shape[-2:]
        top, left, height, width = crop.pixel_box(h, w)
        mode = (
            InterpolationMode.BILINEAR
            if self.interpolation == "bilinear"
            else (InterpolationMode.NEAREST_EXACT)
        )
        squeeze = value.ndim == 2
        x = value[None] if squeeze else value
        x = tvf.resized_crop(
            x, top, left, height, width, [crop.size, crop.size], interpolation=mode, antialias=True
        )
        if crop.hflip:
            x = self.hflip(x)
        return x[0] if squeeze else x

    def hflip(self, value: torch.Tensor) -> torch.Tensor:
        """Mirror a sample-form map left-right. Shape: (..., H, W)."""
        return value.flip(-1)

    def to_stored(self, value: torch.Tensor) -> np.ndarray:
        """(C, H, W) -> (H, W, C) for multi-channel maps; (1, H, W) or (H, W) -> (H, W)."""
        x = value.detach().cpu()
        if self.stored_channels:
            x = rearrange(x, "c h w -> h w c")
        elif x.ndim == 3:
            x = rearrange(x, "1 h w -> h w")
        return x.numpy()


@dataclass(frozen=True)
class RGBImage(ImageKind):
    """An sRGB image, 8 bits per channel, stored as PNG.

    Args:
        mean: per-channel mean (0..1 scale) used by consumers that normalise pixels.
        std: per-channel std (0..1 scale) used by consumers that normalise pixels.
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    extension: ClassVar[str] = "png"
    stored_channels: ClassVar[int] = 3
    interpolation: ClassVar[str] = "bilinear"

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _png_bytes(value)

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        array = _png_array(data)
        return array[..., :3] if array.ndim == 3 else array

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        self._check_shape(value, resolution)
        _expect(value.dtype == np.uint8, f"expected dtype uint8, got {value.dtype}")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, H, W) uint8."""
        return torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1)))

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        ax.imshow(value.permute(1, 2, 0).cpu().numpy())


@dataclass(frozen=True)
class DepthMap(ImageKind):
    """Metric depth in metres, stored as float16 ``.npy`` (relative precision ~1e-3).

    Args:
        max_depth: largest plausible depth; larger or negative values fail validation.
    """

    max_depth: float = 100.0

    extension: ClassVar[str] = "npy"
    interpolation: ClassVar[str] = "nearest"  # averaging depth across object borders invents 3D

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _npy_bytes(value.astype(np.float16))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _npy_array(data).astype(np.float32)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        self._check_shape(value, resolution)
        _expect(np.issubdtype(value.dtype, np.floating), f"expected float depth, got {value.dtype}")
        _expect(bool(np.isfinite(value).all()), "depth has non-finite values")
        _expect(
            bool((value >= 0).all() and (value <= self.max_depth).all()),
            f"depth outside [0, {self.max_depth}] m: min {value.min():.3g}, max {value.max():.3g}",
        )

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:
        """(H, W) -> (1, H, W) float32."""
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))[None]

    def render(self, value: torch.Tensor, ax: Axes) -> None:
        """Inverse depth with a perceptual colour map (near is bright)."""
        ax.imshow(1.0 / value[0].clamp_min(1e-3).cpu().numpy(), cmap="magma")


@dataclass(frozen=True)
class NormalMap(ImageKind):
    """Camera-space unit normals (x right, y up, z towards the camera), stored as 8-bit PNG.

    8 bits per channel keeps the angular quantisation error under about half a degree.
    """

    extension: ClassVar[str] = "png"
    stored_channels: ClassVar[int] = 3
    interpolation: ClassVar[str] = "nearest"

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _png_bytes(np.clip(np.rint((value + 1.0) * 127.5), 0, 255).astype(np.uint8))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        array = _png_array(data).astype(np.float32) / 127.5 - 1.0
        norm = np.linalg.norm(array, axis=-1, keepdims=True)
        return array / np.maximum(norm, 1e-6)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        self._check_shape(value, resolution)
        norm = np.linalg.norm(value, axis=-1)
        _expect(bool(np.isfinite(norm).all()), "normals have non-finite values")
        _expect(bool(np.abs(norm - 1).max() < 0.02), "normals are not unit vectors")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:
        """(H, W, 3) -> (3, H, W) float32."""
        return torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1), dtype=np.float32))

    def hflip(self, value: torch.Tensor) -> torch.Tensor:
        """Mirror the map and negate the x component, so normals keep pointing the right way."""
        flipped = value.flip(-1).clone()
        flipped[..., 0, :, :] = -flipped[..., 0, :, :]
        return flipped

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        ax.imshow(((value + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu().numpy())


@dataclass(frozen=True)
class LabelMap(ImageKind):
    """Integer labels per pixel (semantic classes or instance ids), stored as 8-bit PNG.

    Args:
        num_classes: number of valid labels (0 .. num_classes - 1).
        class_names: optional name of each label, for legends and captions.
        ignore_index: a label value outside the classes that marks "no label", if any.
    """

    num_classes: int = 256
    class_names: tuple[str, ...] = ()
    ignore_index: int | None = None

    extension: ClassVar[str] = "png"

    def __post_init__(self) -> None:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"LabelMap: {len(self.class_names)} class_names for num_classes={self.num_classes}"
            )

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _png_bytes(value.astype(np.uint8))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _png_array(data)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        self._check_shape(value, resolution)
        _expect(
            np.issubdtype(value.dtype, np.integer), f"expected integer labels, got {value.dtype}"
        )
        valid = value < self.num_classes
        if self.ignore_index is not None:
            valid |= value == self.ignore_index
        _expect(bool(valid.all()), f"labels >= num_classes={self.num_classes}: max {value.max()}")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:
        """(H, W) -> (H, W) uint8 (consumers call ``.long()``; uint8 keeps crops fast)."""
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.uint8))

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        ax.imshow(
            value.cpu().numpy(),
            cmap="tab20",
            vmin=0,
            vmax=max(self.num_classes - 1, 1),
            interpolation="nearest",
        )


@dataclass(frozen=True)
class EdgeMap(ImageKind):
    """A binary edge map (1 = edge), stored as 8-bit PNG with values {0, 1}."""

    extension: ClassVar[str] = "png"

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _png_bytes(value.astype(np.uint8))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _png_array(data)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        self._check_shape(value, resolution)
        _expect(bool(((value == 0) | (value == 1)).all()), "edge map values must be 0 or 1")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:
        """(H, W) -> (H, W) uint8 in {0, 1}."""
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.uint8))

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        ax.imshow(value.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


@dataclass(frozen=True)
class FeatureMap(ImageKind):
    """A grid of feature vectors (e.g. CLIP or DINOv2 patch features), stored as (C, h, w) npy.

    Args:
        channels: feature dimension C.
    """

    channels: int = 768

    extension: ClassVar[str] = "npy"
    interpolation: ClassVar[str] = "bilinear"

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _npy_bytes(value.astype(np.float16))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _npy_array(data).astype(np.float32)

    def validate(self, value: Any, resolution: int | None = None) -> None:
        """Feature grids have their own size, so only channels and finiteness are checked."""
        _expect(
            isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[0] == self.channels,
            f"expected shape ({self.channels}, h, w), got {getattr(value, 'shape', None)}",
        )
        _expect(bool(np.isfinite(value).all()), "features have non-finite values")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:  # noqa: D102
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def to_stored(self, value: torch.Tensor) -> np.ndarray:
        """(C, h, w) -> (C, h, w): features are stored channels first."""
        return value.detach().cpu().numpy()

    def augment(self, value: torch.Tensor, crop: Crop) -> torch.Tensor:
        """Crop the same region as the images, but keep the feature grid size."""
        grid = Crop(crop.top, crop.left, crop.height, crop.width, crop.hflip, value.shape[-1])
        return super().augment(value, grid)

    def render(self, value: torch.Tensor, ax: Axes) -> None:
        """First three principal components as RGB."""
        c, h, w = value.shape
        x = value.reshape(c, h * w).T.float()
        x = x - x.mean(0)
        _, _, v = torch.pca_lowrank(x, q=3, center=False)
        rgb = (x @ v).reshape(h, w, 3)
        rgb = (rgb - rgb.amin((0, 1))) / (rgb.amax((0, 1)) - rgb.amin((0, 1))).clamp_min(1e-6)
        ax.imshow(rgb.cpu().numpy())


# ----------------------------------------------------------------------------------------------
# Text-like sequences (tokenised later by the shared WordPiece vocabulary)
# ----------------------------------------------------------------------------------------------


def _text_axis(ax: Axes, text: str) -> None:
    import textwrap

    ax.text(
        0.02,
        0.98,
        textwrap.fill(text, 30),
        va="top",
        ha="left",
        fontsize=7,
        wrap=True,
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass(frozen=True)
class CaptionText(ModalityKind):
    """Free text, stored as UTF-8 ``.txt``.

    Args:
        max_chars: longest accepted text.
    """

    max_chars: int = 2000

    extension: ClassVar[str] = "txt"

    def encode(self, value: str) -> bytes:  # noqa: D102
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:  # noqa: D102
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"caption is not UTF-8: {error}") from error

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(isinstance(value, str), f"expected str, got {type(value).__name__}")
        _expect(0 < len(value) <= self.max_chars, f"caption length {len(value)} not in 1..max")

    def collate(self, values: Sequence[str]) -> list[str]:  # noqa: D102
        return list(values)

    def text_chunks(self, value: str) -> list[str]:  # noqa: D102
        return [value]

    def from_text(self, text: str) -> str:  # noqa: D102
        return text

    def render(self, value: str, ax: Axes) -> None:  # noqa: D102
        _text_axis(ax, value)


class _JsonKind(ModalityKind):
    extension: ClassVar[str] = "json"

    def encode(self, value: Any) -> bytes:
        return _json_bytes(value)

    def decode(self, data: bytes) -> Any:
        try:
            return _json_value(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"invalid JSON: {error}") from error

    def collate(self, values: Sequence[Any]) -> list[Any]:
        return list(values)


@dataclass(frozen=True)
class BoxesText(_JsonKind):
    """Boxes with attributes, stored as a JSON list of ``{"box": [x0, y0, x1, y1], "class": ...}``.

    Boxes are NORMALIZED xyxy in [0, 1] (x by width, y by height) so that they follow crops without
    knowing the image size. Any other per-box field (colour, size, instance id) is carried along.

    Args:
        class_names: the valid values of each box's ``class`` field (empty: any string).
    """

    class_names: tuple[str, ...] = ()

    spatial: ClassVar[bool] = True
    overlay: ClassVar[bool] = True

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(isinstance(value, list), f"expected a list of boxes, got {type(value).__name__}")
        for i, item in enumerate(value):
            _expect(
                isinstance(item, dict) and "box" in item and "class" in item,
                f"box {i} needs 'box' and 'class' fields, got {item!r}",
            )
            box = item["box"]
            _expect(
                len(box) == 4 and all(isinstance(c, int | float) and math.isfinite(c) for c in box),
                f"box {i} is not 4 finite numbers: {box!r}",
            )
            x0, y0, x1, y1 = box
            _expect(
                0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1,
                f"box {i} is not normalized xyxy with x0<x1, y0<y1 in [0, 1]: {box!r}",
            )
            _expect(
                not self.class_names or item["class"] in self.class_names,
                f"box {i} has unknown class {item['class']!r}",
            )

    def to_tensor(self, value: list[dict[str, Any]]) -> dict[str, Any]:
        """List of boxes -> ``{"boxes": (N, 4) float32, <field>: list for each other field}``."""
        fields = sorted({k for item in value for k in item} - {"box"})
        out: dict[str, Any] = {
            "boxes": torch.tensor([item["box"] for item in value], dtype=torch.float32).reshape(
                -1, 4
            )
        }
        for name in fields:
            out[name] = [item.get(name) for item in value]
        return out

    def to_stored(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """``{"boxes": (N, 4), <field>: list}`` -> the JSON list of boxes."""
        fields = [name for name in value if name != "boxes"]
        return [
            {"box": box, **{name: value[name][i] for name in fields}}
            for i, box in enumerate(value["boxes"].tolist())
        ]

    def augment(self, value: dict[str, Any], crop: Crop) -> dict[str, Any]:
        """Map boxes into the crop, clip them, drop the ones left with no area, then flip."""
        boxes = value["boxes"].clone()
        boxes[:, 0::2] = (boxes[:, 0::2] - crop.left) / crop.width
        boxes[:, 1::2] = (boxes[:, 1::2] - crop.top) / crop.height
        boxes = boxes.clamp(0.0, 1.0)
        # A box must keep at least half an output pixel of width and height to survive the crop.
        min_side = 0.5 / crop.size
        keep = ((boxes[:, 2] - boxes[:, 0]) > min_side) & ((boxes[:, 3] - boxes[:, 1]) > min_side)
        if crop.hflip:
            boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
        out = {"boxes": boxes[keep]}
        idx = keep.nonzero().flatten().tolist()
        for name, items in value.items():
            if name != "boxes":
                out[name] = [items[i] for i in idx]
        return out

    def text_chunks(self, value: list[dict[str, Any]]) -> list[str]:
        """One chunk: the boxes as ``BoxSerializer`` writes them (4M masks boxes as one text)."""
        from fourm_lightning.tokenizers.serializers import BoxSerializer

        return [BoxSerializer(class_names=self.class_names).serialize(value)]

    def from_text(self, text: str) -> list[dict[str, Any]]:
        """Boxes parsed from ``BoxSerializer`` text (malformed chunks are skipped)."""
        from fourm_lightning.tokenizers.serializers import BoxSerializer

        return BoxSerializer(class_names=self.class_names).parse(text)

    def render(self, value: dict[str, Any], ax: Axes) -> None:
        """Draw boxes on the axis' current image (or on an empty unit square)."""
        from matplotlib.patches import Rectangle

        images = ax.get_images()
        if images:
            h, w = images[-1].get_array().shape[:2]
        else:
            h = w = 1
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
        labels = [
            " ".join(str(value[f][i]) for f in ("color", "class") if f in value)
            for i in range(len(value["boxes"]))
        ]
        for (x0, y0, x1, y1), label in zip(value["boxes"].tolist(), labels, strict=True):
            ax.add_patch(
                Rectangle(
                    (x0 * w - 0.5, y0 * h - 0.5),
                    (x1 - x0) * w,
                    (y1 - y0) * h,
                    fill=False,
                    color="white",
                    lw=1,
                )
            )
            ax.text(x0 * w, y0 * h, label, color="white", fontsize=5, va="bottom")


@dataclass(frozen=True)
class MetadataText(_JsonKind):
    """Named scalar image statistics, stored as a JSON object ``{"brightness": 97.2, ...}``.

    Args:
        ranges: the valid (low, high) range of each key; keys outside it are rejected.
    """

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(isinstance(value, dict), f"expected a JSON object, got {type(value).__name__}")
        for key, item in value.items():
            _expect(
                isinstance(item, int | float) and math.isfinite(item),
                f"metadata {key!r} is not a finite number: {item!r}",
            )
            if self.ranges:
                _expect(key in self.ranges, f"unknown metadata key {key!r}")
                low, high = self.ranges[key]
                _expect(low <= item <= high, f"metadata {key!r}={item} outside [{low}, {high}]")

    def text_chunks(self, value: dict[str, float]) -> list[str]:
        """One ``v1=<key> v0=<value>`` chunk per key, so masking hides or shows whole entries."""
        from fourm_lightning.tokenizers.serializers import MetadataSerializer

        serializer = MetadataSerializer(**({"ranges": self.ranges} if self.ranges else {}))
        return [serializer.serialize({key: item}) for key, item in value.items()]

    def from_text(self, text: str) -> dict[str, float]:
        """Metadata parsed from ``v1=<key> v0=<value>`` chunks."""
        from fourm_lightning.tokenizers.serializers import MetadataSerializer

        serializer = MetadataSerializer(**({"ranges": self.ranges} if self.ranges else {}))
        return serializer.parse(text)

    def render(self, value: dict[str, float], ax: Axes) -> None:  # noqa: D102
        _text_axis(ax, "\n".join(f"{k}: {v:.3g}" for k, v in value.items()))


@dataclass(frozen=True)
class PaletteText(_JsonKind):
    """Dominant colours, stored as a JSON list of ``{"rgb": [r, g, b], "weight": share}``.

    Args:
        max_colors: the most colours a palette may hold.
    """

    max_colors: int = 7

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(
            isinstance(value, list) and 0 < len(value) <= self.max_colors,
            f"expected a list of 1..{self.max_colors} colours",
        )
        for i, item in enumerate(value):
            rgb = item.get("rgb") if isinstance(item, dict) else None
            _expect(
                rgb is not None and len(rgb) == 3 and all(0 <= c <= 255 for c in rgb),
                f"colour {i} needs 'rgb' with 3 values in 0..255, got {item!r}",
            )

    def text_chunks(self, value: list[dict[str, Any]]) -> list[str]:  # noqa: D102
        from fourm_lightning.tokenizers.serializers import PaletteSerializer

        return [PaletteSerializer(max_colors=self.max_colors).serialize(value)]

    def from_text(self, text: str) -> list[dict[str, Any]]:  # noqa: D102
        from fourm_lightning.tokenizers.serializers import PaletteSerializer

        return PaletteSerializer(max_colors=self.max_colors).parse(text)

    def render(self, value: list[dict[str, Any]], ax: Axes) -> None:
        """Swatches whose widths are the colours' shares."""
        from matplotlib.patches import Rectangle

        x = 0.0
        total = sum(float(item.get("weight", 1.0)) for item in value) or 1.0
        for item in value:
            width = float(item.get("weight", 1.0)) / total
            ax.add_patch(Rectangle((x, 0), width, 1, color=np.asarray(item["rgb"]) / 255))
            x += width
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xticks([])
        ax.set_yticks([])


@dataclass(frozen=True)
class JsonRecord(_JsonKind):
    """Any JSON object or list kept beside a sample (e.g. the scene graph), never tokenized."""

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(isinstance(value, dict | list), f"expected a JSON object or list, got {value!r}")

    def render(self, value: Any, ax: Axes) -> None:  # noqa: D102
        _text_axis(ax, json.dumps(value)[:400])


# ----------------------------------------------------------------------------------------------
# Per-sample classes
# ----------------------------------------------------------------------------------------------


def _class_key(name: str) -> str:
    """A class name reduced to lower-case letters and digits (``"T-shirt/top" -> "tshirttop"``)."""
    return "".join(c for c in name.lower() if c.isalnum())


@dataclass(frozen=True)
class ClassLabel(ModalityKind):
    """One class per sample (image classification), stored as its index in ASCII (``.cls``).

    ``.cls`` is WebDataset's usual extension for an integer class label written as text, so a
    member reads ``00000012.label.cls`` -> ``b"7"``. The class names are part of the kind, hence
    of the manifest. A crop or flip does not change what the whole image shows, so ``augment``
    is the identity.

    Args:
        class_names: the name of each class; valid labels are ``0 .. len(class_names) - 1``.
    """

    class_names: tuple[str, ...] = ()

    extension: ClassVar[str] = "cls"

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("ClassLabel needs class_names (one name per class)")
        if not all(isinstance(name, str) and name for name in self.class_names):
            raise ValueError(f"ClassLabel: class names must be non-empty str: {self.class_names}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"ClassLabel: class names repeat: {self.class_names}")

    @property
    def num_classes(self) -> int:
        """Number of classes C (labels are 0 .. C - 1)."""
        return len(self.class_names)

    def encode(self, value: int) -> bytes:
        """Label -> its decimal digits in ASCII (``7 -> b"7"``)."""
        return str(int(value)).encode("ascii")

    def decode(self, data: bytes) -> int:
        """ASCII decimal digits (surrounding whitespace allowed) -> label."""
        try:
            return int(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError) as error:
            raise DataError(f"class label is not an integer: {bytes(data[:20])!r}") from error

    def validate(self, value: Any, resolution: int | None = None) -> None:
        """A Python or numpy integer in ``0 .. num_classes - 1`` (the error names the value)."""
        _expect(
            isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_),
            f"expected an integer class label, got {type(value).__name__} {value!r}",
        )
        _expect(
            0 <= value < self.num_classes,
            f"class label {int(value)} outside 0..{self.num_classes - 1} "
            f"({self.num_classes} class_names)",
        )

    def to_tensor(self, value: int) -> torch.Tensor:
        """Label -> 0-d int64 tensor. Shape: ()."""
        return torch.tensor(int(value), dtype=torch.long)

    def to_stored(self, value: torch.Tensor | int) -> int:
        """0-d tensor (or int) -> int."""
        return int(value)

    def collate(self, values: Sequence[torch.Tensor | int]) -> torch.Tensor:
        """B labels (0-d tensors or ints) -> int64 (B,)."""
        return torch.tensor([int(v) for v in values], dtype=torch.long)

    def text_chunks(self, value: int) -> list[str]:
        """One chunk: the class name (so a text domain can read or predict the class)."""
        return [self.class_names[int(value)]]

    def from_text(self, text: str) -> int:
        """The class whose name best matches ``text`` (case, spaces and punctuation ignored).

        Tolerant, as generated text may be re-spaced by the WordPiece decoder
        (``"t - shirt / top"``): an exact match of the reduced names wins, else the closest one.
        """
        import difflib

        keys = [_class_key(name) for name in self.class_names]
        key = _class_key(text)
        if key in keys:
            return keys.index(key)
        scores = [difflib.SequenceMatcher(None, key, k).ratio() for k in keys]
        return int(np.argmax(scores))

    def render(self, value: torch.Tensor | int, ax: Axes) -> None:
        """The class name (and index) as text."""
        index = int(value)
        _text_axis(ax, f"{self.class_names[index]} ({index})")


# ----------------------------------------------------------------------------------------------
# Vectors and continuous sequences
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalVector(ModalityKind):
    """One float vector per sample (camera pose, global embeddings), stored as float32 npy.

    Args:
        dim: vector length D.
        field_names: optional name of each entry, for tables.
    """

    dim: int = 1
    field_names: tuple[str, ...] = ()

    extension: ClassVar[str] = "npy"

    def __post_init__(self) -> None:
        if self.field_names and len(self.field_names) != self.dim:
            raise ValueError(
                f"GlobalVector: {len(self.field_names)} field_names for dim={self.dim}"
            )

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _npy_bytes(value.astype(np.float32))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _npy_array(data).astype(np.float32)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(
            isinstance(value, np.ndarray) and value.shape == (self.dim,),
            f"expected shape ({self.dim},), got {getattr(value, 'shape', None)}",
        )
        _expect(bool(np.isfinite(value).all()), "vector has non-finite values")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:  # noqa: D102
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def to_stored(self, value: torch.Tensor) -> np.ndarray:  # noqa: D102
        return value.detach().cpu().numpy()

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        names = self.field_names or tuple(str(i) for i in range(self.dim))
        _text_axis(
            ax, "\n".join(f"{n}: {v:.3g}" for n, v in zip(names, value.tolist(), strict=True))
        )


@dataclass(frozen=True)
class SequenceEmbedding(ModalityKind):
    """A variable-length sequence of continuous vectors (e.g. a text encoder's token embeddings).

    Input only in 4M-21 (the model never predicts it). Stored as float16 (L, D) npy.

    Args:
        dim: embedding size D.
        max_length: the longest sequence accepted.
    """

    dim: int = 384
    max_length: int = 77

    extension: ClassVar[str] = "npy"

    def encode(self, value: np.ndarray) -> bytes:  # noqa: D102
        return _npy_bytes(value.astype(np.float16))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        return _npy_array(data).astype(np.float32)

    def validate(self, value: Any, resolution: int | None = None) -> None:  # noqa: D102
        _expect(
            isinstance(value, np.ndarray)
            and value.ndim == 2
            and value.shape[1] == self.dim
            and 0 < value.shape[0] <= self.max_length,
            f"expected shape (1..{self.max_length}, {self.dim}), "
            f"got {getattr(value, 'shape', None)}",
        )
        _expect(bool(np.isfinite(value).all()), "embedding has non-finite values")

    def to_tensor(self, value: np.ndarray) -> torch.Tensor:  # noqa: D102
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def to_stored(self, value: torch.Tensor) -> np.ndarray:  # noqa: D102
        return value.detach().cpu().numpy()

    def collate(self, values: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pad to the longest: ``{"emb": (B, L, D), "mask": (B, L) bool, True = valid}``."""
        length = max(v.shape[0] for v in values)
        emb = torch.zeros(len(values), length, self.dim)
        mask = torch.zeros(len(values), length, dtype=torch.bool)
        for i, v in enumerate(values):
            emb[i, : v.shape[0]] = v
            mask[i, : v.shape[0]] = True
        return {"emb": emb, "mask": mask}

    def render(self, value: torch.Tensor, ax: Axes) -> None:  # noqa: D102
        ax.imshow(value.T.cpu().numpy(), aspect="auto", cmap="coolwarm")
