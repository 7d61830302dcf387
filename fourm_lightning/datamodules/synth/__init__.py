"""Procedural 3D scene generator: the built-in multimodal dataset.

``generate_sample(seed, split, index, config)`` samples a small room with 1-6 objects (spheres,
cubes, cylinders, cones in named colours and two sizes), ray-casts it with numpy, and returns all
aligned modalities (RGB, depth, normals, semantic and instance maps, boxes, caption, edges,
palette, metadata, camera vector, scene graph). Modules:

* ``config``: ``SceneConfig``.
* ``scene``: scene graph sampling (room, objects, camera, light).
* ``geometry``: analytic ray intersections and normals.
* ``texture``: procedural floor and wall patterns.
* ``render``: vectorised ray casting, shading, hard shadows, anti-aliasing.
* ``caption``: captions with many phrasings, plus the structured claims they make.
* ``derived``: edges, boxes, palette, metadata, camera vector.
* ``generate``: ``generate_sample``.
"""

from __future__ import annotations

from fourm_lightning.datamodules.synth.config import SceneConfig
from fourm_lightning.datamodules.synth.generate import generate_sample

#: Bumped whenever the same arguments would give different samples.
GENERATOR_VERSION = "1"

__all__ = ["GENERATOR_VERSION", "SceneConfig", "generate_sample"]
