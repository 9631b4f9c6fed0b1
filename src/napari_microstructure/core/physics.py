"""Transport properties of a phase computed by physics, with TauFactor (Cooper et al. 2016/2023).

The effective diffusivity D_eff of a phase along an axis is relative to the free phase
(D_eff = phi / tau for volume fraction phi and tortuosity factor tau); the same number is the
relative effective conductivity of a conducting phase in an insulating matrix. A phase that does
not connect the two faces normal to the axis carries no flux: D_eff = 0 and tau = inf, found by
a connectivity check without calling the solver.
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
    from .device import resolve_device

    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise InputError(f"Transport needs a 2D image or a 3D volume, not shape {array.shape}.")
    axis = axis_index(axis, array.ndim)
    check_solver_settings(iter_limit, conv_crit)
    torch_device = resolve_device(device)
    mask = array == phase
    fraction = float(mask.mean())
    if not percolates(mask, axis):
        return Transport(0.0, math.inf, fraction, axis, False)
    try:
        import taufactor
    except ImportError as exc:
        raise InputError(
            "Computing D_eff needs TauFactor: pip install taufactor "
            "(or pip install 'napari-microstructure[physics]')."
        ) from exc
    conducting = np.ascontiguousarray(np.moveaxis(mask, axis, 0).astype(np.uint8))
    solver = taufactor.Solver(conducting, device=torch_device)
    with contextlib.redirect_stdout(io.StringIO()):
        solver.solve(iter_limit=iter_limit, conv_crit=conv_crit, verbose=False)
    d_eff = float(np.ravel(np.asarray(solver.D_eff))[0])
    tau = float(np.ravel(np.asarray(solver.tau))[0])
    return Transport(d_eff, tau, fraction, axis, True)
