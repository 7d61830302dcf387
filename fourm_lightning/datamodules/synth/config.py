"""Settings of the procedural scene generator."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from fourm_lightning.modalities.vocab import MAX_OBJECTS

#: Smallest and largest accepted output side (pixels).
MIN_RESOLUTION = 32
MAX_RESOLUTION = 256


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"SceneConfig.{name} must be (lo, hi) with {low} <= lo <= hi <= {high}")


@dataclass(frozen=True)
class SceneConfig:
    """What scenes look like and how they are rendered.

    Every field is a plain number or a (low, high) pair, so the config is picklable for worker
    processes and JSON-safe for manifests (``dataclasses.asdict``).

    Args:
        resolution: output side H = W in pixels, 32..256.
        min_objects: fewest objects per scene (>= 1).
        max_objects: most objects per scene (<= ``MAX_OBJECTS``).
        supersample: RGB anti-aliasing factor per axis (RGB is rendered at ``supersample`` times
            the resolution and box-downsampled; the label maps use one centre ray per pixel).
        camera_distance: range of the camera's distance to its look-at point (metres); it is
            increased when needed so that every object fits in the view.
        fov_deg: range of the vertical (= horizontal) field of view in degrees.
        horizon_margin_deg: range of how far below the horizon the top image row looks
            (degrees). Positive, so every ray ends on the floor or a wall.
        small_scale: range of the characteristic half-size of "small" objects (metres).
        large_scale: range of the characteristic half-size of "large" objects (metres).
        object_area: object base centres lie in [-a, a] x [-a, a] on the floor (metres), and
            inside the room.
        wall_distance: range of each wall's distance from the origin (metres; the four walls
            are drawn independently, so some objects stand close to a wall).
        point_light_prob: probability of a point light instead of a directional one.
    """

    resolution: int = 64
    min_objects: int = 1
    max_objects: int = 6
    supersample: int = 2
    camera_distance: tuple[float, float] = (3.8, 6.5)
    fov_deg: tuple[float, float] = (38.0, 54.0)
    horizon_margin_deg: tuple[float, float] = (6.0, 20.0)
    small_scale: tuple[float, float] = (0.27, 0.36)
    large_scale: tuple[float, float] = (0.5, 0.64)
    object_area: float = 2.0
    wall_distance: tuple[float, float] = (2.4, 6.5)
    point_light_prob: float = 0.35

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, numbers.Integral) or not (
            MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION
        ):
            raise ValueError(
                f"SceneConfig.resolution must be an int in {MIN_RESOLUTION}..{MAX_RESOLUTION}, "
                f"got {self.resolution!r}"
            )
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"SceneConfig.supersample must be in 1..4, got {self.supersample!r}")
        _check_range("camera_distance", self.camera_distance, 2.0, 20.0)
        _check_range("fov_deg", self.fov_deg, 10.0, 90.0)
        _check_range("horizon_margin_deg", self.horizon_margin_deg, 2.0, 60.0)
        _check_range("small_scale", self.small_scale, 0.05, 2.0)
        _check_range("large_scale", self.large_scale, 0.05, 2.0)
        _check_range("wall_distance", self.wall_distance, 2.0, 15.0)
        if not 0.5 <= self.object_area <= self.wall_distance[1]:
            raise ValueError(
                "SceneConfig.object_area must be in 0.5..wall_distance[1], got "
                f"{self.object_area!r}"
            )
        if not 0.0 <= self.point_light_prob <= 1.0:
            raise ValueError(
                f"SceneConfig.point_light_prob must be in [0, 1], got {self.point_light_prob!r}"
            )
