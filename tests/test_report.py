"""The report module: the one writer of a job's files, and one table for the command line and
the widgets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import ndimage

from napari_microstructure import load_sample, report
from napari_microstructure.cli import main
from napari_microstructure.core.decoder import reconstruct

PNG = b"\x89PNG\r\n\x1a\n"
#: A small job: one level of a few steps on the CPU.
JOB = {"iterations": 3, "levels": 1, "device": "cpu", "seed": 0}


def _files(tmp_path):
    table = pd.DataFrame({"name": ["original", "sample 1"], "e_S2": [0.0, 0.012]})
    figure = report.plot_parity([0.1, 0.2, 0.3], [0.12, 0.19, 0.33], title="D_eff_x")
    return {
        "metrics.csv": table,
        "parity.png": figure,
        "provenance.json": {"seed": 0, "steps": 3},
        "model.txt": lambda path: path.write_text("a model"),
    }


def test_write_report_writes_each_kind_of_content(tmp_path):
    written = report.write_report(tmp_path / "report", _files(tmp_path))
    assert [p.name for p in written] == [
        "metrics.csv",
        "parity.png",
        "provenance.json",
        "model.txt",
    ]
    folder = tmp_path / "report"
    assert list(pd.read_csv(folder / "metrics.csv").columns) == ["name", "e_S2"]
    assert (folder / "parity.png").read_bytes()[:8] == PNG
    assert json.loads((folder / "provenance.json").read_text()) == {"seed": 0, "steps": 3}
    assert (folder / "model.txt").read_text() == "a model"


def test_write_report_is_all_or_nothing(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "metrics.csv").write_text("an earlier table")
    files = _files(tmp_path)
    with pytest.raises(FileExistsError):
        report.write_report(folder, files)
    assert [p.name for p in folder.iterdir()] == ["metrics.csv"]

    def fail(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        report.write_report(folder, {**files, "model.txt": fail}, overwrite=True)
    assert [p.name for p in folder.iterdir()] == ["metrics.csv"]
    assert (folder / "metrics.csv").read_text() == "an earlier table"
    with pytest.raises(TypeError, match="cannot write a ndarray"):
        report.write_report(folder, {"volume.tif": np.zeros(3)}, overwrite=True)
    assert (folder / "metrics.csv").read_text() == "an earlier table"


def test_profile_and_parity_figures_are_drawn_without_a_display():
    from napari_microstructure.core.pruning import PruningProfile

    empty = PruningProfile("alloy", [], [], {}, {}, [])
    figure = report.plot_profile(empty)
    assert isinstance(figure, Figure) and "alloy" in figure.axes[0].get_title()
    parity = report.plot_parity([0.0, 0.1, 0.2], [0.01, 0.12, 0.18], title="D_eff_x")
    assert parity.axes[0].get_title() == "D_eff_x"


def _widget_table(image, kind, names):
    """The table the reconstruction widget shows and saves for the same job."""
    pytest.importorskip("napari")
    from napari_microstructure.widgets.reconstruction import RunRequest, analyse

    request = RunRequest(
        image=image,
        input_name="alloy",
        kind=kind,
        output_names=tuple(names),
        numbers=(1,),
        partial_suffix=" (partial)",
        layer_kwargs={},
        volume=False,
        output_kwargs={},
        image_kwargs={},
        note="",
        options={},
        run=1,
        torch_threads=1,
    )
    return analyse(request, reconstruct(image, kind=kind, **JOB)).table


@pytest.mark.weights
@pytest.mark.parametrize("kind", ["labels", "grey"])
def test_the_command_line_and_the_widget_write_the_same_table(tmp_path, kind):
    alloy = load_sample("alloy_64")
    image = alloy if kind == "labels" else ndimage.gaussian_filter(alloy.astype(float), 1.5)
    source = tmp_path / "alloy.npy"
    np.save(source, image)
    options = [f"--{key}={value}" for key, value in JOB.items()]
    command = ["reconstruct", str(source), "--out", str(tmp_path), "--kind", kind, "--quiet"]
    assert main([*command, *options]) == 0
    written = pd.read_csv(tmp_path / "alloy_metrics.csv", keep_default_na=False)
    shown = _widget_table(image, kind, ["alloy_reconstruction_1"])
    assert list(written.columns) == list(shown.columns)
    assert set(report.error_columns(kind)) <= set(written.columns)
    assert list(written["name"]) == list(shown["name"])
    errors = list(report.error_columns(kind))
    np.testing.assert_allclose(written[errors].to_numpy(float), shown[errors].to_numpy(float))
