"""Generated microstructures: napari's generated samples and the families of training data.

numpy and scipy only. Every generator is a function of a shape, its parameters and a seed, and
returns ``uint8`` labels (:func:`grey_field`: grey levels); the same arguments give the same
array on every machine and every call. A parameter out of range raises
:class:`~.errors.InputError` naming it and its range, before any work.

Families of labelled datasets (:data:`FAMILIES`; phase 1 is the phase whose transport is
labelled): :func:`gaussian_field`, :func:`anisotropic_field`, :func:`overlapping_discs`,
:func:`oriented_ellipses`, :func:`cell_boundaries`; :func:`fibre_network` and
:func:`interphase` (three phases) are ones to choose (:data:`ALL_FAMILIES`). :func:`random_parameters` draws a family's parameters and
:func:`generate` makes a family's sample by name.

Each family makes a 2D image of shape (H, W) or a 3D volume of shape (D, H, W) with the same
parameters: discs become spheres, ellipses prolate ellipsoids (their long axis in the y-x
plane), the Voronoi boundaries the faces of a 3D cell network, fibres point in any direction;
the anisotropic field takes a third correlation length. In 3D the Boolean models have the
exact volume fraction too (the fibres in 2D as well): the union of equal ellipsoids or fibres
around Poisson centres, their common size set so that they cover exactly
``round(volume_fraction * size)`` voxels.

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
    "ALL_FAMILIES",
    "FAMILIES",
    "anisotropic_field",
    "cell_boundaries",
    "fibre_network",
    "gaussian_field",
    "generate",
    "grey_field",
    "interphase",
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
#: Every family :func:`generate` makes: the defaults, :func:`fibre_network` and
#: :func:`interphase`, to choose by name (neither lowered the error on real micrographs beyond
#: the spread between datasets: docs/measurements/properties_3d.md).
ALL_FAMILIES: tuple[str, ...] = (*FAMILIES, "fibre_network", "interphase")
#: The shapes the families make: 2D images and 3D volumes.
FAMILY_NDIMS = (2, 3)
#: The smallest side of a generated microstructure.
MIN_SIDE = 8


# --------------------------------------------------------------------------------------------
# Checks and shared pieces
# --------------------------------------------------------------------------------------------


def _shape(shape, ndims: tuple[int, ...] = (2,)) -> tuple[int, ...]:
    """``shape`` as whole sides, 2D (or 3D where ``ndims`` allows), each at least MIN_SIDE."""
    try:
        sides = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        sides = ()
    if len(sides) not in ndims or min(sides) < MIN_SIDE:
        what, counts = ("2D or 3D", "two or three") if 3 in ndims else ("2D", "two")
        raise InputError(
            f"These microstructures are {what}, at least {MIN_SIDE}x{MIN_SIDE}; asked for "
            f"{shape!r}: give {counts} sides of {MIN_SIDE} pixels or more."
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


def _fibres(shape, fraction, half_length, radius, rng) -> np.ndarray:
    """Union of equal straight fibres (capsules: segments of length ``2 * half_length`` with
    ``radius``) at uniformly random directions, Poisson centres over the periodic image or
    volume, cut to exactly ``round(fraction * size)`` pixels: those nearest to a fibre's axis
    (the axes sampled every ``radius / 2``; their common radius set by the cut)."""
    from scipy.spatial import cKDTree

    ndim = len(shape)
    ball = math.pi * radius**2 if ndim == 2 else 4.0 / 3.0 * math.pi * radius**3
    one = ball + 2 * half_length * (2 * radius if ndim == 2 else math.pi * radius**2)
    count = max(1, round(-math.log(1.0 - fraction) * math.prod(shape) / one))
    centres = np.column_stack([rng.uniform(0, n, count) for n in shape])
    directions = rng.standard_normal((count, ndim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    steps = np.linspace(-half_length, half_length, math.ceil(4 * half_length / radius) + 1)
    axes = (centres[:, None, :] + steps[None, :, None] * directions[:, None, :]).reshape(-1, ndim)
    tree = cKDTree(axes % shape, boxsize=list(shape))
    distances, _ = tree.query(np.indices(shape).reshape(ndim, -1).T + 0.5)
    return _threshold(-distances.reshape(shape), fraction)


def _overlapping_ellipsoids(shape, fraction, semi_major, semi_minor, angle, rng) -> np.ndarray:
    """3D union of equal prolate ellipsoids (long axis in the y-x plane at ``angle`` from x)
    with Poisson centres, cut to exactly ``round(fraction * size)`` voxels: the voxels nearest
    to a centre in the ellipsoids' metric. Centres fill the volume and a margin of
    ``semi_major`` around it, at the density whose expected coverage is ``fraction``."""
    from scipy.spatial import cKDTree

    sides = np.array(shape, float)
    margin = math.ceil(semi_major)
    density = -math.log(1.0 - fraction) / (4.0 / 3.0 * math.pi * semi_major * semi_minor**2)
    count = max(1, round(density * float(np.prod(sides + 2 * margin))))
    centres = np.column_stack([rng.uniform(-margin, n + margin, count) for n in shape])
    # the linear map after which the ellipsoids' metric is Euclidean
    along = np.array([0.0, math.sin(angle), math.cos(angle)])
    to_metric = np.eye(3) / semi_minor + (1.0 / semi_major - 1.0 / semi_minor) * np.outer(
        along, along
    )
    voxels = np.indices(shape).reshape(3, -1).T + 0.5
    distances, _ = cKDTree(centres @ to_metric).query(voxels @ to_metric)
    return _threshold(-distances.reshape(shape), fraction)


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
    ``round(volume_fraction * size)`` pixels; the result tiles seamlessly. 2D or 3D.
    """
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    length = _number(correlation_length, "correlation_length")
    return _threshold(_smooth_noise(shape, length, rng), fraction)


def anisotropic_field(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.5,
    correlation_length_y: float = 2.0,
    correlation_length_x: float = 8.0,
    correlation_length_z: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """:func:`gaussian_field` with a correlation length per axis: channels elongated along
    one axis. ``correlation_length_z`` is the third axis's in 3D (None: the y length); a 2D
    shape refuses it."""
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    lengths = (
        _number(correlation_length_y, "correlation_length_y"),
        _number(correlation_length_x, "correlation_length_x"),
    )
    if len(shape) == 3:
        z = lengths[0] if correlation_length_z is None else correlation_length_z
        lengths = (_number(z, "correlation_length_z"), *lengths)
    elif correlation_length_z is not None:
        raise InputError(
            "correlation_length_z is the third axis's length: give it for a 3D shape only."
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
    phase 0 and cover ``1 - volume_fraction``). A 3D shape gives spheres, with the exact
    coverage."""
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    radius = _number(radius, "radius")
    inverted = _choice(phase_1, "phase_1", ("discs", "matrix")) == "matrix"
    union = _overlapping_ellipses if len(shape) == 2 else _overlapping_ellipsoids
    discs = union(shape, 1.0 - fraction if inverted else fraction, radius, radius, 0.0, rng)
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
    ``"matrix"``. A 3D shape gives prolate ellipsoids (long axis in the y-x plane), with the
    exact coverage."""
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    semi_major = _number(semi_major, "semi_major")
    semi_minor = semi_major / _number(aspect_ratio, "aspect_ratio")
    angle = math.radians(_number(angle_degrees, "angle_degrees", -math.inf))
    inverted = _choice(phase_1, "phase_1", ("ellipses", "matrix")) == "matrix"
    union = _overlapping_ellipses if len(shape) == 2 else _overlapping_ellipsoids
    ellipses = union(
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
    pixels (a grain-boundary network; in 3D the faces of a cell network), thick enough to
    cover exactly ``volume_fraction``: the pixels nearest to the bisector of their two nearest
    seeds."""
    from scipy.spatial import cKDTree

    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    cell_size = _number(cell_size, "cell_size")
    sides = list(shape)
    count = max(2, round(math.prod(shape) / cell_size ** len(shape)))
    seeds = np.column_stack([rng.uniform(0, n, count) for n in shape])
    tree = cKDTree(seeds, boxsize=sides)
    points = (np.indices(shape).reshape(len(shape), -1).T + 0.5) % sides
    distances, nearest = tree.query(points, k=2)
    apart = seeds[nearest[:, 1]] - seeds[nearest[:, 0]]
    apart -= np.round(apart / sides) * sides  # periodic
    to_bisector = (distances[:, 1] ** 2 - distances[:, 0] ** 2) / (
        2 * np.hypot.reduce(apart, axis=1)
    )
    return _threshold(-to_bisector.reshape(shape), fraction)


def fibre_network(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.2,
    fibre_length: float = 40.0,
    fibre_width: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """Straight fibres of ``fibre_length`` and about ``fibre_width`` pixels at random
    directions with Poisson centres (their number for the expected coverage), cut to exactly
    ``volume_fraction``: a thin network that spans at low fractions. 2D or 3D."""
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    length = _number(fibre_length, "fibre_length")
    width = _number(fibre_width, "fibre_width", 0.0, length)
    return _fibres(shape, fraction, length / 2, width / 2, rng)


def interphase(
    shape: Sequence[int] = (128, 128),
    *,
    volume_fraction: float = 0.2,
    correlation_length: float = 4.0,
    level: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Three phases: a smoothed Gaussian random field (as :func:`gaussian_field`) split at
    ``level`` standard deviations, phase 0 below and phase 2 above, with phase 1 the layer of
    exactly ``volume_fraction`` between them (the pixels whose values lie nearest ``level``): a
    binder or an interphase, a thin sheet or network that spans near its threshold. 2D or 3D."""
    shape, rng = _shape(shape, FAMILY_NDIMS), _rng(seed)
    fraction = _fraction(volume_fraction)
    length = _number(correlation_length, "correlation_length")
    level = _number(level, "level", -3.0, 3.0)
    field = _standardized(_smooth_noise(shape, length, rng))
    layer = _threshold(-np.abs(field - level), fraction)
    return np.where(layer == 1, 1, np.where(field > level, 2, 0)).astype(np.uint8)


_FAMILY_FUNCTIONS = {
    "gaussian_field": gaussian_field,
    "anisotropic_field": anisotropic_field,
    "overlapping_discs": overlapping_discs,
    "oriented_ellipses": oriented_ellipses,
    "cell_boundaries": cell_boundaries,
    "fibre_network": fibre_network,
    "interphase": interphase,
}


def _family(family: str):
    if family not in ALL_FAMILIES:
        raise InputError(f"Unknown family {family!r}: choose one of {', '.join(ALL_FAMILIES)}.")
    return _FAMILY_FUNCTIONS[family]


def random_parameters(
    family: str,
    rng: np.random.Generator,
    volume_fraction: tuple[float, float] = (0.2, 0.8),
    ndim: int = 2,
) -> dict:
    """Random parameters of a family (see :func:`generate`) for a 2D or 3D (``ndim``) shape,
    volume fraction uniform in range. The same ranges in 3D; the anisotropic field draws a
    third length there (its ratio to the mean length drawn like the x length's)."""
    _family(family)
    if ndim not in FAMILY_NDIMS:
        raise InputError(f"The families make 2D images or 3D volumes; ndim {ndim!r} asked.")
    fraction = float(rng.uniform(*volume_fraction))
    if family == "gaussian_field":
        return {"volume_fraction": fraction, "correlation_length": float(rng.uniform(1.5, 8.0))}
    if family == "anisotropic_field":
        length, ratio = (
            float(rng.uniform(2.0, 6.0)),
            float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))),
        )
        lengths = {
            "correlation_length_y": length / math.sqrt(ratio),
            "correlation_length_x": length * math.sqrt(ratio),
        }
        if ndim == 3:
            ratio_z = float(np.exp(rng.uniform(np.log(0.2), np.log(5.0))))
            lengths["correlation_length_z"] = length * math.sqrt(ratio_z)
        return {"volume_fraction": fraction, **lengths}
    if family == "overlapping_discs":
        return {
            "volume_fraction": fraction,
            "radius": float(rng.uniform(3.0, 10.0)),
            "phase_1": str(rng.choice(["discs", "matrix"])),
        }
    if family == "cell_boundaries":
        return {"volume_fraction": fraction, "cell_size": float(rng.uniform(15.0, 40.0))}
    if family == "interphase":
        return {
            "volume_fraction": fraction,
            "correlation_length": float(rng.uniform(2.0, 8.0)),
            "level": float(rng.uniform(-1.0, 1.0)),
        }
    if family == "fibre_network":
        return {
            "volume_fraction": fraction,
            "fibre_length": float(rng.uniform(20.0, 80.0)),
            "fibre_width": float(rng.uniform(1.5, 5.0)),
        }
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
    """One microstructure of ``family`` (one of :data:`FAMILIES`) as ``uint8`` labels, 2D or
    3D as ``shape``; phase 1 is the phase of interest. ``parameters`` are the family function's (:func:`gaussian_field`
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
