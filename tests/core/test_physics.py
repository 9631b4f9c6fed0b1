"""Transport by TauFactor: analytic cases, the percolation rule, and the alloy's published figures."""

import math
import sys

import numpy as np
import pytest

from napari_microstructure.core.errors import InputError
from napari_microstructure.core.physics import percolates, transport

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
