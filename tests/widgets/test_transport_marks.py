"""The reconstruction widget's results table marks transport values outside tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microstructure import load_sample, report

pytestmark = pytest.mark.gui
pytest.importorskip("taufactor")


def _cells(table, row: int) -> dict:
    """Column name -> the QTableWidgetItem of ``row``."""
    header = [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]
    return {name: table.item(row, j) for j, name in enumerate(header)}


def test_a_cut_network_is_marked_with_a_colour_and_a_reason(make_napari_viewer):
    from napari_microstructure.widgets import ReconstructionWidget
    from napari_microstructure.widgets._table import MARKED

    alloy = load_sample("alloy_64")
    cut = alloy.copy()
    cut[:, 30:32] = 1  # grain across the boundary network: phase 0 no longer spans along x
    rows = report.run_table(
        alloy, [alloy, cut], ["copy", "cut"], run=1, seconds=1.0, final_loss=[0, 0], partial=False
    )
    viewer = make_napari_viewer()
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Microstructure reconstruction")
    widget.table.add_rows(rows)
    view = widget.table.table
    names = [view.item(i, 1).text() for i in range(view.rowCount())]
    cut_cells, copy_cells = _cells(view, names.index("cut")), _cells(view, names.index("copy"))
    marked = cut_cells["D_eff[0] x"]
    assert marked.background().color().name() == MARKED
    assert "original" in marked.toolTip() and "tolerance" in cut_cells["spans[0]"].toolTip()
    assert cut_cells["spans[0]"].text() == "y" and copy_cells["spans[0]"].text() == "y x"
    assert cut_cells["e_S2"].toolTip() == ""  # not a transport value
    assert not [c for c, item in copy_cells.items() if item.toolTip()]  # the copy: no marks
    assert np.isclose(float(copy_cells["D_eff[0] x"].text()), rows["D_eff[0] x"].iloc[0], 1e-3)
