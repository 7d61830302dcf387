"""Vectorised ray casting of a scene: RGB plus exact depth, normals, classes and instances.

One batch of primary rays holds the supersampled RGB rays (``(R*s)^2``, row-major) followed by
one centre ray per output pixel (``R^2``). The centre rays give the label-like maps exactly (no
averaging across edges); the supersampled rays are shaded and box-filtered into the RGB image.

Per object, rays are first culled against the object's bounding sphere and only the survivors get
the exact intersection, which keeps the cost proportional to the object's screen area.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from fourm_lightning.datamodules.synth.geometry import hit_object, object_normals
from fourm_lightning.datamodules.synth.scene import Scene
from fourm_lightning.datamodules.synth.texture import GAMMA, pattern, srgb_to_linear
from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES

#: Shadow rays start this far off the surface, along its normal (metres).
SHADOW_BIAS = 1e-3
#: Segment ids of objects in ``RenderOutput.segment`` are ``OBJECT_SEGMENT + instance``.
OBJECT_SEGMENT = 16


@dataclass
class RenderOutput:
    """Rendered maps of one scene, all (R, R[, 3]) with R the output resolution.

    Args:
        rgb: uint8 (R, R, 3) anti-aliased sRGB image.
        depth: float32 (R, R) z-depth in metres along the optical axis.
        normal: float32 (R, R, 3) unit camera-space normals (x right, y up, z to the camera).
        semseg: uint8 (R, R) indices into ``SEMSEG_CLASSES``.
        instance: uint8 (R, R) 0 for the room, k for the k-th object.
        segment: int32 (R, R) segment ids (room surface index, or ``OBJECT_SEGMENT + k``).
        unoccluded: int64 (N,) pixels each object would cover if the other objects were absent.
    """

    rgb: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    semseg: np.ndarray
    instance: np.ndarray
    segment: np.ndarray
    unoccluded: np.ndarray


@functools.lru_cache(maxsize=16)
def _image_plane(resolution: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space image-plane coordinates of all rays, for tan(fov / 2) = 1.

    Returns:
        ``(x, y)``, each float32 of shape (N,) with N = (R*s)^2 + R^2: the supersampled rays
        row-major, then the centre rays; x right and y up, in [-1, 1].
    """
    sub = (np.arange(resolution * supersample, dtype=np.float64) + 0.5) / (resolution * supersample)
    ctr = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    xs, ys = [], []
    for grid in (sub, ctr):
        col, row = np.meshgrid(grid, grid)
        xs.append((2.0 * col - 1.0).ravel())
        ys.append((1.0 - 2.0 * row).ravel())
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.float32)
    for a in (x, y):
        a.flags.writeable = False  # shared by every call: never modified in place
    return x, y


def _primary_rays(
    scene: Scene, resolution: int, supersample: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World unit directions (dx, dy, dz) and z-depth factors of all primary rays. Shapes: (N,)."""
    x, y = _image_plane(resolution, supersample)
    cam = scene.camera
    tan_half = math.tan(math.radians(cam.fov_deg) / 2)
    sx, sy = x * np.float32(tan_half), y * np.float32(tan_half)
    inv_norm = 1.0 / np.sqrt(sx * sx + sy * sy + 1.0)
    r, u, f = cam.right, cam.up, cam.forward
    dx = (sx * r[0] + sy * u[0] + f[0]) * inv_norm
    dy = (sx * r[1] + sy * u[1] + f[1]) * inv_norm
    dz = (sx * r[2] + sy * u[2] + f[2]) * inv_norm
    # For a unit direction d, z-depth = t * (d . forward) = t * inv_norm.
    return dx, dy, dz, inv_norm


def _hit_room(
    scene: Scene, o: tuple[float, float, float], dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest room surface per ray: ``(t, surface index)``. Shapes: (N,) float32, (N,) int8."""
    t = np.full(dx.shape, np.inf, dtype=np.float32)
    face = np.zeros(dx.shape, dtype=np.int8)
    for index, surf in enumerate(scene.surfaces):
        nx, ny, nz = surf.normal
        denom = dx * nx + dy * ny + dz * nz
        dist = o[0] * nx + o[1] * ny + o[2] * nz + surf.offset  # > 0: the camera is inside
        with np.errstate(divide="ignore"):
            ts = np.where(denom < -1e-6, -dist / denom, np.float32(np.inf))
        closer = ts < t
        t = np.where(closer, ts, t)
        face[closer] = index
    return t, face


def _pick(a: np.ndarray | float, idx: np.ndarray) -> np.ndarray | float:
    """``a[idx]`` for per-ray arrays, ``a`` itself for a value shared by all rays."""
    return a if isinstance(a, float) else a[idx]


def _candidates(
    center: tuple[float, float, float],
    radius: float,
    ox: np.ndarray | float,
    oy: np.ndarray | float,
    oz: np.ndarray | float,
    dx: np.ndarray | float,
    dy: np.ndarray | float,
    dz: np.ndarray | float,
) -> np.ndarray:
    """Which rays pass within ``radius`` of ``center`` ahead of their origin. Shape: (n,) bool."""
    qx, qy, qz = center[0] - ox, center[1] - oy, center[2] - oz
    tc = qx * dx + qy * dy + qz * dz
    d2 = qx * qx + qy * qy + qz * qz - tc * tc
    return (d2 < radius * radius) & (tc > -radius)


def _shadowed(
    scene: Scene,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    owner: np.ndarray,
    light_dir: tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float],
    light_dist: np.ndarray | None,
) -> np.ndarray:
    """Whether an object blocks the segment from each point to the light. Shape: (n,) bool.

    A point is never tested against its own object: the objects are convex and only points that
    face the light are tested, so an object cannot shadow itself there.
    """
    lx, ly, lz = light_dir
    blocked = np.zeros(px.shape, dtype=bool)
    for k, obj in enumerate(scene.objects, start=1):
        cand = _candidates(obj.center, obj.bound_radius, px, py, pz, lx, ly, lz)
        cand &= (owner != k) & ~blocked
        idx = np.flatnonzero(cand)
        if idx.size == 0:
            continue
        t = hit_object(
            obj, px[idx], py[idx], pz[idx], _pick(lx, idx), _pick(ly, idx), _pick(lz, idx)
        )
        blocked[idx] = t < (np.inf if light_dist is None else light_dist[idx])
    return blocked


def render(scene: Scene, resolution: int, supersample: int) -> RenderOutput:
    """Ray-cast a scene.

    Args:
        scene: the scene graph.
        resolution: output side R.
        supersample: RGB rays per pixel per axis.

    Returns:
        The rendered maps (see ``RenderOutput``).
    """
    cam = scene.camera
    ox, oy, oz = cam.position
    dx, dy, dz, zfac = _primary_rays(scene, resolution, supersample)
    n_sub = (resolution * supersample) ** 2
    n_obj = len(scene.objects)

    # --- primary visibility: room first, then each object on its candidate rays -------------
    t, face = _hit_room(scene, cam.position, dx, dy, dz)
    owner = np.zeros(t.shape, dtype=np.uint8)
    unoccluded = np.zeros(n_obj, dtype=np.int64)
    for k, obj in enumerate(scene.objects, start=1):
        idx = np.flatnonzero(_candidates(obj.center, obj.bound_radius, ox, oy, oz, dx, dy, dz))
        if idx.size == 0:
            continue
        tk = hit_object(obj, ox, oy, oz, dx[idx], dy[idx], dz[idx])
        hit = tk < np.inf
        # Objects are inside the room and in front of every wall, so "hit at all" is the object's
        # own unoccluded silhouette (counted on the centre rays, i.e. output pixels).
        unoccluded[k - 1] = int(np.count_nonzero(hit & (idx >= n_sub)))
        closer = tk < t[idx]
        sel = idx[closer]
        t[sel] = tk[closer]
        owner[sel] = k
    if not np.isfinite(t).all():  # the camera sampling rules this out; fail loudly if not
        raise RuntimeError("a primary ray hit neither the room nor an object")

    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    table = np.array([s.normal for s in scene.surfaces], dtype=np.float32)
    nx, ny, nz = table[face, 0], table[face, 1], table[face, 2]
    obj_idx = [np.flatnonzero(owner == k) for k in range(1, n_obj + 1)]
    for k, idx in enumerate(obj_idx, start=1):
        if idx.size:
            nx[idx], ny[idx], nz[idx] = object_normals(
                scene.objects[k - 1], px[idx], py[idx], pz[idx]
            )

    # --- exact maps from the centre rays ----------------------------------------------------
    c = slice(n_sub, None)
    shape2 = (resolution, resolution)
    depth = (t[c] * zfac[c]).reshape(shape2)
    r, u, f = cam.right, cam.up, cam.forward
    normal = np.stack(
        [
            nx[c] * r[0] + ny[c] * r[1] + nz[c] * r[2],
            nx[c] * u[0] + ny[c] * u[1] + nz[c] * u[2],
            -(nx[c] * f[0] + ny[c] * f[1] + nz[c] * f[2]),
        ],
        axis=-1,
    ).reshape(*shape2, 3)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    instance = owner[c].reshape(shape2)
    semseg = np.array([s.semseg for s in scene.surfaces], dtype=np.uint8)[face[c]]
    obj_class = np.array(
        [0] + [2 + SHAPE_CLASSES.index(o.shape) for o in scene.objects], dtype=np.uint8
    )
    semseg = np.where(owner[c] > 0, obj_class[owner[c]], semseg).reshape(shape2)
    segment = np.where(owner[c] > 0, OBJECT_SEGMENT + owner[c].astype(np.int32), face[c])
    segment = segment.astype(np.int32).reshape(shape2)

    rgb = _shade(
        scene, resolution, supersample, t, face, owner, (px, py, pz), (nx, ny, nz), obj_idx
    )
    return RenderOutput(
        rgb=rgb,
        depth=depth.astype(np.float32),
        normal=normal.astype(np.float32),
        semseg=semseg.astype(np.uint8),
        instance=instance,
        segment=segment,
        unoccluded=unoccluded,
    )


def _shade(
    scene: Scene,
    resolution: int,
    supersample: int,
    t: np.ndarray,
    face: np.ndarray,
    owner: np.ndarray,
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
    normals: tuple[np.ndarray, np.ndarray, np.ndarray],
    obj_idx: list[np.ndarray],
) -> np.ndarray:
    """Shade the supersampled rays and box-filter them. Returns uint8 (R, R, 3)."""
    cam = scene.camera
    light = scene.light
    n = (resolution * supersample) ** 2
    px, py, pz = (a[:n] for a in points)
    nx, ny, nz = (a[:n] for a in normals)
    owner = owner[:n]
    face = face[:n]
    ox, oy, oz = cam.position
    # View vectors (towards the camera), unit.
    vx, vy, vz = ox - px, oy - py, oz - pz
    inv_v = 1.0 / np.sqrt(vx * vx + vy * vy + vz * vz)
    vx, vy, vz = vx * inv_v, vy * inv_v, vz * inv_v

    # --- albedo: room textures, then flat object colours --------------------------------------
    albedo = np.empty((3, n), dtype=np.float32)
    pixel_angle = 2.0 * math.tan(math.radians(cam.fov_deg) / 2) / (resolution * supersample)
    for index, surf in enumerate(scene.surfaces):
        idx = np.flatnonzero((owner == 0) & (face == index))
        if idx.size == 0:
            continue
        if surf.name == "floor":
            u, v = px[idx], pz[idx]
        else:
            tx, _, tz = surf.tangent
            u, v = px[idx] * tx + pz[idx] * tz, py[idx]
        cos_in = np.abs(nx[idx] * vx[idx] + ny[idx] * vy[idx] + nz[idx] * vz[idx])
        footprint = t[idx] * pixel_angle / np.maximum(cos_in, 0.05)
        mix = pattern(surf.texture, u, v, footprint, axis_aligned=surf.name != "floor")
        a = srgb_to_linear(surf.texture.color_a)
        b = srgb_to_linear(surf.texture.color_b)
        albedo[:, idx] = a[:, None] + (b - a)[:, None] * mix[None]
    for k, idx in enumerate(obj_idx, start=1):
        sub = idx[idx < n]
        if sub.size:
            albedo[:, sub] = srgb_to_linear(COLORS[scene.objects[k - 1].color])[:, None]

    # --- direct light with hard shadows -------------------------------------------------------
    if light.kind == "directional":
        lx, ly, lz = light.direction
        ndl = nx * lx + ny * ly + nz * lz
        atten: np.ndarray | float = light.intensity
        light_dist = None
    else:
        lpx, lpy, lpz = light.position  # type: ignore[misc]
        lx, ly, lz = lpx - px, lpy - py, lpz - pz
        light_dist = np.sqrt(lx * lx + ly * ly + lz * lz)
        inv = 1.0 / light_dist
        lx, ly, lz = lx * inv, ly * inv, lz * inv
        ndl = nx * lx + ny * ly + nz * lz
        ref = math.dist(light.position, cam.target)  # type: ignore[arg-type]
        # Inverse-square falloff normalised at the look-at point, clamped so that nothing burns.
        atten = light.intensity * np.minimum((ref * inv) ** 2, 1.8)
    lit_idx = np.flatnonzero(ndl > 0.0)
    bias = np.float32(SHADOW_BIAS)
    blocked = _shadowed(
        scene,
        px[lit_idx] + bias * nx[lit_idx],
        py[lit_idx] + bias * ny[lit_idx],
        pz[lit_idx] + bias * nz[lit_idx],
        owner[lit_idx],
        (_pick(lx, lit_idx), _pick(ly, lit_idx), _pick(lz, lit_idx)),
        None if light_dist is None else light_dist[lit_idx],
    )
    direct = np.zeros(n, dtype=np.float32)
    direct[lit_idx] = np.where(blocked, np.float32(0.0), ndl[lit_idx])
    direct *= atten
    color = albedo * (np.float32(light.ambient) + direct)[None]

    # --- Blinn-Phong highlights on the unshadowed, light-facing object points ----------------
    lit_obj = lit_idx[(owner[lit_idx] > 0) & ~blocked]
    if lit_obj.size:
        hx = _pick(lx, lit_obj) + vx[lit_obj]
        hy = _pick(ly, lit_obj) + vy[lit_obj]
        hz = _pick(lz, lit_obj) + vz[lit_obj]
        inv_h = 1.0 / np.sqrt(hx * hx + hy * hy + hz * hz)
        ndh = (nx[lit_obj] * hx + ny[lit_obj] * hy + nz[lit_obj] * hz) * inv_h
        spec_k = np.array([0.0] + [o.specular for o in scene.objects], dtype=np.float32)
        shin = np.array([1.0] + [o.shininess for o in scene.objects], dtype=np.float32)
        k = owner[lit_obj]
        spec = spec_k[k] * np.maximum(ndh, 0.0) ** shin[k]
        spec *= _pick(atten, lit_obj)
        color[:, lit_obj] += spec[None]

    # --- box filter in linear light, then gamma-encode ----------------------------------------
    s = supersample
    color = color.reshape(3, resolution, s, resolution, s).mean(axis=(2, 4))
    color = np.clip(color, 0.0, 1.0) ** np.float32(1.0 / GAMMA)
    return (color.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
