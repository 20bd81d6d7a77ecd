"""Phantom anatomy: a patient's body geometry and the attenuation map of a frontal or lateral view.

Everything is drawn as analytic functions of *patient* coordinates evaluated at each pixel, so
rotation, scale and shift cost nothing and a finding changes only the pixels it covers. Patient
frame: u runs across the image (image left = the patient's right), v runs head (-1) to feet (+1),
w (lateral views) runs anterior (-) to posterior (+). Attenuation is "whiteness": bone and heart
high, air low.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

F32 = np.float32


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased step: 0 outside (d < -width/2), 1 inside (d > width/2)."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def bump(d2: np.ndarray) -> np.ndarray:
    """Ellipsoid thickness profile sqrt(1 - d^2), exactly zero outside the unit radius."""
    return np.sqrt(np.clip(1.0 - d2, 0.0, None))


@dataclass
class Geometry:
    """One patient's body, drawn from the anatomy stream; findings modify a copy of it."""

    body_w: float  # half-width of the soft tissue (patient size)
    soft_t: float  # soft-tissue attenuation (patient size)
    tw: float  # rib-cage inner half-width
    apex: float  # lung apex level
    dome_r: float  # top of the right (image-left) hemidiaphragm dome
    dome_l: float
    dome_h: float  # dome height above the costophrenic angles
    med_w: float  # mediastinum half-width
    heart_cx: float
    heart_cy: float
    heart_hw: float  # heart half-width: CTR = heart_hw / tw
    heart_hh: float
    heart_d: float  # heart attenuation
    lung_air: float
    marking_gain: float
    rib_v0: float
    rib_bend: float
    clav_v: float
    depth: float  # lateral: AP half-depth
    ptx: list = field(default_factory=list)  # (side, gap, v_low): pneumothorax regions
    fractures: list = field(default_factory=list)  # (side, rib, x, dv, gap)

    @property
    def cp(self) -> float:
        """Costophrenic angle level (the lowest lateral lung point)."""
        return max(self.dome_r, self.dome_l) + self.dome_h

    @property
    def ctr(self) -> float:
        return self.heart_hw / self.tw


def sample_geometry(rng: np.random.Generator) -> Geometry:
    body_w = rng.uniform(0.74, 0.93)
    tw = body_w * rng.uniform(0.82, 0.9)
    apex = rng.uniform(-0.78, -0.66)
    dome_r = rng.uniform(0.28, 0.42)
    return Geometry(
        body_w=body_w, soft_t=rng.uniform(0.38, 0.56) * (body_w / 0.84), tw=tw, apex=apex,
        dome_r=dome_r, dome_l=dome_r + rng.uniform(0.01, 0.06), dome_h=rng.uniform(0.12, 0.2),
        med_w=rng.uniform(0.1, 0.135), heart_cx=rng.uniform(0.07, 0.12), heart_cy=0.0,
        heart_hw=tw * rng.uniform(0.39, 0.47), heart_hh=rng.uniform(0.2, 0.25),
        heart_d=rng.uniform(0.07, 0.12), lung_air=rng.uniform(0.23, 0.3),
        marking_gain=rng.uniform(0.03, 0.05), rib_v0=apex + rng.uniform(0.0, 0.03),
        rib_bend=rng.uniform(0.14, 0.22), clav_v=apex + rng.uniform(0.02, 0.08),
        depth=body_w * rng.uniform(0.6, 0.72),
    )


@dataclass
class Exposure:
    """Per-image acquisition: pose, window, gamma, noise, heel effect."""

    theta: float
    scale: float
    shift: tuple[float, float]
    lo: float
    hi: float
    gamma: float
    noise: float
    heel: float


def sample_exposure(rng: np.random.Generator, soft_t: float) -> Exposure:
    return Exposure(
        theta=math.radians(rng.normal(0.0, 2.5)), scale=rng.uniform(0.86, 1.04),
        shift=(rng.normal(0.0, 0.03), rng.normal(0.02, 0.03)), lo=rng.uniform(0.0, 0.1),
        hi=rng.uniform(0.9, 1.15), gamma=rng.uniform(0.8, 1.25),
        noise=rng.uniform(0.008, 0.022) * (soft_t / 0.47), heel=rng.uniform(-0.08, 0.08),
    )


def repeat_exposure(first: Exposure, rng: np.random.Generator) -> Exposure:
    """A follow-up at the same site: the first study's protocol, re-positioned and re-exposed
    (a few degrees, a few per cent of scale, shift, window and gamma; new noise level)."""
    return Exposure(
        theta=first.theta + math.radians(rng.normal(0.0, 1.5)), scale=first.scale * rng.uniform(0.96, 1.04),
        shift=(first.shift[0] + rng.normal(0.0, 0.02), first.shift[1] + rng.normal(0.0, 0.02)),
        lo=float(np.clip(first.lo + rng.uniform(-0.03, 0.03), 0.0, 0.12)), hi=first.hi * rng.uniform(0.96, 1.04),
        gamma=first.gamma * rng.uniform(0.93, 1.07), noise=first.noise * rng.uniform(0.8, 1.25),
        heel=first.heel + rng.normal(0.0, 0.015),
    )


class Frame:
    """Pixel grid of one image and its patient coordinates (u or w across, v down)."""

    def __init__(self, size: int, exp: Exposure):
        self.size, self.exp = size, exp
        a = (np.arange(size, dtype=F32) + 0.5) * (2.0 / size) - 1.0
        aa, bb = np.meshgrid(a - exp.shift[0], a - exp.shift[1])
        c, s = math.cos(exp.theta), math.sin(exp.theta)
        self.U = ((c * aa + s * bb) / exp.scale).astype(F32)
        self.V = ((-s * aa + c * bb) / exp.scale).astype(F32)
        self.px = 2.0 / (size * exp.scale)  # patient units per pixel
        self.edge = 1.5 * self.px  # anti-aliasing width


# ---------------------------------------------------------------- frontal


def dome(g: Geometry, x: np.ndarray, side: int) -> np.ndarray:
    """Hemidiaphragm level under lateral distance x (>= 0) on `side` (-1 image left, +1 right)."""
    top = g.dome_r if side < 0 else g.dome_l
    peak = 0.45 * g.tw
    return top + g.dome_h * ((x - peak) / (0.97 * g.tw - peak)) ** 2


def lung_outer(g: Geometry, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - g.apex) / (g.cp - g.apex), 0.0, 1.0)
    return 0.97 * g.tw * (0.45 + 0.55 * np.sin(np.minimum(t * 1.7, 1.0) * (math.pi / 2)))


def lung_sdf(g: Geometry, U: np.ndarray, V: np.ndarray, side: int) -> np.ndarray:
    """Approximate signed distance into one lung (positive inside)."""
    x = U * side
    apex_curve = g.apex + 0.9 * ((x - 0.5 * g.tw) / g.tw) ** 2
    return np.minimum.reduce([x - g.med_w, lung_outer(g, V) - x, V - apex_curve, dome(g, x, side) - V])


class Layers:
    """The attenuation map of one view plus the masks findings clip themselves to."""

    def __init__(self, frame: Frame, g: Geometry, view: str, texture: np.ndarray):
        self.frame, self.g, self.view, self.texture = frame, g, view, texture
        self.lung = {}  # side -> soft lung mask (frontal: -1 / +1; lateral: 0)
        self.A = frontal(self) if view == "frontal" else lateral(self)

    def lung_mask(self, side: int) -> np.ndarray:
        return self.lung[0] if self.view == "lateral" else self.lung[side]


def frontal(L: Layers) -> np.ndarray:
    f, g = L.frame, L.g
    U, V, e = f.U, f.V, f.edge
    x = np.abs(U)
    neck = np.clip((V + 0.98) / 0.3, 0.0, 1.0)
    bw = g.body_w * (0.42 + 0.58 * neck)
    A = g.soft_t * bump((U / bw) ** 2) * soft(1.0 - np.abs(V), e)
    # Mediastinum, trachea, aortic knob, spine.
    mw = g.med_w * (0.7 + 0.3 * np.clip((V + 0.6) / 0.6, 0, 1))
    A += 0.17 * bump(((U - 0.01) / mw) ** 2)
    A -= 0.1 * bump((U / 0.024) ** 2) * soft(-0.38 - V, 0.05)
    A += 0.12 * bump(((U - 0.09) ** 2 + (V + 0.37) ** 2) / 0.05**2)
    A += (0.06 + 0.025 * np.clip(3 * np.cos(2 * math.pi * V / 0.105), -1, 1)) * bump((U / 0.06) ** 2)
    # Heart: it displaces lung, so inside its silhouette no air is subtracted (a sharp border).
    cy = max(g.dome_r, g.dome_l) + 0.04 - 0.55 * g.heart_hh
    r2 = ((U - g.heart_cx) / g.heart_hw) ** 2 + ((V - cy) / g.heart_hh) ** 2
    A += g.heart_d * bump(r2) ** 0.5
    heart_out = soft(np.sqrt(r2) - 1.0, e / g.heart_hw)
    # Lungs: air replaces tissue; markings fade from the hila.
    for side in (-1, 1):
        sdf = lung_sdf(g, U, V, side)
        m = soft(sdf, e) * heart_out
        L.lung[side] = m
        xo, xi = lung_outer(g, V), g.med_w
        frac = np.clip((x - xi) / np.maximum(xo - xi, 1e-3), 0, 1)
        air = g.lung_air * (0.78 + 0.22 * np.sin(math.pi * frac)) * m
        hil_u, hil_v = side * (g.med_w + 0.07), (g.apex + g.cp) / 2 + 0.05
        r = np.sqrt((U - hil_u) ** 2 + (V - hil_v) ** 2)
        marks = g.marking_gain * np.clip(L.texture, 0, None) * np.clip(1.25 - r / 0.6, 0.15, 1.0)
        marks += 0.08 * bump(((U - hil_u) ** 2 + (V - hil_v) ** 2) / 0.07**2)
        for s, gap, v_low in g.ptx:
            if s != side:
                continue
            region = m * soft(gap - sdf, e) * soft(v_low - V, 0.05)
            marks = marks * (1 - region)
            air = air + 0.07 * region
            A += 0.14 * np.clip(1 - np.abs(sdf - gap) / (0.9 * f.px), 0, 1) * soft(v_low - V, 0.05) * m
        A += marks * m - air
        # Abdomen under the dome: liver / spleen density.
        A += 0.06 * soft(V - dome(g, x, side), e) * (U * side > 0) * soft(bw - x, e)
    A += ribs(g, U, V, f) + clavicles(g, U, V)
    return A


def ribs(g: Geometry, U: np.ndarray, V: np.ndarray, f: Frame) -> np.ndarray:
    """Posterior ribs (bright arcs) and fainter anterior ribs, with any fractures."""
    x, side = np.abs(U), np.sign(U)
    sp = (g.cp - g.rib_v0) / 9.0
    wr = 0.36
    # A fracture displaces the rib beyond the break and leaves a lucent gap; elsewhere shift is
    # exactly 0, so the pixels are bit-identical to the unbroken rib.
    shift = np.zeros_like(V)
    gap_mask = np.zeros_like(U)
    for s, k, xb, dv, gap in g.fractures:
        vk = g.rib_v0 + k * sp + g.rib_bend * (xb / g.tw) ** 2 + wr * sp / 2
        win = (side == s) & (np.abs(x - xb) < 0.08) & (np.abs(V - vk) < 0.6 * sp)
        shift[win & (x > xb)] = dv
        gap_mask = np.maximum(gap_mask, win * np.clip(1 - np.abs(x - xb) / gap, 0, 1))
    p = (V - shift - g.rib_v0 - g.rib_bend * (x / g.tw) ** 2) / sp
    fr = p - np.floor(p)
    band = np.sqrt(np.clip(np.sin(math.pi * np.clip(fr / wr, 0, 1)), 0, None)) * (fr < wr)
    valid = (p >= 0) & (p < 10) & (x > 0.05)
    post = 0.09 * band * valid * soft(1.03 * g.tw - x, 0.03) * (1 - gap_mask)
    pa = (V - g.rib_v0 - 0.08 + 0.3 * (x / g.tw)) / sp
    fa = pa - np.floor(pa)
    ant = 0.035 * np.sin(math.pi * np.clip(fa / 0.35, 0, 1)) * (fa < 0.35) * (pa >= 1) * (pa < 8)
    ant = ant * soft(x - 0.3 * g.tw, 0.05) * soft(g.tw - x, 0.03)
    return (post + ant).astype(F32)


def clavicles(g: Geometry, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    x = np.abs(U)
    L = 0.62 * g.tw
    vc = g.clav_v - 0.1 * (x / L) + 0.03 * np.sin(math.pi * x / L)
    return (0.13 * bump(((V - vc) / 0.03) ** 2) * (x > 0.03) * soft(L - x, 0.04)).astype(F32)


# ---------------------------------------------------------------- lateral


def lateral_dome(g: Geometry, W: np.ndarray) -> np.ndarray:
    top = min(g.dome_r, g.dome_l)
    pk = -0.15 * g.depth
    post = top + (g.dome_h + 0.08) * ((W - pk) / (0.88 * g.depth - pk)) ** 2
    ant = top + 0.05 * ((pk - W) / (0.9 * g.depth + pk)) ** 2
    return np.where(W > pk, post, ant)


def lateral_sdf(g: Geometry, W: np.ndarray, V: np.ndarray) -> np.ndarray:
    D = g.depth
    apex_curve = g.apex + 1.1 * ((W - 0.1 * D) / D) ** 2
    return np.minimum.reduce([W + 0.88 * D, 0.86 * D - W, V - apex_curve, lateral_dome(g, W) - V])


def lateral(L: Layers) -> np.ndarray:
    f, g = L.frame, L.g
    W, V, e, D = f.U, f.V, f.edge, g.depth
    neck = np.clip((V + 0.98) / 0.3, 0.0, 1.0)
    A = 1.35 * g.soft_t * bump((W / (D * (0.55 + 0.45 * neck))) ** 2) * soft(1.0 - np.abs(V), e)
    # Heart anterior-inferior (it displaces lung), then the lungs.
    scale = g.heart_hw / (0.43 * g.tw)
    cy = min(g.dome_r, g.dome_l) + 0.03 - 0.8 * g.heart_hh
    r2 = ((W + 0.4 * D) / (0.36 * D * scale)) ** 2 + ((V - cy) / g.heart_hh) ** 2
    A += 1.5 * g.heart_d * bump(r2) ** 0.5
    sdf = lateral_sdf(g, W, V)
    m = soft(sdf, e) * (0.35 + 0.65 * soft(np.sqrt(r2) - 1.0, e / (0.36 * D)))
    L.lung[0] = m
    air = 1.05 * g.lung_air * m
    marks = g.marking_gain * np.clip(L.texture, 0, None) * m
    A += marks - air
    # Sternum, spine with vertebral blocks, trachea.
    A += 0.09 * bump(((W + 0.9 * D) / 0.03) ** 2) * soft(0.25 - V, 0.05) * soft(V + 0.72, 0.05)
    block = np.clip(3 * np.cos(2 * math.pi * V / 0.105), -1, 1)
    A += (0.12 + 0.04 * block) * bump(((W - 0.6 * D) / (0.1 * D)) ** 2)
    A += 0.05 * bump(((W - 0.82 * D) / (0.08 * D)) ** 2)
    wt = -0.1 * D + 0.12 * D * (V + 1)
    A -= 0.09 * bump(((W - wt) / 0.025) ** 2) * soft(-0.3 - V, 0.05)
    return A


# ---------------------------------------------------------------- display


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Lung-marking texture: band-passed noise, unit variance, drawn once per image."""
    n = rng.standard_normal((size, size)).astype(F32)
    sig = max(size / 256.0, 0.5)
    t = gaussian_filter(n, 1.0 * sig) - 0.6 * gaussian_filter(n, 3.0 * sig)
    return (t / (t.std() + 1e-6)).astype(F32)


BLUR_TRUNCATE = 2.0


def blur_sigma(size: int) -> float:
    return 0.6 * size / 256.0


def display(A: np.ndarray, frame: Frame) -> np.ndarray:
    """Detector blur, window, gamma and heel effect: attenuation -> [0, 1] (noise comes later)."""
    exp = frame.exp
    A = gaussian_filter(A, blur_sigma(frame.size), truncate=BLUR_TRUNCATE)
    img = np.clip((A - exp.lo) / (exp.hi - exp.lo), 0, 1) ** exp.gamma
    ramp = np.linspace(-1, 1, frame.size, dtype=F32)[:, None]
    return (img * (1 + exp.heel * ramp)).astype(F32)


def add_noise(img: np.ndarray, rng: np.random.Generator, exp: Exposure) -> np.ndarray:
    """Quantum-like noise: larger where fewer photons reach the detector (bright pixels)."""
    n = rng.standard_normal(img.shape).astype(F32)
    return np.clip(img + exp.noise * (0.5 + 0.7 * img) * n, 0, 1)


def modified(g: Geometry) -> Geometry:
    return copy.deepcopy(g)
