"""``napari-microstructure batch``: many jobs on a dask cluster, restartable."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import OUTPUTS, image_files, printer


def add_parser(commands) -> None:
    """Add the ``batch`` command to the subparsers ``commands``."""
    from ..batching import CONNECT_TIMEOUT, TASKS

    batch = commands.add_parser(
        "batch",
        help="run many reconstructions, studies, labels or predictions on a dask cluster",
        description="Run a manifest (a CSV with columns input, task, options, output) or every "
        "image of files and folders through one task, on this machine's cores (a dask "
        "LocalCluster) or on a running dask cluster. Each task writes its files into "
        "OUT/<key>/, where the key is a hash of the input's bytes, the task, its options, the "
        "weights and the version; a task whose folder is complete is not run again, so the "
        "same command after an interruption does only what is left. The table of every task "
        "is OUT/batch.csv.",
    )
    batch.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a manifest .csv, or image files and folders of them (with --task)",
    )
    batch.add_argument("--task", choices=TASKS, help="the task of every image (not a manifest)")
    batch.add_argument(
        "--options",
        default="",
        help="the task's options for every image: 'iterations=50;seed=3' or a JSON object "
        "(a manifest has its own column)",
    )
    batch.add_argument(
        "--out", default=OUTPUTS["batch"], help="output folder (default: %(default)s)"
    )
    batch.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running dask scheduler (tcp://HOST:PORT; refused if not reached within "
        f"{CONNECT_TIMEOUT:g} s) instead of a LocalCluster on this machine",
    )
    batch.add_argument(
        "--workers",
        type=int,
        help="workers of the LocalCluster (default: one per core, or one per GPU)",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress")
    batch.set_defaults(run=run)


def run(args) -> int:
    """Run the batch; return the exit code (1 when a task failed, 130 when interrupted)."""
    from ..batching import (
        Task,
        assemble_table,
        batch_steps,
        parse_options,
        plan,
        read_manifest,
        write_table,
    )
    from ..core.errors import InputError
    from ..core.steps import run_to_end

    manifests = [p for p in args.inputs if Path(p).suffix.lower() == ".csv"]
    if manifests:
        if len(args.inputs) > 1 or args.task or args.options:
            raise InputError(
                "Give one manifest (.csv) alone: its rows name the inputs, tasks and options; "
                "--task and --options are for image files and folders."
            )
        tasks = read_manifest(manifests[0])
    else:
        if args.task is None:
            raise InputError("Give --task (one of the tasks) for image files and folders.")
        options = parse_options(args.options)
        tasks = [Task(path, args.task, options) for path in image_files(args.inputs)]
    if args.workers is not None and args.scheduler:
        raise InputError("--workers sizes a LocalCluster; a running cluster has its own workers.")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be 1 or more, not {args.workers}.")
    # every task and the scheduler are checked here, before any task starts
    planned = plan(tasks, args.out)
    steps = batch_steps(planned, args.out, scheduler=args.scheduler, workers=args.workers)
    print(f"Batch of {len(planned)} task(s) into {args.out}", file=sys.stderr)
    try:
        table = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    except KeyboardInterrupt:
        table = assemble_table(planned)
        write_table(table, args.out)
        done = int((table["status"] == "done").sum())
        print(
            f"\nnapari-microstructure: interrupted; {done} of {len(table)} task(s) are done and "
            f"kept in {args.out}: run the same command again to do the rest.",
            file=sys.stderr,
        )
        return 130
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"  row {row['row']} {row['output']}: {row['error']}")
    done = int((table["status"] == "done").sum())
    print(
        f"{done} of {len(table)} task(s) done ({int(table['ran'].sum())} ran now), "
        f"{len(failed)} failed; wrote {Path(args.out) / 'batch.csv'}"
    )
    return 1 if len(failed) else 0
