"""``napari-microstructure properties label|build|train|predict|validate|adapt``, end to end on tiny
datasets; a composite's conductivity from labels to predictions."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from napari_microstructure.cli import main

pytest.importorskip(
    "taufactor", reason="the physics labels need TauFactor (pip install taufactor)"
)


@pytest.mark.weights
def test_build_label_train_predict(tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        main(
            [
                "properties",
                "build",
                "--out",
                str(data),
                "--generated",
                "24",
                "--size",
                "40",
                "--seed",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(data / "labels.csv")
    assert len(table) == 24 and len(list(data.glob("*.tif"))) == 24

    assert (
        main(["properties", "label", str(data), "--out", str(tmp_path / "labels.csv"), "--quiet"])
        == 0
    )
    relabelled = pd.read_csv(tmp_path / "labels.csv")
    assert len(relabelled) == 24
    by_name = dict(zip(relabelled["file"].map(lambda f: f.split("/")[-1]), relabelled["D_eff_x"]))
    np.testing.assert_allclose([by_name[f] for f in table["file"]], table["D_eff_x"], rtol=1e-6)

    models = tmp_path / "models"
    code = main(
        [
            "properties",
            "train",
            str(data),
            "--column",
            "D_eff_x",
            "--folds",
            "3",
            "--out",
            str(models),
            "--quiet",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in models.iterdir()) == [
        "D_eff_x_frozen.npz",
        "D_eff_x_frozen_metrics.json",
        "D_eff_x_frozen_parity.png",
        "D_eff_x_frozen_predictions.csv",
    ]
    metrics = json.loads((models / "D_eff_x_frozen_metrics.json").read_text())
    assert (
        metrics["cross_validation"]["folds"] == 3 and metrics["weights"]["source"] == "normalized"
    )
    assert "cross-validated R2" in capsys.readouterr().out

    out = tmp_path / "predictions.csv"
    files = [str(data / f) for f in table["file"][:3]]
    assert (
        main(
            [
                "properties",
                "predict",
                str(models / "D_eff_x_frozen.npz"),
                *files,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    predicted = pd.read_csv(out)
    assert list(predicted.columns) == [
        "file",
        "D_eff_x_predicted",
        "low",
        "high",
        "coverage",
        "distance",
        "out_of_range",
        "reason",
    ]
    assert len(predicted) == 3
    assert (predicted["low"] <= predicted["D_eff_x_predicted"]).all()
    assert (predicted["coverage"] == 0.9).all()

    # nothing is overwritten without --overwrite
    assert (
        main(
            [
                "properties",
                "predict",
                str(models / "D_eff_x_frozen.npz"),
                *files,
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert (
        main(["properties", "train", str(data), "--folds", "3", "--out", str(models), "--quiet"])
        == 2
    )
    assert (
        main(
            [
                "properties",
                "build",
                "--out",
                str(data),
                "--generated",
                "2",
                "--size",
                "40",
                "--quiet",
            ]
        )
        == 2
    )
    assert "exists already" in capsys.readouterr().err


def test_bad_input_ends_with_a_message(tmp_path, capsys):
    (tmp_path / "model.npz").write_text("not a model")
    image = tmp_path / "image.npy"
    np.save(image, np.eye(40, dtype=np.uint8))
    assert (
        main(
            [
                "properties",
                "predict",
                str(tmp_path / "model.npz"),
                str(image),
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 2
    )
    assert "not a property model written by `properties train`" in capsys.readouterr().err
    assert (
        main(["properties", "label", str(tmp_path / "missing"), "--out", str(tmp_path / "l.csv")])
        == 2
    )
    assert main(["properties", "train", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "labels.csv does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# all or nothing


def _build(out, samples: int = 6, *options: str) -> int:
    """``properties build`` of ``samples`` generated 32x32 microstructures into ``out``."""
    argv = ["properties", "build", "--out", str(out), "--generated", str(samples), "--size", "32"]
    return main([*argv, "--quiet", *options])


def _train(data, models, *options: str) -> int:
    """``properties train`` on random weights (the numbers do not matter here)."""
    argv = ["properties", "train", str(data), "--weights", "random", "--out", str(models)]
    return main([*argv, "--quiet", *options])


def _interrupt_on_call(count: int, real):
    """A stand-in for ``real`` that raises KeyboardInterrupt (Ctrl-C) on call number ``count``."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return interrupted


def test_an_interrupted_build_leaves_nothing_in_its_folder(tmp_path, monkeypatch):
    from napari_microstructure.core import datasets

    monkeypatch.setattr(datasets, "generate", _interrupt_on_call(3, datasets.generate))
    out = tmp_path / "data"
    assert _build(out) == 130
    # not even the label cache of the two samples finished before the Ctrl-C
    assert not out.exists() or not any(out.iterdir())


def test_an_interrupted_build_keeps_what_an_explicit_cache_computed(tmp_path, monkeypatch):
    from napari_microstructure.core import datasets

    monkeypatch.setattr(datasets, "generate", _interrupt_on_call(3, datasets.generate))
    out, cache = tmp_path / "data", tmp_path / "cache"
    assert _build(out, 6, "--cache", str(cache)) == 130
    assert not out.exists() and len(datasets.LabelCache(cache)) == 2


def test_an_interrupt_while_the_dataset_is_written_leaves_nothing(tmp_path, monkeypatch):
    from napari_microstructure import io

    monkeypatch.setattr(io, "write_tif", _interrupt_on_call(3, io.write_tif))
    out = tmp_path / "data"
    assert _build(out) == 130
    assert not out.exists() or not any(out.iterdir())


def test_overwriting_a_dataset_with_fewer_samples_removes_the_earlier_extra_images(tmp_path):
    out = tmp_path / "data"
    assert _build(out, 6) == 0
    assert _build(out, 3, "--overwrite") == 0
    table = pd.read_csv(out / "labels.csv")
    assert sorted(p.name for p in out.glob("*.tif")) == sorted(table["file"]) and len(table) == 3
    assert json.loads((out / "provenance.json").read_text())["generated"] == 3


def test_training_without_cross_validation_removes_an_earlier_parity_plot(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    assert _build(data) == 0
    assert _train(data, models, "--folds", "2") == 0 and len(list(models.iterdir())) == 4
    assert _train(data, models, "--folds", "0") == 2  # the earlier plot would be left stale
    assert _train(data, models, "--folds", "0", "--overwrite") == 0
    written = sorted(p.name for p in models.iterdir())
    assert written == ["D_eff_x_frozen.npz", "D_eff_x_frozen_metrics.json"]


def test_a_model_whose_metrics_are_not_finite_is_never_written(tmp_path, monkeypatch, capsys):
    from napari_microstructure.core import properties

    data, models = tmp_path / "data", tmp_path / "models"
    assert _build(data) == 0
    real = properties.scores
    overflowed = {"r2": float("nan"), "rmse": float("inf")}
    monkeypatch.setattr(properties, "scores", lambda y, p: {**real(y, p), **overflowed})
    assert _train(data, models, "--folds", "2") == 2
    assert "no model was made" in capsys.readouterr().err and not models.exists()


# --------------------------------------------------------------------------------------------
# predictions outside the training data, devices


def test_predictions_outside_the_training_data_are_flagged(tmp_path, capsys):
    data, models = tmp_path / "data", tmp_path / "models"
    assert _build(data) == 0 and _train(data, models, "--folds", "0") == 0
    constant = tmp_path / "all_phase_1.npy"
    np.save(constant, np.ones((32, 32), np.uint8))
    inside = data / pd.read_csv(data / "labels.csv")["file"][0]
    out = tmp_path / "predictions.csv"
    model = str(models / "D_eff_x_frozen.npz")
    predict = ["properties", "predict", model, str(constant), str(inside)]
    assert main([*predict, "--out", str(out)]) == 0
    predicted = pd.read_csv(out, keep_default_na=False)
    assert list(predicted["out_of_range"]) == [True, False]
    assert predicted["reason"][0].startswith("a constant image") and predicted["reason"][1] == ""
    err = capsys.readouterr().err
    assert "warning: 1 image(s) lie outside what the model was trained on" in err
    assert "all_phase_1.npy (a constant image" in err
    assert "note: the model has no intervals: it was trained without cross-validation" in err


def test_validate_scores_a_model_per_folder_against_taufactor(tmp_path, capsys):
    data, models = tmp_path / "data", tmp_path / "models"
    assert _build(data, 8) == 0 and _train(data, models, "--folds", "2") == 0
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed in ((first, "1"), (second, "2")):
        assert _build(folder, 3, "--no-labels", "--seed", seed) == 0
    out = tmp_path / "checks" / "validation.csv"
    model = str(models / "D_eff_x_frozen.npz")
    validate = ["properties", "validate", model, str(first), str(second), "--out", str(out)]
    assert main([*validate, "--quiet"]) == 0
    images = pd.read_csv(out)
    summary = pd.read_csv(tmp_path / "checks" / "validation_summary.csv")
    assert len(images) == 6 and set(images["folder"]) == {str(first), str(second)}
    for column in ("file", "D_eff_x", "predicted", "low", "high", "inside", "reason"):
        assert column in images.columns
    assert list(summary["folder"]) == [str(first), str(second), "all"]
    assert list(summary["n"]) == [3, 3, 6] and (summary["nominal_coverage"] == 0.9).all()
    labels = pd.read_csv(first / "labels.csv", nrows=0)
    assert "D_eff_x" not in labels.columns  # the truth came from TauFactor, here
    printed = capsys.readouterr().out
    assert "all images: n 6" in printed and "relative MAE" in printed
    assert main([*validate, "--quiet"]) == 2  # never overwrites without --overwrite
    volume = tmp_path / "volume.npy"
    np.save(volume, np.ones((16, 32, 32), np.uint8))
    assert (
        main(["properties", "validate", model, str(volume), "--out", str(tmp_path / "v.csv")]) == 2
    )
    assert "trained on 2D images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, arguments",
    [
        ("label", ["x.npy"]),
        ("build", ["--out", "d"]),
        ("train", ["d"]),
        ("predict", ["m.npz", "x.npy"]),
    ],
)
def test_the_property_commands_use_the_best_device_by_default(task, arguments):
    from napari_microstructure import DatasetOptions, TrainOptions
    from napari_microstructure.cli import build_parser
    from napari_microstructure.cli._common import options_from

    args = build_parser().parse_args(["properties", task, *arguments])
    options = DatasetOptions if task in ("label", "build") else TrainOptions
    assert options_from(args, options).device == "auto"


def test_adapt_adds_labelled_crops_of_a_micrograph_to_the_training_set(tmp_path, capsys):
    from napari_microstructure import load_sample

    data, models = tmp_path / "data", tmp_path / "models"
    assert _build(data, 8) == 0 and _train(data, models, "--folds", "2") == 0
    micrograph = tmp_path / "alloy.npy"
    np.save(micrograph, load_sample("alloy_64"))
    model = models / "D_eff_x_frozen.npz"
    out = tmp_path / "adapted.npz"
    adapt = ["properties", "adapt", str(model), str(micrograph), "--out", str(out)]
    options = ["--crops", "4", "--size", "32", "--phase", "0", "--quiet"]
    assert main([*adapt, *options]) == 0
    assert "adapted on 8 + 8 samples" in capsys.readouterr().out  # 4 crops, along x and y
    from napari_microstructure.core.properties import load_model

    adapted = load_model(out)
    training = adapted.header["training"]
    assert training["n_samples"] == 16
    assert training["names"][-2:] == ["alloy_crop_003.tif along y", "alloy_crop_003.tif"]
    # the alloy's crops are held out together in cross-validation, the others one by one
    assert training["groups"][8:] == ["micrograph alloy"] * 8
    assert len(set(training["groups"][:8])) == 8
    assert adapted.header["provenance"]["dataset"] == str(data.resolve())
    assert adapted.header["preprocessing"]["phase"] is None  # 1 generated, 0 in the alloy
    assert adapted.header["provenance"]["adapted"]["micrographs"] == {"alloy": [64, 64]}
    assert adapted.header["weights"] == load_model(model).header["weights"]
    assert main([*adapt, *options]) == 2  # never overwrites without --overwrite
    elsewhere = tmp_path / "moved.npz"
    shutil.copy(model, elsewhere)
    (data / "labels.csv").rename(data / "moved.csv")
    assert (
        main(
            ["properties", "adapt", str(elsewhere), str(micrograph), "--out", str(tmp_path / "b")]
        )
        == 2
    )
    assert "labels.csv does not exist" in capsys.readouterr().err


def test_a_composite_s_conductivity_is_labelled_trained_and_predicted(tmp_path, capsys):
    from napari_microstructure.core.physics import effective_conductivity
    from napari_microstructure.core.synthetic import three_phase

    folder = tmp_path / "composites"
    folder.mkdir()
    for seed in range(12):
        matrix = 0.35 + 0.03 * seed
        np.save(
            folder / f"c{seed:02d}.npy", three_phase((48, 48), matrix_fraction=matrix, seed=seed)
        )
    conductivities = ["--conductivity", "0", "0", "--conductivity", "1", "1.0"]
    conductivities += ["--conductivity", "2", "5.0"]
    labels = tmp_path / "labels.csv"
    label = ["properties", "label", str(folder), "--out", str(labels), "--quiet"]
    assert main([*label, "--axes", "x", "y", *conductivities]) == 0
    table = pd.read_csv(labels)
    first = np.load(folder / "c00.npy")
    expected = effective_conductivity(first, {0: 0, 1: 1.0, 2: 5.0}, axis=1).sigma_eff
    assert table["sigma_eff_x"].iloc[0] == pytest.approx(expected, rel=1e-6)
    assert (table["sigma_eff_y"] >= 0).all() and table["sigma_eff_x"].max() <= 5.0
    models = tmp_path / "models"
    train = ["--labels", str(labels), "--column", "sigma_eff_x", "--phase", "1", "--folds", "3"]
    assert _train(folder, models, *train) == 0
    out = tmp_path / "predictions.csv"
    model = next(models.glob("*.npz"))
    assert (
        main(["properties", "predict", str(model), str(folder / "c05.npy"), "--out", str(out)])
        == 0
    )
    assert np.isfinite(pd.read_csv(out)["sigma_eff_x_predicted"]).all()
    # a label without a conductivity is refused before any work, and nothing is written
    capsys.readouterr()
    assert main([*label, "--out", str(tmp_path / "l2.csv"), *conductivities[:6]]) == 2
    assert "missing [2]" in capsys.readouterr().err and not (tmp_path / "l2.csv").exists()
