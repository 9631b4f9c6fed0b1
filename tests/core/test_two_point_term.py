"""The two-point term: the square of what e_S2 measures, its gradient, its place in a run, and
what it does to a volume's slices."""

import math

import numpy as np
import pytest
import torch

from napari_microstructure.core import metrics
from napari_microstructure.core.decoder import ReconstructionOptions, reconstruct_steps
from napari_microstructure.core.descriptors import (
    LossContext,
    TargetContext,
    TwoPointLoss,
    two_point_term,
)
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.phases import describe_image
from napari_microstructure.core.volume import (
    VolumeOptions,
    compare_volume,
    reconstruct_volume,
    reconstruct_volume_steps,
)


def three_phases(shape, seed):
    """A smooth random field cut into three phases (45 / 40 / 15 %), labels 0, 85, 170."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 3)
    labels = np.digitize(field, np.quantile(field, [0.45, 0.85]))
    return (labels * 85).astype(np.uint8)


def prepared(micrograph, factor=1):
    """A term prepared on ``micrograph`` at the level of ``factor``, and the micrograph's model."""
    model = describe_image(micrograph)
    term = TwoPointLoss()
    term.prepare(TargetContext(micrograph, model, (), None, 0, factor, None, "cpu"))
    return term, model


def context(probabilities, model, factor=1):
    return LossContext(probabilities, {}, model, 0, factor, None, True, "cpu")


def test_on_phase_images_the_term_is_the_sum_over_phases_of_e_s2_squared():
    micrograph, image = three_phases((96, 96), 0), three_phases((64, 64), 1)
    term, model = prepared(micrograph)
    one_hot = np.stack([image == label for label in model.labels])[None].astype(np.float32)
    value = term(context(torch.from_numpy(one_hot), model))
    expected = sum(e**2 for e in metrics.e_s2_by_phase(micrograph, image).values())
    assert value.shape == (1,)
    assert float(value[0]) == pytest.approx(expected, rel=1e-6)
    assert expected > 1e-4  # the two images differ, so the check is not one of zeros


def test_the_gradient_of_the_term_matches_finite_differences():
    term, model = prepared(three_phases((48, 48), 0))
    logits = torch.randn(
        2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )

    def loss(x):
        return term(context(torch.softmax(x, dim=1), model)).sum()

    assert torch.autograd.gradcheck(loss, (logits.requires_grad_(),), eps=1e-6, atol=1e-7)


def test_the_term_waits_for_the_finest_level_and_is_only_made_for_phases_with_a_weight():
    micrograph = three_phases((48, 48), 0)
    term, model = prepared(micrograph, factor=2)
    soft = torch.softmax(torch.randn(2, 3, 12, 12), dim=1)
    assert torch.equal(term(context(soft, model, factor=2)), torch.zeros(2))
    assert two_point_term(0.0, model) is None
    assert two_point_term(1.0, describe_image(np.linspace(0, 1, 48 * 48).reshape(48, 48))) is None
    assert isinstance(two_point_term(2.0, model), TwoPointLoss)
    assert ReconstructionOptions().two_point_weight == 0.0
    assert VolumeOptions().two_point_weight > 0


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, "1", True])
@pytest.mark.parametrize("steps", [reconstruct_steps, reconstruct_volume_steps])
def test_a_bad_two_point_weight_is_refused_before_work(steps, weight):
    with pytest.raises(InputError, match="weight of loss term two_point"):
        steps(three_phases((32, 32), 0), two_point_weight=weight, weights="random")


def test_a_volume_with_the_term_matches_the_micrographs_two_point_statistics_better(alloy_64):
    # measured at 24^3, 60 steps, seed 0, e_S2 per axis: 0.074 / 0.083 / 0.077 without the
    # term, 0.039 / 0.035 / 0.043 with it; e_LP 0.195 -> 0.142
    options = {"iterations": 60, "device": "cpu", "seed": 0}
    without = reconstruct_volume(alloy_64, 24, two_point_weight=0.0, **options)
    held = reconstruct_volume(alloy_64, 24, **options)
    assert "two_point" in [t["name"] for t in held.provenance["loss_terms"]]
    assert "two_point" not in [t["name"] for t in without.provenance["loss_terms"]]
    before, after = (compare_volume(alloy_64, r.volume) for r in (without, held))
    for axis in range(3):
        assert after[f"e_s2_axis{axis}"] < 0.75 * before[f"e_s2_axis{axis}"]
    assert after["e_lp"] < before["e_lp"]
