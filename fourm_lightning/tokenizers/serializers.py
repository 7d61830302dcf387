"""Structured modalities as token strings of the shared text vocabulary, and back.

Each serializer turns a value of a text-like modality (the stored forms of ``BoxesText``,
``MetadataText`` and ``PaletteText``) into a space-separated string of number tokens ``v{s}={n}``
and word tokens, which ``TextTokenizer`` maps one-to-one onto ids; ``parse`` inverts it.

Quantization (N = ``num_values``, the number tokens per slot):

- boxes: each normalized coordinate becomes ``round(x * (N - 1))``; parsing gives ``n / (N - 1)``,
  so the error is at most ``1 / (2 (N - 1))`` per coordinate. Classes and attributes are exact.
- metadata: float keys are binned into ``num_bins`` equal bins over their range and parse back to
  the bin centre (error at most half a bin); integer keys (counts) are kept exactly, clamped to
  ``0..N-1``.
- palette: RGB values are integers 0..255 and round-trip exactly; weights are not serialized (as in
  4M-21) and parse back as equal shares.

``parse`` is meant for model output as much as for round trips: it never raises, skips malformed
chunks and returns what it can read. ``serialize`` validates its input and raises ``ValueError`` on
bad data, because a bad value there is a data bug worth seeing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fourm_lightning.modalities.vocab import (
    COLORS,
    MAX_PALETTE_COLORS,
    METADATA_RANGES,
    SHAPE_CLASSES,
)
from fourm_lightning.tokenizers.text import number_token, parse_number_token

#: Metadata keys that hold counts, serialized exactly rather than binned.
INTEGER_METADATA_KEYS: tuple[str, ...] = ("instance_count", "semantic_diversity")


def _number(token: str, num_values: int) -> tuple[int, int] | None:
    parsed = parse_number_token(token)
    if parsed is None or parsed[1] >= num_values:
        return None
    return parsed


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def box_sort_key(item: Mapping[str, Any]) -> float:
    """4M's box order: squared distance of the top-left corner (x0, y0) to the origin.

    Args:
        item: a box record with ``"box": [x0, y0, x1, y1]``.

    Returns:
        ``x0**2 + y0**2``.
    """
    x0, y0 = item["box"][0], item["box"][1]
    return float(x0) ** 2 + float(y0) ** 2


class BoxSerializer:
    """Boxes <-> ``v0=x0 v1=y0 v2=x1 v3=y1 [attribute words] class`` chunks.

    Boxes are serialized sorted by ``box_sort_key`` (Python's sort is stable, so ties keep their
    input order). Fields other than ``box``, ``class`` and the configured attributes are dropped.

    Args:
        num_values: N, values per number slot; coordinates become ``round(x * (N - 1))``.
        class_names: valid classes; a chunk without one is skipped by ``parse``.
        attributes: optional per-box word fields in serialization order, each with its allowed
            words (default: ``{"color": COLORS}``). Words must be distinct across fields and
            classes, so that ``parse`` can tell them apart without positions.
    """

    def __init__(
        self,
        num_values: int = 1000,
        class_names: Sequence[str] = SHAPE_CLASSES,
        attributes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if num_values < 2:
            raise ValueError(f"num_values must be >= 2, got {num_values}")
        self.num_values = num_values
        self.class_names = tuple(class_names)
        self.attributes = {
            name: tuple(words)
            for name, words in (
                {"color": tuple(COLORS)} if attributes is None else attributes
            ).items()
        }
        if {"box", "class"} & set(self.attributes):
            raise ValueError("attributes cannot be named 'box' or 'class'")
        self._word_field: dict[str, str] = {}
        for field, words in [("class", self.class_names), *self.attributes.items()]:
            for word in words:
                if word in self._word_field:
                    raise ValueError(f"word {word!r} belongs to two box fields")
                self._word_field[word] = field

    @property
    def words(self) -> tuple[str, ...]:
        """Every word this serializer writes (for the text vocabulary's word tokens)."""
        return tuple(self._word_field)

    @property
    def max_error(self) -> float:
        """Largest coordinate error of a round trip, ``1 / (2 (N - 1))``."""
        return 0.5 / (self.num_values - 1)

    def quantize(self, x: float) -> int:
        """Normalized coordinate -> number token value.

        Args:
            x: coordinate, clamped to [0, 1].

        Returns:
            ``round(x * (N - 1))`` in 0..N-1.
        """
        return round(min(max(float(x), 0.0), 1.0) * (self.num_values - 1))

    def serialize(self, boxes: Sequence[Mapping[str, Any]]) -> str:
        """Boxes -> token string.

        Args:
            boxes: ``[{"box": [x0, y0, x1, y1], "class": str, <attribute>: str, ...}]`` with
                normalized coordinates.

        Returns:
            Space-separated tokens, one chunk per box, empty for no boxes.
        """
        chunks: list[str] = []
        for item in sorted(boxes, key=self._checked_sort_key):
            if item["class"] not in self.class_names:
                raise ValueError(f"unknown class {item['class']!r} in box {dict(item)!r}")
            tokens = [number_token(s, self.quantize(c)) for s, c in enumerate(item["box"])]
            for field, words in self.attributes.items():
                if field in item and item[field] is not None:
                    if item[field] not in words:
                        raise ValueError(f"unknown {field} {item[field]!r} in box {dict(item)!r}")
                    tokens.append(item[field])
            tokens.append(item["class"])
            chunks.append(" ".join(tokens))
        return " ".join(chunks)

    @staticmethod
    def _checked_sort_key(item: Mapping[str, Any]) -> float:
        box = item.get("box") if isinstance(item, Mapping) else None
        if box is None or len(box) != 4 or not all(_finite(c) for c in box) or "class" not in item:
            raise ValueError(f"not a box record with 4 finite coordinates and a class: {item!r}")
        return box_sort_key(item)

    def parse(self, text: str) -> list[dict[str, Any]]:
        """Token string -> boxes (tolerant; never raises).

        A chunk is four consecutive number tokens in slots 0, 1, 2, 3, followed by words up to
        the next number token; it yields a box if one of those words is a class (the first class
        and the first word of each attribute win). Anything else is skipped. Coordinates are not
        reordered, so a model may produce x0 > x1; callers that need valid boxes should check.

        Args:
            text: decoded text, e.g. ``"v0=12 v1=40 v2=300 v3=420 red cube"``.

        Returns:
            ``[{"box": [x0, y0, x1, y1], "class": str, <attribute>: str}]`` in text order.
        """
        tokens = text.split() if isinstance(text, str) else []
        boxes: list[dict[str, Any]] = []
        i = 0
        while i < len(tokens):
            coords = [_number(t, self.num_values) for t in tokens[i : i + 4]]
            if len(coords) < 4 or any(c is None or c[0] != s for s, c in enumerate(coords)):
                i += 1
                continue
            i += 4
            record: dict[str, Any] = {
                "box": [c[1] / (self.num_values - 1) for c in coords if c is not None]
            }
            while i < len(tokens) and parse_number_token(tokens[i]) is None:
                field = self._word_field.get(tokens[i])
                if field is not None and field not in record:
                    record[field] = tokens[i]
                i += 1
            if "class" in record:
                boxes.append(record)
        return boxes


class MetadataSerializer:
    """Metadata ``{key: value}`` <-> ``v1=<key index> v0=<value token>`` chunks.

    Args:
        ranges: (low, high) per key; the key order defines the key indices.
        num_bins: bins per float key (4M: 50).
        num_values: N, values per number slot.
        integer_keys: keys holding counts, serialized exactly (clamped to their range and to
            0..N-1) instead of binned.
    """

    def __init__(
        self,
        ranges: Mapping[str, tuple[float, float]] = METADATA_RANGES,
        num_bins: int = 50,
        num_values: int = 1000,
        integer_keys: Sequence[str] = INTEGER_METADATA_KEYS,
    ) -> None:
        self.ranges = {key: (float(lo), float(hi)) for key, (lo, hi) in ranges.items()}
        self.keys = tuple(self.ranges)
        self.num_bins = num_bins
        self.num_values = num_values
        self.integer_keys = frozenset(key for key in integer_keys if key in self.ranges)
        if not 1 <= num_bins <= num_values:
            raise ValueError(f"num_bins must be in 1..num_values={num_values}, got {num_bins}")
        if len(self.keys) > num_values:
            raise ValueError(f"{len(self.keys)} keys do not fit in {num_values} key indices")
        for key, (lo, hi) in self.ranges.items():
            if not hi > lo:
                raise ValueError(f"metadata {key!r}: empty range ({lo}, {hi})")
        self._index = {key: i for i, key in enumerate(self.keys)}

    @property
    def words(self) -> tuple[str, ...]:
        """Words this serializer writes (none: keys are written as indices)."""
        return ()

    def bin_width(self, key: str) -> float:
        """Width of one bin of a float key (1 for integer keys).

        Args:
            key: metadata key.

        Returns:
            ``(high - low) / num_bins``.
        """
        if key in self.integer_keys:
            return 1.0
        lo, hi = self.ranges[key]
        return (hi - lo) / self.num_bins

    def _integer_bounds(self, key: str) -> tuple[int, int]:
        lo, hi = self.ranges[key]
        return max(0, math.ceil(lo)), min(self.num_values - 1, math.floor(hi))

    def to_token_value(self, key: str, value: float) -> int:
        """Value -> number token value (bin index, or the count itself for integer keys).

        Args:
            key: metadata key.
            value: finite number; clamped to the key's range.

        Returns:
            0..num_bins-1 for float keys, the clamped count for integer keys.
        """
        if key in self.integer_keys:
            low, high = self._integer_bounds(key)
            return min(max(round(value), low), high)
        lo, hi = self.ranges[key]
        position = (value - lo) / (hi - lo) * self.num_bins
        return min(max(math.floor(position), 0), self.num_bins - 1)

    def from_token_value(self, key: str, token_value: int) -> float:
        """Number token value -> value (the bin centre for float keys).

        Args:
            key: metadata key.
            token_value: as produced by ``to_token_value``.

        Returns:
            The value.
        """
        if key in self.integer_keys:
            return float(token_value)
        lo, _ = self.ranges[key]
        return lo + (token_value + 0.5) * self.bin_width(key)

    def serialize(self, metadata: Mapping[str, float], order: Sequence[str] | None = None) -> str:
        """Metadata -> token string.

        Args:
            metadata: ``{key: value}`` with known keys and finite values.
            order: key order of the chunks (default: the ``ranges`` order). The masking code
                shuffles chunks itself, so a fixed order here keeps serialization deterministic.

        Returns:
            Space-separated ``v1=<key index> v0=<value>`` chunks.
        """
        keys = [key for key in (self.keys if order is None else order) if key in metadata]
        unknown = set(metadata) - set(self._index)
        if unknown:
            raise ValueError(f"unknown metadata keys {sorted(unknown)}")
        if len(keys) != len(metadata) or len(set(keys)) != len(keys):
            raise ValueError(f"order {order!r} does not list every metadata key exactly once")
        chunks = []
        for key in keys:
            value = metadata[key]
            if not _finite(value):
                raise ValueError(f"metadata {key!r} is not a finite number: {value!r}")
            chunks.append(
                f"{number_token(1, self._index[key])} "
                f"{number_token(0, self.to_token_value(key, float(value)))}"
            )
        return " ".join(chunks)

    def parse(self, text: str) -> dict[str, float]:
        """Token string -> metadata (tolerant; never raises).

        A chunk is a ``v1=<key index>`` token directly followed by a ``v0=<value>`` token with a
        value valid for that key; other tokens are skipped, and the first chunk of a key wins.

        Args:
            text: decoded text.

        Returns:
            ``{key: value}`` with bin centres for float keys and counts for integer keys, in text
            order.
        """
        tokens = text.split() if isinstance(text, str) else []
        out: dict[str, float] = {}
        for first, second in itertools.pairwise(tokens):
            key_token, value_token = (
                _number(first, self.num_values),
                _number(second, self.num_values),
            )
            if key_token is None or value_token is None:
                continue
            if key_token[0] != 1 or value_token[0] != 0 or key_token[1] >= len(self.keys):
                continue
            key = self.keys[key_token[1]]
            value = value_token[1]
            valid = (
                self._integer_bounds(key)[0] <= value <= self._integer_bounds(key)[1]
                if key in self.integer_keys
                else value < self.num_bins
            )
            if valid and key not in out:
                out[key] = self.from_token_value(key, value)
        return out


class PaletteSerializer:
    """Colour palette <-> ``v1=k`` followed by 3k ``v0=<0..255>`` tokens (4M-21's format).

    Args:
        num_values: N, values per number slot (at least 256).
        max_colors: the most colours serialized or parsed.
    """

    def __init__(self, num_values: int = 1000, max_colors: int = MAX_PALETTE_COLORS) -> None:
        if num_values < 256:
            raise ValueError(f"palettes need num_values >= 256, got {num_values}")
        self.num_values = num_values
        self.max_colors = max_colors

    @property
    def words(self) -> tuple[str, ...]:
        """Words this serializer writes (none)."""
        return ()

    def serialize(self, palette: Sequence[Mapping[str, Any]]) -> str:
        """Palette -> token string, colours in the given order.

        Args:
            palette: ``[{"rgb": [r, g, b], "weight": w}]`` with integer-valued r, g, b in 0..255
                (weights are ignored).

        Returns:
            ``"v1=k v0=r1 v0=g1 v0=b1 ..."``.
        """
        if len(palette) > self.max_colors:
            raise ValueError(f"{len(palette)} colours, more than max_colors={self.max_colors}")
        tokens = [number_token(1, len(palette))]
        for i, item in enumerate(palette):
            rgb = item.get("rgb") if isinstance(item, Mapping) else None
            if rgb is None or len(rgb) != 3 or not all(_finite(c) for c in rgb):
                raise ValueError(f"colour {i} needs 'rgb' with 3 numbers, got {item!r}")
            for channel in rgb:
                value = round(channel)
                if not 0 <= value <= 255:
                    raise ValueError(f"colour {i}: channel {channel!r} outside 0..255")
                tokens.append(number_token(0, value))
        return " ".join(tokens)

    def parse(self, text: str) -> list[dict[str, Any]]:
        """Token string -> palette (tolerant; never raises).

        Reads the first ``v1=k`` token and the run of ``v0`` tokens right after it; keeps the
        complete triples with values in 0..255, at most ``min(k, max_colors)`` of them.

        Args:
            text: decoded text.

        Returns:
            ``[{"rgb": [r, g, b], "weight": 1 / n}]`` for the n colours read.
        """
        tokens = text.split() if isinstance(text, str) else []
        for start, token in enumerate(tokens):
            header = _number(token, self.num_values)
            if header is None or header[0] != 1:
                continue
            values: list[int] = []
            for following in tokens[start + 1 :]:
                parsed = _number(following, self.num_values)
                if parsed is None or parsed[0] != 0:
                    break
                values.append(parsed[1])
            count = min(header[1], self.max_colors, len(values) // 3)
            colours = [
                values[3 * i : 3 * i + 3]
                for i in range(count)
                if all(v <= 255 for v in values[3 * i : 3 * i + 3])
            ]
            return [{"rgb": rgb, "weight": 1.0 / len(colours)} for rgb in colours]
        return []


__all__ = [
    "INTEGER_METADATA_KEYS",
    "BoxSerializer",
    "MetadataSerializer",
    "PaletteSerializer",
    "box_sort_key",
]
