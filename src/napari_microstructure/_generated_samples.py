"""Microstructures generated in code, for napari's File > Open Sample and for tests.

numpy and scipy only, no napari import; every generator is seeded, so a sample is the same on
every machine and every call. The sample-data commands return napari layer-data tuples
``[(data, {"name": ..., "metadata": ...}, layer_type)]``; the array functions
(:func:`gaussian_random_field`, :func:`particle_dispersion`, :func:`three_phase`,
:func:`grey_field`) return plain arrays.

- a thresholded Gaussian random field: two interpenetrating phases (a bicontinuous structure
  such as a spinodal or a porous medium);
- a two-phase particle dispersion: non-overlapping discs of random radii in a matrix;
- a three-phase structure: a Gaussian-random-field matrix of two phases with dispersed
  particles of a third;
- a grey Gaussian random field (an Image layer), to try the grey-level path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "GENERATED_SAMPLES",
    "gaussian_field_sample",
    "gaussian_random_field",
    "grey_field",
    "grey_field_sample",
    "particle_dispersion",
    "particles_sample",
    "three_phase",
    "three_phase_sample",
]

#: Side length in pixels of the generated samples.
SIZE = 256
#: Keys of the generated samples in the manifest.
GENERATED_SAMPLES: tuple[str, ...] = ("gaussian_field", "particles", "three_phase", "grey_field")

LayerData = list[tuple[np.ndarray, dict[str, Any], str]]


def _smooth_noise(
    shape: tuple[int, int], correlation_length: float, rng: np.random.Generator
) -> np.ndarray:
    """White noise smoothed with a periodic Gaussian of standard deviation ``correlation_length``
    pixels, scaled to zero mean and unit variance: a stationary Gaussian random field that tiles."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), correlation_length, mode="wrap")
    return (field - field.mean()) / field.std()


def _threshold_at_fraction(field: np.ndarray, fraction: float) -> np.ndarray:
    """1 where ``field`` is among its highest ``fraction`` of pixels (exact count), else 0."""
    n_one = int(round(fraction * field.size))
    order = np.argsort(field.ravel(), kind="stable")
    labels = np.zeros(field.size, dtype=np.uint8)
    labels[order[field.size - n_one :]] = 1
    return labels.reshape(field.shape)


def gaussian_random_field(
    shape: tuple[int, int] = (SIZE, SIZE),
    correlation_length: float = 6.0,
    volume_fraction: float = 0.4,
    seed: int = 0,
) -> np.ndarray:
    """Thresholded Gaussian random field: ``uint8`` labels, phase 1 filling ``volume_fraction``.

    Periodic white noise is smoothed with a Gaussian of standard deviation
    ``correlation_length`` pixels and cut at the quantile that gives phase 1 exactly
    ``round(volume_fraction * size)`` pixels; the result tiles seamlessly.
    """
    if not 0.0 < volume_fraction < 1.0:
        raise ValueError(
            f"volume_fraction must lie strictly between 0 and 1; got {volume_fraction}."
        )
    rng = np.random.default_rng(seed)
    return _threshold_at_fraction(
        _smooth_noise(tuple(shape), correlation_length, rng), volume_fraction
    )


def particle_dispersion(
    shape: tuple[int, int] = (SIZE, SIZE),
    area_fraction: float = 0.3,
    radius: tuple[float, float] = (4.0, 10.0),
    gap: float = 1.0,
    seed: int = 0,
    max_attempts: int = 20000,
) -> np.ndarray:
    """Non-overlapping discs (phase 1) in a matrix (phase 0), as ``uint8`` labels.

    Random sequential addition: radii uniform in ``radius`` (pixels), centres uniform over the
    (periodic) image, a disc accepted when it keeps ``gap`` pixels from every disc placed
    before; discs are added until ``area_fraction`` is reached or ``max_attempts`` placements
    have failed.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    target = area_fraction * height * width
    centres: list[tuple[float, float, float]] = []
    covered, attempts = 0.0, 0
    while covered < target and attempts < max_attempts:
        attempts += 1
        r = rng.uniform(*radius)
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        fits = True
        for cy, cx, cr in centres:
            dy = abs(y - cy)
            dx = abs(x - cx)
            dy, dx = min(dy, height - dy), min(dx, width - dx)  # periodic distance
            if dy * dy + dx * dx < (r + cr + gap) ** 2:
                fits = False
                break
        if fits:
            centres.append((y, x, r))
            covered += np.pi * r * r
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.zeros(shape, dtype=np.uint8)
    for cy, cx, r in centres:
        dy = np.abs(rows - cy)
        dx = np.abs(cols - cx)
        dy, dx = np.minimum(dy, height - dy), np.minimum(dx, width - dx)
        image[dy * dy + dx * dx <= r * r] = 1
    return image


def three_phase(
    shape: tuple[int, int] = (SIZE, SIZE),
    correlation_length: float = 8.0,
    matrix_fraction: float = 0.5,
    particle_fraction: float = 0.12,
    seed: int = 0,
) -> np.ndarray:
    """Three phases as ``uint8`` labels: a thresholded Gaussian random field of phases 0 and 1,
    with small non-overlapping particles of phase 2 (``particle_fraction`` of the area) on top.

    Phase 1 fills ``matrix_fraction`` of the pixels that are not particles.
    """
    rng = np.random.default_rng(seed)
    field = _smooth_noise(tuple(shape), correlation_length, rng)
    base = _threshold_at_fraction(field, matrix_fraction)
    particles = particle_dispersion(
        shape, particle_fraction, radius=(2.0, 5.0), gap=2.0, seed=seed + 1
    )
    image = base.copy()
    image[particles == 1] = 2
    return image


def grey_field(
    shape: tuple[int, int] = (SIZE, SIZE),
    correlation_length: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """A grey image, ``uint8``: a Gaussian random field with a two-level texture (a smooth
    field plus a finer one), mapped through a sigmoid to the full 0..255 range."""
    rng = np.random.default_rng(seed)
    coarse = _smooth_noise(tuple(shape), correlation_length, rng)
    fine = _smooth_noise(tuple(shape), correlation_length / 3.0, rng)
    field = coarse + 0.35 * fine
    grey = 1.0 / (1.0 + np.exp(-2.5 * field / field.std()))
    return np.round(255 * (grey - grey.min()) / (grey.max() - grey.min())).astype(np.uint8)


def _metadata(description: str, generator: str, parameters: dict) -> dict[str, Any]:
    return {
        "description": description,
        "generator": f"napari_microstructure._generated_samples.{generator}",
        "parameters": parameters,
        "license": "generated, no restrictions",
    }


def gaussian_field_sample() -> LayerData:
    """Thresholded Gaussian random field, two phases (40 % phase 1), 256x256, as Labels."""
    params = {"shape": [SIZE, SIZE], "correlation_length": 6.0, "volume_fraction": 0.4, "seed": 0}
    data = gaussian_random_field((SIZE, SIZE), 6.0, 0.4, seed=0)
    meta = _metadata(
        "thresholded Gaussian random field: two interpenetrating phases, phase 1 is 40 %",
        "gaussian_random_field",
        params,
    )
    return [(data, {"name": "gaussian_field", "metadata": meta}, "labels")]


def particles_sample() -> LayerData:
    """Two-phase particle dispersion (30 % discs of radius 4-10 px), 256x256, as Labels."""
    params = {
        "shape": [SIZE, SIZE],
        "area_fraction": 0.3,
        "radius": [4.0, 10.0],
        "gap": 1.0,
        "seed": 0,
    }
    data = particle_dispersion((SIZE, SIZE), 0.3, (4.0, 10.0), 1.0, seed=0)
    meta = _metadata(
        "two-phase particle dispersion: non-overlapping discs (1) in a matrix (0)",
        "particle_dispersion",
        params,
    )
    return [(data, {"name": "particles", "metadata": meta}, "labels")]


def three_phase_sample() -> LayerData:
    """Three-phase structure (two-phase random field with particles of a third), 256x256, as Labels."""
    params = {
        "shape": [SIZE, SIZE],
        "correlation_length": 8.0,
        "matrix_fraction": 0.5,
        "particle_fraction": 0.12,
        "seed": 0,
    }
    data = three_phase((SIZE, SIZE), 8.0, 0.5, 0.12, seed=0)
    meta = _metadata(
        "three phases: a random-field structure of phases 0 and 1 with particles of phase 2",
        "three_phase",
        params,
    )
    return [(data, {"name": "three_phase", "metadata": meta}, "labels")]


def grey_field_sample() -> LayerData:
    """Grey Gaussian random field (uint8, 0..255), 256x256, as an Image layer."""
    params = {"shape": [SIZE, SIZE], "correlation_length": 5.0, "seed": 0}
    data = grey_field((SIZE, SIZE), 5.0, seed=0)
    meta = _metadata("grey Gaussian random field (grey levels, not phases)", "grey_field", params)
    return [(data, {"name": "grey_field", "metadata": meta, "colormap": "gray"}, "image")]
