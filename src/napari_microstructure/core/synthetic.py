"""Generated 2D microstructures: napari's generated samples and the families of training data.

numpy and scipy only. Every generator is a function of a shape, its parameters and a seed, and
returns ``uint8`` labels (:func:`grey_field`: grey levels); the same arguments give the same
array on every machine and every call. A parameter out of range raises
:class:`~.errors.InputError` naming it and its range, before any work.

Families of labelled datasets (:data:`FAMILIES`; phase 1 is the phase whose transport is
labelled): :func:`gaussian_field`, :func:`anisotropic_field`, :func:`overlapping_discs`,
:func:`oriented_ellipses`, :func:`cell_boundaries`. :func:`random_parameters` draws a
family's parameters and :func:`generate` makes a family's sample by name.

Further structures for napari's File > Open Sample: :func:`particle_dispersion` (discs that do
not overlap), :func:`three_phase` (a random field with particles of a third phase) and
:func:`grey_field` (grey levels, not phases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "FAMILIES",
    "anisotropic_field",
    "cell_boundaries",
    "gaussian_field",
    "generate",
    "grey_field",
    "oriented_ellipses",
    "overlapping_discs",
    "particle_dispersion",
    "random_parameters",
    "three_phase",
]

#: Generated morphologies of labelled datasets; phase 1 is the phase whose transport is labelled.
FAMILIES: tuple[str, ...] = (
    "gaussian_field",
    "anisotropic_field",
    "overlapping_discs",
    "oriented_ellipses",
    "cell_boundaries",
)
#: The smallest side of a generated microstructure.
MIN_SIDE = 8


# --------------------------------------------------------------------------------------------
# Checks and shared pieces
# --------------------------------------------------------------------------------------------


def _shape(shape) -> tuple[int, int]:
    try:
        sides = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        sides = ()
    if len(sides) != 2 or min(sides) < MIN_SIDE:
        raise InputError(
            f"Generated microstructures are 2D, at least {MIN_SIDE}x{MIN_SIDE}; asked for "
            f"{shape!r}: give two sides of {MIN_SIDE} pixels or more."
        )
    return sides


def _number(value, name: str, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a float strictly between ``low`` and ``high``, else InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low < number < high:
        bounds = f"between {low:g} and {high:g}" if high < math.inf else f"above {low:g}"
        raise InputError(f"{name} must be a number strictly {bounds}; got {value!r}.")
    return number


def _fraction(value, name: str = "volume_fraction") -> float:
    return _number(value, name, 0.0, 1.0)


def _choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"The seed must be a whole number, 0 or more; got {seed!r}.")
    return np.random.default_rng(seed)


def _smooth_noise(shape, lengths, rng: np.random.Generator) -> np.ndarray:
    """White noise smoothed with a periodic Gaussian of standard deviation ``lengths`` pixels
    (one, or one per axis): a stationary Gaussian random field that tiles."""
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.standard_normal(shape), lengths, mode="wrap")


def _standardized(field: np.ndarray) -> np.ndarray:
    """``field`` scaled to zero mean and unit variance."""
    return (field - field.mean()) / field.std()


def _threshold(field: np.ndarray, fraction: float) -> np.ndarray:
    """1 on the highest ``fraction`` of the field's values (exact count), else 0."""
    n_one = round(fraction * field.size)
    labels = np.zeros(field.size, np.uint8)
    labels[np.argsort(field.ravel(), kind="stable")[field.size - n_one :]] = 1
    return labels.reshape(field.shape)


def _overlapping_ellipses(shape, fraction, semi_major, semi_minor, angle, rng) -> np.ndarray:
    """Union of ellipses (a Boolean model) with Poisson centres over the periodic image, their
    number chosen so that the expected covered fraction is ``fraction``."""
    height, width = shape
    count = max(
        1, round(-math.log(1.0 - fraction) * height * width / (math.pi * semi_major * semi_minor))
    )
    covered = np.zeros(shape, bool)
    cos, sin = math.cos(angle), math.sin(angle)
    reach = math.ceil(semi_major) + 1
    for cy, cx in zip(rng.uniform(0, height, count), rng.uniform(0, width, count)):
        y0, x0 = int(cy) - reach, int(cx) - reach
        ys = np.arange(y0, y0 + 2 * reach + 1) % height
        xs = np.arange(x0, x0 + 2 * reach + 1) % width
        dy = np.arange(y0, y0 + 2 * reach + 1)[:, None] - cy
        dx = np.arange(x0, x0 + 2 * reach + 1)[None, :] - cx
        along = (dx * cos + dy * sin) / semi_major
        across = (-dx * sin + dy * cos) / semi_minor
        covered[np.ix_(ys, xs)] |= along * along + across * across <= 1.0
    return covered.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Families of labelled datasets
# --------------------------------------------------------------------------------------------


def gaussian_field(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    correlation_length: float = 4.0,
    seed: int = 0,
) -> np.ndarray:
    """Thresholded Gaussian random field: two interpenetrating phases (a spinodal, a porous
    medium).

    Periodic white noise is smoothed with a Gaussian of standard deviation
    ``correlation_length`` pixels and cut so that phase 1 has exactly
    ``round(volume_fraction * size)`` pixels; the result tiles seamlessly.
    """
    shape, rng = _shape(shape), _rng(seed)
    fraction = _fraction(volume_fraction)
    length = _number(correlation_length, "correlation_length")
    return _threshold(_smooth_noise(shape, length, rng), fraction)


def anisotropic_field(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    correlation_length_y: float = 2.0,
    correlation_length_x: float = 8.0,
    seed: int = 0,
) -> np.ndarray:
    """:func:`gaussian_field` with a correlation length per axis: channels elongated along
    one axis."""
    shape, rng = _shape(shape), _rng(seed)
    fraction = _fraction(volume_fraction)
    lengths = (
        _number(correlation_length_y, "correlation_length_y"),
        _number(correlation_length_x, "correlation_length_x"),
    )
    return _threshold(_smooth_noise(shape, lengths, rng), fraction)


def overlapping_discs(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    radius: float = 6.0,
    phase_1: str = "discs",
    seed: int = 0,
) -> np.ndarray:
    """A Boolean model of discs of ``radius`` pixels with Poisson centres; phase 1 is
    ``"discs"`` (expected coverage ``volume_fraction``) or the ``"matrix"`` (then the discs are
    phase 0 and cover ``1 - volume_fraction``)."""
    shape, rng = _shape(shape), _rng(seed)
    fraction = _fraction(volume_fraction)
    radius = _number(radius, "radius")
    inverted = _choice(phase_1, "phase_1", ("discs", "matrix")) == "matrix"
    discs = _overlapping_ellipses(
        shape, 1.0 - fraction if inverted else fraction, radius, radius, 0.0, rng
    )
    return 1 - discs if inverted else discs


def oriented_ellipses(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    semi_major: float = 10.0,
    aspect_ratio: float = 3.0,
    angle_degrees: float = 0.0,
    phase_1: str = "ellipses",
    seed: int = 0,
) -> np.ndarray:
    """:func:`overlapping_discs` with ellipses of ``semi_major`` pixels and ``aspect_ratio``,
    turned by ``angle_degrees`` from the x axis towards y; phase 1 is ``"ellipses"`` or the
    ``"matrix"``."""
    shape, rng = _shape(shape), _rng(seed)
    fraction = _fraction(volume_fraction)
    semi_major = _number(semi_major, "semi_major")
    semi_minor = semi_major / _number(aspect_ratio, "aspect_ratio")
    angle = math.radians(_number(angle_degrees, "angle_degrees", -math.inf))
    inverted = _choice(phase_1, "phase_1", ("ellipses", "matrix")) == "matrix"
    ellipses = _overlapping_ellipses(
        shape, 1.0 - fraction if inverted else fraction, semi_major, semi_minor, angle, rng
    )
    return 1 - ellipses if inverted else ellipses


def cell_boundaries(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    cell_size: float = 20.0,
    seed: int = 0,
) -> np.ndarray:
    """The boundaries of a periodic Voronoi tessellation with cells of about ``cell_size``
    pixels (a grain-boundary network), thick enough to cover exactly ``volume_fraction``: the
    pixels nearest to the bisector of their two nearest seeds."""
    from scipy.spatial import cKDTree

    (height, width), rng = _shape(shape), _rng(seed)
    fraction = _fraction(volume_fraction)
    cell_size = _number(cell_size, "cell_size")
    count = max(2, round(height * width / cell_size**2))
    seeds = np.column_stack([rng.uniform(0, height, count), rng.uniform(0, width, count)])
    tree = cKDTree(seeds, boxsize=[height, width])
    rows, cols = np.mgrid[0:height, 0:width]
    points = np.column_stack([rows.ravel() + 0.5, cols.ravel() + 0.5]) % [height, width]
    distances, nearest = tree.query(points, k=2)
    apart = seeds[nearest[:, 1]] - seeds[nearest[:, 0]]
    apart -= np.round(apart / [height, width]) * [height, width]  # periodic
    to_bisector = (distances[:, 1] ** 2 - distances[:, 0] ** 2) / (2 * np.hypot(*apart.T))
    return _threshold(-to_bisector.reshape(height, width), fraction)


_FAMILY_FUNCTIONS = {
    "gaussian_field": gaussian_field,
    "anisotropic_field": anisotropic_field,
    "overlapping_discs": overlapping_discs,
    "oriented_ellipses": oriented_ellipses,
    "cell_boundaries": cell_boundaries,
}


def _family(family: str):
    if family not in FAMILIES:
        raise InputError(f"Unknown family {family!r}: choose one of {', '.join(FAMILIES)}.")
    return _FAMILY_FUNCTIONS[family]


def random_parameters(
    family: str, rng: np.random.Generator, volume_fraction: tuple[float, float] = (0.2, 0.8)
) -> dict:
    """Random parameters of a family (see :func:`generate`), volume fraction uniform in range."""
    _family(family)
    fraction = float(rng.uniform(*volume_fraction))
    if family == "gaussian_field":
        return {"volume_fraction": fraction, "correlation_length": float(rng.uniform(1.5, 8.0))}
    if family == "anisotropic_field":
        length, ratio = (
            float(rng.uniform(2.0, 6.0)),
            float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))),
        )
        return {
            "volume_fraction": fraction,
            "correlation_length_y": length / math.sqrt(ratio),
            "correlation_length_x": length * math.sqrt(ratio),
        }
    if family == "overlapping_discs":
        return {
            "volume_fraction": fraction,
            "radius": float(rng.uniform(3.0, 10.0)),
            "phase_1": str(rng.choice(["discs", "matrix"])),
        }
    if family == "cell_boundaries":
        return {"volume_fraction": fraction, "cell_size": float(rng.uniform(15.0, 40.0))}
    return {
        "volume_fraction": fraction,
        "semi_major": float(rng.uniform(6.0, 16.0)),
        "aspect_ratio": float(rng.uniform(2.0, 6.0)),
        "angle_degrees": float(rng.uniform(0.0, 180.0)),
        "phase_1": str(rng.choice(["ellipses", "matrix"])),
    }


def generate(
    family: str, shape: Sequence[int] = (128, 128), seed: int = 0, **parameters
) -> np.ndarray:
    """One microstructure of ``family`` (one of :data:`FAMILIES`) as ``uint8`` labels; phase 1
    is the phase of interest. ``parameters`` are the family function's (:func:`gaussian_field`
    ...); :func:`random_parameters` draws them. An unknown parameter is refused."""
    function = _family(family)
    known = [name for name in function.__kwdefaults__ if name != "seed"]
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise InputError(
            f"The family {family} has no parameter {', '.join(unknown)}: its parameters are "
            f"{', '.join(known)}."
        )
    return function(shape, seed=seed, **parameters)


# --------------------------------------------------------------------------------------------
# Further structures (napari's generated samples)
# --------------------------------------------------------------------------------------------


def particle_dispersion(
    shape: Sequence[int] = (256, 256),
    *,
    area_fraction: float = 0.3,
    radius: tuple[float, float] = (4.0, 10.0),
    gap: float = 1.0,
    max_attempts: int = 20000,
    seed: int = 0,
) -> np.ndarray:
    """Non-overlapping discs (phase 1) in a matrix (phase 0).

    Random sequential addition: radii uniform in ``radius`` (pixels), centres uniform over the
    periodic image, a disc accepted when it keeps ``gap`` pixels from every disc placed
    before; discs are added until ``area_fraction`` is reached or ``max_attempts`` placements
    have failed.
    """
    (height, width), rng = _shape(shape), _rng(seed)
    target = _fraction(area_fraction, "area_fraction") * height * width
    try:
        low, high = (float(r) for r in radius)
    except (TypeError, ValueError):
        low = high = math.nan
    if not 0.0 < low <= high < math.inf:
        raise InputError(
            f"radius is the range of the discs' radii, LOW HIGH with 0 < LOW <= HIGH; got "
            f"{radius!r}."
        )
    gap = _number(gap, "gap", -math.inf)
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
    image = np.zeros((height, width), dtype=np.uint8)
    for cy, cx, r in centres:
        dy = np.abs(rows - cy)
        dx = np.abs(cols - cx)
        dy, dx = np.minimum(dy, height - dy), np.minimum(dx, width - dx)
        image[dy * dy + dx * dx <= r * r] = 1
    return image


def three_phase(
    shape: Sequence[int] = (256, 256),
    *,
    correlation_length: float = 8.0,
    matrix_fraction: float = 0.5,
    particle_fraction: float = 0.12,
    seed: int = 0,
) -> np.ndarray:
    """Three phases: a :func:`gaussian_field` of phases 0 and 1 (phase 1 ``matrix_fraction``
    of the pixels), with small :func:`particle_dispersion` particles of phase 2 on top
    (``particle_fraction`` of the area, seed ``seed + 1``)."""
    image = gaussian_field(
        shape,
        volume_fraction=_fraction(matrix_fraction, "matrix_fraction"),
        correlation_length=correlation_length,
        seed=seed,
    )
    particles = particle_dispersion(
        shape, area_fraction=particle_fraction, radius=(2.0, 5.0), gap=2.0, seed=seed + 1
    )
    image[particles == 1] = 2
    return image


def grey_field(
    shape: Sequence[int] = (256, 256), *, correlation_length: float = 5.0, seed: int = 0
) -> np.ndarray:
    """A grey image, ``uint8``: a Gaussian random field with a two-level texture (a smooth
    field plus a finer one), mapped through a sigmoid to the full 0..255 range."""
    shape, rng = _shape(shape), _rng(seed)
    length = _number(correlation_length, "correlation_length")
    coarse = _standardized(_smooth_noise(shape, length, rng))
    fine = _standardized(_smooth_noise(shape, length / 3.0, rng))
    field = coarse + 0.35 * fine
    grey = 1.0 / (1.0 + np.exp(-2.5 * field / field.std()))
    return np.round(255 * (grey - grey.min()) / (grey.max() - grey.min())).astype(np.uint8)
