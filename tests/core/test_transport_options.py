"""The transport term as the options, the command line and the widgets ask for it."""

import numpy as np
import pytest

from napari_microstructure import load_sample, reconstruct_steps, reconstruct_volume_steps
from napari_microstructure.cli import main
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.transport import (
    design_targets,
    micrograph_diffusivities,
    parse_targets,
)


@pytest.fixture(scope="module")
def alloy():
    return load_sample("alloy_64")


def test_a_factor_target_scales_the_micrographs_own_d_eff(alloy):
    own = micrograph_diffusivities(alloy)
    targets = design_targets(((0, "x", "0.5x"), (0, 0, 0.01)), alloy)
    assert targets == {(0, 1): pytest.approx(0.5 * own[(0, 1)]), (0, 0): 0.01}


@pytest.mark.parametrize(
    "target_deff, reason",
    [
        (((0, "x", 0.9),), "above the phase's fraction"),
        (((7, "x", 0.01),), "does not have"),
        (((0, "z", 0.01),), "Axis 'z' does not exist"),
        (((0, "x", "half"),), "a number or a factor"),
        (((0, "x"),), "(phase, axis, value)"),
    ],
)
def test_an_impossible_target_is_refused_when_the_run_is_asked_for(alloy, target_deff, reason):
    with pytest.raises(InputError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        reconstruct_steps(alloy, target_deff=target_deff, weights="random", device="cpu")


def test_targets_along_both_axes_beyond_the_2d_bound_are_refused():
    carbonate = load_sample("carbonate_256")  # the matrix: 86 % of the pixels, D_eff 0.57
    with pytest.raises(InputError, match="cannot be reached together"):
        reconstruct_steps(carbonate, target_deff=((0, "y", "1.5x"), (0, "x", "1.5x")))
    reconstruct_steps(
        carbonate, target_deff=((0, "y", "1.2x"), (0, "x", "1.2x")), weights="random"
    ).close()


def test_a_factor_of_a_phase_that_does_not_span_is_refused(alloy):
    blocked = np.zeros((64, 64), np.uint8)
    blocked[20:30, 20:30] = 1
    with pytest.raises(InputError, match="does not span"):
        reconstruct_steps(blocked, target_deff=((1, "x", "0.5x"),), device="cpu")


def test_volumes_take_3d_targets_on_the_whole_volume(alloy):
    steps = reconstruct_volume_steps(
        alloy, 32, target_deff=((0, "z", 0.05), (0, 1, 0.04)), weights="random", device="cpu"
    )
    steps.close()
    steps = reconstruct_volume_steps(alloy, 32, transport=True, weights="random", device="cpu")
    steps.close()


@pytest.mark.parametrize(
    "target_deff, reason",
    [
        (((0, "z", "0.5x"),), "not a factor"),
        (((0, 3, 0.01),), "out of range"),
        (((0, "z", 0.2),), "above the phase's fraction"),  # alloy_64's boundary phase: 14.6 %
        (((0, 0, 0.12), (0, 1, 0.12), (0, 2, 0.12)), "no 3D arrangement"),
        (((0, "z", "a lot"),), "a number; got"),
    ],
)
def test_impossible_3d_targets_are_refused_before_the_run(alloy, target_deff, reason):
    with pytest.raises(InputError, match=reason):
        reconstruct_volume_steps(alloy, 32, target_deff=target_deff, device="cpu")


def test_a_grey_micrograph_runs_without_the_term_but_refuses_targets():
    grey = np.random.default_rng(0).random((32, 32))
    with pytest.raises(InputError, match="not grey levels"):
        reconstruct_steps(grey, target_deff=((0, "x", 0.1),), device="cpu")
    reconstruct_steps(grey, transport=True, weights="random", device="cpu").close()


def test_targets_written_as_text():
    assert parse_targets("0 x 0.5x; 1 y 0.02;") == ((0, "x", "0.5x"), (1, "y", "0.02"))
    assert parse_targets("0 2 0.2") == ((0, 2, "0.2"),)
    assert parse_targets("  ") == ()
    with pytest.raises(InputError, match="PHASE AXIS VALUE"):
        parse_targets("0 x")


def test_the_command_line_refuses_an_impossible_target_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["reconstruct", "--target-deff", "0", "x", "0.9", "--out", str(out)])
    assert code == 2
    assert "above the phase's fraction" in capsys.readouterr().err
    assert not out.exists()


def test_the_command_line_refuses_an_impossible_3d_target_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    for axis, value, reason in (
        ("2", "0.9", "above the phase's fraction"),
        ("x", "0.5x", "factor"),
    ):
        code = main(
            ["reconstruct", "--3d", "16", "--target-deff", "0", axis, value, "--out", str(out)]
        )
        assert code == 2
        assert reason in capsys.readouterr().err
        assert not out.exists()
