"""Reconstruction: exact phases, stopping, determinism, and refusal of bad input."""

import numpy as np
import pytest

from napari_microstructure.core import decoder as decoder_module
from napari_microstructure.core._optimize import score_array
from napari_microstructure.core.decoder import Progress, reconstruct, reconstruct_steps
from napari_microstructure.core.errors import DeviceError, InputError, MemoryBudgetError
from napari_microstructure.core.phases import (
    assign_phases,
    describe_image,
    drop_islands,
    match_histogram,
    target_counts,
)
from napari_microstructure.core.polish import PolishRound
from napari_microstructure.core.steps import STOP, run_to_end

FAST = {"iterations": 4, "levels": 1, "weights": "random", "device": "cpu"}


def blobs(shape=(32, 32), phases=2, seed=0):
    """A smooth random field cut into ``phases`` phases of roughly equal fractions."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2)
    edges = np.quantile(field, np.linspace(0, 1, phases + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


# --- phases -----------------------------------------------------------------------------------


def test_target_counts_sum_and_stay_within_one_pixel():
    counts = target_counts([0.1234, 0.5, 0.3766], 1001)
    assert counts.sum() == 1001
    assert np.all(np.abs(counts - np.array([0.1234, 0.5, 0.3766]) * 1001) < 1)


def test_assign_phases_gives_exact_counts_for_two_and_many_phases():
    rng = np.random.default_rng(1)
    model = describe_image(np.array([[3, 7], [7, 7]], np.uint8))
    labels = assign_phases(rng.random((40, 50)), model)
    assert set(np.unique(labels)) == {3, 7} and (labels == 3).sum() == 500
    image = blobs((40, 40), phases=5)
    model = describe_image(image)
    labels = assign_phases(rng.random((5, 30, 30)), model)
    np.testing.assert_array_equal(
        np.bincount(labels.ravel(), minlength=5), target_counts(model.fractions, 900)
    )


def test_assign_phases_respects_clear_probabilities():
    image = blobs((20, 20), phases=3)
    model = describe_image(image)
    one_hot = np.stack([(image == k).astype(float) for k in range(3)])
    np.testing.assert_array_equal(assign_phases(one_hot, model), image)


@pytest.mark.parametrize(
    ("phases", "favoured", "runner_up"),
    # each placed where ranking by the pixels' order would pick the runner-up
    [(2, slice(2, 6), slice(8, 12)), (3, slice(8, 12), slice(2, 6))],
)
def test_a_sharp_map_is_rounded_by_its_logits_not_by_the_pixels_order(phases, favoured, runner_up):
    """Where a run has sharpened, many probabilities round to 1 in single precision; the final
    assignment must still give the phase the pixels the optimizer favoured most."""
    torch = pytest.importorskip("torch")
    image = np.zeros((16, 16), np.uint8)
    image[:4] = 1  # the phase holds 4 of the 16 rows
    if phases == 3:
        image[-2:] = 2
    model = describe_image(image)
    logits = torch.full((1, model.n_channels, 16, 16), -30.0)
    channel = 0 if model.n_channels == 1 else 1
    logits[0, channel, runner_up] = 20.0  # probability 1 in single precision too
    logits[0, channel, favoured] = 40.0
    if phases == 3:
        logits[0, 2, -2:] = 40.0
    rounded = drop_islands(score_array(logits, model)[0], model, {})
    expected = np.zeros_like(image)
    expected[favoured] = 1
    if phases == 3:
        expected[-2:] = 2
    np.testing.assert_array_equal(rounded, expected)


def test_match_histogram_copies_grey_levels_and_keeps_order():
    rng = np.random.default_rng(2)
    reference = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    values = rng.random((16, 16))
    matched = match_histogram(values, reference)
    np.testing.assert_array_equal(np.sort(matched.ravel()), np.sort(reference.ravel()))
    assert matched.dtype == np.uint8
    assert np.all(np.diff(matched.ravel()[np.argsort(values.ravel())].astype(int)) >= 0)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((4, 32, 32)) + np.arange(4)[:, None, None], "2 dimensions are needed"),
        (np.ones((32, 32)), "constant"),
        (np.where(np.eye(32) > 0, np.nan, 1.0), "NaN or Inf"),
        (np.where(np.eye(32) > 0, np.inf, 1.0), "NaN or Inf"),
        (np.arange(32 * 32).reshape(32, 32) % 12, "at most 8"),
        (np.zeros((6, 6), np.uint8) + np.eye(6, dtype=np.uint8), "at least 8x8"),
        (np.array([["a", "b"], ["b", "a"]]), "must hold numbers"),
    ],
)
def test_bad_images_are_refused_with_a_clear_message(image, match):
    with pytest.raises(InputError, match=match):
        reconstruct_steps(image, **FAST)


def test_bad_options_are_refused_before_anything_runs():
    image = blobs()
    with pytest.raises(InputError, match="Unknown layer"):
        reconstruct_steps(image, layers=["conv9_9"], **FAST)
    with pytest.raises(InputError, match="at least 64x64"):
        reconstruct_steps(image, layers=["pool5"], **FAST)
    with pytest.raises(InputError, match="at least 8x8"):
        reconstruct_steps(image, size=(4, 64), **FAST)
    with pytest.raises(DeviceError, match="Unknown device"):
        reconstruct_steps(image, **{**FAST, "device": "tpu"})
    with pytest.raises(InputError, match="optimizer"):
        reconstruct_steps(image, optimizer="sgd", **FAST)


def test_levels_are_bounded_and_the_provenance_records_the_levels_used():
    with pytest.raises(InputError, match=f"from 1 to {decoder_module.MAX_LEVELS}"):
        reconstruct_steps(blobs(), **{**FAST, "levels": 10**6})
    # pool2 needs 8 pixels: a 32x32 micrograph has room for 32, 16 and 8 (3 of the 6 levels)
    result = reconstruct(blobs(), **{**FAST, "levels": 6, "iterations": 3})
    assert result.provenance["parameters"]["levels_requested"] == 6
    assert result.provenance["parameters"]["levels"] == 3
    assert len(result.provenance["timings"]["levels"]) == 3


def test_a_single_layer_may_be_named_by_a_string():
    result = reconstruct(blobs(), **{**FAST, "layers": "pool1", "iterations": 1})
    assert result.provenance["parameters"]["layers"] == ["pool1"]


def test_unavailable_cuda_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        reconstruct_steps(blobs(), **{**FAST, "device": "cuda"})


def test_output_larger_than_free_memory_is_refused_with_the_need(monkeypatch):
    monkeypatch.setattr(decoder_module, "free_memory_bytes", lambda device: 2**30)
    with pytest.raises(MemoryBudgetError, match=r"needs about \d+\.\d GiB .* 1\.0 GiB is free"):
        reconstruct_steps(blobs(), size=(4096, 4096), **FAST)


def test_input_is_never_modified():
    image = blobs()
    before = image.copy()
    reconstruct(image, **FAST)
    np.testing.assert_array_equal(image, before)


# --- plumbing (random weights) ------------------------------------------------------------------


def test_phase_fractions_are_exact_for_any_output_size():
    image = blobs((32, 32), phases=3)
    result = reconstruct(image, size=(40, 24), samples=2, **FAST)
    assert result.images.shape == (2, 40, 24) and result.images.dtype == image.dtype
    fractions = np.bincount(image.ravel()) / image.size
    for sample in result.images:
        counts = np.bincount(sample.ravel(), minlength=3)
        assert np.all(np.abs(counts - fractions * sample.size) < 1)


def test_grey_output_takes_the_input_histogram():
    image = (np.random.default_rng(3).random((32, 32)) * 1000).astype(np.float32)
    result = reconstruct(image, kind="grey", **FAST)
    np.testing.assert_array_equal(np.sort(result.images[0].ravel()), np.sort(image.ravel()))
    assert result.model.kind == "grey"


def test_same_seed_same_result_other_seed_other_result():
    image = blobs()
    first = reconstruct(image, seed=5, **FAST).images
    again = reconstruct(image, seed=5, **FAST).images
    other = reconstruct(image, seed=6, **FAST).images
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


def test_progress_messages_count_steps_and_carry_previews():
    steps = reconstruct_steps(
        blobs(), **{**FAST, "iterations": 6, "levels": 2}, preview_interval=0.0
    )
    messages = []
    result = run_to_end(steps, messages.append)
    # the optimizer's steps, then the rounds that restore D_eff after the rounding
    steps_done = [m for m in messages if isinstance(m, Progress)]
    rounds = messages[len(steps_done) :]
    assert all(isinstance(m, PolishRound) for m in rounds)
    assert len(rounds) == sum(r["rounds"] for r in result.provenance["transport_polish"])
    messages = steps_done
    assert [m.iteration for m in messages] == list(range(1, 7))
    assert {m.level for m in messages} == {0, 1} and messages[0].n_levels == 2
    assert messages[0].preview.shape == (16, 16) and messages[-1].preview.shape == (32, 32)
    assert len(result.loss_history) == 6 and not result.partial
    assert result.provenance["steps"] == 6


def test_stop_ends_within_one_step_and_keeps_a_partial_result():
    image = blobs()
    seen = []

    def stop_after_three(message):
        seen.append(message.iteration)
        return STOP if message.iteration == 3 else None

    result = reconstruct(image, callback=stop_after_three, **{**FAST, "iterations": 50})
    assert seen == [1, 2, 3]
    assert result.partial and result.provenance["partial"] and result.provenance["steps"] == 3
    assert (result.images[0] == 1).sum() == (image == 1).sum()


def test_closing_the_generator_abandons_the_run():
    steps = reconstruct_steps(blobs(), **{**FAST, "iterations": 50})
    next(steps)
    steps.close()
    with pytest.raises(StopIteration):
        next(steps)


def test_adam_and_periodic_options_run():
    result = reconstruct(blobs(), optimizer="adam", periodic=True, **FAST)
    assert result.provenance["parameters"]["optimizer"] == "adam"
    assert result.provenance["parameters"]["periodic"] is True


def test_provenance_records_what_made_the_result():
    result = reconstruct(blobs(), seed=11, **FAST)
    provenance = result.provenance
    assert provenance["seed"] == 11 and provenance["device"] == "cpu"
    assert provenance["weights"]["source"] == "random"
    assert provenance["parameters"]["layers"] == ["conv1_1", "pool1", "pool2"]
    assert provenance["timings"]["total_seconds"] > 0 and provenance["evaluations"] >= 4
    assert len(provenance["final_loss"]) == 1 and provenance["torch"]


# --- real weights ----------------------------------------------------------------------------


@pytest.mark.weights
def test_the_gram_loss_falls_with_the_real_weights(alloy_64):
    result = reconstruct(alloy_64, iterations=30, levels=1, device="cpu", transport=False)
    assert result.loss_history[-1] < 0.2 * result.loss_history[0]
