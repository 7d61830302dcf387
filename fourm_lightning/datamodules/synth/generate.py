"""The public entry point: one deterministic multimodal sample per (seed, split, index)."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from fourm_lightning.datamodules.synth.caption import make_caption
from fourm_lightning.datamodules.synth.config import SceneConfig
from fourm_lightning.datamodules.synth.derived import (
    boxes,
    camera_vector,
    canny_edges,
    color_palette,
    metadata,
    segment_edges,
)
from fourm_lightning.datamodules.synth.render import OBJECT_SEGMENT, RenderOutput, render
from fourm_lightning.datamodules.synth.scene import Scene, sample_scene

#: The settings used when none are given.
DEFAULT_CONFIG = SceneConfig()


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: a pure function of (seed, split, index), no global state."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _r(values: Any, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in values]


def _scene_record(
    scene: Scene,
    out: RenderOutput,
    visible: np.ndarray,
    walls_visible: set[str],
    statements: list[dict[str, Any]],
) -> dict[str, Any]:
    cam = scene.camera
    objects = []
    for k, obj in enumerate(scene.objects, start=1):
        if obj.shape == "sphere":
            dims = {"radius": obj.radius}
        elif obj.shape == "cube":
            dims = {"side": 2.0 * obj.radius}
        else:
            dims = {"radius": obj.radius, "height": obj.height}
        objects.append(
            {
                "instance": k,
                "shape": obj.shape,
                "color": obj.color,
                "size": obj.size,
                "center": _r(obj.center),
                "camera_center": _r(cam.to_camera(obj.center)),
                "rotation_yaw": round(obj.yaw, 5),
                "dims": {key: round(v, 5) for key, v in dims.items()},
                "footprint_radius": round(obj.footprint, 5),
                "material": "shiny" if obj.specular > 0.2 else "matte",
                "visible_pixels": int(visible[k - 1]),
                "unoccluded_pixels": int(out.unoccluded[k - 1]),
            }
        )
    light = scene.light
    return {
        "camera": {
            "position": _r(cam.position),
            "forward": _r(cam.forward),
            "up": _r(cam.up),
            "right": _r(cam.right),
            "target": _r(cam.target),
            "fov": round(cam.fov_deg, 5),  # vertical = horizontal field of view, degrees
        },
        "light": {
            "kind": light.kind,
            "direction": _r(light.direction),
            "position": None if light.position is None else _r(light.position),
            "intensity": round(light.intensity, 5),
            "ambient": round(light.ambient, 5),
        },
        "room": {
            # distances of the x = -a, x = +b, z = -c, z = +d walls from the origin
            "wall_distance": _r(scene.walls),
            "floor": scene.surfaces[0].texture.to_json(),
            "wall": scene.surfaces[0 if len(scene.surfaces) == 1 else 1].texture.to_json(),
            "walls": [
                {
                    "name": s.name,
                    "normal": _r(s.normal),
                    "offset": round(s.offset, 5),
                    "visible": s.name in walls_visible,
                }
                for s in scene.surfaces[1:]
            ],
        },
        "objects": objects,
        "relations": [s for s in statements if s["type"] in ("relation", "near_wall", "order")],
        "caption_statements": statements,
    }


def generate_sample(
    seed: int, split: str, index: int, config: SceneConfig = DEFAULT_CONFIG
) -> dict[str, Any]:
    """Sample, render and describe one scene.

    The result is a pure function of the arguments (same arrays and strings in any process and
    call order). H = W = ``config.resolution``.

    Args:
        seed: dataset seed (non-negative).
        split: split name, e.g. "train" or "val" (hashed into the seed).
        index: sample index within the split (non-negative).
        config: scene settings.

    Returns:
        ``rgb`` uint8 (H, W, 3); ``depth`` float32 (H, W) z-depth in metres; ``normal`` float32
        (H, W, 3) camera-space unit normals; ``semseg`` uint8 (H, W); ``instance`` uint8 (H, W);
        ``det`` list of pixel xyxy boxes (x1, y1 exclusive) with class/color/size/instance;
        ``caption`` str; ``canny_edge`` and ``instance_edge`` uint8 (H, W) in {0, 1};
        ``color_palette`` list of ``{"rgb", "weight"}``; ``metadata`` dict; ``camera`` float32
        (10,); ``scene`` JSON-safe scene graph.
    """
    if not isinstance(config, SceneConfig):
        raise TypeError(f"config must be a SceneConfig, got {type(config).__name__}")
    rng = sample_rng(seed, split, index)
    scene = sample_scene(rng, config)
    out = render(scene, config.resolution, config.supersample)
    n_obj = len(scene.objects)
    visible = np.bincount(out.instance.ravel(), minlength=n_obj + 1)[1:]
    faces = np.unique(out.segment[out.segment < OBJECT_SEGMENT]).tolist()
    walls_visible = {scene.surfaces[f].name for f in faces if f > 0}
    caption, statements = make_caption(scene, visible, walls_visible, rng)
    return {
        "rgb": out.rgb,
        "depth": out.depth,
        "normal": out.normal,
        "semseg": out.semseg,
        "instance": out.instance,
        "det": boxes(out.instance, scene),
        "caption": caption,
        "canny_edge": canny_edges(out.rgb),
        "instance_edge": segment_edges(out.segment),
        "color_palette": color_palette(out.rgb),
        "metadata": metadata(out.rgb, out.semseg, out.normal, visible, out.unoccluded),
        "camera": camera_vector(scene),
        "scene": _scene_record(scene, out, visible, walls_visible, statements),
    }
