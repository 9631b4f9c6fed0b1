"""The reconstruction dock widget in a real napari viewer (Xvfb), with the real weights.

Runs use the 64x64 alloy sample and budgets of 10-20 steps, so the file takes well under two
minutes on two CPU cores. Every run is awaited through the widget's ``run_finished`` signal,
emitted on the main thread once the worker has finished and the widget is ready again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_microstructure import load_sample
from napari_microstructure.core.synthetic import grey_field

RUN_TIMEOUT_MS = 300_000  # a bound for a loaded machine, not a measurement
INPUT = "alloy"
DOCK_NAMES = {"Reconstruction results", "Reconstruction plots"}


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def _widget(viewer, iterations: int = 12):
    from napari_microstructure.widgets import ReconstructionWidget

    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Microstructure reconstruction")
    widget.iterations_spin.setValue(iterations)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.preview_spin.setValue(0.05)  # previews on nearly every step of these short runs
    return widget


@pytest.fixture
def alloy(viewer):
    return viewer.add_labels(
        load_sample("alloy_64"),
        name=INPUT,
        scale=(0.5, 0.25),
        translate=(3.0, -2.0),
        units=("um", "um"),
    )


def _run(qtbot, widget, timeout: int = RUN_TIMEOUT_MS):
    with qtbot.waitSignal(widget.run_finished, timeout=timeout):
        worker = widget.run()
        assert worker is not None, widget.status.text()
    assert widget.worker is None
    assert not worker.is_running
    return worker


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------


@pytest.mark.gui
def test_widget_is_contributed_to_the_plugins_menu(viewer) -> None:
    from napari_microstructure.widgets import ReconstructionWidget

    _dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-microstructure", "Microstructure reconstruction"
    )
    assert isinstance(widget, ReconstructionWidget)
    assert widget.device_combo.itemData(0) == "auto" and widget.device_combo.findData("cpu") >= 0
    assert widget.preset_combo.findText("Li et al. 2018 (five layers)") >= 0
    widget.preset_combo.setCurrentText("Li et al. 2018 (five layers)")
    assert widget.layers_edit.text() == "conv1_1, pool1, pool2, pool3, pool4"
    assert all(
        w.toolTip()
        for w in (
            widget.iterations_spin,
            widget.samples_spin,
            widget.seed_spin,
            widget.weights_combo,
        )
    )


@pytest.mark.gui
def test_detection_is_shown_and_a_3d_layer_offers_its_current_slice(viewer, qtbot) -> None:
    from napari_microstructure.widgets.reconstruction import capture_plane

    base = load_sample("alloy_64")
    volume = np.stack([base, 1 - base, base])
    layer = viewer.add_labels(volume, name="stack")
    widget = _widget(viewer)
    viewer.dims.set_current_step(0, 1)
    qtbot.waitUntil(lambda: "slice" in widget.input_info.text(), timeout=RUN_TIMEOUT_MS)
    assert "2 phases" in widget.input_info.text()
    plane, note = capture_plane(layer, viewer)
    np.testing.assert_array_equal(plane, 1 - base)
    assert "axis 0 = 1 of 3" in note
    widget.kind_combo.setCurrentIndex(widget.kind_combo.findData("grey"))
    qtbot.waitUntil(lambda: "grey levels" in widget.input_info.text(), timeout=RUN_TIMEOUT_MS)


@pytest.mark.weights
@pytest.mark.gui
def test_run_emits_layers_table_and_plot(viewer, alloy, qtbot, tmp_path) -> None:
    from napari.layers import Labels

    widget = _widget(viewer, iterations=12)
    widget.samples_spin.setValue(2)
    before = np.array(alloy.data, copy=True)
    _run(qtbot, widget)

    assert _names(viewer) == [INPUT, f"{INPUT} reconstruction 1", f"{INPUT} reconstruction 2"]
    for name in (f"{INPUT} reconstruction 1", f"{INPUT} reconstruction 2"):
        layer = viewer.layers[name]
        assert isinstance(layer, Labels) and layer.data.shape == (64, 64)
        provenance = layer.metadata["provenance"]
        assert provenance["steps"] == 12 and provenance["partial"] is False
        assert len(provenance["transport_polish"]) == 2  # D_eff restored in each sample
        assert (
            provenance["input_layer"] == INPUT and provenance["weights"]["source"] == "normalized"
        )
    # the table: the original, its floor and both reconstructions
    frame = widget.table.frame
    assert list(frame["name"]) == [
        "original",
        "floor (two quadrants of the original)",
        f"{INPUT} reconstruction 1",
        f"{INPUT} reconstruction 2",
    ]
    for column in ("e_VF", "e_S2", "e_LP", "clusters[0]", "clusters[1]", "run time (s)"):
        assert column in frame.columns
    assert frame["e_VF"].iloc[2:].max() < 1e-3
    assert widget.table.table.rowCount() == 4
    # the plot: curves of the original and both reconstructions, and 12 loss values
    assert len(widget.plot.ax_c.lines) == 3 and len(widget.plot.ax_lp.lines) == 3
    assert widget.plot._loss_line.get_xdata().size == 12
    assert set(viewer.window.dock_widgets) >= DOCK_NAMES
    # the input is unchanged
    np.testing.assert_array_equal(alloy.data, before)

    written = widget.save_report(tmp_path / "report")
    names = {p.name for p in written}
    assert {
        "results.csv",
        "autocovariance.png",
        "lineal_path.png",
        "loss.png",
        "provenance.json",
        "run1_input_alloy.tif",
        "run1_alloy_reconstruction_1.tif",
    } <= names
    assert (
        json.loads((tmp_path / "report" / "provenance.json").read_text())["runs"][0]["input_layer"]
        == INPUT
    )
    assert widget.save_report(tmp_path / "report") == []  # never overwrites


@pytest.mark.weights
@pytest.mark.gui
def test_labels_in_labels_out_with_the_same_phase_fractions_and_scale(
    viewer, alloy, qtbot
) -> None:
    from napari.layers import Labels

    widget = _widget(viewer, iterations=10)
    _run(qtbot, widget)
    out = viewer.layers[f"{INPUT} reconstruction 1"]
    assert isinstance(out, Labels)
    values, counts = np.unique(alloy.data, return_counts=True)
    out_values, out_counts = np.unique(out.data, return_counts=True)
    np.testing.assert_array_equal(out_values, values)
    np.testing.assert_array_equal(out_counts, counts)  # 64x64 in and out: exact counts
    np.testing.assert_allclose(out.scale, alloy.scale)
    np.testing.assert_allclose(out.translate, alloy.translate)
    assert tuple(str(u) for u in out.units) == tuple(str(u) for u in alloy.units)


@pytest.mark.weights
@pytest.mark.gui
def test_grey_image_in_image_out_and_input_unchanged(viewer, qtbot) -> None:
    from napari.layers import Image

    grey = grey_field((64, 64), seed=1)
    layer = viewer.add_image(grey, name="grey", scale=(2.0, 2.0))
    copy = grey.copy()
    widget = _widget(viewer, iterations=10)
    widget.input_combo.setCurrentIndex(widget.input_combo.findText("grey"))
    _run(qtbot, widget)
    out = viewer.layers["grey reconstruction 1"]
    assert isinstance(out, Image) and out.data.dtype == grey.dtype
    np.testing.assert_array_equal(np.sort(out.data.ravel()), np.sort(grey.ravel()))  # histogram
    np.testing.assert_allclose(out.scale, (2.0, 2.0))
    np.testing.assert_array_equal(layer.data, copy)
    assert "thresholded" in widget.plot.note.text()
    # the table compares grey levels as grey levels, with the command line's columns
    from napari_microstructure.report import run_table

    frame = widget.table.frame
    expected = run_table(
        grey,
        [out.data],
        ["grey reconstruction 1"],
        run=1,
        seconds=0.0,
        final_loss=[0.0],
        partial=False,
        kind="grey",
    )
    assert {"e_hist", "e_AC"} <= set(frame.columns) and "e_S2" not in frame.columns
    np.testing.assert_allclose(frame["e_AC"].to_numpy(float), expected["e_AC"].to_numpy(float))


@pytest.mark.weights
@pytest.mark.gui
def test_stop_mid_run_keeps_a_partial_result_and_the_widget_usable(viewer, alloy, qtbot) -> None:
    from qtpy.QtCore import Qt, QThreadPool

    widget = _widget(viewer, iterations=5000)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        worker = widget.run()
        assert widget.run_button.text() == "Stop"
        qtbot.waitUntil(
            lambda: widget._last_progress is not None and widget._last_progress.iteration >= 3,
            timeout=RUN_TIMEOUT_MS,
        )
        stopped_at = widget._last_progress.iteration
        qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)  # Stop
    assert widget.worker is None and not worker.is_running
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()
    name = f"{INPUT} reconstruction 1 (partial)"
    assert _names(viewer) == [INPUT, name]
    steps = viewer.layers[name].metadata["provenance"]["steps"]
    assert stopped_at <= steps <= stopped_at + 3  # ends within a step (a few were queued)
    assert viewer.layers[name].metadata["partial"] is True

    # stop again, discarding: nothing is added
    widget.keep_partial.setChecked(False)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        widget.run()
        qtbot.waitUntil(
            lambda: widget._last_progress is not None and widget._last_progress.iteration >= 2,
            timeout=RUN_TIMEOUT_MS,
        )
        widget.stop()
    assert _names(viewer) == [INPUT, name]
    qtbot.waitUntil(
        lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=RUN_TIMEOUT_MS
    )

    # and a full run still works
    widget.iterations_spin.setValue(10)
    _run(qtbot, widget)
    assert _names(viewer) == [
        INPUT,
        name,
        f"{INPUT} reconstruction 2",
    ]  # the discarded run took no number


@pytest.mark.weights
@pytest.mark.gui
def test_bad_input_gives_a_notification_and_no_layer(viewer, qtbot, errors) -> None:
    messages = errors
    viewer.add_image(np.full((64, 64), 7.0), name="constant")
    widget = _widget(viewer)
    assert widget.run() is None  # refused before any thread starts
    assert "constant" in messages[-1]
    qtbot.waitUntil(
        lambda: "constant" in widget.input_info.text(), timeout=RUN_TIMEOUT_MS
    )  # shown before Run too
    assert _names(viewer) == ["constant"] and widget.worker is None

    # an error raised by the core in the worker (an output too small for pool5) arrives the same way
    viewer.add_labels(load_sample("alloy_64"), name=INPUT)
    widget.input_combo.setCurrentIndex(widget.input_combo.findText(INPUT))
    widget.set_layers(names=["conv1_1", "pool5"])
    widget.height_spin.setValue(32)
    widget.width_spin.setValue(32)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        assert widget.run() is not None
    assert "pool5" in messages[-1] and len(messages) == 2
    assert _names(viewer) == ["constant", INPUT]
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()


@pytest.mark.weights
@pytest.mark.gui
def test_two_runs_in_a_row(viewer, alloy, qtbot) -> None:
    from qtpy.QtCore import QThreadPool

    widget = _widget(viewer, iterations=10)
    assert widget.keep_transport_check.isChecked()
    _run(qtbot, widget)
    widget.seed_spin.setValue(1)
    widget.keep_transport_check.setChecked(False)  # the second without restoring D_eff
    _run(qtbot, widget)
    assert _names(viewer) == [INPUT, f"{INPUT} reconstruction 1", f"{INPUT} reconstruction 2"]
    layers = [viewer.layers[f"{INPUT} reconstruction {i}"] for i in (1, 2)]
    first, second = (layer.data for layer in layers)
    assert not np.array_equal(first, second)  # another seed, another microstructure
    polished = [layer.metadata["provenance"]["transport_polish"] for layer in layers]
    assert len(polished[0]) == 1 and polished[1] == []
    assert list(widget.table.frame["run"].unique()) == [1, 2]
    assert len(widget.runs) == 2
    qtbot.waitUntil(
        lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=RUN_TIMEOUT_MS
    )


@pytest.mark.weights
@pytest.mark.gui
def test_screenshot_in_grid_mode_shows_original_and_reconstruction(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    from PIL import Image as PILImage

    viewer = make_napari_viewer(show=True)  # a hidden canvas does not render the grid
    viewer.add_labels(load_sample("alloy_64"), name=INPUT)
    widget = _widget(viewer, iterations=15)
    _run(qtbot, widget)
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (1, 2)  # side by side
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    path = tmp_path / "grid.png"
    PILImage.fromarray(shot).save(path)
    assert path.stat().st_size > 1000
    rgb = shot[..., :3].astype(float)
    assert rgb.std() > 10  # not a uniform picture
    width = rgb.shape[1]
    for half in (rgb[:, : width // 2], rgb[:, width // 2 :]):
        assert half.std() > 10  # each half shows a microstructure
        assert len(np.unique(half.reshape(-1, 3), axis=0)) >= 2


@pytest.mark.weights
@pytest.mark.gui
def test_3d_output_is_a_labels_volume_with_the_input_pixel_size_and_per_axis_statistics(
    viewer, alloy, qtbot
) -> None:
    from napari.layers import Labels

    widget = _widget(viewer)
    widget.iterations_spin.setValue(300)  # the 2D default
    widget.volume_check.setChecked(True)
    assert widget.optimizer_combo.currentText() == "adam" and widget.iterations_spin.value() == 600
    widget.iterations_spin.setValue(8)
    widget.levels_spin.setValue(1)
    widget.slices_spin.setValue(4)
    widget.height_spin.setValue(32)
    widget.width_spin.setValue(40)
    widget.depth_spin.setValue(36)
    before = np.array(alloy.data, copy=True)
    _run(qtbot, widget)

    assert _names(viewer) == [INPUT, f"{INPUT} reconstruction 1"]  # the 2D preview is gone
    out = viewer.layers[f"{INPUT} reconstruction 1"]
    assert isinstance(out, Labels) and out.data.shape == (36, 32, 40)
    # the input's pixel size on all three axes (depth takes the first axis's), and its units
    np.testing.assert_allclose(out.scale, (0.5, 0.5, 0.25))
    np.testing.assert_allclose(out.translate, (0.0, 3.0, -2.0))
    assert tuple(str(u) for u in out.units) == ("micrometer",) * 3
    # phase fractions of the micrograph, within one voxel
    fraction = (alloy.data == 0).mean()
    assert abs((out.data == 0).sum() - fraction * out.data.size) <= 1
    assert out.metadata["provenance"]["parameters"]["size"] == [36, 32, 40]
    # per-axis statistics in the table and the plot
    frame = widget.table.frame
    assert list(frame["name"]) == [
        "micrograph (2D)",
        "floor (two quadrants of the micrograph)",
        f"{INPUT} reconstruction 1",
    ]
    volume_row = frame.iloc[-1]
    for column in ("e_S2 ⊥z", "e_S2 ⊥y", "e_S2 ⊥x", "e_LP ⊥z", "e_LP ⊥y", "e_LP ⊥x"):
        assert 0.0 <= volume_row[column] <= volume_row[column.split()[0]]  # the worst axis
    assert set(volume_row["spans[1]"].split()) <= {"z", "y", "x"}
    labels = [line.get_label() for line in widget.plot.ax_c.lines]
    assert labels == [
        "original (micrograph)",
        *(f"{INPUT} reconstruction 1, slices ⊥{a}" for a in "zyx"),
    ]
    assert len(widget.plot.ax_lp.lines) == 4
    assert "3D" in widget.status.text()
    np.testing.assert_array_equal(alloy.data, before)
    # the viewer shows it in 3D, from an oblique angle: three faces of the volume, not a view
    # straight down one axis (napari's default, which shows a volume as a flat image)
    assert viewer.dims.ndisplay == 3
    view = np.abs(getattr(viewer, "scene", viewer).camera.view_direction)
    assert (view > 0.3).all(), view
    # back to 2D: the 2D defaults come back
    widget.volume_check.setChecked(False)
    assert widget.samples_spin.isEnabled() and not widget.depth_spin.isEnabled()
