"""``napari-microstructure reconstruct``: 2D reconstructions, and 3D volumes with ``--3d``."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from .. import __version__
from ..core.steps import run_to_end
from ._common import load_input, printer


def add_parser(commands) -> None:
    """Add the ``reconstruct`` command to the subparsers ``commands``."""
    from ..core import volume
    from ..core.decoder import DEFAULT_ITERATIONS, DEFAULT_LAYERS, DEFAULT_LEVELS, OPTIMIZERS
    from ..core.device import DEVICE_CHOICES

    rec = commands.add_parser(
        "reconstruct",
        help="reconstruct new microstructures from a micrograph",
        description="Reconstruct new microstructures whose Gram matrices match the micrograph's, "
        "with the micrograph's phases and exact phase fractions; write them as .tif with a "
        "provenance JSON and a CSV of fidelity metrics.",
    )
    rec.add_argument(
        "input",
        nargs="?",
        help=".npy, .tif or .png micrograph (default: the alloy sample shipped with the package)",
    )
    rec.add_argument(
        "--out", default="reconstructions", help="output folder (default: %(default)s)"
    )
    rec.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the input's)"
    )
    rec.add_argument(
        "--samples", type=int, default=1, help="number of reconstructions (default: %(default)s)"
    )
    rec.add_argument(
        "--layers",
        nargs="+",
        default=list(DEFAULT_LAYERS),
        help="VGG19 layers whose Gram matrices are matched (default: %(default)s)",
    )
    # None: the 2D defaults, or the 3D ones (core.volume) with --3d
    rec.add_argument(
        "--iterations",
        type=int,
        help=f"optimizer steps (default: {DEFAULT_ITERATIONS}; 3D: {volume.DEFAULT_ITERATIONS})",
    )
    rec.add_argument(
        "--levels",
        type=int,
        help=f"coarse-to-fine resolution levels (default: {DEFAULT_LEVELS}; 3D: {volume.DEFAULT_LEVELS})",
    )
    rec.add_argument(
        "--optimizer", choices=OPTIMIZERS, help=f"(default: lbfgs; 3D: {volume.DEFAULT_OPTIMIZER})"
    )
    rec.add_argument(
        "--device",
        default="auto",
        help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto)",
    )
    rec.add_argument(
        "--weights",
        default="normalized",
        help="normalized, torchvision, random, or a weights file (default: %(default)s)",
    )
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--periodic", action="store_true", help="make outputs that tile seamlessly")
    rec.add_argument(
        "--kind",
        choices=("auto", "labels", "grey"),
        default="auto",
        help="phase labels or grey levels (default: detect)",
    )
    rec.add_argument("--overwrite", action="store_true", help="replace existing output files")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.add_argument(
        "--3d",
        dest="volume",
        nargs="+",
        type=int,
        metavar="SIZE",
        help="reconstruct one SIZE^3 volume (or D H W) whose slices match INPUT along all three axes, or --x/--y/--z",
    )
    for axis, plane in (
        ("x", "the yz plane, rows z"),
        ("y", "the xz plane, rows z"),
        ("z", "the xy plane, rows y"),
    ):
        rec.add_argument(
            f"--{axis}",
            metavar="MICROGRAPH",
            help=f"with --3d: the micrograph normal to {axis} ({plane})",
        )
    rec.add_argument(
        "--slices",
        type=int,
        help=f"with --3d: slices per axis in each step, 0 for all (default: {volume.DEFAULT_SLICES_PER_AXIS}; all with --optimizer lbfgs)",
    )
    rec.set_defaults(run=run)


def run(args) -> int:
    """Reconstruct INPUT (2D, or a volume with ``--3d``); return the exit code."""
    from .. import io, report
    from ..core.decoder import DEFAULT_ITERATIONS, DEFAULT_LEVELS, reconstruct_steps
    from ..core.phases import validate_image

    if args.volume is not None or args.x or args.y or args.z:
        return _run_volume(args)
    image, stem = load_input(args.input)
    image = validate_image(image, 2, "input image")
    options = dict(
        size=args.size,
        samples=args.samples,
        layers=args.layers,
        iterations=DEFAULT_ITERATIONS if args.iterations is None else args.iterations,
        levels=DEFAULT_LEVELS if args.levels is None else args.levels,
        optimizer=args.optimizer or "lbfgs",
        periodic=args.periodic,
        kind=args.kind,
        seed=args.seed,
        device=args.device,
        weights=args.weights,
    )
    # Everything (image, options, device, memory, weights, outputs) is checked here, before the
    # optimization; the outputs are written at the end, all or nothing.
    steps = reconstruct_steps(image, **options)
    out = Path(args.out)
    names = [f"{stem}_reconstruction_{i + 1}" for i in range(args.samples)]
    tifs = [out / f"{name}.tif" for name in names]
    provenance_file, metrics_file = out / f"{stem}_provenance.json", out / f"{stem}_metrics.csv"
    planned = [*tifs, provenance_file, metrics_file]
    outputs = dict(
        overwrite=args.overwrite,
        inputs=[args.input] if args.input else [],
        stale=_other_samples(out, stem, args.samples),
    )
    io.check_outputs(planned, **outputs)
    size = tuple(args.size or image.shape)
    print(f"Reconstructing {stem} {image.shape} -> {args.samples} x {size}", file=sys.stderr)
    result = run_to_end(steps, None if args.quiet else printer(sys.stderr))

    kind = result.model.kind
    seconds = result.provenance["timings"]["total_seconds"]
    table = report.run_table(
        image,
        list(result.images),
        names,
        run=1,
        seconds=seconds,
        final_loss=list(result.final_loss),
        partial=result.partial,
        kind=kind,
    )
    provenance = {
        **result.provenance,
        "input_file": args.input or f"sample:{stem}",
        "floor": report.floor_of(image, kind),
        "package_version": __version__,
    }
    with io.atomic_outputs(planned, **outputs) as staged:
        for path, reconstruction in zip(tifs, result.images):
            io.write_tif(staged[path], reconstruction, metadata={"source": stem})
        io.write_json(staged[provenance_file], provenance)
        table.to_csv(staged[metrics_file], index=False)

    shown = ["name", *report.error_columns(kind)]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"{seconds:.1f} s on {result.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0


def _other_samples(out: Path, stem: str, samples: int) -> list[Path]:
    """The ``<stem>_reconstruction_<n>.tif`` of an earlier run in ``out`` with ``n`` above
    ``samples``: a run with fewer samples leaves them out of date."""
    prefix = f"{stem}_reconstruction_"
    found = out.glob(f"{glob.escape(prefix)}*.tif") if out.is_dir() else ()
    numbers = {path: path.stem[len(prefix) :] for path in found}
    return sorted(path for path, n in numbers.items() if n.isdigit() and int(n) > samples)


def _run_volume(args) -> int:
    """``reconstruct --3d SIZE``: one volume from INPUT (all three axes) or from --x/--y/--z."""
    import numpy as np

    from .. import io, report
    from ..core.errors import InputError
    from ..core.volume import reconstruct_volume_steps

    paths = {axis: path for axis, path in (("z", args.z), ("y", args.y), ("x", args.x)) if path}
    if args.volume is None:
        raise InputError("--x/--y/--z are the micrographs of a 3D reconstruction: add --3d SIZE.")
    if paths and args.input:
        raise InputError(
            "Give either INPUT (one micrograph for all three axes) or --x/--y/--z (one per "
            "axis), not both."
        )
    if args.size or args.samples != 1:
        raise InputError(
            "--size and --samples are for 2D; a 3D reconstruction makes one volume of --3d SIZE."
        )
    # a (1, H, W) file is one micrograph
    if paths:
        micrographs = {axis: np.squeeze(io.read_image(path)) for axis, path in paths.items()}
        stem = Path(next(iter(paths.values()))).stem
        inputs = list(paths.values())
    else:
        micrographs, stem = load_input(args.input)
        micrographs = np.squeeze(micrographs)
        paths = dict.fromkeys("zyx", args.input or f"sample:{stem}")
        inputs = [args.input] if args.input else []
    out = Path(args.out)
    planned = [out / f"{stem}_volume{end}" for end in (".tif", "_provenance.json", "_metrics.csv")]
    given = (
        ("iterations", args.iterations),
        ("levels", args.levels),
        ("optimizer", args.optimizer),
        ("slices_per_axis", args.slices),
    )
    options = dict(
        layers=args.layers,
        periodic=args.periodic,
        kind=args.kind,
        seed=args.seed,
        device=args.device,
        weights=args.weights,
        **{k: v for k, v in given if v is not None},
    )
    if args.slices == 0 or (args.slices is None and args.optimizer == "lbfgs"):
        options["slices_per_axis"] = None  # every slice: L-BFGS needs a fixed objective
    # Everything (micrographs, size, options, device, memory, weights, outputs) is checked here,
    # before the optimization; the outputs are written at the end, all or nothing.
    size = args.volume[0] if len(args.volume) == 1 else args.volume
    steps = reconstruct_volume_steps(micrographs, size, **options)
    outputs = dict(overwrite=args.overwrite, inputs=inputs)
    io.check_outputs(planned, **outputs)
    sources = ", ".join(f"{axis}: {Path(path).name}" for axis, path in paths.items())
    print(f"Reconstructing a volume from {sources}", file=sys.stderr)
    result = run_to_end(steps, None if args.quiet else printer(sys.stderr))

    kind = result.model.kind
    seconds = result.provenance["timings"]["total_seconds"]
    table = report.volume_run_table(
        micrographs,
        result.volume,
        f"{stem}_volume",
        run=1,
        seconds=seconds,
        final_loss=list(result.final_loss),
        partial=result.partial,
        kind=kind,
    )
    provenance = {**result.provenance, "input_files": paths, "package_version": __version__}
    with io.atomic_outputs(planned, **outputs) as staged:
        io.write_tif(staged[planned[0]], result.volume, metadata={"source": stem, "axes": "ZYX"})
        io.write_json(staged[planned[1]], provenance)
        table.to_csv(staged[planned[2]], index=False)
    volume_row = table.iloc[-1]
    print("  ".join(f"{c} {volume_row[c]:.4f}" for c in table.columns if c.startswith("e_")))
    print(f"{seconds:.1f} s on {result.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0
