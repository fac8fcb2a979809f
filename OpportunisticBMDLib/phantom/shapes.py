"""Signed distance primitives (mm; negative inside) returning :class:`Prim` with their bounding boxes.

Coordinates are LPS mm (x to the patient's left, y posterior, z superior), passed as broadcastable
arrays. Ellipsoids use Quilez's first-order distance estimate, exact near the surface, which is all
partial volume and shell thickness need.
"""

from __future__ import annotations

import numpy as np

from .grid import Prim


def unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def rotation(axis_z, axis_x_hint) -> np.ndarray:
    """Rotation matrix whose columns are the local (u, v, w) axes in world coordinates: w along
    ``axis_z``, u as close as possible to ``axis_x_hint``, v = w x u (right-handed)."""
    w = unit(axis_z)
    u = np.asarray(axis_x_hint, float) - np.dot(axis_x_hint, w) * w
    u = unit(u)
    v = np.cross(w, u)
    return np.stack([u, v, w], axis=1)


def rot_about(axis, angle_rad: float) -> np.ndarray:
    """Rodrigues rotation matrix about ``axis``."""
    k = unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * kx @ kx


def to_local(x, y, z, center, rot):
    """World -> local (u, v, w) coordinates of a frame with origin ``center`` and axes ``rot`` columns."""
    dx, dy, dz = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
    r = rot.astype(np.float32)
    u = dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]
    v = dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]
    w = dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]
    return u, v, w


def ellipse_distance(k0, k1, r_min: float):
    """Quilez's estimate (k0 - 1) k0 / k1, exact near the surface. k0 / k1 lies between the smallest and
    largest radius everywhere but at the centre (0 / 0); the tiny epsilons make it -r_min there."""
    eps = np.float32(1e-6)
    return (k0 - 1.0) * (k0 + eps) / (k1 + eps / np.float32(r_min))


def _ellipsoid_local(u, v, w, a, b, c):
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2)
    return ellipse_distance(k0, k1, min(a, b, c))


def ellipsoid(center, radii, rot=None, wobble_mm: float = 0.0, wobble_seed: int = 0) -> Prim:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``rot`` (identity: x, y, z); optional
    low-frequency surface wobble (organic shapes) of amplitude ``wobble_mm``."""
    center = np.asarray(center, float)
    radii = np.asarray(radii, float)
    axis_aligned = rot is None
    rot = np.eye(3) if rot is None else np.asarray(rot, float)
    ext = np.abs(rot) @ radii + wobble_mm
    phases = np.random.default_rng(wobble_seed).uniform(0, 2 * np.pi, 6)

    def fn(x, y, z):
        if axis_aligned:  # separable: 1D coordinates broadcast, trigonometry on 1D arrays only
            u, v, w = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
        else:
            u, v, w = to_local(x, y, z, center, rot)
        d = _ellipsoid_local(u, v, w, *radii)
        if wobble_mm:  # smooth bumps; separable in world axes, so the trigonometry runs on 1D arrays
            dx, dy, dz = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
            f = np.float32(0.6 * wobble_mm)
            kx, ky, kz = 1.6 / ext
            d = d + (f * np.sin(2.1 * kx * dx + phases[0])) * np.sin(1.7 * ky * dy + phases[1])
            d = d + (0.6 * f * np.sin(2.3 * kz * dz + phases[2])) * np.cos(1.3 * kx * dx + phases[3])
        return d

    return Prim(center - ext, center + ext, fn)


def sphere(center, radius: float) -> Prim:
    center = np.asarray(center, float)

    def fn(x, y, z):
        return np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2) - np.float32(radius)

    return Prim(center - radius, center + radius, fn)


def capsule(a, b, ra: float, rb: float | None = None) -> Prim:
    """Segment a-b with radius ra at a and rb at b (linear taper; a cone-capsule estimate)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    rb = ra if rb is None else rb
    ba = b - a
    inv = 1.0 / max(float(ba @ ba), 1e-9)
    r_max = max(ra, rb)

    def fn(x, y, z):
        px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) * np.float32(inv), 0.0, 1.0)
        dx, dy, dz = px - h * np.float32(ba[0]), py - h * np.float32(ba[1]), pz - h * np.float32(ba[2])
        return np.sqrt(dx * dx + dy * dy + dz * dz) - (np.float32(ra) + h * np.float32(rb - ra))

    return Prim(np.minimum(a, b) - r_max, np.maximum(a, b) + r_max, fn)


def polyline(points, radii) -> list[Prim]:
    """Capsules along a polyline (radii per point): tubes such as ribs and rami."""
    points = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
    return [capsule(points[n], points[n + 1], radii[n], radii[n + 1]) for n in range(len(points) - 1)]


def elliptic_cylinder(center, rot, half_widths, half_height: float, waist: float = 0.0,
                      round_mm: float = 1.5) -> Prim:
    """Vertebral-body-like cylinder: elliptic section (half widths u, v) along local w, edges rounded by
    ``round_mm``, sides concave by ``waist`` (fraction of the radius lost at mid-height)."""
    center = np.asarray(center, float)
    rot = np.asarray(rot, float)
    a0, b0 = half_widths
    ext = np.abs(rot) @ np.array([a0, b0, half_height]) + 1.0

    def fn(x, y, z):
        u, v, w = to_local(x, y, z, center, rot)
        t = np.clip(w / half_height, -1.0, 1.0)
        shrink = 1.0 - waist * (1.0 - t * t)
        a, b = (a0 - round_mm) * shrink, (b0 - round_mm) * shrink
        k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
        d_xy = ellipse_distance(k0, k1, min(a0, b0) * 0.8)
        d_z = np.abs(w) - (half_height - round_mm)
        out = np.sqrt(np.maximum(d_xy, 0) ** 2 + np.maximum(d_z, 0) ** 2)
        return out + np.minimum(np.maximum(d_xy, d_z), 0) - round_mm

    return Prim(center - ext, center + ext, fn)


def triangle_plate(p1, p2, p3, half_thickness: float) -> Prim:
    """A plate: distance to triangle p1 p2 p3 minus ``half_thickness`` (Quilez udTriangle)."""
    p1, p2, p3 = (np.asarray(p, float) for p in (p1, p2, p3))
    e1, e2, e3 = p2 - p1, p3 - p2, p1 - p3
    nor = np.cross(e1, e3)
    c1, c2, c3 = np.cross(e1, nor), np.cross(e2, nor), np.cross(e3, nor)
    lo = np.min([p1, p2, p3], axis=0) - half_thickness
    hi = np.max([p1, p2, p3], axis=0) + half_thickness

    def dot(vx, vy, vz, c):
        return vx * np.float32(c[0]) + vy * np.float32(c[1]) + vz * np.float32(c[2])

    def seg(px, py, pz, e):
        h = np.clip(dot(px, py, pz, e) / np.float32(e @ e), 0.0, 1.0)
        dx, dy, dz = px - h * np.float32(e[0]), py - h * np.float32(e[1]), pz - h * np.float32(e[2])
        return dx * dx + dy * dy + dz * dz

    def fn(x, y, z):
        q1 = (x - np.float32(p1[0]), y - np.float32(p1[1]), z - np.float32(p1[2]))
        q2 = (x - np.float32(p2[0]), y - np.float32(p2[1]), z - np.float32(p2[2]))
        q3 = (x - np.float32(p3[0]), y - np.float32(p3[1]), z - np.float32(p3[2]))
        inside = (np.sign(dot(*q1, c1)) + np.sign(dot(*q2, c2)) + np.sign(dot(*q3, c3))) < 2.0
        edge = np.minimum(np.minimum(seg(*q1, e1), seg(*q2, e2)), seg(*q3, e3))
        plane = dot(*q1, nor) ** 2 / np.float32(nor @ nor)
        return np.sqrt(np.where(inside, edge, plane)) - np.float32(half_thickness)

    return Prim(lo, hi, fn)


def halfspace(point, normal):
    """SDF of the half-space on the side opposite ``normal`` (negative behind the plane)."""
    point = np.asarray(point, float)
    n = unit(normal)

    def fn(x, y, z):
        return ((x - np.float32(point[0])) * np.float32(n[0]) + (y - np.float32(point[1])) * np.float32(n[1])
                + (z - np.float32(point[2])) * np.float32(n[2]))

    return fn
