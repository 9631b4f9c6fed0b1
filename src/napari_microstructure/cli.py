"""The command line: ``napari-microstructure reconstruct|prune|properties ...``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .core.errors import MicrostructureError

#: The micrograph reconstructed when no INPUT is given.
DEFAULT_SAMPLE = "alloy_256"


def _progress_printer(stream):
    """Print a one-line progress bar that rewrites itself."""
    state = {"last": 0.0}

    def show(progress):
        now = time.perf_counter()
        if now - state["last"] < 0.2 and progress.iteration < progress.total:
            return None
        state["last"] = now
        width = 30
        filled = int(width * progress.fraction_done)
        remaining = progress.elapsed / max(progress.fraction_done, 1e-9) - progress.elapsed
        stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.iteration}/{progress.total} "
            f"level {progress.level + 1}/{progress.n_levels} loss {progress.loss:.3e} "
            f"{progress.elapsed:5.1f} s, ~{remaining:4.0f} s left "
        )
        if progress.iteration >= progress.total:
            stream.write("\n")
        stream.flush()
        return None

    return show


def _load_input(path: str | None):
    from . import io
    from ._sample_data import load_sample

    if path is None:
        return load_sample(DEFAULT_SAMPLE), DEFAULT_SAMPLE
    return io.read_image(path), Path(path).stem


def _reconstruct(args) -> int:
    from . import io
    from .core import metrics
    from .core.decoder import DEFAULT_ITERATIONS, DEFAULT_LEVELS, reconstruct_steps, run_to_end
    from .core.phases import validate_image

    if args.volume is not None or args.x or args.y or args.z:
        return _reconstruct_volume(args)
    image, stem = _load_input(args.input)
    validate_image(image, 2, "input image")
    out = Path(args.out)
    names = [f"{stem}_reconstruction_{i + 1}.tif" for i in range(args.samples)]
    planned = [out / n for n in names] + [out / f"{stem}_provenance.json", out / f"{stem}_metrics.csv"]
    existing = [str(p) for p in planned if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{existing[0]} exists already; choose another --out folder or pass --overwrite."
        )
    options = dict(
        size=args.size, samples=args.samples, layers=args.layers,
        iterations=DEFAULT_ITERATIONS if args.iterations is None else args.iterations,
        levels=DEFAULT_LEVELS if args.levels is None else args.levels,
        optimizer=args.optimizer or "lbfgs", periodic=args.periodic, kind=args.kind,
        seed=args.seed, device=args.device, weights=args.weights,
    )
    # Everything (image, layers, device, memory, weights) is checked here, before any output.
    steps = reconstruct_steps(image, **options)
    print(f"Reconstructing {stem} {image.shape} -> {args.samples} x {tuple(args.size or image.shape)}", file=sys.stderr)
    result = run_to_end(steps, None if args.quiet else _progress_printer(sys.stderr))

    table = metrics.compare(image, list(result.images), names=[n[:-4] for n in names])
    floor = metrics.floor(image) if result.model.kind == "labels" else None
    out.mkdir(parents=True, exist_ok=True)
    for name, reconstruction in zip(names, result.images):
        io.write_tif(out / name, reconstruction, metadata={"source": stem}, overwrite=args.overwrite)
    provenance = {**result.provenance, "input_file": args.input or f"sample:{stem}", "floor": floor, "package_version": __version__}
    io.write_json(out / f"{stem}_provenance.json", provenance, overwrite=args.overwrite)
    table.to_csv(out / f"{stem}_metrics.csv", index=False)

    shown = [c for c in ("name", "e_vf", "e_s2", "e_lp") if c in table.columns]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if floor is not None:
        print(f"floor (two disjoint quadrants of the input): e_s2 {floor['e_s2']:.4f}, e_lp {floor['e_lp']:.4f}")
    print(f"{result.provenance['timings']['total_seconds']:.1f} s on {result.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0


def _reconstruct_volume(args) -> int:
    """``reconstruct --3d SIZE``: one volume from INPUT (all three axes) or from --x/--y/--z."""
    from . import io
    from .core.decoder import run_to_end
    from .core.errors import InputError
    from .core.volume import compare_volume, reconstruct_volume_steps

    paths = {axis: path for axis, path in (("z", args.z), ("y", args.y), ("x", args.x)) if path}
    if args.volume is None:
        raise InputError("--x/--y/--z are the micrographs of a 3D reconstruction: add --3d SIZE.")
    if paths and args.input:
        raise InputError("Give either INPUT (one micrograph for all three axes) or --x/--y/--z (one per axis), not both.")
    if args.size or args.samples != 1:
        raise InputError("--size and --samples are for 2D; a 3D reconstruction makes one volume of --3d SIZE.")
    if paths:
        micrographs = {axis: io.read_image(path) for axis, path in paths.items()}
        stem = Path(next(iter(paths.values()))).stem
    else:
        micrographs, stem = _load_input(args.input)
        paths = dict.fromkeys("zyx", args.input or f"sample:{stem}")
    out = Path(args.out)
    planned = [out / f"{stem}_volume.tif", out / f"{stem}_volume_provenance.json", out / f"{stem}_volume_metrics.csv"]
    existing = [str(p) for p in planned if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists already; choose another --out folder or pass --overwrite.")
    options = dict(
        layers=args.layers, periodic=args.periodic, kind=args.kind, seed=args.seed, device=args.device,
        weights=args.weights, **{k: v for k, v in (("iterations", args.iterations), ("levels", args.levels),
                                                   ("optimizer", args.optimizer), ("slices_per_axis", args.slices)) if v is not None},
    )
    if args.slices == 0 or (args.slices is None and args.optimizer == "lbfgs"):
        options["slices_per_axis"] = None  # every slice: L-BFGS needs a fixed objective
    # Everything (micrographs, size, layers, device, memory, weights) is checked here, before any output.
    steps = reconstruct_volume_steps(micrographs, args.volume[0] if len(args.volume) == 1 else args.volume, **options)
    print(f"Reconstructing a volume from {', '.join(f'{a}: {Path(p).name}' for a, p in paths.items())}", file=sys.stderr)
    result = run_to_end(steps, None if args.quiet else _progress_printer(sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    io.write_tif(planned[0], result.volume, metadata={"source": stem, "axes": "ZYX"}, overwrite=args.overwrite)
    provenance = {**result.provenance, "input_files": paths, "package_version": __version__}
    io.write_json(planned[1], provenance, overwrite=args.overwrite)
    written = 2
    if result.model.kind == "labels":
        import pandas as pd

        try:
            row = compare_volume(micrographs, result.volume)
        except InputError as error:  # e.g. a volume too small for the micrographs' radii
            print(f"no metrics: {error}", file=sys.stderr)
        else:
            pd.DataFrame([row]).to_csv(planned[2], index=False)
            written = 3
            shown = ["e_vf"] + [k for k in row if k.startswith(("e_s2_axis", "e_lp_axis"))]
            print("  ".join(f"{k} {row[k]:.4f}" for k in shown))
    print(f"{result.provenance['timings']['total_seconds']:.1f} s on {result.provenance['device']}; wrote {written} files to {out}")
    return 0


def _study_printer(stream):
    """Print the pruning study's progress on one line that rewrites itself, and a line per
    finished configuration."""
    state = {"last": 0.0}

    def show(message):
        now = time.perf_counter()
        if message.finished:
            row = message.result
            stream.write(
                f"\r[{message.index + 1}/{message.n_configurations}] {message.configuration}: e_S2 "
                f"{row['e_s2_mean']:.4f} +- {row['e_s2_std']:.4f}, {row['seconds']:.1f} s{' ' * 30}\n"
            )
            stream.flush()
            return None
        if now - state["last"] < 0.2:
            return None
        state["last"] = now
        step = message.step
        stream.write(
            f"\r[{message.index + 1}/{message.n_configurations}] {message.configuration} image "
            f"{message.image + 1}/{message.n_images} step {step.iteration}/{step.total} "
            f"{100 * message.fraction_done:3.0f} % {message.elapsed:6.1f} s "
        )
        stream.flush()
        return None

    return show


def _prune(args) -> int:
    from . import io
    from .core import pruning
    from .core.decoder import run_to_end

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
    # Everything (images, configurations, device, weights, memory) is checked here, before any output.
    steps = pruning.prune_steps(
        images, configurations=configurations, samples=args.samples, iterations=args.iterations,
        seconds=args.seconds, levels=args.levels, seed=args.seed, device=args.device,
        weights=args.weights, tolerance=args.tolerance, material=args.material, names=names,
    )
    material = args.material or pruning.default_material(names)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in material)
    out = Path(args.out)
    planned = [out / f"{stem}_pruning.json", out / f"{stem}_pruning.csv", out / f"{stem}_pruning.png"]
    existing = [str(p) for p in planned if p.exists()]
    if existing and not args.overwrite:
        steps.close()
        raise FileExistsError(f"{existing[0]} exists already; choose another --out folder or pass --overwrite.")
    budget = f"{args.seconds:g} s" if args.seconds is not None else f"{args.iterations or 'default'} iterations"
    print(
        f"Pruning study of {material}: {len(images)} image(s), {len(configurations)} configurations "
        f"({', '.join(c.name for c in configurations)}), {args.samples} sample(s) each, {budget}",
        file=sys.stderr,
    )
    profile = run_to_end(steps, None if args.quiet else _study_printer(sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    profile.save(planned[0], overwrite=args.overwrite)
    profile.table().to_csv(planned[1], index=False)
    pruning.save_plots(profile, planned[2])
    print(profile.summary())
    print(f"{profile.provenance['total_seconds']:.1f} s on {profile.provenance['device']}; wrote {len(planned)} files to {out}")
    return 0


def _image_files(inputs: list[str]) -> list[Path]:
    """The image files named by ``inputs``: files, and the image files inside folders (sorted)."""
    from .core.errors import InputError
    from .io import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"The folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            files.extend(found)
        else:
            files.append(path)
    return files


def _refuse_existing(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists already; choose another output or pass --overwrite.")


def _counter(stream, what: str):
    """Print ``what done/total`` on one line that rewrites itself."""
    state = {"last": 0.0}

    def show(message):
        now = time.perf_counter()
        if now - state["last"] < 0.2 and message.done < message.total:
            return
        state["last"] = now
        stream.write(f"\r{what} {message.done}/{message.total} {message.elapsed:6.1f} s ")
        if message.done >= message.total:
            stream.write("\n")
        stream.flush()

    return show


def _training_printer(stream):
    """Print the training's progress: features, then one line per fold or epoch."""
    features = _counter(stream, "features")

    def show(message):
        if message.stage == "features":
            features(message)
        elif message.stage == "fold":
            stream.write(f"fold {message.fold}/{message.n_folds}: R2 {message.r2:.3f} ({message.elapsed:.1f} s)\n")
        elif message.stage == "epoch":
            stream.write(f"\r{'fold ' + str(message.fold) if message.fold else 'final fit'} epoch {message.epoch}: "
                         f"train {message.train_loss:.4f} validation {message.val_loss:.4f} ")
        stream.flush()

    return show


def _properties_label(args) -> int:
    import pandas as pd

    from . import io
    from .core.datasets import LabelCache, transport_labels

    files = _image_files(args.inputs)
    out = Path(args.out)
    _refuse_existing([out], args.overwrite)
    cache = LabelCache(args.cache) if args.cache else None
    rows = []
    started = time.perf_counter()
    for index, path in enumerate(files, start=1):
        image = io.read_image(path)
        rows.append({"file": str(path), **transport_labels(image, args.phase, args.axes, cache=cache, device=args.device)})
        if not args.quiet:
            print(f"\r[{index}/{len(files)}] {path.name}", end="", file=sys.stderr, flush=True)
    if not args.quiet:
        print(file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"labelled {len(rows)} image(s) in {time.perf_counter() - started:.1f} s; wrote {out}")
    return 0


def _properties_build(args) -> int:
    from . import io
    from .core.datasets import LABELS_FILE, LabelCache, build_dataset_steps, write_dataset
    from .core.decoder import run_to_end

    micrographs = {path.stem: io.read_image(path) for path in _image_files(args.micrographs or [])}
    out = Path(args.out)
    if (out / LABELS_FILE).exists() and not args.overwrite:
        raise FileExistsError(f"{out / LABELS_FILE} exists already; choose another --out folder or pass --overwrite.")
    steps = build_dataset_steps(
        generated=args.generated, families=args.families, size=args.size, volume_fraction=tuple(args.volume_fraction),
        micrographs=micrographs, crops=args.crops, reconstructions=args.reconstructions,
        reconstruction_options={"iterations": args.iterations} if args.iterations else None, phase=args.phase,
        axes=args.axes, label=not args.no_labels, cache=LabelCache(args.cache or out), seed=args.seed, device=args.device,
    )
    dataset = run_to_end(steps, None if args.quiet else _counter(sys.stderr, "samples"))
    write_dataset(dataset, out, overwrite=args.overwrite)
    timings = dataset.provenance["timings"]
    print(f"{len(dataset.images)} samples in {timings['total_seconds']:.1f} s (labels {timings['label_seconds']:.1f} s); "
          f"wrote {out / LABELS_FILE} and the images to {out}")
    return 0


def _dataset_images(folder: Path, names) -> list:
    """Read the images a label table names: ``folder/name``, else a file of that stem in ``folder``."""
    from . import io
    from .core.errors import InputError

    images = []
    for name in names:
        path = folder / name
        if not path.is_file():
            matches = sorted(p for p in folder.glob(f"{Path(name).stem}.*") if p.suffix.lower() in io.IMAGE_SUFFIXES)
            if not matches:
                raise InputError(f"The label table names {name!r}, but {folder} holds no such image.")
            path = matches[0]
        images.append(io.read_image(path))
    return images


def _properties_train(args) -> int:
    import pandas as pd

    from . import io
    from .core import properties
    from .core.datasets import LABELS_FILE, read_labels
    from .core.decoder import run_to_end

    folder = Path(args.dataset)
    table_path = Path(args.labels) if args.labels else folder / LABELS_FILE
    table = read_labels(table_path, [args.column])
    raw = pd.read_csv(table_path)
    phase = args.phase if args.phase is not None else (list(raw["phase"]) if "phase" in raw.columns else 1)
    images = _dataset_images(folder, table["name"])
    out = Path(args.out)
    stem = args.name or f"{args.column}_{args.mode}"
    planned = [out / f"{stem}.npz", out / f"{stem}_metrics.json", out / f"{stem}_parity.png", out / f"{stem}_predictions.csv"]
    _refuse_existing(planned, args.overwrite)
    steps = properties.train_steps(
        images, table[args.column].to_numpy(), property=args.column, units=args.units, mode=args.mode, depth=args.depth,
        profile=args.profile, weights=args.weights, phase=phase, axis=args.axis, input=args.input, folds=args.folds,
        seed=args.seed, device=args.device, names=list(table["name"]), epochs=args.epochs,
    )
    print(f"Training a {args.mode} model of {args.column} on {len(images)} images", file=sys.stderr)
    model = run_to_end(steps, None if args.quiet else _training_printer(sys.stderr))
    model.save(planned[0], overwrite=args.overwrite)
    header = model.header
    io.write_json(planned[1], {k: header[k] for k in header if k not in ("training",)} | {"training": {
        k: v for k, v in header["training"].items() if k not in ("names", "targets")}}, overwrite=args.overwrite)
    cv = header.get("cross_validation")
    if cv:
        figure = properties.plot_parity(header["training"]["targets"], cv["predictions"], title=f"{args.column}, {cv['folds']}-fold CV",
                                        units=args.units)
        figure.savefig(planned[2], dpi=150)
        pd.DataFrame({"file": header["training"]["names"], args.column: header["training"]["targets"],
                      "predicted": cv["predictions"]}).to_csv(planned[3], index=False)
        print(f"cross-validated R2 {cv['r2']:.3f}, MAE {cv['mae']:.4g}, RMSE {cv['rmse']:.4g} ({cv['folds']} folds)")
    print(f"{header['provenance']['timings']['total_seconds']:.1f} s; wrote {planned[0]}")
    return 0


def _properties_predict(args) -> int:
    import pandas as pd

    from . import io
    from .core.properties import load_model

    model = load_model(args.model)
    files = _image_files(args.inputs)
    out = Path(args.out)
    _refuse_existing([out], args.overwrite)
    images = [io.read_image(path) for path in files]
    started = time.perf_counter()
    values = model.predict(images, phase=args.phase, axis=args.axis, device=args.device)
    column = model.header["property"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"file": [str(p) for p in files], f"{column}_predicted": values}).to_csv(out, index=False)
    print(f"predicted {column} of {len(files)} image(s) in {time.perf_counter() - started:.2f} s; wrote {out}")
    return 0


def _add_properties(commands, device_choices) -> None:
    from .core.datasets import FAMILIES
    from .core.properties import INPUTS, MODES

    def axis_or_index(text):
        return int(text) if text.lstrip("-").isdigit() else text

    properties = commands.add_parser(
        "properties",
        help="structure-property models: labels, datasets, training, prediction",
        description="Predict a property of a phase (e.g. D_eff along x) from microstructures with a model built on the "
        "pretrained VGG19 (transfer learning, Li et al. 2018). Subcommands: label, build, train, predict.",
    )
    tasks = properties.add_subparsers(dest="task", required=True)
    device = {"default": "cpu", "help": f"one of {', '.join(device_choices)} or cuda:N (default: %(default)s)"}

    label = tasks.add_parser("label", help="compute D_eff and tau (TauFactor) of a folder of images into a CSV")
    label.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (.tif, .npy, .png; 2D or 3D) or folders of them")
    label.add_argument("--out", default="labels.csv", help="CSV to write (default: %(default)s)")
    label.add_argument("--phase", type=int, default=1, help="label of the conducting phase (default: %(default)s)")
    label.add_argument("--axes", nargs="+", type=axis_or_index, default=["x"], help="transport axes: x y z (x: the last array axis) or indices (default: x)")
    label.add_argument("--cache", help="folder of a label cache (results kept between runs)")
    label.add_argument("--device", **device)
    label.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    label.add_argument("--quiet", action="store_true", help="no progress")
    label.set_defaults(run=_properties_label)

    build = tasks.add_parser("build", help="build a labelled dataset of generated microstructures, crops and reconstructions")
    build.add_argument("--out", required=True, help="dataset folder: .tif images, labels.csv, provenance.json")
    build.add_argument("--generated", type=int, default=300, help="generated microstructures (default: %(default)s)")
    build.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES, help="generated families (default: all)")
    build.add_argument("--size", type=int, default=128, help="side of every sample in pixels (default: %(default)s)")
    build.add_argument("--volume-fraction", nargs=2, type=float, default=[0.2, 0.8], metavar=("LOW", "HIGH"), help="range of phase 1's volume fraction (default: 0.2 0.8)")
    build.add_argument("--micrographs", nargs="+", metavar="FILE", help="micrographs (or folders) to take crops and reconstructions of")
    build.add_argument("--crops", type=int, default=0, help="random crops per micrograph (default: %(default)s)")
    build.add_argument("--reconstructions", type=int, default=0, help="reconstructions per 2D micrograph (default: %(default)s)")
    build.add_argument("--iterations", type=int, help="optimizer steps per reconstruction (default: the decoder's)")
    build.add_argument("--phase", type=int, default=1, help="conducting phase of the micrographs (generated samples: 1) (default: %(default)s)")
    build.add_argument("--axes", nargs="+", type=axis_or_index, default=["x"], help="transport axes to label (default: x)")
    build.add_argument("--no-labels", action="store_true", help="write the samples without computing D_eff and tau")
    build.add_argument("--cache", help="folder of the label cache (default: the --out folder)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--device", **device)
    build.add_argument("--overwrite", action="store_true", help="replace existing files")
    build.add_argument("--quiet", action="store_true", help="no progress")
    build.set_defaults(run=_properties_build)

    train = tasks.add_parser("train", help="train a model on a dataset folder and a label column; cross-validate")
    train.add_argument("dataset", help="folder of the images")
    train.add_argument("--labels", help="CSV with a file (or name) column and the label column (default: DATASET/labels.csv)")
    train.add_argument("--column", default="D_eff_x", help="the property to learn (default: %(default)s)")
    train.add_argument("--units", default="", help="units of the property, for the record and the plot")
    train.add_argument("--mode", choices=MODES, default="frozen", help="frozen pretrained features + ridge, or fine-tuning (default: %(default)s)")
    trunk = train.add_mutually_exclusive_group()
    trunk.add_argument("--depth", help="trunk depth pool1 ... pool5 (default: pool2)")
    trunk.add_argument("--profile", help="pruning profile (JSON) whose recommended configuration sets the trunk")
    train.add_argument("--weights", default="normalized", help="normalized (pretrained), random (the control), or a weights file (default: %(default)s)")
    train.add_argument("--phase", type=int, help="phase of interest (default: the table's phase column, else 1)")
    train.add_argument("--axis", type=axis_or_index, default="x", help="transport axis of the property (default: %(default)s)")
    train.add_argument("--input", choices=INPUTS, default="spanning", help="what the trunk sees: the phase's spanning clusters or the whole phase (default: %(default)s)")
    train.add_argument("--folds", type=int, default=5, help="k-fold cross-validation, 0 for none (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=40, help="fine-tuning: most epochs (default: %(default)s)")
    train.add_argument("--out", default="property_model", help="output folder (default: %(default)s)")
    train.add_argument("--name", help="file name stem of the outputs (default: COLUMN_MODE)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", **device)
    train.add_argument("--overwrite", action="store_true", help="replace existing files")
    train.add_argument("--quiet", action="store_true", help="no progress")
    train.set_defaults(run=_properties_train)

    pred = tasks.add_parser("predict", help="predict a property of images with a trained model")
    pred.add_argument("model", help="model file (.npz) written by train")
    pred.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (2D or 3D) or folders of them")
    pred.add_argument("--out", default="predictions.csv", help="CSV to write (default: %(default)s)")
    pred.add_argument("--phase", type=int, help="phase of interest (default: the model's)")
    pred.add_argument("--axis", type=axis_or_index, help="transport axis (default: the model's)")
    pred.add_argument("--device", **device)
    pred.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    pred.set_defaults(run=_properties_predict)


def build_parser() -> argparse.ArgumentParser:
    from .core import volume
    from .core.decoder import DEFAULT_ITERATIONS, DEFAULT_LAYERS, DEFAULT_LEVELS, OPTIMIZERS
    from .core.device import DEVICE_CHOICES

    parser = argparse.ArgumentParser(
        prog="napari-microstructure",
        description="Reconstruct statistically equivalent microstructures from a micrograph with a pretrained VGG19 (Li et al. 2018).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser(
        "reconstruct",
        help="reconstruct new microstructures from a micrograph",
        description="Reconstruct new microstructures whose Gram matrices match the micrograph's, "
        "with the micrograph's phases and exact phase fractions; write them as .tif with a "
        "provenance JSON and a CSV of fidelity metrics.",
    )
    rec.add_argument("input", nargs="?", help=".npy, .tif or .png micrograph (default: the alloy sample shipped with the package)")
    rec.add_argument("--out", default="reconstructions", help="output folder (default: %(default)s)")
    rec.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the input's)")
    rec.add_argument("--samples", type=int, default=1, help="number of reconstructions (default: %(default)s)")
    rec.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="VGG19 layers whose Gram matrices are matched (default: %(default)s)")
    # None: the 2D defaults, or the 3D ones (core.volume) with --3d
    rec.add_argument("--iterations", type=int, help=f"optimizer steps (default: {DEFAULT_ITERATIONS}; 3D: {volume.DEFAULT_ITERATIONS})")
    rec.add_argument("--levels", type=int, help=f"coarse-to-fine resolution levels (default: {DEFAULT_LEVELS}; 3D: {volume.DEFAULT_LEVELS})")
    rec.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default: lbfgs; 3D: {volume.DEFAULT_OPTIMIZER})")
    rec.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto)")
    rec.add_argument("--weights", default="normalized", help="normalized, torchvision, random, or a weights file (default: %(default)s)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--periodic", action="store_true", help="make outputs that tile seamlessly")
    rec.add_argument("--kind", choices=("auto", "labels", "grey"), default="auto", help="phase labels or grey levels (default: detect)")
    rec.add_argument("--overwrite", action="store_true", help="replace existing output files")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.add_argument("--3d", dest="volume", nargs="+", type=int, metavar="SIZE", help="reconstruct one SIZE^3 volume (or D H W) whose slices match INPUT along all three axes, or --x/--y/--z")
    for axis, plane in (("x", "the yz plane, rows z"), ("y", "the xz plane, rows z"), ("z", "the xy plane, rows y")):
        rec.add_argument(f"--{axis}", metavar="MICROGRAPH", help=f"with --3d: the micrograph normal to {axis} ({plane})")
    rec.add_argument("--slices", type=int, help=f"with --3d: slices per axis in each step, 0 for all (default: {volume.DEFAULT_SLICES_PER_AXIS}; all with --optimizer lbfgs)")
    rec.set_defaults(run=_reconstruct)

    prune = commands.add_parser(
        "prune",
        help="find the shallowest network depth a material needs (pruning study)",
        description="Reconstruct each micrograph with VGG19 truncated after pool1 ... pool5 (and "
        "with chosen subsets of Gram layers), score fidelity (e_S2, e_LP, e_VF, connectivity) "
        "against cost (seconds, FLOPs, memory), and recommend the shallowest configuration whose "
        "mean e_S2 is within the tolerance of the best or at the floor. Writes the profile "
        "(JSON), the table (CSV) and the plots (PNG).",
    )
    prune.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy, .tif or .png micrographs of one material (a 3D .npy/.tif is a stack of micrographs)")
    prune.add_argument("--depths", nargs="*", help="depths 1-5 (or pool1 ... pool5) to study (default: all five; --depths alone: none, subsets only)")
    prune.add_argument("--subsets", nargs="+", metavar="LAYERS", help="extra configurations, each a comma-separated list of layers, e.g. conv1_1,pool2 pool3")
    prune.add_argument("--samples", type=int, default=2, help="reconstructions per image and configuration (default: %(default)s)")
    budget = prune.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, help=f"optimizer steps per reconstruction (default: {DEFAULT_ITERATIONS})")
    budget.add_argument("--seconds", type=float, help="wall-time budget per image and configuration instead of --iterations")
    prune.add_argument("--levels", type=int, default=DEFAULT_LEVELS, help="coarse-to-fine levels (default: %(default)s)")
    prune.add_argument("--tolerance", type=float, default=0.10, help="a configuration within this fraction of the best mean e_S2 is as good (default: %(default)s)")
    prune.add_argument("--material", help="name of the material (default: the input file names' common prefix)")
    prune.add_argument("--out", default="pruning", help="output folder (default: %(default)s)")
    prune.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto)")
    prune.add_argument("--weights", default="normalized", help="normalized, torchvision, random, or a weights file (default: %(default)s)")
    prune.add_argument("--seed", type=int, default=0, help="image i uses seed + i in every configuration (default: %(default)s)")
    prune.add_argument("--overwrite", action="store_true", help="replace existing output files")
    prune.add_argument("--quiet", action="store_true", help="no progress")
    prune.set_defaults(run=_prune)

    _add_properties(commands, DEVICE_CHOICES)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-microstructure`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (MicrostructureError, FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"napari-microstructure: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnapari-microstructure: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
