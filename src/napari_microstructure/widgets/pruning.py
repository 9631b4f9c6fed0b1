"""The pruning-study dock widget: which depth of the network a material needs, in napari.

Pick one or more Image/Labels layers of one material (a 3D layer is a stack of micrographs),
the depths and layer subsets to compare, and the budget; Run starts the core's
:func:`~napari_microstructure.core.pruning.prune_steps` generator in a thread worker of the
widget's :class:`~napari_microstructure.widgets._worker.JobRunner` (:func:`pruning_job`); the
same button then stops it, sending ``"stop"`` into it (the configurations that finished are
kept).
As each configuration finishes, its row joins the docked table (Save as CSV), the docked plot of
fidelity (e_S2 with its spread, the floor) and cost (seconds, GFLOP per iteration) against depth
is redrawn with the recommendation marked, and its best reconstruction is added as a layer named
after the input and the configuration, with the input's scale, so that the depths can be
compared by eye in grid mode. Save profile writes the profile JSON (all or nothing).

The widget holds no algorithm. The input layers and every parameter are captured when Run is
pressed; layers are touched only on the main thread, in the slots of the worker's signals.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.decoder import ReconstructionOptions
from ..core.errors import InputError, MicrostructureError
from ..core.options import spec
from ..core.pruning import StudyOptions
from ..core.steps import STOP, describe, relay
from ._base import JobWidget
from ._form import SECONDS_BUDGET, SHOW_GRID, WEIGHT_NAMES, Form
from ._layers import layer_files
from ._plot import theme_colours
from ._table import ResultsTable
from ._worker import avoid_triton_llvm_crash

if TYPE_CHECKING:
    import napari

__all__ = ["PruningPlot", "PruningRequest", "PruningTable", "PruningWidget", "pruning_job"]

DOCK_TABLE = "Pruning table"
DOCK_PLOT = "Pruning plot"
#: Columns shown in the docked table (the CSV has them all).
SHOWN_COLUMNS = (
    "name",
    "layers",
    "e_s2_mean",
    "e_s2_std",
    "e_lp_mean",
    "e_vf_mean",
    "e_conn_mean",
    "seconds",
    "cpu_seconds",
    "steps",
    "gflop_per_iteration",
    "peak_memory_mb",
    "recommended",
)


# ------------------------------------------------------------------------------------------
# the request (captured on the main thread) and the job (worker thread): no Qt widgets here
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruningRequest:
    """Everything a study needs, captured when Run is pressed."""

    images: tuple  # 2D copies, one per micrograph
    names: tuple[str, ...]  # one per image
    sources: tuple[int, ...]  # for each image, the index of its layer in ``layers``
    layers: tuple[
        dict, ...
    ]  # per input layer: name, kind ("labels"/"image"), scale, translate, units
    material: str
    options: StudyOptions
    floor: float | None  # mean e_S2 floor of the images, for the live recommendation


def pruning_job(request: PruningRequest):
    """The worker's generator: the study's progress messages out, ``"stop"`` in, and the
    :class:`~napari_microstructure.core.pruning.PruningProfile` back (errors are raised)."""
    from ..core.pruning import prune_steps

    avoid_triton_llvm_crash()
    steps = prune_steps(
        list(request.images),
        names=list(request.names),
        material=request.material,
        options=request.options,
    )
    return (yield from relay(steps))


# ------------------------------------------------------------------------------------------
# the docked table and plot
# ------------------------------------------------------------------------------------------


class PruningTable(ResultsTable):
    """Docked table of the study: one row per finished configuration, the recommended one in
    bold; "Save as CSV" writes every column (the view shows the main ones)."""

    shown_columns = SHOWN_COLUMNS
    highlight_column = "recommended"
    false_text = ""
    default_file = "pruning.csv"

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(viewer, parent, clearable=False)


class PruningPlot(QWidget):
    """Docked plot: fidelity (e_S2 with spread, floor, tolerance) and cost (seconds, GFLOP per
    iteration) against depth, the recommendation marked (drawn by
    :func:`~napari_microstructure.report.plot_profile`, in napari's theme colours)."""

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._viewer = napari_viewer
        self.profile = None
        self.figure = Figure(figsize=(4.4, 4.4), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(300)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas)
        self._viewer.events.theme.connect(lambda *_: self.draw(self.profile))
        self.draw(None)

    def draw(self, profile) -> None:
        """Draw a (possibly partial) profile; None clears the plot."""
        from ..core.pruning import PruningProfile
        from ..report import plot_profile

        self.profile = profile
        shown = profile if profile is not None else PruningProfile("", [], [], {}, {}, [])
        plot_profile(shown, self.figure, theme_colours(self._viewer))
        self.canvas.draw_idle()

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the plot as PNG, all or nothing, never over a file a layer was read from."""
        from ..report import write_report

        path = Path(path)
        inputs = layer_files(self._viewer)
        files = {path.name: self.figure}
        return write_report(path.parent, files, overwrite=overwrite, inputs=inputs)[0]


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------


#: The budgets of a study: optimizer steps, or wall seconds per image and configuration.
BUDGETS = ("iterations", "seconds")


class PruningWidget(JobWidget):
    """Dock widget: the pruning study of one material (one or several Image/Labels layers).

    Public attributes used by tests and scripts: ``layer_list``, ``depth_checks`` (one check box
    per depth), ``subsets_edit``, ``samples_spin``, ``budget_combo``, ``iterations_spin``,
    ``seconds_spin``, ``levels_spin``, ``tolerance_spin``, ``device_combo``, ``grid_check``,
    ``run_button`` (Run, and Stop while a study runs), ``progress``, ``status``, ``table``
    (:class:`PruningTable`), ``plot`` (:class:`PruningPlot`), ``profile`` (the last profile, or
    None), ``result_layers``, ``runner`` (the :class:`JobRunner` of its worker) and ``worker``;
    methods :meth:`run`, :meth:`stop`, :meth:`save_profile`, :meth:`select_layers`; the signal
    ``study_finished``, emitted on the main thread when a study has ended (finished, stopped or
    failed) and the widget is ready for the next one.
    """

    study_finished = Signal()
    job = staticmethod(pruning_job)
    busy_message = "A pruning study is running already: stop it first."

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.profile = None
        self.result_layers: list = []
        self._request: PruningRequest | None = None
        self._rows: list[dict] = []
        self._docked = False
        self.table = PruningTable(napari_viewer)
        self.plot = PruningPlot(napari_viewer)
        self._build()
        self._bind(self.run_button)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_layers)
        layers.events.removed.connect(self._refresh_layers)
        layers.events.moved.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------ building
    def _build(self) -> None:
        self.form = rows = Form(StudyOptions)
        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.layer_list.setToolTip(
            "Micrographs of one material (phase labels): select one or several layers; a 3D layer "
            "is a stack of micrographs. Metrics are averaged over all of them."
        )
        self.layer_list.setMaximumHeight(90)
        self.material_edit = QLineEdit()
        self.material_edit.setPlaceholderText("from the layer names")
        self.material_edit.setToolTip("Name of the material, for the profile and the plot title")

        depth_row = QHBoxLayout()
        self.depth_checks: dict[int, QCheckBox] = {}
        depths = spec(StudyOptions, "depths")
        for depth in range(int(depths.low), int(depths.high) + 1):
            box = QCheckBox(f"pool{depth}")
            box.setChecked(depth in depths.default)
            box.setToolTip(
                f"The network truncated after pool{depth}: conv1_1 and pool1 ... pool{depth}"
            )
            self.depth_checks[depth] = box
            depth_row.addWidget(box)
        self.subsets_edit = QLineEdit()
        self.subsets_edit.setPlaceholderText("e.g. conv1_1,pool2; pool3")
        self.subsets_edit.setToolTip(
            "Extra configurations: layer subsets separated by ';', layers by ',' (a single layer shows its own influence)"
        )

        self.samples_spin = rows.spin("samples")
        self.budget_combo = QComboBox()
        self.budget_combo.addItems(BUDGETS)
        self.budget_combo.setToolTip(
            "The same budget for every configuration: optimizer steps, or wall seconds per image"
        )
        reconstruction = ReconstructionOptions()
        self.iterations_spin = rows.spin(
            "iterations", "; the most a seconds budget does", default=reconstruction.iterations
        )
        self.seconds_spin = rows.spin("seconds", default=SECONDS_BUDGET)
        self.seconds_spin.setVisible(False)
        self.budget_combo.currentTextChanged.connect(self._on_budget)
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_combo)
        budget_row.addWidget(self.iterations_spin, 1)
        budget_row.addWidget(self.seconds_spin, 1)
        self.levels_spin = rows.spin(
            "levels",
            "; levels too small for a configuration are dropped",
            default=reconstruction.levels,
        )
        self.tolerance_spin = rows.spin(
            "tolerance",
            ", in percent here; the shallowest such configuration (or one at the floor) is "
            "recommended",
            scale=100,
        )
        self.tolerance_spin.setSuffix(" %")
        self.seed_spin = rows.spin("seed")
        self.device_combo = rows.device()
        self.weights_combo = rows.combo("weights", items=WEIGHT_NAMES, editable=True)
        self.grid_check = QCheckBox("Show the results in grid mode")
        self.grid_check.setChecked(SHOW_GRID)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(
            "Start the study; while it runs, this button stops it after the current optimizer "
            "step (the finished configurations are kept)"
        )
        self.save_button = QPushButton("Save profile…")
        self.save_button.setToolTip("Write the pruning profile (JSON)")
        self.save_button.clicked.connect(self._ask_save_profile)
        self.save_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.recommendation_label = QLabel("")
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )

        form = QFormLayout()
        form.addRow("Micrographs:", self.layer_list)
        form.addRow("Material:", self.material_edit)
        form.addRow("Depths:", depth_row)
        form.addRow("Layer subsets:", self.subsets_edit)
        form.addRow("Samples:", self.samples_spin)
        form.addRow("Budget:", budget_row)
        form.addRow("Levels:", self.levels_spin)
        form.addRow("Tolerance:", self.tolerance_spin)
        form.addRow("Seed:", self.seed_spin)
        form.addRow("Device:", self.device_combo)
        form.addRow("Weights:", self.weights_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.grid_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.recommendation_label)
        layout.addStretch(1)

    def _on_budget(self, text: str) -> None:
        self.seconds_spin.setVisible(text == "seconds")

    # ------------------------------------------------------------------------------ layers
    def _candidates(self) -> list:
        from napari.layers import Image, Labels

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, (Image, Labels)) and layer not in self.result_layers
        ]

    def _refresh_layers(self, *_args) -> None:
        selected = {item.text() for item in self.layer_list.selectedItems()}
        self.layer_list.clear()
        candidates = self._candidates()
        for layer in candidates:
            item = QListWidgetItem(layer.name)
            self.layer_list.addItem(item)
            item.setSelected(layer.name in selected)
        if not self.layer_list.selectedItems() and self.layer_list.count():
            self.layer_list.item(0).setSelected(True)

    def select_layers(self, names) -> None:
        """Select the input layers by name."""
        names = set(names)
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setSelected(item.text() in names)

    def selected_layers(self) -> list:
        names = [item.text() for item in self.layer_list.selectedItems()]
        by_name = {layer.name: layer for layer in self._candidates()}
        return [by_name[n] for n in names if n in by_name]

    # ------------------------------------------------------------------------------ running
    def _options(self) -> StudyOptions:
        """The study's options: the configurations of the chosen depths and subsets (checked
        here, or MicrostructureError) and the form's values."""
        from ..core.pruning import default_configurations

        depths = tuple(d for d, box in self.depth_checks.items() if box.isChecked())
        subsets = tuple(p for p in re.split(r"[;\n]+", self.subsets_edit.text()) if p.strip())
        seconds = self.budget_combo.currentText() == "seconds"
        return self.form.options(
            configurations=tuple(default_configurations(depths, subsets)),
            depths=depths,
            subsets=subsets,
            seconds=self.seconds_spin.value() if seconds else None,
        )

    def _capture(self) -> PruningRequest:
        """Copy the input layers and read every parameter (raises MicrostructureError)."""
        from napari.layers import Labels

        from ..core import metrics
        from ..core.pruning import default_material

        layers = self.selected_layers()
        if not layers:
            raise InputError(
                "Choose the micrographs: one or several Image or Labels layers (File > Open Sample has some)."
            )
        images, names, sources, described = [], [], [], []
        for index, layer in enumerate(layers):
            if getattr(layer, "multiscale", False) or getattr(layer, "rgb", False):
                raise InputError(
                    f"Layer '{layer.name}' is multiscale or RGB; the study needs phase labels."
                )
            data = np.array(layer.data, copy=True)
            if data.ndim == 2:
                planes = [data]
            elif data.ndim == 3:
                planes = list(data)
            else:
                raise InputError(
                    f"Layer '{layer.name}' is {data.ndim}D: give 2D micrographs or a 3D stack."
                )
            for i, plane in enumerate(planes):
                images.append(plane)
                names.append(layer.name if len(planes) == 1 else f"{layer.name}[{i}]")
                sources.append(index)
            described.append(
                {
                    "name": layer.name,
                    "kind": "labels" if isinstance(layer, Labels) else "image",
                    "scale": tuple(layer.scale[-2:]),
                    "translate": tuple(layer.translate[-2:]),
                    "units": tuple(layer.units[-2:]) if hasattr(layer, "units") else None,
                }
            )
        options = self._options()
        floors = []
        for image in images:
            with contextlib.suppress(MicrostructureError):  # too small to split in quadrants
                floors.append(metrics.floor(image)["e_s2"])
        material = self.material_edit.text().strip() or default_material(names)
        return PruningRequest(
            images=tuple(images),
            names=tuple(names),
            sources=tuple(sources),
            layers=tuple(described),
            material=material,
            options=options,
            floor=float(np.mean(floors)) if floors else None,
        )

    def _started(self, request: PruningRequest) -> None:
        self._request = request
        self._rows = []
        self.profile = None
        self.result_layers = []
        self.save_button.setEnabled(False)
        self.recommendation_label.setText("")
        self._set_running(True)
        if not self._docked:
            self._docked = True
            self._dock(self.plot, DOCK_PLOT, "right")
            self._dock(self.table, DOCK_TABLE, "bottom")
        self._show_rows()
        names = ", ".join(c.name for c in request.options.configurations)
        self.status.setText(
            f"Loading the network… {len(request.images)} image(s) of {request.material}; {names}"
        )

    def _stopping(self) -> tuple[str, str]:
        """Stop after the current optimizer step; the finished configurations stay."""
        return STOP, "Stopping after the current step (the finished configurations are kept)…"

    def _set_running(self, running: bool) -> None:
        if running:
            self.progress.setValue(0)
            self.progress.setFormat("loading…")

    # ------------------------------------------------------------------------------ slots (main thread)
    def _on_yielded(self, message) -> None:
        self.progress.setValue(int(round(1000 * message.fraction_done)))
        self.progress.setFormat(describe(message))
        if message.step is not None and not self.status.text().startswith("Stopping"):
            step = message.step
            self.status.setText(
                f"{message.configuration}: image {message.image + 1}/{message.n_images}, "
                f"step {step.iteration}/{step.total}, level {step.level + 1}/{step.n_levels}"
            )
        if message.finished:
            self._rows.append(message.result)
            self._show_rows()
            if message.best is not None:
                self._add_layer(
                    message.configuration, message.best, message.best_source, message.result
                )

    def _live_profile(self):
        from dataclasses import asdict

        from ..core.pruning import PruningProfile, recommend

        request = self._request
        options = request.options
        recommendation = asdict(recommend(self._rows, options.tolerance, request.floor))
        return PruningProfile(
            material=request.material,
            configurations=[
                {"name": c.name, "layers": list(c.layers), "kind": c.kind}
                for c in options.configurations
            ],
            rows=list(self._rows),
            recommendation=recommendation,
            weights={},
            image_shapes=[list(im.shape) for im in request.images],
            floor={"e_s2_mean": request.floor},
            partial=True,
        )

    def _show_rows(self) -> None:
        profile = self.profile if self.profile is not None else self._live_profile()
        self.table.set_frame(profile.table())
        self.plot.draw(profile if profile.rows else None)
        reason = profile.recommendation.get("reason") if profile.rows else ""
        self.recommendation_label.setText(f"Recommendation: {reason}" if reason else "")

    def _add_layer(
        self, configuration: str, image: np.ndarray, source: int | None, row: dict
    ) -> None:
        request = self._request
        index = request.sources[source or 0]
        info = request.layers[index]
        name = f"{request.names[source or 0]} {configuration}"
        metadata = {
            "pruning_study": {
                "material": request.material,
                "configuration": configuration,
                "layers": row.get("layers"),
                "source": request.names[source or 0],
                "e_s2": float(row.get("e_s2_mean", math.nan)),
                "note": "the configuration's reconstruction with the lowest e_S2",
                "options": {
                    item.name: getattr(request.options, item.name)
                    for item in fields(request.options)
                    if item.name != "configurations"
                },
            }
        }
        kwargs = {
            "name": name,
            "scale": info["scale"],
            "translate": info["translate"],
            "metadata": metadata,
        }
        if info.get("units") is not None:
            kwargs["units"] = info["units"]
        if info["kind"] == "labels" and np.issubdtype(image.dtype, np.integer):
            layer = self.viewer.add_labels(image, **kwargs)
        else:
            layer = self.viewer.add_image(image, colormap="gray", **kwargs)
        self.result_layers.append(layer)
        self._refresh_layers()  # results are not offered as inputs of this study

    def _on_returned(self, result) -> None:
        self.profile = result
        self._show_rows()
        self.save_button.setEnabled(True)
        total = result.provenance.get("total_seconds", float("nan"))
        state = (
            f"stopped: {len(result.rows)} of {len(result.configurations)} configurations finished"
            if result.partial
            else "finished"
        )
        self.status.setText(f"Study {state} in {total:.0f} s.")
        if self.grid_check.isChecked() and self.result_layers:
            self.viewer.canvas.grid.enabled = True

    def _on_finished(self) -> None:
        self._set_running(False)
        if self.profile is not None:
            self.progress.setValue(1000 if not self.profile.partial else self.progress.value())
            self.progress.setFormat("done" if not self.profile.partial else "stopped")
        else:
            self.progress.setFormat("idle")
        self.study_finished.emit()

    # ------------------------------------------------------------------------------ files
    def save_profile(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the last study's profile as JSON, all or nothing, never over a file a layer was
        read from (raises if there is no profile or the file cannot be written)."""
        from ..report import write_report

        if self.profile is None:
            raise RuntimeError("No pruning study has finished yet.")
        path = Path(path)
        inputs = layer_files(self.viewer)
        files = {path.name: self.profile.save}
        write_report(path.parent, files, overwrite=overwrite, inputs=inputs)
        return path

    def _ask_save_profile(self) -> None:
        if self.profile is None:
            return
        default = re.sub(r"[^A-Za-z0-9._-]+", "_", self.profile.material) + "_pruning.json"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the pruning profile", default, "JSON (*.json)"
        )
        if path:
            self.save_profile_as(path)

    def save_profile_as(self, path: str | os.PathLike) -> Path | None:
        """Save button: write the profile to ``path``, replacing a file there (the file dialog
        has asked); None, with a notification, when it cannot be written (nothing is)."""
        try:
            written = self.save_profile(path, overwrite=True)
        except (OSError, MicrostructureError) as error:
            show_error(f"Could not write {path} (nothing was written): {error}")
            return None
        show_info(f"Wrote {written}")
        return written
