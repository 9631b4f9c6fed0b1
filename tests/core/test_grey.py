"""Grey micrographs: the grey fidelity metrics, the results tables, the command line end to end."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microstructure import load_sample, report
from napari_microstructure.cli import main
from napari_microstructure.core import metrics as m
from napari_microstructure.core.synthetic import grey_field

# plumbing runs: random weights, few steps (the behaviour tested does not depend on the network)
FAST = ["--iterations", "3", "--levels", "1", "--weights", "random", "--device", "cpu", "--quiet"]


def smooth_grey(shape=(32, 32), seed=0):
    return grey_field(shape, correlation_length=3.0, seed=seed).astype(np.float64) / 255


# --- the metrics ------------------------------------------------------------------------------


def test_grey_autocovariance_of_a_phase_image_is_that_of_the_phase():
    labels = load_sample("alloy_64")
    grey = m.grey_autocovariance(labels)
    np.testing.assert_allclose(
        grey.autocovariance, m.two_point(labels, 1).autocovariance, atol=1e-12
    )
    assert grey.mean == pytest.approx(labels.mean()) and grey.variance == pytest.approx(
        labels.var()
    )


def test_grey_autocovariance_matches_brute_force_periodic_shifts():
    values = np.random.default_rng(1).random((8, 10))
    centred = values - values.mean()
    sums, counts = np.zeros(3), np.zeros(3)
    for lag in itertools.product(range(8), range(10)):
        minimal = [min(d, n - d) for d, n in zip(lag, values.shape)]
        k = int(np.rint(np.hypot(*minimal)))
        if k <= 2:
            sums[k] += np.mean(centred * np.roll(centred, [-d for d in lag], axis=(0, 1)))
            counts[k] += 1
    expected = sums / counts / centred.var()
    np.testing.assert_allclose(m.grey_autocovariance(values).autocovariance, expected, atol=1e-12)


def test_grey_autocovariance_of_a_constant_image_is_the_uncorrelated_convention():
    assert list(m.grey_autocovariance(np.full((16, 16), 3.0)).autocovariance) == [1, 0, 0, 0, 0]


def test_histogram_distance_is_the_shift_in_units_of_the_original_range():
    original = smooth_grey()
    span = original.max() - original.min()
    assert m.e_hist(original, original + 0.1) == pytest.approx(0.1 / span)
    assert m.e_hist(original, original) == 0
    shuffled = np.random.default_rng(2).permutation(original.ravel()).reshape(original.shape)
    assert m.e_hist(original, shuffled) == pytest.approx(0, abs=1e-15)  # the same distribution
    assert m.e_hist(original, np.tile(original, (2, 3))) == pytest.approx(0, abs=1e-15)  # any size
    two_levels = np.where(original > np.median(original), original.max(), original.min())
    assert 0 < m.e_hist(original, two_levels) < 1


def test_autocovariance_error_is_zero_for_shifts_and_transposes_and_sees_other_textures():
    original = smooth_grey()
    assert m.e_ac(original, np.roll(original, (5, 7), axis=(0, 1))) == pytest.approx(0, abs=1e-12)
    assert m.e_ac(original, original.T) == pytest.approx(0, abs=1e-12)
    noise = np.random.default_rng(3).permutation(original.ravel()).reshape(original.shape)
    assert m.e_ac(original, noise) > 0.2  # same histogram, no correlation
    assert m.e_ac(original, 10 * original + 4) == pytest.approx(0, abs=1e-12)  # normalized


def test_grey_floor_compares_two_disjoint_quadrants():
    image = smooth_grey((64, 64))
    floor = m.grey_floor(image)
    assert floor["piece_shape"] == (32, 32) and floor["max_length"] == 8
    assert floor["e_hist"] == pytest.approx(m.e_hist(image[:32, :32], image[32:, 32:]))
    assert floor["e_ac"] == pytest.approx(m.e_ac(image[:32, :32], image[32:, 32:]))
    with pytest.raises(ValueError, match="too small to split"):
        m.grey_floor(image[:6, :6])


def test_compare_grey_table_and_refusals():
    original = smooth_grey()
    other = smooth_grey(seed=4)
    table = m.compare_grey(original, [original, other], names=["same", "other"])
    assert list(table.columns) == ["name", "shape", "e_hist", "e_ac", "mean", "std"]
    assert list(table["name"]) == ["original", "same", "other"]
    assert table.loc[1, "e_hist"] == table.loc[1, "e_ac"] == 0
    assert table.loc[2, "e_ac"] == pytest.approx(m.e_ac(original, other))
    with pytest.raises(ValueError, match="NaN or Inf"):
        m.compare_grey(original, [np.where(np.eye(32) > 0, np.nan, other)])
    with pytest.raises(ValueError, match="same dimension"):
        m.e_ac(original, np.zeros((4, 4, 4)))


# --- the results tables -----------------------------------------------------------------------


def test_run_table_has_grey_columns_for_a_grey_run():
    original = smooth_grey((64, 64))
    images = [np.roll(original, 9, axis=1), smooth_grey((64, 64), seed=5)]
    table = report.run_table(
        original,
        images,
        ["a", "b"],
        run=3,
        seconds=1.5,
        final_loss=[0.1, 0.2],
        partial=False,
        kind="grey",
    )
    assert list(table.columns) == [
        "run",
        "name",
        "e_hist",
        "e_AC",
        "grey mean",
        "grey std",
        "final loss",
        "run time (s)",
        "partial",
    ]
    assert list(table["name"]) == ["original", "floor (two quadrants of the original)", "a", "b"]
    assert table.loc[1, "e_AC"] == pytest.approx(m.grey_floor(original)["e_ac"])
    assert table.loc[3, "e_AC"] == pytest.approx(m.e_ac(original, images[1]))
    assert list(table["final loss"].iloc[2:]) == [0.1, 0.2] and (table["run"] == 3).all()


def test_run_table_of_phase_labels_keeps_its_columns_and_numbers_float_labels():
    original = load_sample("alloy_64")
    image = np.roll(original, 5, axis=0)
    table = report.run_table(
        original,
        [image],
        ["r"],
        run=1,
        seconds=2.0,
        final_loss=[0.5],
        partial=True,
        transport=False,
    )
    assert list(table.columns) == [
        "run",
        "name",
        "e_VF",
        "e_S2",
        "e_LP",
        "clusters[0]",
        "largest cluster[0]",
        "clusters[1]",
        "largest cluster[1]",
        "final loss",
        "run time (s)",
        "partial",
    ]
    assert table.loc[2, "e_S2"] == pytest.approx(m.e_s2(original, image))
    halves = original * 0.5  # float labels 0 and 0.5: numbered 0 and 1
    numbered = report.run_table(
        halves,
        [image * 0.5],
        ["r"],
        run=1,
        seconds=2.0,
        final_loss=[0.5],
        partial=True,
        transport=False,
    )
    pd.testing.assert_frame_equal(numbered, table)


# --- the command line -------------------------------------------------------------------------


def _reconstruct_grey(tmp_path, image, *options):
    source = tmp_path / "grey.npy"
    np.save(source, image)
    out = tmp_path / "out"
    code = main(["reconstruct", str(source), "--out", str(out), "--samples", "2", *FAST, *options])
    return code, out, source


@pytest.mark.parametrize(
    "image, options",
    [
        (smooth_grey().astype(np.float32), []),  # float: the run was lost to "segment first"
        (grey_field((32, 32)), []),  # 8-bit grey levels: each level was taken for a phase
        (
            (grey_field((32, 32)) // 16).astype(np.uint8),
            ["--kind", "grey"],
        ),  # 16 levels, said grey
    ],
    ids=["float", "uint8", "uint8-kind-grey"],
)
def test_cli_writes_a_grey_reconstruction_its_provenance_and_grey_metrics(
    tmp_path, capsys, image, options
):
    code, out, source = _reconstruct_grey(tmp_path, image, *options)
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "grey_metrics.csv",
        "grey_provenance.json",
        "grey_reconstruction_1.tif",
        "grey_reconstruction_2.tif",
    ]
    for name in ("grey_reconstruction_1.tif", "grey_reconstruction_2.tif"):
        reconstruction = tifffile.imread(out / name)
        np.testing.assert_array_equal(np.sort(reconstruction.ravel()), np.sort(image.ravel()))
    provenance = json.loads((out / "grey_provenance.json").read_text())
    assert provenance["parameters"]["kind"] == "grey"
    table = pd.read_csv(out / "grey_metrics.csv")
    assert list(table.columns) == [
        "run",
        "name",
        "e_hist",
        "e_AC",
        "grey mean",
        "grey std",
        "final loss",
        "run time (s)",
        "partial",
    ]
    assert list(table["name"])[2:] == ["grey_reconstruction_1", "grey_reconstruction_2"]
    assert (table["e_hist"].iloc[2:] == 0).all()  # the reconstructions take the histogram
    assert provenance["floor"]["e_ac"] == pytest.approx(table["e_AC"].iloc[1])
    assert "e_AC" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(source), image)


def test_cli_grey_volume_gets_grey_metrics_per_axis(tmp_path, capsys):
    source = tmp_path / "grey.npy"
    np.save(source, smooth_grey())
    out = tmp_path / "out"
    code = main(
        ["reconstruct", str(source), "--3d", "16", "--out", str(out), "--layers", "conv1_1", *FAST]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "grey_volume_metrics.csv")
    assert {"e_hist", "e_AC", "e_AC ⊥z", "e_AC ⊥y", "e_AC ⊥x"} <= set(table.columns)
    assert np.isfinite(table.iloc[-1][["e_hist", "e_AC ⊥z"]].astype(float)).all()
    assert tifffile.imread(out / "grey_volume.tif").shape == (16, 16, 16)
