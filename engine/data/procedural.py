"""Procedural image families with a known complexity, for the demo data and for tests.

Each family maps a level in [0, 1) to its generator parameters monotonically (more shapes, higher
frequency, deeper zoom, more noise) and reports a scalar `complexity_level` = family rank + level, so
that flat < gradient < few shapes < many shapes < stripes/checkerboard < texture < fractal < noise.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

Rendered = tuple[np.ndarray, dict]  # (uint8 image (R, R, 3), generator parameters as JSON-able dict)

# (rank, span): complexity_level = rank + span * level. Shapes span two ranks: few shapes, many shapes.
FAMILY_COMPLEXITY: dict[str, tuple[float, float]] = {
    "flat": (0.0, 0.0),
    "gradient": (1.0, 1.0),
    "shapes": (2.0, 2.0),
    "stripes": (4.0, 1.0),
    "checkerboard": (4.0, 1.0),
    "texture": (5.0, 1.0),
    "fractal": (6.0, 1.0),
    "noise": (7.0, 1.0),
}
MAX_SHAPES = 32
NOISE_AMPLITUDE = (0.02, 0.3)  # std of the added Gaussian noise, in [0, 1] pixel units


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (R, R) each, in (0, 1)
    return yy, xx


def _to_uint8(image01: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3)


def _max_frequency(resolution: int) -> int:
    return max(2, resolution // 4)  # a period of 4 pixels at the top level: still representable


def _log_level(value: float, max_value: float) -> float:
    return math.log(value) / math.log(max_value)


def render_flat(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    color = _color(rng)
    image = np.broadcast_to(color, (resolution, resolution, 3))
    return _to_uint8(image), {"color": color.round(4).tolist(), "level": 0.0}


def render_gradient(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    num_stops = 2 + min(2, int(level * 3))  # 2..4 colour stops
    kind = str(rng.choice(["linear", "radial"]))
    yy, xx = _grid(resolution)
    if kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        params = {"angle": round(angle, 4)}
    else:
        cy, cx = rng.uniform(0.0, 1.0, size=2)
        t = np.hypot(yy - cy, xx - cx)
        params = {"center": [round(cy, 4), round(cx, 4)]}
    t = (t - t.min()) / max(t.max() - t.min(), 1e-8)  # (R, R) in [0, 1]
    stops = np.linspace(0.0, 1.0, num_stops)
    colors = rng.uniform(0.0, 1.0, size=(num_stops, 3))
    image = np.stack([np.interp(t, stops, colors[:, c]) for c in range(3)], axis=-1)
    params.update(kind=kind, num_stops=num_stops, level=(num_stops - 2) / 2)
    return _to_uint8(image), params


def render_shapes(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    num_shapes = int(round(math.exp(level * math.log(MAX_SHAPES))))  # 1..32, log-spaced
    canvas = Image.new("RGB", (resolution, resolution), tuple(int(v) for v in _to_uint8(_color(rng))))
    draw = ImageDraw.Draw(canvas)
    kinds = []
    for _ in range(num_shapes):
        kind = str(rng.choice(["circle", "rectangle", "triangle"]))
        fill = tuple(int(v) for v in _to_uint8(_color(rng)))
        cx, cy = rng.uniform(0, resolution, size=2)
        size = rng.uniform(0.06, 0.3) * resolution
        if kind == "circle":
            draw.ellipse([cx - size, cy - size, cx + size, cy + size], fill=fill)
        elif kind == "rectangle":
            w, h = rng.uniform(0.4, 1.0, size=2) * size
            draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=fill)
        else:
            angles = rng.uniform(0, 2 * math.pi, size=3)
            draw.polygon([(cx + size * math.cos(a), cy + size * math.sin(a)) for a in angles], fill=fill)
        kinds.append(kind)
    params = {"num_shapes": num_shapes, "kinds": kinds, "level": _log_level(num_shapes, MAX_SHAPES)}
    return np.asarray(canvas), params


def _frequency_for(level: float, resolution: int) -> int:
    max_freq = _max_frequency(resolution)
    return int(round(math.exp(level * math.log(max_freq))))  # 1..max, log-spaced cycles per image


def render_stripes(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    frequency = _frequency_for(level, resolution)
    angle = float(rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)]))
    phase = rng.uniform(0, 2 * math.pi)
    yy, xx = _grid(resolution)
    wave = np.sin(2 * math.pi * frequency * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    a, b = _color(rng), _color(rng)
    image = np.where((wave >= 0)[..., None], a, b)
    params = {"frequency": frequency, "angle": round(angle, 4),
              "level": _log_level(frequency, _max_frequency(resolution)) if frequency > 1 else 0.0}
    return _to_uint8(image), params


def render_checkerboard(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    frequency = _frequency_for(level, resolution)  # cycles per image = pairs of cells per side
    offset = rng.uniform(0, 1, size=2)
    yy, xx = _grid(resolution)
    cells = np.floor((xx + offset[1]) * 2 * frequency) + np.floor((yy + offset[0]) * 2 * frequency)
    a, b = _color(rng), _color(rng)
    image = np.where((cells % 2 == 0)[..., None], a, b)
    params = {"frequency": frequency,
              "level": _log_level(frequency, _max_frequency(resolution)) if frequency > 1 else 0.0}
    return _to_uint8(image), params


def render_texture(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    kind = str(rng.choice(["waves", "filtered_noise"]))
    base = _color(rng)
    if kind == "waves":
        # A sum of random oriented sinusoids; more of them and higher frequencies with the level.
        num_waves = 3 + int(round(level * 13))
        max_freq = 2.0 + level * (_max_frequency(resolution) - 2.0)
        yy, xx = _grid(resolution)
        image = np.zeros((resolution, resolution, 3))
        for _ in range(num_waves):
            freq, angle, phase = rng.uniform(1.0, max_freq), rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
            wave = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
            image += wave[..., None] * rng.uniform(-1.0, 1.0, size=3)
        image *= 0.35 / math.sqrt(num_waves)
        params = {"kind": kind, "num_waves": num_waves, "max_frequency": round(max_freq, 3)}
    else:
        # Colour noise low-passed by a Gaussian whose width shrinks with the level (finer grain).
        sigma = resolution / 16 * (1.0 - level) + 1.0 * level
        noise = rng.normal(size=(resolution, resolution, 3))
        image = gaussian_filter(noise, sigma=(sigma, sigma, 0), mode="wrap")
        image *= 0.2 / max(image.std(), 1e-8)
        params = {"kind": kind, "sigma": round(sigma, 3)}
    params["level"] = level
    return _to_uint8(base + image), params


def _palette(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cosine colour palette: t (R, R) -> (R, R, 3)."""
    a, b = rng.uniform(0.3, 0.7, size=3), rng.uniform(0.2, 0.5, size=3)
    c, d = rng.uniform(0.5, 1.5, size=3), rng.uniform(0.0, 1.0, size=3)
    return a + b * np.cos(2 * math.pi * (c * t[..., None] + d))


def _escape_time(center: complex, half_width: float, size: int, julia_c: complex | None,
                 max_iter: int) -> np.ndarray:
    """Smooth escape iteration count on a (size, size) view; max_iter where the orbit stays bounded."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    points = center + half_width * (coords[None, :] + 1j * coords[:, None])  # (size, size)
    z = points.copy() if julia_c is not None else np.zeros_like(points)
    c = np.full_like(points, julia_c) if julia_c is not None else points
    escape = np.full(points.shape, float(max_iter))
    alive = np.ones(points.shape, dtype=bool)
    for step in range(max_iter):
        z[alive] = z[alive] ** 2 + c[alive]
        escaped = alive & (np.abs(z) > 4.0)
        # The continuous iteration count avoids colour banding.
        escape[escaped] = step + 1 - np.log2(np.log(np.abs(z[escaped])) / math.log(4.0))
        alive &= ~escaped
        if not alive.any():
            break
    return escape


def render_fractal(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    """Mandelbrot or Julia view after `level * 8` zoom steps of 2x, each re-centred on a boundary point.

    Re-centring on a slowly escaping point keeps the frame full of boundary detail at every depth.
    """
    kind = str(rng.choice(["mandelbrot", "julia"]))
    julia_c = None
    if kind == "julia":
        angle = rng.uniform(0, 2 * math.pi)
        julia_c = 0.7885 * complex(math.cos(angle), math.sin(angle))  # near the Mandelbrot boundary
    center, half_width = (complex(-0.5, 0.0), 1.5) if kind == "mandelbrot" else (0j, 1.6)
    zoom_steps = int(round(level * 8))
    max_iter = 64 + 24 * zoom_steps
    for _ in range(zoom_steps):
        coarse = _escape_time(center, half_width, 32, julia_c, max_iter)
        escaped = coarse < max_iter
        if not escaped.any():
            break
        # Boundary candidates: escaped points in the slowest-escaping quarter.
        threshold = np.quantile(coarse[escaped], 0.75)
        rows, cols = np.nonzero(escaped & (coarse >= threshold))
        pick = int(rng.integers(len(rows)))
        coords = (np.arange(32) + 0.5) / 32 * 2 - 1
        center = center + half_width * complex(coords[cols[pick]], coords[rows[pick]])
        half_width /= 2.0
    escape = _escape_time(center, half_width, resolution, julia_c, max_iter)
    inside = escape >= max_iter
    t = np.sqrt(escape / max_iter)
    image = np.where(inside[..., None], rng.uniform(0.0, 0.2, size=3), _palette(4 * t, rng))
    params = {"kind": kind, "center": [round(center.real, 8), round(center.imag, 8)],
              "half_width": half_width, "zoom_steps": zoom_steps, "max_iter": max_iter,
              "level": zoom_steps / 8}
    if julia_c is not None:
        params["c"] = [round(julia_c.real, 5), round(julia_c.imag, 5)]
    return _to_uint8(image), params


def render_noise(rng: np.random.Generator, resolution: int, level: float) -> Rendered:
    low, high = NOISE_AMPLITUDE
    amplitude = low + level * (high - low)
    colored = bool(rng.integers(2))
    base = rng.uniform(0.25, 0.75, size=3)  # mid-tones: little clipping, so amplitude stays monotone
    shape = (resolution, resolution, 3) if colored else (resolution, resolution, 1)
    image = base + amplitude * rng.normal(size=shape)
    params = {"amplitude": round(amplitude, 4), "colored": colored, "level": level}
    return _to_uint8(np.broadcast_to(image, (resolution, resolution, 3))), params


FAMILIES: dict[str, Callable[[np.random.Generator, int, float], Rendered]] = {
    "flat": render_flat,
    "gradient": render_gradient,
    "shapes": render_shapes,
    "stripes": render_stripes,
    "checkerboard": render_checkerboard,
    "texture": render_texture,
    "fractal": render_fractal,
    "noise": render_noise,
}


def render(family: str, rng: np.random.Generator, resolution: int, level: float) -> tuple[np.ndarray, dict, float]:
    """(uint8 image (R, R, 3), params, complexity_level) for `family` at `level` in [0, 1)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown procedural family {family!r}; allowed: {', '.join(FAMILIES)}")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must lie in [0, 1], got {level}")
    image, params = FAMILIES[family](rng, resolution, level)
    rank, span = FAMILY_COMPLEXITY[family]
    # The effective level (after rounding to an integer count or frequency) keeps equal params equal.
    complexity = rank + span * float(params["level"])
    return image, params, round(complexity, 4)
