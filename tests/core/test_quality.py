"""Fidelity of the default reconstruction on the real micrographs, with the real weights.

Each reconstruction takes 15-30 s on two CPU cores. The bounds are the project's targets
(issue "Foundation"); the floors they compare with are in docs/method.md section 7.
"""

import numpy as np
import pytest

from napari_microstructure.core import metrics
from napari_microstructure.core.decoder import reconstruct

pytestmark = [
    pytest.mark.slow,
    pytest.mark.weights,
]


@pytest.fixture(scope="module")
def alloy_result(request):
    shared = request.getfixturevalue("alloy_256")
    return shared, reconstruct(shared, seed=0, device="cpu").images[0]


def test_alloy_default_matches_statistics_and_phase_fractions(alloy_result):
    original, image = alloy_result
    assert metrics.e_vf(original, image) <= 1 / 65536
    assert metrics.e_s2(original, image) <= 0.03
    assert metrics.e_lp(original, image) <= 0.08


def test_alloy_grain_boundaries_stay_one_spanning_network(alloy_result):
    original, image = alloy_result
    boundaries = metrics.connectivity(image, 0)
    assert boundaries.spans == (True, True)
    assert boundaries.largest_cluster_fraction >= 0.95
    grains, original_grains = metrics.connectivity(image, 1), metrics.connectivity(original, 1)
    assert 1 / 1.5 <= grains.clusters_per_area / original_grains.clusters_per_area <= 1.5


def test_carbonate_default_matches_statistics_and_phase_fractions(carbonate_256):
    image = reconstruct(carbonate_256, seed=0, device="cpu").images[0]
    assert metrics.e_vf(carbonate_256, image) <= 1 / 65536
    assert metrics.e_s2(carbonate_256, image) <= 0.03
    assert metrics.e_lp(carbonate_256, image) <= 0.08


def test_three_phase_image_keeps_every_fraction_and_its_statistics():
    from scipy import ndimage

    field = ndimage.gaussian_filter(
        np.random.default_rng(7).standard_normal((128, 128)), 3, mode="wrap"
    )
    three = np.digitize(field, np.quantile(field, [0.3, 0.75])).astype(np.uint8)  # 30/45/25 %
    image = reconstruct(three, seed=0, device="cpu").images[0]
    for phase in (0, 1, 2):
        assert abs(int((image == phase).sum()) - int((three == phase).sum())) <= 1
    assert metrics.e_s2(three, image) <= 0.05
