"""Restoring D_eff after the rounding: pixel swaps on a real network that bring its D_eff back
(TauFactor) with every phase's count kept, lower targets, stopping, volumes, and the default
reconstruction that uses it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_microstructure import load_sample
from napari_microstructure.core import metrics, synthetic
from napari_microstructure.core.decoder import reconstruct
from napari_microstructure.core.diffusion import effective_diffusivity
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.physics import transport
from napari_microstructure.core.polish import (
    POLISH_MAX_CHANGED,
    POLISH_MAX_CHANGED_3D,
    polish_steps,
)
from napari_microstructure.core.steps import STOP, run_to_end
from napari_microstructure.core.transport import FLOOR, micrograph_diffusivities
from napari_microstructure.core.volume import compare_volume


def network() -> np.ndarray:
    """A corner of the alloy micrograph: its boundary network (phase 0) spans both axes."""
    return load_sample("alloy_256")[:128, :128]


def broken(image: np.ndarray, share: float, phase=0, seed: int = 0) -> np.ndarray:
    """``image`` with ``share`` of its pixels moved from the edge of ``phase`` to the other
    phases' edges: the same counts, links cut."""
    rng = np.random.default_rng(seed)
    image = image.copy()
    edge = ndimage.binary_dilation(image != phase) & (image == phase)
    other_edge = ndimage.binary_dilation(image == phase) & (image != phase)
    cut = rng.choice(np.flatnonzero(edge), int(share * image.size), replace=False)
    fill = rng.choice(np.flatnonzero(other_edge), cut.size, replace=False)
    image.flat[cut], image.flat[fill] = image.flat[fill], phase
    return image


def counts(image: np.ndarray) -> dict:
    return dict(zip(*np.unique(image, return_counts=True)))


def taufactor(image: np.ndarray, axes=(0, 1)) -> list[float]:
    return [transport(image, 0, axis, conv_crit=1e-3).d_eff for axis in axes]


def test_a_broken_network_gets_its_d_eff_back_with_every_phase_count_kept():
    original = network()
    damaged = broken(original, 0.008)
    copy = damaged.copy()
    own, lost = taufactor(original), taufactor(damaged)
    assert all(d < 0.85 * o for d, o in zip(lost, own))  # links cut: D_eff 15 % or more lower
    result = run_to_end(polish_steps(damaged, micrograph_diffusivities(original)))
    np.testing.assert_array_equal(damaged, copy)  # the input is not modified
    assert counts(result.image) == counts(damaged)
    for got, wanted in zip(taufactor(result.image), own):
        assert got == pytest.approx(wanted, rel=0.07)  # within 5 % by its own solver
    assert 0 < result.record["changed_fraction"] <= POLISH_MAX_CHANGED
    assert metrics.e_s2(original, result.image) < metrics.e_s2(original, damaged)
    # the cut links are mended, not bypassed: the network is whole again (14 pieces, then 2)
    assert metrics.connectivity(result.image, 0).n_clusters <= 3


def test_a_lower_target_is_reached_by_narrowing_the_network():
    original = network()
    own = micrograph_diffusivities(original)
    lower = {key: 0.7 * value for key, value in own.items()}  # 43 % above the targets
    result = run_to_end(polish_steps(original, lower))
    assert counts(result.image) == counts(original)
    for (axis, got), wanted in zip(enumerate(taufactor(result.image)), lower.values()):
        assert got == pytest.approx(wanted, rel=0.10), axis  # cutting one link is a big step
    assert metrics.connectivity(result.image, 0).spans == (True, True)


def test_stop_ends_after_the_current_round_with_a_valid_image():
    damaged = broken(network(), 0.008)
    steps = polish_steps(damaged, micrograph_diffusivities(network()))
    first = next(steps)
    assert first.round == 1 and "D_eff" in first.describe()
    with pytest.raises(StopIteration) as finished:
        steps.send(STOP)
    result = finished.value.value
    assert result.record["stopped"] and result.record["rounds"] == 1
    assert counts(result.image) == counts(damaged)


def test_a_target_on_a_phase_the_image_lacks_is_refused():
    with pytest.raises(InputError, match="phase 7"):
        run_to_end(polish_steps(network(), {(7, 0): 0.1}))


def test_a_volume_gets_its_3d_d_eff_back_along_three_axes():
    volume = synthetic.generate("gaussian_field", (32, 32, 32), seed=3, volume_fraction=0.35)
    phase = volume.max()
    field = lambda image: np.where(image == phase, 1.0, FLOOR)  # noqa: E731
    own = {(phase, axis): effective_diffusivity(field(volume), axis) for axis in range(3)}
    assert min(own.values()) > 0.02  # the phase spans every axis
    damaged = broken(volume, 0.03, phase)  # D_eff 12-46 % lower
    before = [
        effective_diffusivity(field(damaged), axis) / own[(phase, axis)] for axis in range(3)
    ]
    result = run_to_end(polish_steps(damaged, own))
    after = [effective_diffusivity(field(result.image), a) / own[(phase, a)] for a in range(3)]
    assert counts(result.image) == counts(damaged)
    assert result.record["max_changed"] == POLISH_MAX_CHANGED_3D
    assert result.record["changed_fraction"] <= POLISH_MAX_CHANGED_3D
    assert max(abs(r - 1) for r in after) < 0.5 * max(abs(r - 1) for r in before)
    assert max(abs(r - 1) for r in after) <= 0.08


def test_a_volume_connected_along_its_layering_keeps_the_slices_across_it():
    # a phase in flat layers normal to axis 0, 30 % of the voxels: little D_eff along axis 0
    volume = synthetic.anisotropic_field(
        (32, 32, 32),
        volume_fraction=0.3,
        correlation_length_z=1.0,
        correlation_length_y=4.0,
        correlation_length_x=4.0,
        seed=0,
    )
    phase = volume.max()
    own = effective_diffusivity(np.where(volume == phase, 1.0, FLOOR), 0)
    target = {(phase, 0): 1.3 * own}
    result = run_to_end(polish_steps(volume, target))
    d_eff = effective_diffusivity(np.where(result.image == phase, 1.0, FLOOR), 0)
    assert d_eff == pytest.approx(1.3 * own, rel=0.05)
    given = (result.image == phase) & (volume != phase)
    assert given.sum() > 0.003 * volume.size
    # the voxels given to the phase join it within the layers too: the slices normal to axis
    # 0 keep their two-point statistics (voxels joined along axis 0 alone: e_S2 0.015)
    assert compare_volume(volume, result.image)["e_s2_axis0"] < 0.01


@pytest.mark.weights
@pytest.mark.slow
def test_the_default_reconstruction_keeps_a_thin_network_d_eff():
    original = network()
    own = taufactor(original)
    plain = reconstruct(original, seed=0, device="cpu", keep_transport=False)
    result = reconstruct(original, seed=0, device="cpu")
    assert plain.provenance["transport_polish"] == []
    # without the polish the rounding thins the network (about -30 % along axis 0)
    assert min(d / o for d, o in zip(taufactor(plain.images[0]), own)) < 0.85
    for got, wanted in zip(taufactor(result.images[0]), own):
        assert got == pytest.approx(wanted, rel=0.10)
    record = result.provenance["transport_polish"][0]
    assert set(record["after"]) == {"phase 0 axis 0", "phase 0 axis 1"}
    assert counts(result.images[0]) == counts(plain.images[0])
    assert metrics.e_s2(original, result.images[0]) < metrics.floor(original)["e_s2"]
