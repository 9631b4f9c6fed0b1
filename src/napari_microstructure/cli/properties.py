"""``napari-microstructure properties label|build|train|predict|validate|adapt``:
structure-property models."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core.errors import InputError
from ..core.steps import run_to_end
from ._common import OUTPUTS, add_option, image_files, options_from, printer

#: The CSV that ``properties validate`` writes unless told otherwise.
VALIDATION_FILE = "validation.csv"


def add_parser(commands) -> None:
    """Add the ``properties`` command and its subcommands to the subparsers ``commands``."""
    from ..core.adaptation import ADAPT_CROPS, ADAPT_RECONSTRUCTIONS
    from ..core.datasets import DatasetOptions
    from ..core.decoder import ReconstructionOptions
    from ..core.device import DEVICE_CHOICES as device_choices
    from ..core.properties import COVERAGE, TrainOptions

    def axis_or_index(text):
        return int(text) if text.lstrip("-").isdigit() else text

    properties = commands.add_parser(
        "properties",
        help="structure-property models: labels, datasets, training, prediction",
        description="Predict a property of a phase (e.g. D_eff along x) from microstructures with a model built on the "
        "pretrained VGG19 (transfer learning, Li et al. 2018). Subcommands: label, build, train, predict, "
        "validate, adapt.",
    )
    tasks = properties.add_subparsers(dest="task", required=True)
    devices = f"; one of {', '.join(device_choices)} or cuda:N"

    label = tasks.add_parser(
        "label", help="compute D_eff and tau (TauFactor) of a folder of images into a CSV"
    )
    label.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (.tif, .npy, .png; 2D or 3D) or folders of them",
    )
    label.add_argument(
        "--out", default=OUTPUTS["label"], help="CSV to write (default: %(default)s)"
    )
    add_option(label, DatasetOptions, "phase", type=int)
    add_option(label, DatasetOptions, "axes", nargs="+", type=axis_or_index, note=" or indices")
    label.add_argument(
        "--conductivity",
        nargs=2,
        action="append",
        metavar=("LABEL", "VALUE"),
        help="the conductivity of a phase label (0: insulating), once per label of the images: "
        "adds sigma_eff per axis, the effective conductivity of the composite (TauFactor's "
        "multi-phase solver)",
    )
    label.add_argument("--cache", help="folder of a label cache (results kept between runs)")
    add_option(label, DatasetOptions, "device", note=devices)
    label.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    label.add_argument("--quiet", action="store_true", help="no progress")
    label.set_defaults(run=_properties_label)

    build = tasks.add_parser(
        "build",
        help="build a labelled dataset of generated microstructures, crops and reconstructions",
    )
    build.add_argument(
        "--out", required=True, help="dataset folder: .tif images, labels.csv, provenance.json"
    )
    add_option(build, DatasetOptions, "generated", type=int)
    add_option(build, DatasetOptions, "families", nargs="+")
    add_option(build, DatasetOptions, "size", type=int, nargs="+", metavar="SIDE")
    add_option(
        build, DatasetOptions, "volume_fraction", nargs=2, type=float, metavar=("LOW", "HIGH")
    )
    build.add_argument(
        "--micrographs",
        nargs="+",
        metavar="FILE",
        help="micrographs (or folders) to take crops and reconstructions of",
    )
    add_option(build, DatasetOptions, "crops", type=int)
    add_option(build, DatasetOptions, "reconstructions", type=int)
    add_option(
        build,
        ReconstructionOptions,
        "iterations",
        type=int,
        note=", of each reconstruction of a micrograph",
    )
    add_option(build, DatasetOptions, "phase", type=int, note=" (generated samples: 1)")
    add_option(build, DatasetOptions, "axes", nargs="+", type=axis_or_index)
    build.add_argument(
        "--no-labels",
        action="store_true",
        help="write the samples without computing D_eff and tau",
    )
    build.add_argument(
        "--cache",
        help="folder of a label cache that keeps every result at once "
        "(default: the --out folder's, written with the dataset)",
    )
    add_option(build, DatasetOptions, "seed", type=int)
    add_option(build, DatasetOptions, "device", note=devices)
    build.add_argument("--overwrite", action="store_true", help="replace existing files")
    build.add_argument("--quiet", action="store_true", help="no progress")
    build.set_defaults(run=_properties_build)

    train = tasks.add_parser(
        "train", help="train a model on a dataset folder and a label column; cross-validate"
    )
    train.add_argument("dataset", help="folder of the images")
    train.add_argument(
        "--labels",
        help="CSV with a file (or name) column and the label column (default: DATASET/labels.csv)",
    )
    add_option(train, TrainOptions, "property", "--column")
    add_option(train, TrainOptions, "units")
    add_option(train, TrainOptions, "mode")
    trunk = train.add_mutually_exclusive_group()
    add_option(trunk, TrainOptions, "depth")
    trunk.add_argument(
        "--profile", help="pruning profile (JSON) whose recommended configuration sets the trunk"
    )
    add_option(train, TrainOptions, "weights")
    train.add_argument(
        "--phase", type=int, help="phase of interest (default: the table's phase column, else 1)"
    )
    add_option(train, TrainOptions, "axis", type=axis_or_index)
    add_option(train, TrainOptions, "input")
    add_option(train, TrainOptions, "learns")
    add_option(train, TrainOptions, "physics")
    add_option(train, TrainOptions, "folds", type=int)
    add_option(train, TrainOptions, "epochs", type=int)
    train.add_argument(
        "--out", default=OUTPUTS["train"], help="output folder (default: %(default)s)"
    )
    train.add_argument("--name", help="file name stem of the outputs (default: COLUMN_MODE)")
    add_option(train, TrainOptions, "seed", type=int)
    add_option(train, TrainOptions, "device", note=devices)
    train.add_argument("--overwrite", action="store_true", help="replace existing files")
    train.add_argument("--quiet", action="store_true", help="no progress")
    train.set_defaults(run=_properties_train)

    pred = tasks.add_parser("predict", help="predict a property of images with a trained model")
    pred.add_argument("model", help="model file (.npz) written by train")
    pred.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files (2D or 3D) or folders of them"
    )
    pred.add_argument(
        "--out", default=OUTPUTS["predict"], help="CSV to write (default: %(default)s)"
    )
    pred.add_argument("--phase", type=int, help="phase of interest (default: the model's)")
    pred.add_argument("--axis", type=axis_or_index, help="transport axis (default: the model's)")
    coverage_help = f"coverage of the prediction intervals (default: {COVERAGE:g})"
    pred.add_argument("--coverage", type=float, help=coverage_help)
    add_option(pred, TrainOptions, "device", note=devices)
    pred.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    pred.set_defaults(run=_properties_predict)

    check = tasks.add_parser(
        "validate",
        help="label images with TauFactor, predict them and score the model per folder",
        description="Whether to trust a model on a material: D_eff of each image by TauFactor "
        "against the model's prediction; per folder the MAE, the relative MAE (over the mean "
        "true value, percolating images only), R², the share of true values inside the "
        "intervals and the number of images out of the training range.",
    )
    check.add_argument("model", help="model file (.npz) written by train")
    check.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files (2D or 3D) or folders of them"
    )
    check.add_argument(
        "--out",
        default=VALIDATION_FILE,
        help="CSV of the images (default: %(default)s); the summary goes beside it, as "
        "STEM_summary.csv",
    )
    check.add_argument("--phase", type=int, help="phase of interest (default: the model's)")
    check.add_argument("--axis", type=axis_or_index, help="transport axis (default: the model's)")
    check.add_argument("--coverage", type=float, help=coverage_help)
    check.add_argument("--cache", help="folder of a label cache (results kept between runs)")
    add_option(check, TrainOptions, "device", note=devices)
    check.add_argument("--overwrite", action="store_true", help="replace existing CSVs")
    check.add_argument("--quiet", action="store_true", help="no progress")
    check.set_defaults(run=_properties_validate)

    adapt = tasks.add_parser(
        "adapt",
        help="re-fit a model on its training set plus crops of your micrographs (TauFactor labels)",
        description="Adapt a model to your material: crops (and reconstructions) of your "
        "micrographs, labelled with D_eff by TauFactor along the model's axis, are added to the "
        "model's training set and a model of the same kind is trained on the whole.",
    )
    adapt.add_argument("model", help="model file (.npz) written by train")
    adapt.add_argument(
        "micrographs", nargs="+", metavar="MICROGRAPH", help="your micrographs, or folders"
    )
    adapt.add_argument("--out", required=True, help="the adapted model's file (.npz)")
    adapt.add_argument(
        "--dataset",
        help="the training set's folder (default: the one the model was trained on)",
    )
    add_option(adapt, DatasetOptions, "phase", type=int, note=" (of the micrographs)")
    adapt.add_argument(
        "--crops",
        type=int,
        default=ADAPT_CROPS,
        help="random crops per micrograph (default: %(default)s)",
    )
    adapt.add_argument(
        "--reconstructions",
        type=int,
        default=ADAPT_RECONSTRUCTIONS,
        help="reconstructions per 2D micrograph (default: %(default)s)",
    )
    add_option(adapt, DatasetOptions, "size", type=int, nargs="+", metavar="SIDE")
    add_option(adapt, DatasetOptions, "seed", type=int)
    adapt.add_argument("--cache", help="folder of a label cache (results kept between runs)")
    add_option(adapt, TrainOptions, "device", note=devices)
    adapt.add_argument("--overwrite", action="store_true", help="replace an existing model")
    adapt.add_argument("--quiet", action="store_true", help="no progress")
    adapt.set_defaults(run=_properties_adapt)


def _properties_label(args) -> int:
    import pandas as pd

    from .. import io
    from ..core._validate import axis_index, check_label_image
    from ..core.datasets import DatasetOptions, LabelCache, transport_labels
    from ..core.device import resolve_device
    from ..core.physics import check_conductivities

    options = options_from(args, DatasetOptions)
    files = image_files(args.inputs)
    out = Path(args.out)
    cache = LabelCache(args.cache) if args.cache else None
    inputs = [*files, *([cache.path] if cache is not None else [])]
    # everything is checked before the first label: outputs, images, phase, axes, device
    io.check_outputs([out], overwrite=args.overwrite, inputs=inputs)
    images = [check_label_image(io.read_image(p), f"image {p}", options.phase) for p in files]
    conductivities = _conductivities(args.conductivity)
    for path, image in zip(files, images):
        for axis in options.axes:
            axis_index(axis, image.ndim)
        if conductivities is not None:
            try:
                check_conductivities(image, conductivities)
            except InputError as error:
                raise InputError(f"{path}: {error}") from None
    device = resolve_device(options.device)
    rows = []
    started = time.perf_counter()
    for index, (path, image) in enumerate(zip(files, images), start=1):
        row = transport_labels(
            image,
            options.phase,
            options.axes,
            cache=cache,
            device=device,
            conductivities=conductivities,
        )
        rows.append({"file": str(path), **row})
        if not args.quiet:
            print(f"\r[{index}/{len(files)}] {path.name}", end="", file=sys.stderr, flush=True)
    if not args.quiet:
        print(file=sys.stderr)
    with io.atomic_outputs([out], overwrite=args.overwrite, inputs=inputs) as staged:
        pd.DataFrame(rows).to_csv(staged[out], index=False)
    print(f"labelled {len(rows)} image(s) in {time.perf_counter() - started:.1f} s; wrote {out}")
    return 0


def _conductivities(pairs) -> dict | None:
    """``--conductivity LABEL VALUE`` pairs as ``{label: value}`` (None when not given)."""
    if not pairs:
        return None
    conductivities = {}
    for label, value in pairs:
        try:
            conductivities[int(label)] = float(value)
        except ValueError:
            raise InputError(
                f"--conductivity takes a phase label (a whole number) and a conductivity (a "
                f"number); got {label!r} {value!r}."
            ) from None
    return conductivities


def _size(args) -> dict:
    """``--size`` as the options take it: one side (a square, or a cube for volumes) as a
    number, H W or D H W as a tuple; nothing when not given."""
    if args.size is None:
        return {}
    return {"size": args.size[0] if len(args.size) == 1 else tuple(args.size)}


def _properties_build(args) -> int:
    from .. import io
    from ..core import datasets
    from ..core.errors import InputError

    files = image_files(args.micrographs or [])
    micrographs = {}
    for path in files:
        if path.stem in micrographs:
            raise InputError(
                f"Two micrographs are called {path.stem!r} ({path}): rename one of them."
            )
        micrographs[path.stem] = io.read_image(path)
    out = Path(args.out)
    label = not args.no_labels
    iterations = {"iterations": args.iterations} if args.iterations is not None else None
    options = options_from(
        args,
        datasets.DatasetOptions,
        label=label,
        reconstruction_options=iterations,
        **_size(args),
    )
    # the --out folder's own label cache is kept in memory and written with the dataset, all or
    # nothing; an explicit --cache folder keeps every result as soon as it is computed
    own_cache = label and not args.cache
    names = datasets.planned_files(
        generated=options.generated,
        families=options.families,
        micrographs=micrographs,
        crops=options.crops,
        reconstructions=options.reconstructions,
    )
    outputs = datasets.dataset_outputs(out, names, cache=own_cache)
    stale = datasets.stale_files(out, names, files)
    io.check_outputs(outputs, overwrite=args.overwrite, inputs=files, stale=stale)
    if own_cache:
        cache = datasets.LabelCache(out, write_through=False)
    else:
        cache = datasets.LabelCache(args.cache) if label else None
    steps = datasets.build_dataset_steps(options, micrographs=micrographs, cache=cache)
    dataset = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    datasets.write_dataset(
        dataset, out, overwrite=args.overwrite, inputs=files, cache=cache if own_cache else None
    )
    timings = dataset.provenance["timings"]
    print(
        f"{len(dataset.images)} samples in {timings['total_seconds']:.1f} s "
        f"(labels {timings['label_seconds']:.1f} s); "
        f"wrote {out / datasets.LABELS_FILE} and the images to {out}"
    )
    return 0


def _dataset_paths(folder: Path, names) -> list[Path]:
    """The images a label table names: ``folder/name``, else a file of that stem in ``folder``."""
    from .. import io
    from ..core.errors import InputError

    paths = []
    for name in names:
        path = folder / name
        if not path.is_file():
            matches = sorted(
                p
                for p in folder.glob(f"{Path(name).stem}.*")
                if p.suffix.lower() in io.IMAGE_SUFFIXES
            )
            if not matches:
                raise InputError(
                    f"The label table names {name!r}, but {folder} holds no such image."
                )
            path = matches[0]
        paths.append(path)
    return paths


def _properties_train(args) -> int:
    import pandas as pd

    from .. import io, report
    from ..core import properties
    from ..core.datasets import LABELS_FILE, read_labels
    from ..core.device import resolve_device

    options = options_from(args, properties.TrainOptions)
    properties.check_training_options(options)
    resolve_device(options.device)
    folder = Path(args.dataset)
    table_path = Path(args.labels) if args.labels else folder / LABELS_FILE
    table = read_labels(table_path, [options.property])
    raw = pd.read_csv(table_path)
    if args.phase is not None:
        options = options_from(args, properties.TrainOptions, phase=args.phase)
    elif "phase" in raw.columns:
        options = options_from(args, properties.TrainOptions, phase=tuple(raw["phase"]))
    paths = _dataset_paths(folder, table["name"])
    out = Path(args.out)
    stem = args.name or f"{options.property}_{options.mode}"
    planned = [
        out / f"{stem}.npz",
        out / f"{stem}_metrics.json",
        out / f"{stem}_parity.png",
        out / f"{stem}_predictions.csv",
    ]
    # without cross-validation there is no parity plot nor predictions: an earlier run's are stale
    written, stale = (planned, []) if options.folds else (planned[:2], planned[2:])
    weights_file = [options.weights] if Path(options.weights).is_file() else []
    inputs = [table_path, *paths, *([args.profile] if args.profile else []), *weights_file]
    io.check_outputs(written, overwrite=args.overwrite, inputs=inputs, stale=stale)
    images = [io.read_image(path) for path in paths]
    steps = properties.train_steps(
        images,
        table[options.property].to_numpy(),
        options,
        profile=args.profile,
        names=list(table["name"]),
    )
    print(
        f"Training a {options.mode} model of {options.property} on {len(images)} images",
        file=sys.stderr,
    )
    model = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    # the training set, for `properties adapt`
    model.header["provenance"]["dataset"] = str(folder.resolve())
    model.header["provenance"]["labels"] = str(table_path.resolve())
    header = model.header
    cv = header.get("cross_validation")
    training = header["training"]
    metrics = {k: v for k, v in header.items() if k != "training"}
    metrics["training"] = {k: v for k, v in training.items() if k not in ("names", "targets")}
    contents = [model.save, metrics]
    if cv:
        title = f"{options.property}, {cv['folds']}-fold CV"
        contents.append(
            report.plot_parity(
                training["targets"], cv["predictions"], title=title, units=options.units
            )
        )
        predictions = {
            "file": training["names"],
            options.property: training["targets"],
            "predicted": cv["predictions"],
        }
        contents.append(pd.DataFrame(predictions))
    files = dict(zip((path.name for path in written), contents))
    report.write_report(out, files, overwrite=args.overwrite, inputs=inputs, stale=stale)
    if cv:
        print(
            f"cross-validated R2 {cv['r2']:.3f}, MAE {cv['mae']:.4g}, RMSE {cv['rmse']:.4g} ({cv['folds']} folds)"
        )
    print(f"{header['provenance']['timings']['total_seconds']:.1f} s; wrote {planned[0]}")
    return 0


def _properties_predict(args) -> int:
    import pandas as pd

    from .. import io, report
    from ..core.device import resolve_device
    from ..core.properties import TrainOptions, load_model

    model = load_model(args.model)
    files = image_files(args.inputs)
    out = Path(args.out)
    inputs = [Path(args.model), *files]
    io.check_outputs([out], overwrite=args.overwrite, inputs=inputs)
    device = resolve_device(options_from(args, TrainOptions).device)
    images = [io.read_image(path) for path in files]
    started = time.perf_counter()
    names = [f"image {path}" for path in files]
    found = model.predict_intervals(
        images,
        coverage=args.coverage,
        phase=args.phase,
        axis=args.axis,
        device=device,
        names=names,
    )
    column = model.header["property"]
    table = {
        "file": [str(p) for p in files],
        f"{column}_predicted": found.values,
        **found.columns(),
    }
    report.write_report(
        out.parent, {out.name: pd.DataFrame(table)}, overwrite=args.overwrite, inputs=inputs
    )
    _warn_out_of_range(files, found.out_of_range, found.reasons, out)
    if found.note:
        print(f"note: {found.note}", file=sys.stderr)
    print(
        f"predicted {column} of {len(files)} image(s) in {time.perf_counter() - started:.2f} s; wrote {out}"
    )
    return 0


def _warn_out_of_range(files, flags, reasons, out: Path) -> None:
    """One warning line for the images outside the training data, each with its reason."""
    if not any(flags):
        return
    listed = "; ".join(f"{p} ({r})" for p, o, r in zip(files, flags, reasons) if o)
    print(
        f"warning: {int(sum(flags))} image(s) lie outside what the model was trained on; "
        f"their predictions are extrapolations (out_of_range and reason in {out}): {listed}",
        file=sys.stderr,
    )


def _properties_validate(args) -> int:
    from .. import io, report
    from ..core.datasets import LabelCache
    from ..core.properties import TrainOptions, load_model
    from ..core.property_validation import ALL, validate_steps

    model = load_model(args.model)
    files = image_files(args.inputs)
    out = Path(args.out)
    summary_out = out.with_name(f"{out.stem}_summary.csv")
    cache = LabelCache(args.cache) if args.cache else None
    inputs = [Path(args.model), *files, *([cache.path] if cache is not None else [])]
    io.check_outputs([out, summary_out], overwrite=args.overwrite, inputs=inputs)
    images = [io.read_image(path) for path in files]
    steps = validate_steps(
        model,
        images,
        [str(path) for path in files],
        groups=[str(path.parent) for path in files],
        phase=args.phase,
        axis=args.axis,
        coverage=args.coverage,
        cache=cache,
        device=options_from(args, TrainOptions).device,
    )
    result = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    table = result.images.rename(columns={"name": "file", "group": "folder"})
    summary = result.summary.rename(columns={"group": "folder"})
    report.write_report(
        out.parent,
        {out.name: table, summary_out.name: summary},
        overwrite=args.overwrite,
        inputs=inputs,
    )
    flagged = table["out_of_range"].to_numpy(bool)
    _warn_out_of_range(table["file"], flagged, table["reason"], out)
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    for row in summary.itertuples(index=False):
        where = "all images" if row.folder == ALL else row.folder
        print(
            f"{where}: n {row.n} ({row.percolating} percolating), MAE {row.mae:.4g}, "
            f"relative MAE {row.relative_mae:.3f}, R2 {row.r2:.3f}, coverage "
            f"{row.coverage:.2f} of {row.nominal_coverage:.2f}, out of range {row.out_of_range}"
        )
    print(f"wrote {out} and {summary_out}")
    return 0


def _properties_adapt(args) -> int:
    from .. import io
    from ..core import adaptation
    from ..core.datasets import DatasetOptions, LabelCache
    from ..core.errors import InputError
    from ..core.properties import load_model

    model = load_model(args.model)
    recorded = model.header.get("provenance", {}).get("dataset")
    folder = args.dataset or recorded
    if folder is None:
        raise InputError(
            "The model does not record the folder of its training set: give it with --dataset."
        )
    files = image_files(args.micrographs)
    micrographs = {}
    for path in files:
        if path.stem in micrographs:
            raise InputError(
                f"Two micrographs are called {path.stem!r} ({path}): rename one of them."
            )
        micrographs[path.stem] = io.read_image(path)
    out = Path(args.out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    cache = LabelCache(args.cache) if args.cache else None
    inputs = [Path(args.model), *files, Path(folder) / "labels.csv"]
    io.check_outputs([out], overwrite=args.overwrite, inputs=inputs)
    options = options_from(args, DatasetOptions, **_size(args))
    steps = adaptation.adapt_steps(model, micrographs, folder, options, cache=cache)
    adapted = run_to_end(steps, None if args.quiet else printer(sys.stderr))
    if adapted is None:
        print("stopped before the model was trained; nothing written", file=sys.stderr)
        return 1
    adapted.save(out, overwrite=args.overwrite)
    added = adapted.header["provenance"]["adapted"]["added"]
    metrics = adapted.metrics
    quality = (
        f"cross-validated R2 {metrics['r2']:.3f}, MAE {metrics['mae']:.4g}; "
        if "r2" in metrics
        else ""
    )
    trained = adapted.header["provenance"]["adapted"]["from"]["n_samples"]
    print(f"adapted on {trained} + {added} samples; {quality}wrote {out}")
    return 0
