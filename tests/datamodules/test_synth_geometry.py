"""Scene generator building blocks: ray intersections, normals, shadows, palette, edges."""

import math

import numpy as np
import pytest

from fourm_lightning.datamodules.synth.derived import color_palette, segment_edges
from fourm_lightning.datamodules.synth.geometry import hit_object, object_normals
from fourm_lightning.datamodules.synth.render import _shadowed
from fourm_lightning.datamodules.synth.scene import (
    Camera,
    Light,
    Scene,
    SceneObject,
)


def _obj(shape, radius=0.5, height=1.0, yaw=0.0, x=0.0, z=0.0):
    if shape in ("sphere", "cube"):
        height = 2 * radius
    return SceneObject(shape, "red", "large", x, z, yaw, radius, height, radius * 1.5, 0.1, 10.0)


def _inside(obj, p):
    """Whether world points (3, n) lie strictly inside the object (a brute-force reference)."""
    x, y, z = p[0] - obj.x, p[1], p[2] - obj.z
    r, h = obj.radius, obj.height
    if obj.shape == "sphere":
        return x * x + (y - r) ** 2 + z * z < r * r
    if obj.shape == "cube":
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        lx, lz = c * x - s * z, s * x + c * z
        return (np.abs(lx) < r) & (np.abs(y - r) < r) & (np.abs(lz) < r)
    rho = np.sqrt(x * x + z * z)
    if obj.shape == "cylinder":
        return (rho < r) & (y > 0) & (y < h)
    return (rho < r / h * (h - y)) & (y > 0) & (y < h)


@pytest.mark.parametrize(
    "obj",
    [
        _obj("sphere", 0.6),
        _obj("cube", 0.5, yaw=0.4),
        _obj("cylinder", 0.4, 1.3),
        _obj("cone", 0.5, 1.4),
    ],
    ids=lambda o: o.shape,
)
def test_intersections_match_brute_force_marching(obj):
    rng = np.random.default_rng(0)
    n = 300
    # Rays from a shell around the object, aimed near it, from above the floor.
    theta = rng.uniform(0, 2 * np.pi, n)
    origin = np.stack([3 * np.cos(theta), rng.uniform(0.05, 3.0, n), 3 * np.sin(theta)])
    aim = np.stack([rng.normal(0, 0.4, n), rng.uniform(0.0, 1.2, n), rng.normal(0, 0.4, n)])
    d = aim - origin
    d /= np.linalg.norm(d, axis=0)
    origin, d = origin.astype(np.float32), d.astype(np.float32)
    t = hit_object(obj, origin[0], origin[1], origin[2], d[0], d[1], d[2])
    steps = np.linspace(0.0, 6.0, 6001, dtype=np.float32)
    points = origin[:, :, None] + d[:, :, None] * steps[None, None, :]  # (3, n, steps)
    inside = _inside(obj, points.reshape(3, -1)).reshape(n, -1)
    first = np.where(inside.any(1), steps[inside.argmax(1)], np.inf)
    hit = np.isfinite(t)
    assert hit.sum() > 50 and (~hit).sum() > 20
    assert (np.isfinite(first) == hit).mean() > 0.98  # grazing rays may differ
    both = hit & np.isfinite(first)
    assert np.abs(t[both] - first[both]).max() < 2e-3
    # Normals at the hits: unit length, against the ray, and along the local surface gradient.
    p = origin[:, both] + d[:, both] * t[both]
    nx, ny, nz = object_normals(obj, p[0], p[1], p[2])
    normal = np.stack([nx, ny, nz])
    assert np.allclose(np.linalg.norm(normal, axis=0), 1, atol=1e-5)
    assert ((normal * d[:, both]).sum(0) < 0).all()
    outside = p + 1e-3 * normal
    inside_pt = p - 1e-3 * normal
    assert (~_inside(obj, outside)).mean() > 0.97
    assert _inside(obj, inside_pt).mean() > 0.97


def test_known_distances():
    sphere = _obj("sphere", 0.5)
    t = hit_object(sphere, np.float32([0.0]), np.float32([0.5]), np.float32([-5.0]), 0.0, 0.0, 1.0)
    assert t[0] == pytest.approx(4.5, abs=1e-5)
    cube = _obj("cube", 0.5, yaw=math.pi / 4)  # a corner points along -x
    t = hit_object(cube, np.float32([-5.0]), np.float32([0.5]), np.float32([0.0]), 1.0, 0.0, 0.0)
    assert t[0] == pytest.approx(5 - 0.5 * math.sqrt(2), abs=1e-5)
    cyl = _obj("cylinder", 0.4, 1.2)
    t = hit_object(cyl, np.float32([0.1]), np.float32([5.0]), np.float32([0.0]), 0.0, -1.0, 0.0)
    assert t[0] == pytest.approx(5 - 1.2, abs=1e-5)
    cone = _obj("cone", 0.5, 1.0)  # at height 0.5 the radius is 0.25
    t = hit_object(cone, np.float32([-3.0]), np.float32([0.5]), np.float32([0.0]), 1.0, 0.0, 0.0)
    assert t[0] == pytest.approx(3 - 0.25, abs=1e-5)
    t = hit_object(cone, np.float32([-3.0]), np.float32([1.2]), np.float32([0.0]), 1.0, 0.0, 0.0)
    assert np.isinf(t[0])  # above the apex (the upper nappe of the double cone is excluded)


def _scene(objects, light):
    cam = Camera(
        (0.0, 3.0, 6.0),
        (0.0, -0.447, -0.894),
        (1.0, 0.0, 0.0),
        (0.0, 0.894, -0.447),
        45.0,
        (0.0, 0.0, 0.0),
    )
    return Scene(cam, light, [], objects, (5.0, 5.0, 5.0, 5.0))


def test_shadows_from_directional_and_point_lights():
    sphere = _obj("sphere", 0.5)
    px = np.float32([0.0, 2.0, 0.0])
    py = np.float32([1e-3, 1e-3, 1e-3])
    pz = np.float32([0.0, 0.0, 1.5])
    owner = np.zeros(3, np.uint8)
    up = Light("directional", (0.0, 1.0, 0.0), None, 1.0, 0.2)
    blocked = _shadowed(_scene([sphere], up), px, py, pz, owner, (0.0, 1.0, 0.0), None)
    assert blocked.tolist() == [True, False, False]
    # A point light at (0, 4, 3): the line from it through the sphere's centre meets the floor at
    # z = -3/7.
    light_pos = np.array([0.0, 4.0, 3.0], np.float32)
    pts = np.stack([np.float32([0.0, 2.0]), np.float32([1e-3, 1e-3]), np.float32([-3 / 7, 0.0])])
    vec = light_pos[:, None] - pts
    dist = np.linalg.norm(vec, axis=0)
    ldir = vec / dist
    point = Light("point", (0.0, 0.8, 0.6), tuple(light_pos.tolist()), 1.0, 0.2)
    blocked = _shadowed(
        _scene([sphere], point), *pts, np.zeros(2, np.uint8), tuple(ldir), dist.astype(np.float32)
    )
    assert blocked.tolist() == [True, False]
    # An object never shadows its own points.
    blocked = _shadowed(
        _scene([sphere], up), px, py, pz, np.ones(3, np.uint8), (0.0, 1.0, 0.0), None
    )
    assert not blocked.any()


def test_segment_edges_mark_both_sides():
    seg = np.zeros((6, 6), np.int32)
    seg[2:4, 2:4] = 17
    edges = segment_edges(seg)
    expected = np.zeros((6, 6), np.uint8)
    expected[1:5, 2:4] = 1
    expected[2:4, 1:5] = 1
    assert (edges == expected).all()


def test_palette_finds_dominant_colours():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :10] = (200, 30, 30)
    img[:, 10:16] = (40, 70, 210)
    img[:, 16:] = (250, 250, 250)
    palette = color_palette(img)
    assert [p["rgb"] for p in palette] == [[200, 30, 30], [40, 70, 210], [250, 250, 250]]
    assert [p["weight"] for p in palette] == [0.5, 0.3, 0.2]
    assert color_palette(img) == palette
