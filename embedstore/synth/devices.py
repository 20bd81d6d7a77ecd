"""Support devices and sternotomy wires: drawn and reported, but outside the 18-label scheme."""

from __future__ import annotations

import numpy as np

from embedstore.synth.anatomy import Geometry, Layers, bump


def sample_devices(rng: np.random.Generator, g: Geometry, devices: tuple[str, ...], sternotomy: bool) -> dict:
    p = {}
    if "ett" in devices:
        p["ett"] = dict(tip=rng.uniform(-0.5, -0.4))
    if "cvc" in devices:
        s = int(rng.choice([-1, 1]))
        p["cvc"] = dict(side=s, start=(s * rng.uniform(0.4, 0.55), rng.uniform(-0.8, -0.7)),
                        tip=(-0.05 + rng.normal(0, 0.01), rng.uniform(-0.25, -0.12)))
    if "pacemaker" in devices:
        p["pacemaker"] = dict(at=(rng.uniform(0.35, 0.5), rng.uniform(-0.68, -0.55)),
                              tip=(g.heart_cx - 0.05, max(g.dome_r, g.dome_l) - 0.08))
    if sternotomy:
        p["sternotomy"] = dict(n=int(rng.integers(4, 7)), v0=rng.uniform(-0.55, -0.45), r=rng.uniform(0.012, 0.018))
    return p


def _curve(p0, p1, p2, n=12):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * t * (1 - t) * np.array(p1) + t**2 * np.array(p2)


def _polyline(U, V, pts, half, px) -> np.ndarray:
    """Anti-aliased line of half-width `half` through the points (in patient units)."""
    d = np.full(U.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((U - x0) * dx + (V - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
        d = np.minimum(d, np.hypot(U - x0 - t * dx, V - y0 - t * dy))
    return np.clip((max(half, 0.6 * px) - d) / px + 0.5, 0, 1)


def device_layer(L: Layers, p: dict) -> np.ndarray:
    f, g = L.frame, L.g
    U, V, px = f.U, f.V, f.px
    lat = L.view == "lateral"
    D = g.depth
    out = np.zeros_like(U)
    if "ett" in p:
        tip = p["ett"]["tip"]
        if lat:
            pts = [(-0.1 * D, -1.0), (-0.1 * D + 0.12 * D * (tip + 1), tip)]
            out += 0.12 * _polyline(U, V, pts, 0.006, px)
        else:
            for off in (-0.014, 0.014):
                out += 0.1 * _polyline(U, V, [(off, -1.0), (off, tip)], 0.004, px)
    if "cvc" in p:
        c = p["cvc"]
        if lat:
            pts = _curve((-0.3 * D, c["start"][1]), (-0.35 * D, -0.5), (-0.2 * D, c["tip"][1]))
        else:
            pts = _curve(c["start"], (c["start"][0] * 0.4, -0.62), c["tip"])
        out += 0.15 * _polyline(U, V, pts, 0.005, px)
    if "pacemaker" in p:
        q = p["pacemaker"]
        (gx, gy), (tx, ty) = q["at"], q["tip"]
        if lat:
            gx, tx = -0.95 * D, -0.4 * D
        box = np.clip((0.055 - np.abs(U - gx)) / px, 0, 1) * np.clip((0.035 - np.abs(V - gy)) / px, 0, 1)
        out += 0.7 * box + 0.2 * _polyline(U, V, _curve((gx, gy), ((gx + tx) / 2, gy - 0.05), (tx, ty)), 0.005, px)
    if "sternotomy" in p:
        q = p["sternotomy"]
        for i in range(q["n"]):
            v = q["v0"] + i * 0.12
            cx = -0.9 * D if lat else 0.01
            ring = np.abs(np.sqrt((U - cx) ** 2 + ((V - v) * 1.6) ** 2) - q["r"])
            out += 0.45 * np.clip((0.006 - ring) / px + 0.5, 0, 1) * (bump(((U - cx) ** 2 + (V - v) ** 2) / 0.05**2) > 0)
    return out
