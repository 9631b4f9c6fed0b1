"""Transport by TauFactor: analytic cases, the percolation rule, the alloy's published figures,
and the multi-phase conductivity (layers in series and in parallel)."""

import math
import sys

import numpy as np
import pytest

from napari_microstructure.core.diffusion import effective_diffusivity
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.physics import effective_conductivity, percolates, transport

pytest.importorskip("taufactor", reason="TauFactor is not installed (pip install taufactor)")


def test_straight_channels_have_tortuosity_one():
    image = np.zeros((32, 32), np.uint8)
    image[:, 8:16] = 1
    along = transport(image, 1, axis=0)
    assert along.percolates and along.tau == pytest.approx(1.0, abs=0.02)
    assert along.d_eff == pytest.approx(0.25, abs=0.01)


def test_a_blocked_phase_carries_nothing_and_the_solver_is_not_called(monkeypatch):
    image = np.zeros((32, 32), np.uint8)
    image[:, 8:16] = 1
    monkeypatch.setitem(sys.modules, "taufactor", None)  # importing it would now fail
    across = transport(image, 1, axis=1)
    assert not across.percolates and across.d_eff == 0.0 and math.isinf(across.tau)
    assert not percolates(image == 1, 1) and percolates(image == 1, 0)


def test_three_dimensional_channel():
    volume = np.zeros((16, 16, 16), np.uint8)
    volume[:, 4:8, 4:8] = 1
    result = transport(volume, 1, axis=0)
    assert result.tau == pytest.approx(1.0, abs=0.02) and result.d_eff == pytest.approx(
        1 / 16, abs=0.005
    )
    assert transport(volume, 1, axis=2).d_eff == 0.0


def test_bad_axis_and_dimensions_are_refused():
    with pytest.raises(InputError, match="Axis 2"):
        transport(np.eye(8), 1, axis=2)
    with pytest.raises(InputError, match="2D image or a 3D volume"):
        transport(np.zeros(8), 1)


def test_alloy_boundary_network_diffusivity(alloy_256):
    along = [transport(alloy_256, 0, axis).d_eff for axis in (0, 1)]
    assert along == pytest.approx([0.036, 0.049], abs=0.001)


def test_a_device_this_machine_lacks_is_refused_not_replaced_by_the_cpu():
    from napari_microstructure.core.errors import DeviceError

    image = np.zeros((16, 16), np.uint8)
    image[:, 4:8] = 1
    with pytest.raises(DeviceError, match="cuda:99"):  # TauFactor alone would fall back to the CPU
        transport(image, 1, axis=0, device="cuda:99")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"iter_limit": 0}, "iter_limit"),
        ({"conv_crit": float("nan")}, "conv_crit"),
        ({"conv_crit": -1.0}, "conv_crit"),
    ],
)
def test_solver_settings_are_checked(settings, message):
    with pytest.raises(InputError, match=message):
        transport(np.eye(8, dtype=np.uint8), 1, axis=0, **settings)


LAYERS = np.repeat(np.repeat([[0, 1, 1, 2]], 40, axis=0), 10, axis=1).astype(np.uint8)
CONDUCTIVITIES = {0: 1.0, 1: 0.5, 2: 2.0}


def test_layers_along_the_axis_conduct_in_parallel():
    result = effective_conductivity(LAYERS, CONDUCTIVITIES, axis=0)
    arithmetic = 0.25 * 1.0 + 0.5 * 0.5 + 0.25 * 2.0
    assert result.percolates and result.sigma_eff == pytest.approx(arithmetic, rel=0.005)
    assert result.volume_fractions == {0: 0.25, 1: 0.5, 2: 0.25}


def test_layers_across_the_axis_conduct_in_series():
    harmonic = 1 / (0.25 / 1.0 + 0.5 / 0.5 + 0.25 / 2.0)
    result = effective_conductivity(LAYERS, CONDUCTIVITIES, axis="x", conv_crit=1e-4)
    assert result.axis == 1 and result.sigma_eff == pytest.approx(harmonic, rel=0.02)


def test_three_phases_agree_with_the_independent_finite_volume_solver():
    labels = np.random.default_rng(0).integers(0, 3, (48, 48)).astype(np.uint8)
    field = np.vectorize(CONDUCTIVITIES.get)(labels).astype(float)
    for axis in (0, 1):
        sigma = effective_conductivity(labels, CONDUCTIVITIES, axis, conv_crit=1e-4).sigma_eff
        assert sigma == pytest.approx(effective_diffusivity(field, axis), rel=0.01)


def test_one_conducting_phase_gives_its_diffusivity_and_a_volume_works():
    volume = np.random.default_rng(1).random((24, 24, 24)) < 0.6
    labels = volume.astype(np.uint8)
    sigma = effective_conductivity(labels, {0: 0, 1: 1}, axis=2, conv_crit=1e-3).sigma_eff
    # TauFactor's single- and multi-phase solvers place the boundary faces differently (2 % here)
    assert sigma == pytest.approx(transport(labels, 1, axis=2, conv_crit=1e-3).d_eff, rel=0.03)
    scaled = effective_conductivity(labels, {0: 0, 1: 4.0}, axis=2, conv_crit=1e-3).sigma_eff
    assert scaled == pytest.approx(4 * sigma, rel=0.01)


def test_insulating_phases_that_do_not_span_carry_nothing():
    result = effective_conductivity(LAYERS, {0: 0, 1: 1.0, 2: 0}, axis=1)
    assert not result.percolates and result.sigma_eff == 0.0


@pytest.mark.parametrize(
    ("conductivities", "message"),
    [
        ({0: 1.0, 1: 0.5}, "missing \\[2\\]"),
        ({0: 1.0, 1: -0.5, 2: 1.0}, "not negative"),
        ({0: 1.0, 1: math.inf, 2: 1.0}, "finite"),
        ({0: 0, 1: 0, 2: 0}, "at least one conducting phase"),
        ("fast", "mapping from each phase label"),
    ],
)
def test_bad_conductivities_are_refused_with_the_reason(conductivities, message):
    with pytest.raises(InputError, match=message):
        effective_conductivity(LAYERS, conductivities, axis=0)
