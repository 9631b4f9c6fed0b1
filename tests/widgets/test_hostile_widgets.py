"""Hostile and careless input to each widget's Run, Train, Predict and Save (issue 10).

Every case must get exactly one clear notification (an error, or a warning where nothing was
wrong but nothing could be done), add no layer, leave the input layers' data unchanged and
leave no worker running. Runs use random weights: what is under test is the refusal, which
comes before any optimization. Each Save button writes all or nothing: a save that fails
(a folder that is a file, a file a layer was read from, an error half-way) leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

#: Generous for a loaded 2-core machine; a refusal comes within seconds.
TIMEOUT_MS = 120_000


def _labels(shape=(32, 32), phases: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, phases, size=shape).astype(np.uint8)
    image[..., :3] = 1  # phase 1 spans the image along x (for D_eff)
    return image


def _grey(shape=(32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def _with_nan(shape=(32, 32)) -> np.ndarray:
    image = _grey(shape)
    image[3, 4] = np.nan
    return image


@dataclass
class Case:
    """A hostile input: layers to add (name: (type, data, kwargs)), settings of the widget,
    and a word the notification must contain."""

    id: str
    expect: str
    layers: dict = field(default_factory=dict)
    settings: Callable | None = None


@pytest.fixture
def notifications():
    """Every error and warning notification napari receives during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    received: list = []

    def collect(notification) -> None:
        if notification.severity in (NotificationSeverity.ERROR, NotificationSeverity.WARNING):
            received.append(notification)

    notification_manager.notification_ready.connect(collect)
    yield received
    notification_manager.notification_ready.disconnect(collect)


def _add_layers(viewer, layers: dict) -> dict[str, np.ndarray]:
    copies = {}
    for name, (kind, data, kwargs) in layers.items():
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        add(data, name=name, **kwargs)
        copies[name] = np.array(data, copy=True)
    return copies


def _refused_once(qtbot, widget, start: Callable, finished, notifications, expect: str) -> None:
    """Start the job; if a worker started, wait for the widget's end of job; then the
    notifications must be exactly one, saying ``expect``, and no worker may be left."""
    ended: list[bool] = []
    finished.connect(lambda: ended.append(True))
    worker = start()
    if worker is not None:
        qtbot.waitUntil(lambda: len(ended) > 0, timeout=TIMEOUT_MS)
    assert len(notifications) == 1, [str(n.message) for n in notifications]
    message = str(notifications[0].message)
    assert expect.lower() in message.lower(), message
    assert not widget.runner.running
    qtbot.waitUntil(lambda: widget.runner.pool.activeThreadCount() == 0, timeout=TIMEOUT_MS)


def _check_untouched(viewer, copies: dict) -> None:
    assert [layer.name for layer in viewer.layers] == list(copies)  # no layer added
    for name, data in copies.items():
        np.testing.assert_array_equal(np.asarray(viewer.layers[name].data), data)


# ------------------------------------------------------------------------------------------
# the reconstruction widget's Run
# ------------------------------------------------------------------------------------------


def _size(height: int, width: int):
    def settings(widget) -> None:
        widget.height_spin.setValue(height)
        widget.width_spin.setValue(width)

    return settings


def _layers_named(text: str):
    return lambda widget: widget.set_layers(names=[text])


def _weights(text: str):
    return lambda widget: widget.weights_combo.setCurrentText(text)


def _volume(depth: int):
    def settings(widget) -> None:
        widget.volume_check.setChecked(True)
        widget.depth_spin.setValue(depth)

    return settings


RECONSTRUCTION_CASES = [
    Case("no input layer", "Choose an input"),
    Case("a single-row (1D) layer", "at least", {"row": ("image", _grey((1, 64)), {})}),
    Case(
        "an RGB layer of one colour",
        "constant",
        {"rgb": ("image", np.full((32, 32, 3), 120, np.uint8), {"rgb": True})},
    ),
    Case("a layer with NaN", "NaN", {"nan": ("image", _with_nan(), {})}),
    Case("a constant layer", "constant", {"flat": ("labels", np.ones((32, 32), np.uint8), {})}),
    Case("twelve phases", "phases", {"many": ("labels", _labels(phases=12), {})}),
    Case(
        "an image too small for the layers",
        "pool5",
        {"small": ("labels", _labels((32, 32)), {})},
        _layers_named("conv1_1, pool5"),
    ),
    Case(
        "an unknown layer name", "pool9", {"m": ("labels", _labels(), {})}, _layers_named("pool9")
    ),
    Case(
        "a weights file that does not exist",
        "missing.pkl",
        {"m": ("labels", _labels(), {})},
        _weights("/nonexistent/missing.pkl"),
    ),
    Case(
        "an output height of 0 with a width",
        "height",
        {"m": ("labels", _labels(), {})},
        _size(0, 32),
    ),
    Case("a volume too thin", "at least 8", {"m": ("labels", _labels(), {})}, _volume(1)),
]


@pytest.mark.parametrize("case", RECONSTRUCTION_CASES, ids=lambda case: case.id)
def test_reconstruction_run_refuses_hostile_input(
    make_napari_viewer, qtbot, notifications, case: Case
) -> None:
    from napari_microstructure.widgets import ReconstructionWidget

    viewer = make_napari_viewer()
    copies = _add_layers(viewer, case.layers)
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Microstructure reconstruction")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.weights_combo.setCurrentText("random")
    widget.iterations_spin.setValue(3)
    widget.preview_spin.setValue(0)
    if case.settings is not None:
        case.settings(widget)
    _refused_once(qtbot, widget, widget.run, widget.run_finished, notifications, case.expect)
    _check_untouched(viewer, copies)
    assert widget.runs == [] and widget.run_button.text() == "Run"


# ------------------------------------------------------------------------------------------
# the pruning widget's Run
# ------------------------------------------------------------------------------------------


def _depths(*depths: int):
    def settings(widget) -> None:
        for depth, box in widget.depth_checks.items():
            box.setChecked(depth in depths)

    return settings


PRUNING_CASES = [
    Case("no layer", "Choose the micrographs"),
    Case("a single-row (1D) layer", "too small", {"row": ("labels", _labels((1, 64)), {})}),
    Case("a 4D layer", "4D", {"stack": ("labels", _labels((2, 2, 32, 32)), {})}),
    Case(
        "an RGB layer",
        "RGB",
        {"rgb": ("image", np.zeros((32, 32, 3), np.uint8) + [0, 120, 255], {"rgb": True})},
    ),
    Case("a layer with NaN", "NaN", {"nan": ("image", _with_nan(), {})}),
    Case("a constant layer", "constant", {"flat": ("labels", np.ones((32, 32), np.uint8), {})}),
    Case("a grey image", "grey", {"grey": ("image", _grey(), {})}),
    Case(
        "an image too small for the depth",
        "too small",
        {"small": ("labels", _labels((32, 32)), {})},
        _depths(5),
    ),
    Case("no configuration", "at least one depth", {"m": ("labels", _labels(), {})}, _depths()),
    Case(
        "a weights file that does not exist",
        "missing.pkl",
        {"m": ("labels", _labels(), {})},
        _weights("/nonexistent/missing.pkl"),
    ),
]


@pytest.mark.parametrize("case", PRUNING_CASES, ids=lambda case: case.id)
def test_pruning_run_refuses_hostile_input(
    make_napari_viewer, qtbot, notifications, case: Case
) -> None:
    from napari_microstructure.widgets import PruningWidget

    viewer = make_napari_viewer()
    copies = _add_layers(viewer, case.layers)
    widget = PruningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Pruning study")
    widget.select_layers(list(case.layers))
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.weights_combo.setCurrentText("random")
    widget.samples_spin.setValue(1)
    widget.iterations_spin.setValue(3)
    widget.levels_spin.setValue(1)
    _depths(1)(widget)
    if case.settings is not None:
        case.settings(widget)
    _refused_once(qtbot, widget, widget.run, widget.study_finished, notifications, case.expect)
    _check_untouched(viewer, copies)
    assert widget.profile is None and widget.result_layers == []


# ------------------------------------------------------------------------------------------
# the property widget's Train and Predict
# ------------------------------------------------------------------------------------------


def _source(text: str, **edits):
    def settings(widget) -> None:
        widget.source_combo.setCurrentText(text)
        for name, value in edits.items():
            getattr(widget, name).setText(value)
        widget._read_columns()

    return settings


PHYSICS = _source("layers, D_eff by TauFactor")
THREE = {f"s{i}": ("labels", _labels(seed=i), {}) for i in range(3)}
TRAINING_CASES = [
    Case("no layer", "at least 3", {}, PHYSICS),
    Case("two layers", "at least 3", {k: THREE[k] for k in ("s0", "s1")}, PHYSICS),
    Case("a layer with NaN", "NaN", {**THREE, "nan": ("image", _with_nan(), {})}, PHYSICS),
    Case(
        "a 4D layer",
        "3D volume",
        {**THREE, "stack": ("labels", _labels((2, 2, 32, 32)), {})},
        PHYSICS,
    ),
    Case(
        "an RGB layer",
        "RGB",
        {
            **THREE,
            "rgb": ("image", np.zeros((32, 32, 3), np.uint8) + [0, 120, 255], {"rgb": True}),
        },
        PHYSICS,
    ),
    Case(
        "a dataset folder that does not exist",
        "does not exist",
        {},
        _source("dataset folder", folder_edit="/nonexistent/dataset"),
    ),
    Case(
        "a label table that does not exist",
        "does not exist",
        THREE,
        _source("layers + CSV table", table_edit="/nonexistent/labels.csv"),
    ),
]


def _property_widget(viewer):
    from napari_microstructure.widgets import PropertyWidget

    widget = PropertyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Property prediction")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.weights_combo.setCurrentText("random")
    widget.folds_spin.setValue(2)
    return widget


@pytest.mark.parametrize("case", TRAINING_CASES, ids=lambda case: case.id)
def test_property_training_refuses_hostile_input(
    make_napari_viewer, qtbot, notifications, case: Case
) -> None:
    viewer = make_napari_viewer()
    copies = _add_layers(viewer, case.layers)
    widget = _property_widget(viewer)
    case.settings(widget)
    if widget.property_combo.currentText() == "":
        widget.property_combo.setEditText("D_eff_x")
    widget.select_layers(list(case.layers))
    _refused_once(
        qtbot, widget, widget.train, widget.training_finished, notifications, case.expect
    )
    _check_untouched(viewer, copies)
    assert widget.model is None


PREDICTION_CASES = [
    Case("no model", "No model"),
    Case("no layer selected", "Select the layers", {}),
    Case("a layer with NaN", "NaN", {"nan": ("image", _with_nan(), {})}),
    Case("a grey layer", "grey", {"grey": ("image", _grey(), {})}),
    Case(
        "an RGB layer",
        "RGB",
        {"rgb": ("image", np.zeros((32, 32, 3), np.uint8) + [0, 1, 1], {"rgb": True})},
    ),
]


def _tiny_model():
    """A frozen model of four 32x32 structures with random weights (plumbing only)."""
    from napari_microstructure.core.properties import train

    images = [_labels(seed=i) for i in range(4)]
    return train(
        images, [0.1, 0.2, 0.3, 0.4], property="D_eff_x", weights="random", folds=2, device="cpu"
    )


@pytest.mark.parametrize("case", PREDICTION_CASES, ids=lambda case: case.id)
def test_property_prediction_refuses_hostile_input(
    make_napari_viewer, qtbot, notifications, case: Case
) -> None:
    viewer = make_napari_viewer()
    copies = _add_layers(viewer, case.layers)
    widget = _property_widget(viewer)
    if case.id != "no model":
        widget.model = _tiny_model()
    widget.select_layers(list(case.layers))
    _refused_once(
        qtbot, widget, widget.predict, widget.prediction_finished, notifications, case.expect
    )
    _check_untouched(viewer, copies)
    assert widget.table.frame.empty


# ------------------------------------------------------------------------------------------
# an error that is not the user's: once, with its traceback, and the widget stays usable
# ------------------------------------------------------------------------------------------


def _broken(*args, **kwargs):
    raise RuntimeError("simulated failure inside torch")


@pytest.mark.parametrize(
    ("widget_name", "module", "function"),
    [
        ("reconstruction", "napari_microstructure.core.decoder", "reconstruct_steps"),
        ("pruning", "napari_microstructure.core.pruning", "prune_steps"),
        ("properties", "napari_microstructure.core.datasets", "transport_labels"),
    ],
)
def test_an_unexpected_error_is_reported_once_with_its_traceback(
    make_napari_viewer, qtbot, notifications, monkeypatch, widget_name, module, function
) -> None:
    """A RuntimeError in a napari generator worker used to end it without its ``finished``
    signal (napari takes it for a deleted worker): the widget stayed on "Stop" for good."""
    from napari.utils.notifications import ErrorNotification

    from napari_microstructure.widgets import PruningWidget, ReconstructionWidget

    monkeypatch.setattr(f"{module}.{function}", _broken)
    viewer = make_napari_viewer()
    copies = _add_layers(viewer, {f"s{i}": ("labels", _labels(seed=i), {}) for i in range(3)})
    if widget_name == "reconstruction":
        widget = ReconstructionWidget(viewer)
        start, finished, button = widget.run, widget.run_finished, widget.run_button
    elif widget_name == "pruning":
        widget = PruningWidget(viewer)
        _depths(1)(widget)
        start, finished, button = widget.run, widget.study_finished, widget.run_button
    else:
        widget = _property_widget(viewer)
        PHYSICS(widget)
        widget.select_layers(list(copies))
        start, finished, button = widget.train, widget.training_finished, widget.train_button
    viewer.window.add_dock_widget(widget, name=widget_name)
    widget.weights_combo.setCurrentText("random")
    _refused_once(qtbot, widget, start, finished, notifications, "simulated failure")
    assert isinstance(notifications[0], ErrorNotification)  # napari's traceback path
    assert notifications[0].exception.__traceback__ is not None
    assert "simulated failure" in widget.status.text()
    assert button.isEnabled() and button.text() in ("Run", "Train")
    _check_untouched(viewer, copies)


# ------------------------------------------------------------------------------------------
# Save buttons: all or nothing, never over an input
# ------------------------------------------------------------------------------------------


@pytest.fixture
def save_buttons(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Every Save button of the three widgets, with something to save, and a function that
    makes the next file dialog answer a path: ``(viewer, {name: (button, dialog)}, answer)``.
    The input layer is read from ``tmp_path / "micrograph.tif"``."""
    import pandas as pd
    from qtpy.QtWidgets import QFileDialog

    from napari_microstructure import io
    from napari_microstructure.core.datasets import build_dataset
    from napari_microstructure.core.pruning import PruningProfile
    from napari_microstructure.widgets import PruningWidget, ReconstructionWidget

    answer: dict[str, Path] = {}
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(answer["path"]), "")
    )
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(answer["path"])
    )

    io.write_tif(tmp_path / "micrograph.tif", _labels())
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "micrograph.tif"), layer_type="labels", name="micrograph")
    reconstruction = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(reconstruction, name="Microstructure reconstruction")
    reconstruction.device_combo.setCurrentIndex(reconstruction.device_combo.findData("cpu"))
    reconstruction.weights_combo.setCurrentText("random")
    reconstruction.iterations_spin.setValue(2)
    reconstruction.levels_spin.setValue(1)
    with qtbot.waitSignal(reconstruction.run_finished, timeout=TIMEOUT_MS):
        assert reconstruction.run() is not None
    assert reconstruction.runs, reconstruction.status.text()
    pruning = PruningWidget(viewer)
    viewer.window.add_dock_widget(pruning, name="Pruning study")
    pruning.profile = PruningProfile("m", [], [], {}, {}, [])
    pruning.table.set_frame(pd.DataFrame({"name": ["pool1"], "recommended": [True]}))
    pruning.save_button.setEnabled(True)
    properties = _property_widget(viewer)
    properties.model = _tiny_model()
    properties.dataset = build_dataset(generated=2, size=16, families=("gaussian_field",), seed=0)
    properties.table.set_frame(pd.DataFrame({"layer": ["micrograph"], "D_eff_x": [0.5]}))
    properties.save_button.setEnabled(True)
    properties.save_dataset_button.setEnabled(True)
    buttons = {
        "reconstruction report": (reconstruction.report_button, "folder"),
        "reconstruction table": (reconstruction.table.save_button, "file"),
        "pruning profile": (pruning.save_button, "file"),
        "pruning table": (pruning.table.save_button, "file"),
        "property model": (properties.save_button, "file"),
        "property dataset": (properties.save_dataset_button, "folder"),
        "property table": (properties.table.save_button, "file"),
    }
    for button, _ in buttons.values():
        assert button.isEnabled()

    def answer_with(path: Path) -> None:
        answer["path"] = path

    return viewer, buttons, answer_with


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_save_that_cannot_be_written_shows_an_error_and_writes_nothing(
    save_buttons, notifications, tmp_path
) -> None:
    _viewer, buttons, answer_with = save_buttons
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    before = _files(tmp_path)
    for what, (button, dialog) in buttons.items():
        notifications.clear()
        answer_with(blocker / "out" if dialog == "folder" else blocker / "out.csv")
        button.click()
        assert len(notifications) == 1, (what, notifications)
        severity, message = str(notifications[0].severity), str(notifications[0].message)
        assert severity == "error" and "is a file, not a folder" in message, (what, message)
        assert "nothing was written" in message, (what, message)
        assert _files(tmp_path) == before, what
        assert blocker.read_text() == "not a folder"


def test_no_save_replaces_the_file_a_layer_was_read_from(
    save_buttons, notifications, tmp_path
) -> None:
    viewer, buttons, answer_with = save_buttons
    source = tmp_path / "micrograph.tif"
    assert str(viewer.layers["micrograph"].source.path) == str(source)
    original = source.read_bytes()
    for what, (button, dialog) in buttons.items():
        if dialog == "folder" or what == "property model":  # these choose their own file names
            continue
        notifications.clear()
        answer_with(source)  # the file dialog has asked "replace?" and the user said yes
        button.click()
        assert len(notifications) == 1 and "an input" in str(notifications[0].message), (
            what,
            notifications,
        )
        assert source.read_bytes() == original, what


@pytest.mark.parametrize("what", ["reconstruction report", "property dataset"])
def test_a_save_that_fails_half_way_leaves_nothing(
    save_buttons, notifications, tmp_path, monkeypatch, what
) -> None:
    from napari_microstructure import io

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    _viewer, buttons, answer_with = save_buttons
    button, _ = buttons[what]
    monkeypatch.setattr(io, "write_json", full_disk)  # the provenance comes after the images
    target = tmp_path / "out"
    answer_with(target)
    button.click()
    assert len(notifications) == 1 and "No space left" in str(notifications[0].message), (
        notifications
    )
    assert not target.exists()  # neither the images written before the failure nor the folder
