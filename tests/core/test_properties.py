"""Structure-property models: physics labels, datasets, training, saving, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from napari_microstructure import report
from napari_microstructure.core import datasets, properties, synthetic
from napari_microstructure.core.datasets import (
    LabelCache,
    build_dataset,
    build_dataset_steps,
    transport_labels,
)
from napari_microstructure.core.diffusion import effective_diffusivity
from napari_microstructure.core.errors import InputError, MicrostructureError
from napari_microstructure.core.properties import load_model, train, train_steps
from napari_microstructure.core.steps import STOP
from napari_microstructure.core.weights import find_normalized_weights

taufactor = pytest.importorskip(
    "taufactor", reason="the physics labels need TauFactor (pip install taufactor)"
)


@pytest.fixture(scope="module")
def small_dataset():
    """60 generated 48x48 microstructures of the four families, labelled with D_eff along x."""
    return build_dataset(generated=60, size=48, seed=0)


@pytest.fixture(scope="module")
def frozen_model(small_dataset):
    if find_normalized_weights() is None:
        pytest.skip("the normalized VGG19 is not installed")
    return train(small_dataset.images, small_dataset.table["D_eff_x"], folds=5, seed=0)


def _solver_forbidden(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("TauFactor's solver was called")

    monkeypatch.setattr(taufactor, "Solver", refuse)


# --------------------------------------------------------------------------------------------
# physics labels


def test_a_blocked_phase_gets_zero_and_infinity_without_the_solver(monkeypatch):
    image = np.ones((32, 32), np.uint8)
    image[:, 15] = 0  # a wall across x: phase 1 connects the y faces, not the x faces
    _solver_forbidden(monkeypatch)
    row = transport_labels(image, phase=1, axes=("x",))
    assert row["D_eff_x"] == 0.0 and math.isinf(row["tau_x"]) and row["percolates_x"] is False
    assert row["volume_fraction"] == pytest.approx(31 / 32)


def test_an_open_straight_channel_has_tau_one():
    image = np.zeros((32, 32), np.uint8)
    image[10:20, :] = 1  # a straight channel along x
    row = transport_labels(image, phase=1, axes=("x", "y"))
    assert row["tau_x"] == pytest.approx(1.0, abs=0.02)
    assert row["D_eff_x"] == pytest.approx(10 / 32, rel=0.02)
    assert row["D_eff_y"] == 0.0 and math.isinf(row["tau_y"])


def test_labels_are_cached_in_memory_and_on_disk(tmp_path, monkeypatch):
    calls = []
    real = datasets.transport

    def counting(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "transport", counting)
    image = synthetic.generate("gaussian_field", (32, 32), seed=3, volume_fraction=0.6)
    cache = LabelCache(tmp_path)
    first = transport_labels(image, 1, ("x",), cache=cache)
    second = transport_labels(image, 1, ("x",), cache=cache)
    assert len(calls) == 1 and first == second
    reopened = transport_labels(image, 1, ("x",), cache=LabelCache(tmp_path))
    assert len(calls) == 1 and reopened == first
    transport_labels(image, 0, ("x",), cache=cache)  # another phase is another key
    assert len(calls) == 2 and len(LabelCache(tmp_path)) == 2


def test_3d_labels_name_the_axes_z_y_x():
    volume = np.zeros((16, 16, 16), np.uint8)
    volume[:, 4:8, :] = 1  # a slab open along z and x
    row = transport_labels(volume, 1, ("z", "y", "x"))
    assert (
        row["D_eff_y"] == 0.0
        and row["tau_z"] == pytest.approx(1.0, abs=0.02)
        and row["tau_x"] == pytest.approx(1.0, abs=0.02)
    )


def test_user_labels_are_read_by_name(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("file,modulus,note\na/one.tif,1.5,x\ntwo.tif,2.5,y\n")
    labels = datasets.read_labels(table)
    assert list(labels["stem"]) == ["one", "two"] and list(labels["modulus"]) == [1.5, 2.5]
    np.testing.assert_array_equal(
        datasets.labels_for(["two", "one.tif", "a/one.tif"], labels, "modulus"), [2.5, 1.5, 1.5]
    )
    with pytest.raises(InputError, match="no row for three"):
        datasets.labels_for(["three"], labels, "modulus")
    with pytest.raises(InputError, match="no column stiffness"):
        datasets.read_labels(table, ["stiffness"])
    with pytest.raises(InputError, match="not a number"):
        datasets.read_labels(table, ["note"])


# --------------------------------------------------------------------------------------------
# datasets


def test_the_builder_writes_tifs_and_a_table_and_can_be_stopped(tmp_path):
    steps = build_dataset_steps(
        generated=8,
        size=32,
        seed=1,
        micrographs={"grf": synthetic.generate("gaussian_field", (64, 64))},
        crops=2,
        cache=LabelCache(tmp_path / "cache"),
    )
    messages = [next(steps)]
    messages.append(steps.send(None))
    with pytest.raises(StopIteration) as stopped:
        steps.send("stop")
    partial = stopped.value.value
    assert (
        partial.partial
        and len(partial.images) == 2
        and messages[-1].done == 2
        and messages[-1].total == 10
    )

    dataset = build_dataset(
        generated=8,
        size=32,
        seed=1,
        micrographs={"grf": synthetic.generate("gaussian_field", (64, 64))},
        crops=2,
    )
    datasets.write_dataset(dataset, tmp_path / "set")
    table = pd.read_csv(tmp_path / "set" / "labels.csv")
    assert len(table) == 10 and set(table["family"]) == {*synthetic.FAMILIES, "grf"}
    assert {"file", "source", "phase", "seed", "volume_fraction", "D_eff_x", "tau_x"} <= set(
        table.columns
    )
    assert all((tmp_path / "set" / name).is_file() for name in table["file"])
    again = datasets.read_dataset(tmp_path / "set")
    np.testing.assert_array_equal(again.images[3], dataset.images[3])
    with pytest.raises(FileExistsError):
        datasets.write_dataset(dataset, tmp_path / "set")


def test_the_builder_checks_its_options_before_it_runs():
    with pytest.raises(InputError, match="Unknown family"):
        build_dataset_steps(generated=3, families=["foam"])
    with pytest.raises(InputError, match="Nothing to build"):
        build_dataset_steps()
    with pytest.raises(InputError, match="do not fit"):
        build_dataset_steps(micrographs={"m": np.eye(16, dtype=np.uint8)}, crops=1, size=32)


# --------------------------------------------------------------------------------------------
# models


@pytest.mark.weights
def test_true_labels_score_high_and_shuffled_labels_near_zero(small_dataset, frozen_model):
    assert frozen_model.metrics["r2"] > 0.85
    shuffled = np.random.default_rng(1).permutation(small_dataset.table["D_eff_x"].to_numpy())
    control = train(small_dataset.images, shuffled, folds=5, seed=0)
    assert control.metrics["r2"] <= 0.3


@pytest.mark.weights
def test_d_eff_is_learnt_per_spanning_fraction_and_stays_within_it(small_dataset, frozen_model):
    """A D_eff model learns D_eff over the fraction of the spanning clusters: every prediction
    lies from 0 to that fraction, so a solid phase never gets more than 1."""
    assert frozen_model.header["preprocessing"]["learns"] == "inverse_tortuosity"
    images = small_dataset.images
    spanning = np.array([properties._spanning(image == 1, 1).mean() for image in images])
    predicted = frozen_model.predict(images)
    assert np.all(predicted >= 0) and np.all(predicted <= spanning + 1e-12)
    assert 0.9 < frozen_model.predict(np.ones((48, 48), np.uint8))[0] <= 1.0


@pytest.mark.weights
def test_other_properties_are_learnt_as_they_are(small_dataset):
    fractions = small_dataset.table["volume_fraction"].to_numpy()
    model = train(small_dataset.images, fractions, property="porosity", folds=0, input="phase")
    assert model.header["preprocessing"]["learns"] == "property"
    assert np.abs(model.predict(small_dataset.images[:10]) - fractions[:10]).max() < 0.05
    with pytest.raises(InputError, match="Unknown learns"):
        train(small_dataset.images, fractions, learns="ratio")


@pytest.mark.weights
def test_a_saved_model_predicts_exactly_as_before(tmp_path, small_dataset, frozen_model):
    path = frozen_model.save(tmp_path / "model")
    assert path.suffix == ".npz"
    loaded = load_model(path)
    images = small_dataset.images[:6]
    np.testing.assert_array_equal(loaded.predict(images), frozen_model.predict(images))
    header = loaded.header
    assert header["weights"]["source"] == "normalized" and len(header["weights"]["sha256"]) == 64
    assert (
        header["layers"] == ["conv1_1", "pool1", "pool2"]
        and header["preprocessing"]["axis"] == "x"
    )
    assert (
        len(header["cross_validation"]["predictions"]) == 60
        and header["provenance"]["timings"]["total_seconds"] > 0
    )
    with pytest.raises(FileExistsError):
        frozen_model.save(path)


@pytest.mark.weights
def test_axes_and_volumes(small_dataset, frozen_model):
    image = small_dataset.images[0]
    assert frozen_model.predict(image, axis="y")[0] == pytest.approx(
        frozen_model.predict(image.T)[0], rel=1e-5
    )
    volume = np.stack([small_dataset.images[i] for i in range(48)])
    assert frozen_model.header["training"]["ndim"] == 2
    with pytest.raises(InputError, match="trained on 2D images"):
        frozen_model.predict(volume)


@pytest.mark.weights
def test_training_reports_progress_and_stops_after_a_fold(small_dataset):
    steps = train_steps(small_dataset.images, small_dataset.table["D_eff_x"], folds=3)
    stages = []
    try:
        message = next(steps)
        while True:
            stages.append(message.stage)
            message = steps.send("stop" if message.stage == "fold" else None)
    except StopIteration as finished:
        model = finished.value
    assert stages[0] == "features" and stages.count("fold") == 1 and stages[-1] == "fit"
    assert (
        model.header["provenance"]["partial"]
        and model.header["cross_validation"]["finished_folds"] == 1
    )
    assert model.predict(small_dataset.images[0]).shape == (1,)


def test_stop_while_computing_features_ends_after_one_batch_without_a_model(small_dataset):
    seen = []

    def stop_at_once(message):
        seen.append(message)
        return STOP

    labels = small_dataset.table["D_eff_x"]
    assert train(small_dataset.images, labels, weights="random", callback=stop_at_once) is None
    assert [m.stage for m in seen] == ["features"] and seen[0].done < seen[0].total


def test_stop_during_fine_tuning_keeps_the_best_epoch_so_far(small_dataset):
    images, labels = small_dataset.images[:16], small_dataset.table["D_eff_x"][:16]
    model = train(
        images,
        labels,
        mode="finetune",
        folds=0,
        epochs=5,
        weights="random",
        callback=lambda message: STOP if message.stage == "epoch" else None,
    )
    assert model.header["provenance"]["partial"]
    assert len(model.header["training"]["history"]) == 1


@pytest.mark.weights
def test_finetuning_and_the_random_control_train_the_same_way(tmp_path, small_dataset):
    images, labels = small_dataset.images[:16], small_dataset.table["D_eff_x"][:16]
    finetuned = train(images, labels, mode="finetune", folds=0, epochs=2, seed=0)
    assert len(finetuned.header["training"]["history"]) == 2
    loaded = load_model(finetuned.save(tmp_path / "finetuned.npz"))
    np.testing.assert_allclose(
        loaded.predict(images[:3]), finetuned.predict(images[:3]), rtol=1e-6
    )
    control = train(images, labels, weights="random", folds=0)
    assert control.header["weights"]["source"] == "random"


def test_coarse_solves_give_a_straight_channel_its_fraction_and_blocked_stripes_zero():
    channel = np.zeros((48, 48), bool)
    channel[10:23] = True  # 13 rows along x, not aligned with the blocks
    coarse = properties._coarse_settings("coarse_solve")
    np.testing.assert_allclose(properties._coarse_solves(channel, 1, coarse), 13 / 48, rtol=1e-3)
    np.testing.assert_array_equal(properties._coarse_solves(channel & False, 0, coarse), 0.0)
    volume = np.zeros((24, 26, 27), bool)  # sides that the blocks do not divide
    volume[:, 4:12, 5:17] = True
    solves = properties._coarse_solves(volume, 0, coarse)
    assert solves.shape == (len(properties.COARSE_BLOCKS),)
    assert np.all((solves > 0.1) & (solves < 0.25))  # 96 / 702 = 0.137 of the section


def test_coarse_solves_do_not_conduct_through_pixels_that_touch_only_at_corners():
    # a chain along x whose pixels touch only at corners: the fine grid carries nothing along it
    chain = np.zeros((16, 16), bool)
    chain[0, 0::2] = chain[1, 1::2] = True
    coarse = properties._coarse_settings("coarse_solve")
    assert np.all(properties._coarse_solves(chain, 1, coarse) < 1e-3)
    # in 3D the voxels of each block of 2 touch only along a body diagonal
    rods = np.zeros((8, 8, 8), bool)
    rods[0::2, 0::2, 0::2] = rods[1::2, 1::2, 1::2] = True
    assert np.all(properties._coarse_solves(rods, 0, coarse) < 1e-3)
    # a diagonal staircase of face neighbours still conducts
    stairs = np.zeros((16, 16), bool)
    for i in range(16):
        stairs[i, i] = True
        stairs[i, min(i + 1, 15)] = True
    assert np.all(properties._coarse_solves(stairs, 1, coarse) > 0.01)


def test_coarse_solves_see_a_neck_one_pixel_wide():
    # two wide channels joined by a neck of one pixel: the neck limits D_eff (0.18 for a phase
    # that covers 0.71), and the coarse copies keep it (averaged blocks of 2 gave 0.67)
    image = np.zeros((32, 32), bool)
    image[4:28, :15] = image[4:28, 17:] = True
    image[16, 15:17] = True
    fine = effective_diffusivity(np.where(image, 1.0, properties.COARSE_FLOOR), 1)
    solves = properties._coarse_solves(image, 1, properties._coarse_settings("coarse_solve"))
    assert fine < 0.3 * image.mean()
    np.testing.assert_allclose(solves, fine, rtol=0.25)


@pytest.mark.weights
def test_d_eff_models_fit_coarse_solves_first_and_other_models_do_not(
    tmp_path, small_dataset, frozen_model
):
    images, labels = small_dataset.images, small_dataset.table["D_eff_x"].to_numpy()
    prep = frozen_model.header["preprocessing"]
    assert prep["physics"] == "coarse_solve"
    assert prep["coarse"]["blocks"] == list(properties.COARSE_BLOCKS)
    assert frozen_model.arrays["physics_coef"].shape == (2 * len(properties.COARSE_BLOCKS) + 1,)
    trunk_only = train(images, labels, folds=5, seed=0, physics="none")
    assert "physics_coef" not in trunk_only.arrays
    assert frozen_model.metrics["mae"] < trunk_only.metrics["mae"]
    porosity = train(images[:20], labels[:20], property="porosity", folds=0)
    assert porosity.header["preprocessing"]["physics"] == "none"
    beside = train(images, labels, folds=0, physics="coarse_features")
    assert "physics_coef" not in beside.arrays
    assert beside.arrays["coef"].shape[0] == trunk_only.arrays["coef"].shape[0] + 4
    loaded = load_model(beside.save(tmp_path / "beside.npz"))
    np.testing.assert_array_equal(loaded.predict(images[:4]), beside.predict(images[:4]))
    with pytest.raises(InputError, match="mode frozen"):
        train_steps(images, labels, mode="finetune", physics="coarse_solve")
    with pytest.raises(InputError, match="Unknown physics"):
        train_steps(images, labels, physics="fem")
    # a file that lost the record of its coarse solves is refused when loaded
    path = frozen_model.save(tmp_path / "model.npz")
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    header = json.loads(str(arrays["header"]))
    del header["preprocessing"]["coarse"]
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(MicrostructureError, match="coarse solves"):
        load_model(tmp_path / "damaged.npz")


def test_grouped_folds_keep_each_group_whole_and_the_folds_even():
    groups = ["a"] * 7 + ["b"] * 3 + [f"single {i}" for i in range(10)]
    folds = properties._folds(len(groups), 4, 0, groups)
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))
    for label in set(groups):
        members = [i for i, g in enumerate(groups) if g == label]
        assert sum(set(members) <= set(fold.tolist()) for fold in folds) == 1
    assert sorted(len(fold) for fold in folds) == [4, 4, 5, 7]
    np.testing.assert_array_equal(  # without groups: the folds as they always were
        np.concatenate(properties._folds(20, 4, 0)),
        np.concatenate(
            [np.sort(p) for p in np.array_split(np.random.default_rng(0).permutation(20), 4)]
        ),
    )
    with pytest.raises(InputError, match="at least 5 groups"):
        train_steps([np.eye(40, dtype=np.uint8)] * 6, range(6), groups=[0, 0, 1, 1, 2, 2])
    with pytest.raises(InputError, match="one group each"):
        train_steps([np.eye(40, dtype=np.uint8)] * 6, range(6), groups=[0, 1])


def test_the_trunk_follows_the_depth():
    assert properties.trunk_layers() == ["conv1_1", "pool1", "pool2"]
    assert properties.trunk_layers("pool1") == ["conv1_1", "pool1"]
    with pytest.raises(InputError):
        properties.trunk_layers("pool9")


def test_parity_plot_is_a_figure():
    figure = report.plot_parity([0.0, 0.1, 0.2], [0.01, 0.12, 0.18], title="D_eff_x")
    assert type(figure).__name__ == "Figure" and figure.axes[0].get_title() == "D_eff_x"


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "images, labels, message",
    [
        ([np.zeros(40)] * 4, [0, 1, 2, 3], "2D image or a 3D volume"),
        ([np.full((40, 40), np.nan)] * 4, [0, 1, 2, 3], "NaN"),
        ([np.eye(8, dtype=np.uint8)] * 4, [0, 1, 2, 3], "too small"),
        ([np.eye(40, dtype=np.uint8)] * 4, [0, 1, 2], "4 images but 3 labels"),
        ([np.eye(40, dtype=np.uint8)] * 4, [0, 1, 2, np.inf], "finite"),
        ([np.eye(40, dtype=np.uint8)] * 4, [1, 1, 1, 1], "same value"),
    ],
)
def test_bad_training_input_is_refused_with_a_reason(images, labels, message):
    with pytest.raises(InputError, match=message):
        train_steps(images, labels, folds=0, weights="random")


def test_unknown_modes_and_inputs_are_refused():
    images = [np.eye(40, dtype=np.uint8)] * 4
    with pytest.raises(InputError, match="Unknown mode"):
        train_steps(images, [0, 1, 2, 3], mode="deep")
    with pytest.raises(InputError, match="Unknown input"):
        train_steps(images, [0, 1, 2, 3], input="edges")


def test_files_that_are_not_models_are_refused(tmp_path):
    not_a_model = tmp_path / "weights.npz"
    np.savez(not_a_model, a=np.zeros(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        header=np.array([{"format": "napari-microstructure property model"}], dtype=object),
    )
    text = tmp_path / "model.npz"
    text.write_text("hello")
    other = tmp_path / "other.npz"
    np.savez(other, header=np.array('{"format": "something else"}'))
    refused = (
        (not_a_model, "no header"),
        (pickled, "pickled Python objects"),
        (text, "not a numpy .npz"),
        (other, "not a property model"),
    )
    for path, message in refused:
        with pytest.raises(MicrostructureError, match=message):
            load_model(path)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------------
# reliability


@pytest.mark.weights
def test_constant_images_and_fractions_outside_the_training_range_are_flagged(
    small_dataset, frozen_model
):
    inside = small_dataset.images[0]
    all_phase_1 = np.ones((48, 48), np.uint8)  # TauFactor: D_eff 1; the model says about 0.3
    sparse = np.zeros((48, 48), np.uint8)
    sparse[:, :2] = 1  # a phase fraction of 0.04, below every training image's
    low, high = frozen_model.header["training"]["volume_fraction_range"]
    assert low <= (inside == 1).mean() <= high < 1.0 and low > 0.04
    check = frozen_model.out_of_range([all_phase_1, inside, sparse])
    np.testing.assert_array_equal(check.flags, [True, False, True])
    assert check.reasons[0] == "a constant image" and check.reasons[1] == ""
    assert check.reasons[2].startswith("phase fraction 0.0417 outside the training images'")


def test_the_folder_cache_can_wait_to_be_written_with_its_dataset(tmp_path):
    image = synthetic.generate("gaussian_field", (32, 32), seed=3, volume_fraction=0.6)
    held = LabelCache(tmp_path, write_through=False)
    row = transport_labels(image, 1, ("x",), cache=held)
    assert len(held) == 1 and not (tmp_path / datasets.CACHE_FILE).exists()
    held.save(tmp_path / datasets.CACHE_FILE)
    assert len(LabelCache(tmp_path)) == 1
    assert transport_labels(image, 1, ("x",), cache=LabelCache(tmp_path)) == row


def test_training_never_returns_a_model_with_non_finite_metrics(small_dataset, monkeypatch):
    real = properties.scores
    monkeypatch.setattr(properties, "scores", lambda y, p: {**real(y, p), "mae": float("nan")})
    with pytest.raises(InputError, match="no model was made"):
        train(
            small_dataset.images[:12],
            small_dataset.table["D_eff_x"][:12],
            folds=3,
            weights="random",
        )


def test_an_interrupted_save_keeps_the_earlier_model(tmp_path, small_dataset, monkeypatch):
    images, labels = small_dataset.images[:12], small_dataset.table["D_eff_x"][:12]
    model = train(images, labels, folds=0, weights="random")
    path = model.save(tmp_path / "model.npz")
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(path, overwrite=True)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.npz"]
