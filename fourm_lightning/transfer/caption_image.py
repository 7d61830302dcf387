"""Does a generated image show what its caption names? Shapes in the semseg, colours in the RGB.

Caption-to-RGB is judged by eye in the papers. On the built-in dataset it can be counted: the
chained generation (caption -> semseg -> depth -> RGB) produces a semantic map and an image, and
the caption parser of ``metrics.py`` lists the shapes and colours the caption names. A named shape
is *found* when the generated semseg has at least ``min_pixels`` pixels of its class; a named
colour when at least ``min_pixels`` object pixels of the generated RGB are closest to it among
the dataset's object colours (``COLORS``).

Two controls make the number readable: the same measure on the true image and semseg (how well
the measure itself works, shading included) and on the generated outputs against *another*
sample's caption (what agreement a generator ignoring its caption gets by chance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fourm_lightning.modalities.vocab import COLORS, SEMSEG_CLASSES, SHAPE_CLASSES
from fourm_lightning.transfer.metrics import parse_caption

#: Chroma (max - min channel over max) under which an object pixel counts as gray.
GRAY_CHROMA = 0.25


def classify_colors(rgb: Tensor) -> Tensor:
    """The nearest named object colour of every pixel, by direction in RGB (shading-invariant).

    Args:
        rgb: (3, H, W) uint8 or float image.

    Returns:
        (H, W) long: index into ``list(COLORS)``.
    """
    names = list(COLORS)
    pixels = rgb.float().flatten(1).T  # (H*W, 3)
    palette = torch.tensor([COLORS[n] for n in names], dtype=torch.float32)
    chromatic = [i for i, n in enumerate(names) if n != "gray"]
    cosine = (
        torch.nn.functional.normalize(pixels, dim=1)
        @ torch.nn.functional.normalize(palette[chromatic], dim=1).T
    )
    nearest = torch.tensor(chromatic)[cosine.argmax(1)]
    peak = pixels.max(1).values
    chroma = (peak - pixels.min(1).values) / peak.clamp_min(1.0)
    nearest[chroma < GRAY_CHROMA] = names.index("gray")
    return nearest.reshape(rgb.shape[1:])


@dataclass(frozen=True)
class Agreement:
    """Counts of named shapes and colours, and how many of them the outputs show."""

    shapes_named: int = 0
    shapes_found: int = 0
    colors_named: int = 0
    colors_found: int = 0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(
            self.shapes_named + other.shapes_named,
            self.shapes_found + other.shapes_found,
            self.colors_named + other.colors_named,
            self.colors_found + other.colors_found,
        )

    def shares(self) -> dict[str, float]:
        """``shapes``, ``colors`` and ``all``: the share of named items found (nan if none)."""

        def share(found: int, named: int) -> float:
            return found / named if named else float("nan")

        return {
            "shapes": share(self.shapes_found, self.shapes_named),
            "colors": share(self.colors_found, self.colors_named),
            "all": share(
                self.shapes_found + self.colors_found, self.shapes_named + self.colors_named
            ),
        }


def caption_agreement(caption: str, semseg: Tensor, rgb: Tensor, min_pixels: int = 8) -> Agreement:
    """How many shapes and colours named by ``caption`` appear in a semseg map and an image.

    Args:
        caption: the text (distinct shapes and distinct colours are counted once each).
        semseg: (H, W) class ids in ``SEMSEG_CLASSES`` order.
        rgb: (3, H, W) image of the same size.
        min_pixels: pixels a shape or a colour needs to count as shown.

    Returns:
        The counts for this caption.
    """
    if semseg.shape != rgb.shape[1:]:
        raise ValueError(f"semseg {tuple(semseg.shape)} and rgb {tuple(rgb.shape)} differ in size")
    phrases, _ = parse_caption(caption)
    shapes = {p.shape for p in phrases}
    colors = {p.color for p in phrases if p.color is not None}
    objects = semseg >= SEMSEG_CLASSES.index(SHAPE_CLASSES[0])  # shape classes follow floor, wall
    counts = torch.bincount(semseg.flatten().long(), minlength=len(SEMSEG_CLASSES))
    color_counts = torch.bincount(classify_colors(rgb)[objects], minlength=len(COLORS))
    names = list(COLORS)
    return Agreement(
        shapes_named=len(shapes),
        shapes_found=sum(int(counts[SEMSEG_CLASSES.index(s)] >= min_pixels) for s in shapes),
        colors_named=len(colors),
        colors_found=sum(int(color_counts[names.index(c)] >= min_pixels) for c in colors),
    )


def agreement_table(
    captions: Sequence[str],
    generated: Sequence[tuple[Tensor, Tensor]],
    truth: Sequence[tuple[Tensor, Tensor]],
    min_pixels: int = 8,
) -> dict[str, dict[str, float]]:
    """Agreement of generated outputs with their captions, beside the two controls.

    Args:
        captions: N captions.
        generated: N (semseg (H, W), rgb (3, H, W)) generated from the captions.
        truth: N true (semseg, rgb) of the same samples.
        min_pixels: see ``caption_agreement``.

    Returns:
        ``{"generated": shares, "true image": shares, "another caption": shares}``; the last
        scores each generated output against the next sample's caption (N >= 2).
    """
    n = len(captions)
    if not n == len(generated) == len(truth):
        raise ValueError(f"{n} captions, {len(generated)} generated, {len(truth)} true samples")
    if n < 2:
        raise ValueError("the shuffled-caption control needs at least 2 samples")

    def total(pairs: Sequence[tuple[str, tuple[Tensor, Tensor]]]) -> dict[str, float]:
        sum_ = Agreement()
        for caption, (semseg, rgb) in pairs:
            sum_ = sum_ + caption_agreement(caption, semseg, rgb, min_pixels)
        return sum_.shares()

    shifted = [captions[(i + 1) % n] for i in range(n)]
    return {
        "generated": total(list(zip(captions, generated, strict=True))),
        "true image": total(list(zip(captions, truth, strict=True))),
        "another caption": total(list(zip(shifted, generated, strict=True))),
    }


__all__ = ["Agreement", "agreement_table", "caption_agreement", "classify_colors"]
