"""Batches of jobs on a dask cluster: restartable, with nothing lost and nothing done twice.

A :class:`Task` names an input file, a job (:data:`TASKS`: ``reconstruct``, ``reconstruct3d``,
``prune``, ``label``, ``predict``) and its options. :func:`plan` checks every task before any
work (the file, the job, each option against the job's options class, duplicate names) and keys
it by the sha256 of the input's bytes, the job, its options, the network weights' (or property
model's) sha256 and the package version. Each task writes its files into ``<out>/<key>/``
through :func:`~napari_microstructure.report.write_report` (all or nothing; ``row.json``, the
task's row of the batch table, is renamed into place last, so a folder holding it is complete);
a task that raises writes ``error.json`` there instead, and the next run tries it again.

:func:`batch_steps` runs the tasks that are not complete on a ``dask.distributed`` client, a
generator of :class:`BatchProgress` messages that returns the batch table
(:func:`assemble_table`: one row per task, read from the folders); :func:`batch` runs it to the
end. Without a client, a ``LocalCluster`` starts: one single-threaded worker process per core,
or one per GPU with a ``GPU`` resource that every task asks for. Tasks go to the workers a few
at a time (:data:`IN_FLIGHT_PER_THREAD` per worker thread), so a batch of any length keeps the
scheduler's load small; dask runs a task again elsewhere when its worker dies, and the atomic
writes leave no partial or duplicate output. Nothing here imports Qt or napari; dask and torch
load on use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import secrets
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .core.errors import InputError, MicrostructureError
from .core.options import merge, option, spec
from .core.steps import STOP, run_to_end
from .core.weights import sha256_of

__all__ = [
    "TASKS",
    "BatchProgress",
    "PlannedTask",
    "PredictOptions",
    "Task",
    "assemble_table",
    "batch",
    "batch_steps",
    "connect",
    "local_client",
    "parse_options",
    "plan",
    "read_manifest",
    "run_task",
    "task_key",
    "write_table",
]

#: The jobs a batch runs.
TASKS = ("reconstruct", "reconstruct3d", "prune", "label", "predict")
#: The options of ``label`` that a batch passes on (the other DatasetOptions build datasets).
LABEL_OPTIONS = ("phase", "axes", "device")
#: A task's row of the batch table; written last, so a folder that holds it is complete.
ROW_FILE = "row.json"
#: The error of a task that failed (removed when a later run completes it).
ERROR_FILE = "error.json"
#: A task's provenance: the job's own record, the task, its key and its input's sha256.
PROVENANCE_FILE = "provenance.json"
#: The batch table, written to the output folder (Parquet beside the CSV where pyarrow is).
TABLE_STEM = "batch"
#: Seconds to reach a scheduler before the batch is refused.
CONNECT_TIMEOUT = 5.0
#: Seconds between two progress messages while no task ends.
PROGRESS_INTERVAL = 0.5
#: Seconds between two counts of the cluster's worker threads (each count asks the scheduler).
WORKERS_INTERVAL = 2.0
#: Tasks handed to the cluster per worker thread: one running, one ready; a Stop waits for these
#: (4 halve a no-op task's overhead, nothing for tasks of seconds: docs/measurements/batch.md)
IN_FLIGHT_PER_THREAD = 2
#: The leading columns of the batch table; each job's own columns follow.
TABLE_COLUMNS = ("row", "output", "input", "task", "status", "ran", "error", "seconds")


@dataclass(frozen=True)
class PredictOptions:
    """The options of a ``predict`` task: the property model and how to apply it; picklable."""

    model: str | None = option(None, "the property model (.npz) written by `properties train`")
    phase: int | None = option(None, "the phase of interest (None: the model's)")
    axis: int | str | None = option(None, "the transport axis (None: the model's)")
    device: str = option("auto", "where torch computes: auto, cpu, cuda, cuda:N or mps")


def _options_class(task: str):
    """The options class of the job ``task``."""
    if task == "reconstruct":
        from .core.decoder import ReconstructionOptions

        return ReconstructionOptions
    if task == "reconstruct3d":
        from .core.volume import VolumeOptions

        return VolumeOptions
    if task == "prune":
        from .core.pruning import StudyOptions

        return StudyOptions
    if task == "label":
        from .core.datasets import DatasetOptions

        return DatasetOptions
    return PredictOptions


@dataclass(frozen=True)
class Task:
    """One job of a batch: the ``input`` file, the job's name (one of :data:`TASKS`), the
    options that differ from the job's defaults, and the name of its row (default: the input's
    stem and the job, ``alloy_reconstruct``, numbered ``_2`` ... from its second task on)."""

    input: str | os.PathLike
    task: str
    options: Mapping = field(default_factory=dict)
    output: str | None = None


@dataclass(frozen=True)
class PlannedTask:
    """A checked :class:`Task`: its row number (from 1), the input's absolute path and sha256,
    the job's options object, the row's name, the key and the folder it writes; picklable."""

    row: int
    input: str
    input_sha256: str
    task: str
    options: object
    output: str
    key: str
    folder: str


# --------------------------------------------------------------------------------------------
# Reading tasks


def _immutable(value):
    """Lists from JSON as tuples (options hold immutable values), recursively."""
    if isinstance(value, list):
        return tuple(_immutable(item) for item in value)
    return value


def parse_options(text: str | Mapping | None) -> dict:
    """Options from a JSON object (``{"iterations": 50}``) or ``key=value;key=value`` text
    whose values are read as JSON where they can be (``iterations=50;size=[64,64];device=cpu``);
    JSON lists become tuples."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): _immutable(v) for k, v in text.items()}
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InputError(f"the options {text!r} are not a JSON object ({exc}).") from None
        if not isinstance(parsed, dict):
            raise InputError(f"the options {text!r} are not a JSON object.")
        return {str(k): _immutable(v) for k, v in parsed.items()}
    options = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise InputError(
                f"the option {item!r} is not NAME=VALUE: write options as "
                "'iterations=50;seed=3' or as a JSON object."
            )
        try:
            options[name.strip()] = _immutable(json.loads(value))
        except ValueError:
            options[name.strip()] = value.strip()
    return options


def read_manifest(path: str | os.PathLike) -> list[Task]:
    """The tasks of a manifest CSV: columns ``input`` and ``task``, optional ``options``
    (:func:`parse_options`) and ``output``. Relative paths (``input``, a predict task's
    ``model``) are relative to the manifest's folder."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The manifest {path} does not exist: give the path of a CSV file.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"The manifest {path} could not be read as CSV ({exc}).") from None
    missing = [c for c in ("input", "task") if c not in table.columns]
    if missing:
        raise InputError(
            f"The manifest {path} has no {' or '.join(missing)} column: its columns must be "
            "input, task, and optionally options and output."
        )
    unknown = sorted(set(table.columns) - {"input", "task", "options", "output"})
    if unknown:
        raise InputError(
            f"The manifest {path} has unknown columns {', '.join(unknown)}: its columns are "
            "input, task, options and output."
        )
    tasks = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        try:
            options = parse_options(record.get("options", ""))
        except InputError as error:
            raise InputError(f"{path}, row {number}: {error}") from None
        if isinstance(options.get("model"), str):
            options["model"] = str(path.parent / options["model"])
        tasks.append(
            Task(
                input=path.parent / record["input"] if record["input"] else "",
                task=record["task"].strip(),
                options=options,
                output=record.get("output") or None,
            )
        )
    if not tasks:
        raise InputError(f"The manifest {path} has no rows: add one row per task.")
    return tasks


# --------------------------------------------------------------------------------------------
# Checking and keying tasks


def _check_values(options_class, changes: Mapping) -> None:
    """Each given option within its declared range and choices."""
    for name, value in changes.items():
        item = spec(options_class, name)
        if item.choices is not None and value not in item.choices:
            raise InputError(
                f"the option {name}={value!r} is not one of {', '.join(map(str, item.choices))}."
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            below = item.low is not None and value < item.low
            above = item.high is not None and value > item.high
            if below or above:
                bounds = [
                    f"{word} {bound:g}"
                    for word, bound in (("at least", item.low), ("at most", item.high))
                    if bound is not None
                ]
                raise InputError(f"the option {name}={value} must be {' and '.join(bounds)}.")


def _task_options(task: Task):
    """The checked options object of ``task`` (InputError without the row)."""
    if task.task not in TASKS:
        raise InputError(f"unknown task {task.task!r}: choose one of {', '.join(TASKS)}.")
    options_class = _options_class(task.task)
    changes = parse_options(task.options)
    if task.task == "label":
        unused = sorted(set(changes) - set(LABEL_OPTIONS))
        if unused:
            raise InputError(
                f"unknown option{'s' if len(unused) > 1 else ''} {', '.join(unused)} of label; "
                f"its options are {', '.join(LABEL_OPTIONS)}."
            )
    try:
        options = merge(options_class, None, changes)
    except InputError as error:
        raise InputError(str(error)[0].lower() + str(error)[1:]) from None
    _check_values(options_class, changes)
    if task.task == "predict":
        if options.model is None:
            raise InputError("a predict task needs model=PATH (a model written by train).")
        model = Path(options.model)
        if not model.is_file():
            raise InputError(f"the property model {model} does not exist.")
        options = dataclasses.replace(options, model=str(model.resolve()))
    return options


def _weights_sha256(task: str, options, known: dict) -> str | None:
    """The sha256 of what the job's network is made of: the VGG19 weights, or the property
    model file of a predict task; None for label (no network). ``known`` caches by name."""
    if task == "label":
        return None
    name = options.model if task == "predict" else options.weights
    if name not in known:
        if task == "predict":
            known[name] = sha256_of(name)
        else:
            from .core.weights import load_weights

            weights = load_weights(name)
            known[name] = weights.sha256 or weights.source
    return known[name]


def task_key(input_sha256: str, task: str, options, weights_sha256: str | None) -> str:
    """The sha256 that names a task's folder: the input's bytes, the job, every option (the
    defaults included), the weights' sha256 and the package version."""
    from . import __version__
    from .io import json_default

    record = [input_sha256, task, dataclasses.asdict(options), weights_sha256, __version__]
    text = json.dumps(record, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def _default_output(name: str, taken: Mapping) -> str:
    """``name``, or ``name_2``, ``name_3`` ... when an earlier row has it (a second task of the
    same input)."""
    number, candidate = 1, name
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    return candidate


def plan(tasks: Iterable[Task], out: str | os.PathLike) -> list[PlannedTask]:
    """Check every task and key it, before any work: a missing file, an unknown task or
    option, an option outside its range, two tasks with one output name, or one task twice
    are refused with an :class:`InputError` that names each row and the reason."""
    from .io import IMAGE_SUFFIXES, check_outputs

    out = Path(out)
    tasks = list(tasks)
    if not tasks:
        raise InputError("The batch has no tasks: give a manifest with rows or image files.")
    check_outputs([out / f"{TABLE_STEM}.csv"], overwrite=True)
    problems, planned, outputs, keys, known = [], [], {}, {}, {}
    for number, task in enumerate(tasks, start=1):
        path = Path(task.input)
        output = task.output or _default_output(f"{path.stem}_{task.task}", outputs)
        try:
            if not path.is_file():
                raise InputError(f"the input {path} does not exist or is not a file.")
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(
                    f"the input {path} is not an image file ({', '.join(IMAGE_SUFFIXES)})."
                )
            options = _task_options(task)
            if output in outputs:
                raise InputError(
                    f"the output name {output!r} is row {outputs[output]}'s too: give each "
                    "row its own output name (the output column)."
                )
            outputs[output] = number
            input_sha256 = sha256_of(path)
            key = task_key(
                input_sha256, task.task, options, _weights_sha256(task.task, options, known)
            )
            if key in keys:
                raise InputError(
                    f"row {keys[key]} is the same task (same input, task and options): remove "
                    "one of them."
                )
            keys[key] = number
        except MicrostructureError as error:  # InputError, or weights that cannot be loaded
            problems.append(f"row {number} ({path.name or 'no input'}): {error}")
            continue
        planned.append(
            PlannedTask(
                number,
                str(path.resolve()),
                input_sha256,
                task.task,
                options,
                output,
                key,
                str((out / key).resolve()),
            )
        )
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if problems[20:] else [])
        raise InputError(
            f"{len(problems)} of {len(tasks)} task(s) cannot run; nothing was started:\n  "
            + "\n  ".join(shown)
        )
    return planned


# --------------------------------------------------------------------------------------------
# One task, on a worker


def _read_row(folder: Path) -> dict | None:
    """The row a complete task folder holds, or None."""
    try:
        return json.loads((folder / ROW_FILE).read_text())
    except (OSError, ValueError):
        return None


def _remove_leftovers(folder: Path) -> None:
    """Remove what an attempt killed while writing left behind (hidden temporary files)."""
    if folder.is_dir():
        for leftover in [*folder.glob(".*.partial-*"), *folder.glob(".*.replaced-*")]:
            leftover.unlink(missing_ok=True)


def _use_worker_gpu() -> None:
    """On a worker of a local GPU cluster (named 0, 1, ... with a ``GPU`` resource), make its
    own device torch's current one, so that device ``auto``/``cuda`` means it."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    if "GPU" in worker.state.total_resources and isinstance(worker.name, int):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(worker.name % torch.cuda.device_count())


def _reconstruct(path: str, options) -> tuple[dict, dict, dict]:
    from . import io, report
    from .core._validate import validate_image
    from .core.decoder import reconstruct_steps

    image = validate_image(io.read_image(path), 2, "micrograph")
    result = run_to_end(reconstruct_steps(image, options))
    names = [f"reconstruction_{i + 1}" for i in range(len(result.images))]
    kind = result.model.kind
    table = report.run_table(
        image,
        list(result.images),
        names,
        run=1,
        seconds=result.provenance["timings"]["total_seconds"],
        final_loss=list(result.final_loss),
        partial=result.partial,
        kind=kind,
    )
    samples = table[table["name"].isin(names)]
    row = {column: float(samples[column].mean()) for column in report.error_columns(kind)}
    row["final loss"] = float(sum(result.final_loss) / len(result.final_loss))
    images = result.images if len(result.images) > 1 else result.images[0]
    files = {
        "reconstruction.tif": partial(io.write_tif, array=images, metadata={"source": path}),
        "metrics.csv": table,
    }
    return files, row, {**result.provenance, "floor": report.floor_of(image, kind)}


def _reconstruct3d(path: str, options) -> tuple[dict, dict, dict]:
    import numpy as np

    from . import io, report
    from .core.volume import reconstruct_volume_steps

    micrograph = np.squeeze(io.read_image(path))
    result = run_to_end(reconstruct_volume_steps(micrograph, None, options))
    kind = result.model.kind
    table = report.volume_run_table(
        micrograph,
        result.volume,
        "volume",
        run=1,
        seconds=result.provenance["timings"]["total_seconds"],
        final_loss=list(result.final_loss),
        partial=result.partial,
        kind=kind,
    )
    volume = table.iloc[-1]
    row = {column: float(volume[column]) for column in report.error_columns(kind)}
    row["final loss"] = float(sum(result.final_loss) / len(result.final_loss))
    metadata = {"source": path, "axes": "ZYX"}
    files = {
        "volume.tif": partial(io.write_tif, array=result.volume, metadata=metadata),
        "metrics.csv": table,
    }
    return files, row, result.provenance


def _prune(path: str, options) -> tuple[dict, dict, dict]:
    from . import io, report
    from .core.pruning import prune_steps

    array = io.read_image(path)
    stem = Path(path).stem
    if array.ndim == 3 and array.shape[0] < min(array.shape[1:]):  # a stack of micrographs
        images, names = list(array), [f"{stem}[{i}]" for i in range(array.shape[0])]
    else:
        images, names = [array], [stem]
    profile = run_to_end(prune_steps(images, options, material=stem, names=names))
    files = {
        "pruning.json": profile.save,
        "pruning.csv": profile.table(),
        "pruning.png": report.plot_profile(profile),
    }
    row = {"recommended": profile.recommended or "", "partial": bool(profile.partial)}
    return files, row, profile.provenance


def _label(path: str, options) -> tuple[dict, dict, dict]:
    from . import io
    from .core._validate import check_label_image
    from .core.datasets import transport_labels
    from .core.device import resolve_device
    from .core.provenance import environment

    image = check_label_image(io.read_image(path), f"image {path}", options.phase)
    device = resolve_device(options.device)
    row = transport_labels(image, options.phase, options.axes, device=device)
    return {}, row, environment(device)


def _predict(path: str, options) -> tuple[dict, dict, dict]:
    from . import io
    from .core.device import resolve_device
    from .core.properties import load_model
    from .core.provenance import environment

    image = io.read_image(path)
    model = load_model(options.model)
    device = resolve_device(options.device)
    predictions = model.predict_intervals(
        image, phase=options.phase, axis=options.axis, device=options.device
    )
    row = {model.property_name: float(predictions.values[0])}
    row.update({name: values[0] for name, values in predictions.columns().items()})
    provenance = {**environment(device), "model": options.model, "model_header": model.header}
    return {}, row, provenance


_JOBS = {
    "reconstruct": _reconstruct,
    "reconstruct3d": _reconstruct3d,
    "prune": _prune,
    "label": _label,
    "predict": _predict,
}


def run_task(task: PlannedTask) -> dict:
    """Run one planned task and write its folder; return its row with ``ran`` (False when the
    folder was complete already). An error is written to ``error.json`` and returned in the
    row's ``error``; the next run tries the task again. Runs on a dask worker."""
    from . import report

    folder = Path(task.folder)
    stored = _read_row(folder)
    if stored is not None:
        return {**stored, "ran": False}
    _remove_leftovers(folder)
    _use_worker_gpu()
    started = time.perf_counter()
    record = {
        "row": task.row,
        "output": task.output,
        "input": task.input,
        "task": task.task,
        "key": task.key,
    }
    try:
        files, row, provenance = _JOBS[task.task](task.input, task.options)
        seconds = time.perf_counter() - started
        row = {**record, "status": "done", "error": "", "seconds": seconds, **row}
        provenance = {
            **provenance,
            "batch": {**record, "input_sha256": task.input_sha256, "seconds": seconds},
            "options": dataclasses.asdict(task.options),
        }
        files = {**files, PROVENANCE_FILE: provenance, ROW_FILE: row}  # the row last
        report.write_report(folder, files, overwrite=True, stale=[folder / ERROR_FILE])
    except Exception as error:  # noqa: BLE001 - any failure of a task is its row's error
        row = _record_error(task, error, time.perf_counter() - started)
    return {**row, "ran": True}


def _record_error(task: PlannedTask, error: BaseException, seconds: float) -> dict:
    """Write ``error.json`` of ``task`` and return its row."""
    from . import report

    row = {
        "row": task.row,
        "output": task.output,
        "input": task.input,
        "task": task.task,
        "key": task.key,
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "seconds": seconds,
    }
    report.write_report(task.folder, {ERROR_FILE: row}, overwrite=True)
    return row


# --------------------------------------------------------------------------------------------
# The table


def assemble_table(tasks: Sequence[PlannedTask], ran: Mapping[str, bool] | None = None):
    """The batch table from the task folders: one row per task in the order given, with
    ``status`` done (its row), failed (its error) or not run; ``ran`` says which ran in this
    call (``ran`` maps keys to it)."""
    import pandas as pd

    ran = ran or {}
    rows = []
    for task in tasks:
        folder = Path(task.folder)
        row = _read_row(folder)
        if row is None:
            try:
                row = json.loads((folder / ERROR_FILE).read_text())
            except (OSError, ValueError):
                row = {"status": "not run", "error": "", "seconds": math.nan}
        rows.append(
            {
                **row,
                "row": task.row,
                "output": task.output,
                "input": task.input,
                "task": task.task,
                "key": task.key,
                "ran": bool(ran.get(task.key, False)),
            }
        )
    table = pd.DataFrame(rows)
    first = [*TABLE_COLUMNS]
    last = ["key"]
    return table[first + [c for c in table.columns if c not in first + last] + last]


def write_table(table, out: str | os.PathLike) -> list[Path]:
    """Write the batch table into ``out``: ``batch.csv``, and ``batch.parquet`` where pyarrow
    is installed; replaces the table of an earlier run."""
    import importlib.util

    from . import report

    files = {f"{TABLE_STEM}.csv": table}
    if importlib.util.find_spec("pyarrow") is not None:
        files[f"{TABLE_STEM}.parquet"] = partial(_write_parquet, table)
    return report.write_report(out, files, overwrite=True)


def _write_parquet(table, path: Path) -> None:
    # mixed columns (a string in one task's row, a number in another's) as text
    mixed = [c for c in table.columns if table[c].dtype == object]
    table.astype(dict.fromkeys(mixed, str)).to_parquet(path, index=False)


# --------------------------------------------------------------------------------------------
# Running a batch


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch is: tasks done (``skipped`` of them complete before this run), failed,
    running and waiting, the throughput of this run and the dask dashboard's address."""

    total: int
    done: int
    skipped: int
    failed: int
    running: int
    waiting: int
    elapsed: float
    dashboard: str | None = None

    @property
    def fraction_done(self) -> float:
        return (self.done + self.failed) / max(self.total, 1)

    @property
    def rate(self) -> float:
        """Tasks this run finished per second."""
        finished = self.done - self.skipped + self.failed
        return finished / self.elapsed if self.elapsed > 0 else 0.0

    def describe(self) -> str:
        """One line: the counts, the throughput, the time and the dashboard."""
        counts = f"{self.done}/{self.total} done"
        if self.skipped:
            counts += f" ({self.skipped} before)"
        parts = [counts, f"{self.failed} failed", f"{self.running} running"]
        parts.append(f"{self.waiting} waiting")
        left = (self.running + self.waiting) / self.rate if self.rate > 0 else math.nan
        timing = f"{self.elapsed:.0f} s" + (f", ~{left:.0f} s left" if math.isfinite(left) else "")
        line = " · ".join([", ".join(parts), f"{self.rate:.2f} tasks/s", timing])
        return line + (f" · dashboard {self.dashboard}" if self.dashboard else "")


def connect(scheduler: str, timeout: float = CONNECT_TIMEOUT):
    """A dask client of the scheduler at ``scheduler`` (``tcp://host:port``), or InputError
    when it cannot be reached within ``timeout`` seconds."""
    from distributed import Client

    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise InputError(
            f"The dask scheduler at {scheduler!r} could not be reached within {timeout:g} s "
            f"({type(error).__name__}: {error}); check the address (tcp://HOST:PORT) and that "
            "the scheduler runs. Nothing was started."
        ) from None


def local_client(workers: int | None = None):
    """A client of a new ``LocalCluster`` on this machine: one single-threaded worker process
    per core (torch on one thread each), or, where CUDA is, one per GPU with a ``GPU``
    resource; ``workers`` sets the number."""
    import torch
    from distributed import Client

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    count = workers or gpus or os.cpu_count() or 1
    threads = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    return Client(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        resources={"GPU": 1} if gpus else None,
        env=threads,
        set_as_default=False,
    )


def _gpu_cluster(client) -> bool:
    """Whether the cluster's workers offer a ``GPU`` resource (then every task asks for one)."""
    workers = client.scheduler_info().get("workers", {}).values()
    return any("GPU" in worker.get("resources", {}) for worker in workers)


def _threads(client) -> int:
    return max(sum(client.nthreads().values()), 1)


def batch_steps(
    tasks: Iterable[Task | PlannedTask],
    out: str | os.PathLike,
    client=None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
) -> Generator[BatchProgress, str | None, object]:
    """Run a batch: a generator of :class:`BatchProgress` messages that returns the batch
    table (a pandas DataFrame, also written by :func:`write_table`).

    ``tasks``: :class:`Task` objects (checked by :func:`plan` here) or planned tasks.
    ``client``: a ``distributed.Client``; else the scheduler at ``scheduler``; else a new
    ``LocalCluster`` of ``workers`` workers (:func:`local_client`), closed at the end. Tasks
    whose folder is complete are not run again. Send ``"stop"`` to start no more tasks: those
    under way finish and the table holds what exists. Everything (the tasks, the scheduler) is
    checked when this function is called, before any task starts.
    """
    tasks = list(tasks)
    planned = tasks if all(isinstance(task, PlannedTask) for task in tasks) else plan(tasks, out)
    if client is None and scheduler is not None:
        client = connect(scheduler)
    return _run(planned, Path(out), client, workers)


def _run(planned: list[PlannedTask], out: Path, client, workers: int | None):
    from concurrent.futures import CancelledError

    from distributed import wait

    started = time.perf_counter()
    owned = client is None
    todo = [task for task in planned if _read_row(Path(task.folder)) is None]
    skipped = len(planned) - len(todo)
    ran: dict[str, bool] = {}
    counts = {"done": skipped, "failed": 0}
    in_flight: dict = {}
    try:
        if owned:
            client = local_client(workers)
        resources = {"GPU": 1} if _gpu_cluster(client) else None
        token = secrets.token_hex(4)
        waiting = list(reversed(todo))
        stopping = False
        cluster = {"threads": _threads(client), "at": time.perf_counter()}

        def threads() -> int:
            """The cluster's worker threads, asked again every WORKERS_INTERVAL seconds (an
            adaptive cluster grows and shrinks)."""
            if time.perf_counter() - cluster["at"] > WORKERS_INTERVAL:
                cluster.update(threads=_threads(client), at=time.perf_counter())
            return cluster["threads"]

        def message() -> BatchProgress:
            running = min(len(in_flight), threads())
            return BatchProgress(
                len(planned),
                counts["done"],
                skipped,
                counts["failed"],
                running,
                len(in_flight) - running + (0 if stopping else len(waiting)),
                time.perf_counter() - started,
                client.dashboard_link,
            )

        while True:
            while waiting and not stopping and len(in_flight) < IN_FLIGHT_PER_THREAD * threads():
                task = waiting.pop()
                future = client.submit(
                    run_task,
                    task,
                    key=f"{task.task}-{task.output}-{task.key[:12]}-{token}",
                    pure=False,
                    resources=resources,
                )
                in_flight[future] = task
            if in_flight:
                with client.as_current():
                    # none ended in time (a message all the same), or one was cancelled (below)
                    with contextlib.suppress(TimeoutError, CancelledError):
                        wait(list(in_flight), PROGRESS_INTERVAL, "FIRST_COMPLETED")
            for future in [future for future in in_flight if future.done()]:
                task = in_flight.pop(future)
                row = _result(future, task)
                ran[task.key] = bool(row.get("ran"))
                counts["failed" if row.get("status") == "failed" else "done"] += 1
            if not in_flight and (stopping or not waiting):
                break
            if (yield message()) == STOP:
                stopping = True
        yield message()
        table = assemble_table(planned, ran)
        write_table(table, out)
        return table
    finally:
        if in_flight:
            client.cancel(list(in_flight))
        if owned and client is not None:
            client.close()


def _result(future, task: PlannedTask) -> dict:
    """The row a finished future returned. A task whose folder is complete is done even when
    its answer was lost (its worker died after writing it, before the client had the row); a
    task that dask could not finish (its workers died again and again, or its result could not
    travel) gets its error recorded here."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - recorded as the task's error
        stored = _read_row(Path(task.folder))
        if stored is not None:
            return {**stored, "ran": True}
        return _record_error(task, error, math.nan)


def batch(
    tasks: Iterable[Task | PlannedTask],
    out: str | os.PathLike,
    client=None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    callback=None,
):
    """Run a batch to the end and return its table; see :func:`batch_steps`. ``callback`` sees
    each :class:`BatchProgress` and may return ``"stop"``."""
    steps = batch_steps(tasks, out, client, scheduler=scheduler, workers=workers)
    return run_to_end(steps, callback)
