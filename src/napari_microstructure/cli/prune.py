"""``napari-microstructure prune``: the pruning study (which network depth a material needs)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.steps import run_to_end
from ._common import OUTPUTS, add_option, options_from, printer


def add_parser(commands) -> None:
    """Add the ``prune`` command to the subparsers ``commands``."""
    from ..core.device import DEVICE_CHOICES
    from ..core.pruning import StudyOptions

    prune = commands.add_parser(
        "prune",
        help="find the shallowest network depth a material needs (pruning study)",
        description="Reconstruct each micrograph with VGG19 truncated after pool1 ... pool5 (and "
        "with chosen subsets of Gram layers), score fidelity (e_S2, e_LP, e_VF, connectivity) "
        "against cost (seconds, FLOPs, memory), and recommend the shallowest configuration whose "
        "mean e_S2 is within the tolerance of the best or at the floor. Writes the profile "
        "(JSON), the table (CSV) and the plots (PNG).",
    )
    prune.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=".npy, .tif or .png micrographs of one material (a 3D .npy/.tif is a stack of micrographs)",
    )
    prune.add_argument(
        "--depths",
        nargs="*",
        help="depths 1-5 (or pool1 ... pool5) to study (default: all five; --depths alone: none, subsets only)",
    )
    prune.add_argument(
        "--subsets",
        nargs="+",
        metavar="LAYERS",
        help="extra configurations, each a comma-separated list of layers, e.g. conv1_1,pool2 pool3",
    )
    add_option(prune, StudyOptions, "samples", type=int)
    budget = prune.add_mutually_exclusive_group()
    add_option(budget, StudyOptions, "iterations", type=int)
    add_option(budget, StudyOptions, "seconds", type=float)
    add_option(prune, StudyOptions, "levels", type=int)
    add_option(prune, StudyOptions, "tolerance", type=float)
    prune.add_argument(
        "--material", help="name of the material (default: the input file names' common prefix)"
    )
    prune.add_argument(
        "--out", default=OUTPUTS["prune"], help="output folder (default: %(default)s)"
    )
    add_option(
        prune, StudyOptions, "device", note=f"; one of {', '.join(DEVICE_CHOICES)} or cuda:N"
    )
    add_option(prune, StudyOptions, "weights")
    add_option(prune, StudyOptions, "seed", type=int)
    prune.add_argument("--overwrite", action="store_true", help="replace existing output files")
    prune.add_argument("--quiet", action="store_true", help="no progress")
    prune.set_defaults(run=run)


def run(args) -> int:
    """Run the pruning study of INPUT...; return the exit code."""
    from .. import io, report
    from ..core import pruning
    from ..core.decoder import check_seed

    images, names = [], []
    for path in args.inputs:
        array = io.read_image(path)
        stem = Path(path).stem
        if array.ndim == 3 and array.shape[0] < min(array.shape[1:]):  # a stack of micrographs
            images.extend(array)
            names.extend(f"{stem}[{i}]" for i in range(array.shape[0]))
        else:
            images.append(array)
            names.append(stem)
    options = options_from(args, pruning.StudyOptions)
    configurations = pruning.default_configurations(
        options.depths if args.depths is None else args.depths, args.subsets or ()
    )
    options = options_from(args, pruning.StudyOptions, configurations=tuple(configurations))
    # image i uses seed + i: the last image's seed must be valid too
    check_seed(options.seed)
    check_seed(options.seed + max(len(images), 1) - 1)
    # the material is named after the files (a stack's images are FILE[0], FILE[1], ...)
    material = args.material or pruning.default_material([Path(p).stem for p in args.inputs])
    # Everything (images, configurations, device, weights, memory, outputs) is checked here,
    # before the study; the outputs are written at the end, all or nothing.
    steps = pruning.prune_steps(images, options, material=material, names=names)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in material)
    out = Path(args.out)
    planned = [out / f"{stem}_pruning{suffix}" for suffix in (".json", ".csv", ".png")]
    outputs = dict(overwrite=args.overwrite, inputs=args.inputs)
    io.check_outputs(planned, **outputs)
    if options.seconds is not None:
        budget = f"{options.seconds:g} s"
    else:
        budget = f"{options.iterations or 'default'} iterations"
    print(
        f"Pruning study of {material}: {len(images)} image(s), {len(configurations)} configurations "
        f"({', '.join(c.name for c in configurations)}), {options.samples} sample(s) each, {budget}",
        file=sys.stderr,
    )
    profile = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    contents = (profile.save, profile.table(), report.plot_profile(profile))
    report.write_report(out, dict(zip((path.name for path in planned), contents)), **outputs)
    print(profile.summary())
    seconds, device = profile.provenance["total_seconds"], profile.provenance["device"]
    print(f"{seconds:.1f} s on {device}; wrote {len(planned)} files to {out}")
    return 0
