"""The transport loss term: its targets, the refusal of impossible ones, its gradient, and a
thin network that a reconstruction with the term keeps whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microstructure import load_sample
from napari_microstructure.core import metrics
from napari_microstructure.core.decoder import reconstruct, reconstruct_steps
from napari_microstructure.core.descriptors import LossContext, LossTerm
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.phases import describe_image
from napari_microstructure.core.physics import transport
from napari_microstructure.core.transport import (
    TransportLoss,
    check_targets,
    micrograph_diffusivities,
    transport_term,
)


def test_the_term_is_a_loss_term():
    assert isinstance(TransportLoss(), LossTerm)


def test_default_targets_are_the_spanning_phases_d_eff_as_taufactor_gives_it():
    alloy = load_sample("alloy_256")
    targets = TransportLoss().check(alloy)
    # the boundary network (0) spans both axes; the grains (1) are separate clusters
    assert set(targets) == {(0, 0), (0, 1)}
    for (phase, axis), value in targets.items():
        assert value == pytest.approx(transport(alloy, phase, axis, conv_crit=1e-4).d_eff, 1e-2)
    assert micrograph_diffusivities(alloy) == targets


@pytest.mark.parametrize(
    ("targets", "reason"),
    [
        ({(0, 0): 0.5}, "above the phase's fraction"),
        ({(7, 0): 0.01}, "does not have"),
        ({(0, 2): 0.01}, "axes 0 and 1"),
        ({(0, 0): -0.1}, "above 0"),
        ({(0, 0): float("nan")}, "above 0"),
        ({0: 0.1}, "(phase, axis)"),
        ({}, "must map"),
    ],
)
def test_an_impossible_target_is_refused_with_the_reason(targets, reason):
    alloy = load_sample("alloy_256")  # boundary phase 0: 13.5 % of the pixels
    with pytest.raises(InputError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        TransportLoss(targets).check(alloy)


def test_an_impossible_target_stops_the_run_before_its_first_step():
    with pytest.raises(InputError, match="above the phase's fraction 0.1349"):
        reconstruct_steps(
            load_sample("alloy_256"),
            target_deff=((0, 1, 0.2),),
            iterations=2,
            weights="random",
            device="cpu",
        )


def test_a_lowering_design_acts_from_half_resolution_on_large_images_only():
    """Targets below the micrograph's own D_eff act at the level of half the output's side
    where it is 128 pixels or more (halving the carbonate's D_eff needs its grains to line up
    there); raising targets and the micrograph's own D_eff at the finest level only."""
    carbonate = load_sample("carbonate_256")
    model = describe_image(carbonate)
    design = transport_term(False, ((0, 0, "0.5x"),), 1.0, {None: carbonate}, model)
    raising = transport_term(False, ((0, 0, "1.2x"),), 1.0, {None: carbonate}, model)
    own = transport_term(True, (), 1.0, {None: carbonate}, model)

    def at(side, factor):
        scores = torch.zeros((1, 1, side, side))
        return LossContext(scores, {}, model, 0, factor, None, False, "cpu")

    assert design.active(at(256, 1)) and design.active(at(128, 2))
    assert not design.active(at(64, 4)) and not design.active(at(64, 2))
    for term in (raising, own):
        assert term.active(at(256, 1)) and not term.active(at(128, 2))


def test_a_grey_micrograph_has_no_transport_targets():
    grey = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    with pytest.raises(InputError, match="not grey levels"):
        TransportLoss().check(grey)


@pytest.mark.parametrize(
    ("temperature", "shape", "with_logits"),
    [
        (None, (12, 10), False),
        (0.5, (12, 10), False),
        (0.5, (12, 10), True),
        (0.5, (6, 5, 4), True),
    ],
)
def test_the_gradient_matches_finite_differences(temperature, shape, with_logits):
    # (6, 5, 4): the whole-volume term of a 3D reconstruction, targets along all three axes
    rng = np.random.default_rng(3)
    image = (rng.random(shape) < 0.6).astype(np.uint8)
    model = describe_image(image)
    given = {(1, 0): 0.3, (1, 1): 0.2, **({(1, 2): 0.25} if len(shape) == 3 else {})}
    term = TransportLoss(given, temperature=temperature, tolerance=1e-12, max_iterations=5000)
    term.targets[None] = check_targets(term.given, model, len(shape))
    logits = torch.tensor(rng.normal(0.5, 1.5, (1, 1, *shape)), requires_grad=True)

    def loss(values):
        context = LossContext(
            torch.sigmoid(values),
            {},
            model,
            0,
            1,
            None,
            False,
            "cpu",
            values if with_logits else None,
        )
        return term(context)[0]

    loss(logits).backward()
    margin = logits.detach()[0, 0]
    cut = torch.quantile(margin.flatten(), 1 - model.fractions[1])
    away = torch.argsort((margin - cut).abs().flatten(), descending=True)[:20]
    step = 1e-6
    for index in away:  # pixels away from the rounding's cut (which the gradient holds fixed)
        shifted = [logits.detach().clone() for _ in range(2)]
        shifted[0].view(-1)[index] += step
        shifted[1].view(-1)[index] -= step
        expected = (float(loss(shifted[0])) - float(loss(shifted[1]))) / (2 * step)
        assert float(logits.grad.view(-1)[index]) == pytest.approx(expected, rel=1e-4, abs=1e-8)


def test_a_sharp_map_keeps_its_conductivity_where_probabilities_round_to_one():
    """A run that has sharpened holds more pixels at probability 1 (single precision) than the
    phase's fraction; the rounding-aware map must still conduct along the pixels the rounding
    will keep (it gave them all 0.5, an eighth of the conductivity, when it read the
    probabilities)."""
    image = np.zeros((16, 16), np.uint8)
    image[:4] = 1  # a straight channel along axis 1: D_eff 0.25
    model = describe_image(image)
    term = TransportLoss({(1, 1): 0.25})
    term.targets[None] = check_targets(term.given, model, 2)
    logits = torch.full((1, 1, 16, 16), -30.0)
    logits[0, 0, 2:6] = 20.0  # probability 1 in single precision, the rounding drops them
    logits[0, 0, 8:12] = 40.0
    context = LossContext(torch.sigmoid(logits), {}, model, 0, 1, None, False, "cpu", logits)
    term(context)
    assert term.last_soft_d_eff()[(1, 1)][0] == pytest.approx(0.25, rel=0.01)


def test_a_tiling_reconstruction_is_solved_with_closed_sides_as_taufactor_measures():
    """A path that crosses the image only through the wrap of its sides conducts in a tiling,
    not in the image a user measures: the term of a periodic run must see no path."""
    from napari_microstructure.core.diffusion import effective_diffusivity

    image = np.zeros((16, 16), np.uint8)
    image[0, :9] = 1
    image[15, 8:] = 1  # joined to row 0 at column 8 only across the wrap
    field = np.where(image == 1, 1.0, 1e-4)
    assert effective_diffusivity(field, 1, periodic=True) > 0.03
    assert transport(image, 1, 1).d_eff == 0.0
    model = describe_image(image)
    term = TransportLoss({(1, 1): 0.05})
    term.targets[None] = check_targets(term.given, model, 2)
    logits = torch.where(torch.from_numpy(image == 1), 20.0, -30.0)[None, None]
    context = LossContext(torch.sigmoid(logits), {}, model, 0, 1, None, True, "cpu", logits)
    term(context)
    assert term.last_soft_d_eff()[(1, 1)][0] < 1e-3


def test_levels_coarser_than_max_factor_get_no_loss():
    image = load_sample("alloy_256")
    model = describe_image(image)
    term = TransportLoss()
    term.targets[None] = term.check(image, model)
    scores = torch.full((2, 1, 32, 32), 0.5)
    context = LossContext(scores, {}, model, 0, 8, None, False, "cpu")
    assert torch.equal(term(context), torch.zeros(2))
    assert term.provenance()["solves"] == 0


@pytest.mark.weights
@pytest.mark.slow
def test_a_thin_network_reconstructed_with_the_term_keeps_spanning_and_its_d_eff():
    # without the term, seeds 0 and 1: D_eff along axis 0 -28 % and -40 %
    network = load_sample("alloy_256")[:128, :128]  # the boundary network spans both axes
    assert metrics.connectivity(network, 0).spans == (True, True)
    result = reconstruct(network, seed=0, device="cpu", transport=True, keep_transport=False)
    image = result.images[0]
    assert metrics.connectivity(image, 0).spans == (True, True)
    stats = {t["name"]: t for t in result.provenance["loss_terms"]}["transport"]
    for axis in (0, 1):
        got = transport(image, 0, axis, conv_crit=1e-3).d_eff
        assert got == pytest.approx(stats["targets"]["None"][f"phase 0 axis {axis}"], rel=0.15)
    assert stats["solves"] > 0 and stats["skipped"] == 0
    assert metrics.e_s2(network, image) < metrics.floor(network)["e_s2"]
