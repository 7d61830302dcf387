"""Modalities derived from the rendered maps: edges, boxes, palette, metadata, camera vector."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fourm_lightning.datamodules.synth.scene import Scene
from fourm_lightning.modalities.vocab import CAMERA_FIELDS, MAX_PALETTE_COLORS, METADATA_RANGES

#: Rec. 601 luma weights (the usual "grayscale" of an sRGB image).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Palette colours with a smaller share of the pixels are dropped.
MIN_PALETTE_SHARE = 0.005


def canny_sigma(resolution: int) -> float:
    """Gaussian sigma of the Canny detector: 1.2 at 64x64, growing with the resolution."""
    return float(min(3.0, max(1.0, 1.2 * resolution / 64)))


def canny_edges(rgb: np.ndarray) -> np.ndarray:
    """Canny edges of the grayscale image. (H, W, 3) uint8 -> (H, W) uint8 in {0, 1}."""
    from skimage.feature import canny

    gray = (rgb.astype(np.float32) @ LUMA) / 255.0
    return canny(gray, sigma=canny_sigma(rgb.shape[0])).astype(np.uint8)


def segment_edges(segment: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour in another segment. (H, W) int -> (H, W) uint8 in {0, 1}."""
    edge = np.zeros(segment.shape, dtype=bool)
    horiz = segment[:, 1:] != segment[:, :-1]
    vert = segment[1:] != segment[:-1]
    edge[:, 1:] |= horiz
    edge[:, :-1] |= horiz
    edge[1:] |= vert
    edge[:-1] |= vert
    return edge.astype(np.uint8)


def boxes(instance: np.ndarray, scene: Scene) -> list[dict[str, Any]]:
    """One box per object with visible pixels, in instance order.

    Args:
        instance: (H, W) uint8 instance map (0 = room).
        scene: the scene (object attributes).

    Returns:
        ``[{"box": [x0, y0, x1, y1], "class", "color", "size", "instance"}]`` with PIXEL xyxy
        boxes, x1 and y1 exclusive: exactly the extent of each instance mask.
    """
    out = []
    for k, obj in enumerate(scene.objects, start=1):
        mask = instance == k
        cols = np.flatnonzero(mask.any(axis=0))
        if cols.size == 0:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        out.append(
            {
                "box": [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1],
                "class": obj.shape,
                "color": obj.color,
                "size": obj.size,
                "instance": k,
            }
        )
    return out


def color_palette(rgb: np.ndarray, max_colors: int = MAX_PALETTE_COLORS) -> list[dict[str, Any]]:
    """Dominant colours by weighted k-means on a 16-level-per-channel colour histogram.

    Deterministic: the centres start from a weighted farthest-point pass (no random init), and
    the histogram makes the cost independent of the image size (at most 4096 bins).

    Args:
        rgb: (H, W, 3) uint8 image.
        max_colors: most colours returned.

    Returns:
        ``[{"rgb": [r, g, b], "weight": share}]`` sorted by share, descending; colours holding
        less than ``MIN_PALETTE_SHARE`` of the pixels are dropped.
    """
    px = rgb.reshape(-1, 3).astype(np.int64)
    key = (px[:, 0] >> 4) * 256 + (px[:, 1] >> 4) * 16 + (px[:, 2] >> 4)
    counts = np.bincount(key, minlength=4096)
    bins = np.flatnonzero(counts)
    weight = counts[bins].astype(np.float64)
    colors = (
        np.stack(
            [np.bincount(key, weights=px[:, c], minlength=4096)[bins] for c in range(3)], axis=1
        )
        / weight[:, None]
    )
    k = min(max_colors, len(bins))
    centers = [colors[int(np.argmax(weight))]]
    d2 = ((colors - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        score = weight * d2
        if score.max() <= 0:
            break
        i = int(np.argmax(score))
        centers.append(colors[i])
        d2 = np.minimum(d2, ((colors - colors[i]) ** 2).sum(1))
    center = np.array(centers)
    for _ in range(12):
        label = ((colors[:, None, :] - center[None]) ** 2).sum(-1).argmin(1)
        mass = np.bincount(label, weights=weight, minlength=len(center))
        sums = np.stack(
            [
                np.bincount(label, weights=weight * colors[:, c], minlength=len(center))
                for c in (0, 1, 2)
            ],
            axis=1,
        )
        keep = mass > 0
        new = sums[keep] / mass[keep, None]
        if new.shape == center.shape and np.allclose(new, center, atol=0.5):
            center = new
            break
        center = new
    label = ((colors[:, None, :] - center[None]) ** 2).sum(-1).argmin(1)
    mass = np.bincount(label, weights=weight, minlength=len(center)) / weight.sum()
    order = np.argsort(-mass, kind="stable")
    return [
        {
            "rgb": [round(float(c)) for c in np.clip(center[i], 0, 255)],
            "weight": round(float(mass[i]), 4),
        }
        for i in order
        if mass[i] >= MIN_PALETTE_SHARE
    ]


def _clip(name: str, value: float) -> float:
    low, high = METADATA_RANGES[name]
    return float(min(max(value, low), high))


def geometric_complexity(normal: np.ndarray) -> float:
    """Mean angle between each normal and the mean normal of its 3x3 neighbourhood, over pi.

    0 for a single plane; grows with curved surfaces and with creases and depth discontinuities
    between surfaces. Always in [0, 1].

    Args:
        normal: (H, W, 3) unit normals.
    """
    h, w, _ = normal.shape
    pad = np.pad(normal, ((1, 1), (1, 1), (0, 0)), mode="edge")
    acc = np.zeros_like(normal)
    for dy in range(3):
        for dx in range(3):
            acc += pad[dy : dy + h, dx : dx + w]
    acc /= np.maximum(np.linalg.norm(acc, axis=-1, keepdims=True), 1e-6)
    cos = np.clip((normal * acc).sum(-1), -1.0, 1.0)
    return float(np.arccos(cos).mean() / math.pi)


def metadata(
    rgb: np.ndarray,
    semseg: np.ndarray,
    normal: np.ndarray,
    visible: np.ndarray,
    unoccluded: np.ndarray,
) -> dict[str, float | int]:
    """The 4M-21 style image metadata, each value inside ``METADATA_RANGES``.

    Args:
        rgb: (H, W, 3) uint8 image.
        semseg: (H, W) uint8 classes.
        normal: (H, W, 3) camera-space normals.
        visible: (N,) visible pixel count of each object.
        unoccluded: (N,) pixel count of each object rendered without the other objects.

    Returns:
        brightness (mean luma, 0..255), contrast (luma std), saturation (mean HSV saturation
        x 255), colorfulness (Hasler-Suesstrunk, clipped to 150), entropy (bits, 256-bin luma
        histogram), instance_count (visible objects), semantic_diversity (semseg classes present),
        occlusion (mean over objects in view of the share of their own silhouette hidden by other
        objects), walkability (floor share of the pixels), geometric_complexity (see
        ``geometric_complexity``).
    """
    f = rgb.reshape(-1, 3).astype(np.float32)
    luma = f @ LUMA
    mx = f.max(1)
    mn = f.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    rg = f[:, 0] - f[:, 1]
    yb = 0.5 * (f[:, 0] + f[:, 1]) - f[:, 2]
    colorfulness = math.sqrt(float(rg.var() + yb.var())) + 0.3 * math.sqrt(
        float(rg.mean() ** 2 + yb.mean() ** 2)
    )
    hist = np.bincount(np.clip(np.rint(luma), 0, 255).astype(np.int64), minlength=256)
    p = hist[hist > 0] / luma.size
    entropy = float(-(p * np.log2(p)).sum())
    in_view = unoccluded > 0
    occlusion = (
        float(np.mean(1.0 - visible[in_view] / unoccluded[in_view])) if in_view.any() else 0.0
    )
    return {
        "brightness": _clip("brightness", float(luma.mean())),
        "contrast": _clip("contrast", float(luma.std())),
        "saturation": _clip("saturation", float(sat.mean()) * 255.0),
        "colorfulness": _clip("colorfulness", colorfulness),
        "entropy": _clip("entropy", entropy),
        "instance_count": int(np.count_nonzero(visible)),
        "semantic_diversity": int(np.unique(semseg).size),
        "occlusion": _clip("occlusion", occlusion),
        "walkability": _clip("walkability", float(np.mean(semseg == 0))),
        "geometric_complexity": _clip("geometric_complexity", geometric_complexity(normal)),
    }


def camera_vector(scene: Scene) -> np.ndarray:
    """The ``camera`` modality in ``CAMERA_FIELDS`` order. Shape: (10,) float32.

    Position (3), unit forward (3), vertical fov in degrees, unit direction towards the light (3;
    for a point light, from the camera's look-at point).
    """
    cam = scene.camera
    vec = [*cam.position, *cam.forward, cam.fov_deg, *scene.light.direction]
    assert len(vec) == len(CAMERA_FIELDS)
    return np.asarray(vec, dtype=np.float32)
