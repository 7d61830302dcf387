"""Caption-to-image agreement: named shapes in the semseg, named colours in the RGB."""

import math

import pytest
import torch

from fourm_lightning.modalities.vocab import COLORS, SEMSEG_CLASSES
from fourm_lightning.transfer.caption_image import (
    agreement_table,
    caption_agreement,
    classify_colors,
)

NAMES = list(COLORS)


def image_of(colors, scale=1.0, size=4):
    """(3, size, size * len(colors)) uint8: one block per colour, darkened by ``scale``."""
    blocks = [
        torch.tensor(COLORS[c], dtype=torch.float32)[:, None, None].expand(3, size, size)
        for c in colors
    ]
    return (torch.cat(blocks, dim=2) * scale).round().to(torch.uint8)


@pytest.mark.parametrize("scale", [1.0, 0.35])
def test_every_object_colour_is_recognised_lit_or_in_shadow(scale):
    found = classify_colors(image_of(NAMES, scale))
    per_block = found.reshape(4, len(NAMES), 4)[0, :, 0]
    assert [NAMES[i] for i in per_block] == NAMES


def test_white_and_black_pixels_count_as_gray():
    rgb = torch.tensor([[[250]], [[245]], [[240]]], dtype=torch.uint8).expand(3, 2, 2)
    assert (classify_colors(rgb) == NAMES.index("gray")).all()
    assert (classify_colors(torch.zeros(3, 2, 2, dtype=torch.uint8)) == NAMES.index("gray")).all()


def scene(shapes_and_colors, size=8):
    """A semseg map and an image: each (shape, colour) fills one 8x8 block on a wall."""
    width = size * max(len(shapes_and_colors), 1)
    semseg = torch.full((size, width), SEMSEG_CLASSES.index("wall"), dtype=torch.long)
    rgb = torch.full((3, size, width), 200, dtype=torch.uint8)
    for i, (shape, color) in enumerate(shapes_and_colors):
        semseg[:, i * size : (i + 1) * size] = SEMSEG_CLASSES.index(shape)
        rgb[:, :, i * size : (i + 1) * size] = image_of([color], size=size)
    return semseg, rgb


def test_named_shapes_and_colours_are_counted_once_each():
    semseg, rgb = scene([("cube", "red")])
    result = caption_agreement("A red cube left of a blue sphere. Another red cube.", semseg, rgb)
    assert (result.shapes_named, result.shapes_found) == (2, 1)
    assert (result.colors_named, result.colors_found) == (2, 1)
    assert result.shares() == {"shapes": 0.5, "colors": 0.5, "all": 0.5}


def test_colours_of_the_walls_do_not_count():
    semseg, rgb = scene([("cube", "red")])
    rgb[:] = image_of(["blue"], size=8).repeat(1, 1, 1)  # everything blue, the cube included
    semseg[:] = SEMSEG_CLASSES.index("wall")
    result = caption_agreement("a blue cube", semseg, rgb)
    assert result.colors_found == 0 and result.shapes_found == 0


def test_too_few_pixels_do_not_count():
    semseg, rgb = scene([("cone", "green")], size=2)  # 4 pixels
    assert caption_agreement("a green cone", semseg, rgb, min_pixels=8).shapes_found == 0
    assert caption_agreement("a green cone", semseg, rgb, min_pixels=4).shapes_found == 1


def test_a_caption_without_mentions_has_no_share():
    semseg, rgb = scene([("cube", "red")])
    shares = caption_agreement("an empty room", semseg, rgb).shares()
    assert all(math.isnan(v) for v in shares.values())


def test_the_table_scores_each_output_against_the_next_caption_as_chance():
    captions = ["a red cube", "a blue sphere"]
    outputs = [scene([("cube", "red")]), scene([("sphere", "blue")])]
    table = agreement_table(captions, outputs, outputs)
    assert table["generated"]["all"] == 1.0 and table["true image"]["all"] == 1.0
    assert table["another caption"]["all"] == 0.0


def test_bad_inputs_are_refused():
    semseg, rgb = scene([("cube", "red")])
    with pytest.raises(ValueError, match="differ in size"):
        caption_agreement("a red cube", semseg[:, :4], rgb)
    with pytest.raises(ValueError, match="at least 2"):
        agreement_table(["a red cube"], [(semseg, rgb)], [(semseg, rgb)])
