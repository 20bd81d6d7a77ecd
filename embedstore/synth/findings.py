"""Findings drawn on a phantom: where a radiologist would look for them, with known extent.

Each kind either changes the body geometry (cardiomegaly, emphysema, pneumothorax, fracture) or
adds an attenuation layer that is exactly zero outside its support, so a finding's pixels are
known: the renderer draws the image with and without it and boxes the difference.
Findings are placed in 3-D (x across, v head-feet, z front-back as a fraction of depth), so a
nodule sits at the same height in the frontal and the lateral view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from embedstore.synth.anatomy import Geometry, Layers, bump, dome, lung_outer, soft

ZONES = ("upper", "mid", "lower")


@dataclass
class Kind:
    """One drawable finding kind and the scheme labels it makes positive."""

    name: str
    labels: tuple[str, ...]
    lateral: bool  # visible (and boxed) on lateral views
    sample: Callable  # (rng, g) -> params dict, with "side", "zone" for the report text
    modify: Callable | None = None  # (g, params) -> None: changes the geometry copy
    layer: Callable | None = None  # (layers, params) -> additive attenuation


def lung_point(rng: np.random.Generator, g: Geometry, zones=ZONES, side: int | None = None,
               lateral_frac=(0.2, 0.85), margin: float = 0.03):
    """A point inside a lung: (side, zone, u, v, z)."""
    side = int(rng.choice([-1, 1])) if side is None else side
    for _ in range(20):
        zone = str(rng.choice(zones))
        t = {"upper": (0.08, 0.33), "mid": (0.33, 0.62), "lower": (0.62, 0.9)}[zone]
        v = g.apex + rng.uniform(*t) * (g.cp - g.apex)
        xo = float(lung_outer(g, np.float32(v)))
        x = g.med_w + rng.uniform(*lateral_frac) * (xo - g.med_w)
        apex_v = g.apex + 0.9 * ((x - 0.5 * g.tw) / g.tw) ** 2
        if apex_v + margin < v < float(dome(g, np.float32(x), side)) - margin:
            return side, zone, side * x, v, rng.uniform(-0.6, 0.6)
    return side, "mid", side * (g.med_w + 0.4 * g.tw), (g.apex + g.cp) / 2, 0.0


def _coords(L: Layers, p: dict):
    """Pixel coordinates and the finding's centre in this view's patient frame."""
    f = L.frame
    cx = p["u"] if L.view == "frontal" else p["z"] * 0.75 * L.g.depth
    return f.U, f.V, cx, p["v"]


def _waves(rng: np.random.Generator, n: int, kmin: float, kmax: float) -> np.ndarray:
    """Random plane waves (kx, ky, phase): a cheap texture that rotates with the patient."""
    k = rng.uniform(kmin, kmax, n)
    a = rng.uniform(0, math.pi, n)
    return np.stack([k * np.cos(a), k * np.sin(a), rng.uniform(0, 2 * math.pi, n)], 1)


def _tex(U, V, waves) -> np.ndarray:
    t = sum(np.cos(kx * U + ky * V + ph) for kx, ky, ph in waves)
    return t / math.sqrt(len(waves) / 2)


# ------------------------------------------------------------------ round lesions


def _round(rmin, rmax, dmin, dmax, zones=ZONES):
    def sample(rng, g):
        side, zone, u, v, z = lung_point(rng, g, zones)
        return dict(side=side, zone=zone, u=u, v=v, z=z, r=rng.uniform(rmin, rmax),
                    d=rng.uniform(dmin, dmax), lob=rng.uniform(0, 2 * math.pi, 2),
                    k=rng.uniform(0.05, 0.2))
    return sample


def _nodule_layer(L, p):
    U, V, cx, cy = _coords(L, p)
    ang = np.arctan2(V - cy, U - cx)
    r = p["r"] * (1 + p["k"] * np.sin(3 * ang + p["lob"][0]) + 0.5 * p["k"] * np.sin(5 * ang + p["lob"][1]))
    return p["d"] * bump(((U - cx) ** 2 + (V - cy) ** 2) / r**2) ** 0.7


def _dots_sample(rmin, rmax, dmin, dmax, nmax):
    def sample(rng, g):
        n = int(rng.integers(1, nmax + 1))
        pts = [lung_point(rng, g) for _ in range(n)]
        side = pts[0][0] if len({q[0] for q in pts}) == 1 else 0
        return dict(side=side, zone=pts[0][1], dots=[(q[2], q[3], q[4]) for q in pts],
                    r=rng.uniform(rmin, rmax), d=rng.uniform(dmin, dmax))
    return sample


def _dots_layer(L, p):
    f = L.frame
    out = np.zeros_like(f.U)
    for u, v, z in p["dots"]:
        cx = u if L.view == "frontal" else z * 0.75 * L.g.depth
        r = max(p["r"], 0.9 * f.px)  # at least about two pixels across
        out += p["d"] * bump(((f.U - cx) ** 2 + (f.V - v) ** 2) / r**2) ** 0.3
    return out


def _lesion_layer(L, p):
    U, V, cx, cy = _coords(L, p)
    d2 = ((U - cx) ** 2 + (V - cy) ** 2) / p["r"] ** 2
    return p["d"] * (bump(d2) ** 0.5 - 1.2 * bump(d2 / 0.45**2) ** 0.5)  # thick wall, lucent cavity


# ------------------------------------------------------------------ airspace / interstitial


def _patch_sample(rx, ry, dens, zones, bilateral=0.0, bronchograms=False):
    def sample(rng, g):
        side, zone, u, v, z = lung_point(rng, g, zones, lateral_frac=(0.35, 0.7))
        both = rng.random() < bilateral
        return dict(side=0 if both else side, zone=zone, u=u, v=v, z=z, rx=rng.uniform(*rx),
                    ry=rng.uniform(*ry), d=rng.uniform(*dens), both=both,
                    waves=_waves(rng, 8, 12, 30), br=_waves(rng, 3, 25, 45) if bronchograms else None)
    return sample


def _patch_layer(L, p, streaky=False):
    U, V, cx, cy = _coords(L, p)
    out = np.zeros_like(U)
    centres = [cx, -cx] if (p["both"] and L.view == "frontal") else [cx]
    for c in centres:
        prof = bump(((U - c) / p["rx"]) ** 2 + ((V - cy) / p["ry"]) ** 2) ** 1.2
        t = _tex(U, V, p["waves"])
        if streaky:
            patt = np.clip(0.9 - np.abs(t) * 0.9, 0, 1)  # thin linear densities
        else:
            patt = np.clip(0.65 + 0.35 * t, 0, 1)  # patchy, not uniform
        if p["br"] is not None:
            patt = patt * (1 - 0.6 * np.clip(1 - np.abs(_tex(U, V, p["br"])) * 4, 0, 1))
        side = int(np.sign(c)) or 1
        out += p["d"] * prof * patt * L.lung_mask(side)
    return out


def _edema_sample(rng, g):
    return dict(side=0, zone="mid", d=rng.uniform(0.1, 0.17), rx=rng.uniform(0.2, 0.28),
                ry=rng.uniform(0.22, 0.3), v=(g.apex + g.cp) / 2 + 0.05, waves=_waves(rng, 6, 10, 20),
                kerley=rng.random() < 0.5)


def _edema_layer(L, p):
    f, g = L.frame, L.g
    U, V = f.U, f.V
    t = np.clip(0.75 + 0.25 * _tex(U, V, p["waves"]), 0, 1)
    if L.view == "lateral":
        prof = bump(((U + 0.05 * g.depth) / (0.5 * g.depth)) ** 2 + ((V - p["v"]) / p["ry"]) ** 2)
        return p["d"] * prof * t * L.lung_mask(0)
    out = np.zeros_like(U)
    for side in (-1, 1):
        hu = side * (g.med_w + 0.05)
        prof = bump(((U - hu) / p["rx"]) ** 2 + ((V - p["v"]) / p["ry"]) ** 2)  # bat-wing haze
        out += p["d"] * prof * t * L.lung_mask(side)
        if p["kerley"]:  # short horizontal septal lines at the lateral bases
            x = U * side
            base = soft(V - (g.cp - 0.22), 0.02) * soft(x - (lung_outer(g, V) - 0.08), 0.02)
            lines = np.clip(1 - np.abs(np.sin(V * 90)) * 3, 0, 1)
            out += 0.08 * base * lines * L.lung_mask(side)
    return out


def _fibrosis_sample(rng, g):
    return dict(side=0, zone="lower", d=rng.uniform(0.08, 0.14), w1=_waves(rng, 6, 45, 70),
                w2=_waves(rng, 6, 45, 70), top=rng.uniform(0.35, 0.55))


def _fibrosis_layer(L, p):
    f, g = L.frame, L.g
    U, V = f.U, f.V
    net = np.maximum(np.clip(1 - np.abs(_tex(U, V, p["w1"])) * 2.5, 0, 1),
                     np.clip(1 - np.abs(_tex(U, V, p["w2"])) * 2.5, 0, 1))  # reticular lines
    t = np.clip((V - (g.apex + p["top"] * (g.cp - g.apex))) / 0.25, 0, 1)  # basal predominance
    if L.view == "lateral":
        return p["d"] * net * t * L.lung_mask(0)
    out = np.zeros_like(U)
    for side in (-1, 1):
        periph = np.clip((U * side - g.med_w) / (0.6 * g.tw), 0, 1)  # subpleural
        out += p["d"] * net * t * periph * L.lung_mask(side)
    return out


# ------------------------------------------------------------------ bases and pleura


def _atel_sample(rng, g):
    side, zone, u, v, z = lung_point(rng, g, ("lower",), lateral_frac=(0.3, 0.6))
    return dict(side=side, zone="lower", u=u, v=v, z=z, wedge=rng.random() < 0.4,
                length=rng.uniform(0.14, 0.26), th=rng.uniform(0.014, 0.026),
                tilt=rng.uniform(-0.25, 0.25), d=rng.uniform(0.2, 0.3))


def _atel_layer(L, p):
    U, V, cx, cy = _coords(L, p)
    du, dv = U - cx, V - cy
    if p["wedge"]:  # triangle with its apex towards the hilum
        s = p["side"] if L.view == "frontal" else 1
        along = du * s + 0.5 * p["length"]
        width = 0.5 * p["length"] * np.clip(along / p["length"], 0, None)
        prof = np.clip(1 - np.abs(dv) / np.maximum(width, 1e-4), 0, 1) * (along > 0) * (along < p["length"])
        return 0.75 * p["d"] * prof * L.lung_mask(p["side"])
    along = du * math.cos(p["tilt"]) + dv * math.sin(p["tilt"])
    across = -du * math.sin(p["tilt"]) + dv * math.cos(p["tilt"])
    prof = bump((across / p["th"]) ** 2) * bump((along / (0.5 * p["length"])) ** 2) ** 0.3
    return p["d"] * prof * L.lung_mask(p["side"])


def _effusion_sample(rng, g):
    both = rng.random() < 0.35
    side = 0 if both else int(rng.choice([-1, 1]))
    h = rng.uniform(0.08, 0.34)
    sev = "small" if h < 0.15 else "moderate" if h < 0.25 else "large"
    return dict(side=side, zone="lower", h=h, men=rng.uniform(0.05, 0.12), d=rng.uniform(0.28, 0.38), sev=sev)


def _effusion_layer(L, p):
    f, g = L.frame, L.g
    U, V = f.U, f.V
    out = np.zeros_like(U)
    if L.view == "lateral":  # fluid pools in the posterior costophrenic sulcus
        lvl = g.cp + 0.08 - p["h"] - p["men"] * np.clip(U / g.depth, 0, 1) ** 2
        return p["d"] * np.clip((V - lvl) / 0.05, 0, 1) * soft(U + 0.2 * g.depth, 0.05) * L.lung_mask(0)
    for side in ((-1, 1) if p["side"] == 0 else (p["side"],)):
        x = U * side
        frac = np.clip((x - g.med_w) / (0.97 * g.tw - g.med_w), 0, 1)
        lvl = g.cp - p["h"] - p["men"] * frac**2  # meniscus: higher laterally
        out += p["d"] * np.clip((V - lvl) / 0.04, 0, 1) * L.lung_mask(side)
    return out


def _thick_sample(rng, g):
    side = int(rng.choice([-1, 1]))
    apical = rng.random() < 0.4
    t0 = 0.0 if apical else rng.uniform(0.2, 0.5)
    return dict(side=side, zone="upper" if apical or t0 < 0.33 else "mid", t0=t0,
                t1=t0 + rng.uniform(0.2, 0.35), th=rng.uniform(0.018, 0.032), d=rng.uniform(0.18, 0.28))


def _thick_layer(L, p):
    f, g = L.frame, L.g
    U, V = f.U, f.V
    sdf = np.minimum(lung_outer(g, V) - U * p["side"], V - (g.apex + 0.9 * ((U * p["side"] - 0.5 * g.tw) / g.tw) ** 2))
    t = (V - g.apex) / (g.cp - g.apex)
    along = soft(t - p["t0"], 0.04) * soft(p["t1"] - t, 0.04)
    return p["d"] * np.clip(1 - sdf / p["th"], 0, 1) * along * L.lung_mask(p["side"])


def _hernia_sample(rng, g):
    return dict(side=0, zone="lower", du=rng.uniform(-0.04, 0.08), dv=rng.uniform(-0.1, 0.0),
                r=rng.uniform(0.06, 0.1), level=rng.uniform(-0.1, 0.35))


def _hernia_layer(L, p):
    f, g = L.frame, L.g
    U, V = f.U, f.V
    cy = min(g.dome_r, g.dome_l) + p["dv"]
    cx = p["du"] if L.view == "frontal" else 0.15 * g.depth
    d2 = ((U - cx) ** 2 + (V - cy) ** 2) / p["r"] ** 2
    inside = bump(d2)
    lvl = cy + p["level"] * p["r"]
    air = -0.16 * inside * soft(lvl - V, f.edge)  # gas above the air-fluid level
    fluid = 0.04 * inside * soft(V - lvl, f.edge)
    rim = 0.08 * np.clip(1 - np.abs(np.sqrt(d2) - 1) * p["r"] / (1.2 * f.px), 0, 1)
    return air + fluid + rim


# ------------------------------------------------------------------ geometry changes


def _cardio_sample(rng, g):
    ctr = rng.uniform(0.53, 0.66)
    return dict(side=0, zone="mid", ctr=ctr, hh=rng.uniform(1.0, 1.12), sev="mild" if ctr < 0.58 else "moderate")


def _cardio_modify(g, p):
    g.heart_hw = p["ctr"] * g.tw
    g.heart_hh *= p["hh"]


def _emph_sample(rng, g):
    return dict(side=0, zone="mid", air=rng.uniform(1.18, 1.35), flat=rng.uniform(0.15, 0.4),
                drop=rng.uniform(0.04, 0.09), marks=rng.uniform(0.4, 0.65))


def _emph_modify(g, p):
    g.lung_air *= p["air"]
    g.marking_gain *= p["marks"]
    g.dome_r += p["drop"]
    g.dome_l += p["drop"]
    g.dome_h *= p["flat"]


def _ptx_sample(rng, g):
    side = int(rng.choice([-1, 1]))
    return dict(side=side, zone="upper", gap=rng.uniform(0.05, 0.12), low=rng.uniform(0.3, 0.55))


def _ptx_modify(g, p):
    g.ptx.append((p["side"], p["gap"], g.apex + p["low"] * (g.cp - g.apex)))


def _fracture_sample(rng, g):
    side = int(rng.choice([-1, 1]))
    k = int(rng.integers(3, 8))
    return dict(side=side, zone="mid" if k < 6 else "lower", rib=k + 1, k=k,
                x=g.tw * rng.uniform(0.55, 0.85), dv=float(rng.uniform(0.015, 0.028) * rng.choice([-1, 1])),
                gap=rng.uniform(0.008, 0.014))


def _fracture_modify(g, p):
    g.fractures.append((p["side"], p["k"], p["x"], p["dv"], p["gap"]))


KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("cardiomegaly", ("Cardiomegaly",), True, _cardio_sample, modify=_cardio_modify),
    Kind("emphysema", ("Emphysema",), True, _emph_sample, modify=_emph_modify),
    Kind("pneumothorax", ("Pneumothorax",), False, _ptx_sample, modify=_ptx_modify),
    Kind("fracture", ("Fracture",), False, _fracture_sample, modify=_fracture_modify),
    Kind("effusion", ("Effusion",), True, _effusion_sample, layer=_effusion_layer),
    Kind("nodule", ("Nodule",), True, _round(0.03, 0.055, 0.18, 0.28), layer=_nodule_layer),
    Kind("mass", ("Mass",), True, _round(0.07, 0.13, 0.2, 0.3), layer=_nodule_layer),
    Kind("calcified_granuloma", ("Calcified Granuloma", "Granuloma"), True,
         _dots_sample(0.01, 0.018, 0.45, 0.65, 3), layer=_dots_layer),
    Kind("granuloma", ("Granuloma",), True, _dots_sample(0.016, 0.026, 0.22, 0.32, 2), layer=_dots_layer),
    Kind("lesion", ("Lung Lesion",), True, _round(0.045, 0.07, 0.2, 0.28), layer=_lesion_layer),
    Kind("opacity", ("Lung Opacity",), True,
         _patch_sample((0.09, 0.16), (0.07, 0.13), (0.1, 0.17), ("mid", "lower"), 0.25), layer=_patch_layer),
    Kind("pneumonia", ("Pneumonia",), True,
         _patch_sample((0.14, 0.22), (0.11, 0.18), (0.2, 0.28), ("mid", "lower"), 0.1, True), layer=_patch_layer),
    Kind("infiltration", ("Infiltration",), True,
         _patch_sample((0.15, 0.24), (0.15, 0.22), (0.1, 0.16), ZONES, 0.4),
         layer=lambda L, p: _patch_layer(L, p, streaky=True)),
    Kind("atelectasis", ("Atelectasis",), True, _atel_sample, layer=_atel_layer),
    Kind("edema", ("Edema",), True, _edema_sample, layer=_edema_layer),
    Kind("fibrosis", ("Fibrosis",), True, _fibrosis_sample, layer=_fibrosis_layer),
    Kind("hernia", ("Hernia",), True, _hernia_sample, layer=_hernia_layer),
    Kind("pleural_thickening", ("Pleural_Thickening",), False, _thick_sample, layer=_thick_layer),
]}

# Scheme label -> the kind that draws it ("Granuloma" alone is a non-calcified granuloma).
LABEL_KIND = {lab: k.name for k in KINDS.values() for lab in k.labels if k.name != "calcified_granuloma"}
KIND_ORDER = list(KINDS)


def kinds_for(labels: tuple[str, ...]) -> list[str]:
    """The kinds to draw for a label set (calcified granuloma also covers Granuloma)."""
    names = {LABEL_KIND[lab] for lab in labels if lab not in ("Calcified Granuloma", "Granuloma")}
    if "Calcified Granuloma" in labels:
        names.add("calcified_granuloma")
    elif "Granuloma" in labels:
        names.add("granuloma")
    return [k for k in KIND_ORDER if k in names]
