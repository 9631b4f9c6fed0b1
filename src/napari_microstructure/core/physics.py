"""Transport properties of a phase computed by physics, with TauFactor (Cooper et al. 2016/2023).

The effective diffusivity D_eff of a phase along an axis is relative to the free phase
(D_eff = phi / tau for volume fraction phi and tortuosity factor tau); the same number is the
relative effective conductivity of a conducting phase in an insulating matrix. A phase that does
not connect the two faces normal to the axis carries no flux: D_eff = 0 and tau = inf, found by
a connectivity check without calling the solver.

:func:`effective_conductivity` gives the effective conductivity of a multi-phase image in which
every phase has its own conductivity (TauFactor's multi-phase solver): a composite's property,
in the units of the conductivities given.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np

from ._validate import axis_index
from .errors import InputError


@dataclass(frozen=True)
class Transport:
    """Effective diffusivity (relative), tortuosity factor and volume fraction of a phase."""

    d_eff: float
    tau: float
    volume_fraction: float
    axis: int
    percolates: bool


@dataclass(frozen=True)
class Conductivity:
    """Effective conductivity of a multi-phase image along an axis, in the units of
    ``conductivities`` (label -> conductivity); ``percolates``: whether the conducting phases
    (conductivity above 0) together connect the two faces normal to the axis."""

    sigma_eff: float
    axis: int
    conductivities: dict
    volume_fractions: dict
    percolates: bool


def percolates(mask: np.ndarray, axis: int) -> bool:
    """Whether one face-connected cluster of ``mask`` touches both faces normal to ``axis``."""
    from scipy import ndimage

    clusters, _ = ndimage.label(mask)
    first = np.unique(np.take(clusters, 0, axis=axis))
    last = np.unique(np.take(clusters, -1, axis=axis))
    return bool(np.intersect1d(first[first > 0], last[last > 0]).size)


def check_solver_settings(iter_limit, conv_crit) -> None:
    """Refuse an iteration limit below 1 or a convergence criterion that is not a positive,
    finite number."""
    from .decoder import whole_number

    whole_number(iter_limit, "iter_limit (the solver's iteration limit)", 1)
    try:
        criterion = float(conv_crit)
    except (TypeError, ValueError):
        criterion = math.nan
    if not 0 < criterion < math.inf:
        raise InputError(f"conv_crit must be a positive finite number; got {conv_crit!r}.")


def _solver_input(image, axis, device, iter_limit, conv_crit) -> tuple:
    """The image as an array, the axis as an index and the torch device, every one checked."""
    from .device import resolve_device

    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise InputError(f"Transport needs a 2D image or a 3D volume, not shape {array.shape}.")
    axis = axis_index(axis, array.ndim)
    check_solver_settings(iter_limit, conv_crit)
    return array, axis, resolve_device(device)


def _taufactor(what: str):
    """The taufactor module, or an error that says how to install it."""
    try:
        import taufactor
    except ImportError as exc:
        raise InputError(
            f"Computing {what} needs TauFactor: pip install taufactor "
            "(or pip install 'napari-microstructure[physics]')."
        ) from exc
    return taufactor


def transport(
    image: np.ndarray,
    phase,
    axis: int = 0,
    *,
    device="cpu",
    iter_limit: int = 20000,
    conv_crit: float = 1e-2,
) -> Transport:
    """D_eff and tau of ``phase`` along ``axis`` of a 2D image or 3D volume (TauFactor).

    Parameters
    ----------
    image : label image; ``phase`` is the label of the conducting phase.
    axis : the direction of transport: an array index or a name (``x`` the last axis).
    device : torch device for the solver (a name, ``"auto"``, or a ``torch.device``); one
        that this machine lacks raises :class:`~.errors.DeviceError`, as everywhere.
    iter_limit, conv_crit : TauFactor's iteration limit and convergence criterion.
    """
    array, axis, torch_device = _solver_input(image, axis, device, iter_limit, conv_crit)
    mask = array == phase
    fraction = float(mask.mean())
    if not percolates(mask, axis):
        return Transport(0.0, math.inf, fraction, axis, False)
    taufactor = _taufactor("D_eff")
    conducting = np.ascontiguousarray(np.moveaxis(mask, axis, 0).astype(np.uint8))
    solver = taufactor.Solver(conducting, device=torch_device)
    with contextlib.redirect_stdout(io.StringIO()):
        solver.solve(iter_limit=iter_limit, conv_crit=conv_crit, verbose=False)
    d_eff = float(np.ravel(np.asarray(solver.D_eff))[0])
    tau = float(np.ravel(np.asarray(solver.tau))[0])
    return Transport(d_eff, tau, fraction, axis, True)


def check_conductivities(array: np.ndarray, conductivities) -> dict:
    """``conductivities`` (label -> non-negative finite number) checked against the labels of
    ``array``: one for every label, at least one above 0; returned as ``{label: float}``."""
    try:
        given = {
            int(label) if float(label).is_integer() else label: float(value)
            for label, value in dict(conductivities).items()
        }
    except (TypeError, ValueError):
        raise InputError(
            "Conductivities are a mapping from each phase label to a number, e.g. {0: 0, 1: 1.0, "
            f"2: 0.1}}; got {conductivities!r}."
        ) from None
    labels = [int(v) if float(v).is_integer() else v for v in np.unique(array).tolist()]
    missing = [label for label in labels if label not in given]
    if missing:
        raise InputError(
            f"The image holds the phase labels {labels}; give a conductivity for each of them "
            f"(0 for an insulating phase): missing {missing}."
        )
    bad = {label: value for label, value in given.items() if not 0 <= value < math.inf}
    if bad:
        raise InputError(f"Conductivities must be finite and not negative; got {bad}.")
    if not any(given[label] > 0 for label in labels):
        raise InputError(
            "Every phase of the image has conductivity 0: give at least one conducting phase."
        )
    return {label: given[label] for label in labels}


def effective_conductivity(
    image: np.ndarray,
    conductivities,
    axis: int = 0,
    *,
    device="cpu",
    iter_limit: int = 20000,
    conv_crit: float = 1e-2,
) -> Conductivity:
    """Effective conductivity of a 2D image or 3D volume along ``axis`` (TauFactor's multi-phase
    solver): steady conduction with a conductivity per phase, fixed potentials on the two faces
    normal to ``axis``, insulating sides; the result is in the units of ``conductivities``.

    Parameters
    ----------
    image : label image.
    conductivities : mapping from every label of the image to its conductivity (0: insulating).
        One conducting phase of conductivity 1 gives that phase's D_eff (:func:`transport`);
        layers along the axis give the arithmetic mean of their conductivities weighted by their
        fractions, layers across it the harmonic mean.
    axis, device, iter_limit, conv_crit : as in :func:`transport`.
    """
    array, axis, torch_device = _solver_input(image, axis, device, iter_limit, conv_crit)
    sigma = check_conductivities(array, conductivities)
    fractions = {label: float((array == label).mean()) for label in sigma}
    conducting = [label for label, value in sigma.items() if value > 0]
    if not percolates(np.isin(array, conducting), axis):
        return Conductivity(0.0, axis, sigma, fractions, False)
    taufactor = _taufactor("a conductivity")
    # TauFactor's multi-phase solver: label 0 insulates, conducting labels are 1, 2, ...
    relabelled = np.zeros(array.shape, np.uint8)
    for index, label in enumerate(conducting, start=1):
        relabelled[array == label] = index
    relabelled = np.ascontiguousarray(np.moveaxis(relabelled, axis, 0))
    if relabelled.ndim == 2:
        relabelled = relabelled[:, :, None]
    cond = {index: sigma[label] for index, label in enumerate(conducting, start=1)}
    solver = taufactor.MultiPhaseSolver(relabelled, cond=cond, device=torch_device)
    with contextlib.redirect_stdout(io.StringIO()):
        solver.solve(iter_limit=iter_limit, conv_crit=conv_crit, verbose=False)
    sigma_eff = float(np.ravel(np.asarray(solver.D_eff))[0])
    return Conductivity(sigma_eff, axis, sigma, fractions, True)
