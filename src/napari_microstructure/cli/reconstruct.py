"""``napari-microstructure reconstruct``: 2D reconstructions, and 3D volumes with ``--3d``."""

from __future__ import annotations

import argparse
import glob
import sys
from functools import partial
from pathlib import Path

from ..core.steps import run_to_end
from ._common import OUTPUTS, add_option, load_input, options_from, printer


def add_parser(commands) -> None:
    """Add the ``reconstruct`` command to the subparsers ``commands``."""
    from ..core.decoder import ReconstructionOptions
    from ..core.device import DEVICE_CHOICES
    from ..core.volume import VolumeOptions

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
        "--out", default=OUTPUTS["reconstruct"], help="output folder (default: %(default)s)"
    )
    rec.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the input's)"
    )
    add_option(rec, ReconstructionOptions, "samples", type=int)
    add_option(rec, ReconstructionOptions, "layers", nargs="+")
    three_d = (("3D", VolumeOptions),)
    add_option(rec, ReconstructionOptions, "iterations", type=int, also=three_d)
    add_option(rec, ReconstructionOptions, "levels", type=int, also=three_d)
    add_option(rec, ReconstructionOptions, "optimizer", also=three_d)
    add_option(
        rec,
        ReconstructionOptions,
        "device",
        note=f"; one of {', '.join(DEVICE_CHOICES)} or cuda:N",
    )
    add_option(rec, ReconstructionOptions, "weights")
    add_option(rec, ReconstructionOptions, "seed", type=int)
    add_option(
        rec,
        ReconstructionOptions,
        "periodic",
        action=argparse.BooleanOptionalAction,
        also=three_d,
    )
    add_option(rec, ReconstructionOptions, "kind")
    add_option(rec, ReconstructionOptions, "keep_transport", action=argparse.BooleanOptionalAction)
    add_option(rec, ReconstructionOptions, "transport", action=argparse.BooleanOptionalAction)
    add_option(rec, ReconstructionOptions, "transport_weight", type=float)
    add_option(rec, ReconstructionOptions, "two_point_weight", type=float, also=three_d)
    add_option(
        rec,
        ReconstructionOptions,
        "target_deff",
        nargs=3,
        action="append",
        metavar=("PHASE", "AXIS", "VALUE"),
        note=(
            "; with --3d, the volume's 3D D_eff along AXIS 0-2 (z, y, x), a number, held on "
            "the whole volume; repeat for more targets"
        ),
    )
    rec.add_argument("--overwrite", action="store_true", help="replace existing output files")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.add_argument(
        "--no-transport-check",
        action="store_true",
        help="leave out the transport checks of the table (D_eff by TauFactor, spanning, "
        "clusters): for huge images",
    )
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
    add_option(
        rec,
        VolumeOptions,
        "slices_per_axis",
        "--slices",
        type=int,
        note="; with --3d, 0 for every slice (the default with --optimizer lbfgs)",
    )
    rec.set_defaults(run=run)


def run(args) -> int:
    """Reconstruct INPUT (2D, or a volume with ``--3d``); return the exit code."""
    from .. import io, report
    from ..core._validate import validate_image
    from ..core.decoder import ReconstructionOptions, reconstruct_steps

    if args.volume is not None or args.x or args.y or args.z:
        return _run_volume(args)
    image, stem = load_input(args.input)
    image = validate_image(image, 2, "input image")
    options = options_from(args, ReconstructionOptions, **_design_targets(args))
    # Everything (image, options, device, memory, weights, outputs) is checked here, before the
    # optimization; the outputs are written at the end, all or nothing.
    steps = reconstruct_steps(image, options)
    out = Path(args.out)
    names = [f"{stem}_reconstruction_{i + 1}" for i in range(options.samples)]
    tifs = [out / f"{name}.tif" for name in names]
    provenance_file, metrics_file = out / f"{stem}_provenance.json", out / f"{stem}_metrics.csv"
    planned = [*tifs, provenance_file, metrics_file]
    outputs = dict(
        overwrite=args.overwrite,
        inputs=[args.input] if args.input else [],
        stale=_other_samples(out, stem, options.samples),
    )
    io.check_outputs(planned, **outputs)
    size = tuple(args.size or image.shape)
    print(f"Reconstructing {stem} {image.shape} -> {options.samples} x {size}", file=sys.stderr)
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
        transport=not args.no_transport_check,
    )
    provenance = {
        **result.provenance,
        "input_file": args.input or f"sample:{stem}",
        "floor": report.floor_of(image, kind),
    }
    files = {
        path.name: partial(io.write_tif, array=reconstruction, metadata={"source": stem})
        for path, reconstruction in zip(tifs, result.images)
    }
    files.update({provenance_file.name: provenance, metrics_file.name: table})
    report.write_report(out, files, **outputs)

    shown = ["name", *report.error_columns(kind)]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _print_transport_checks(table)
    print(f"{seconds:.1f} s on {result.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0


def _print_transport_checks(table) -> None:
    """The cost of the transport checks and the values outside their tolerance."""
    from ..report import outside_tolerance

    if "transport (s)" not in table.columns:
        return
    # a D_eff's relative difference is marked with the same reason as the D_eff itself
    marks = {k: r for k, r in outside_tolerance(table).items() if not k[1].endswith(" rel diff")}
    seconds = table["transport (s)"].sum()
    print(f"transport checks: {seconds:.1f} s, {len(marks)} value(s) outside tolerance")
    for (row, column), reason in marks.items():
        print(f"  {table['name'].iloc[row]}  {column}: {reason}")


def _design_targets(args) -> dict:
    """``target_deff`` from the ``--target-deff PHASE AXIS VALUE`` given, or nothing."""
    from ..core.transport import target_from_words

    if not args.target_deff:
        return {}
    return {"target_deff": tuple(target_from_words(words) for words in args.target_deff)}


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
    from ..core.volume import VolumeOptions, reconstruct_volume_steps

    paths = {axis: path for axis, path in (("z", args.z), ("y", args.y), ("x", args.x)) if path}
    if args.volume is None:
        raise InputError("--x/--y/--z are the micrographs of a 3D reconstruction: add --3d SIZE.")
    if paths and args.input:
        raise InputError(
            "Give either INPUT (one micrograph for all three axes) or --x/--y/--z (one per "
            "axis), not both."
        )
    if args.size or args.samples is not None:
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
    every_slice = args.slices_per_axis == 0 or (
        args.slices_per_axis is None and args.optimizer == "lbfgs"
    )  # L-BFGS needs a fixed objective: every slice
    options = options_from(
        args,
        VolumeOptions,
        **_design_targets(args),
        **({"slices_per_axis": None} if every_slice else {}),
    )
    # Everything (micrographs, size, options, device, memory, weights, outputs) is checked here,
    # before the optimization; the outputs are written at the end, all or nothing.
    size = args.volume[0] if len(args.volume) == 1 else args.volume
    steps = reconstruct_volume_steps(micrographs, size, options)
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
        transport=not args.no_transport_check,
    )
    provenance = {**result.provenance, "input_files": paths}
    tif = partial(io.write_tif, array=result.volume, metadata={"source": stem, "axes": "ZYX"})
    files = dict(zip((path.name for path in planned), (tif, provenance, table)))
    report.write_report(out, files, **outputs)
    volume_row = table.iloc[-1]
    print("  ".join(f"{c} {volume_row[c]:.4f}" for c in table.columns if c.startswith("e_")))
    _print_transport_checks(table)
    print(f"{seconds:.1f} s on {result.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0
