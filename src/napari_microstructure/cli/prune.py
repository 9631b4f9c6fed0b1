"""``napari-microstructure prune``: the pruning study (which network depth a material needs)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.steps import run_to_end
from ._common import printer


def add_parser(commands) -> None:
    """Add the ``prune`` command to the subparsers ``commands``."""
    from ..core.decoder import DEFAULT_ITERATIONS, DEFAULT_LEVELS
    from ..core.device import DEVICE_CHOICES

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
    prune.add_argument(
        "--samples",
        type=int,
        default=2,
        help="reconstructions per image and configuration (default: %(default)s)",
    )
    budget = prune.add_mutually_exclusive_group()
    budget.add_argument(
        "--iterations",
        type=int,
        help=f"optimizer steps per reconstruction (default: {DEFAULT_ITERATIONS})",
    )
    budget.add_argument(
        "--seconds",
        type=float,
        help="wall-time budget per image and configuration instead of --iterations",
    )
    prune.add_argument(
        "--levels",
        type=int,
        default=DEFAULT_LEVELS,
        help="coarse-to-fine levels (default: %(default)s)",
    )
    prune.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="a configuration within this fraction of the best mean e_S2 is as good (default: %(default)s)",
    )
    prune.add_argument(
        "--material", help="name of the material (default: the input file names' common prefix)"
    )
    prune.add_argument("--out", default="pruning", help="output folder (default: %(default)s)")
    prune.add_argument(
        "--device",
        default="auto",
        help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto)",
    )
    prune.add_argument(
        "--weights",
        default="normalized",
        help="normalized, torchvision, random, or a weights file (default: %(default)s)",
    )
    prune.add_argument(
        "--seed",
        type=int,
        default=0,
        help="image i uses seed + i in every configuration (default: %(default)s)",
    )
    prune.add_argument("--overwrite", action="store_true", help="replace existing output files")
    prune.add_argument("--quiet", action="store_true", help="no progress")
    prune.set_defaults(run=run)


def run(args) -> int:
    """Run the pruning study of INPUT...; return the exit code."""
    from .. import io
    from ..core import pruning
    from ..core.decoder import check_levels, check_seed

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
    configurations = pruning.default_configurations(
        pruning.DEFAULT_DEPTHS if args.depths is None else args.depths, args.subsets or ()
    )
    # image i uses seed + i: the last image's seed must be valid too
    check_seed(args.seed)
    check_seed(args.seed + max(len(images), 1) - 1)
    check_levels(args.levels)
    # the material is named after the files (a stack's images are FILE[0], FILE[1], ...)
    material = args.material or pruning.default_material([Path(p).stem for p in args.inputs])
    # Everything (images, configurations, device, weights, memory, outputs) is checked here,
    # before the study; the outputs are written at the end, all or nothing.
    steps = pruning.prune_steps(
        images,
        configurations=configurations,
        samples=args.samples,
        iterations=args.iterations,
        seconds=args.seconds,
        levels=args.levels,
        seed=args.seed,
        device=args.device,
        weights=args.weights,
        tolerance=args.tolerance,
        material=material,
        names=names,
    )
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in material)
    out = Path(args.out)
    planned = [out / f"{stem}_pruning{suffix}" for suffix in (".json", ".csv", ".png")]
    outputs = dict(overwrite=args.overwrite, inputs=args.inputs)
    io.check_outputs(planned, **outputs)
    if args.seconds is not None:
        budget = f"{args.seconds:g} s"
    else:
        budget = f"{args.iterations or 'default'} iterations"
    print(
        f"Pruning study of {material}: {len(images)} image(s), {len(configurations)} configurations "
        f"({', '.join(c.name for c in configurations)}), {args.samples} sample(s) each, {budget}",
        file=sys.stderr,
    )
    profile = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    with io.atomic_outputs(planned, **outputs) as staged:
        profile.save(staged[planned[0]])
        profile.table().to_csv(staged[planned[1]], index=False)
        pruning.save_plots(profile, staged[planned[2]])
    print(profile.summary())
    seconds, device = profile.provenance["total_seconds"], profile.provenance["device"]
    print(f"{seconds:.1f} s on {device}; wrote {len(planned)} files to {out}")
    return 0
