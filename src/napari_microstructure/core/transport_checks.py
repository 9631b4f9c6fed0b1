"""Transport checks of a phase-label image: connectivity and D_eff per phase and axis.

:func:`transport_record` gives, for each phase of a 2D image or 3D volume, its face-connected
clusters (:func:`~napari_microstructure.core.metrics.connectivity`) and, along every axis it
spans, its effective diffusivity computed by TauFactor on the hard image
(:func:`~napari_microstructure.core.physics.transport`), independent of any loss term's own
solver. :data:`TOLERANCE` says when a reconstruction's record is outside tolerance against its
original's; the results tables (:mod:`napari_microstructure.report`) show both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .metrics import Connectivity, _connectivity_of
from .physics import transport

__all__ = [
    "TOLERANCE",
    "PhaseTransport",
    "Tolerance",
    "TransportRecord",
    "relative_difference",
    "transport_record",
]


@dataclass(frozen=True)
class Tolerance:
    """When a reconstruction's transport is outside tolerance against its original.

    Attributes
    ----------
    d_eff : float
        Largest ``|relative difference|`` of D_eff of a phase along an axis.
    largest_cluster : float
        Largest ``|difference|`` of the fraction of a phase held by its largest cluster.

    Any change of a phase's spanning status along an axis is outside tolerance too.
    """

    d_eff: float
    largest_cluster: float


#: The targets of a reconstruction that keeps its micrograph's transport: D_eff within 10 %,
#: largest-cluster fraction within 0.05, the same spanning status; far above TauFactor's own
#: scatter (< 1e-3), docs/measurements/transport_checks.md.
TOLERANCE = Tolerance(d_eff=0.10, largest_cluster=0.05)


@dataclass(frozen=True)
class PhaseTransport:
    """Connectivity and D_eff of one phase.

    Attributes
    ----------
    phase : the label.
    connectivity : :class:`~napari_microstructure.core.metrics.Connectivity` (no clusters and
        no spanning for a phase absent from the image).
    d_eff : one per axis: D_eff relative to the free phase (TauFactor) along each axis the
        phase spans, NaN along the others (it carries no flux there).
    """

    phase: int | float
    connectivity: Connectivity
    d_eff: tuple[float, ...]


@dataclass(frozen=True)
class TransportRecord:
    """The transport record of an image: one :class:`PhaseTransport` per phase, and the
    seconds it took to compute."""

    phases: tuple[PhaseTransport, ...]
    seconds: float

    def of(self, phase) -> PhaseTransport:
        """The record of ``phase``."""
        return next(p for p in self.phases if p.phase == phase)


def transport_record(image, phases=None, *, device="cpu") -> TransportRecord:
    """Connectivity and D_eff of each phase of a label image, along each axis.

    Parameters
    ----------
    image : 2D image or 3D volume of phase labels (whole numbers).
    phases : the labels to check (default: the image's own); a label the image lacks gets no
        clusters and no D_eff, so a reconstruction can be checked on its original's phases.
    device : torch device of TauFactor's solver.

    Returns
    -------
    TransportRecord
        One :class:`PhaseTransport` per phase and the seconds it took. D_eff costs one
        TauFactor solve per spanning phase and axis (about 1 s at 256^2 or 64^3 on one CPU
        thread, docs/measurements/transport_checks.md).
    """
    started = time.perf_counter()
    array = np.asarray(image)
    if phases is None:
        phases = np.unique(array)
    records = []
    for phase in phases:
        phase = phase.item() if isinstance(phase, np.generic) else phase
        conn = _connectivity_of(array == phase)
        d_eff = tuple(
            transport(array, phase, axis, device=device).d_eff if spans else math.nan
            for axis, spans in enumerate(conn.spans)
        )
        records.append(PhaseTransport(phase, conn, d_eff))
    return TransportRecord(tuple(records), time.perf_counter() - started)


def relative_difference(value: float, reference: float) -> float:
    """``(value - reference) / reference``; NaN where either is missing or the reference
    is 0."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return (value - reference) / reference
