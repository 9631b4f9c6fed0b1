"""Extra loss terms plugged into 2D and 3D reconstructions: prepared, called, weighed, recorded."""

import math

import numpy as np
import pytest

from napari_microstructure.core.decoder import reconstruct, reconstruct_steps
from napari_microstructure.core.descriptors import LossTerm
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.volume import reconstruct_volume, reconstruct_volume_steps

FAST_2D = {"iterations": 4, "levels": 2, "weights": "random", "device": "cpu", "transport": False}
FAST_3D = {
    **FAST_2D,
    "layers": ["conv1_1"],
    "optimizer": "adam",
    "iterations": 4,
    "two_point_weight": 0.0,  # the toy term alone
}


def blobs(shape=(24, 24), phases=2, seed=0):
    """A smooth random field cut into ``phases`` phases of roughly equal fractions."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2)
    edges = np.quantile(field, np.linspace(0, 1, phases + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


class PhaseOneUp:
    """A toy term: minus the mean probability of phase 1 (index 1), so it pushes phase 1 up."""

    name = "phase_one_up"

    def __init__(self, weight=1.0):
        self.weight = weight
        self.prepared = []  # (level, axis, micrograph shape) of each prepare
        self.called = []  # (level, axis, number of samples) of each call
        self.layers = set()  # the layers whose features the calls saw

    def prepare(self, context):
        self.prepared.append((context.level, context.axis, context.micrograph.shape))

    def __call__(self, context):
        self.layers |= set(context.features)
        probabilities = context.probabilities
        self.called.append((context.level, context.axis, len(probabilities)))
        return -probabilities[:, 1].mean(dim=(1, 2))


def test_the_toy_term_is_a_loss_term():
    assert isinstance(PhaseOneUp(), LossTerm)


def test_a_term_in_2d_is_prepared_per_level_called_per_evaluation_and_recorded():
    image = blobs()
    term = PhaseOneUp(weight=10.0)
    result = reconstruct(image, samples=2, terms=[term], **FAST_2D)
    assert term.prepared == [(0, None, (24, 24)), (1, None, (24, 24))]
    assert len(term.called) == result.provenance["evaluations"]
    assert set(term.called) == {(0, None, 2), (1, None, 2)}
    assert term.layers == {"conv1_1", "pool1", "pool2"}
    recorded = result.provenance["loss_terms"]
    assert [t["name"] for t in recorded] == ["gram", "phase_one_up"]
    assert [t["weight"] for t in recorded] == [1.0, 10.0]
    assert all(len(t["final"]) == 2 for t in recorded)
    # the total is the Gram loss plus the weighted term
    gram, extra = (np.array(t["final"]) for t in recorded)
    np.testing.assert_allclose(result.final_loss, gram + 10.0 * extra, rtol=1e-5, atol=1e-6)


def test_a_term_changes_the_2d_result_by_its_gradient_and_weight_0_changes_nothing():
    image = blobs()
    plain = reconstruct(image, **FAST_2D)
    idle = reconstruct(image, terms=[PhaseOneUp(weight=0)], **FAST_2D)
    pushed = reconstruct(image, terms=[PhaseOneUp(weight=10.0)], **FAST_2D)
    np.testing.assert_array_equal(idle.images, plain.images)
    assert np.any(pushed.images != plain.images)
    # phase 1's mean probability rose: the term's final value fell
    idle_final, pushed_final = (r.provenance["loss_terms"][1]["final"][0] for r in (idle, pushed))
    assert pushed_final < idle_final


def test_a_term_in_3d_is_prepared_per_level_and_axis_and_changes_the_volume():
    image = blobs((32, 32), phases=3)  # 32: room for a 16x16 coarse level
    term = PhaseOneUp(weight=10.0)
    options = {**FAST_3D, "slices_per_axis": 4}
    pushed = reconstruct_volume(image, 16, terms=[term], **options)
    plain = reconstruct_volume(image, 16, **options)
    assert term.prepared == [(level, axis, (32, 32)) for level in (0, 1) for axis in (0, 1, 2)]
    # Adam: one evaluation per step (2 per level), the sampled slices of an axis in one batch
    per_level = [(axis, 4) for _ in range(2) for axis in (0, 1, 2)]
    assert term.called == [(level, *call) for level in (0, 1) for call in per_level]
    assert term.layers == {"conv1_1"}
    assert np.any(pushed.volume != plain.volume)
    recorded = pushed.provenance["loss_terms"]
    assert [(t["name"], t["weight"], len(t["final"])) for t in recorded] == [
        ("gram", 1.0, 1),
        ("phase_one_up", 10.0, 1),
    ]
    assert -1.0 <= recorded[1]["final"][0] < 0.0


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, "1", True, None])
@pytest.mark.parametrize("steps", [reconstruct_steps, reconstruct_volume_steps])
def test_a_term_with_a_bad_weight_is_refused_before_work(steps, weight):
    term = PhaseOneUp(weight=weight)
    with pytest.raises(InputError, match="weight of loss term phase_one_up"):
        steps(blobs(), terms=[term], **FAST_3D)
    assert term.prepared == [] and term.called == []


class Nameless:
    weight = 1.0

    def prepare(self, context):
        pass

    def __call__(self, context):
        return None


def gram_again():
    term = PhaseOneUp()
    term.name = "gram"
    return term


@pytest.mark.parametrize(
    "terms, match",
    [
        ([Nameless()], "needs a name, a weight, prepare"),
        ([PhaseOneUp(), PhaseOneUp()], "its own name"),
        ([gram_again()], "its own name"),
        (PhaseOneUp(), "must be a list of loss terms"),
    ],
)
def test_terms_without_a_name_or_with_a_taken_name_are_refused(terms, match):
    with pytest.raises(InputError, match=match):
        reconstruct_steps(blobs(), terms=terms, **FAST_2D)


def test_a_term_that_returns_the_wrong_shape_is_named():
    class Scalar(PhaseOneUp):
        def __call__(self, context):
            return super().__call__(context).sum()

    with pytest.raises(ValueError, match="phase_one_up must return one loss per sample"):
        reconstruct(blobs(), samples=2, terms=[Scalar()], **FAST_2D)
