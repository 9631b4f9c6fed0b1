"""Transport checks: connectivity and TauFactor's D_eff per phase and axis, and their columns."""

import math

import numpy as np
import pytest

from napari_microstructure import load_sample, report
from napari_microstructure.core.physics import transport
from napari_microstructure.core.transport_checks import (
    TOLERANCE,
    relative_difference,
    transport_record,
)

pytest.importorskip("taufactor")


def channel(width: int, side: int = 32) -> np.ndarray:
    """Phase 1: one straight channel of ``width`` columns along axis 0 (y); phase 0 elsewhere."""
    image = np.zeros((side, side), dtype=np.uint8)
    image[:, 4 : 4 + width] = 1
    return image


def _table(original, images, **options):
    names = [f"r{i}" for i in range(1, len(images) + 1)]
    losses = [0.0] * len(images)
    return report.run_table(
        original, images, names, run=1, seconds=1.0, final_loss=losses, partial=False, **options
    )


def test_a_straight_channel_spans_along_it_with_d_eff_equal_to_its_fraction():
    record = transport_record(channel(8)).of(1)
    assert record.connectivity.spans == (True, False)
    assert record.d_eff[0] == pytest.approx(0.25, rel=1e-3)  # 8 of 32 columns
    assert math.isnan(record.d_eff[1])  # no D_eff across the channel
    assert (
        record.connectivity.n_clusters == 1 and record.connectivity.largest_cluster_fraction == 1
    )


def test_a_blocked_phase_does_not_span_and_has_no_d_eff():
    islands = np.zeros((32, 32), dtype=np.uint8)
    islands[4:8, 4:8] = islands[20:24, 12:30] = 1
    record = transport_record(islands, phases=[0, 1, 2])
    assert record.of(1).connectivity.spans == (False, False)
    assert all(math.isnan(d) for d in record.of(1).d_eff)
    assert record.of(1).connectivity.n_clusters == 2
    assert record.of(2).connectivity.n_clusters == 0  # a phase the image lacks
    table = _table(islands, [islands])
    assert list(table["spans[1]"].iloc[[0, 2]]) == ["", ""]  # the original and r1
    assert not [c for c in table.columns if c.startswith("D_eff[1]")]  # no phase-1 D_eff
    assert table["D_eff[0] x"].iloc[0] == pytest.approx(transport(islands, 0, 1).d_eff)


def test_the_table_gives_each_reconstruction_s_d_eff_relative_to_the_original():
    table = _table(channel(8), [channel(8), channel(4), np.zeros((32, 32), np.uint8)])
    rows = dict(zip(table["name"], table.to_dict("records")))
    assert rows["r1"]["D_eff[1] y rel diff"] == 0
    assert rows["r2"]["D_eff[1] y"] == pytest.approx(0.125, rel=1e-3)
    assert rows["r2"]["D_eff[1] y rel diff"] == pytest.approx(-0.5, rel=1e-2)
    assert rows["r3"]["spans[1]"] == "" and math.isnan(rows["r3"]["D_eff[1] y"])
    assert rows["original"]["spans[1]"] == "y" and rows["original"]["spans[0]"] == "y"
    assert rows["r2"]["clusters/Mpx[1]"] == pytest.approx(1e6 / 32**2)
    assert table["transport (s)"].iloc[[0, 2, 3, 4]].gt(0).all()
    marks = report.outside_tolerance(table)
    assert (3, "D_eff[1] y") in marks and "-50%" in marks[3, "D_eff[1] y"]
    assert (4, "spans[1]") in marks and (4, "D_eff[1] y") in marks
    assert not [key for key in marks if key[0] in (0, 1, 2)]  # the original, floor, r1
    assert relative_difference(0.3, 0.0) != relative_difference(0.3, 0.0)  # NaN


def test_turned_off_the_table_has_its_earlier_columns_and_numbers():
    alloy = load_sample("alloy_64")
    shifted = np.roll(alloy, 7, axis=1)
    with_checks = _table(alloy, [shifted])
    without = _table(alloy, [shifted], transport=False)
    assert not {"spans[0]", "transport (s)"} & set(without.columns)
    assert list(without.columns) == [c for c in with_checks.columns if c in without.columns]
    for column in without.columns:
        assert with_checks[column].equals(without[column]), column


def test_the_alloy_s_boundary_network_spans_and_a_cut_copy_is_outside_tolerance():
    alloy = load_sample("alloy_64")
    cut = alloy.copy()
    cut[:, 30:32] = 1  # a band of grain (phase 1) across the boundary network (phase 0)
    table = _table(alloy, [alloy, cut])
    original = table.iloc[0]
    assert original["spans[0]"] == "y x" and original["spans[1]"] == ""
    assert original["D_eff[0] x"] == pytest.approx(transport(alloy, 0, 1).d_eff)
    marks = report.outside_tolerance(table)
    assert set(marks) >= {(3, "spans[0]"), (3, "D_eff[0] x"), (3, "largest cluster[0]")}
    assert not [key for key in marks if key[0] == 2]  # the copy is within tolerance
    assert TOLERANCE.d_eff == 0.10 and TOLERANCE.largest_cluster == 0.05


def test_a_volume_is_checked_in_3d_and_marked_when_it_loses_a_micrograph_s_path():
    micrograph = channel(8, side=16)
    volume = np.stack([micrograph] * 16)  # the channel extruded along z: a slab
    table = report.volume_run_table(
        micrograph, volume, "v", run=1, seconds=1.0, final_loss=[0.0], partial=False
    )
    slab = table.iloc[-1]
    assert slab["spans[1]"] == "z y" and slab["D_eff[1] z"] == pytest.approx(0.5, rel=1e-3)
    assert table.iloc[0]["D_eff[1] y"] == pytest.approx(0.5, rel=1e-3)  # the micrograph, 2D
    assert not [c for c in table.columns if c.endswith("rel diff")]
    assert report.outside_tolerance(table) == {}
    blocked = volume.copy()
    blocked[:, 8, :] = 0  # a wall across y
    table = report.volume_run_table(
        micrograph, blocked, "v", run=1, seconds=1.0, final_loss=[0.0], partial=False
    )
    assert list(report.outside_tolerance(table)) == [(len(table) - 1, "spans[1]")]
