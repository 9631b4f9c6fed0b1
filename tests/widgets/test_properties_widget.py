"""The property-prediction dock widget in a real napari viewer (Xvfb), with the real weights.

Training sets are a few 48x48 generated microstructures, labelled by TauFactor or by a CSV table,
with 2-fold cross-validation, so the file takes well under a minute.
"""

from __future__ import annotations

import numpy as np
import pytest

TIMEOUT_MS = 300_000  # a bound for a loaded machine, not a measurement

pytest.importorskip("taufactor", reason="physics labels need TauFactor (pip install taufactor)")


def _structures(count: int, shape=(48, 48)) -> list[np.ndarray]:
    from napari_microstructure.core.synthetic import generate

    families = ("gaussian_field", "overlapping_discs", "anisotropic_field")
    fractions = np.linspace(0.3, 0.8, count)
    return [
        generate(families[i % 3], shape, seed=i, volume_fraction=float(f))
        for i, f in enumerate(fractions)
    ]


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    from napari_microstructure.widgets import PropertyWidget

    widget = PropertyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Property prediction")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.folds_spin.setValue(2)
    return widget


def _train(qtbot, widget):
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT_MS):
        worker = widget.train()
        assert worker is not None, widget.status.text()
    assert widget.worker is None


def _predict(qtbot, widget):
    with qtbot.waitSignal(widget.prediction_finished, timeout=TIMEOUT_MS):
        assert widget.predict() is not None
    assert widget.predict_worker is None


@pytest.mark.gui
def test_widget_is_contributed_to_the_plugins_menu(viewer) -> None:
    from napari_microstructure.widgets import PropertyWidget

    _dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-microstructure", "Property prediction"
    )
    assert isinstance(widget, PropertyWidget)
    assert (
        widget.mode_combo.currentText() == "frozen" and widget.depth_combo.currentText() == "pool2"
    )
    assert not widget.predict_button.isEnabled() and not widget.save_button.isEnabled()


@pytest.mark.weights
@pytest.mark.gui
def test_physics_labels_train_predict_on_2d_and_3d_layers_and_save_load(
    viewer, widget, qtbot, tmp_path
) -> None:
    from napari_microstructure.core.datasets import transport_labels
    from napari_microstructure.widgets._table import MARKED

    images = _structures(8)
    for i, image in enumerate(images):
        viewer.add_labels(image, name=f"s{i}")
    widget.source_combo.setCurrentText("layers, D_eff by TauFactor")
    assert widget.property_combo.currentText() == "D_eff_x"
    widget.select_layers([f"s{i}" for i in range(8)])
    _train(qtbot, widget)

    model = widget.model
    assert model is not None, widget.status.text()
    expected = [transport_labels(image, 1, ("x",))["D_eff_x"] for image in images]
    np.testing.assert_allclose(model.header["training"]["targets"], expected)
    assert "R²" in widget.plot.metrics.text() and "R²" in widget.status.text()
    assert (
        len(widget.plot.parity_figure.axes) == 1 and widget.plot.parity_figure.axes[0].collections
    )  # the points
    assert {"Property model", "Property predictions"} <= set(viewer.window.dock_widgets)

    # a 2D model refuses a 3D volume before any work, and says which model to train
    viewer.add_labels(np.stack([images[0]] * 24), name="volume")
    widget.select_layers(["s1", "volume"])
    assert widget.predict() is None
    assert "layer 'volume' is a 3D volume" in widget.status.text()
    assert "--size D H W" in widget.status.text()

    # predict 2D layers: values, intervals and range checks in the table and the metadata;
    # the constant layer's row is marked with the reason, data untouched
    constant = np.ones((48, 48), np.uint8)
    viewer.add_labels(constant, name="constant")
    widget.select_layers(["s1", "constant"])
    _predict(qtbot, widget)
    frame = widget.table.frame
    assert list(frame["layer"]) == ["s1", "constant"] and np.isfinite(frame["D_eff_x"]).all()
    assert (frame["D_eff_x"] >= 0).all() and (frame["low"] <= frame["D_eff_x"]).all()
    assert list(frame["out_of_range"]) == [False, True]
    assert frame["reason"].iloc[1].startswith("a constant image")
    recorded = viewer.layers["s1"].metadata["predictions"]["D_eff_x"]
    assert recorded["value"] == pytest.approx(frame["D_eff_x"].iloc[0])
    assert recorded["low"] <= recorded["value"] <= recorded["high"]
    assert recorded["coverage"] == 0.9 and recorded["out_of_range"] is False
    assert viewer.layers["constant"].metadata["predictions"]["D_eff_x"]["out_of_range"] is True
    np.testing.assert_array_equal(viewer.layers["constant"].data, np.ones((48, 48)))
    view = widget.table.table
    header = [view.horizontalHeaderItem(j).text() for j in range(view.columnCount())]
    flagged = view.item(1, header.index("D_eff_x"))
    assert flagged.background().color().name() == MARKED
    assert "a constant image" in flagged.toolTip()
    assert view.item(0, header.index("D_eff_x")).toolTip() == ""

    # save and load: the same predictions
    path = widget.save_model(tmp_path / "model.npz")
    assert path is not None and path.is_file()
    assert widget.save_model(tmp_path / "model.npz") is None  # never overwrites
    widget.model = None
    widget.load_model(path)
    _predict(qtbot, widget)
    np.testing.assert_allclose(widget.table.frame["D_eff_x"].iloc[2:], frame["D_eff_x"])


@pytest.mark.weights
@pytest.mark.gui
def test_csv_labels_are_matched_by_layer_name(viewer, widget, qtbot, tmp_path) -> None:
    images = _structures(6)
    names = [f"grain {i}" for i in range(6)]
    for name, image in zip(names, images):
        viewer.add_labels(image, name=name)
    labels = tmp_path / "labels.csv"
    values = [float((image == 1).mean()) for image in images]
    labels.write_text(
        "name,porosity\n"
        + "".join(f"{n},{v}\n" for n, v in zip(reversed(names), reversed(values)))
    )
    widget.table_edit.setText(str(labels))
    widget._read_columns()
    assert widget.property_combo.currentText() == "porosity"
    widget.select_layers(names)
    _train(qtbot, widget)
    assert widget.model is not None, widget.status.text()
    np.testing.assert_allclose(
        widget.model.header["training"]["targets"], values
    )  # in layer order


@pytest.mark.gui
def test_bad_choices_give_a_notification_and_start_nothing(
    viewer, widget, tmp_path, monkeypatch
) -> None:
    from napari_microstructure.widgets import _base, properties

    shown = []
    for module in (_base, properties):  # the run flow's refusals, and the widget's own
        monkeypatch.setattr(module, "show_error", shown.append)
    viewer.add_labels(_structures(1)[0], name="only")
    widget.select_layers(["only"])
    widget.table_edit.setText(str(tmp_path / "missing.csv"))
    widget.property_combo.setEditText("D_eff_x")
    assert widget.train() is None and widget.worker is None
    assert "at least 3" in shown[-1]
    widget.load_model(tmp_path / "missing.npz")
    assert "does not exist" in shown[-1] and widget.model is None


@pytest.mark.weights
@pytest.mark.gui
def test_dataset_built_from_crops_of_a_layer_trains_and_saves(
    viewer, widget, qtbot, tmp_path
) -> None:
    micrograph = _structures(1, shape=(96, 96))[0]
    viewer.add_labels(micrograph, name="micrograph")
    widget.source_combo.setCurrentText("crops of the layers, D_eff by TauFactor")
    widget.crops_spin.setValue(8)
    widget.crop_size_spin.setValue(48)
    widget.generated_spin.setValue(4)
    widget.select_layers(["micrograph"])
    _train(qtbot, widget)
    assert widget.model is not None, widget.status.text()
    assert widget.model.header["training"]["n_samples"] == 12
    assert widget.dataset is not None and all(
        image.shape == (48, 48) for image in widget.dataset.images
    )
    written = widget.save_dataset(tmp_path / "dataset")
    assert written is not None and written.name == "labels.csv"
    assert len(list((tmp_path / "dataset").glob("*.tif"))) == 12
    np.testing.assert_array_equal(viewer.layers["micrograph"].data, micrograph)


@pytest.mark.weights
@pytest.mark.gui
def test_a_dataset_folder_trains_with_its_own_phase_column(
    viewer, widget, qtbot, tmp_path
) -> None:
    from napari_microstructure.core.datasets import build_dataset, write_dataset

    dataset = build_dataset(
        generated=6, size=48, families=("gaussian_field", "overlapping_discs"), seed=3
    )
    write_dataset(dataset, tmp_path / "data")
    widget.source_combo.setCurrentText("dataset folder")
    widget.folder_edit.setText(str(tmp_path / "data"))
    widget._read_columns()
    assert widget.property_combo.findText("D_eff_x") >= 0, widget.status.text()
    widget.property_combo.setCurrentText("D_eff_x")
    widget.phase_spin.setValue(0)  # the folder's phase column (1) wins
    _train(qtbot, widget)
    assert widget.model is not None, widget.status.text()
    np.testing.assert_allclose(
        widget.model.header["training"]["targets"], dataset.table["D_eff_x"]
    )


def _run_main_job(qtbot, widget, start, signal):
    with qtbot.waitSignal(signal, timeout=TIMEOUT_MS):
        worker = start()
        assert worker is not None, widget.status.text()
    assert widget.worker is None


@pytest.mark.weights
@pytest.mark.gui
def test_validate_against_taufactor_then_adapt_to_a_layer(
    viewer, widget, qtbot, tmp_path, monkeypatch
) -> None:
    from napari_microstructure.core.datasets import transport_labels
    from napari_microstructure.core.synthetic import generate
    from napari_microstructure.widgets import _base

    shown = []
    monkeypatch.setattr(_base, "show_error", shown.append)
    images = _structures(8)
    for i, image in enumerate(images):
        viewer.add_labels(image, name=f"s{i}")
    widget.source_combo.setCurrentText("layers, D_eff by TauFactor")
    widget.select_layers([f"s{i}" for i in range(8)])
    assert widget.validate() is None and "No model yet" in shown[-1]
    _train(qtbot, widget)
    model = widget.model
    assert model is not None and widget.validate_button.isEnabled()

    # validate: TauFactor's values beside the predictions, the summary in the status line
    material = generate("gaussian_field", (96, 96), seed=42, volume_fraction=0.5)
    viewer.add_labels(material, name="material")
    viewer.add_labels(np.ones((48, 48), np.uint8), name="constant")
    widget.select_layers(["material", "constant"])
    _run_main_job(qtbot, widget, widget.validate, widget.validation_finished)
    rows = widget.validation_table.frame
    assert list(rows["layer"]) == ["material", "constant"]
    truth = transport_labels(material, 1, ("x",))["D_eff_x"]
    assert rows["D_eff_x"].iloc[0] == pytest.approx(truth, rel=1e-6)
    assert list(rows["out_of_range"]) == [False, True]
    assert "Property validation" in viewer.window.dock_widgets
    assert "relative MAE" in widget.status.text() and "1 out of range" in widget.status.text()
    assert widget.validation.summary["n"].iloc[-1] == 2

    # adapt: 4 crops of 48 px of the layer, each along x and y, added to the 8 layers
    widget.adapt_size_spin.setValue(200)  # larger than the layer: refused before any work
    widget.select_layers(["material"])
    assert widget.adapt() is None and "do not fit" in widget.status.text()
    widget.adapt_size_spin.setValue(48)
    widget.adapt_crops_spin.setValue(4)
    _run_main_job(qtbot, widget, widget.adapt, widget.adaptation_finished)
    adapted = widget.model
    assert adapted is not model, widget.status.text()
    assert adapted.header["training"]["n_samples"] == 8 + 8
    assert adapted.header["provenance"]["adapted"]["micrographs"] == {"material": [96, 96]}
    assert widget.status.text().startswith("Adapted to material: trained on 8 + 8 samples")
    np.testing.assert_array_equal(viewer.layers["material"].data, material)

    # a loaded model whose training set is not at hand: Adapt says where to point it
    path = widget.save_model(tmp_path / "model.npz")
    widget.load_model(path)
    assert widget.adapt() is None and "choose its dataset folder" in shown[-1]
