"""A reconstruction loss term that keeps (or sets) the effective diffusivity of phases.

:class:`TransportLoss` follows the :class:`~.descriptors.LossTerm` protocol. At every
evaluation each pixel gets a degree ``q`` of belonging to a phase once the final rounding to
exact fractions is made (a sigmoid of its margin over the rounding's cut), which becomes a
conductivity field ``k = floor + (1 - floor) q**exponent`` (SIMP's interpolation: grey pixels
conduct little, so the optimization gains nothing from them), whose effective diffusivity
along an axis is solved by finite volumes (:class:`~.diffusion.DiffusionSolver`, warm-started
per phase, axis, sample and level; its exact gradient costs no back-propagation through the
solver). The sides along the axis are closed (no flux), also where the reconstruction tiles
(``periodic``): that is how the targets, the transport checks (TauFactor) and a user measure
D_eff. The term of a sample is the sum over its targets of ``(D_eff / target - 1)**2``.

Targets are, by default, the micrograph's own D_eff of every phase that spans it along each
axis (computed once at full resolution with the same solver), or given as
``{(phase, axis): value}``. A target the micrograph cannot have is refused with the reason:
a phase it lacks, an axis that does not exist, or a D_eff above the phase's fraction (the
parallel bound: no arrangement of the phase conducts more than straight channels).

In 3D, without design targets, the term sees the sampled slices of one axis at a time
(``context.axis``): each slice is held to the 2D targets of that axis's micrograph, its two
in-plane axes being the micrograph's axes 0 and 1. With design targets ``{(phase, axis 0..2):
value}`` it is a whole-volume term (``whole_volume``): once per step it solves the 3D D_eff of
the whole soft volume along each targeted axis (:mod:`.volume` calls it so).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from numbers import Real

import numpy as np

from .diffusion import DiffusionSolver
from .errors import InputError
from .phases import ImageModel, describe_image

__all__ = [
    "TransportLoss",
    "check_targets",
    "design_targets",
    "image_targets",
    "keyed",
    "micrograph_diffusivities",
    "parse_targets",
    "target_from_words",
    "transport_term",
]

# The defaults below were chosen by measurement with benchmarks/transport.py; the tables are in
# docs/measurements/transport.md.
#
#: Conductivity of the other phases, relative to the phase's: a broken path conducts little;
#: it raises the alloy's boundary D_eff by 0.5 % over TauFactor's (targets use the same floor).
FLOOR = 1e-4
#: p -> k = FLOOR + (1 - FLOOR) p**EXPONENT: with 3 the soft map's D_eff stays close to the
#: hard image's (a linear map lets grey pixels carry flux that the rounding takes away).
EXPONENT = 3
#: The conductivity follows the pixel's margin over the cut that the final rounding to exact
#: fractions makes, through a sigmoid of this width (in log-probability); None: the phase's
#: probability itself. The soft map held more of the phase than its fraction, and the rounding
#: took D_eff away. The whole-volume term (3D targets) uses it too: there the rounding raised the
#: soft volume's 3D D_eff by 3-8 % at 64^3; at 0.1 it kept it within 5 %, but the term moved the
#: volume less (the benchmark volume along axis 0: -64 % from the crops' D_eff against -38 %).
TEMPERATURE = 0.5
#: Weight of the term beside the Gram loss (whose value is about 1e-3 to 1e-2 at the end).
DEFAULT_WEIGHT = 1.0
#: The term acts on the levels whose images are at most this many times smaller than the
#: output: coarse levels cannot resolve a thin network.
MAX_FACTOR = 1
#: With 2D design targets below the micrograph's own D_eff it acts from the level at half
#: resolution, where that level is at least DESIGN_MIN_SIDE pixels a side: carbonate_256's
#: matrix at 0.5x came within 4 % (seeds 0-2; +20 / +10 % at the finest level alone); on a
#: 128x128 crop the 64x64 level moved D_eff the wrong way, and at 1.2x it left 2x2 blocks
#: (docs/measurements/transport_design.md)
DESIGN_MAX_FACTOR = 2
DESIGN_MIN_SIDE = 128
#: Relative residual at which a solve stops: D_eff is second-order accurate in it.
TOLERANCE = 1e-4
#: Conjugate-gradient iterations at most per solve; a solve that stops short still gives an
#: upper bound of D_eff and a usable gradient (the dissipation at any admissible potential).
MAX_ITERATIONS = 500


def _phase_of(labels: tuple, phase):
    """The label in ``labels`` equal to ``phase``, or None."""
    for label in labels:
        if label == phase and not isinstance(phase, bool):
            return label
    return None


def micrograph_diffusivities(
    micrograph: np.ndarray, model: ImageModel | None = None, floor: float = FLOOR
) -> dict:
    """``{(phase, axis): D_eff}`` of every phase that spans the 2D micrograph along an axis.

    D_eff is solved by finite volumes on the binary field (1 in the phase, ``floor``
    elsewhere): the same solver and floor the term uses (within 1 % of TauFactor's).
    """
    import torch

    from .physics import percolates

    model = model or describe_image(micrograph)
    targets = {}
    for label in model.labels:
        mask = micrograph == label
        for axis in range(micrograph.ndim):
            if percolates(mask, axis):
                field = torch.from_numpy(np.where(mask, 1.0, floor))
                targets[(label, axis)] = float(DiffusionSolver(axis, tolerance=1e-8)(field))
    return targets


def _check_axes(label, values: Mapping, model: ImageModel, ndim: int) -> None:
    """Refuse D_eff targets of one phase along several axes (``values``: axis -> D_eff) that no
    arrangement of its fraction reaches around phases that do not conduct: the trace bound
    ``sum over the ndim axes of 1/(1 - D_a) <= 1 + (ndim - 1)/(1 - fraction)`` (an axis without
    a target counts with D_a = 0), reached by laminates, and by Hashin-Shtrikman's
    ``(ndim - 1) fraction / (ndim - fraction)`` along every axis for an isotropic phase."""
    fraction = model.fractions[model.labels.index(label)]
    if len(values) < 2 or max(values.values()) >= 1 or fraction >= 1:
        return
    trace = sum(1 / (1 - d) for d in values.values()) + ndim - len(values)
    if trace > 1 + (ndim - 1) / (1 - fraction) + 1e-9:
        most = (ndim - 1) * fraction / (ndim - fraction)
        given = ", ".join(f"{d:g} along axis {axis}" for axis, d in sorted(values.items()))
        raise InputError(
            f"D_eff {given} of phase {label} cannot be reached together at its fraction "
            f"{fraction:.4g}: no {ndim}D arrangement of the phase around non-conducting phases "
            f"exceeds the sum over the {ndim} axes of 1/(1-D) = 1 + {ndim - 1}/(1-fraction) "
            f"(at most {most:.4g} along every axis). Lower one target, or give fewer axes."
        )


def check_targets(given: Mapping, model: ImageModel, ndim: int) -> dict:
    """The targets ``{(label, axis): D_eff}`` of ``given`` for an image of ``ndim`` dimensions
    with the phases and fractions of ``model``, or InputError that says why one cannot be
    reached (a missing phase or axis, a D_eff above the phase's fraction, or beyond the bound
    of several axes together)."""
    targets = {}
    for (phase, axis), value in given.items():
        label = _phase_of(model.labels, phase)
        if label is None:
            raise InputError(
                f"A D_eff target names phase {phase!r}, which the micrograph does not have; "
                f"its phases are {', '.join(map(str, model.labels))}."
            )
        if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < ndim:
            raise InputError(
                f"A D_eff target names axis {axis!r}; a {ndim}D "
                f"{'micrograph' if ndim == 2 else 'volume'} has axes "
                f"{', '.join(map(str, range(ndim - 1)))} and {ndim - 1}."
            )
        fraction = model.fractions[model.labels.index(label)]
        if value > fraction:
            raise InputError(
                f"D_eff {value:g} of phase {label} along axis {axis} cannot be reached: it "
                f"is above the phase's fraction {fraction:.4g}, the most that straight "
                "channels of the phase carry. Give a target at or below the fraction."
            )
        targets[(label, axis)] = value
    for label in {phase for phase, _ in targets}:
        along = {axis: value for (phase, axis), value in targets.items() if phase == label}
        _check_axes(label, along, model, ndim)
    return targets


class TransportLoss:
    """Keep (or reach) the effective diffusivity of phases along axes during a reconstruction.

    Parameters
    ----------
    targets : ``{(phase, axis): D_eff}`` (phase: a label of the micrograph; axis 0 or 1 of
        it), or None for the micrograph's own D_eff of every phase that spans it.
    weight : the term's weight beside the Gram loss.
    max_factor : the term acts on the levels at most this many times smaller than the output.
    min_side : and, below the finest level, on those whose images are at least this many
        pixels a side.
    exponent, temperature, floor : the map to conductivity: ``floor + (1 - floor) q**exponent``
        with ``q`` the sigmoid of a pixel's margin over the rounding's cut divided by
        ``temperature`` (None: ``q`` is the phase's probability).
    tolerance, max_iterations : the solver's stopping rule.
    name : the term's name in the provenance.
    whole_volume : a 3D term on the whole soft volume (targets along axes 0, 1, 2 under the key
        None of :attr:`targets`), called once per step with scores ``(1, C, D, H, W)``; else a
        term on 2D samples (a 2D reconstruction's images or a volume's slices).

    After a run, :meth:`provenance` gives the targets, the last D_eff of the soft samples and
    the solves' statistics.
    """

    def __init__(
        self,
        targets: Mapping | None = None,
        *,
        weight: float = DEFAULT_WEIGHT,
        max_factor: int = MAX_FACTOR,
        min_side: int = 0,
        exponent: float = EXPONENT,
        temperature: float | None = TEMPERATURE,
        floor: float = FLOOR,
        tolerance: float = TOLERANCE,
        max_iterations: int = MAX_ITERATIONS,
        name: str = "transport",
        whole_volume: bool = False,
    ) -> None:
        self.name = name
        self.whole_volume = bool(whole_volume)
        self.weight = weight
        self.given = None if targets is None else self._check_given(targets)
        if not (isinstance(max_factor, int) and max_factor >= 1):
            raise InputError(
                f"max_factor must be a whole number of 1 or more; got {max_factor!r}."
            )
        if not (isinstance(exponent, Real) and 1 <= exponent < math.inf):
            raise InputError(f"The exponent must be a number of 1 or more; got {exponent!r}.")
        if not (isinstance(floor, Real) and 0 < floor < 1):
            raise InputError(f"The conductivity floor must lie between 0 and 1; got {floor!r}.")
        if temperature is not None and not (isinstance(temperature, Real) and temperature > 0):
            raise InputError(f"The temperature must be above 0 (or None); got {temperature!r}.")
        self.max_factor, self.exponent, self.floor = max_factor, float(exponent), float(floor)
        self.min_side = int(min_side)
        self.temperature = None if temperature is None else float(temperature)
        self.tolerance, self.max_iterations = float(tolerance), int(max_iterations)
        self.targets: dict = {}  # axis of the slices (None in 2D) -> {(phase, axis): D_eff}
        self._solvers: dict = {}  # (phase, axis, slices' axis, sample, level) -> solver
        self._last_d_eff: dict = {}  # (phase, axis) -> D_eff of each sample at the last call
        self._stats = {"solves": 0, "iterations": 0, "not_converged": 0, "skipped": 0}
        self._seconds = 0.0

    @staticmethod
    def _check_given(targets: Mapping) -> dict:
        if not isinstance(targets, Mapping) or not targets:
            raise InputError(
                f"Transport targets must map (phase, axis) to a D_eff; got {targets!r}."
            )
        checked = {}
        for key, value in targets.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise InputError(f"A transport target's key must be (phase, axis); got {key!r}.")
            if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
                raise InputError(
                    f"The D_eff target of phase {key[0]!r} along axis {key[1]!r} must be a "
                    f"number above 0; got {value!r}."
                )
            checked[key] = float(value)
        return checked

    def check(self, micrograph: np.ndarray, model: ImageModel | None = None) -> dict:
        """The targets ``{(phase, axis): D_eff}`` for this 2D micrograph, or InputError that
        says why one cannot be reached (a missing phase or axis, a D_eff above the phase's
        fraction, a grey micrograph)."""
        micrograph = np.asarray(micrograph)
        model = model or describe_image(micrograph)
        if model.kind != "labels":
            raise InputError("The transport term needs a micrograph of phases, not grey levels.")
        if self.given is None:
            return micrograph_diffusivities(micrograph, model, self.floor)
        return check_targets(self.given, model, 2)

    def prepare(self, context) -> None:
        """Compute (once per micrograph axis) the targets from the micrograph."""
        if context.axis not in self.targets:
            self.targets[context.axis] = self.check(context.micrograph, context.model)

    def active(self, context) -> bool:
        """Whether the term acts at this level (the others get a loss of 0)."""
        large_enough = context.factor == 1 or min(context.scores.shape[2:]) >= self.min_side
        return (
            context.factor <= self.max_factor
            and large_enough
            and bool(self.targets.get(context.axis))
        )

    def __call__(self, context):
        """``sum over targets (D_eff / target - 1)**2`` of each sample (a 2D image or slice, or
        the whole volume), shape (n,)."""
        import torch

        scores = context.scores
        n = scores.shape[0]
        if not self.active(context):
            return scores.new_zeros(n)
        started = time.perf_counter()
        labels = context.model.labels
        conducting = {
            phase: self._conducting(context, labels.index(phase))
            for phase in {phase for phase, _ in self.targets[context.axis]}
        }
        losses = []
        for sample in range(n):
            loss = scores.new_zeros(())
            for (phase, axis), target in self.targets[context.axis].items():
                k = self.floor + (1 - self.floor) * conducting[phase][sample] ** self.exponent
                d_eff = self._solve(k, phase, axis, sample, context)
                self._last_d_eff.setdefault((phase, axis), [math.nan] * n)[sample] = float(
                    d_eff.detach()
                )
                if torch.isfinite(d_eff):
                    loss = loss + ((d_eff / target - 1) ** 2).to(scores.dtype)
                else:
                    self._stats["skipped"] += 1
            losses.append(loss)
        self._seconds += time.perf_counter() - started
        return torch.stack(losses)

    def _conducting(self, context, index: int):
        """How much each pixel (voxel) of the samples (n, h, w) or (n, d, h, w) is phase
        ``index`` once rounded.

        The final assignment gives the phase the pixels where its log-probability leads the
        best other phase's by the most, as many as its fraction allows; the margin of each
        pixel over that cut, divided by the temperature, goes through a sigmoid.
        """
        import torch

        if self.temperature is None:
            return context.probabilities[:, index].double()
        log_p = context.log_probabilities  # from the logits: probabilities tie at 1 when sharp
        others = torch.cat([log_p[:, :index], log_p[:, index + 1 :]], dim=1)
        margin = log_p[:, index] - others.max(dim=1).values
        fraction = context.model.fractions[index]
        with torch.no_grad():  # measured: a cut that carries the gradient did worse
            cut = torch.quantile(margin.flatten(1), 1 - fraction, dim=1)
        cut = cut.reshape(-1, *(1,) * (margin.dim() - 1))
        return torch.sigmoid((margin - cut) / self.temperature)

    def _solve(self, k, phase, axis, sample, context):
        import torch

        key = (phase, axis, context.axis, sample, context.level)
        solver = self._solvers.get(key)
        if solver is None:
            solver = self._solvers[key] = DiffusionSolver(
                axis, tolerance=self.tolerance, max_iterations=self.max_iterations
            )
        d_eff = solver(k)
        last = solver.last
        self._stats["solves"] += 1
        self._stats["iterations"] += last.iterations
        if not last.converged:
            self._stats["not_converged"] += 1
        if not bool(torch.isfinite(d_eff.detach())):
            del self._solvers[key]  # a poisoned warm start must not carry over
        return d_eff

    def last_soft_d_eff(self) -> dict:
        """``{(phase, axis): [D_eff of each sample]}`` of the soft samples at the last call."""
        return {key: list(values) for key, values in self._last_d_eff.items()}

    def provenance(self) -> dict:
        """The targets, the soft samples' last D_eff and the solves' statistics."""

        return {
            "name": self.name,
            "weight": float(self.weight),
            "exponent": self.exponent,
            "floor": self.floor,
            "max_factor": self.max_factor,
            "min_side": self.min_side,
            "tolerance": self.tolerance,
            "targets": {str(axis): keyed(t) for axis, t in self.targets.items()},
            "last_soft_d_eff": keyed(self.last_soft_d_eff()),
            **self._stats,
            "seconds": self._seconds,
        }


def keyed(mapping: Mapping) -> dict:
    """``{(phase, axis): value}`` with readable keys, ``"phase P axis A"`` (provenance)."""
    return {f"phase {p} axis {a}": v for (p, a), v in mapping.items()}


def image_targets(terms) -> dict:
    """The D_eff targets ``{(phase, axis): value}`` that the transport terms among ``terms`` hold
    the whole output to (a 2D image, or a volume by a whole-volume term; not a volume's
    slices), as computed by the run."""
    targets: dict = {}
    for term in terms:
        if isinstance(term, TransportLoss):
            targets.update(term.targets.get(None, {}))
    return targets


def design_targets(
    targets,
    micrograph: np.ndarray | None,
    model: ImageModel | None = None,
    ndim: int = 2,
    own: dict | None = None,
) -> dict:
    """``{(phase, axis): D_eff}`` from design targets ``((phase, axis, value), ...)``.

    ``axis`` is an index or a name (``"y"``, ``"x"``; in 3D also ``"z"``). In 2D ``value`` is a
    D_eff, or a factor of the micrograph's own D_eff written ``"0.5x"`` (that phase must span
    the micrograph along the axis; ``own``: its :func:`micrograph_diffusivities`, when already
    solved). In 3D (``ndim`` 3, a volume: ``micrograph`` None and
    ``model`` the volume's) ``value`` is a 3D D_eff: a factor is refused, since the
    micrograph's own D_eff is 2D. The targets are checked by :func:`check_targets`.
    """
    from ._validate import axis_index

    model = model or describe_image(micrograph)
    checked = {}
    for target in targets:
        try:
            phase, axis, value = target
        except (TypeError, ValueError):
            raise InputError(f"A D_eff target is (phase, axis, value); got {target!r}.") from None
        axis = axis_index(axis, ndim)
        if isinstance(value, str) and value.strip().lower().endswith("x"):
            if ndim == 3:
                raise InputError(
                    f"A volume's D_eff target is a 3D D_eff, not a factor ({value!r}): the "
                    "micrograph's own D_eff is that of a 2D plane, and a plane's D_eff is not "
                    "the volume's (a 2D section of a 3D network often does not span). Give the "
                    "3D D_eff as a number, measured on a volume of the material."
                )
            try:
                factor = float(value.strip()[:-1])
            except ValueError:
                raise InputError(
                    f"A D_eff factor is a number followed by x (0.5x); got {value!r}."
                ) from None
            own = micrograph_diffusivities(micrograph, model) if own is None else own
            label = _phase_of(model.labels, phase)
            if (label, axis) not in own:
                raise InputError(
                    f"Phase {phase!r} does not span the micrograph along axis {axis}: it has no "
                    f"D_eff to scale by {value}. Give a D_eff value instead."
                )
            value = factor * own[(label, axis)]
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(
                    "A D_eff target value is a number"
                    + (" or a factor such as 0.5x" if ndim == 2 else "")
                    + f"; got {value!r}."
                ) from None
        checked[(phase, axis)] = value
    return checked


def transport_term(
    enabled: bool, targets, weight: float, micrographs: Mapping, model: ImageModel
) -> TransportLoss | None:
    """The transport term of a run, or None when it has none (``enabled`` False and no design
    ``targets``; or a grey micrograph without targets).

    ``micrographs`` maps each slice axis to its micrograph (``{None: micrograph}`` in 2D). In
    2D, and in 3D without design targets, the targets of every micrograph are computed here; a
    volume's design targets make a whole-volume term (3D D_eff along axes 0, 1, 2; the slices
    get no term). Every target is checked here, before the run, so that one that cannot be
    reached is refused with the reason before any work.
    """
    if not (enabled or targets):
        return None
    if model.kind != "labels":
        if targets:
            raise InputError("D_eff targets need a micrograph of phases, not grey levels.")
        return None
    if targets and set(micrographs) != {None}:
        term = TransportLoss(
            design_targets(targets, None, model, ndim=3),
            weight=weight,
            whole_volume=True,
        )
        term.targets[None] = check_targets(term.given, model, 3)
        return term
    given, design = None, {}
    if targets:  # the micrograph's own D_eff, solved once: for factors and for the levels
        own = micrograph_diffusivities(micrographs[None], model)
        given = design_targets(targets, micrographs[None], model, own=own)
        if any(value < own.get(key, math.inf) for key, value in given.items()):
            design = {"max_factor": DESIGN_MAX_FACTOR, "min_side": DESIGN_MIN_SIDE}
    term = TransportLoss(given, weight=weight, **design)
    computed: dict = {}  # one micrograph for several axes is solved once
    for axis, micrograph in micrographs.items():
        if id(micrograph) not in computed:
            computed[id(micrograph)] = term.check(micrograph, model)
        term.targets[axis] = computed[id(micrograph)]
    return term


def target_from_words(words) -> tuple:
    """One design target ``(phase, axis, value)`` from its three words (``"0", "x", "0.5x"``):
    a phase or an axis that is a whole number becomes an int; the value stays text."""
    if len(words) != 3:
        raise InputError(
            f"A D_eff target is PHASE AXIS VALUE (e.g. 0 x 0.5x); got {' '.join(words)!r}."
        )
    phase, axis, value = words
    return tuple(int(w) if w.lstrip("-").isdigit() else w for w in (phase, axis)) + (value,)


def parse_targets(text: str) -> tuple:
    """Design targets from text: ``"PHASE AXIS VALUE"`` items separated by ``;`` (``"0 x 0.5x;
    1 y 0.02"``, ``"0 2 0.2"``), phases and axes that are whole numbers as ints; an empty text
    gives none."""
    return tuple(target_from_words(item.split()) for item in text.split(";") if item.split())
