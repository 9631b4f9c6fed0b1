"""The command line, end to end, on a 64x64 micrograph."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microstructure import load_sample
from napari_microstructure.cli import main


@pytest.mark.weights
def test_reconstruct_writes_tifs_provenance_and_metrics(tmp_path, capsys):
    source = tmp_path / "alloy.npy"
    image = load_sample("alloy_64")
    np.save(source, image)
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(source),
            "--out",
            str(out),
            "--samples",
            "2",
            "--iterations",
            "20",
            "--seed",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "alloy_metrics.csv",
        "alloy_provenance.json",
        "alloy_reconstruction_1.tif",
        "alloy_reconstruction_2.tif",
    ]
    for name in written[2:]:
        reconstruction = tifffile.imread(out / name)
        assert reconstruction.shape == (64, 64) and reconstruction.dtype == np.uint8
        assert (reconstruction == 0).sum() == (image == 0).sum()
    provenance = json.loads((out / "alloy_provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["device"] == "cpu"
    assert (
        provenance["weights"]["source"] == "normalized"
        and len(provenance["weights"]["sha256"]) == 64
    )
    assert provenance["parameters"]["iterations"] == 20 and provenance["torch"]
    assert provenance["timings"]["total_seconds"] > 0 and len(provenance["final_loss"]) == 2
    table = pd.read_csv(out / "alloy_metrics.csv")
    floor = "floor (two quadrants of the original)"
    names = ["original", floor, "alloy_reconstruction_1", "alloy_reconstruction_2"]
    assert list(table["name"]) == names
    reconstructions = table.iloc[2:]
    assert (reconstructions["e_VF"] < 1 / 4096).all() and (reconstructions["e_S2"] < 0.2).all()
    assert {"clusters[0]", "largest cluster[1]", "final loss", "run time (s)"} <= {*table.columns}
    assert provenance["floor"]["e_s2"] == pytest.approx(table["e_S2"].iloc[1])
    assert "e_S2" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(source), image)


@pytest.mark.weights
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
        (
            lambda d: (
                np.save(d / "cube.npy", np.random.default_rng(0).integers(0, 2, (3, 32, 32))),
                d / "cube.npy",
            )[1],
            "2 dimensions",
        ),
        (lambda d: (np.save(d / "flat.npy", np.zeros((32, 32))), d / "flat.npy")[1], "constant"),
        (lambda d: (np.save(d / "tiny.npy", np.eye(6)), d / "tiny.npy")[1], "at least 8x8"),
        (lambda d: (d.joinpath("bad.tif").write_bytes(b"not a tiff"), d / "bad.tif")[1], "tif"),
    ],
)
def test_bad_input_exits_with_a_message_and_writes_nothing(tmp_path, capsys, make_input, message):
    source = make_input(tmp_path)
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(source),
                "--out",
                str(out),
                "--weights",
                "random",
                "--iterations",
                "2",
            ]
        )
        == 2
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_device_and_weights_are_refused(tmp_path, capsys):
    source = tmp_path / "a.npy"
    np.save(source, load_sample("alloy_64"))
    assert main(["reconstruct", str(source), "--out", str(tmp_path / "o"), "--device", "tpu"]) == 2
    assert "Unknown device" in capsys.readouterr().err
    assert (
        main(
            [
                "reconstruct",
                str(source),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                str(tmp_path / "w.pkl"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("napari-microstructure")
    completed = subprocess.run(
        [str(script), "reconstruct", "--help"], capture_output=True, text=True
    )
    assert completed.returncode == 0 and "--periodic" in completed.stdout


# plumbing runs: random weights, few steps
FAST = ["--iterations", "2", "--levels", "1", "--weights", "random", "--device", "cpu", "--quiet"]


def test_a_small_output_gets_metrics_on_the_radii_it_allows(tmp_path):
    # 16x16 from 64x64: the original's radii go to 16, the output allows 8; this used to stop
    # after the optimization with "too small to compare" and write nothing
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    assert main(["reconstruct", str(source), "--out", str(out), "--size", "16", "16", *FAST]) == 0
    table = pd.read_csv(out / "alloy_metrics.csv")
    assert np.isfinite(table.iloc[-1][["e_VF", "e_S2", "e_LP"]].astype(float)).all()
    assert tifffile.imread(out / "alloy_reconstruction_1.tif").shape == (16, 16)


def test_the_metrics_have_transport_checks_unless_turned_off(tmp_path, capsys):
    pytest.importorskip("taufactor")
    from napari_microstructure.core.physics import transport

    alloy = load_sample("alloy_64")
    source = tmp_path / "alloy.npy"
    np.save(source, alloy)
    command = ["reconstruct", str(source), *FAST]
    assert main([*command, "--out", str(tmp_path / "on")]) == 0
    assert "transport checks:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "on" / "alloy_metrics.csv", keep_default_na=False)
    original = table.iloc[0]
    assert original["spans[0]"] == "y x"  # the boundary network spans the micrograph
    assert float(original["D_eff[0] x"]) == pytest.approx(transport(alloy, 0, 1).d_eff)
    assert {"D_eff[0] y rel diff", "clusters/Mpx[0]", "transport (s)"} <= set(table.columns)
    assert main([*command, "--out", str(tmp_path / "off"), "--no-transport-check"]) == 0
    assert "transport checks:" not in capsys.readouterr().out
    off = pd.read_csv(tmp_path / "off" / "alloy_metrics.csv", keep_default_na=False)
    assert not {"spans[0]", "D_eff[0] x", "transport (s)"} & set(off.columns)
    assert list(off.columns) == [c for c in table.columns if c in off.columns]


def test_overwrite_with_fewer_samples_leaves_no_earlier_sample(tmp_path):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    command = ["reconstruct", str(source), "--out", str(out), *FAST]
    assert main([*command, "--samples", "3"]) == 0
    assert main([*command, "--samples", "1", "--overwrite"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["alloy_metrics.csv", "alloy_provenance.json", "alloy_reconstruction_1.tif"]
    assert json.loads((out / "alloy_provenance.json").read_text())["parameters"]["samples"] == 1


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "command",
    [
        ["reconstruct", "--samples", "2"],
        ["reconstruct", "--3d", "16", "--layers", "conv1_1"],
        ["prune", "--depths", "1", "--samples", "1"],
    ],
    ids=["reconstruct", "reconstruct-3d", "prune"],
)
def test_ctrl_c_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys, command):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "alloy_reconstruction_1.tif").write_text("an earlier run's output")
    # Ctrl-C while the CSV is written: after the images and the JSON (or the profile)
    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupt)
    name, *options = command
    code = main([name, *FAST, *options, "--out", str(out), "--overwrite", str(source)])
    assert code == 130 and "nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["alloy_reconstruction_1.tif"]
    assert (out / "alloy_reconstruction_1.tif").read_text() == "an earlier run's output"


# ------------------------------------------------------------------------------ progress


def test_the_printer_rewrites_one_line_and_keeps_a_line_per_finished_unit():
    from napari_microstructure.cli._common import printer
    from napari_microstructure.core.decoder import Progress
    from napari_microstructure.core.properties import TrainProgress
    from napari_microstructure.core.pruning import StudyProgress

    stream = io.StringIO()
    show = printer(stream)
    step = Progress(iteration=1, total=3, loss=0.5, elapsed=0.1, level=0, n_levels=1)
    row = {"e_s2_mean": 0.0123, "e_s2_std": 0.0011, "seconds": 1.0}
    show(StudyProgress(0, 2, "only conv1_1+pool1+pool2", (), 0, 1, 0.1, 0.1, step=step))
    show(StudyProgress(0, 2, "pool1", (), 0, 1, 1.0, 0.5, result=row))
    show(TrainProgress("fold", 1, 3, 2.0, 1, 3, r2=0.9))
    text = stream.getvalue()
    assert text.startswith("\r[") and "image 1/1" in text  # the first message at once
    *kept, rest = text.split("\n")
    assert rest == ""  # each finished unit ends its line
    shown = [line.rsplit("\r", 1)[-1] for line in kept]  # what a terminal shows
    assert "pool1 (1/2): e_S2 0.0123 ± 0.0011" in shown[0] and "fold 1/3: R² 0.900" in shown[1]
    first, overwritten = kept[0].split("\r")[1:]
    assert len(overwritten) >= len(first)  # no tail of the longer line is left behind


def test_reconstruct_shows_its_progress_on_one_line(tmp_path, capsys):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    quiet = FAST[:-1]
    assert main(["reconstruct", str(source), "--out", str(tmp_path / "out"), *quiet]) == 0
    err = capsys.readouterr().err
    progress = err.split("\n")[1]  # after the "Reconstructing ..." line
    assert progress.rsplit("\r", 1)[-1].startswith("[####################] step 2/2")


# ------------------------------------------------------------------------------ info


def test_info_reports_version_weights_devices_threads_and_versions(capsys):
    from napari_microstructure import __version__

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"napari-microstructure {__version__}\n")
    assert "weights (normalized): " in out and "torch threads: " in out
    assert "devices: " in out and "cpu" in out
    for name in ("torch", "numpy", "napari"):
        assert f"\n{name} " in out


def test_info_says_when_the_weights_fail_their_checksum(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "vgg19_normalized.pkl"
    fake.write_bytes(b"not the weights")
    monkeypatch.setenv("NAPARI_MICROSTRUCTURE_WEIGHTS", str(fake))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(fake) in out and "differs from the pinned sha256" in out


@pytest.mark.weights
def test_info_confirms_the_installed_weights(capsys):
    assert main(["info"]) == 0
    assert "matches the pinned sha256" in capsys.readouterr().out


def test_info_works_without_napari_and_never_imports_it(monkeypatch, capsys):
    from importlib import metadata

    version = metadata.version

    def without_napari(name):
        if name == "napari":
            raise metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(metadata, "version", without_napari)
    assert main(["info"]) == 0
    assert "\nnapari not installed" in capsys.readouterr().out
    check = (
        "import sys; from napari_microstructure.cli import main; main(['info']); "
        "sys.exit('napari' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def test_volumes_tile_by_default_and_no_periodic_turns_it_off(tmp_path):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    found = {}
    for flags in ([], ["--no-periodic"]):
        out = tmp_path / ("out" + "".join(flags))
        args = ["reconstruct", str(source), "--3d", "16", "--layers", "conv1_1", *FAST]
        assert main([*args, *flags, "--out", str(out), "--no-transport-check"]) == 0
        provenance = json.loads((out / "alloy_volume_provenance.json").read_text())
        found[tuple(flags)] = provenance["parameters"]["periodic"]
    assert found == {(): True, ("--no-periodic",): False}


def test_reconstruct_3d_with_a_target_holds_the_whole_volume_to_it(tmp_path):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    code = main(
        ["reconstruct", str(source), "--3d", "16", "--layers", "conv1_1", *FAST, "--out", str(out)]
        + ["--target-deff", "0", "2", "0.05", "--no-transport-check"]
    )
    assert code == 0
    provenance = json.loads((out / "alloy_volume_provenance.json").read_text())
    term = {t["name"]: t for t in provenance["loss_terms"]}["transport"]
    assert term["targets"] == {"None": {"phase 0 axis 2": 0.05}}
    assert term["solves"] == 2 and term["skipped"] == 0
