"""The plots dock: normalized autocovariance and lineal path of the original and the
reconstructions, and the loss curve, on matplotlib canvases in napari's theme colours.

:func:`statistics_curves` (no Qt) computes the curves from the core's metrics; the widget runs it
in its worker thread and hands the result to :class:`ResultsPlot`, which only draws (on the main
thread). Each plot is a figure of its own, so that the live loss curve redraws one small axes
(about 15 ms) and the end of a run draws the two statistics plots in two turns of the event
loop, not one long freeze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..core import metrics
from ..core.errors import InputError

__all__ = ["Curves", "ResultsPlot", "statistics_curves", "volume_curves"]

#: Seconds between redraws of the live loss curve.
LOSS_REDRAW_INTERVAL = 1.0
#: Milliseconds between the draws of the two statistics canvases.
SECOND_DRAW_DELAY_MS = 30


@dataclass
class Curves:
    """Descriptor curves of one run, per phase: ``{phase: {image name: array}}``."""

    phases: list
    radius: np.ndarray
    autocovariance: dict = field(default_factory=dict)
    length: np.ndarray | None = None
    lineal_path: dict = field(default_factory=dict)
    note: str = ""
    #: What the lineal path of an image averages over, for the plot's title.
    lineal_path_axes: str = "mean of x and y"


def _autocovariance(image: np.ndarray, phase, max_radius: int) -> np.ndarray:
    try:
        return metrics.two_point(image, phase, max_radius=max_radius).autocovariance
    except InputError:  # the phase is absent from this image, or the image is too small
        return np.full(max_radius + 1, np.nan)


def _lineal_path(image: np.ndarray, phase, max_length: int) -> np.ndarray:
    try:
        curves = [
            metrics.lineal_path(image, phase, axis, max_length).probability for axis in (0, 1)
        ]
    except InputError:
        return np.full(max_length, np.nan)
    return np.mean(curves, axis=0)


def statistics_curves(
    original: np.ndarray, images: dict[str, np.ndarray], note: str = ""
) -> Curves:
    """Normalized autocovariance ``C(r)`` and lineal path ``L(l)`` (mean of the two axes) of
    every phase of ``original`` (integer labels) and of each image in ``images``, on the radii
    and lengths ``1 .. min(original.shape) // 4`` that the errors use."""
    max_length = metrics.default_max_length(original.shape)
    phases = [p.item() if isinstance(p, np.generic) else p for p in metrics.phases_of(original)]
    curves = Curves(
        phases, np.arange(max_length + 1), length=np.arange(1, max_length + 1), note=note
    )
    named = {"original": original, **images}
    for phase in phases:
        curves.autocovariance[phase] = {
            n: _autocovariance(im, phase, max_length) for n, im in named.items()
        }
        curves.lineal_path[phase] = {
            n: _lineal_path(im, phase, max_length) for n, im in named.items()
        }
    return curves


def volume_curves(micrograph: np.ndarray, volume: np.ndarray, name: str, note: str = "") -> Curves:
    """The micrograph's ``C(r)`` and ``L(l)`` (mean of its two axes) next to the volume's, per
    axis: ``C(r)`` of the slices normal to each axis (pooled over the slices) and ``L(l)`` along
    each axis. ``micrograph`` and ``volume`` are integer phase labels."""
    from ..core.volume import AXIS_NAMES, slice_two_point

    max_length = metrics.default_max_length(micrograph.shape)
    phases = [p.item() if isinstance(p, np.generic) else p for p in metrics.phases_of(micrograph)]
    curves = Curves(
        phases,
        np.arange(max_length + 1),
        length=np.arange(1, max_length + 1),
        note=note,
        lineal_path_axes="micrograph: mean of its axes; volume: along each axis",
    )
    for phase in phases:
        autocovariance = {"original (micrograph)": _autocovariance(micrograph, phase, max_length)}
        lineal_path = {"original (micrograph)": _lineal_path(micrograph, phase, max_length)}
        present = bool((volume == phase).any())
        for axis, label in enumerate(AXIS_NAMES):
            autocovariance[f"{name}, slices ⊥{label}"] = (
                slice_two_point(volume, phase, axis, max_length).autocovariance
                if present
                else np.full(max_length + 1, np.nan)
            )
            lineal_path[f"{name}, along {label}"] = (
                metrics.lineal_path(volume, phase, axis, max_length).probability
                if present
                else np.full(max_length, np.nan)
            )
        curves.autocovariance[phase] = autocovariance
        curves.lineal_path[phase] = lineal_path
    return curves


def theme_colours(viewer) -> dict:
    """Background, panel, text, grid and accent colours of the viewer's napari theme (hex)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        dark = theme.type == "dark"
        return {
            "background": theme.background.as_hex(),
            "axes": theme.canvas.as_hex() if dark else theme.foreground.as_hex(),
            "text": theme.text.as_hex(),
            "grid": theme.highlight.as_hex(),
            "accent": "#ffbf00" if dark else "#d62728",
        }
    except Exception:  # noqa: BLE001 - an unknown theme falls back to napari's dark colours
        return {
            "background": "#23242b",
            "axes": "#000000",
            "text": "#f0f1f2",
            "grid": "#61696e",
            "accent": "#ffbf00",
        }


def _series_colours(n: int) -> list:
    from matplotlib import colormaps

    cycle = colormaps["tab10"].colors
    return [cycle[(i + 1) % len(cycle)] for i in range(n)]  # tab10's blue stays for no one


class ResultsPlot(QWidget):
    """Docked plots of the latest run: statistics of the original and the reconstructions for one
    phase (chosen in a box), and the loss curve, updated live during a run."""

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._viewer = napari_viewer
        self._curves: Curves | None = None
        self._loss: list[float] = []
        self._loss_title = "loss"
        self._loss_dirty = False
        self._last_loss_draw = -math.inf

        self.phase_box = QComboBox()
        self.phase_box.setToolTip("Phase whose statistics are plotted")
        self.phase_box.currentIndexChanged.connect(self._draw_statistics)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Phase:"))
        top.addWidget(self.phase_box, 1)

        self.figures = {
            name: Figure(figsize=(4.0, 2.3), dpi=90)
            for name in ("autocovariance", "lineal_path", "loss")
        }
        self.canvases = {name: FigureCanvasQTAgg(figure) for name, figure in self.figures.items()}
        self.ax_c, self.ax_lp, self.ax_loss = (self.figures[n].add_subplot() for n in self.figures)
        for figure in self.figures.values():
            figure.subplots_adjust(left=0.15, right=0.97, top=0.86, bottom=0.14)
        (self._loss_line,) = self.ax_loss.plot([], [], lw=1.2)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.note)
        for canvas in self.canvases.values():
            canvas.setMinimumHeight(130)
            layout.addWidget(canvas, 1)

        self._viewer.events.theme.connect(self._on_theme)
        self._apply_theme()
        self._draw_statistics()
        self._draw_loss()

    # ----------------------------------------------------------------------------- theme
    def _on_theme(self, event=None) -> None:
        self._apply_theme()
        self._draw_statistics()
        self._draw_loss()

    def _apply_theme(self) -> None:
        colours = theme_colours(self._viewer)
        self._colours = colours
        for figure in self.figures.values():
            figure.set_facecolor(colours["background"])
        for ax in (self.ax_c, self.ax_lp, self.ax_loss):
            self._style_axes(ax)
        self._loss_line.set_color(colours["text"])

    def _style_axes(self, ax) -> None:
        colours = self._colours
        ax.set_facecolor(colours["axes"])
        for spine in ax.spines.values():
            spine.set_color(colours["text"])
        ax.tick_params(colors=colours["text"], labelsize=8)
        ax.xaxis.label.set_color(colours["text"])
        ax.yaxis.label.set_color(colours["text"])
        ax.title.set_color(colours["text"])

    # ----------------------------------------------------------------------------- statistics
    def set_curves(self, curves: Curves | None) -> None:
        """Show the statistics of a run (None clears them)."""
        self._curves = curves
        self.phase_box.blockSignals(True)
        self.phase_box.clear()
        if curves is not None:
            self.phase_box.addItems([str(p) for p in curves.phases])
            # the rarest phase is usually the interesting one (grain boundaries, pores)
            rarest = min(
                range(len(curves.phases)),
                key=lambda i: np.nan_to_num(
                    next(iter(curves.lineal_path[curves.phases[i]].values()))[0], nan=1.0
                ),
            )
            self.phase_box.setCurrentIndex(rarest)
        self.phase_box.blockSignals(False)
        self.note.setText(curves.note if curves is not None else "")
        self.note.setVisible(bool(curves is not None and curves.note))
        self._draw_statistics()

    def _lineal_path_axes(self) -> str:
        return self._curves.lineal_path_axes if self._curves is not None else "mean of x and y"

    def _draw_statistics(self, *_args) -> None:
        for ax in (self.ax_c, self.ax_lp):
            ax.clear()
            self._style_axes(ax)
        self.ax_c.set_title("normalized autocovariance C(r), r in pixels", fontsize=9)
        self.ax_lp.set_title(
            f"lineal path L(l), l in pixels ({self._lineal_path_axes()})", fontsize=9
        )
        curves = self._curves
        index = self.phase_box.currentIndex()
        if curves is not None and 0 <= index < len(curves.phases):
            phase = curves.phases[index]
            plots = (
                (self.ax_c, curves.radius, curves.autocovariance[phase]),
                (self.ax_lp, curves.length, curves.lineal_path[phase]),
            )
            for ax, x, series in plots:
                colours = [self._colours["text"], *_series_colours(len(series) - 1)]
                for position, ((name, y), colour) in enumerate(zip(series.items(), colours)):
                    width, style = (
                        (2.0, "-") if position == 0 else (1.2, "--")
                    )  # the reference first
                    ax.plot(x, y, style, color=colour, lw=width, label=name)
            legends = [self.ax_c.legend(fontsize=7, frameon=False)]
            if list(curves.lineal_path[phase]) != list(curves.autocovariance[phase]):
                legends.append(self.ax_lp.legend(fontsize=7, frameon=False))
            for legend in legends:
                for text in legend.get_texts():
                    text.set_color(self._colours["text"])
        # Qt fires timers that are due together in one turn of the event loop: the second
        # canvas waits a little, so that the interface gets a turn between the two draws.
        self.canvases["autocovariance"].draw_idle()
        QTimer.singleShot(SECOND_DRAW_DELAY_MS, self.canvases["lineal_path"].draw_idle)

    # ----------------------------------------------------------------------------- loss
    def start_loss(self, title: str) -> None:
        """Begin a new loss curve (at the start of a run)."""
        self._loss = []
        self._loss_title = title
        self._draw_loss()

    def add_loss(self, value: float) -> None:
        """Append one step's loss; the curve redraws at most once per LOSS_REDRAW_INTERVAL."""
        import time

        self._loss.append(float(value))
        now = time.perf_counter()
        if now - self._last_loss_draw >= LOSS_REDRAW_INTERVAL:
            self._last_loss_draw = now
            self._draw_loss()

    def set_loss(self, history, title: str | None = None) -> None:
        """Show a whole loss history (at the end of a run)."""
        self._loss = [float(v) for v in history]
        if title is not None:
            self._loss_title = title
        self._draw_loss()

    def _draw_loss(self) -> None:
        ax = self.ax_loss
        values = np.asarray(self._loss, dtype=float)
        steps = np.arange(1, values.size + 1)
        self._loss_line.set_data(steps, values)
        positive = values[np.isfinite(values) & (values > 0)]
        ax.set_yscale("log" if positive.size else "linear")
        ax.set_title(self._loss_title, fontsize=9)
        if positive.size:
            ax.set_xlim(0, max(steps[-1], 2))
            low, high = positive.min(), positive.max()
            ax.set_ylim(low / 1.5, high * 1.5)
        self.canvases["loss"].draw_idle()

    # ----------------------------------------------------------------------------- files
    #: Names of the files of the three plots, in the order :meth:`save` takes them.
    FILES = ("autocovariance.png", "lineal_path.png", "loss.png")

    def save(self, paths: list[Path]) -> list[Path]:
        """Write the three plots as PNG files to ``paths`` (one per entry of :attr:`FILES`, in
        that order); return the paths."""
        paths = [Path(path) for path in paths]
        for figure, path in zip(self.figures.values(), paths, strict=True):
            figure.savefig(path, dpi=150, format="png", facecolor=figure.get_facecolor())
        return paths
