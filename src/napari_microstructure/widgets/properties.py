"""The property dock widget: train a structure-property model by transfer learning, predict with it.

Training data are image layers with labels from a CSV table (matched by layer name), image layers
labelled by physics (D_eff of a phase along an axis, TauFactor), a dataset built here from random
crops of the layers (and generated microstructures), labelled by physics, or a dataset folder (its
``labels.csv`` and the images it names). Train runs the core's
:func:`~napari_microstructure.core.properties.train_steps` generator in a napari thread worker
(:func:`training_job`, which also computes physics labels and reads folders, so that the main
thread only draws); Stop sends ``"stop"`` into it. The cross-validated parity plot, the loss
curve of fine-tuning and the metrics are docked. Predict runs the model on the selected layers
(of the model's dimension: a volume needs a 3D model) and writes the values, their intervals and
the range check (out of range, and why) into a docked table (Save as CSV; the rows out of range
marked) and into each layer's metadata under ``"predictions"``; layer data are never touched.
Validate labels the selected layers with TauFactor and compares the model's predictions with
them (:func:`~napari_microstructure.core.property_validation.validate_steps`: relative MAE, R²,
interval coverage and the out-of-range count, a docked table of the layers); Adapt re-fits the
model on its training set plus labelled crops of the selected layers
(:func:`~napari_microstructure.core.adaptation.adapt_steps`). Train, Validate and Adapt run one
at a time (the Train button stops them), Predict beside them, all in threads of the widget's
:class:`~napari_microstructure.widgets._worker.JobRunner`, which stops and waits for them when
the widget or the viewer closes. Save model, Save dataset and Save as CSV write all or
nothing, never over a file a layer was read from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core._validate import AXIS_NAMES
from ..core.adaptation import ADAPT_CROPS
from ..core.datasets import DatasetOptions
from ..core.errors import InputError, MicrostructureError
from ..core.properties import DEFAULT_DEPTH, TrainOptions, TrainProgress
from ..core.steps import STOP, describe, relay, timing
from ._base import JobWidget
from ._form import CROPS_PER_LAYER, MAX_LABEL, Form
from ._layers import layer_files
from ._table import ResultsTable
from ._worker import worker_settings

if TYPE_CHECKING:
    import napari

__all__ = [
    "AdaptationRequest",
    "PropertyPlot",
    "PropertyWidget",
    "TrainingRequest",
    "ValidationRequest",
    "adaptation_job",
    "flagged_cells",
    "training_job",
    "validation_job",
]

DOCK_PLOT = "Property model"
DOCK_TABLE = "Property predictions"
DOCK_VALIDATION = "Property validation"
#: Where the training labels come from.
SOURCE_TABLE, SOURCE_PHYSICS, SOURCE_BUILD, SOURCE_FOLDER = (
    "layers + CSV table",
    "layers, D_eff by TauFactor",
    "crops of the layers, D_eff by TauFactor",
    "dataset folder",
)
DEPTHS = ("pool1", "pool2", "pool3", "pool4", "pool5")
#: The weights a property model starts from: pretrained, or the untrained control.
TRAINING_WEIGHTS = ("normalized", "random")


# ------------------------------------------------------------------------------------------
# the request (main thread) and the jobs (worker thread): no Qt widgets here
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRequest:
    """Everything a training run needs, captured when Train is pressed."""

    images: tuple  # copies of the layers' data (empty for a folder)
    names: tuple
    targets: tuple | None  # None: physics labels, computed in the worker
    folder: str | None  # a dataset folder, read in the worker
    build: DatasetOptions | None  # a dataset made from the images, in the worker
    options: TrainOptions
    torch_threads: int = 0


@dataclass(frozen=True)
class ValidationRequest:
    """A validation, its inputs checked when Validate was pressed."""

    steps: Any  # the generator of core.property_validation.validate_steps
    names: tuple
    torch_threads: int = 0


@dataclass(frozen=True)
class AdaptationRequest:
    """An adaptation, its inputs checked when Adapt was pressed."""

    steps: Any  # the generator of core.adaptation.adapt_steps
    micrographs: tuple  # the layers' names
    training_data: Any  # the model's training set: a core.datasets.Dataset, or its folder
    torch_threads: int = 0


@dataclass
class TrainingResult:
    model: Any = None  # core.properties.PropertyModel, None when stopped before the fit
    stopped: str | None = None  # where a run stopped before training, for the status line
    targets: np.ndarray | None = None
    names: list = field(default_factory=list)
    dataset: Any = None  # core.datasets.Dataset built for this run
    training_data: Any = None  # core.datasets.Dataset: what the model was fitted on


def _layer_dataset(images, names, targets, options: TrainOptions):
    """The training data of layers as a :class:`~napari_microstructure.core.datasets.Dataset`
    (what Adapt adds to)."""
    import pandas as pd

    from ..core.datasets import Dataset

    table = pd.DataFrame({"file": list(names), options.property: targets, "phase": options.phase})
    return Dataset(list(images), table)


@dataclass(frozen=True)
class LabelProgress:
    """Physics labels computed so far (before training)."""

    done: int
    total: int
    elapsed: float  # seconds since the labelling started

    @property
    def fraction_done(self) -> float:
        return self.done / max(self.total, 1)

    def describe(self) -> str:
        """One line: the labels computed so far, and the time."""
        return f"labels {self.done}/{self.total} · {timing(self)}"


def _folder_data(folder: str, column: str, phase):
    """The dataset of a folder, and its images, names, labels and phases of interest (its
    ``phase`` column where it has one, else ``phase``)."""
    from ..core.datasets import read_dataset

    dataset = read_dataset(folder)
    table = dataset.table
    if column not in table.columns:
        raise InputError(
            f"{folder}/labels.csv has no column {column!r}; its columns are {', '.join(map(str, table.columns))}."
        )
    phases = [int(p) for p in table["phase"]] if "phase" in table.columns else phase
    names = [str(n) for n in table["file"]]
    return dataset, dataset.images, names, table[column].to_numpy(float), phases


def training_job(request: TrainingRequest):
    """The worker's generator: label and read the data, then relay the core's training messages
    (Stop commands go in); returns a :class:`TrainingResult` (errors are raised)."""
    from ..core.datasets import build_dataset_steps, transport_labels
    from ..core.properties import train_steps

    options = request.options
    with worker_settings(request.torch_threads):
        images, names, targets = list(request.images), list(request.names), request.targets
        dataset = training_data = None
        if request.build is not None:
            building = build_dataset_steps(request.build, micrographs=dict(zip(names, images)))
            dataset = training_data = yield from relay(building)
            if dataset.partial:
                stopped = "Stopped while building the dataset."
                return TrainingResult(stopped=stopped, dataset=dataset)
            images, names = dataset.images, [str(n) for n in dataset.table["file"]]
            targets = dataset.table[options.property].to_numpy(float)
        elif request.folder is not None:
            training_data, images, names, targets, phase = _folder_data(
                request.folder, options.property, options.phase
            )
            options = replace(options, phase=phase)
        elif targets is None:
            values, started = [], time.perf_counter()
            for index, image in enumerate(images):
                row = transport_labels(image, options.phase, (options.axis,))
                values.append(row[options.property])
                progress = LabelProgress(index + 1, len(images), time.perf_counter() - started)
                if (yield progress) == STOP:
                    return TrainingResult(stopped="Stopped while computing the labels.")
            targets = values
        targets = np.asarray(targets, dtype=float)
        if training_data is None:
            training_data = _layer_dataset(images, names, targets, options)
        steps = train_steps(images, targets, options, names=names)
        model = yield from relay(steps)
        return TrainingResult(
            model=model, targets=targets, names=names, dataset=dataset, training_data=training_data
        )


def validation_job(request: ValidationRequest):
    """The worker's generator of a validation: relays its messages (Stop scores the layers
    labelled so far) and returns the core's
    :class:`~napari_microstructure.core.property_validation.Validation`."""
    with worker_settings(request.torch_threads):
        return (yield from relay(request.steps))


def adaptation_job(request: AdaptationRequest):
    """The worker's generator of an adaptation: relays the core's messages and returns a
    :class:`TrainingResult` (no model when stopped before the fit)."""
    with worker_settings(request.torch_threads):
        model = yield from relay(request.steps)
    if model is None:
        stopped = "Stopped while the crops were labelled: the model is unchanged."
        return TrainingResult(stopped=stopped)
    targets = np.asarray(model.header["training"]["targets"], dtype=float)
    return TrainingResult(model=model, targets=targets, training_data=request.training_data)


def prediction_job(model, images: list, threads: int = 0):
    """Predict every image with its interval and range check (worker thread; errors are
    raised): a :class:`~napari_microstructure.core.properties.Predictions`."""
    with worker_settings(threads, lower_priority=False):
        return model.predict_intervals(images)


def flagged_cells(frame) -> dict[tuple[int, str], str]:
    """Every cell of the rows whose prediction is out of the training range, with the reason,
    and the ``inside`` cell of a validated row whose true value lies outside its interval (the
    results table colours them)."""
    if frame.empty or "out_of_range" not in frame.columns:
        return {}
    marks = {}
    for position, (flag, reason) in enumerate(zip(frame["out_of_range"], frame["reason"])):
        if isinstance(flag, (bool, np.bool_)) and flag:
            for column in frame.columns:
                marks[position, column] = f"Out of the training range: {reason}"
    if "inside" in frame.columns:
        for position, inside in enumerate(frame["inside"]):
            if isinstance(inside, (bool, np.bool_)) and not inside:
                marks.setdefault(
                    (position, "inside"), "TauFactor's value lies outside the interval"
                )
    return marks


# ------------------------------------------------------------------------------------------
# the plots
# ------------------------------------------------------------------------------------------


class PropertyPlot(QWidget):
    """Docked parity plot of the cross-validated predictions, the loss curve of fine-tuning and
    the model's metrics."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.parity_figure = Figure(figsize=(4.0, 3.6), layout="constrained")
        self.loss_figure = Figure(figsize=(4.0, 2.0), layout="constrained")
        self.parity_canvas = FigureCanvasQTAgg(self.parity_figure)
        self.loss_canvas = FigureCanvasQTAgg(self.loss_figure)
        self.ax_loss = self.loss_figure.add_subplot()
        self.metrics = QLabel("No model yet.")
        self.metrics.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.metrics)
        layout.addWidget(self.parity_canvas, 2)
        layout.addWidget(self.loss_canvas, 1)
        self.start_loss()

    def start_loss(self) -> None:
        """Empty loss curves (at the start of a run)."""
        self.losses: dict[str, list[tuple[int, float]]] = {"training": [], "validation": []}
        self._draw_loss()

    def add_epoch(self, epoch: int, train_loss: float | None, val_loss: float | None) -> None:
        """Append one fine-tuning epoch's losses."""
        for key, value in (("training", train_loss), ("validation", val_loss)):
            if value is not None:
                self.losses[key].append((len(self.losses[key]) + 1, float(value)))
        self._draw_loss()

    def _draw_loss(self) -> None:
        ax = self.ax_loss
        ax.clear()
        ax.set_title("fine-tuning loss (standardized MSE) per epoch", fontsize=9)
        for key, points in self.losses.items():
            if points:
                ax.plot(*zip(*points), label=key, lw=1.2)
        if any(self.losses.values()):
            ax.set_yscale("log")
            ax.legend(fontsize=7, frameon=False)
        self.loss_canvas.draw_idle()

    def show_model(self, model) -> None:
        """The model's cross-validated parity plot and metrics."""
        from ..report import plot_parity

        header = model.header
        validation = header.get("cross_validation", {})
        self.parity_figure.clear()
        targets = header["training"]["targets"]
        predictions = validation.get("predictions")
        if predictions is not None:
            plot_parity(
                targets,
                predictions,
                title=f"{header['property']}: {validation.get('folds', '?')}-fold cross-validation",
                units=header.get("units", ""),
                figure=self.parity_figure,
            )
        self.parity_canvas.draw_idle()
        metrics = model.metrics
        text = f"{header['property']} · {header['mode']} · trunk {header['depth']} · weights {header['weights']['name']} · {len(targets)} samples"
        if "r2" in metrics:
            text += f"\nCross-validated R² {metrics['r2']:.3f}, MAE {metrics['mae']:.3g}, RMSE {metrics['rmse']:.3g}"
        self.metrics.setText(text)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the parity plot as PNG, all or nothing."""
        from ..report import write_report

        path = Path(path)
        return write_report(path.parent, {path.name: self.parity_figure}, overwrite=overwrite)[0]


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------


def _layer_data(layers) -> tuple[np.ndarray, ...]:
    """Copies of the layers' data (the full resolution of a multiscale layer); an RGB layer is
    refused (its colour channels would be taken for an axis of a volume)."""
    for layer in layers:
        if getattr(layer, "rgb", False):
            raise InputError(
                f"Layer '{layer.name}' is an RGB image: give phase labels (a Labels layer, or an "
                "image whose values are the phases)."
            )
    return tuple(
        np.array(layer.data[0] if layer.multiscale else layer.data, copy=True) for layer in layers
    )


def _plain(value):
    """A numpy scalar as the Python number (or bool) it holds, for layer metadata; NaN as None."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _path_row(edit: QLineEdit, browse) -> QHBoxLayout:
    row = QHBoxLayout()
    button = QToolButton()
    button.setText("…")
    button.clicked.connect(browse)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class PropertyWidget(JobWidget):
    """Train a structure-property model on layers or a dataset folder; predict on layers.

    ``runner`` (:class:`JobRunner`) runs the training (``worker``; the Train button stops it)
    and the predictions (``predict_worker``).
    """

    #: Emitted on the main thread when a training run has ended and the widget is ready again.
    training_finished = Signal()
    #: Emitted when a prediction has ended.
    prediction_finished = Signal()
    #: Emitted when a validation has ended.
    validation_finished = Signal()
    #: Emitted when an adaptation has ended.
    adaptation_finished = Signal()
    job = staticmethod(training_job)
    busy_message = "Training, validation or adaptation is running already: stop it first."

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.model = None
        self.dataset = None  # the last dataset built here
        self.training_data = None  # what the model was fitted on, when trained here
        self.validation = None  # the last validation (core.property_validation.Validation)
        self.predict_worker = None
        self._finished = self.training_finished  # the signal of the running main job
        self.plot = PropertyPlot()
        self.table = ResultsTable(
            napari_viewer, marks=flagged_cells, default_file="property_predictions.csv"
        )
        self.validation_table = ResultsTable(
            napari_viewer, marks=flagged_cells, default_file="property_validation.csv"
        )
        self._docked = False
        self._build()
        self._bind(self.train_button)
        self._update_model_buttons()
        self._refresh_layers()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)

    # ------------------------------------------------------------------------------ building
    def _build(self) -> None:
        self.form = rows = Form(TrainOptions)
        form = QFormLayout()
        self.source_combo = QComboBox()
        self.source_combo.addItems([SOURCE_TABLE, SOURCE_PHYSICS, SOURCE_BUILD, SOURCE_FOLDER])
        self.source_combo.setToolTip(
            "Training data: the selected layers with labels from a CSV table (a 'name' or 'layer' "
            "column with the layer names, and property columns); the selected layers labelled by "
            "physics (D_eff of a phase along an axis, TauFactor); random crops of the selected layers "
            "and generated microstructures, labelled by physics; or a dataset folder "
            "(labels.csv and the images it names, as `napari-microstructure properties build` writes)"
        )
        self.source_combo.currentTextChanged.connect(self._on_source)
        form.addRow("Training data", self.source_combo)
        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.layer_list.setToolTip(
            "Image or Labels layers (2D or 3D): training data, and the layers Predict works on"
        )
        self.layer_list.setMaximumHeight(110)
        form.addRow("Layers", self.layer_list)
        self.table_edit = QLineEdit()
        self.table_edit.setPlaceholderText("labels .csv")
        self.table_edit.editingFinished.connect(self._read_columns)
        form.addRow("Label table", _path_row(self.table_edit, self._browse_table))
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("dataset folder")
        self.folder_edit.editingFinished.connect(self._read_columns)
        form.addRow("Folder", _path_row(self.folder_edit, self._browse_folder))
        self.crops_spin = rows.spin(
            "crops",
            " of the selected layers",
            options_class=DatasetOptions,
            default=CROPS_PER_LAYER,
        )
        self.crop_size_spin = rows.spin("size", " in pixels", options_class=DatasetOptions)
        self.generated_spin = rows.spin(
            "generated", ", added to the crops", options_class=DatasetOptions
        )
        build = QHBoxLayout()
        for text, spin in (
            ("crops", self.crops_spin),
            ("of", self.crop_size_spin),
            ("+ generated", self.generated_spin),
        ):
            build.addWidget(QLabel(text))
            build.addWidget(spin, 1)
        form.addRow("Build", build)
        self.property_combo = QComboBox()
        self.property_combo.setEditable(True)
        self.property_combo.setToolTip(
            "The property (a column of the table; D_eff_x, D_eff_y ... for physics labels)"
        )
        form.addRow("Property", self.property_combo)
        self.units_edit = QLineEdit()
        self.units_edit.setToolTip("Units of the property (for the plots and the model file)")
        form.addRow("Units", self.units_edit)
        self.phase_spin = rows.spin(
            "phase", " (here one label: the conducting phase)", high=MAX_LABEL
        )
        form.addRow("Phase", self.phase_spin)
        self.axis_combo = rows.combo(
            "axis", " (along the image's columns)", items=AXIS_NAMES[3][::-1]
        )
        self.axis_combo.currentTextChanged.connect(self._on_source)
        form.addRow("Axis", self.axis_combo)
        self.mode_combo = rows.combo("mode")
        form.addRow("Mode", self.mode_combo)
        self.physics_combo = rows.combo("physics")
        form.addRow("Physics", self.physics_combo)
        self.depth_combo = rows.combo(
            "depth",
            "; 'From profile…' takes a pruning profile's recommendation",
            items=DEPTHS,
            default=DEFAULT_DEPTH,
        )
        profile = QPushButton("From profile…")
        profile.setToolTip(
            "Read a pruning profile (JSON, from the pruning study) and use its recommended depth"
        )
        profile.clicked.connect(self._ask_profile)
        depth = QHBoxLayout()
        depth.addWidget(self.depth_combo, 1)
        depth.addWidget(profile)
        form.addRow("Trunk", depth)
        self.weights_combo = rows.combo("weights", items=TRAINING_WEIGHTS)
        form.addRow("Initialization", self.weights_combo)
        self.folds_spin = rows.spin("folds")
        form.addRow("Folds", self.folds_spin)
        self.seed_spin = rows.spin("seed")
        form.addRow("Seed", self.seed_spin)
        self.device_combo = rows.device()
        form.addRow("Device", self.device_combo)

        self.train_button = QPushButton("Train")
        self.train_button.setToolTip(
            "Train a model with cross-validation; while it runs, this button stops it"
        )
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.predict_button = QPushButton("Predict on selected layers")
        self.predict_button.setToolTip(
            "Predict the property of each selected layer (2D or 3D): a table row and the layer's metadata"
        )
        self.predict_button.clicked.connect(self.predict)
        self.save_button = QPushButton("Save model…")
        self.save_button.clicked.connect(self._ask_save)
        load = QPushButton("Load model…")
        load.clicked.connect(self._ask_load)
        self.save_dataset_button = QPushButton("Save dataset…")
        self.save_dataset_button.setToolTip(
            "Write the dataset built by the last run: its images (.tif) and labels.csv"
        )
        self.save_dataset_button.clicked.connect(self._ask_save_dataset)
        self.save_dataset_button.setEnabled(False)
        files = QHBoxLayout()
        files.addWidget(self.save_button)
        files.addWidget(load)
        files.addWidget(self.save_dataset_button)
        self.validate_button = QPushButton("Validate on selected layers")
        self.validate_button.setToolTip(
            "Label the selected layers with TauFactor and compare the model's predictions with "
            "them: relative MAE, R², the share inside the intervals, the count out of range"
        )
        self.validate_button.clicked.connect(self.validate)
        self.adapt_button = QPushButton("Adapt to selected layers")
        self.adapt_button.setToolTip(
            "Re-fit the model on its training set plus random crops of the selected layers "
            "(your material), each labelled by TauFactor along every axis"
        )
        self.adapt_button.clicked.connect(self.adapt)
        trust = QHBoxLayout()
        trust.addWidget(self.validate_button)
        trust.addWidget(self.adapt_button)
        self.adapt_form = Form(DatasetOptions)
        self.adapt_crops_spin = self.adapt_form.spin(
            "crops", " of each selected layer, for Adapt", default=ADAPT_CROPS
        )
        self.adapt_size_spin = self.adapt_form.spin("size", " in pixels, for Adapt")
        adapt_row = QHBoxLayout()
        for text, spin in (
            ("Adapt with", self.adapt_crops_spin),
            ("crops of", self.adapt_size_spin),
        ):
            adapt_row.addWidget(QLabel(text))
            adapt_row.addWidget(spin, 1)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.train_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.predict_button)
        layout.addLayout(trust)
        layout.addLayout(adapt_row)
        layout.addLayout(files)
        layout.addStretch(1)
        self._on_source()

    def _on_source(self, *_args) -> None:
        source = self.source_combo.currentText()
        self.table_edit.setEnabled(source == SOURCE_TABLE)
        self.folder_edit.setEnabled(source == SOURCE_FOLDER)
        for spin in (self.crops_spin, self.crop_size_spin, self.generated_spin):
            spin.setEnabled(source == SOURCE_BUILD)
        if source in (SOURCE_PHYSICS, SOURCE_BUILD):
            self.property_combo.clear()
            self.property_combo.addItem(f"D_eff_{self.axis_combo.currentText()}")
        else:
            self._read_columns()

    def _read_columns(self) -> None:
        """Offer the numeric columns of the chosen table or folder as properties."""
        import pandas as pd

        from ..core.datasets import LABELS_FILE

        source = self.source_combo.currentText()
        path = (
            self.table_edit.text().strip()
            if source == SOURCE_TABLE
            else self.folder_edit.text().strip()
        )
        if source in (SOURCE_PHYSICS, SOURCE_BUILD) or not path:
            return
        table = Path(path) if source == SOURCE_TABLE else Path(path) / LABELS_FILE
        try:
            frame = pd.read_csv(table)
        except (OSError, ValueError) as error:
            self.status.setText(f"Cannot read {table}: {error}")
            return
        columns = [
            str(c)
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and c not in ("phase", "seed")
        ]
        current = self.property_combo.currentText()
        self.property_combo.clear()
        self.property_combo.addItems(columns)
        if current in columns:
            self.property_combo.setCurrentText(current)

    def _update_model_buttons(self) -> None:
        ready = self.model is not None
        self.save_button.setEnabled(ready)
        self.predict_button.setEnabled(ready and self.predict_worker is None)
        for button in (self.validate_button, self.adapt_button):
            button.setEnabled(ready and not self.runner.running)

    # ------------------------------------------------------------------------------ layers
    def _candidates(self) -> list:
        from napari.layers import Image, Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, (Image, Labels))]

    def _refresh_layers(self, *_args) -> None:
        selected = {item.text() for item in self.layer_list.selectedItems()}
        self.layer_list.clear()
        for layer in self._candidates():
            self.layer_list.addItem(layer.name)
            if layer.name in selected:
                self.layer_list.item(self.layer_list.count() - 1).setSelected(True)

    def select_layers(self, names) -> None:
        """Select the layers called ``names`` in the list."""
        names = set(names)
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            item.setSelected(item.text() in names)

    def selected_layers(self) -> list:
        names = {item.text() for item in self.layer_list.selectedItems()}
        return [layer for layer in self._candidates() if layer.name in names]

    # ------------------------------------------------------------------------------ files
    def _browse_table(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Label table", "", "CSV (*.csv);;All files (*)"
        )
        if path:
            self.table_edit.setText(path)
            self._read_columns()

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset folder")
        if path:
            self.folder_edit.setText(path)
            self._read_columns()

    def use_profile(self, path: str | os.PathLike) -> None:
        """Set the trunk's depth to a pruning profile's recommendation."""
        from ..core.properties import trunk_layers
        from ..core.pruning import load_profile

        try:
            depth = trunk_layers(profile=load_profile(path))[-1]
        except MicrostructureError as error:
            show_error(str(error))
            return
        if self.depth_combo.findData(depth) < 0:
            self.depth_combo.addItem(depth, depth)
        self.depth_combo.setCurrentIndex(self.depth_combo.findData(depth))
        self.status.setText(f"Trunk depth {depth}, recommended by {Path(path).name}.")

    def _ask_profile(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Pruning profile", "", "Profile (*.json);;All files (*)"
        )
        if path:
            self.use_profile(path)

    def save_model(self, path: str | os.PathLike, overwrite: bool = False) -> Path | None:
        """Write the current model as one .npz file (``.npz`` is added to another name), all or
        nothing, never over a file a layer was read from (None, with a notification, when it
        cannot be written)."""
        from ..report import write_report

        if self.model is None:
            show_warning("No model yet: train or load one first.")
            return None
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        try:
            files = {path.name: self.model.save}
            inputs = layer_files(self.viewer)
            write_report(path.parent, files, overwrite=overwrite, inputs=inputs)
        except (OSError, MicrostructureError) as error:
            show_error(f"Could not save the model (nothing was written): {error}")
            return None
        show_info(f"Wrote {path}")
        return path

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the model", "property_model.npz", "Model (*.npz)"
        )
        if path:
            self.save_model(path, overwrite=True)  # the dialog has asked about replacing

    def save_dataset(self, folder: str | os.PathLike) -> Path | None:
        """Write the dataset built by the last run into ``folder`` (its images, labels.csv and
        provenance), all or nothing: no file there is replaced, nor a file a layer was read
        from. Returns the labels file (None, with a notification, when nothing was written)."""
        from .. import io
        from ..core.datasets import LABELS_FILE, write_dataset

        if self.dataset is None:
            show_warning("No dataset built yet: train on crops of the layers first.")
            return None
        folder = Path(folder)
        try:
            io.check_outputs([folder / LABELS_FILE])  # an unwritable folder: refused first
            with tempfile.TemporaryDirectory(prefix="napari-microstructure-") as scratch:
                write_dataset(self.dataset, scratch)
                written = [f for f in Path(scratch).rglob("*") if f.is_file()]
                files = sorted(f.relative_to(scratch) for f in written)
                outputs = [folder / file for file in files]
                with io.atomic_outputs(outputs, inputs=layer_files(self.viewer)) as staged:
                    for file, output in zip(files, outputs):
                        shutil.move(Path(scratch) / file, staged[output])
        except (OSError, MicrostructureError) as error:
            show_error(f"Could not write the dataset into {folder} (nothing was written): {error}")
            return None
        show_info(f"Wrote {len(self.dataset.images)} images and {LABELS_FILE} into {folder}")
        return folder / LABELS_FILE

    def _ask_save_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the dataset")
        if folder:
            self.save_dataset(folder)

    def load_model(self, path: str | os.PathLike) -> None:
        """Load a model file written by Save model or the command line."""
        from ..core.properties import load_model

        try:
            self.model = load_model(path)
        except MicrostructureError as error:
            show_error(str(error))
            return
        self.training_data = None  # Adapt reads the folder the model records, or Folder's
        self._dock_results()
        self.plot.show_model(self.model)
        self.status.setText(f"Loaded {Path(path).name}: {self.model.property_name}.")
        self._update_model_buttons()

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a model", "", "Model (*.npz);;All files (*)"
        )
        if path:
            self.load_model(path)

    # ------------------------------------------------------------------------------ training
    def _capture(self) -> TrainingRequest:
        from ..core.datasets import read_labels

        source = self.source_combo.currentText()
        prop = self.property_combo.currentText().strip()
        if not prop:
            raise InputError("Choose the property to learn (a column of the label table).")
        options = self.form.options(property=prop, units=self.units_edit.text().strip())
        if source == SOURCE_FOLDER:
            folder = self.folder_edit.text().strip()
            if not folder:
                raise InputError("Choose a dataset folder (with labels.csv).")
            return TrainingRequest((), (), None, folder, None, options)
        layers = self.selected_layers()
        images = _layer_data(layers)
        names = tuple(layer.name for layer in layers)
        if source == SOURCE_BUILD:
            if not layers:
                raise InputError("Select the layers to crop (Ctrl/Shift-click in the list).")
            # crops, size, generated, and the phase and seed of the training
            build = self.form.options(DatasetOptions, axes=(options.axis,), device="cpu")
            return TrainingRequest(images, names, None, None, build, options)
        if len(layers) < 3:
            raise InputError(
                "Select at least 3 image layers to train on (Ctrl/Shift-click in the list)."
            )
        if source == SOURCE_PHYSICS:
            return TrainingRequest(images, names, None, None, None, options)
        path = self.table_edit.text().strip()
        if not path:
            raise InputError("Choose the label table (CSV) with a name column and the property.")
        table = read_labels(path, columns=[prop])
        by_name = {
            **dict(zip(table["stem"], table[prop])),
            **dict(zip(table["name"], table[prop])),
        }
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(
                f"The label table has no row for the layer {missing[0]!r}: add it, or deselect that layer."
            )
        return TrainingRequest(
            images, names, tuple(float(by_name[n]) for n in names), None, None, options
        )

    def train(self):
        """Start training with the current choices; return the worker (None if refused)."""
        return self.run()

    def _started(self, request) -> None:
        self.progress.setRange(0, 0)
        self.progress.setFormat("preparing…")
        if isinstance(request, ValidationRequest):
            self._finished = self.validation_finished
            text = f"Validating on {len(request.names)} layer(s): TauFactor labels first…"
        elif isinstance(request, AdaptationRequest):
            self._finished = self.adaptation_finished
            text = f"Adapting to {', '.join(request.micrographs)}: crops labelled by TauFactor…"
            self.plot.start_loss()
        else:
            self._finished = self.training_finished
            labelling = request.targets is None and request.folder is None
            text = "Computing D_eff with TauFactor…" if labelling else "Preparing the data…"
            self.plot.start_loss()
        self.status.setText(text)
        self._dock_results()
        for button in (self.validate_button, self.adapt_button):
            button.setEnabled(False)

    def _stopping(self) -> tuple[str, str]:
        """Stop training (the finished folds are kept and the final model is fitted), a
        validation (the layers labelled so far are scored) or an adaptation."""
        if self._finished is self.validation_finished:
            return STOP, "Stopping: the layers labelled so far are scored…"
        return STOP, "Stopping: the finished folds are kept and the final model is fitted…"

    def _on_yielded(self, message) -> None:
        # the dataset's, the labels' and the training's messages all count done of total
        if isinstance(message, TrainProgress) and message.stage == "epoch":
            self.plot.add_epoch(message.epoch, message.train_loss, message.val_loss)
        self.progress.setRange(0, max(message.total, 1))
        self.progress.setValue(message.done)
        self.progress.setFormat(describe(message))

    def _on_returned(self, result: TrainingResult) -> None:
        if result.dataset is not None:
            self.dataset = result.dataset
            self.save_dataset_button.setEnabled(True)
        if result.stopped is not None:
            self.status.setText(result.stopped)
            return
        if result.model is None:
            self.status.setText("Stopped before a model was fitted.")
            return
        self.model = result.model
        self.training_data = result.training_data
        self.plot.show_model(self.model)
        metrics = self.model.metrics
        quality = (
            f" Cross-validated R² {metrics['r2']:.3f}, MAE {metrics['mae']:.3g}."
            if "r2" in metrics
            else ""
        )
        header = self.model.header
        adapted = header["provenance"].get("adapted")
        done = (
            f"Adapted to {', '.join(adapted['micrographs'])}: trained on "
            f"{adapted['from']['n_samples']} + {adapted['added']} samples"
            if adapted is not None
            else f"Trained on {len(result.targets)} samples"
        )
        self.status.setText(f"{done} ({header['mode']}, trunk {header['depth']}).{quality}")

    def _on_finished(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("idle")
        self._update_model_buttons()
        self._finished.emit()

    # ------------------------------------------------------------------------------ validation
    def validate(self):
        """Validate the model on the selected layers against TauFactor; return the worker
        (None if refused, with a notification)."""
        return self.start_job(validation_job, self._capture_validation, self._on_validated)

    def _model_and_layers(self, no_layers: str) -> tuple[tuple[str, ...], list]:
        """The selected layers' names and data for a job on the model; InputError (with
        ``no_layers`` when none is selected) before any work."""
        if self.model is None:
            raise InputError("No model yet: train or load one first.")
        layers = self.selected_layers()
        if not layers:
            raise InputError(no_layers)
        return tuple(layer.name for layer in layers), list(_layer_data(layers))

    def _capture_validation(self) -> ValidationRequest:
        from ..core.property_validation import validate_steps

        names, images = self._model_and_layers(
            "Select the layers to validate on (2D or 3D Image or Labels layers)."
        )
        device = self.form.values()["device"]
        steps = validate_steps(self.model, images, [f"layer '{n}'" for n in names], device=device)
        return ValidationRequest(steps, names)

    def _on_validated(self, validation) -> None:
        self.validation = validation
        rows = validation.images.drop(columns="group")
        rows["name"] = [name.removeprefix("layer '").removesuffix("'") for name in rows["name"]]
        self.validation_table.set_frame(rows.rename(columns={"name": "layer"}))
        self._dock(self.validation_table, DOCK_VALIDATION, "bottom")
        summary = validation.summary.iloc[-1]
        text = (
            f"Validated {validation.property} on {summary['n']} layer(s) "
            f"({summary['percolating']} percolating): relative MAE {summary['relative_mae']:.3f}, "
            f"R² {summary['r2']:.3f}, {summary['coverage']:.0%} inside the "
            f"{summary['nominal_coverage']:.0%} intervals, {summary['out_of_range']} out of range"
        )
        if validation.partial:
            text += " (stopped: the layers labelled so far)"
        if validation.note:
            text += f" · {validation.note}"
        self.status.setText(text)

    # ------------------------------------------------------------------------------ adaptation
    def adapt(self):
        """Re-fit the model on its training set plus labelled crops of the selected layers;
        return the worker (None if refused, with a notification)."""
        return self.start_job(adaptation_job, self._capture_adaptation, self._on_returned)

    def _capture_adaptation(self) -> AdaptationRequest:
        from ..core.adaptation import adapt_steps

        names, images = self._model_and_layers("Select the layers of your material to adapt to.")
        values = self.form.values(DatasetOptions)
        build = self.adapt_form.options(phase=values["phase"], seed=values["seed"], device="cpu")
        training_data = self.training_data
        if training_data is None:
            recorded = self.model.header.get("provenance", {}).get("dataset")
            training_data = self.folder_edit.text().strip() or recorded
        if not training_data:
            raise InputError(
                "Adapt re-fits the model on its training set plus crops of the selected layers, "
                "and this model does not record where its training set is: choose its dataset "
                "folder (with labels.csv) under Folder."
            )
        micrographs = dict(zip(names, images))
        steps = adapt_steps(self.model, micrographs, training_data, build)
        return AdaptationRequest(steps, names, training_data)

    # ------------------------------------------------------------------------------ prediction
    def predict(self):
        """Predict the property of every selected layer; return the worker (None if refused)."""
        if self.model is None:
            show_warning("No model yet: train or load one first.")
            return None
        layers = self.selected_layers()
        if not layers:
            show_error("Select the layers to predict (2D or 3D Image or Labels layers).")
            return None
        names = [layer.name for layer in layers]
        model = self.model
        try:
            images = list(_layer_data(layers))
            model.check_dimensions(images, [f"layer '{name}'" for name in names])
        except InputError as error:
            show_error(str(error))
            self.status.setText(f"Not started: {error}")
            return None
        self.predict_worker = self.runner.start(
            prediction_job,
            model,
            images,
            main=False,
            returned=partial(self._on_predicted, model=model, names=names),
            failed=self._on_predict_failed,
            finished=self._on_predict_finished,
        )
        self._update_model_buttons()
        self.status.setText(f"Predicting {len(names)} layer(s)…")
        self._dock_results()
        return self.predict_worker

    def _on_predicted(self, found, model, names: list[str]) -> None:
        import pandas as pd

        header = model.header
        prop = header["property"]
        record = {
            "model_property": prop,
            "units": header.get("units", ""),
            "mode": header["mode"],
            "trunk": header["depth"],
            "weights_sha256": header["weights"].get("sha256"),
        }
        values = [float(v) for v in found.values]
        trust = pd.DataFrame(found.columns())
        rows = []
        for index, (name, value) in enumerate(zip(names, values)):
            extra = {k: _plain(v) for k, v in trust.iloc[index].items()}
            rows.append(
                {
                    "layer": name,
                    prop: value,
                    **extra,
                    "units": record["units"],
                    "mode": record["mode"],
                    "trunk": record["trunk"],
                }
            )
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                predictions = {
                    **layer.metadata.get("predictions", {}),
                    prop: {"value": value, **extra, **record},
                }
                layer.metadata = {**layer.metadata, "predictions": predictions}
        self.table.add_rows(pd.DataFrame(rows))
        text = ", ".join(f"{n}: {prop} = {v:.4g}" for n, v in zip(names, values))
        outside = int(found.out_of_range.sum())
        if outside:
            text += f" · {outside} out of the training range (marked in the table)"
        if found.note:
            text += f" · {found.note}"
        self.status.setText(text)

    def _on_predict_failed(self, message: str) -> None:
        self.status.setText(f"Prediction failed: {message}")

    def _on_predict_finished(self) -> None:
        self.predict_worker = None
        self._update_model_buttons()
        self.prediction_finished.emit()

    # ------------------------------------------------------------------------------ docks
    def _dock_results(self) -> None:
        if self._docked:
            return
        self._docked = True
        self._dock(self.plot, DOCK_PLOT, "right")
        self._dock(self.table, DOCK_TABLE, "bottom")
