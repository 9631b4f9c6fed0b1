"""Batches on a dask LocalCluster of two workers: the table, re-runs, failures, refusals, a
worker killed in the middle, a batch stopped half way; the ``batch`` command on that cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_microstructure import load_sample
from napari_microstructure.batching import (
    ERROR_FILE,
    IN_FLIGHT_PER_THREAD,
    PROVENANCE_FILE,
    ROW_FILE,
    Task,
    assemble_table,
    batch,
    connect,
    local_client,
    parse_options,
    plan,
    read_manifest,
)
from napari_microstructure.cli import main
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.steps import STOP
from napari_microstructure.core.synthetic import gaussian_field

pytest.importorskip("distributed")

#: A reconstruction that takes a fraction of a second on 32x32; the batch's plumbing is tested,
#: so a random network stands in for the weights (nothing to load on each worker).
QUICK = {"iterations": 6, "levels": 1, "device": "cpu", "seed": 1, "weights": "random"}


@pytest.fixture(scope="module")
def client():
    client = local_client(workers=2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def micrographs(tmp_path_factory) -> dict[str, Path]:
    """32x32 crops of the shipped micrographs, generated ones and a constant image."""
    folder = tmp_path_factory.mktemp("micrographs")
    images = {
        "alloy": load_sample("alloy_64")[:32, :32],
        "carbonate": load_sample("carbonate_64")[16:48, 16:48],
        "constant": np.ones((32, 32), np.uint8),
    }
    for seed in range(10):
        images[f"field{seed}"] = gaussian_field((32, 32), seed=seed).astype(np.uint8)
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}.npy"
        np.save(paths[name], image)
    return paths


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_results(table: pd.DataFrame, other: pd.DataFrame) -> None:
    """Equal tables but for what depends on when a task ran (seconds, ran)."""
    columns = [c for c in table.columns if c not in ("seconds", "ran")]
    pd.testing.assert_frame_equal(table[columns], other[columns])


def test_batch_writes_a_folder_per_task_and_skips_them_the_second_time(
    client, micrographs, tmp_path
):
    tasks = [
        Task(micrographs["alloy"], "reconstruct", QUICK),
        Task(micrographs["carbonate"], "reconstruct", {**QUICK, "samples": 2}),
        Task(micrographs["alloy"], "label", {"axes": ["x", "y"], "phase": 0}),
        Task(micrographs["constant"], "reconstruct", QUICK),
    ]
    table = batch(tasks, tmp_path, client)

    assert list(table["status"]) == ["done", "done", "done", "failed"]
    assert list(table["output"]) == [
        "alloy_reconstruct",
        "carbonate_reconstruct",
        "alloy_label",
        "constant_reconstruct",
    ]
    assert table["ran"].all()
    assert "constant" in table["error"].iloc[3] and table["error"].iloc[:3].eq("").all()
    assert table["e_S2"].iloc[:2].notna().all() and 0 < table["D_eff_x"].iloc[2] < 1
    written = pd.read_csv(tmp_path / "batch.csv", keep_default_na=False)
    assert list(written["status"]) == list(table["status"])
    if importlib.util.find_spec("pyarrow") is not None:  # the testing extra installs it
        parquet = pd.read_parquet(tmp_path / "batch.parquet")
        assert list(parquet["output"]) == list(table["output"])

    folders = [tmp_path / key for key in table["key"]]
    assert _files(folders[0]) == sorted(
        ["metrics.csv", PROVENANCE_FILE, "reconstruction.tif", ROW_FILE]
    )
    assert _files(folders[2]) == sorted([PROVENANCE_FILE, ROW_FILE])
    assert _files(folders[3]) == [ERROR_FILE]
    provenance = json.loads((folders[1] / PROVENANCE_FILE).read_text())
    assert provenance["batch"]["key"] == table["key"].iloc[1]
    assert provenance["options"]["samples"] == 2 and provenance["weights"]["source"] == "random"

    again = batch(tasks, tmp_path, client)
    assert list(again["ran"]) == [False, False, False, True]  # only the failed task again
    _same_results(again, table)
    assert list(again["seconds"].iloc[:3]) == list(table["seconds"].iloc[:3])


def test_a_task_whose_answer_was_lost_after_its_folder_was_written_is_done(micrographs, tmp_path):
    """A worker that dies after a task wrote its folder, before the client had the row: the
    lost answer is not the task's failure (the race the killed-worker test can meet)."""
    from napari_microstructure.batching import _result, run_task

    class LostAnswer:
        def result(self):
            raise OSError("the worker holding the result has died")

    done, never = plan(
        [Task(micrographs["alloy"], "label", output="done"), Task(micrographs["field0"], "label")],
        tmp_path,
    )
    written = run_task(done)
    row = _result(LostAnswer(), done)
    assert row["status"] == "done" and row["ran"] and row["D_eff_x"] == written["D_eff_x"]
    assert not (Path(done.folder) / ERROR_FILE).exists()
    row = _result(LostAnswer(), never)  # nothing written: the task failed, and says why
    assert row["status"] == "failed" and "has died" in row["error"]
    assert (Path(never.folder) / ERROR_FILE).exists()


def test_a_worker_killed_in_the_middle_has_its_task_run_again(client, micrographs, tmp_path):
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):
        """Kills its worker's process when the task named ``victim`` starts, the first time
        only (the marker file says it happened)."""

        def __init__(self, marker: str):
            self.marker = marker

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and "victim" in str(key):
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return
                os.kill(os.getpid(), signal.SIGKILL)

    marker = tmp_path / "killed"
    names = ["alloy", "carbonate", "field0", "field1"]
    tasks = [Task(micrographs[name], "label", output=name) for name in names]
    tasks.append(Task(micrographs["field2"], "label", output="victim"))
    client.register_plugin(KillOnce(str(marker)), name="kill-once")
    try:
        table = batch(tasks, tmp_path / "out", client)
    finally:
        client.unregister_worker_plugin("kill-once")

    assert marker.exists()  # a worker died
    client.wait_for_workers(2)  # its nanny has started it again, for the tests that follow
    assert list(table["status"]) == ["done"] * 5 and table["ran"].iloc[4]
    # a task whose result died with the worker before the client had it is computed again by
    # dask: it finds its folder complete and does not run twice (``ran`` False)
    for key in table["key"]:
        assert _files(tmp_path / "out" / key) == sorted([PROVENANCE_FILE, ROW_FILE])
    reference = batch(tasks, tmp_path / "reference", client)
    _same_results(table, reference)


def test_what_a_killed_attempt_left_is_cleaned_up(client, micrographs, tmp_path):
    task = Task(micrographs["field3"], "label")
    (planned,) = plan([task], tmp_path)
    folder = Path(planned.folder)
    folder.mkdir(parents=True)
    # a worker died while renaming: one file in place, one under its temporary name
    (folder / PROVENANCE_FILE).write_text("{}")
    (folder / ".row.partial-0123abcd.json").write_text("{")

    table = batch([planned], tmp_path, client)

    assert list(table["status"]) == ["done"] and table["ran"].all()
    assert _files(folder) == sorted([PROVENANCE_FILE, ROW_FILE])
    assert json.loads((folder / PROVENANCE_FILE).read_text())["batch"]["key"] == planned.key


def test_a_stopped_batch_runs_only_the_rest_the_next_time(client, micrographs, tmp_path):
    tasks = [Task(micrographs[f"field{seed}"], "label") for seed in range(10)]
    tasks += [Task(micrographs["alloy"], "label"), Task(micrographs["carbonate"], "label")]
    client.wait_for_workers(2)

    stopped = batch(tasks, tmp_path / "out", client, callback=lambda message: STOP)
    finished = set(stopped.loc[stopped["status"] == "done", "key"])
    # the tasks in flight when the first message came finish: two per worker
    assert len(finished) == IN_FLIGHT_PER_THREAD * 2 and set(stopped["status"]) == {
        "done",
        "not run",
    }
    assert stopped["ran"].sum() == 4

    resumed = batch(tasks, tmp_path / "out", client)
    assert set(resumed.loc[resumed["ran"], "key"]) == set(resumed["key"]) - finished
    assert (resumed["status"] == "done").all()
    _same_results(resumed, batch(tasks, tmp_path / "reference", client))


def test_the_table_of_a_batch_not_started_lists_every_task_as_not_run(micrographs, tmp_path):
    planned = plan([Task(micrographs["alloy"], "label")], tmp_path)
    table = assemble_table(planned)
    assert list(table["status"]) == ["not run"] and not table["ran"].any()
    assert list(table.columns[:8]) == [
        "row",
        "output",
        "input",
        "task",
        "status",
        "ran",
        "error",
        "seconds",
    ]


# --------------------------------------------------------------------------------------------
# refusals, before any work


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (Task("missing.npy", "label"), "missing.npy does not exist"),
        (Task("{alloy}", "denoise"), "unknown task 'denoise'"),
        (Task("{alloy}", "reconstruct", {"iteration": 5}), "unknown option iteration"),
        (Task("{alloy}", "label", {"iterations": 5}), "its options are phase, axes, device"),
        (Task("{alloy}", "reconstruct", {"samples": 0}), "samples=0 must be at least 1"),
        (Task("{alloy}", "reconstruct", {"optimizer": "sgd"}), "optimizer='sgd' is not one of"),
        (Task("{alloy}", "predict"), "needs model=PATH"),
        (Task("{alloy}", "predict", {"model": "none.npz"}), "none.npz does not exist"),
    ],
)
def test_bad_tasks_are_refused_with_their_row(micrographs, tmp_path, task, message):
    good = Task(micrographs["carbonate"], "label")
    given = Task(
        str(task.input).format(alloy=micrographs["alloy"]), task.task, task.options, task.output
    )
    with pytest.raises(InputError, match="row 2") as refused:
        plan([good, given], tmp_path / "out")
    assert message in str(refused.value) and "nothing was started" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_two_rows_with_one_output_name_or_one_task_twice_are_refused(micrographs, tmp_path):
    alloy = micrographs["alloy"]
    with pytest.raises(InputError, match=r"row 2 .*output name 'a' is row 1's too"):
        plan(
            [
                Task(alloy, "label", output="a"),
                Task(micrographs["carbonate"], "label", output="a"),
            ],
            tmp_path,
        )
    with pytest.raises(InputError, match="row 2 .*row 1 is the same task"):
        plan([Task(alloy, "label", {"phase": 1}), Task(alloy, "label", output="again")], tmp_path)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "not an address"])
def test_an_unreachable_scheduler_is_refused(address):
    with pytest.raises(InputError, match="could not be reached"):
        connect(address, timeout=1)


def test_a_manifest_gives_tasks_with_paths_beside_it(micrographs, tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "input": [str(micrographs["alloy"]), "images/b.npy"],
            "task": ["reconstruct", "predict"],
            "options": ['{"iterations": 20, "size": [64, 64]}', "model=m.npz;phase=1"],
            "output": ["first", ""],
        }
    ).to_csv(manifest, index=False)
    first, second = read_manifest(manifest)
    assert first == Task(
        micrographs["alloy"], "reconstruct", {"iterations": 20, "size": (64, 64)}, "first"
    )
    assert second.input == tmp_path / "images/b.npy" and second.output is None
    assert second.options == {"model": str(tmp_path / "m.npz"), "phase": 1}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("input,job\na.npy,label\n", "no task column"),
        ("input,task,colour\na.npy,label,red\n", "unknown columns colour"),
        (
            "input,task,options\na.npy,label,phase=1\nb.npy,label,phase\n",
            "row 2: the option 'phase' is not NAME=VALUE",
        ),
        ("input,task,options\na.npy,label,{phase: 1}\n", "row 1: the options"),
        ("input,task\n", "has no rows"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_row(tmp_path, rows, message):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(rows)
    with pytest.raises(InputError, match=message):
        read_manifest(manifest)


def test_options_as_text_or_json():
    assert parse_options('iterations=50; layers=["conv1_1", "pool1"];device=cpu') == {
        "iterations": 50,
        "layers": ("conv1_1", "pool1"),
        "device": "cpu",
    }
    assert parse_options('{"seed": 3, "size": [8, 8]}') == {"seed": 3, "size": (8, 8)}
    assert parse_options("") == {} and parse_options(None) == {}


# --------------------------------------------------------------------------------------------
# the command


def test_the_command_runs_a_folder_through_one_task_then_again(
    client, micrographs, tmp_path, capsys
):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("alloy", "carbonate", "constant"):
        (folder / f"{name}.npy").write_bytes(micrographs[name].read_bytes())
    out = tmp_path / "out"
    command = ["batch", str(folder), "--task", "label", "--options", 'phase=0;axes=["x"]']
    command += ["--out", str(out), "--scheduler", client.scheduler.address, "--quiet"]
    assert main(command) == 1  # the constant image has no phase 0: its row failed
    printed = capsys.readouterr().out
    assert "constant_label" in printed and "2 of 3 task(s) done (3 ran now), 1 failed" in printed
    table = pd.read_csv(out / "batch.csv", keep_default_na=False)
    assert list(table["output"]) == ["alloy_label", "carbonate_label", "constant_label"]
    assert list(table["status"]) == ["done", "done", "failed"]

    assert main(command) == 1
    assert "2 of 3 task(s) done (1 ran now), 1 failed" in capsys.readouterr().out


def test_the_command_refuses_a_manifest_row_before_any_task(micrographs, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    alloy = micrographs["alloy"]
    manifest.write_text(f"input,task,options\n{alloy},label,\n{alloy},denoise,\n")
    out = tmp_path / "out"
    command = ["batch", str(manifest), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1"]
    assert main(command) == 2
    assert "row 2 (alloy.npy): unknown task 'denoise'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--options", "seed=1"], "Give --task"),
        (["--task", "label", "--workers", "0"], "--workers must be 1 or more"),
        (["--task", "reconstruct", "--options", "samples=0"], "samples=0 must be at least 1"),
    ],
)
def test_the_command_refuses_bad_arguments(micrographs, tmp_path, capsys, arguments, message):
    out = tmp_path / "out"
    assert main(["batch", str(micrographs["alloy"]), "--out", str(out), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_package_exports_batch_and_the_module_loads_neither_dask_nor_torch():
    import subprocess
    import sys

    import napari_microstructure
    from napari_microstructure import batching

    assert napari_microstructure.batch is batching.batch
    code = (
        "import sys, napari_microstructure.batching, napari_microstructure.cli; "
        "heavy = ('torch', 'distributed', 'dask', 'qtpy', 'napari'); "
        "loaded = [m for m in heavy if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_predictions_carry_their_interval_and_range_check(client, micrographs, tmp_path):
    from napari_microstructure.core.properties import train

    fields = [np.load(micrographs[f"field{seed}"]) for seed in range(10)]
    labels = np.linspace(0.1, 0.5, len(fields))  # any labels: the batch is what is tested
    model = tmp_path / "model.npz"
    train(fields, labels, property="fraction", weights="random", folds=5, device="cpu").save(model)
    inputs = [micrographs["field0"], micrographs["constant"]]
    tasks = [Task(str(path), "predict", {"model": str(model), "device": "cpu"}) for path in inputs]
    table = batch(tasks, tmp_path / "out", client)
    assert list(table["status"]) == ["done", "done"]
    assert (table["low"] <= table["fraction"]).all() and (table["fraction"] <= table["high"]).all()
    assert list(table["out_of_range"]) == [False, True]
    assert "constant" in table["reason"].iloc[1]
