"""Scene graph sampling: room, objects, camera and light, all from one seeded generator.

World frame: y up, metres, the floor is the plane y = 0. The room is an axis-aligned box about the
origin, each wall at its own distance. Only the walls that face the camera are built: the others
are behind or beside it and would at most show as slivers whose normals point away from the
camera. Objects rest on the floor inside ``[-object_area, object_area]^2`` and inside the room,
without touching each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fourm_lightning.datamodules.synth.config import SceneConfig
from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES, SIZES

#: Texture kinds of the floor and walls.
TEXTURE_KINDS: tuple[str, ...] = ("plain", "checker", "stripes", "noise", "wood")
#: The largest z-depth the floor may reach at the top image row (DepthMap stores up to 50 m).
MAX_FLOOR_DEPTH = 40.0
#: Free space kept between the footprints of two objects (metres).
OBJECT_GAP = 0.08
#: Candidate positions drawn per object by the rejection sampler.
PLACEMENT_TRIES = 256
#: Side of the value-noise lattice used by the "noise" and "wood" textures.
NOISE_LATTICE = 32


@dataclass
class Texture:
    """A procedural surface pattern that mixes two sRGB colours.

    Args:
        kind: one of ``TEXTURE_KINDS``.
        color_a: first colour, sRGB 0..255.
        color_b: second colour, sRGB 0..255 (unused by "plain").
        scale: pattern period in metres.
        angle: rotation of the pattern in its surface (radians).
        lattice: (NOISE_LATTICE, NOISE_LATTICE) float32 random values for noise textures.
    """

    kind: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale: float
    angle: float
    lattice: np.ndarray

    def to_json(self) -> dict[str, object]:
        """The JSON-safe description stored in the scene record."""
        return {
            "kind": self.kind,
            "color": [round(c) for c in self.color_a],
            "color2": [round(c) for c in self.color_b],
            "scale": round(self.scale, 4),
            "angle": round(self.angle, 4),
        }


@dataclass
class Surface:
    """A planar room surface: all points p with ``normal . p + offset = 0``.

    Args:
        name: "floor" or "wall_x_neg", "wall_x_pos", "wall_z_neg", "wall_z_pos".
        normal: unit normal pointing into the room.
        offset: plane offset (the distance of the plane from the origin).
        tangent: horizontal unit vector in the plane (texture u axis; v is world y for walls and
            world z for the floor).
        semseg: index into ``SEMSEG_CLASSES`` (0 floor, 1 wall).
        texture: the surface pattern.
    """

    name: str
    normal: tuple[float, float, float]
    offset: float
    tangent: tuple[float, float, float]
    semseg: int
    texture: Texture


@dataclass
class SceneObject:
    """One object resting on the floor.

    Args:
        shape: one of ``SHAPE_CLASSES``.
        color: a key of ``COLORS``.
        size: one of ``SIZES``.
        x: world x of the base centre.
        z: world z of the base centre.
        yaw: rotation about the vertical axis (radians; only visible for cubes).
        radius: sphere radius, cube half side, or cylinder/cone base radius.
        height: total height.
        footprint: radius of the floor disc that contains the object.
        specular: Blinn-Phong specular strength.
        shininess: Blinn-Phong exponent.
    """

    shape: str
    color: str
    size: str
    x: float
    z: float
    yaw: float
    radius: float
    height: float
    footprint: float
    specular: float
    shininess: float

    @property
    def center(self) -> tuple[float, float, float]:
        """Centre of the object's bounding box (world)."""
        return (self.x, 0.5 * self.height, self.z)

    @property
    def bound_radius(self) -> float:
        """Radius of a sphere about ``center`` that contains the object."""
        if self.shape == "sphere":
            return self.radius
        if self.shape == "cube":
            return self.radius * math.sqrt(3.0)
        return math.hypot(self.radius, 0.5 * self.height)


@dataclass
class Camera:
    """A pinhole camera with square pixels and no roll.

    Args:
        position: world position.
        forward: unit viewing direction (the optical axis).
        right: unit image-right direction (horizontal).
        up: unit image-up direction.
        fov_deg: vertical (= horizontal, images are square) field of view in degrees.
        target: the look-at point.
    """

    position: tuple[float, float, float]
    forward: tuple[float, float, float]
    right: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_deg: float
    target: tuple[float, float, float]

    def to_camera(self, point: tuple[float, float, float]) -> tuple[float, float, float]:
        """World point -> camera-space (x right, y up, z towards the camera) coordinates."""
        rel = np.subtract(point, self.position)
        return (
            float(rel @ self.right),
            float(rel @ self.up),
            -float(rel @ self.forward),
        )


@dataclass
class Light:
    """One light source plus an ambient term (linear intensities).

    Args:
        kind: "directional" or "point".
        direction: unit direction towards the light (for a point light: from the look-at point).
        position: world position of a point light (None for a directional light).
        intensity: diffuse intensity (at the look-at point for a point light).
        ambient: ambient intensity.
    """

    kind: str
    direction: tuple[float, float, float]
    position: tuple[float, float, float] | None
    intensity: float
    ambient: float


@dataclass
class Scene:
    """Everything the renderer and the caption need."""

    camera: Camera
    light: Light
    surfaces: list[Surface]
    objects: list[SceneObject]
    walls: tuple[float, float, float, float]
    extra: dict[str, object] = field(default_factory=dict)


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV in [0, 1] -> sRGB 0..255 floats."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255.0 * r, 255.0 * g, 255.0 * b)


def _sample_texture(rng: np.random.Generator, value: tuple[float, float], scale: float) -> Texture:
    """A muted random colour pair and pattern, so the named object colours stand out."""
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    hue = float(rng.random())
    sat = float(rng.uniform(0.05, 0.35))
    val = float(rng.uniform(*value))
    color_a = _hsv_to_rgb(hue, sat, val)
    if rng.random() < 0.5:  # a darker shade of the same hue
        color_b = _hsv_to_rgb(hue, sat, val * float(rng.uniform(0.55, 0.8)))
    else:  # a second muted hue of similar value
        color_b = _hsv_to_rgb(
            (hue + float(rng.uniform(0.2, 0.8))) % 1.0,
            float(rng.uniform(0.05, 0.3)),
            val * float(rng.uniform(0.7, 0.95)),
        )
    lattice = rng.random((NOISE_LATTICE, NOISE_LATTICE), dtype=np.float32)
    return Texture(
        kind=kind,
        color_a=color_a,
        color_b=color_b,
        scale=scale * float(rng.uniform(0.6, 1.6)),
        angle=float(rng.uniform(0.0, math.pi)),
        lattice=lattice,
    )


def _sample_object(rng: np.random.Generator, config: SceneConfig, size: str) -> SceneObject:
    shape = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    s = float(rng.uniform(*(config.small_scale if size == "small" else config.large_scale)))
    if shape == "sphere":
        radius, height, footprint = s, 2.0 * s, s
    elif shape == "cube":
        radius = 0.82 * s
        height, footprint = 2.0 * radius, radius * math.sqrt(2.0)
    elif shape == "cylinder":
        radius = 0.8 * s
        height, footprint = s * float(rng.uniform(1.4, 2.4)), radius
    else:  # cone
        radius = 0.9 * s
        height, footprint = s * float(rng.uniform(1.9, 2.9)), radius
    shiny = rng.random() < 0.4
    return SceneObject(
        shape=shape,
        color=color,
        size=size,
        x=0.0,
        z=0.0,
        yaw=float(rng.uniform(0.0, math.pi / 2)),  # a cube looks the same every quarter turn
        radius=radius,
        height=height,
        footprint=footprint,
        specular=float(rng.uniform(0.35, 0.6)) if shiny else float(rng.uniform(0.03, 0.1)),
        shininess=float(rng.uniform(30.0, 60.0)) if shiny else float(rng.uniform(5.0, 12.0)),
    )


def _place_objects(
    rng: np.random.Generator, config: SceneConfig, walls: tuple[float, float, float, float]
) -> list[SceneObject]:
    """Rejection-sample non-overlapping positions (footprint discs plus ``OBJECT_GAP``).

    Each object gets ``PLACEMENT_TRIES`` candidate positions at once and takes the first free one.
    An object that finds no place is retried once as "small", then dropped; the first object
    always fits, so a scene has at least one object (drops are rare with the default sizes).
    """
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    placed: list[SceneObject] = []
    for _ in range(count):
        size = SIZES[int(rng.integers(len(SIZES)))]
        for attempt_size in (size, SIZES[0]):
            obj = _sample_object(rng, config, attempt_size)
            keep = obj.footprint + 0.15  # from the walls
            xs = rng.uniform(
                -min(config.object_area, walls[0] - keep),
                min(config.object_area, walls[1] - keep),
                PLACEMENT_TRIES,
            )
            zs = rng.uniform(
                -min(config.object_area, walls[2] - keep),
                min(config.object_area, walls[3] - keep),
                PLACEMENT_TRIES,
            )
            free = np.ones(PLACEMENT_TRIES, dtype=bool)
            for o in placed:
                free &= np.hypot(xs - o.x, zs - o.z) > obj.footprint + o.footprint + OBJECT_GAP
            if free.any():
                first = int(np.argmax(free))
                obj.x, obj.z = float(xs[first]), float(zs[first])
                placed.append(obj)
                break
    return placed


def _sample_camera(
    rng: np.random.Generator, config: SceneConfig, objects: list[SceneObject]
) -> Camera:
    """Look at the objects from a random direction, far enough that they all fit in the view."""
    fov = float(rng.uniform(*config.fov_deg))
    half = math.radians(fov) / 2
    margin = math.radians(float(rng.uniform(*config.horizon_margin_deg)))
    yaw = float(rng.uniform(0.0, 2 * math.pi))
    fh = np.array([-math.sin(yaw), 0.0, -math.cos(yaw)])
    cx = float(np.mean([o.x for o in objects])) + float(rng.normal(0.0, 0.2))
    cz = float(np.mean([o.z for o in objects])) + float(rng.normal(0.0, 0.2))
    target = np.array([cx, float(rng.uniform(0.2, 0.5)), cz])
    spread = max(math.hypot(o.x - cx, o.z - cz) + o.bound_radius for o in objects)
    distance = max(float(rng.uniform(*config.camera_distance)), spread / math.tan(0.9 * half))
    for _ in range(8):
        # The top image row must look below the horizon, and not so slightly that the far floor
        # gets deeper than MAX_FLOOR_DEPTH (z-depth is constant along the top row on the floor).
        for _ in range(3):
            pitch = half + margin
            height = target[1] + distance * math.sin(pitch)
            need = math.asin(min(0.99, height * math.cos(half) / MAX_FLOOR_DEPTH))
            if margin >= need:
                break
            margin = need
        forward = np.array([math.cos(pitch) * fh[0], -math.sin(pitch), math.cos(pitch) * fh[2]])
        position = target - distance * forward
        clear = all(
            np.linalg.norm(position - np.array(o.center)) > o.bound_radius + 0.4 for o in objects
        )
        if clear:
            break
        distance += 0.5
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return Camera(
        position=(float(position[0]), float(position[1]), float(position[2])),
        forward=_unit(forward),
        right=_unit(right),
        up=_unit(up),
        fov_deg=fov,
        target=(float(target[0]), float(target[1]), float(target[2])),
    )


def _sample_light(
    rng: np.random.Generator,
    config: SceneConfig,
    camera: Camera,
    walls: tuple[float, float, float, float],
) -> Light:
    intensity = float(rng.uniform(0.95, 1.25))
    ambient = float(rng.uniform(0.16, 0.26))
    if rng.random() < config.point_light_prob:
        position = np.array(
            [
                float(rng.uniform(-0.7 * walls[0], 0.7 * walls[1])),
                float(rng.uniform(3.5, 6.0)),
                float(rng.uniform(-0.7 * walls[2], 0.7 * walls[3])),
            ]
        )
        return Light(
            kind="point",
            direction=_unit(position - np.array(camera.target)),
            position=(float(position[0]), float(position[1]), float(position[2])),
            intensity=intensity,
            ambient=ambient,
        )
    elevation = float(rng.uniform(math.radians(28.0), math.radians(65.0)))
    azimuth = float(rng.uniform(0.0, 2 * math.pi))
    direction = (
        math.cos(elevation) * math.sin(azimuth),
        math.sin(elevation),
        math.cos(elevation) * math.cos(azimuth),
    )
    return Light("directional", _unit(np.array(direction)), None, intensity, ambient)


def _build_surfaces(
    rng: np.random.Generator, camera: Camera, walls: tuple[float, float, float, float]
) -> list[Surface]:
    floor_tex = _sample_texture(rng, (0.45, 0.85), scale=float(rng.uniform(0.5, 1.2)))
    wall_tex = _sample_texture(rng, (0.55, 0.92), scale=float(rng.uniform(0.4, 1.0)))
    surfaces = [Surface("floor", (0.0, 1.0, 0.0), 0.0, (1.0, 0.0, 0.0), 0, floor_tex)]
    fh = np.array([camera.forward[0], 0.0, camera.forward[2]])
    fh /= np.linalg.norm(fh)
    planes = (
        ("wall_x_neg", (1.0, 0.0, 0.0), walls[0], (0.0, 0.0, 1.0)),
        ("wall_x_pos", (-1.0, 0.0, 0.0), walls[1], (0.0, 0.0, -1.0)),
        ("wall_z_neg", (0.0, 0.0, 1.0), walls[2], (-1.0, 0.0, 0.0)),
        ("wall_z_pos", (0.0, 0.0, -1.0), walls[3], (1.0, 0.0, 0.0)),
    )
    for name, normal, offset, tangent in planes:
        # Keep walls that face the camera: their camera-space normal has n_z = -n . forward > 0.
        if float(np.dot(normal, fh)) < -0.05:
            surfaces.append(Surface(name, normal, offset, tangent, 1, wall_tex))
    return surfaces


def sample_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
    """Sample a whole scene graph.

    Args:
        rng: the sample's generator (consumed in a fixed order, so scenes are reproducible).
        config: scene settings.

    Returns:
        The scene: camera, light, floor and camera-facing walls, objects in instance order.
    """
    d = rng.uniform(*config.wall_distance, 4).tolist()
    walls = (float(d[0]), float(d[1]), float(d[2]), float(d[3]))
    objects = _place_objects(rng, config, walls)
    camera = _sample_camera(rng, config, objects)
    light = _sample_light(rng, config, camera, walls)
    surfaces = _build_surfaces(rng, camera, walls)
    return Scene(camera, light, surfaces, objects, walls)
