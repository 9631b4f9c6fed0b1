"""3D reconstruction from 2D micrographs: sampling, exact fractions, memory, stopping,
metrics, CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_microstructure.core import volume as volume_module
from napari_microstructure.core.errors import DeviceError, InputError, MemoryBudgetError
from napari_microstructure.core.metrics import two_point
from napari_microstructure.core.phases import target_counts
from napari_microstructure.core.steps import STOP
from napari_microstructure.core.volume import (
    VolumeProgress,
    compare_volume,
    compare_volume_grey,
    mid_planes,
    reconstruct_volume,
    reconstruct_volume_steps,
    slice_two_point,
)

# plumbing runs: random weights, one cheap layer, Adam on sampled slices at every level
FAST = {
    "iterations": 3,
    "levels": 1,
    "weights": "random",
    "device": "cpu",
    "layers": ["conv1_1"],
    "optimizer": "adam",
}


def blobs(shape=(24, 24), phases=2, seed=0, sigma=2.0):
    """A smooth random field cut into ``phases`` phases of roughly equal fractions."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    edges = np.quantile(field, np.linspace(0, 1, phases + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


# --- the optimization ---------------------------------------------------------------------------


def test_sampling_draws_every_slice_of_all_three_axes(monkeypatch):
    seen = []
    original = volume_module._slices

    def record(volume, axis, index):
        seen.append((axis, index.tolist()))
        return original(volume, axis, index)

    monkeypatch.setattr(volume_module, "_slices", record)
    result = reconstruct_volume(blobs(), 16, slices_per_axis=4, **{**FAST, "iterations": 5})
    assert [axis for axis, _ in seen] == [0, 1, 2] * 5  # one batch per axis and step
    for axis in range(3):
        drawn = [i for a, index in seen if a == axis for i in index]
        assert all(len(index) == 4 for a, index in seen if a == axis)
        # shuffled epochs: the first 16 draws are the 16 slices, each once
        assert sorted(drawn[:16]) == list(range(16))
    sampling = result.provenance["sampling"]["0"]
    assert set(sampling) == {"z", "y", "x"}
    assert all(
        s["covered"] == 1.0 and s["per_step"] == 4 and s["slices"] == 16 for s in sampling.values()
    )


@pytest.mark.parametrize("phases", [2, 3])
def test_phase_fractions_are_exact(phases):
    image = blobs((24, 24), phases=phases, seed=phases)
    result = reconstruct_volume(image, (16, 17, 18), slices_per_axis=6, **FAST)
    volume = result.volume
    assert volume.shape == (16, 17, 18) and volume.dtype == image.dtype
    assert result.images.shape == (1, 16, 17, 18)
    fractions = np.bincount(image.ravel(), minlength=phases) / image.size
    counts = np.bincount(volume.ravel(), minlength=phases)
    np.testing.assert_array_equal(counts, target_counts(fractions, volume.size))
    assert compare_volume(image, volume)["e_vf"] <= 1 / volume.size
    assert result.provenance["target_fractions"] == pytest.approx(list(fractions))


def test_grey_micrograph_gives_its_histogram_and_runs_coarse_to_fine():
    image = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    result = reconstruct_volume(
        image, 16, slices_per_axis=8, **{**FAST, "iterations": 4, "levels": 2}
    )
    assert result.model.kind == "grey" and result.volume.dtype == np.float32
    assert set(np.unique(result.volume)) <= set(np.unique(image))
    assert [level["size"] for level in result.provenance["timings"]["levels"]] == [
        [8, 8, 8],
        [16, 16, 16],
    ]


def test_lbfgs_on_every_slice_and_previews_of_the_middle_planes():
    steps = reconstruct_volume_steps(
        blobs(),
        (16, 18, 20),
        slices_per_axis=None,
        preview_interval=0,
        **{**FAST, "optimizer": "lbfgs", "iterations": 2},
    )
    messages = []
    while True:
        try:
            messages.append(next(steps))
        except StopIteration as finished:
            result = finished.value
            break
    assert all(isinstance(m, VolumeProgress) for m in messages) and messages[-1].iteration == 2
    planes = messages[0].planes
    assert [p.shape for p in planes] == [(18, 20), (16, 20), (16, 18)]
    np.testing.assert_array_equal(messages[0].preview, planes[0])
    assert (
        result.provenance["evaluations"] >= 2
        and result.provenance["parameters"]["slices_per_axis"] is None
    )


def test_stopping_keeps_a_partial_full_size_result():
    image = blobs()
    steps = reconstruct_volume_steps(
        image, 16, slices_per_axis=4, **{**FAST, "iterations": 50, "levels": 2}
    )
    next(steps)
    next(steps)
    with pytest.raises(StopIteration) as finished:
        steps.send(STOP)
    result = finished.value.value
    assert result.partial and result.provenance["partial"] and result.provenance["steps"] == 2
    assert result.volume.shape == (16, 16, 16)
    assert (result.volume == 0).sum() == target_counts(
        [(image == 0).mean(), (image == 1).mean()], 16**3
    )[0]


def test_same_seed_same_volume_other_seed_other_volume():
    options = dict(slices_per_axis=4, **FAST)
    first = reconstruct_volume(blobs(), 16, seed=5, **options).volume
    np.testing.assert_array_equal(first, reconstruct_volume(blobs(), 16, seed=5, **options).volume)
    assert not np.array_equal(first, reconstruct_volume(blobs(), 16, seed=6, **options).volume)


def test_anisotropic_micrographs_one_per_axis():
    planes = {
        "z": blobs((20, 24), seed=1),
        "y": blobs((16, 24), seed=2, sigma=1),
        "x": blobs((16, 20), seed=3, sigma=3),
    }
    result = reconstruct_volume(planes, (16, 20, 24), slices_per_axis=4, **FAST)
    provenance = result.provenance
    assert set(provenance["input"]) == {"z", "y", "x"} and set(
        provenance["final_loss_per_axis"]
    ) == {"z", "y", "x"}
    assert provenance["input"]["y"]["shape"] == [16, 24]
    mean = np.mean([(p == 1).mean() for p in planes.values()])
    assert (result.volume == 1).sum() == round(mean * result.volume.size)
    scores = compare_volume(planes, result.volume)
    assert {f"e_s2_axis{a}" for a in range(3)} <= set(scores)
    # two micrographs, as a tuple with a free axis: only those axes are matched and scored
    free = reconstruct_volume(
        (planes["z"], None, planes["x"]), (16, 20, 24), slices_per_axis=4, **FAST
    )
    assert set(free.provenance["sampling"]["0"]) == {"z", "x"}
    assert "e_s2_axis1" not in compare_volume((planes["z"], None, planes["x"]), free.volume)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "micrographs, options, match",
    [
        (
            np.zeros((8, 32, 32)) + np.arange(8)[:, None, None],
            {},
            "3D reconstruction starts from 2D",
        ),
        (np.ones((24, 24)), {}, "constant"),
        (np.where(np.eye(24) > 0, np.nan, 1.0), {}, "NaN or Inf"),
        (np.arange(24 * 24).reshape(24, 24) % 12, {}, "at most 8"),
        (np.eye(6, dtype=np.uint8), {"layers": ["pool2"]}, "at least 8 pixels"),
        (blobs(), {"size": 6, "layers": ["pool2"]}, "at least 8 pixels"),
        (blobs(), {"size": (16, 16)}, "one integer N"),
        ({"z": blobs(), "y": blobs(phases=3)}, {}, "must share their phases"),
        ({"w": blobs()}, {}, "Axis 'w' does not exist"),
        ({"z": blobs(), 0: blobs()}, {}, "given twice"),
        (blobs(), {"slices_per_axis": 0}, "at least 1"),
        (blobs(), {"optimizer": "sgd"}, "Unknown optimizer"),
        (blobs(), {"layers": ["conv9_9"]}, "Unknown layer"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(micrographs, options, match):
    options = {"size": 16, **FAST, **options}
    with pytest.raises(InputError, match=match):
        reconstruct_volume_steps(micrographs, **options)


def test_unknown_device_is_refused():
    with pytest.raises(DeviceError):
        reconstruct_volume_steps(blobs(), 16, weights="random", device="tpu")


def test_memory_refusal_suggests_fewer_slices_or_a_smaller_volume(monkeypatch):
    needed = volume_module.estimate_volume_memory((128,) * 3, 32, ["conv1_1", "pool1", "pool2"], 1)
    monkeypatch.setattr(volume_module, "free_memory_bytes", lambda device: int(needed * 0.9))
    with pytest.raises(
        MemoryBudgetError,
        match=r"(?s)fewer slices per step \(slices_per_axis=\d+ fits\).*smaller volume",
    ):
        reconstruct_volume_steps(blobs(), 128, slices_per_axis=32, weights="random", device="cpu")
    assert (
        volume_module.estimate_volume_memory((128,) * 3, 16, ["conv1_1", "pool1", "pool2"], 1)
        < needed
    )
    # 128^3 with the default sample fits in 8 GiB by the estimate, with room to spare
    assert (
        volume_module.estimate_volume_memory(
            (128,) * 3, volume_module.DEFAULT_SLICES_PER_AXIS, ["conv1_1", "pool1", "pool2"], 3
        )
        < 4 * 2**30
    )


def test_3d_targets_count_in_the_memory_check(monkeypatch):
    """A whole-volume D_eff solve (235-273 bytes per voxel measured) is in the estimate: memory
    enough for the reconstruction alone refuses it with three 3D targets, before any work."""
    layers = ["conv1_1", "pool1", "pool2"]
    plain = volume_module.estimate_volume_memory((96,) * 3, 8, layers, 1)
    targeted = volume_module.estimate_volume_memory((96,) * 3, 8, layers, 1, targets=3)
    assert targeted - plain >= 235 * 96**3
    free = int((plain + targeted) / 2 / 0.8)
    monkeypatch.setattr(volume_module, "free_memory_bytes", lambda device: free)
    targets = tuple((1, axis, 0.1) for axis in range(3))
    with pytest.raises(MemoryBudgetError, match="smaller volume"):
        reconstruct_volume_steps(
            blobs(), 96, slices_per_axis=8, weights="random", device="cpu", target_deff=targets
        )
    reconstruct_volume_steps(
        blobs(), 96, slices_per_axis=8, weights="random", device="cpu"
    ).close()


# --- metrics ------------------------------------------------------------------------------------


def test_compare_volume_is_zero_for_a_volume_of_copies_and_for_itself():
    image = blobs((32, 32), seed=4)
    stack = np.broadcast_to(
        image, (32, 32, 32)
    ).copy()  # every slice normal to axis 0 is the image
    scores = compare_volume({0: image}, stack)
    assert scores["e_s2_axis0"] == pytest.approx(0, abs=1e-12) and scores[
        "e_lp_axis0"
    ] == pytest.approx(0, abs=1e-12)
    assert scores["e_vf"] == 0 and scores["spans_0[phase 1]"]
    pooled = slice_two_point(stack, 1, 0)
    assert pooled.autocovariance[0] == pytest.approx(
        1
    ) and pooled.volume_fraction == pytest.approx((image == 1).mean())
    volume = np.stack([blobs((32, 32), seed=s) for s in range(32)])
    itself = compare_volume(volume, volume)
    assert itself["e_s2"] == itself["e_s2_3d"] == itself["e_lp_3d"] == itself["e_vf"] == 0
    planes = mid_planes(volume)
    assert planes[1].shape == (32, 32) and np.array_equal(planes[2], volume[:, :, 16])


def test_a_volume_smaller_than_the_micrograph_radii_is_compared_on_the_radii_it_allows():
    # a 256x256 micrograph has radii up to 64; the slices of a 64^3 volume allow 32
    micrograph = blobs((256, 256), seed=5)
    volume = np.stack([blobs((64, 64), seed=s) for s in range(64)])
    scores = compare_volume(micrograph, volume)
    assert all(np.isfinite(scores[f"e_s2_axis{a}"]) for a in range(3))
    errors = [
        np.sqrt(
            np.mean(
                (
                    slice_two_point(volume, p, 0, 32).autocovariance
                    - two_point(micrograph, p, 32).autocovariance
                )
                ** 2
            )
        )
        for p in (0, 1)
    ]
    assert scores["e_s2_axis0"] == pytest.approx(max(errors))


def test_grey_volume_metrics_are_zero_for_copies_and_match_the_2d_definitions():
    from napari_microstructure.core.metrics import grey_autocovariance
    from napari_microstructure.core.synthetic import grey_field

    grey = grey_field((32, 32)).astype(float)
    stack = np.broadcast_to(grey, (32, 32, 32)).copy()
    scores = compare_volume_grey({0: grey}, stack)
    assert scores["e_hist"] == 0 and scores["e_ac_axis0"] == pytest.approx(0, abs=1e-12)
    # a 0/1 volume: the grey autocovariance of its slices is that of phase 1
    labels = (grey > 128).astype(np.uint8)
    volume = np.stack([np.roll(labels, s, axis=1) for s in range(32)])
    grey_scores = compare_volume_grey(labels, volume)
    phase_scores = compare_volume({0: labels}, volume)
    assert grey_scores["e_ac_axis0"] == pytest.approx(phase_scores["e_s2_axis0"])
    assert grey_autocovariance(labels).autocovariance[0] == pytest.approx(1)
    with pytest.raises(InputError, match="3D"):
        compare_volume_grey(grey, grey)


def test_provenance_records_the_levels_used():
    # levels whose micrograph would be smaller than COARSEST_TARGET_SIDE (16) are dropped: from
    # a 32x32 micrograph, 2 of the 6 asked for
    result = reconstruct_volume(blobs((32, 32)), 16, **{**FAST, "levels": 6})
    assert result.provenance["parameters"]["levels_requested"] == 6
    assert result.provenance["parameters"]["levels"] == 2
    assert len(result.provenance["timings"]["levels"]) == 2


# --- quality with the real network --------------------------------------------------------------


@pytest.mark.weights
def test_real_weights_match_the_micrograph_along_every_axis(alloy_64):
    # about 10 s of CPU time; alloy_64 -> 32^3 (the errors use radii up to 16 = 64 // 4)
    result = reconstruct_volume(alloy_64, 32, iterations=120, levels=2, device="cpu", seed=0)
    scores = compare_volume(alloy_64, result.volume)
    noise = (
        np.random.default_rng(0).permutation(result.volume.ravel()).reshape(result.volume.shape)
    )
    random = compare_volume(alloy_64, noise)  # e_S2 about 0.18 on every axis
    assert scores["e_vf"] <= 1 / result.volume.size
    for axis in range(3):  # measured: 0.067-0.070
        assert scores[f"e_s2_axis{axis}"] < 0.5 * random[f"e_s2_axis{axis}"]


@pytest.mark.weights
def test_a_3d_target_moves_the_volumes_d_eff_towards_it(carbonate_64):
    # the matrix (86 %): 20^3 without a target, 3D D_eff 0.77-0.79 along the axes; measured
    # with the target 0.5: 0.71-0.74. The transport term alone: at this size and budget the
    # two-point term (on by default) holds the slices against it (axis 0: 0.79 -> 0.775 only)
    from napari_microstructure.core.physics import transport

    target = 0.5
    options = {"iterations": 40, "device": "cpu", "seed": 0, "two_point_weight": 0.0}
    free = reconstruct_volume(carbonate_64, 20, **options)
    held = reconstruct_volume(
        carbonate_64, 20, target_deff=tuple((0, axis, target) for axis in range(3)), **options
    )
    term = {t["name"]: t for t in held.provenance["loss_terms"]}["transport"]
    assert term["solves"] > 0 and term["skipped"] == 0
    for axis in range(3):
        before = transport(free.volume, 0, axis, conv_crit=1e-3).d_eff
        after = transport(held.volume, 0, axis, conv_crit=1e-3).d_eff
        assert target < after < before - 0.02
        assert target < term["last_soft_d_eff"][f"phase 0 axis {axis}"][0] < before


# --- command line -------------------------------------------------------------------------------


def test_cli_reconstructs_a_volume(tmp_path, capsys):
    import tifffile

    from napari_microstructure.cli import main

    source = tmp_path / "blobs.npy"
    image = blobs((32, 32))
    np.save(source, image)
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(source),
            "--3d",
            "16",
            "--out",
            str(out),
            "--iterations",
            "3",
            "--levels",
            "1",
            "--weights",
            "random",
            "--device",
            "cpu",
            "--layers",
            "conv1_1",
            "--quiet",
        ]
    )
    assert code == 0
    volume = tifffile.imread(out / "blobs_volume.tif")
    assert volume.shape == (16, 16, 16) and volume.dtype == np.uint8
    assert (volume == 0).sum() == round((image == 0).mean() * 16**3)
    provenance = json.loads((out / "blobs_volume_provenance.json").read_text())
    assert provenance["parameters"]["size"] == [16, 16, 16] and provenance["input_files"][
        "z"
    ].endswith("blobs.npy")
    table = pd.read_csv(out / "blobs_volume_metrics.csv")
    floor = "floor (two quadrants of the micrograph)"
    assert list(table["name"]) == ["micrograph (2D)", floor, "blobs_volume"]
    assert {"e_S2 ⊥z", "e_S2 ⊥y", "e_S2 ⊥x", "clusters[1]", "spans[1]"} <= set(table.columns)
    assert "e_S2 ⊥z" in capsys.readouterr().out


def test_cli_volume_smaller_than_the_micrograph_radii_still_gets_its_metrics(tmp_path, capsys):
    # a 16^3 volume from a 64x64 micrograph: its radii go to 16, the slices allow 8; this used
    # to write "no metrics" and no CSV
    from napari_microstructure import load_sample
    from napari_microstructure.cli import main

    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(source),
            "--3d",
            "16",
            "--out",
            str(out),
            "--iterations",
            "2",
            "--levels",
            "1",
            "--weights",
            "random",
            "--device",
            "cpu",
            "--layers",
            "conv1_1",
            "--quiet",
        ]
    )
    assert code == 0 and "no metrics" not in capsys.readouterr().err
    table = pd.read_csv(out / "alloy_volume_metrics.csv")
    scores = table.iloc[-1][["e_VF", "e_S2", "e_LP", "e_S2 ⊥z", "e_LP ⊥x"]].astype(float)
    assert np.isfinite(scores).all()


def test_cli_anisotropic_volume_and_refusals(tmp_path, capsys):
    import tifffile

    from napari_microstructure.cli import main

    paths = {}
    for axis, shape in zip("zyx", [(20, 24), (16, 24), (16, 20)]):
        paths[axis] = tmp_path / f"{axis}.npy"
        np.save(paths[axis], blobs(shape, seed=ord(axis)))
    common = [
        "--out",
        str(tmp_path / "out"),
        "--iterations",
        "2",
        "--levels",
        "1",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--layers",
        "conv1_1",
        "--quiet",
    ]
    code = main(
        [
            "reconstruct",
            "--3d",
            "16",
            "20",
            "24",
            "--x",
            str(paths["x"]),
            "--y",
            str(paths["y"]),
            "--z",
            str(paths["z"]),
            *common,
        ]
    )
    assert code == 0
    assert tifffile.imread(tmp_path / "out" / "z_volume.tif").shape == (16, 20, 24)
    capsys.readouterr()
    assert main(["reconstruct", "--3d", "16", "17", *common]) == 2  # two sides
    assert "one integer N" in capsys.readouterr().err
    assert main(["reconstruct", "--x", str(paths["x"]), *common]) == 2  # --x without --3d
    assert "--3d" in capsys.readouterr().err
    assert (
        main(["reconstruct", str(paths["z"]), "--3d", "16", "--x", str(paths["x"]), *common]) == 2
    )
    assert "either INPUT" in capsys.readouterr().err
