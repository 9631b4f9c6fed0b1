"""Statistical descriptors of microstructures and the fidelity errors of docs/method.md section 7.

Every function takes ``image``, an array of integer phase labels, 2D ``(H, W)`` or 3D
``(D, H, W)``, with any number of phases, and, where it describes one phase, ``phase``: the label
value of that phase. Its indicator is ``I = (image == phase)`` and its volume fraction is
``phi = mean(I)``. Lengths are in pixels (voxels in 3D); axes are numpy axes.

Descriptors (one function each, small frozen dataclass results):

- :func:`volume_fractions`, :func:`phases_of`
- :func:`two_point` (radially averaged, periodic), :func:`two_point_along` (along one axis)
- :func:`lineal_path`, :func:`chord_lengths`
- :func:`specific_surface`, :func:`connectivity`

Fidelity errors between an original and a reconstruction (worst phase; ``*_by_phase`` variants
give every phase): :func:`e_vf`, :func:`e_s2`, :func:`e_lp`; the table :func:`compare` and the
:func:`floor` (the same errors between two disjoint pieces of the original).

Grey images (grey levels, not segmented; any numbers) have their own descriptor and errors:
:func:`grey_autocovariance`, :func:`e_hist` (grey-level distributions), :func:`e_ac`
(autocovariance of the intensity), the table :func:`compare_grey` and :func:`grey_floor`.

Conventions:

- The radius range of the radial two-point statistics and of the lineal path is
  ``L = min(shape) // 4``; the errors use the original's ``L`` for both images, or the radii a
  smaller reconstruction allows (:func:`comparison_max_length`).
- A phase absent from (or filling) an image has no fluctuations, so its normalized
  autocovariance is undefined. Only the error functions meet this case (a reconstruction that
  lost a phase) and use ``C(0) = 1, C(r > 0) = 0`` there (as for an uncorrelated field); the
  volume-fraction error flags such a reconstruction anyway. The descriptor functions raise
  :class:`~napari_microstructure.core.errors.InputError` (a ``ValueError``) for a phase absent
  from the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage as ndi

from ._validate import axis_index, grey_image, indicator, label_image
from .errors import InputError

__all__ = [
    "ChordLengths",
    "Connectivity",
    "GreyAutocovariance",
    "LinealPath",
    "TwoPoint",
    "chord_lengths",
    "compare",
    "compare_grey",
    "comparison_max_length",
    "connectivity",
    "default_max_length",
    "e_ac",
    "e_hist",
    "e_lp",
    "e_lp_by_phase",
    "e_s2",
    "e_s2_by_phase",
    "e_vf",
    "e_vf_by_phase",
    "floor",
    "grey_autocovariance",
    "grey_floor",
    "lineal_path",
    "phases_of",
    "specific_surface",
    "two_point",
    "two_point_along",
    "volume_fractions",
]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TwoPoint:
    """Two-point statistics of one phase.

    Attributes
    ----------
    radius : ndarray of int
        Radii (or lags along an axis) ``r = 0 .. L`` in pixels.
    s2 : ndarray of float
        ``S2(r)``: probability that two points ``r`` apart both lie in the phase (periodic).
    autocovariance : ndarray of float
        ``C(r) = (S2(r) - phi**2) / (phi - phi**2)``; 1 at ``r = 0``, 0 when uncorrelated.
    volume_fraction : float
        ``phi``, the phase's volume fraction (``S2(0)``).
    s2_map : ndarray or None
        The full periodic ``S2`` map, same shape as the image, lag ``d`` stored at index
        ``d mod shape`` (zero lag at ``[0, 0]``; ``np.fft.fftshift`` centres it). ``None`` for
        :func:`two_point_along`.
    """

    radius: np.ndarray
    s2: np.ndarray
    autocovariance: np.ndarray
    volume_fraction: float
    s2_map: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class LinealPath:
    """Lineal-path function of one phase along one axis.

    Attributes
    ----------
    length : ndarray of int
        Segment lengths ``l = 1 .. L`` in pixels.
    probability : ndarray of float
        ``L(l)``: fraction of the segments of ``l`` pixels along the axis that lie fully inside
        the phase (segments inside the image only, no wrap). ``L(1) = phi``.
    axis : int
        The axis along which the segments lie.
    """

    length: np.ndarray
    probability: np.ndarray
    axis: int


@dataclass(frozen=True, eq=False)
class ChordLengths:
    """Chord-length distribution of one phase along one axis.

    Attributes
    ----------
    length : ndarray of int
        Chord lengths ``1 .. n`` in pixels (``n``: the image size along the axis).
    count : ndarray of int
        Number of chords of each length.
    probability : ndarray of float
        ``count / count.sum()`` (number-weighted distribution); all zeros when there is no chord.
    axis : int
        The axis along which the chords lie.
    include_border : bool
        Whether chords touching the image border along the axis were counted.
    """

    length: np.ndarray
    count: np.ndarray
    probability: np.ndarray
    axis: int
    include_border: bool

    @property
    def mean(self) -> float:
        """Number-weighted mean chord length (NaN when there is no chord)."""
        total = self.count.sum()
        return float((self.length * self.count).sum() / total) if total else float("nan")


@dataclass(frozen=True)
class Connectivity:
    """Face-connected clusters of one phase.

    Attributes
    ----------
    n_clusters : int
        Number of face-connected clusters (4-connectivity in 2D, 6 in 3D).
    clusters_per_area : float
        ``n_clusters / image.size``: clusters per pixel (per voxel in 3D).
    largest_cluster_fraction : float
        Fraction of the phase's pixels that belong to its largest cluster.
    spans : tuple of bool
        For each axis, whether one cluster touches both opposite faces normal to that axis.
    """

    n_clusters: int
    clusters_per_area: float
    largest_cluster_fraction: float
    spans: tuple[bool, ...]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_max_length(max_length, limit: int, what: str) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise InputError(f"{what} must be an integer; got {max_length!r}.")
    if not 0 <= max_length <= limit:
        raise InputError(
            f"{what} must lie between 0 and {limit} for this image; got {max_length}."
        )
    return int(max_length)


def default_max_length(shape) -> int:
    """``L = min(shape) // 4``, the radius / segment-length range used by the errors."""
    return int(min(shape)) // 4


def comparison_max_length(original_shape, reconstruction_shape) -> int:
    """The radii (and segment lengths) ``0 .. L`` on which a reconstruction is compared.

    ``L = min(original_shape) // 4`` (:func:`default_max_length` of the original), or
    ``min(reconstruction_shape) // 2`` where the reconstruction is too small for that: the
    largest radius whose periodic statistics it holds. A reconstruction of at least ``2 L``
    pixels along every axis is compared on the original's radii.
    """
    return min(default_max_length(original_shape), int(min(reconstruction_shape)) // 2)


def _scalar(value):
    """A numpy scalar label as a plain Python number (for dictionary keys and column names)."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# Volume fractions
# --------------------------------------------------------------------------------------------


def phases_of(image) -> np.ndarray:
    """Sorted unique phase labels of ``image``."""
    return np.unique(label_image(image))


def volume_fractions(image) -> dict:
    """Volume fraction ``phi = mean(image == p)`` of every phase ``p``, keyed by label (sorted)."""
    arr = label_image(image)
    labels, counts = np.unique(arr, return_counts=True)
    return {_scalar(p): float(c) / arr.size for p, c in zip(labels, counts)}


# --------------------------------------------------------------------------------------------
# Two-point statistics
# --------------------------------------------------------------------------------------------


def _s2_map(indicator: np.ndarray) -> np.ndarray:
    """Periodic two-point probability map: ``S2(d) = mean_x I(x) I(x + d)`` (wrap), by FFT."""
    x = indicator.astype(np.float64)
    spectrum = sp_fft.rfftn(x)
    power = spectrum.real**2 + spectrum.imag**2
    s2 = sp_fft.irfftn(power, s=x.shape, axes=tuple(range(x.ndim)))
    s2 /= x.size
    return s2


@lru_cache(maxsize=16)
def _radial_bins(shape: tuple[int, ...], max_radius: int):
    """Index arrays and bin numbers of the lags whose rounded minimal-image length is <= L.

    Lags ``-L .. L`` along each axis (``-n/2`` dropped when ``n = 2L``, it is the lag ``+n/2``),
    stored at index ``lag mod n``; bin ``k = rint(|d|)``. Returns the open-mesh index tuple, the
    flat bin numbers of the block, a mask of the block elements kept, and the count per bin.
    """
    lags = []
    for n in shape:
        lag = np.arange(-max_radius, max_radius + 1)
        if 2 * max_radius >= n:  # only when n == 2L: -L and +L are the same lag
            lag = lag[lag > -n / 2]
        lags.append(lag)
    mesh = np.meshgrid(*lags, indexing="ij", sparse=True)
    r2 = sum(m.astype(np.float64) ** 2 for m in mesh)
    bins = np.rint(np.sqrt(r2)).astype(np.int64).ravel()
    keep = bins <= max_radius
    bins = bins[keep]
    index = np.ix_(*[lag % n for lag, n in zip(lags, shape)])
    counts = np.bincount(bins, minlength=max_radius + 1).astype(np.float64)
    return index, bins, keep, counts


def _radial_average(field: np.ndarray, max_radius: int) -> np.ndarray:
    """Average of a periodic lag map over integer radii ``r = 0 .. L`` (bin: rint of |d|)."""
    index, bins, keep, counts = _radial_bins(tuple(field.shape), int(max_radius))
    values = field[index].ravel()[keep]
    return np.bincount(bins, weights=values, minlength=max_radius + 1) / counts


def _autocovariance(s2: np.ndarray, phi: float) -> np.ndarray:
    """``C = (S2 - phi^2) / (phi - phi^2)``; for a constant indicator ``C(0)=1, C(r>0)=0``."""
    variance = phi - phi * phi
    if variance <= 0.0:
        c = np.zeros_like(s2, dtype=np.float64)
        c[..., 0] = 1.0
        return c
    return (s2 - phi * phi) / variance


def _radial_profile_of(indicator: np.ndarray, max_radius: int):
    """Radial S2 and C of an indicator (no validation; a constant indicator is allowed)."""
    phi = float(indicator.mean())
    if 0.0 < phi < 1.0:
        s2 = _radial_average(_s2_map(indicator), max_radius)
    else:
        s2 = np.full(max_radius + 1, phi)
    return s2, _autocovariance(s2, phi), phi


def two_point(image, phase, max_radius: int | None = None) -> TwoPoint:
    """Radially averaged two-point probability and normalized autocovariance of ``phase``.

    ``S2(d) = mean_x I(x) I(x + d)`` with periodic wrap, for every lag ``d`` (computed by FFT,
    exposed as ``s2_map``). The radial average over ``r = 0 .. L`` bins each lag by
    ``rint(|d|)``, ``d`` being the minimal-image (shortest periodic) lag, every lag weighing
    equally. ``C(r) = (S2(r) - phi**2) / (phi - phi**2)``.

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.
    max_radius : int, optional
        ``L``; default ``min(shape) // 4``, at most ``min(shape) // 2``.

    Returns
    -------
    TwoPoint
        ``radius``, ``s2``, ``autocovariance``, ``volume_fraction``, ``s2_map``.
    """
    arr = label_image(image)
    ind = indicator(arr, phase)
    limit = min(arr.shape) // 2
    L = default_max_length(arr.shape) if max_radius is None else max_radius
    L = _check_max_length(L, limit, "max_radius")
    phi = float(ind.mean())
    s2_map = _s2_map(ind)
    s2 = _radial_average(s2_map, L) if phi < 1.0 else np.ones(L + 1)
    return TwoPoint(np.arange(L + 1), s2, _autocovariance(s2, phi), phi, s2_map)


def two_point_along(image, phase, axis: int, max_length: int | None = None) -> TwoPoint:
    """Two-point probability of ``phase`` for lags along one axis only (periodic).

    ``S2(k) = mean_x I(x) I(x + k e_axis)`` with wrap along ``axis``, ``k = 0 .. L``;
    ``C(k) = (S2(k) - phi**2) / (phi - phi**2)``. Equal to the axis line of the full periodic
    ``S2`` map; this is the per-axis report of an anisotropic (or 3D) structure.

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.
    axis : int
        Axis of the lags.
    max_length : int, optional
        ``L``; default ``min(shape) // 4``, at most ``shape[axis] // 2``.

    Returns
    -------
    TwoPoint
        ``radius`` (the lags ``k``), ``s2``, ``autocovariance``, ``volume_fraction``;
        ``s2_map`` is None.
    """
    arr = label_image(image)
    ax = axis_index(axis, arr.ndim)
    ind = indicator(arr, phase)
    n = arr.shape[ax]
    L = default_max_length(arr.shape) if max_length is None else max_length
    L = _check_max_length(L, n // 2, "max_length")
    s2, phi = _s2_along(ind, ax, L)
    return TwoPoint(np.arange(L + 1), s2, _autocovariance(s2, phi), phi, None)


def _s2_along(indicator: np.ndarray, axis: int, max_length: int):
    x = indicator.astype(np.float64)
    spectrum = sp_fft.rfft(x, axis=axis)
    power = spectrum.real**2 + spectrum.imag**2
    corr = sp_fft.irfft(power, n=x.shape[axis], axis=axis)
    other = tuple(a for a in range(x.ndim) if a != axis)
    line = corr.sum(axis=other) / x.size
    return line[: max_length + 1].copy(), float(x.mean())


# --------------------------------------------------------------------------------------------
# Runs along an axis: lineal path and chord lengths
# --------------------------------------------------------------------------------------------


def _runs(indicator: np.ndarray, axis: int):
    """Run lengths of True along ``axis`` and whether each run touches an end of its line."""
    lines = np.moveaxis(indicator, axis, -1).reshape(-1, indicator.shape[axis])
    n = lines.shape[1]
    padded = np.zeros((lines.shape[0], n + 2), dtype=np.int8)
    padded[:, 1:-1] = lines
    step = np.diff(padded, axis=1).ravel()  # (m, n + 1) flattened; +1 at starts, -1 after ends
    starts = np.flatnonzero(step == 1)
    ends = np.flatnonzero(step == -1)
    lengths = ends - starts
    start_col = starts % (n + 1)
    touches = (start_col == 0) | (start_col + lengths == n)
    return lengths, touches, n


def _lineal_path_of(indicator: np.ndarray, axis: int, max_length: int) -> np.ndarray:
    """``L(l)``, ``l = 1 .. max_length``, from the run lengths (no validation)."""
    lengths, _touches, n = _runs(indicator, axis)
    hist = np.bincount(lengths, minlength=n + 1).astype(np.float64)
    c = np.arange(n + 1, dtype=np.float64)
    # windows of l pixels inside a run of c pixels: max(0, c - l + 1);
    # sum over runs = sum_{c >= l} (c + 1) h[c] - l sum_{c >= l} h[c]
    tail_weighted = np.cumsum(((c + 1) * hist)[::-1])[::-1]
    tail_count = np.cumsum(hist[::-1])[::-1]
    ell = np.arange(1, max_length + 1)
    inside = tail_weighted[ell] - ell * tail_count[ell]
    n_lines = indicator.size // n
    return inside / (n_lines * (n - ell + 1.0))


def lineal_path(image, phase, axis: int, max_length: int | None = None) -> LinealPath:
    """Lineal-path function of ``phase`` along ``axis``.

    ``L(l)`` is the fraction of all segments of ``l`` consecutive pixels along ``axis`` that lie
    fully inside the phase, counting only segments inside the image (no wrap):
    ``L(l) = sum_runs max(0, c - l + 1) / (n_lines * (n - l + 1))`` with ``c`` the run
    (chord) lengths, border runs included. ``L(1) = phi``; ``L`` never increases with ``l``.

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.
    axis : int
        Axis of the segments.
    max_length : int, optional
        Longest segment ``L``; default ``min(shape) // 4``, at most ``shape[axis]``.

    Returns
    -------
    LinealPath
        ``length`` (``1 .. L``), ``probability``, ``axis``.
    """
    arr = label_image(image)
    ax = axis_index(axis, arr.ndim)
    ind = indicator(arr, phase)
    L = default_max_length(arr.shape) if max_length is None else max_length
    L = _check_max_length(L, arr.shape[ax], "max_length")
    return LinealPath(np.arange(1, L + 1), _lineal_path_of(ind, ax, L), ax)


def chord_lengths(image, phase, axis: int, include_border: bool = False) -> ChordLengths:
    """Distribution of chord lengths of ``phase`` along ``axis``.

    A chord is a maximal run of consecutive phase pixels along a line parallel to ``axis``.
    By default chords that touch either end of their line (the image border along ``axis``)
    are excluded, since the border cuts them short; ``include_border=True`` counts them too.

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.
    axis : int
        Axis of the chords.
    include_border : bool
        Count the chords that touch the image border along ``axis`` (default False).

    Returns
    -------
    ChordLengths
        ``length`` (``1 .. shape[axis]``), ``count``, ``probability`` (number fraction),
        ``axis``, ``include_border``; property ``mean``.
    """
    arr = label_image(image)
    ax = axis_index(axis, arr.ndim)
    ind = indicator(arr, phase)
    lengths, touches, n = _runs(ind, ax)
    if not include_border:
        lengths = lengths[~touches]
    count = np.bincount(lengths, minlength=n + 1)[1:]
    total = count.sum()
    probability = count / total if total else np.zeros(n)
    return ChordLengths(np.arange(1, n + 1), count, probability, ax, bool(include_border))


# --------------------------------------------------------------------------------------------
# Specific surface and connectivity
# --------------------------------------------------------------------------------------------


def _specific_surface_of(indicator: np.ndarray) -> float:
    faces = 0
    for ax in range(indicator.ndim):
        first = [slice(None)] * indicator.ndim
        second = [slice(None)] * indicator.ndim
        first[ax], second[ax] = slice(1, None), slice(None, -1)
        faces += int(np.count_nonzero(indicator[tuple(first)] != indicator[tuple(second)]))
    return faces / indicator.size


def specific_surface(image, phase) -> float:
    """Interface of ``phase`` per unit area (2D: length per area) or volume (3D: area per volume).

    Count estimate: the number of face-adjacent pixel pairs inside the image (no wrap) of which
    exactly one lies in the phase, divided by the number of pixels; unit pixel^-1. Each pair is
    one pixel edge (2D) or face (3D) of interface. It is exact for interfaces along the axes and
    overestimates inclined ones (on average by 4/pi in 2D, 3/2 in 3D, for isotropic structures).

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.

    Returns
    -------
    float
        Interface count per pixel (pixel^-1).
    """
    arr = label_image(image)
    return _specific_surface_of(indicator(arr, phase))


def _connectivity_of(indicator: np.ndarray) -> Connectivity:
    labels, n = ndi.label(indicator)
    total = int(np.count_nonzero(indicator))
    if n == 0:
        return Connectivity(0, 0.0, 0.0, tuple(False for _ in range(indicator.ndim)))
    sizes = np.bincount(labels.ravel())
    spans = []
    for ax in range(indicator.ndim):
        low = np.take(labels, 0, axis=ax)
        high = np.take(labels, -1, axis=ax)
        on_low = np.zeros(n + 1, dtype=bool)
        on_low[low.ravel()] = True
        on_high = np.zeros(n + 1, dtype=bool)
        on_high[high.ravel()] = True
        spans.append(bool(np.any(on_low[1:] & on_high[1:])))
    return Connectivity(
        n_clusters=int(n),
        clusters_per_area=n / indicator.size,
        largest_cluster_fraction=float(sizes[1:].max()) / total,
        spans=tuple(spans),
    )


def connectivity(image, phase) -> Connectivity:
    """Face-connected clusters of ``phase``.

    Clusters are labelled with ``scipy.ndimage.label`` and its default cross structure (pixels
    sharing an edge in 2D, a face in 3D; no wrap). A cluster spans an axis when it holds pixels
    on both faces of the image normal to that axis.

    Parameters
    ----------
    image : ndarray
        Integer phase labels, 2D or 3D.
    phase : int
        Label of the phase of interest; it must occur in ``image``.

    Returns
    -------
    Connectivity
        ``n_clusters``, ``clusters_per_area`` (per pixel), ``largest_cluster_fraction``,
        ``spans`` (one bool per axis).
    """
    arr = label_image(image)
    return _connectivity_of(indicator(arr, phase))


# --------------------------------------------------------------------------------------------
# Fidelity errors
# --------------------------------------------------------------------------------------------


class _Profile:
    """Descriptors of one image needed by the errors, for radii/lengths up to L (cached)."""

    def __init__(self, image: np.ndarray, max_length: int):
        self.image = image
        self.L = max_length
        self._fractions = volume_fractions(image)
        self._c: dict = {}
        self._lp: dict = {}

    def vf(self, phase) -> float:
        return self._fractions.get(_scalar(phase), 0.0)

    def phases(self):
        return list(self._fractions)

    def autocovariance(self, phase) -> np.ndarray:
        key = _scalar(phase)
        if key not in self._c:
            self._c[key] = _radial_profile_of(self.image == phase, self.L)[1]
        return self._c[key]

    def lineal(self, phase, axis: int) -> np.ndarray:
        key = (_scalar(phase), axis)
        if key not in self._lp:
            self._lp[key] = _lineal_path_of(self.image == phase, axis, self.L)
        return self._lp[key]


def _same_dimension(orig: np.ndarray, rec: np.ndarray) -> None:
    if orig.ndim != rec.ndim:
        raise InputError(
            f"The original is {orig.ndim}D and the reconstruction {rec.ndim}D; compare images "
            "of the same dimension (for a 3D reconstruction of a 2D micrograph, compare its "
            "slices)."
        )


def _pair(original, reconstruction):
    orig = label_image(original, "original")
    rec = label_image(reconstruction, "reconstruction")
    _same_dimension(orig, rec)
    L = comparison_max_length(orig.shape, rec.shape)
    return _Profile(orig, L), _Profile(rec, L)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _e_vf(po: _Profile, pr: _Profile) -> dict:
    phases = sorted(set(po.phases()) | set(pr.phases()))
    return {p: abs(pr.vf(p) - po.vf(p)) for p in phases}


def _e_s2(po: _Profile, pr: _Profile) -> dict:
    return {p: _rms(pr.autocovariance(p) - po.autocovariance(p)) for p in po.phases()}


def _e_lp_axes(po: _Profile, pr: _Profile, phase) -> list[float]:
    phi = po.vf(phase)
    return [_rms(pr.lineal(phase, ax) - po.lineal(phase, ax)) / phi for ax in range(po.image.ndim)]


def _e_lp(po: _Profile, pr: _Profile) -> dict:
    return {p: max(_e_lp_axes(po, pr, p)) for p in po.phases()}


def e_vf_by_phase(original, reconstruction) -> dict:
    """``|phi_rec - phi_orig|`` for every phase of either image, keyed by label."""
    return _e_vf(*_pair(original, reconstruction))


def e_vf(original, reconstruction) -> float:
    """Volume-fraction error: ``max_p |phi_rec(p) - phi_orig(p)|``, phases of both images."""
    return max(e_vf_by_phase(original, reconstruction).values())


def e_s2_by_phase(original, reconstruction) -> dict:
    """Two-point error of every phase of the original, keyed by label (see :func:`e_s2`)."""
    return _e_s2(*_pair(original, reconstruction))


def e_s2(original, reconstruction) -> float:
    """Two-point error, worst phase.

    For each phase ``p`` of the original: the root mean square over ``r = 0 .. L`` of
    ``C_rec(r) - C_orig(r)``, the radially averaged normalized autocovariances (2D or 3D radial
    averaging, periodic, see :func:`two_point`), each image with its own ``phi``.
    ``L = min(original.shape) // 4`` for both images, so a reconstruction of another size is
    compared on the same radii; one smaller than ``2 L`` along an axis is compared on the radii
    it allows, ``L = min(reconstruction.shape) // 2`` (:func:`comparison_max_length`).
    """
    return max(e_s2_by_phase(original, reconstruction).values())


def e_lp_by_phase(original, reconstruction) -> dict:
    """Lineal-path error of every phase of the original, worst axis, keyed by label."""
    return _e_lp(*_pair(original, reconstruction))


def e_lp(original, reconstruction) -> float:
    """Lineal-path error, worst phase and axis.

    For each phase ``p`` of the original and each axis: the root mean square over
    ``l = 1 .. L`` (``L`` as in :func:`e_s2`) of ``L_rec(l) - L_orig(l)`` (see
    :func:`lineal_path`), divided by ``phi_orig(p)``.
    """
    return max(e_lp_by_phase(original, reconstruction).values())


# --------------------------------------------------------------------------------------------
# Comparison table and floor
# --------------------------------------------------------------------------------------------


def _column(name: str, phase) -> str:
    return f"{name}[phase {phase}]"


def _named(reconstructions, names) -> tuple[list, list[str]]:
    """The reconstructions as a list (one ndarray is one image) and a name for each."""
    if isinstance(reconstructions, np.ndarray) and reconstructions.ndim in (2, 3):
        reconstructions = [reconstructions]
    reconstructions = list(reconstructions)
    if names is None:
        names = [f"reconstruction {i}" for i in range(1, len(reconstructions) + 1)]
    names = [str(n) for n in names]
    if len(names) != len(reconstructions):
        raise InputError(
            f"Got {len(names)} name(s) for {len(reconstructions)} reconstruction(s); give one "
            "name per reconstruction."
        )
    return reconstructions, names


def compare(original, reconstructions, names=None):
    """Table of the fidelity of reconstructions: one row per image, the original first.

    Wide format, one row per image (``"original"`` first, then each reconstruction); columns:

    - ``name``, ``shape`` (e.g. ``"256x256"``);
    - ``e_vf``, ``e_s2``, ``e_lp``: the errors against the original, worst phase (and axis);
    - for each phase label ``p`` of the original, ``<quantity>[phase p]`` with quantity
      ``vf``, ``e_vf``, ``e_s2``, ``e_lp`` (worst axis), ``n_clusters``, ``clusters_per_area``,
      ``largest_cluster_fraction``, ``spans_<axis>`` (``spans_0``, ``spans_1``[, ``spans_2``];
      numpy axes), ``specific_surface`` (pixel^-1).

    The original's errors are 0. Labels that occur only in a reconstruction count in its
    overall ``e_vf`` (their original fraction is 0) but get no columns.

    Parameters
    ----------
    original : ndarray
        Integer phase labels, 2D or 3D.
    reconstructions : list of ndarray
        Images of the same dimension, compared on the original's radii or, if smaller than
        ``2 * (min(original.shape) // 4)`` pixels along an axis, on the radii they allow
        (:func:`comparison_max_length`). A single ndarray is taken as one reconstruction.
    names : list of str, optional
        Row names of the reconstructions; default ``"reconstruction 1"``, ...

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    reconstructions, names = _named(reconstructions, names)

    orig = label_image(original, "original")
    po = _Profile(orig, default_max_length(orig.shape))
    by_length = {po.L: po}  # profiles of the original, per radius range
    phases = po.phases()
    rows = [_row("original", orig, po, po, phases)]
    for name, rec in zip(names, reconstructions):
        rec = label_image(rec, "reconstruction")
        _same_dimension(orig, rec)
        L = comparison_max_length(orig.shape, rec.shape)
        if L not in by_length:
            by_length[L] = _Profile(orig, L)
        rows.append(_row(name, rec, by_length[L], _Profile(rec, L), phases))
    return pd.DataFrame(rows)


def _row(name: str, image: np.ndarray, po: _Profile, pr: _Profile, phases) -> dict:
    evf, es2, elp = _e_vf(po, pr), _e_s2(po, pr), _e_lp(po, pr)
    row = {
        "name": name,
        "shape": "x".join(str(s) for s in image.shape),
        "e_vf": max(evf.values()),
        "e_s2": max(es2.values()),
        "e_lp": max(elp.values()),
    }
    for p in phases:
        ind = image == p
        row[_column("vf", p)] = pr.vf(p)
        row[_column("e_vf", p)] = evf[p]
        row[_column("e_s2", p)] = es2[p]
        row[_column("e_lp", p)] = elp[p]
        conn = _connectivity_of(ind)
        row[_column("n_clusters", p)] = conn.n_clusters
        row[_column("clusters_per_area", p)] = conn.clusters_per_area
        row[_column("largest_cluster_fraction", p)] = conn.largest_cluster_fraction
        for ax, spans in enumerate(conn.spans):
            row[_column(f"spans_{ax}", p)] = spans
        row[_column("specific_surface", p)] = _specific_surface_of(ind)
    return row


def floor(image) -> dict:
    """Errors between two disjoint pieces of the original: the reference "floor".

    The pieces are the top-left and bottom-right quadrants in 2D (opposite octants in 3D),
    each half the image along every axis (``n // 2``; for odd sizes the middle line is left
    out). The first piece plays the original, so ``L = min(piece shape) // 4``. A
    reconstruction whose errors lie at or below the floor is as close to the original as
    another piece of the same material.

    Returns
    -------
    dict
        ``e_s2``, ``e_vf``, ``e_lp`` (floats, worst phase), ``piece_shape`` (tuple) and
        ``max_length`` (``L``).
    """
    first, second = _pieces(label_image(image))
    po, pr = _pair(first, second)
    return {
        "e_s2": max(_e_s2(po, pr).values()),
        "e_vf": max(_e_vf(po, pr).values()),
        "e_lp": max(_e_lp(po, pr).values()),
        "piece_shape": first.shape,
        "max_length": po.L,
    }


def _pieces(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and the last quadrant (octant in 3D), each ``n // 2`` along every axis."""
    half = tuple(n // 2 for n in arr.shape)
    if min(half) < 4:
        raise InputError(
            f"The image {arr.shape} is too small to split into pieces (it needs at least 8 "
            "pixels along every axis)."
        )
    first = arr[tuple(slice(0, h) for h in half)]
    second = arr[tuple(slice(n - h, n) for n, h in zip(arr.shape, half))]
    return first, second


# --------------------------------------------------------------------------------------------
# Grey images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GreyAutocovariance:
    """Normalized autocovariance of the intensity of a grey image.

    Attributes
    ----------
    radius : ndarray of int
        Radii ``r = 0 .. L`` in pixels.
    autocovariance : ndarray of float
        ``C(r)``, the radial average of ``mean_x (f(x) - m) (f(x + d) - m) / s**2`` (periodic);
        1 at ``r = 0``, 0 when uncorrelated.
    mean : float
        ``m``, the mean grey level.
    variance : float
        ``s**2``, the variance of the grey levels.
    """

    radius: np.ndarray
    autocovariance: np.ndarray
    mean: float
    variance: float


def _grey_autocovariance_of(values: np.ndarray, max_radius: int) -> np.ndarray:
    """Radial ``C(r)`` of grey levels (no validation); a constant image has ``C(0) = 1`` and
    ``C(r > 0) = 0``, as for phases."""
    centred = values - values.mean()
    variance = float(np.mean(centred * centred))
    if variance <= 0.0:
        c = np.zeros(max_radius + 1)
        c[0] = 1.0
        return c
    spectrum = sp_fft.rfftn(centred)
    power = spectrum.real**2 + spectrum.imag**2
    covariance = sp_fft.irfftn(power, s=centred.shape, axes=tuple(range(centred.ndim)))
    return _radial_average(covariance / centred.size, max_radius) / variance


def grey_autocovariance(image, max_radius: int | None = None) -> GreyAutocovariance:
    """Radially averaged normalized autocovariance of a grey image's intensity ``f``.

    ``C(d) = mean_x (f(x) - m) (f(x + d) - m) / s**2`` with periodic wrap (by FFT), ``m`` and
    ``s**2`` the mean and variance of the grey levels, radially averaged over ``r = 0 .. L``
    exactly as :func:`two_point` does. For a 0/1 image it equals the autocovariance of phase 1.

    Parameters
    ----------
    image : ndarray
        Grey levels (any numbers), 2D or 3D.
    max_radius : int, optional
        ``L``; default ``min(shape) // 4``, at most ``min(shape) // 2``.

    Returns
    -------
    GreyAutocovariance
        ``radius``, ``autocovariance``, ``mean``, ``variance``.
    """
    values = grey_image(image)
    L = default_max_length(values.shape) if max_radius is None else max_radius
    L = _check_max_length(L, min(values.shape) // 2, "max_radius")
    return GreyAutocovariance(
        np.arange(L + 1),
        _grey_autocovariance_of(values, L),
        float(values.mean()),
        float(values.var()),
    )


def _grey_pair(original, reconstruction) -> tuple[np.ndarray, np.ndarray]:
    orig = grey_image(original, "original")
    rec = grey_image(reconstruction, "reconstruction")
    _same_dimension(orig, rec)
    return orig, rec


def _wasserstein_1(u: np.ndarray, v: np.ndarray) -> float:
    """``integral |F_u - F_v|`` of the empirical cumulative distributions of two samples."""
    u, v = np.sort(u.ravel()), np.sort(v.ravel())
    both = np.sort(np.concatenate([u, v]))
    below_u = np.searchsorted(u, both[:-1], side="right") / u.size
    below_v = np.searchsorted(v, both[:-1], side="right") / v.size
    return float(np.sum(np.abs(below_u - below_v) * np.diff(both)))


def _e_hist(orig: np.ndarray, rec: np.ndarray) -> float:
    scale = float(orig.max() - orig.min())
    if scale <= 0.0:
        scale = float(max(orig.max(), rec.max()) - min(orig.min(), rec.min()))
    return _wasserstein_1(orig, rec) / scale if scale > 0.0 else 0.0


def _e_ac(orig: np.ndarray, rec: np.ndarray) -> float:
    L = comparison_max_length(orig.shape, rec.shape)
    return _rms(_grey_autocovariance_of(rec, L) - _grey_autocovariance_of(orig, L))


def e_hist(original, reconstruction) -> float:
    """Grey-level distribution error: the Wasserstein-1 (earth mover's) distance between the
    grey-level distributions of the two images, in units of the original's grey range.

    ``W1 = integral |F_rec(g) - F_orig(g)| dg``, ``F`` the cumulative distribution of an
    image's grey levels (every pixel weighs the same, so the images may differ in size),
    divided by ``max(original) - min(original)`` (by the range of both images where the
    original is constant). 0: the same distribution; 0.1: the grey levels must move by a tenth
    of the original's range on average to match; at most 1 for levels within that range.
    """
    return _e_hist(*_grey_pair(original, reconstruction))


def e_ac(original, reconstruction) -> float:
    """Autocovariance error of grey images, the grey analogue of :func:`e_s2`.

    The root mean square over ``r = 0 .. L`` of ``C_rec(r) - C_orig(r)``, the normalized
    autocovariances of the intensities (:func:`grey_autocovariance`), each image with its own
    mean and variance; ``L`` as in :func:`e_s2` (:func:`comparison_max_length`).
    """
    return _e_ac(*_grey_pair(original, reconstruction))


def compare_grey(original, reconstructions, names=None):
    """Table of the fidelity of grey reconstructions: one row per image, the original first.

    Columns: ``name``, ``shape``, ``e_hist`` (:func:`e_hist`), ``e_ac`` (:func:`e_ac`), and the
    ``mean`` and ``std`` of the grey levels. The original's errors are 0.

    Parameters
    ----------
    original : ndarray
        Grey levels, 2D or 3D.
    reconstructions : list of ndarray
        Grey images of the same dimension; a single ndarray is taken as one reconstruction.
    names : list of str, optional
        Row names of the reconstructions; default ``"reconstruction 1"``, ...

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    reconstructions, names = _named(reconstructions, names)
    orig = grey_image(original, "original")
    rows = [_grey_row("original", orig, 0.0, 0.0)]
    for name, reconstruction in zip(names, reconstructions):
        rec = grey_image(reconstruction, "reconstruction")
        _same_dimension(orig, rec)
        rows.append(_grey_row(name, rec, _e_hist(orig, rec), _e_ac(orig, rec)))
    return pd.DataFrame(rows)


def _grey_row(name: str, values: np.ndarray, hist: float, ac: float) -> dict:
    return {
        "name": name,
        "shape": "x".join(str(s) for s in values.shape),
        "e_hist": hist,
        "e_ac": ac,
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def grey_floor(image) -> dict:
    """:func:`e_hist` and :func:`e_ac` between two disjoint pieces of a grey original.

    The pieces are those of :func:`floor` (the first and the last quadrant, octant in 3D); the
    first plays the original. A reconstruction at or below the floor is as close to the
    original as another piece of the same material.

    Returns
    -------
    dict
        ``e_hist``, ``e_ac`` (floats), ``piece_shape`` (tuple) and ``max_length`` (``L``).
    """
    first, second = _pieces(grey_image(image))
    return {
        "e_hist": _e_hist(first, second),
        "e_ac": _e_ac(first, second),
        "piece_shape": first.shape,
        "max_length": default_max_length(first.shape),
    }
