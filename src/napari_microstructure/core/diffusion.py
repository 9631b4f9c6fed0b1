"""Effective diffusivity by finite volumes, differentiable with respect to the conductivity.

Steady diffusion ``div(k grad c) = 0`` on the pixel (voxel) grid of a conductivity field ``k``,
with ``c = 1`` on the inlet face and ``c = 0`` on the outlet face along ``axis`` and no flux (or
periodic) conditions on the other faces. Finite volumes: the conductance of the face between
two cells is the harmonic mean of their conductivities; a boundary face, half a cell from the
cell's centre, has twice the cell's conductivity. The effective (relative) diffusivity is
``D_eff = J L / A``: the flux through the inlet times the length along the axis over the face
area. A uniform field of 1 gives 1, a straight channel its area fraction, and a binary field
(1 in a phase, ~0 elsewhere) TauFactor's ``phi / tau`` of that phase.

The gradient needs no back-propagation through the solver: at the solution the dissipation
``E(c) = sum_f g_f (c_i - c_j)^2`` (boundary faces included) is minimal over the potentials and
equals the flux ``J`` (Dirichlet's principle), so by the envelope theorem the derivative of
``E`` with respect to a face conductance is that face's squared potential difference. The
module therefore returns ``D_eff = (L / A) E(c*, k)`` with the solution ``c*`` held constant:
its value is the effective diffusivity (accurate to second order in the solver's error) and
its autograd gradient with respect to ``k`` is the exact one.

The solver is conjugate gradients on the symmetric positive definite system, preconditioned by
one multigrid V-cycle (cells aggregated 2 by 2 along every axis, the coarse conductances the
sums of the fine ones between aggregates, so the coarse operators are the Galerkin products
and high contrast needs no special care; damped Jacobi smoothing), and warm-started from the
previous solution of the same :class:`DiffusionSolver` (an optimization changes the field a
little between steps).

:func:`aggregated_diffusivities` solves such a coarse problem on its own: a cheap estimate of
D_eff that keeps the fine grid's contacts between blocks (the property models' physics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

__all__ = ["DiffusionSolver", "Solve", "aggregated_diffusivities", "effective_diffusivity"]

#: The most conjugate-gradient iterations of one solve unless another number is given.
MAX_ITERATIONS = 20_000


@dataclass(frozen=True)
class Solve:
    """What the last solve of a :class:`DiffusionSolver` did."""

    iterations: int
    relative_residual: float
    converged: bool


def _harmonic(a, b):
    return 2.0 * a * b / (a + b)


class DiffusionSolver:
    """Effective diffusivity of conductivity fields along one axis, warm-started call to call.

    Parameters
    ----------
    axis : the direction of transport (an axis of the field).
    periodic : periodic rather than no-flux conditions on the faces parallel to ``axis``.
    tolerance : conjugate gradients stop when the residual's norm falls below ``tolerance``
        times the right-hand side's.
    max_iterations : the most conjugate-gradient iterations of one solve.
    multigrid : precondition with a multigrid V-cycle (else with the diagonal).

    Calling the solver with a 2D or 3D torch tensor of positive conductivities returns
    ``D_eff`` as a 0-dimensional tensor that carries the gradient with respect to the field.
    ``last`` describes the last solve.
    """

    def __init__(
        self,
        axis: int,
        *,
        periodic: bool = False,
        tolerance: float = 1e-8,
        max_iterations: int = MAX_ITERATIONS,
        multigrid: bool = True,
    ) -> None:
        if not tolerance > 0:
            raise InputError(f"The solver's tolerance must be positive, not {tolerance}.")
        if int(max_iterations) < 1:
            raise InputError(f"max_iterations must be at least 1, not {max_iterations}.")
        self.axis = int(axis)
        self.periodic = bool(periodic)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.multigrid = bool(multigrid)
        self.last: Solve | None = None
        self._potential = None

    def __call__(self, conductivity):
        import torch

        k = _along_first_axis(conductivity, self.axis)
        with torch.no_grad():
            potential = self._solve(k.detach().double())
        energy = _dissipation(k, potential.to(k.dtype), self.periodic)
        length, area = k.shape[0], math.prod(k.shape[1:])
        return energy * (length / area)

    def _solve(self, k):
        faces = _conductances(k, self.periodic)
        potential = self._potential
        if potential is None or potential.shape != k.shape or potential.device != k.device:
            potential = _linear_drop(k.shape, k.dtype, k.device)
        potential, self.last = _conjugate_gradients(
            faces,
            k.shape,
            potential,
            Multigrid(faces, k.shape) if self.multigrid else _Jacobi(faces, k.shape),
            self.tolerance,
            self.max_iterations,
        )
        self._potential = potential
        return potential


def _along_first_axis(conductivity, axis: int):
    """The conductivity field (a torch tensor) with ``axis`` moved first, once it is checked: 2D
    or 3D, the axis one of its own, every value positive; else InputError."""
    import torch

    if conductivity.ndim not in (2, 3):
        raise InputError(
            f"D_eff needs a 2D or 3D conductivity field, not shape {tuple(conductivity.shape)}."
        )
    if not -conductivity.ndim <= axis < conductivity.ndim:
        raise InputError(f"Axis {axis} does not exist in a {conductivity.ndim}D field.")
    with torch.no_grad():
        if not bool(torch.all(conductivity > 0)):
            raise InputError("Conductivities must be positive everywhere (give a small floor).")
    return torch.movedim(conductivity, axis % conductivity.ndim, 0)


def _linear_drop(shape, dtype, device):
    """The potential of a uniform field: a linear drop from 1 to 0 along the first axis."""
    import torch

    steps = torch.arange(shape[0], dtype=dtype, device=device)
    potential = (1 - (steps + 0.5) / shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    return potential.expand(*shape).clone()


def _conjugate_gradients(faces, shape, potential, precondition, tolerance, max_iterations):
    """Preconditioned conjugate gradients on the system of ``faces`` from ``potential`` (updated
    in place): the potential and a :class:`Solve`."""
    import torch

    rhs = torch.zeros(shape, dtype=potential.dtype, device=potential.device)
    rhs[0] = faces.inlet
    residual = rhs - _apply(potential, faces)
    norm_rhs = float(torch.linalg.vector_norm(rhs))
    target = tolerance * norm_rhs
    z = precondition(residual)
    direction = z.clone()
    rz = float(torch.sum(residual * z))
    iterations = 0
    norm = float(torch.linalg.vector_norm(residual))
    while norm > target and iterations < max_iterations:
        a_direction = _apply(direction, faces)
        step = rz / float(torch.sum(direction * a_direction))
        potential += step * direction
        residual -= step * a_direction
        z = precondition(residual)
        rz_next = float(torch.sum(residual * z))
        direction = z + (rz_next / rz) * direction
        rz = rz_next
        iterations += 1
        norm = float(torch.linalg.vector_norm(residual))
    return potential, Solve(iterations, norm / norm_rhs, norm <= target)


@dataclass
class _Faces:
    inlet: object  # conductance of the inlet boundary faces, shape of one slice
    outlet: object
    interior: (
        list  # per axis: conductance between cell i and i + 1 along it (last wraps if periodic)
    )
    periodic: bool


def _conductances(k, periodic: bool) -> _Faces:
    import torch

    interior = [_harmonic(k[:-1], k[1:])]
    for dim in range(1, k.ndim):
        shifted = torch.roll(k, -1, dims=dim) if periodic else k.narrow(dim, 1, k.shape[dim] - 1)
        base = k if periodic else k.narrow(dim, 0, k.shape[dim] - 1)
        interior.append(_harmonic(base, shifted))
    return _Faces(2.0 * k[0], 2.0 * k[-1], interior, periodic)


def _neighbour_differences(c, periodic: bool):
    """Per axis: ``c[i + 1] - c[i]`` (the transport axis never wraps)."""
    import torch

    differences = [c[1:] - c[:-1]]
    for dim in range(1, c.ndim):
        if periodic:
            differences.append(torch.roll(c, -1, dims=dim) - c)
        else:
            differences.append(
                c.narrow(dim, 1, c.shape[dim] - 1) - c.narrow(dim, 0, c.shape[dim] - 1)
            )
    return differences


def _apply(c, faces: _Faces):
    """The system's matrix times ``c``: the net flux out of each cell."""
    import torch

    out = torch.zeros_like(c)
    for dim, (g, difference) in enumerate(
        zip(faces.interior, _neighbour_differences(c, faces.periodic))
    ):
        flux = g * difference
        if dim == 0 or not faces.periodic:
            out.narrow(dim, 0, c.shape[dim] - 1).sub_(flux)
            out.narrow(dim, 1, c.shape[dim] - 1).add_(flux)
        else:
            out.sub_(flux)
            out.add_(torch.roll(flux, 1, dims=dim))
    out[0] += faces.inlet * c[0]
    out[-1] += faces.outlet * c[-1]
    return out


def _diagonal(faces: _Faces, shape):
    import torch

    diagonal = torch.zeros(shape, dtype=faces.inlet.dtype, device=faces.inlet.device)
    for dim, g in enumerate(faces.interior):
        if dim == 0 or not faces.periodic:
            diagonal.narrow(dim, 0, shape[dim] - 1).add_(g)
            diagonal.narrow(dim, 1, shape[dim] - 1).add_(g)
        else:
            diagonal.add_(g)
            diagonal.add_(torch.roll(g, 1, dims=dim))
    diagonal[0] += faces.inlet
    diagonal[-1] += faces.outlet
    return diagonal


class _Jacobi:
    """The diagonal preconditioner."""

    def __init__(self, faces: _Faces, shape) -> None:
        self.inverse_diagonal = 1.0 / _diagonal(faces, shape)

    def __call__(self, residual):
        return residual * self.inverse_diagonal


def _pair_sum(t, dim: int):
    """Sum neighbouring pairs along ``dim`` (the size must be even)."""
    shape = list(t.shape)
    shape[dim : dim + 1] = [shape[dim] // 2, 2]
    return t.reshape(shape).sum(dim + 1)


def _coarsen(faces: _Faces, shape) -> _Faces:
    """The Galerkin coarse problem of 2x2(x2) aggregates: conductances between aggregates summed."""
    ndim = len(shape)

    def sum_over(t, dims):
        for dim in dims:
            t = _pair_sum(t, dim)
        return t

    interior = []
    for dim, g in enumerate(faces.interior):
        others = [d for d in range(ndim) if d != dim]
        if dim == 0 or not faces.periodic:
            between = g.narrow(dim, 1, g.shape[dim] - 1)[
                tuple(slice(None, None, 2) if d == dim else slice(None) for d in range(ndim))
            ]
        else:  # faces 2I + 1 join aggregate I to I + 1, the last one wrapping to the first
            between = g[tuple(slice(1, None, 2) if d == dim else slice(None) for d in range(ndim))]
        interior.append(sum_over(between, others))
    inlet = sum_over(faces.inlet, range(ndim - 1))
    outlet = sum_over(faces.outlet, range(ndim - 1))
    return _Faces(inlet, outlet, interior, faces.periodic)


def _dense_matrix(faces: _Faces, shape):
    """The system's matrix as a dense (n, n) tensor: the diagonal, minus each face's
    conductance between its two cells (assembled at once: 16 s of a 64^3 run built it column
    by column)."""
    import torch

    n = math.prod(shape)
    device = faces.inlet.device
    index = torch.arange(n, device=device).reshape(shape)
    matrix = torch.diag(_diagonal(faces, shape).reshape(-1))
    for dim, g in enumerate(faces.interior):
        if dim == 0 or not faces.periodic:
            first = index.narrow(dim, 0, shape[dim] - 1)
            second = index.narrow(dim, 1, shape[dim] - 1)
        else:
            first, second = index, torch.roll(index, -1, dims=dim)
        first, second, g = first.reshape(-1), second.reshape(-1), g.reshape(-1)
        matrix.index_put_((first, second), -g, accumulate=True)
        matrix.index_put_((second, first), -g, accumulate=True)
    return matrix


class Multigrid:
    """One symmetric V-cycle of aggregation multigrid: an SPD preconditioner for CG."""

    #: Damped Jacobi sweeps before and after each coarse correction, and their damping.
    SWEEPS, DAMPING = 2, 0.7
    #: The coarsest problem is solved exactly once it has this many cells or fewer.
    DIRECT_CELLS = 512

    def __init__(self, faces: _Faces, shape) -> None:
        import torch

        self.levels = [(faces, tuple(shape), 1.0 / _diagonal(faces, shape))]
        while math.prod(shape) > self.DIRECT_CELLS and all(n % 2 == 0 and n >= 4 for n in shape):
            faces = _coarsen(faces, shape)
            shape = tuple(n // 2 for n in shape)
            self.levels.append((faces, shape, 1.0 / _diagonal(faces, shape)))
        faces, shape, _ = self.levels[-1]
        n = math.prod(shape)
        if n <= 2 * self.DIRECT_CELLS:
            self.coarsest = torch.linalg.cholesky(_dense_matrix(faces, shape))
        else:  # a size that does not halve: smoothing alone on the coarsest level
            self.coarsest = None

    def __call__(self, residual):
        return self._cycle(0, residual)

    def _cycle(self, level: int, rhs):
        import torch

        faces, shape, inverse_diagonal = self.levels[level]
        if level == len(self.levels) - 1 and self.coarsest is not None:
            solution = torch.cholesky_solve(rhs.reshape(-1, 1), self.coarsest)
            return solution.reshape(shape)
        x = self.DAMPING * inverse_diagonal * rhs
        for _ in range(self.SWEEPS - 1):
            x = x + self.DAMPING * inverse_diagonal * (rhs - _apply(x, faces))
        if level < len(self.levels) - 1:
            coarse = rhs - _apply(x, faces)
            for dim in range(len(shape)):
                coarse = _pair_sum(coarse, dim)
            correction = self._cycle(level + 1, coarse)
            for dim in range(len(shape)):
                correction = correction.repeat_interleave(2, dim=dim)
            x = x + correction
        for _ in range(self.SWEEPS):
            x = x + self.DAMPING * inverse_diagonal * (rhs - _apply(x, faces))
        return x


def _dissipation(k, c, periodic: bool):
    """``sum_f g_f (dc_f)^2`` over every face, boundary faces with c = 1 and c = 0 included."""
    return _energy(_conductances(k, periodic), c)


def _energy(faces: _Faces, c):
    """The dissipation of potential ``c`` over ``faces``."""
    import torch

    energy = torch.sum(faces.inlet * (1 - c[0]) ** 2) + torch.sum(faces.outlet * c[-1] ** 2)
    for g, difference in zip(faces.interior, _neighbour_differences(c, faces.periodic)):
        energy = energy + torch.sum(g * difference**2)
    return energy


def effective_diffusivity(
    conductivity, axis: int = 0, *, periodic: bool = False, tolerance: float = 1e-8
) -> float:
    """``D_eff`` of a conductivity field (numpy or torch, 2D or 3D) along ``axis``.

    For a binary image, pass ``np.where(image == phase, 1.0, floor)`` with a small ``floor``.
    """
    import torch

    field = torch.as_tensor(conductivity, dtype=torch.float64)
    return float(DiffusionSolver(axis, periodic=periodic, tolerance=tolerance)(field))


def aggregated_diffusivities(conductivity, axis: int, blocks, *, tolerance: float = 1e-8) -> list:
    """``D_eff`` along ``axis`` of coarse copies of a conductivity field (numpy or torch, 2D or
    3D), one per side in ``blocks`` (powers of 2).

    A copy joins the cells into blocks of that side, each block at one potential, and joins two
    neighbouring blocks by the sum of the fine faces between them (the Galerkin coarse problem
    of the aggregation, as in :class:`Multigrid`). So it keeps every contact of the fine grid
    between blocks (pixels that touch only at a corner conduct nothing, a neck one pixel wide
    conducts as one face) and drops the resistance inside the blocks. Divided by the side, a
    uniform field gives 1 and a straight channel its fraction. What the largest block does not
    fill at the end of each axis is left out.
    """
    import torch

    field = _along_first_axis(torch.as_tensor(conductivity, dtype=torch.float64), axis)
    sides = sorted({int(b) for b in blocks})
    if not sides or any(b < 1 or b & (b - 1) for b in sides):
        raise InputError(f"Blocks must be powers of 2, not {list(blocks)}.")
    if min(field.shape) < sides[-1]:
        raise InputError(
            f"A field of shape {tuple(field.shape)} holds no block of {sides[-1]} a side."
        )
    field = field[tuple(slice(0, n - n % sides[-1]) for n in field.shape)]
    length, area = field.shape[0], math.prod(field.shape[1:])
    faces, shape, side = _conductances(field, False), tuple(field.shape), 1
    values = {}
    for block in sides:
        while side < block:
            faces, shape, side = _coarsen(faces, shape), tuple(n // 2 for n in shape), side * 2
        potential, _ = _conjugate_gradients(
            faces,
            shape,
            _linear_drop(shape, field.dtype, field.device),
            Multigrid(faces, shape),
            tolerance,
            MAX_ITERATIONS,
        )
        values[block] = float(_energy(faces, potential)) * length / area / block
    return [values[int(b)] for b in blocks]
