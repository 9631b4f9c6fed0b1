"""``napari-microstructure properties label|build|train|predict``: structure-property models."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core.steps import run_to_end
from ._common import OUTPUTS, add_option, image_files, options_from, printer


def add_parser(commands) -> None:
    """Add the ``properties`` command and its subcommands to the subparsers ``commands``."""
    from ..core.datasets import DatasetOptions
    from ..core.decoder import ReconstructionOptions
    from ..core.device import DEVICE_CHOICES as device_choices
    from ..core.properties import TrainOptions

    def axis_or_index(text):
        return int(text) if text.lstrip("-").isdigit() else text

    properties = commands.add_parser(
        "properties",
        help="structure-property models: labels, datasets, training, prediction",
        description="Predict a property of a phase (e.g. D_eff along x) from microstructures with a model built on the "
        "pretrained VGG19 (transfer learning, Li et al. 2018). Subcommands: label, build, train, predict.",
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
    add_option(build, DatasetOptions, "size", type=int)
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
    add_option(pred, TrainOptions, "device", note=devices)
    pred.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    pred.set_defaults(run=_properties_predict)


def _properties_label(args) -> int:
    import pandas as pd

    from .. import io
    from ..core._validate import axis_index, check_label_image
    from ..core.datasets import DatasetOptions, LabelCache, transport_labels
    from ..core.device import resolve_device

    options = options_from(args, DatasetOptions)
    files = image_files(args.inputs)
    out = Path(args.out)
    cache = LabelCache(args.cache) if args.cache else None
    inputs = [*files, *([cache.path] if cache is not None else [])]
    # everything is checked before the first label: outputs, images, phase, axes, device
    io.check_outputs([out], overwrite=args.overwrite, inputs=inputs)
    images = [check_label_image(io.read_image(p), f"image {p}", options.phase) for p in files]
    for image in images:
        for axis in options.axes:
            axis_index(axis, image.ndim)
    device = resolve_device(options.device)
    rows = []
    started = time.perf_counter()
    for index, (path, image) in enumerate(zip(files, images), start=1):
        row = transport_labels(image, options.phase, options.axes, cache=cache, device=device)
        rows.append({"file": str(path), **row})
        if not args.quiet:
            print(f"\r[{index}/{len(files)}] {path.name}", end="", file=sys.stderr, flush=True)
    if not args.quiet:
        print(file=sys.stderr)
    with io.atomic_outputs([out], overwrite=args.overwrite, inputs=inputs) as staged:
        pd.DataFrame(rows).to_csv(staged[out], index=False)
    print(f"labelled {len(rows)} image(s) in {time.perf_counter() - started:.1f} s; wrote {out}")
    return 0


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
        args, datasets.DatasetOptions, label=label, reconstruction_options=iterations
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
    values = model.predict(images, phase=args.phase, axis=args.axis, device=device, names=names)
    outside = model.out_of_range(images, phase=args.phase)
    column = model.header["property"]
    table = {
        "file": [str(p) for p in files],
        f"{column}_predicted": values,
        "out_of_range": outside,
    }
    report.write_report(
        out.parent, {out.name: pd.DataFrame(table)}, overwrite=args.overwrite, inputs=inputs
    )
    if outside.any():
        known = model.header.get("training", {}).get("volume_fraction_range")
        reason = "a constant image"
        if known:
            reason = (
                f"a phase fraction outside the training images' {known[0]:.3g} to "
                f"{known[1]:.3g}, or {reason}"
            )
        listed = ", ".join(str(p) for p, o in zip(files, outside) if o)
        print(
            f"warning: {int(outside.sum())} image(s) lie outside what the model was trained on "
            f"({reason}); their predictions are extrapolations (out_of_range in {out}): "
            f"{listed}",
            file=sys.stderr,
        )
    print(
        f"predicted {column} of {len(files)} image(s) in {time.perf_counter() - started:.2f} s; wrote {out}"
    )
    return 0
