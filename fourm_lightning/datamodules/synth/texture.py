"""Procedural floor and wall textures (checker, stripes, noise, wood-like, plain)."""

from __future__ import annotations

import math

import numpy as np

from fourm_lightning.datamodules.synth.scene import Texture

#: Display gamma: albedos are decoded with it and the final image encoded with its inverse.
GAMMA = 2.2


def srgb_to_linear(rgb: tuple[float, float, float]) -> np.ndarray:
    """Convert sRGB 0..255 to linear 0..1 (a plain power law). Shape: (3,) float32."""
    return (np.asarray(rgb, dtype=np.float32) / 255.0) ** GAMMA


def _value_noise(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth lattice noise in [0, 1], periodic with the lattice side. Shape: (n,)."""
    n = lattice.shape[0]
    xf = np.floor(x)
    yf = np.floor(y)
    fx = x - xf
    fy = y - yf
    fx = fx * fx * (3.0 - 2.0 * fx)  # smoothstep hides the lattice
    fy = fy * fy * (3.0 - 2.0 * fy)
    i0 = xf.astype(np.int64) % n
    j0 = yf.astype(np.int64) % n
    i1 = (i0 + 1) % n
    j1 = (j0 + 1) % n
    top = lattice[i0, j0] + (lattice[i1, j0] - lattice[i0, j0]) * fx
    bottom = lattice[i0, j1] + (lattice[i1, j1] - lattice[i0, j1]) * fx
    return top + (bottom - top) * fy


def pattern(
    texture: Texture, u: np.ndarray, v: np.ndarray, footprint: np.ndarray, axis_aligned: bool
) -> np.ndarray:
    """Mix weight of ``color_b`` at surface coordinates (metres). Shape: (n,) float32 in [0, 1].

    Args:
        texture: the pattern.
        u: first surface coordinate, shape (n,).
        v: second surface coordinate, shape (n,).
        footprint: world size of one (supersampled) pixel at each point, shape (n,). Pattern
            contrast fades out where the pattern gets finer than the pixels, a cheap stand-in for
            mip-mapping that stops far checkerboards from turning into moire.
        axis_aligned: round the pattern angle to 0 or 90 degrees (walls: upright patterns).
    """
    if texture.kind == "plain":
        return np.zeros_like(u)
    angle = (0.0 if texture.angle < math.pi / 2 else math.pi / 2) if axis_aligned else texture.angle
    c, s = math.cos(angle), math.sin(angle)
    inv = 1.0 / texture.scale
    pu = (c * u + s * v) * inv
    pv = (-s * u + c * v) * inv
    if texture.kind == "checker":
        f = ((np.floor(2.0 * pu) + np.floor(2.0 * pv)) % 2.0).astype(np.float32)
    elif texture.kind == "stripes":
        f = (np.floor(2.0 * pu) % 2.0).astype(np.float32)
    elif texture.kind == "noise":
        f = 0.65 * _value_noise(texture.lattice, 2.0 * pu, 2.0 * pv) + 0.35 * _value_noise(
            texture.lattice, 5.0 * pu + 7.3, 5.0 * pv + 3.1
        )
        f = np.clip((f - 0.5) * 2.2 + 0.5, 0.0, 1.0)
    else:  # wood: stretched, noise-warped bands
        warp = _value_noise(texture.lattice, 0.8 * pu, 0.15 * pv)
        f = 0.5 + 0.5 * np.sin(2.0 * math.pi * (1.5 * pu + 2.0 * warp))
        f = f * f
    fade = np.clip((0.5 * texture.scale - footprint) * (4.0 * inv), 0.0, 1.0)
    return 0.5 + (f - 0.5) * fade
