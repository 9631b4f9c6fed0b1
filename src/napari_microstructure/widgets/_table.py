"""The results table dock: :class:`ResultsTable` shows rows (a DataFrame) and saves them as CSV.

The rows of a reconstruction run come from :mod:`napari_microstructure.report` (no Qt), which
the command line writes too; Save as CSV writes them with its
:func:`~napari_microstructure.report.write_report`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtGui import QColor
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

from ._layers import layer_files

__all__ = ["MARKED", "ResultsTable"]

#: The background of a cell outside tolerance (white text; legible in napari's dark and light
#: themes).
MARKED = "#b03a2e"


class ResultsTable(QWidget):
    """Docked table of result rows (a DataFrame), with "Save as CSV" and, optionally, "Clear".

    Subclasses choose the columns the view shows (:attr:`shown_columns`; the CSV always has them
    all), a boolean column whose true rows are bold (:attr:`highlight_column`) and the default
    file name (``default_file`` replaces it). ``marks``, a function of the rows that returns ``{(row, column): reason}``
    (:func:`~napari_microstructure.report.outside_tolerance`), colours those cells
    (:data:`MARKED`) and gives them the reason as a tooltip.
    """

    #: Columns the view shows (None: every column).
    shown_columns: tuple[str, ...] | None = None
    #: A boolean column whose true rows are shown in bold.
    highlight_column: str | None = None
    #: How a false boolean is shown.
    false_text = "no"
    default_file = "reconstruction_results.csv"

    def __init__(
        self,
        viewer=None,
        parent: QWidget | None = None,
        clearable: bool = True,
        marks: Callable | None = None,
        default_file: str | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._marks = marks
        if default_file is not None:
            self.default_file = default_file
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

        self.set_frame(
            rows if self.frame.empty else pd.concat([self.frame, rows], ignore_index=True)
        )

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
        shown = (
            list(frame.columns)
            if self.shown_columns is None
            else [c for c in self.shown_columns if c in frame.columns]
        )
        highlight = (
            frame[self.highlight_column].astype(bool).tolist()
            if self.highlight_column in frame.columns
            else [False] * len(frame)
        )
        self.table.clear()
        self.table.setRowCount(len(frame))
        self.table.setColumnCount(len(shown))
        self.table.setHorizontalHeaderLabels([str(c) for c in shown])
        marks = self._marks(frame) if self._marks is not None else {}
        for i, (row, bold) in enumerate(zip(frame[shown].itertuples(index=False), highlight)):
            for j, value in enumerate(row):
                item = QTableWidgetItem(self._format(value))
                if bold:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                reason = marks.get((i, shown[j]))
                if reason is not None:
                    item.setBackground(QColor(MARKED))
                    item.setForeground(QColor("white"))
                    item.setToolTip(reason)
                self.table.setItem(i, j, item)
        self.save_button.setEnabled(not frame.empty)

    def save_csv(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the whole table to ``path`` (CSV, full precision), all or nothing, and return
        the path; never a file a layer of the viewer was read from. ``overwrite`` replaces an
        existing file (the file dialog has asked)."""
        from ..report import write_report

        path = Path(path)
        inputs = layer_files(self._viewer) if self._viewer is not None else []
        write_report(path.parent, {path.name: self.frame}, overwrite=overwrite, inputs=inputs)
        return path

    def _ask_and_save(self) -> None:
        from napari.utils.notifications import show_error, show_info

        from ..core.errors import MicrostructureError

        path, _ = QFileDialog.getSaveFileName(
            self, "Save the table", self.default_file, "CSV (*.csv)"
        )
        if not path:
            return
        try:
            show_info(f"Wrote {self.save_csv(path)}")
        except (OSError, MicrostructureError) as error:
            show_error(f"Could not write {path} (nothing was written): {error}")
