"""Analytic ray intersections and surface normals, vectorised over rays.

Rays are passed as six components ``ox, oy, oz, dx, dy, dz``; each is either a float32 array of
shape (n,) or a Python float shared by all rays (the camera origin of primary rays, the direction
of a directional light), which numpy broadcasts without materialising it. Directions are unit
vectors. Every function returns the smallest hit distance ``t > EPS`` per ray, ``inf`` for a miss;
a ray that starts inside a solid hits its exit point (a shadow ray leaving a floor point right
under a resting object is blocked, as it should be).

Objects are given in their own frame: origin at the centre of the base (on the floor), y up.
Base caps of cylinders and cones are left out on purpose: they lie on the floor, where neither a
camera above the floor nor a shadow ray leaving an upward surface can reach them.
"""

from __future__ import annotations

import numpy as np

from fourm_lightning.datamodules.synth.scene import SceneObject

#: Rays start their search this far from their origin (metres), so surfaces do not hit themselves.
EPS = 1e-4

Component = np.ndarray | float
_INF = np.float32(np.inf)


def hit_sphere(
    ox: Component,
    oy: Component,
    oz: Component,
    dx: Component,
    dy: Component,
    dz: Component,
    r: float,
) -> np.ndarray:
    """Sphere of radius ``r`` about the origin (origins relative to the centre). Shape: (n,)."""
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - r * r
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    near, far = -b - sq, -b + sq
    t = np.where(near > EPS, near, far)  # the far root: the ray starts inside (shadow rays)
    return np.where((disc >= 0.0) & (t > EPS), t, _INF)


def _safe_inv(d: Component) -> Component:
    # 1/d with zeros nudged to a tiny value: the slab test then gets +-huge instead of nan.
    if isinstance(d, float):
        return 1.0 / (d if abs(d) > 1e-12 else 1e-12)
    return 1.0 / np.where(np.abs(d) > 1e-12, d, np.float32(1e-12))


def hit_box(
    ox: Component,
    oy: Component,
    oz: Component,
    dx: Component,
    dy: Component,
    dz: Component,
    half: float,
) -> np.ndarray:
    """Axis-aligned cube of half side ``half`` centred on the origin (slab test). Shape: (n,)."""
    tnear = None
    tfar = None
    for o, d in ((ox, dx), (oy, dy), (oz, dz)):
        inv = _safe_inv(d)
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        tnear = lo if tnear is None else np.maximum(tnear, lo)
        tfar = hi if tfar is None else np.minimum(tfar, hi)
    t = np.where(tnear > EPS, tnear, tfar)  # tfar: the ray starts inside (shadow rays)
    return np.where((tnear <= tfar) & (t > EPS), t, _INF)


def hit_cylinder(
    ox: Component,
    oy: Component,
    oz: Component,
    dx: Component,
    dy: Component,
    dz: Component,
    r: float,
    h: float,
) -> np.ndarray:
    """Upright cylinder, radius ``r``, from y = 0 to y = ``h``, with its top cap. Shape: (n,)."""
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    a_safe = max(a, 1e-12) if isinstance(a, float) else np.maximum(a, np.float32(1e-12))
    sq = np.sqrt(np.maximum(disc, 0.0))
    tc = (h - oy) * _safe_inv(dy)
    px = ox + tc * dx
    pz = oz + tc * dz
    best = np.where((tc > EPS) & (px * px + pz * pz <= r * r), tc, _INF)
    # Both side roots: the far one is the exit of a ray that starts inside (shadow rays).
    for ts in ((-b - sq) / a_safe, (-b + sq) / a_safe):
        ys = oy + ts * dy
        side = (disc >= 0.0) & (a > 1e-12) & (ts > EPS) & (ys >= 0.0) & (ys <= h)
        best = np.where(side & (ts < best), ts, best)
    return best


def hit_cone(
    ox: Component,
    oy: Component,
    oz: Component,
    dx: Component,
    dy: Component,
    dz: Component,
    r: float,
    h: float,
) -> np.ndarray:
    """Upright cone, base radius ``r`` at y = 0, apex at y = ``h``. Shape: (n,).

    With Y = h - y (distance below the apex) and k = r / h the surface is x^2 + z^2 = k^2 Y^2,
    0 <= Y <= h; both roots of the quadratic are tried because the ray may graze the other nappe.
    """
    k2 = (r / h) ** 2
    y0 = h - oy
    a = dx * dx + dz * dz - k2 * dy * dy
    hb = ox * dx + oz * dz + k2 * y0 * dy
    c = ox * ox + oz * oz - k2 * y0 * y0
    disc = hb * hb - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    if isinstance(a, float):  # a shared direction (directional light): keep float32 math
        a_safe = a if abs(a) > 1e-9 else 1e-9
    else:
        a_safe = np.where(np.abs(a) > 1e-9, a, np.float32(1e-9))
    best = np.full(np.shape(disc), _INF, dtype=np.float32)
    for t in ((-hb - sq) / a_safe, (-hb + sq) / a_safe):
        yy = y0 - t * dy
        ok = (disc >= 0.0) & (t > EPS) & (yy >= 0.0) & (yy <= h)
        best = np.where(ok & (t < best), t, best)
    return best


def to_local(
    obj: SceneObject, ox: Component, oy: Component, oz: Component
) -> tuple[Component, Component, Component]:
    """World points -> the object's frame (base centre at the origin, yaw undone)."""
    x, z = ox - obj.x, oz - obj.z
    if obj.shape != "cube":  # the other shapes are symmetric about their vertical axis
        return x, oy, z
    c, s = float(np.cos(obj.yaw)), float(np.sin(obj.yaw))
    return c * x - s * z, oy, s * x + c * z


def dir_to_local(
    obj: SceneObject, dx: Component, dy: Component, dz: Component
) -> tuple[Component, Component, Component]:
    """World directions -> the object's frame."""
    if obj.shape != "cube":
        return dx, dy, dz
    c, s = float(np.cos(obj.yaw)), float(np.sin(obj.yaw))
    return c * dx - s * dz, dy, s * dx + c * dz


def hit_object(
    obj: SceneObject,
    ox: Component,
    oy: Component,
    oz: Component,
    dx: Component,
    dy: Component,
    dz: Component,
) -> np.ndarray:
    """Hit distances of world rays against one object. Shape: (n,), ``inf`` for misses."""
    lx, ly, lz = to_local(obj, ox, oy, oz)
    ldx, ldy, ldz = dir_to_local(obj, dx, dy, dz)
    if obj.shape == "sphere":
        return hit_sphere(lx, ly - obj.radius, lz, ldx, ldy, ldz, obj.radius)
    if obj.shape == "cube":
        return hit_box(lx, ly - obj.radius, lz, ldx, ldy, ldz, obj.radius)
    if obj.shape == "cylinder":
        return hit_cylinder(lx, ly, lz, ldx, ldy, ldz, obj.radius, obj.height)
    return hit_cone(lx, ly, lz, ldx, ldy, ldz, obj.radius, obj.height)


def object_normals(
    obj: SceneObject, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward unit normals (world) at points on the object's surface. Shapes: (n,) each."""
    lx, ly, lz = to_local(obj, px, py, pz)
    if obj.shape == "sphere":
        inv = 1.0 / obj.radius
        return lx * inv, (ly - obj.radius) * inv, lz * inv
    if obj.shape == "cube":
        ly = ly - obj.radius
        local = np.stack([lx, ly, lz])
        axis = np.abs(local).argmax(0)
        n = np.zeros_like(local)
        cols = np.arange(local.shape[1])
        n[axis, cols] = np.sign(local[axis, cols])
        c, s = float(np.cos(obj.yaw)), float(np.sin(obj.yaw))
        # local -> world is the transpose of ``to_local``'s rotation.
        return c * n[0] + s * n[2], n[1], -s * n[0] + c * n[2]
    rho = np.sqrt(lx * lx + lz * lz)
    inv_rho = 1.0 / np.maximum(rho, 1e-6)
    if obj.shape == "cylinder":
        # The point lies on the top cap if it is closer to the cap plane than to the side.
        cap = (obj.height - ly) < (obj.radius - rho)
        one = np.float32(1.0)
        zero = np.float32(0.0)
        return (
            np.where(cap, zero, lx * inv_rho),
            np.where(cap, one, zero),
            np.where(cap, zero, lz * inv_rho),
        )
    k = obj.radius / obj.height
    scale = 1.0 / float(np.sqrt(1.0 + k * k))
    ny = np.full_like(lx, k * scale)
    return lx * inv_rho * scale, ny, lz * inv_rho * scale
