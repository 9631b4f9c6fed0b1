"""Batches on dask (napari_microstructure.batching): throughput, scheduler overhead, a worker
killed half way, a batch interrupted with Ctrl-C and run again.

    python benchmarks/batch.py                                   # all four, the defaults
    python benchmarks/batch.py --tasks 16 --size 128 --iterations 100
    python benchmarks/batch.py throughput overhead               # some of them

- ``throughput``: the same reconstructions (crops of the shipped alloy and carbonate
  micrographs, and generated ones) on a LocalCluster of 1 worker, then of 2, each from an empty
  output folder, with the workers warmed up first (torch imported, weights loaded): seconds,
  tasks per second and the ratio.
- ``overhead``: no-op tasks through dask alone (``client.map``), and the cheapest real task
  (``label`` of a 16x16 image whose phase does not span: no solver call) through the whole batch
  (hashing, planning, folder, atomic writes, table): tasks per second and milliseconds per task.
- ``fault``: the reconstructions on 2 workers; when half are done, one worker process is killed
  (SIGKILL, by its pid). The batch must complete with every task done, every folder holding its
  files once (no temporary file left) and the table equal to an uninterrupted run's.
- ``restart``: the ``batch`` command in a subprocess, sent Ctrl-C (SIGINT to its process group,
  as a terminal does) when half the folders are complete; then the same command again. Only
  the unfinished tasks may run the second time, and the final table must equal an
  uninterrupted run's.

Every result prints the 1-minute load average before and after (``os.getloadavg``): the
development machine has 2 cores shared with other work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RUNS = ("throughput", "overhead", "fault", "restart")
#: Columns that depend on when and how fast a task ran, not on what it computed.
TIMING_COLUMNS = ("seconds", "ran")


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def make_inputs(folder: Path, tasks: int, size: int) -> list[Path]:
    """``tasks`` micrographs of ``size``^2: crops of alloy_256 and carbonate_256 (half), and
    generated gaussian fields and overlapping discs (the other half)."""
    from napari_microstructure import load_sample
    from napari_microstructure.core.synthetic import gaussian_field, overlapping_discs

    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    shipped = [load_sample("alloy_256"), load_sample("carbonate_256")]
    corners = [(0, 0), (0, 1), (1, 0), (1, 1), (0.5, 0.5)]
    for index in range(tasks // 2):
        image = shipped[index % 2]
        row, column = corners[(index // 2) % len(corners)]
        top, left = int(row * (image.shape[0] - size)), int(column * (image.shape[1] - size))
        name = f"{'alloy' if index % 2 == 0 else 'carbonate'}_crop{index // 2}"
        images[name] = image[top : top + size, left : left + size]
    for index in range(tasks - tasks // 2):
        if index % 2 == 0:
            image = gaussian_field((size, size), seed=index)
        else:
            image = overlapping_discs((size, size), seed=index)
        images[f"generated{index}"] = np.asarray(image, np.uint8)
    paths = []
    for name, image in images.items():
        paths.append(folder / f"{name}.npy")
        np.save(paths[-1], image)
    return paths


def reconstruction_tasks(paths, iterations: int):
    from napari_microstructure.batching import Task

    options = {"iterations": iterations, "device": "cpu", "seed": 0}
    return [Task(path, "reconstruct", options) for path in paths]


def _warm_up():
    """Run on each worker: import torch and load the weights before the clock starts."""
    from napari_microstructure.core.encoder import get_encoder
    from napari_microstructure.core.weights import load_weights

    load_weights("normalized")
    get_encoder(("conv1_1", "pool1", "pool2"), "normalized", "cpu")
    return os.getpid()


def _fresh(out: Path) -> Path:
    """``out``, emptied: every run starts from nothing done."""
    shutil.rmtree(out, ignore_errors=True)
    return out


def _run_batch(tasks, out: Path, workers: int, callback=None):
    from napari_microstructure.batching import batch, local_client

    _fresh(out)
    client = local_client(workers)
    try:
        pids = client.run(_warm_up)
        started = time.perf_counter()
        table = batch(tasks, out, client, callback=callback(pids) if callback else None)
        return table, time.perf_counter() - started
    finally:
        client.close()


def _same(table: pd.DataFrame, reference: pd.DataFrame) -> bool:
    columns = [c for c in reference.columns if c not in TIMING_COLUMNS]
    try:
        pd.testing.assert_frame_equal(
            table[columns].reset_index(drop=True), reference[columns].reset_index(drop=True)
        )
    except AssertionError as difference:
        print(f"    tables differ: {str(difference).splitlines()[0:3]}")
        return False
    return True


def _folders_valid(table: pd.DataFrame, out: Path) -> bool:
    """Every task done, its folder holding each file once and nothing hidden, its TIFF
    readable; no folder beyond the tasks'."""
    import tifffile

    expected = {"metrics.csv", "provenance.json", "reconstruction.tif", "row.json"}
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    if folders != set(table["key"]) or not (table["status"] == "done").all():
        return False
    for key in table["key"]:
        names = {p.name for p in (out / key).iterdir()}
        if names != expected:
            print(f"    {key[:12]} holds {sorted(names)}")
            return False
        tifffile.imread(out / key / "reconstruction.tif")
        json.loads((out / key / "row.json").read_text())
    return True


def throughput(args, work: Path) -> dict:
    paths = make_inputs(work / "inputs", args.tasks, args.size)
    tasks = reconstruction_tasks(paths, args.iterations)
    rows = {}
    for workers in (1, 2):
        before = _load()
        table, seconds = _run_batch(tasks, work / f"throughput_{workers}", workers)
        rows[workers] = {
            "workers": workers,
            "tasks": len(table),
            "done": int((table["status"] == "done").sum()),
            "seconds": round(seconds, 1),
            "tasks/s": round(len(table) / seconds, 3),
            "mean task (s)": round(float(table["seconds"].mean()), 2),
            "load before": before,
            "load after": _load(),
        }
        print(f"  {rows[workers]}", flush=True)
    ratio = rows[1]["seconds"] / rows[2]["seconds"]
    print(f"  ratio 1 worker / 2 workers: {ratio:.2f}", flush=True)
    return {"rows": list(rows.values()), "ratio": round(ratio, 2)}


def _noop(index):
    return index


def overhead(args, work: Path) -> dict:
    from napari_microstructure.batching import Task, batch, local_client

    client = local_client(2)
    try:
        client.run(_warm_up)
        before = _load()
        started = time.perf_counter()
        client.gather(client.map(_noop, range(args.noop), pure=False))
        dask_rate = args.noop / (time.perf_counter() - started)
        folder = work / "noop_inputs"
        folder.mkdir(parents=True, exist_ok=True)
        tasks = []
        for index in range(args.noop):
            image = np.zeros((16, 16), np.uint8)
            # the first row holds index + 1 in binary: phase 1 never spans y (no solver call)
            image[0] = [(index + 1) >> bit & 1 for bit in range(16)]
            path = folder / f"image{index}.npy"
            np.save(path, image)
            tasks.append(Task(path, "label", {"axes": ["y"], "device": "cpu"}, f"noop{index}"))
        started = time.perf_counter()
        table = batch(tasks, _fresh(work / "noop_out"), client)
        batch_seconds = time.perf_counter() - started
    finally:
        client.close()
    result = {
        "tasks": args.noop,
        "dask tasks/s": round(dask_rate, 1),
        "dask ms/task": round(1000 / dask_rate, 2),
        "batch tasks/s": round(args.noop / batch_seconds, 1),
        "batch ms/task": round(1000 * batch_seconds / args.noop, 1),
        "done": int((table["status"] == "done").sum()),
        "load before": before,
        "load after": _load(),
    }
    print(f"  {result}", flush=True)
    return result


def fault(args, work: Path, reference: pd.DataFrame | None) -> dict:
    paths = make_inputs(work / "inputs", args.tasks, args.size)
    tasks = reconstruction_tasks(paths, args.iterations)
    killed = {}

    def kill_half_way(pids):
        def callback(message):
            if not killed and message.done >= args.tasks // 2:
                address, pid = sorted(pids.items())[0]
                os.kill(pid, signal.SIGKILL)
                killed.update(address=address, pid=pid, at=message.done)

        return callback

    before = _load()
    out = work / "fault"
    _, seconds = _run_batch(tasks, out, 2, kill_half_way)
    table = pd.read_csv(out / "batch.csv", keep_default_na=False)
    result = {
        "killed": killed,
        "seconds": round(seconds, 1),
        "all done": bool((table["status"] == "done").all()),
        "outputs valid and once": _folders_valid(table, out),
        "table equals uninterrupted": None if reference is None else _same(table, reference),
        "load before": before,
        "load after": _load(),
    }
    print(f"  {result}", flush=True)
    return result


def restart(args, work: Path, reference: pd.DataFrame | None) -> dict:
    paths = make_inputs(work / "inputs", args.tasks, args.size)
    manifest = work / "manifest.csv"
    options = json.dumps({"iterations": args.iterations, "device": "cpu", "seed": 0})
    pd.DataFrame(
        {"input": [str(p) for p in paths], "task": "reconstruct", "options": options}
    ).to_csv(manifest, index=False)
    out = _fresh(work / "restart")
    command = [sys.executable, "-m", "napari_microstructure.cli", "batch", str(manifest)]
    command += ["--out", str(out), "--workers", "2", "--quiet"]
    before = _load()
    with open(work / "restart_first.log", "w") as log:
        first = subprocess.Popen(
            command,
            start_new_session=True,
            # a process started in the background inherits SIGINT ignored: take it back
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            stderr=log,
        )
        while first.poll() is None:
            complete = list(out.glob("*/row.json")) if out.is_dir() else []
            if len(complete) >= args.tasks // 2:
                os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in a terminal
                break
            time.sleep(0.2)
        first_code = first.wait()
    first_table = pd.read_csv(out / "batch.csv", keep_default_na=False)
    finished = set(first_table.loc[first_table["status"] == "done", "key"])
    second = subprocess.run(command, capture_output=True, text=True)
    table = pd.read_csv(out / "batch.csv", keep_default_na=False)
    ran_again = set(table.loc[table["ran"].astype(str) == "True", "key"])
    result = {
        "first exit code": first_code,
        "done when interrupted": len(finished),
        "second exit code": second.returncode,
        "ran the second time": len(ran_again),
        "only unfinished ran": not (ran_again & finished),
        "all done": bool((table["status"] == "done").all()),
        "table equals uninterrupted": None if reference is None else _same(table, reference),
        "load before": before,
        "load after": _load(),
    }
    print(f"  {result}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"some of {', '.join(RUNS)} (default: all)")
    parser.add_argument("--tasks", type=int, default=16, help="reconstructions (default 16)")
    parser.add_argument("--size", type=int, default=128, help="micrograph side (default 128)")
    parser.add_argument("--iterations", type=int, default=100, help="steps (default 100)")
    parser.add_argument("--noop", type=int, default=200, help="no-op tasks (default 200)")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {', '.join(unknown)}: choose from {', '.join(RUNS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="batch_benchmark_"))
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"{args.tasks} tasks of {args.size}x{args.size}, {args.iterations} iterations; {work}")
    results = {"load before": _load()}
    uninterrupted = work / "throughput_2" / "batch.csv"
    reference = (
        pd.read_csv(uninterrupted, keep_default_na=False) if uninterrupted.exists() else None
    )
    for run in args.runs or RUNS:
        print(run, flush=True)
        if run == "throughput":
            results[run] = throughput(args, work)
            reference = pd.read_csv(uninterrupted, keep_default_na=False)
        elif run == "overhead":
            results[run] = overhead(args, work)
        else:
            results[run] = (fault if run == "fault" else restart)(args, work, reference)
    results["load after"] = _load()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
