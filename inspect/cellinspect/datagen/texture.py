"""Textures and light for the sample images: rubber belt, turned metal, sensor effects.

Scene fields are float32 grey levels in [0, 1] on the ideal image grid (colour is added at
composition); only `sensor` works on the 0-255 frame after the lens. Each function draws only
from the generator it is given, so a part's look is reproducible from its seed.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8

F32 = npt.NDArray[np.float32]

# The station's light stands up-left of the camera; parts see it from about this direction.
LIGHT_DIRECTION_DEG = 135.0
LIGHT_JITTER_DEG = 8.0
RING_STEP_MM = 0.05


@functools.cache
def pixel_grid(width: int, height: int) -> tuple[F32, F32]:
    """x and y pixel coordinates of every pixel (cached: every render needs them)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def smooth_noise_1d(rng: np.random.Generator, n: int, sigma: float) -> F32:
    """White noise smoothed with a Gaussian of `sigma` samples, rescaled to unit deviation."""
    raw = rng.standard_normal(n).astype(np.float32)
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    out = np.convolve(raw, taps / taps.sum(), mode="same").astype(np.float32)
    std = float(out.std())
    return out / std if std > 0 else out


@functools.cache
def _weave_basis(width: int, height: int) -> tuple[F32, F32, F32, F32]:
    """sin and cos of the two diagonal phases of the belt's fabric imprint (6 px period)."""
    xs, ys = pixel_grid(width, height)
    a = 2.0 * np.pi * (xs + ys) / 6.0
    b = 2.0 * np.pi * (xs - ys) / 6.0
    out = tuple(f(v).astype(np.float32) for v in (a, b) for f in (np.sin, np.cos))
    for arr in out:
        arr.setflags(write=False)
    return out[0], out[1], out[2], out[3]


def belt(rng: np.random.Generator, width: int, height: int) -> F32:
    """Dark rubber belt: fine grain, a faint fabric imprint, wear streaks along the run (x)."""
    level = 0.17 + rng.uniform(-0.02, 0.02)
    grain = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.8)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
    s1, c1, s2, c2 = _weave_basis(width, height)
    # sin(a + p) = sin a cos p + cos a sin p: the belt has moved, so its pattern is shifted.
    weave = (s1 * np.cos(phase[0]) + c1 * np.sin(phase[0])) * (
        s2 * np.cos(phase[1]) + c2 * np.sin(phase[1])
    )
    streaks = smooth_noise_1d(rng, height, 4.0)[:, None]
    field = level + 0.035 * grain + 0.012 * weave + 0.007 * streaks
    specks = rng.integers(0, 12)
    for _ in range(int(specks)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        cv2.circle(field, (int(x), int(y)), 1, float(level + rng.uniform(0.04, 0.10)), -1)
    return np.asarray(np.clip(field, 0.0, 1.0), dtype=np.float32)


def ring_profile(rng: np.random.Generator, max_radius_mm: float) -> F32:
    """Brightness along the radius of a turned face: tool marks at several scales."""
    n = int(max_radius_mm / RING_STEP_MM) + 2
    r = np.arange(n, dtype=np.float32) * RING_STEP_MM
    feed = rng.uniform(0.7, 0.9)
    profile = (
        0.035 * smooth_noise_1d(rng, n, 1.2)
        + 0.030 * smooth_noise_1d(rng, n, 10.0)
        + 0.012 * np.sin(2.0 * np.pi * r / feed + rng.uniform(0, 2 * np.pi))
    )
    return np.asarray(profile, dtype=np.float32)


def sample_profiles(outer: F32, inner: F32, r_mm: F32, split_mm: float) -> F32:
    """Look up `inner` inside `split_mm` and `outer` beyond it at every pixel's radius.

    One interpolation over both profiles laid end to end: the inner one is reached by
    offsetting the positions of pixels inside the split by the outer profile's length.
    """
    pos = r_mm / np.float32(RING_STEP_MM)
    pos += (r_mm < split_mm) * np.float32(outer.size)
    both = np.concatenate([outer, inner])
    out = np.interp(pos.ravel(), np.arange(both.size, dtype=np.float32), both)
    return np.asarray(out.reshape(r_mm.shape), dtype=np.float32)


def illumination(rng: np.random.Generator, width: int, height: int) -> F32:
    """Uneven light over the field of view: a gentle linear gradient and an exposure gain."""
    xs, ys = pixel_grid(width, height)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    strength = rng.uniform(0.03, 0.09)
    gain = rng.uniform(0.92, 1.08)
    gx, gy = np.cos(direction) * strength, np.sin(direction) * strength
    field = gain * (1.0 + gx * (xs / width - 0.5) * 2.0 + gy * (ys / height - 0.5) * 2.0)
    return np.asarray(field, dtype=np.float32)


@functools.cache
def vignette(width: int, height: int, cx: float, cy: float, strength: float = 0.22) -> F32:
    """Relative illumination falling off toward the corners (cos^4-like, fixed per lens)."""
    xs, ys = pixel_grid(width, height)
    r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (0.5 * np.hypot(width, height)) ** 2
    field: F32 = np.asarray(1.0 - strength * r2, dtype=np.float32)
    field.setflags(write=False)
    return field


def sensor(rng: np.random.Generator, image: F32, vignetting: F32) -> ImageU8:
    """What the sensor adds after the lens: vignetting, slight blur, read and shot noise.

    `image` is the light reaching the sensor, BGR float32 on the 0-255 scale.
    """
    img = image * vignetting[..., None]
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), 0.55), dtype=np.float32)
    sigma = rng.uniform(1.2, 2.2)
    # Shot noise grows with the light; the green channel stands for the pixel's brightness.
    spread = np.sqrt(np.float32(0.4) + img[..., 1] * np.float32(1 / 255)) * np.float32(sigma)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= spread[..., None]
    img += noise
    img += np.float32(0.5)
    np.clip(img, 0, 255, out=img)
    return np.asarray(img, dtype=np.uint8)
