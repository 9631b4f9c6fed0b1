"""The pruning-study dock widget in a real napari viewer (Xvfb), with the real weights, on the
64x64 alloy sample with a tiny budget. Studies are awaited through ``study_finished``, emitted on
the main thread once the worker has finished and the widget is ready again."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_microstructure import load_sample

pytestmark = [
    pytest.mark.gui,
    pytest.mark.weights,
]

TIMEOUT_MS = 300_000  # a bound for a loaded machine, not a measurement


@pytest.fixture
def widget(make_napari_viewer):
    from napari_microstructure.widgets import PruningWidget

    viewer = make_napari_viewer()
    viewer.add_labels(
        load_sample("alloy_64"), name="alloy", scale=(2.0, 2.0), translate=(5.0, 0.0)
    )
    widget = PruningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Pruning study")
    for depth, box in widget.depth_checks.items():
        box.setChecked(depth <= 2)
    widget.samples_spin.setValue(1)
    widget.iterations_spin.setValue(3)
    widget.levels_spin.setValue(2)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    return widget


def test_study_fills_table_plot_and_layers(widget, qtbot, tmp_path):
    viewer = widget.viewer
    assert widget.selected_layers() == [viewer.layers["alloy"]]
    widget.subsets_edit.setText("pool2")
    with qtbot.waitSignal(widget.study_finished, timeout=TIMEOUT_MS):
        assert widget.run() is not None
        assert widget.run_button.text() == "Stop" and widget.run_button.isEnabled()
    profile = widget.profile
    assert profile is not None and not profile.partial
    assert [row["name"] for row in profile.rows] == ["pool1", "pool2", "only pool2"]
    # the docked table and plot
    assert {"Pruning table", "Pruning plot"} <= set(viewer.window.dock_widgets)
    assert widget.table.table.rowCount() == 3
    assert widget.table.frame["recommended"].sum() == 1
    axes = widget.plot.figure.axes
    assert axes and len(axes[0].lines) >= 2 and "alloy" in axes[0].get_title()
    assert widget.recommendation_label.text().startswith("Recommendation: ")
    # one layer per configuration, named after the input and the configuration, with its scale
    names = [layer.name for layer in widget.result_layers]
    assert names == ["alloy pool1", "alloy pool2", "alloy only pool2"]
    for layer in widget.result_layers:
        assert layer.data.shape == (64, 64)
        np.testing.assert_allclose(layer.scale, (2.0, 2.0))
        np.testing.assert_allclose(layer.translate, (5.0, 0.0))
        assert layer.metadata["pruning_study"]["source"] == "alloy"
    assert viewer.canvas.grid.enabled
    assert widget.run_button.isEnabled() and widget.progress.value() == 1000
    # the results layers are not offered as inputs
    assert [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())] == [
        "alloy"
    ]
    # Save profile and Save as CSV
    saved = json.loads(widget.save_profile(tmp_path / "profile.json").read_text())
    assert saved["material"] == "alloy" and len(saved["rows"]) == 3
    table = pd.read_csv(widget.table.save_csv(tmp_path / "table.csv"))
    assert (
        list(table["name"]) == ["pool1", "pool2", "only pool2"] and "gflop_per_iteration" in table
    )


def test_stop_keeps_the_finished_configurations(widget, qtbot):
    from qtpy.QtCore import Qt

    widget.iterations_spin.setValue(30)
    widget.levels_spin.setValue(1)

    def stop_when_pool1_is_done(message):
        if message.finished and message.configuration == "pool1":
            qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)  # the Run button stops
            assert widget.run_button.text() == "Stopping…" and not widget.run_button.isEnabled()

    with qtbot.waitSignal(widget.study_finished, timeout=TIMEOUT_MS):
        worker = widget.run()
        worker.yielded.connect(stop_when_pool1_is_done)
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()
    profile = widget.profile
    assert profile.partial and [row["name"] for row in profile.rows] == ["pool1"]
    assert [layer.name for layer in widget.result_layers] == ["alloy pool1"]
    assert widget.progress.format() == "stopped" and "1 of 2" in widget.status.text()


def test_bad_input_is_refused_with_a_message(widget, qtbot):
    widget.viewer.add_image(np.random.default_rng(0).random((64, 64)), name="grey")
    widget.select_layers(["grey"])
    with qtbot.waitSignal(widget.study_finished, timeout=TIMEOUT_MS):
        widget.run()
    assert widget.profile is None and "grey image" in widget.status.text()
    widget.select_layers([])
    assert widget.run() is None and "Choose the micrographs" in widget.status.text()
