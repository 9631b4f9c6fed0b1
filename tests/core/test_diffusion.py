"""The finite-volume effective diffusivity: analytic cases, TauFactor, the gradient, the solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_microstructure._sample_data import load_sample
from napari_microstructure.core import diffusion
from napari_microstructure.core.diffusion import DiffusionSolver, effective_diffusivity
from napari_microstructure.core.errors import InputError

FLOOR = 1e-6


@pytest.mark.parametrize("shape", [(20, 30), (8, 9, 10)])
@pytest.mark.parametrize("periodic", [False, True])
def test_a_uniform_field_has_diffusivity_one(shape, periodic):
    for axis in range(len(shape)):
        assert effective_diffusivity(np.ones(shape), axis, periodic=periodic) == pytest.approx(1.0)


def test_a_straight_channel_carries_its_area_fraction():
    channel = np.full((40, 40), FLOOR)
    channel[:, 10:20] = 1.0
    assert effective_diffusivity(channel, 0) == pytest.approx(0.25, abs=1e-5)
    assert effective_diffusivity(channel, 1) == pytest.approx(0.0, abs=1e-4)
    pipe = np.full((16, 20, 20), FLOOR)
    pipe[:, 5:15, 5:10] = 1.0
    assert effective_diffusivity(pipe, 0) == pytest.approx(50 / 400, abs=1e-5)


def test_layers_in_series_and_in_parallel():
    layers = np.ones((40, 30))
    layers[20:] = 3.0
    assert effective_diffusivity(layers, 0) == pytest.approx(2 / (1 + 1 / 3))  # harmonic mean
    assert effective_diffusivity(layers, 1) == pytest.approx(2.0)  # arithmetic mean


@pytest.mark.parametrize("name", ["alloy_256", "carbonate_256"])
def test_binary_micrographs_agree_with_taufactor(name):
    pytest.importorskip("taufactor")
    from napari_microstructure.core.physics import transport

    image = load_sample(name)
    for phase in (0, 1):
        for axis in (0, 1):
            expected = transport(image, phase, axis, conv_crit=1e-3).d_eff
            field = np.where(image == phase, 1.0, FLOOR)
            assert effective_diffusivity(field, axis) == pytest.approx(
                expected, abs=1e-3, rel=2e-3
            )


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize(("shape", "axis"), [((12, 10), 0), ((12, 10), 1), ((6, 8, 5), 2)])
def test_the_gradient_matches_finite_differences(shape, axis, periodic):
    rng = np.random.default_rng(sum(shape) + axis)
    field = torch.tensor(rng.uniform(0.05, 1.0, shape), requires_grad=True)
    DiffusionSolver(axis, periodic=periodic, tolerance=1e-13)(field).backward()
    for _ in range(3):
        index = tuple(int(rng.integers(0, n)) for n in shape)
        step = 1e-6
        values = []
        for sign in (1, -1):
            moved = field.detach().clone()
            moved[index] += sign * step
            values.append(float(DiffusionSolver(axis, periodic=periodic, tolerance=1e-13)(moved)))
        finite_difference = (values[0] - values[1]) / (2 * step)
        assert float(field.grad[index]) == pytest.approx(finite_difference, rel=1e-5, abs=1e-10)


def test_multigrid_and_a_warm_start_cut_the_iterations():
    image = load_sample("alloy_256")
    field = torch.tensor(np.where(image == 0, 1.0, FLOOR))
    jacobi = DiffusionSolver(0, tolerance=1e-6, multigrid=False)
    multigrid = DiffusionSolver(0, tolerance=1e-6)
    d_jacobi, d_multigrid = float(jacobi(field)), float(multigrid(field))
    assert jacobi.last.converged and multigrid.last.converged
    assert d_multigrid == pytest.approx(d_jacobi, rel=1e-4)
    assert multigrid.last.iterations * 10 < jacobi.last.iterations
    cold = multigrid.last.iterations
    changed = field.clone()
    changed[100:104, 100:104] = 1.0
    multigrid(changed)
    assert multigrid.last.converged and multigrid.last.iterations < cold


def test_a_field_of_odd_size_is_solved():
    rng = np.random.default_rng(3)
    field = np.where(rng.random((45, 37)) < 0.7, 1.0, 1e-3)
    solver = DiffusionSolver(1, tolerance=1e-10)
    d_eff = float(solver(torch.tensor(field)))
    assert solver.last.converged
    assert d_eff == pytest.approx(
        float(DiffusionSolver(1, tolerance=1e-10, multigrid=False)(torch.tensor(field))), rel=1e-6
    )


def test_bad_fields_are_refused():
    with pytest.raises(InputError, match="positive"):
        effective_diffusivity(np.zeros((8, 8)))
    with pytest.raises(InputError, match="2D or 3D"):
        effective_diffusivity(np.ones(8))
    with pytest.raises(InputError, match="Axis 2"):
        effective_diffusivity(np.ones((8, 8)), 2)
    with pytest.raises(InputError, match="tolerance"):
        DiffusionSolver(0, tolerance=0)


@pytest.mark.parametrize("shape", [(16, 24), (8, 12, 16)])
def test_coarse_copies_keep_a_uniform_field_and_a_straight_channel(shape):
    for axis in range(len(shape)):
        values = diffusion.aggregated_diffusivities(np.ones(shape), axis, [1, 2, 4])
        np.testing.assert_allclose(values, 1.0)
    channel = np.full((40, 40), FLOOR)
    channel[:, 11:21] = 1.0  # not aligned with the blocks
    np.testing.assert_allclose(
        diffusion.aggregated_diffusivities(channel, 0, [2, 4]), 0.25, atol=1e-5
    )


def test_a_coarse_copy_bounds_the_fine_solve_and_block_one_is_the_fine_solve():
    image = load_sample("alloy_256")[:128, :128]
    field = np.where(image == 0, 1.0, 1e-4)  # the grain boundaries, a thin network
    fine = effective_diffusivity(field, 1)
    ones, twos, fours = diffusion.aggregated_diffusivities(field, 1, [1, 2, 4])
    assert ones == pytest.approx(fine, rel=1e-6)
    # a potential constant on each block can only raise the dissipation (Dirichlet's principle)
    assert 2 * twos >= fine and 4 * fours >= fine
    # and the faces between blocks keep the network's thin paths
    assert twos == pytest.approx(fine, rel=0.1) and fours == pytest.approx(fine, rel=0.2)


def test_bad_coarse_copies_are_refused():
    with pytest.raises(InputError, match="powers of 2"):
        diffusion.aggregated_diffusivities(np.ones((8, 8)), 0, [3])
    with pytest.raises(InputError, match="no block of 16"):
        diffusion.aggregated_diffusivities(np.ones((8, 32)), 0, [2, 16])
    with pytest.raises(InputError, match="positive"):
        diffusion.aggregated_diffusivities(np.zeros((8, 8)), 0, [2])
    with pytest.raises(InputError, match="Axis 2"):
        diffusion.aggregated_diffusivities(np.ones((8, 8)), 2, [2])


def test_a_real_3d_electrode_agrees_with_taufactor(shared_dir):
    pytest.importorskip("taufactor")
    import tifffile

    from napari_microstructure.core.physics import transport

    crop = tifffile.imread(shared_dir / "data" / "taufactor" / "electrode.tiff")[:32, :32, :32]
    field = np.where(crop == 0, 1.0, FLOOR)  # the pore phase
    for axis in range(3):
        expected = transport(crop, 0, axis, conv_crit=1e-3).d_eff
        assert expected > 0.05
        assert effective_diffusivity(field, axis) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", [(8, 8, 8), (4, 6, 8), (6, 4), (2, 4, 2)])
def test_the_coarsest_dense_matrix_is_the_operator(shape, periodic):
    """The multigrid's direct coarsest solve uses the same matrix the solver applies."""
    k = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1e-3
    faces = diffusion._conductances(k, periodic)
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64)
    columns = [diffusion._apply(eye[i].reshape(shape), faces).reshape(-1) for i in range(n)]
    assert torch.equal(diffusion._dense_matrix(faces, shape), torch.stack(columns, dim=1))
