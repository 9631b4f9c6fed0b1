"""The results table dock: one row per reconstruction, one for the original and one for its
floor, with the fidelity errors, the connectivity of each phase and the run time.

:func:`run_table` (no Qt) builds a run's rows from the core's metrics; the widget calls it in its
worker thread. :class:`ResultsTable` shows the rows of every run of the session and saves them
as CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import metrics
from ..core.errors import InputError

__all__ = ["ResultsTable", "run_table", "volume_run_table"]


def run_table(
    original: np.ndarray,
    images: list[np.ndarray],
    names: list[str],
    *,
    run: int,
    seconds: float,
    final_loss: list[float],
    partial: bool,
):
    """Rows of one run: the original, its floor and each reconstruction.

    ``original`` and ``images`` are integer phase labels (a grey run passes them thresholded).
    Columns: ``run``, ``name``, ``e_VF``, ``e_S2``, ``e_LP`` (worst phase, see
    :func:`napari_microstructure.core.metrics.compare`), per phase ``p`` ``clusters[p]`` and
    ``largest cluster[p]`` (fraction of the phase in its largest cluster), ``final loss``,
    ``run time (s)`` and ``partial``. The floor row holds the errors between two disjoint
    quadrants of the original (:func:`~napari_microstructure.core.metrics.floor`).
    """
    import pandas as pd

    table = metrics.compare(original, images, names=names)
    phases = [p.item() if isinstance(p, np.generic) else p for p in metrics.phases_of(original)]
    rows = []
    for index, record in enumerate(table.to_dict("records")):
        row = {
            "run": run,
            "name": record["name"],
            "e_VF": record["e_vf"],
            "e_S2": record["e_s2"],
            "e_LP": record["e_lp"],
        }
        for phase in phases:
            row[f"clusters[{phase}]"] = record[f"n_clusters[phase {phase}]"]
            row[f"largest cluster[{phase}]"] = record[f"largest_cluster_fraction[phase {phase}]"]
        is_reconstruction = index > 0
        row["final loss"] = final_loss[index - 1] if is_reconstruction and index - 1 < len(final_loss) else np.nan
        row["run time (s)"] = seconds if is_reconstruction else np.nan
        row["partial"] = partial if is_reconstruction else ""
        rows.append(row)
    try:
        ref = metrics.floor(original)
        floor_row = {"run": run, "name": "floor (two quadrants of the original)",
                     "e_VF": ref["e_vf"], "e_S2": ref["e_s2"], "e_LP": ref["e_lp"]}
        rows.insert(1, floor_row)
    except InputError:  # an original too small to split in quadrants has no floor
        pass
    frame = pd.DataFrame(rows)
    return frame[[c for c in rows[0] if c in frame.columns] + [c for c in frame.columns if c not in rows[0]]]



def volume_run_table(
    micrograph: np.ndarray,
    volume: np.ndarray,
    name: str,
    *,
    run: int,
    seconds: float,
    final_loss: list[float],
    partial: bool,
):
    """Rows of one 3D run: the micrograph, its floor and the volume, per axis.

    ``micrograph`` (2D) and ``volume`` (3D) are integer phase labels. The volume's ``e_S2`` and
    ``e_LP`` are the worst of the three slice families; ``e_S2 ⊥z`` (and ``⊥y``, ``⊥x``) compare
    the slices normal to each axis with the micrograph
    (:func:`napari_microstructure.core.volume.compare_volume`). ``spans[p]`` lists the axes
    along which one cluster of phase ``p`` connects opposite faces.
    """
    import pandas as pd

    from ..core.volume import AXIS_NAMES, compare_volume

    phases = [p.item() if isinstance(p, np.generic) else p for p in metrics.phases_of(micrograph)]
    scores = compare_volume(micrograph, volume)
    row = {"run": run, "name": name, "e_VF": scores["e_vf"], "e_S2": scores["e_s2"], "e_LP": scores["e_lp"]}
    for axis, label in enumerate(AXIS_NAMES):
        row[f"e_S2 ⊥{label}"] = scores[f"e_s2_axis{axis}"]
    for axis, label in enumerate(AXIS_NAMES):
        row[f"e_LP ⊥{label}"] = scores[f"e_lp_axis{axis}"]
    original = {"run": run, "name": "micrograph (2D)", "e_VF": 0.0, "e_S2": 0.0, "e_LP": 0.0}
    for phase in phases:
        conn = metrics.connectivity(micrograph, phase)
        original[f"clusters[{phase}]"] = conn.n_clusters
        original[f"largest cluster[{phase}]"] = conn.largest_cluster_fraction
        original[f"spans[{phase}]"] = " ".join(AXIS_NAMES[1:][a] for a, spans in enumerate(conn.spans) if spans)
        row[f"clusters[{phase}]"] = scores.get(f"n_clusters[phase {phase}]", 0)
        row[f"largest cluster[{phase}]"] = scores.get(f"largest_cluster_fraction[phase {phase}]", np.nan)
        row[f"spans[{phase}]"] = " ".join(AXIS_NAMES[a] for a in range(3) if scores.get(f"spans_{a}[phase {phase}]"))
    row["final loss"] = final_loss[0] if final_loss else np.nan
    row["run time (s)"] = seconds
    row["partial"] = partial
    rows = [original, row]
    try:
        ref = metrics.floor(micrograph)
        rows.insert(1, {"run": run, "name": "floor (two quadrants of the micrograph)",
                        "e_VF": ref["e_vf"], "e_S2": ref["e_s2"], "e_LP": ref["e_lp"]})
    except InputError:
        pass
    frame = pd.DataFrame(rows)
    return frame[list(row)]


class ResultsTable(QWidget):
    """Docked table of result rows (a DataFrame), with "Save as CSV" and, optionally, "Clear".

    Subclasses choose the columns the view shows (:attr:`shown_columns`; the CSV always has them
    all), a boolean column whose true rows are bold (:attr:`highlight_column`) and the default
    file name.
    """

    #: Columns the view shows (None: every column).
    shown_columns: tuple[str, ...] | None = None
    #: A boolean column whose true rows are shown in bold.
    highlight_column: str | None = None
    #: How a false boolean is shown.
    false_text = "no"
    default_file = "reconstruction_results.csv"

    def __init__(self, parent: QWidget | None = None, clearable: bool = True) -> None:
        super().__init__(parent)
        import pandas as pd

        self.frame = pd.DataFrame()
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(120)
        self.save_button = QPushButton("Save as CSV…")
        self.save_button.setToolTip("Write the whole table (every column) to a CSV file")
        self.save_button.clicked.connect(self._ask_and_save)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        if clearable:
            self.clear_button = QPushButton("Clear")
            self.clear_button.setToolTip("Remove every row (the layers stay)")
            self.clear_button.clicked.connect(self.clear)
            buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self._refresh()

    def add_rows(self, rows) -> None:
        """Append rows (a DataFrame) and refresh the view."""
        import pandas as pd

        self.set_frame(rows if self.frame.empty else pd.concat([self.frame, rows], ignore_index=True))

    def set_frame(self, frame) -> None:
        """Show a whole table (a DataFrame)."""
        self.frame = frame.copy()
        self._refresh()

    def clear(self) -> None:
        import pandas as pd

        self.set_frame(pd.DataFrame())

    def _format(self, value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else self.false_text
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)

    def _refresh(self) -> None:
        frame = self.frame
        shown = list(frame.columns) if self.shown_columns is None else [c for c in self.shown_columns if c in frame.columns]
        highlight = frame[self.highlight_column].astype(bool).tolist() if self.highlight_column in frame.columns else [False] * len(frame)
        self.table.clear()
        self.table.setRowCount(len(frame))
        self.table.setColumnCount(len(shown))
        self.table.setHorizontalHeaderLabels([str(c) for c in shown])
        for i, (row, bold) in enumerate(zip(frame[shown].itertuples(index=False), highlight)):
            for j, value in enumerate(row):
                item = QTableWidgetItem(self._format(value))
                if bold:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(i, j, item)
        self.save_button.setEnabled(not frame.empty)

    def save_csv(self, path: str | Path) -> Path:
        """Write the whole table to ``path`` (CSV, full precision) and return the path."""
        path = Path(path)
        self.frame.to_csv(path, index=False)
        return path

    def _ask_and_save(self) -> None:
        from napari.utils.notifications import show_error, show_info

        path, _ = QFileDialog.getSaveFileName(self, "Save the table", self.default_file, "CSV (*.csv)")
        if not path:
            return
        try:
            show_info(f"Wrote {self.save_csv(path)}")
        except OSError as error:
            show_error(f"Could not write {path}: {error}")
