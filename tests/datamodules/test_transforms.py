"""Aligned augmentation: one crop and flip moves every modality together."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fourm_lightning.datamodules.build import scene_to_stored
from fourm_lightning.datamodules.shards import iter_samples, read_manifest
from fourm_lightning.datamodules.transforms import (
    AlignedTransform,
    apply_crop,
    collate,
    full_crop,
    sample_crop,
)
from fourm_lightning.modalities import Crop, builtin_modalities, specs_by_name
from fourm_lightning.modalities.vocab import SEMSEG_CLASSES

SPECS = specs_by_name(builtin_modalities())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    source=st.integers(8, 128),
    size=st.integers(4, 96),
)
def test_sample_crop_is_pixel_snapped_and_in_range(seed, source, size):
    crop = sample_crop(np.random.default_rng(seed), source, size)
    assert crop.size == size
    assert crop.top >= 0 and crop.top + crop.height <= 1 + 1e-9
    assert crop.left >= 0 and crop.left + crop.width <= 1 + 1e-9
    # Whole source pixels, so maps (pixel_box) and boxes (fractions) take the same region.
    for value in (crop.top, crop.left, crop.height, crop.width):
        assert abs(value * source - round(value * source)) < 1e-9
    top, left, height, width = crop.pixel_box(source, source)
    assert (top, left, height, width) == tuple(
        round(v * source) for v in (crop.top, crop.left, crop.height, crop.width)
    )
    if (crop.height, crop.width) != (1.0, 1.0):  # not the fallback
        # Area and aspect within the RandomResizedCrop ranges, up to pixel rounding.
        slack = 2.5 / source
        assert 0.6 - 2 * slack <= crop.height * crop.width <= 1.0
        assert 3 / 4 - 3 * slack <= crop.width / crop.height <= 4 / 3 + 3 * slack


def test_sample_crop_is_reproducible_and_flips_half_the_time():
    crops = [sample_crop(np.random.default_rng(0), 64, 64) for _ in range(2)]
    assert crops[0] == crops[1]
    rng = np.random.default_rng(1)
    flips = [sample_crop(rng, 64, 64).hflip for _ in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_eval_transform_is_identity_at_the_stored_size(scene_sample):
    stored = scene_to_stored(scene_sample(1, 16), 16)
    out = AlignedTransform(16, train=False)(stored, SPECS, 16)
    for name, spec in SPECS.items():
        expected = spec.kind.to_tensor(stored[name])
        if isinstance(expected, torch.Tensor):
            torch.testing.assert_close(out[name], expected, msg=name)
        elif name == "det":
            torch.testing.assert_close(out[name]["boxes"], expected["boxes"])
        else:
            assert out[name] == expected, name


def test_eval_transform_resizes_and_collates(scene_sample):
    samples = [
        {**scene_to_stored(scene_sample(i, 16), 16), "__key__": f"{i:08d}"} for i in range(3)
    ]
    transform = AlignedTransform(8, train=False)
    batch = collate([transform(s, SPECS, 16) for s in samples], SPECS)
    assert batch["rgb"].shape == (3, 3, 8, 8) and batch["rgb"].dtype == torch.uint8
    assert batch["depth"].shape == (3, 1, 8, 8) and batch["depth"].dtype == torch.float32
    assert batch["normal"].shape == (3, 3, 8, 8)
    assert batch["semseg"].shape == (3, 8, 8) and batch["semseg"].dtype == torch.uint8
    assert batch["camera"].shape == (3, 10)
    assert batch["__key__"] == ["00000000", "00000001", "00000002"]
    assert isinstance(batch["caption"], list) and len(batch["det"]) == 3


def test_flip_mirrors_maps_and_negates_normal_x(scene_sample):
    stored = scene_to_stored(scene_sample(2, 16), 16)
    tensors = {n: SPECS[n].kind.to_tensor(v) for n, v in stored.items()}
    crop = Crop(top=0.125, left=0.25, height=0.75, width=0.625, hflip=False, size=12)
    plain = apply_crop(tensors, SPECS, crop)
    flipped = apply_crop(tensors, SPECS, Crop(**{**crop.__dict__, "hflip": True}))
    for name in ("rgb", "depth", "semseg", "instance", "canny_edge", "instance_edge"):
        torch.testing.assert_close(flipped[name], plain[name].flip(-1), msg=name)
    torch.testing.assert_close(flipped["normal"][0], -plain["normal"][0].flip(-1))
    torch.testing.assert_close(flipped["normal"][1:], plain["normal"][1:].flip(-1))
    # Boxes mirror: x0' = 1 - x1, x1' = 1 - x0.
    mirrored = plain["det"]["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [1, 0, 1, 0]
    )
    torch.testing.assert_close(flipped["det"]["boxes"], mirrored)


# ----------------------------------------------------------------------------------------------
# Alignment on real generated scenes
# ----------------------------------------------------------------------------------------------


def _augmented(tiny_dataset, count=8, draws=3, size=None):
    """(stored sample, augmented sample, crop) for several samples and crops, half flipped."""
    manifest = read_manifest(tiny_dataset)
    source = manifest.resolution
    out = []
    for i, stored in enumerate(iter_samples(tiny_dataset, "train")):
        if i == count:
            break
        rng = np.random.default_rng(i)
        for draw in range(draws):
            transform = AlignedTransform(size or source, train=True)
            crop = transform.crop(rng, source)
            crop = Crop(**{**crop.__dict__, "hflip": draw % 2 == 0})
            tensors = {n: SPECS[n].kind.to_tensor(v) for n, v in stored.items() if n in SPECS}
            out.append((stored, apply_crop(tensors, SPECS, crop), crop))
    return out


def _source_extent(stored, inst, crop, size):
    """Extent [x0, y0, x1, y1] of instance ``inst`` inside the crop window, in output pixels."""
    instance = SPECS["instance"].kind.to_tensor(stored["instance"])
    source = instance.shape[-1]
    top, left, height, width = crop.pixel_box(source, source)
    window = instance[top : top + height, left : left + width]
    ys, xs = torch.nonzero(window == inst, as_tuple=True)
    if crop.hflip:
        xs = width - 1 - xs
    sx, sy = size / width, size / height
    return [
        xs.min().item() * sx,
        ys.min().item() * sy,
        (xs.max().item() + 1) * sx,
        (ys.max().item() + 1) * sy,
    ]


@pytest.mark.parametrize("size", [None, 24])
def test_semseg_matches_instances_and_boxes_match_masks(tiny_dataset, size):
    checked_boxes = 0
    for stored, sample, crop in _augmented(tiny_dataset, size=size):
        semseg, instance, det = sample["semseg"], sample["instance"], sample["det"]
        s = crop.size
        assert semseg.shape == instance.shape == (s, s)
        kept = set(det["instance"])
        original = {item["instance"]: item["box"] for item in stored["det"]}
        boxes = det["boxes"].tolist()
        for box, cls, inst in zip(boxes, det["class"], det["instance"], strict=True):
            mask = instance == inst
            assert mask.any(), f"box of instance {inst} kept but no pixel of it left"
            # Every pixel of the object carries the object's class in semseg.
            assert set(semseg[mask].unique().tolist()) == {SEMSEG_CLASSES.index(cls)}
            ys, xs = torch.nonzero(mask, as_tuple=True)
            extent = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            pixels = [c * s for c in box]
            # The visible mask always lies inside its box.
            assert extent[0] >= pixels[0] - 1 and extent[1] >= pixels[1] - 1
            assert extent[2] <= pixels[2] + 1 and extent[3] <= pixels[3] + 1
            x0, y0, x1, y1 = original[inst]
            inside = (
                x0 >= crop.left
                and y0 >= crop.top
                and x1 <= crop.left + crop.width
                and y1 <= crop.top + crop.height
            )
            if inside:
                # An object the crop does not cut keeps its whole mask: box == mask extent, where
                # the extent is measured at the source resolution (inside the crop window) and
                # mapped to output pixels. The output mask itself is not the reference once the
                # crop is resized down: nearest resampling by a factor f drops structures thinner
                # than f source pixels (cone tips), so its extent can shrink by more than a pixel
                # without any misalignment. (A cut, partly occluded object may show less of
                # itself than its clipped box.)
                reference = _source_extent(stored, inst, crop, s)
                assert max(abs(a - b) for a, b in zip(reference, pixels, strict=True)) <= 1.0, (
                    f"box {pixels} vs source mask extent {reference} (crop {crop})"
                )
                if size is None:
                    # Without a downscale nothing is dropped: the output mask matches the box.
                    assert max(abs(a - b) for a, b in zip(extent, pixels, strict=True)) <= 1.0
                checked_boxes += 1
        # Every object still clearly visible has its box.
        for inst in instance.unique().tolist():
            if inst and (instance == inst).sum() >= 4:
                ys, xs = torch.nonzero(instance == inst, as_tuple=True)
                if xs.max() > xs.min() and ys.max() > ys.min():
                    assert inst in kept, f"instance {inst} visible but its box was dropped"
    assert checked_boxes > 10


def _depth_normal_agreement(depth, normal, instance, semseg):
    """Fraction of pixels where sign(d depth / dx) == sign(normal x), inside smooth regions."""
    d = depth[0]
    nx = normal[0]
    left, right = d[:, :-2], d[:, 2:]
    centre_nx = nx[:, 1:-1]
    same = (
        (instance[:, :-2] == instance[:, 2:])
        & (instance[:, 1:-1] == instance[:, 2:])
        & (semseg[:, :-2] == semseg[:, 2:])
        & (semseg[:, 1:-1] == semseg[:, 2:])
    )
    grad = right - left
    usable = same & (grad.abs() > 1e-3 * d[:, 1:-1]) & (centre_nx.abs() > 0.25)
    agree = (torch.sign(grad) == torch.sign(centre_nx)) & usable
    return agree.sum().item(), usable.sum().item()


def test_normals_keep_pointing_the_right_way_after_flip(tiny_dataset):
    # A surface whose depth grows to the right faces right (normal x > 0), in perspective too.
    # After a flip, the depth grows the other way, so normal x must have been negated.
    totals = {True: [0, 0], False: [0, 0]}
    wrong_if_not_negated = [0, 0]
    for _, sample, crop in _augmented(tiny_dataset):
        agree, usable = _depth_normal_agreement(
            sample["depth"], sample["normal"], sample["instance"], sample["semseg"]
        )
        totals[crop.hflip][0] += agree
        totals[crop.hflip][1] += usable
        if crop.hflip:
            unnegated = sample["normal"].clone()
            unnegated[0] = -unnegated[0]
            bad, n = _depth_normal_agreement(
                sample["depth"], unnegated, sample["instance"], sample["semseg"]
            )
            wrong_if_not_negated[0] += bad
            wrong_if_not_negated[1] += n
    for flipped, (agree, usable) in totals.items():
        assert usable > 50, f"too few sloped pixels to test (flipped={flipped})"
        assert agree / usable > 0.9, f"flipped={flipped}: {agree}/{usable} agree"
    assert wrong_if_not_negated[0] / wrong_if_not_negated[1] < 0.1


def _edge_contrast(rgb, edges):
    """Mean RGB gradient magnitude on edge pixels over that on non-edge pixels."""
    x = rgb.float()
    gx = torch.zeros_like(x[0])
    gy = torch.zeros_like(x[0])
    gx[:, 1:-1] = (x[:, :, 2:] - x[:, :, :-2]).abs().sum(0)
    gy[1:-1] = (x[:, 2:] - x[:, :-2]).abs().sum(0)
    grad = gx + gy
    on = edges.bool()
    return grad[on].mean().item() / max(grad[~on].mean().item(), 1e-6)


def test_rgb_stays_aligned_with_its_canny_edges(tiny_dataset):
    # canny_edge was computed from the RGB render: after the same crop and flip, edge pixels must
    # still sit on strong RGB gradients, and would not if only one of them had been flipped.
    aligned, misaligned = [], []
    for _, sample, crop in _augmented(tiny_dataset):
        if not sample["canny_edge"].any():
            continue
        aligned.append(_edge_contrast(sample["rgb"], sample["canny_edge"]))
        if crop.hflip:
            misaligned.append(_edge_contrast(sample["rgb"], sample["canny_edge"].flip(-1)))
    assert np.median(aligned) > 2.0
    assert np.median(aligned) > 1.5 * np.median(misaligned)


def test_random_crop_statistics_cover_the_frame(tiny_dataset):
    crops = [crop for _, _, crop in _augmented(tiny_dataset, count=4, draws=10)]
    areas = [c.height * c.width for c in crops]
    assert min(areas) < 0.8 and max(areas) > 0.9
    assert {c.hflip for c in crops} == {True, False}
    assert full_crop(32) == Crop(0.0, 0.0, 1.0, 1.0, False, 32)
    assert math.isclose(np.mean([c.left + c.width / 2 for c in crops]), 0.5, abs_tol=0.1)
