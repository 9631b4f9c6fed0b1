"""Labelled microstructures for structure-property models (docs/method.md section 5).

Labels
    :func:`transport_labels` computes, with TauFactor (:func:`~.physics.transport`), the volume
    fraction of a phase and its effective diffusivity ``D_eff`` and tortuosity factor ``tau``
    along chosen axes of a 2D image or 3D volume. A phase that does not connect the two faces
    gets ``D_eff = 0`` and ``tau = inf`` without a solver call. A :class:`LabelCache` keeps the
    results in memory and, given a folder, in a JSON file there, keyed by the sha256 of the
    image's bytes, shape and dtype, the phase, the axis and the solver settings.
    :func:`read_labels` reads the user's own labels from a CSV table.

Samples
    the generated families (:data:`~.synthetic.FAMILIES`, phase 1 being the phase of interest;
    2D images, or 3D volumes when ``size`` has three sides) come from :mod:`.synthetic`; :func:`random_crops` cuts crops of a micrograph or volume.

Datasets
    :func:`build_dataset_steps` is a generator of :class:`BuildProgress` messages that returns a
    :class:`Dataset` (images, a table of parameters and labels, provenance): generated families,
    random crops of given micrographs, and reconstructions made by
    :func:`~.decoder.reconstruct`. Send ``"stop"`` to end it early with the samples finished so
    far. :func:`write_dataset` writes it, all or nothing, as a folder of ``.tif`` files and
    ``labels.csv``; :func:`read_dataset` reads such a folder back.

Axes are named by the image's array axes: ``x`` is the last one, then ``y``, then ``z``.
No napari or Qt here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import AXIS_NAMES, axis_indices, check_label_image
from .errors import InputError
from .options import merge, option
from .physics import transport
from .provenance import environment
from .steps import STOP, run_to_end, timing
from .synthetic import (
    ALL_FAMILIES,
    FAMILIES,
    FAMILY_NDIMS,
    MIN_SIDE,
    generate,
    random_parameters,
)

__all__ = [
    "BuildProgress",
    "Dataset",
    "LabelCache",
    "build_dataset",
    "build_dataset_steps",
    "dataset_outputs",
    "image_key",
    "labels_for",
    "planned_files",
    "random_crops",
    "read_dataset",
    "read_labels",
    "sample_groups",
    "stale_files",
    "transport_labels",
    "write_dataset",
]

#: The file :class:`LabelCache` keeps in its folder.
CACHE_FILE = "transport_labels.json"
#: The table :func:`write_dataset` writes beside the images.
LABELS_FILE = "labels.csv"
#: The record of how a dataset was built, beside its table.
PROVENANCE_FILE = "provenance.json"
#: TauFactor's criterion, twice its iteration limit: all converge (docs/measurements/datasets.md)
ITER_LIMIT = 20000
CONV_CRIT = 1e-2


# --------------------------------------------------------------------------------------------
# Physics labels
# --------------------------------------------------------------------------------------------


def image_key(
    image: np.ndarray, phase, axis: int, iter_limit: int = ITER_LIMIT, conv_crit: float = CONV_CRIT
) -> str:
    """sha256 of an image's bytes, shape and dtype, the phase, the axis and the solver settings."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(array.tobytes())
    digest.update(
        json.dumps(
            [
                list(array.shape),
                str(array.dtype),
                str(phase),
                int(axis),
                int(iter_limit),
                float(conv_crit),
            ]
        ).encode()
    )
    return digest.hexdigest()


class LabelCache:
    """Transport results by :func:`image_key`, in memory and, with a ``folder``, on disk.

    The file ``folder/transport_labels.json`` maps keys to ``{"d_eff", "tau", "volume_fraction",
    "percolates"}``; it is read when the cache is made and, with ``write_through`` (the
    default), rewritten after every new entry (:meth:`put`), so that an interrupted run keeps
    what it computed. ``write_through=False`` keeps new entries in memory until :meth:`save`
    writes them (what a dataset folder's own cache does: it is written with the dataset, all or
    nothing). A ``folder`` that is a file, or that cannot be written to, is refused at once.
    Safe to share between threads.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, write_through: bool = True):
        self.path = None if folder is None else Path(folder) / CACHE_FILE
        self.write_through = write_through and self.path is not None
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path is None:
            return
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise InputError(
                f"The label cache {self.path.parent} is a file: give a folder (the cache is the "
                f"file {CACHE_FILE} in it), or leave the cache out."
            )
        if self.write_through:
            from ..io import check_outputs

            check_outputs([self.path], overwrite=True)
        if self.path.is_file():
            self._entries.update(self._read(self.path))

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path} is not a readable label cache ({exc}); delete it to start anew."
            ) from exc
        fields = {"d_eff", "tau", "percolates"}
        entries = stored.values() if isinstance(stored, dict) else [None]
        if not all(isinstance(entry, dict) and fields <= entry.keys() for entry in entries):
            raise InputError(f"{path} is not a label cache; delete it to start anew.")
        return stored

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, entry: Mapping) -> None:
        with self._lock:
            self._entries[key] = dict(entry)
            if self.write_through:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                temporary = self.path.with_suffix(".tmp")
                try:
                    temporary.write_text(json.dumps(self._entries))
                    temporary.replace(self.path)
                finally:
                    temporary.unlink(missing_ok=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write every entry as JSON to ``path`` (which the caller has made safe to write)."""
        with self._lock:
            text = json.dumps(self._entries)
        path = Path(path)
        path.write_text(text)
        return path


def transport_labels(
    image: np.ndarray,
    phase=1,
    axes: Iterable[int | str] = ("x",),
    *,
    cache: LabelCache | None = None,
    device: str = "cpu",
    iter_limit: int = ITER_LIMIT,
    conv_crit: float = CONV_CRIT,
    conductivities: Mapping | None = None,
) -> dict:
    """Volume fraction, ``D_eff`` and ``tau`` of ``phase`` along ``axes`` (TauFactor).

    Parameters
    ----------
    image : 2D or 3D label image (grey images are refused: :func:`~._validate.check_label_image`).
    phase : the label of the conducting phase; it must occur in the image.
    axes : axis indices or names (``"x"`` is the last axis).
    cache : a :class:`LabelCache`; results found there are not computed again.
    device : the solver's torch device; one this machine lacks raises ``DeviceError``.
    conductivities : a conductivity for every label of the image (0: insulating); adds
        ``sigma_eff_a``, the image's effective conductivity along each axis in those units
        (:func:`~.physics.effective_conductivity`, TauFactor's multi-phase solver).

    Returns
    -------
    dict with ``volume_fraction`` and, per axis ``a``, ``D_eff_a``, ``tau_a`` and
    ``percolates_a`` (and ``sigma_eff_a``). A phase that does not connect the faces normal to an axis has
    ``D_eff = 0`` and ``tau = inf`` there (no solver call). Every input is checked first.
    """
    from .device import resolve_device
    from .physics import check_conductivities, check_solver_settings

    array = check_label_image(image, "image", phase)
    indices = axis_indices(axes, array.ndim)
    check_solver_settings(iter_limit, conv_crit)
    if conductivities is not None:
        conductivities = check_conductivities(array, conductivities)
    device = resolve_device(device)
    row = _label_row(array, phase, indices, cache, device, iter_limit, conv_crit)
    if conductivities is not None:
        row.update(_conductivity_row(array, conductivities, indices, cache, device, conv_crit))
    return row


def _conductivity_row(array, conductivities: dict, indices, cache, device, conv_crit) -> dict:
    """``sigma_eff_a`` of a checked image along checked axis indices (cached like D_eff)."""
    from .physics import effective_conductivity

    row = {}
    given = json.dumps(sorted((str(k), v) for k, v in conductivities.items()))
    for index in indices:
        key = image_key(array, f"conductivities {given}", index, ITER_LIMIT, conv_crit)
        entry = cache.get(key) if cache is not None else None
        if entry is None:
            result = effective_conductivity(
                array, conductivities, index, device=device, conv_crit=conv_crit
            )
            entry = {"sigma_eff": result.sigma_eff}
            if cache is not None:
                cache.put(key, entry)
        row[f"sigma_eff_{AXIS_NAMES[array.ndim][index]}"] = float(entry["sigma_eff"])
    return row


def _label_row(
    array, phase, indices, cache, device, iter_limit=ITER_LIMIT, conv_crit=CONV_CRIT
) -> dict:
    """:func:`transport_labels` of a checked image, along checked axis indices."""
    row = {"volume_fraction": float((array == phase).mean())}
    for index in indices:
        name = AXIS_NAMES[array.ndim][index]
        key = image_key(array, phase, index, iter_limit, conv_crit) if cache is not None else None
        entry = cache.get(key) if cache is not None else None
        if entry is None:
            result = transport(
                array, phase, index, device=device, iter_limit=iter_limit, conv_crit=conv_crit
            )
            entry = {
                "d_eff": result.d_eff,
                "tau": result.tau,
                "volume_fraction": result.volume_fraction,
                "percolates": result.percolates,
            }
            if cache is not None:
                cache.put(key, entry)
        row[f"D_eff_{name}"] = float(entry["d_eff"])
        row[f"tau_{name}"] = float(entry["tau"])
        row[f"percolates_{name}"] = bool(entry["percolates"])
    return row


def read_labels(
    path: str | os.PathLike, columns: Sequence[str] | None = None, name_column: str | None = None
):
    """Read a table of user labels: one row per image, a name column and property columns.

    The name column is ``name_column``, else the first of ``file``, ``name``, ``layer``,
    ``image`` present; it is returned as ``name`` with the file stems (``a/b.tif`` -> ``b``) in
    ``stem``. ``columns`` (default: every numeric column) must exist and hold numbers. Returns
    a pandas DataFrame.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The label table {path} does not exist.")
    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"{path} is not a readable CSV table: {exc}") from exc
    candidates = [name_column] if name_column else ["file", "name", "layer", "image"]
    found = [c for c in candidates if c in table.columns]
    if not found:
        raise InputError(
            f"{path} has no column naming the images ({', '.join(candidates)}); its columns are "
            f"{', '.join(map(str, table.columns))}."
        )
    names = table[found[0]].astype(str)
    if names.duplicated().any():
        raise InputError(f"{path}: the image {names[names.duplicated()].iloc[0]!r} appears twice.")
    if columns is None:
        columns = [
            c for c in table.columns if c != found[0] and pd.api.types.is_numeric_dtype(table[c])
        ]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path} has no column {', '.join(missing)}; its columns are {', '.join(map(str, table.columns))}."
        )
    result = pd.DataFrame({"name": names, "stem": [Path(n).stem for n in names]})
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            raise InputError(
                f"{path}: column {column!r} holds a value that is not a number (row {int(values.isna().idxmax()) + 2})."
            )
        result[column] = values.to_numpy(float)
    return result


def labels_for(names: Sequence[str], table, column: str) -> np.ndarray:
    """The values of ``column`` of a :func:`read_labels` table for images called ``names``
    (file names, paths or napari layer names: matched by name, then by stem)."""
    by_name = dict(zip(table["name"], table[column]))
    by_stem = dict(zip(table["stem"], table[column]))
    values, missing = [], []
    for name in names:
        value = by_name.get(name, by_stem.get(Path(str(name)).stem))
        if value is None:
            missing.append(str(name))
        values.append(value)
    if missing:
        raise InputError(
            f"The label table has no row for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}."
        )
    return np.asarray(values, float)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def random_crops(
    image: np.ndarray, size: int | Sequence[int], count: int, seed: int = 0
) -> tuple[list[np.ndarray], list[tuple[int, ...]]]:
    """``count`` crops of ``size`` (a side, or one per axis) at uniform random corners.

    Returns the crops and their corners (the index of each crop's first pixel).
    """
    array = np.asarray(image)
    sizes = (int(size),) * array.ndim if np.isscalar(size) else tuple(int(s) for s in size)
    if len(sizes) != array.ndim or any(s > n or s < 1 for s, n in zip(sizes, array.shape)):
        raise InputError(f"Crops of {sizes} do not fit in an image of shape {array.shape}.")
    rng = np.random.default_rng(seed)
    crops, corners = [], []
    for _ in range(int(count)):
        corner = tuple(int(rng.integers(0, n - s + 1)) for s, n in zip(sizes, array.shape))
        crops.append(array[tuple(slice(c, c + s) for c, s in zip(corner, sizes))].copy())
        corners.append(corner)
    return crops, corners


# --------------------------------------------------------------------------------------------
# Dataset builder
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Labelled microstructures: ``images[i]`` is described by row ``i`` of ``table``.

    ``table`` (a pandas DataFrame) has ``file`` (the name the image has, or will have, in a
    dataset folder), ``source`` (``generated``, ``crop`` or ``reconstruction``), ``family``,
    ``phase`` (the label of the phase of interest), ``seed``, the source's parameters, and the
    labels (``volume_fraction``, ``D_eff_x``, ``tau_x`` ...).
    """

    images: list[np.ndarray]
    table: object  # pandas.DataFrame
    provenance: dict = field(default_factory=dict)
    partial: bool = False


@dataclass(frozen=True)
class DatasetOptions:
    """What :func:`build_dataset_steps` builds; picklable."""

    generated: int = option(
        0,
        "generated microstructures, spread evenly over the families, with random parameters; "
        "phase 1 is their phase of interest",
        low=0,
        high=100_000,
    )
    families: tuple[str, ...] = option(
        FAMILIES, f"families of generated microstructures, of {', '.join(ALL_FAMILIES)}"
    )
    size: int | tuple[int, ...] = option(
        128,
        "side (or H W; D H W for 3D generated volumes) of generated samples, crops and "
        "reconstructions",
        low=8,
        high=4096,
    )
    volume_fraction: tuple[float, float] = option(
        (0.2, 0.8), "range of the generated samples' volume fraction", low=0.0, high=1.0
    )
    crops: int = option(
        0, "random crops per micrograph (3D: sub-volumes of side size)", low=0, high=10_000
    )
    reconstructions: int = option(
        0, "reconstructions per 2D micrograph (output size: size)", low=0, high=1_000
    )
    reconstruction_options: Mapping | None = option(
        None,
        "options of those reconstructions (see ReconstructionOptions), size/samples/seed aside",
    )
    phase: int | tuple = option(1, "the phase of interest in the micrographs")
    axes: tuple = option(("x",), "transport axes to label ('x' is the last axis)")
    label: bool = option(True, "compute the transport labels (False: parameters only)")
    seed: int = option(0, "random seed of the parameters, crops and reconstructions", low=0)
    device: str = option("auto", "the transport solver's torch device")


@dataclass(frozen=True)
class BuildProgress:
    """One finished sample of :func:`build_dataset_steps`."""

    done: int  # samples finished so far
    total: int  # samples planned
    stage: str  # "generated", "crop" or "reconstruction"
    name: str  # the sample's file name
    elapsed: float  # seconds since the build started
    label_seconds: float  # of which spent labelling

    @property
    def fraction_done(self) -> float:
        return self.done / max(self.total, 1)

    def describe(self) -> str:
        """One line: the sample just finished, its source, and the time."""
        return f"sample {self.done}/{self.total}: {self.name} ({self.stage}) · {timing(self)}"


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _file_stem(name) -> str:
    """A micrograph's name as the start of a file name (no folder separators)."""
    return re.sub(r"[\\/]", "_", str(name))


def planned_files(
    *,
    generated: int = 0,
    families: Sequence[str] = FAMILIES,
    micrographs: Mapping[str, np.ndarray] | None = None,
    crops: int = 0,
    reconstructions: int = 0,
) -> list[str]:
    """The file names, in order, of the samples that :func:`build_dataset_steps` makes with
    these options (so that a caller can check the outputs before the work)."""
    names = []
    counts = _spread(generated, len(families)) if generated else []
    for family, count in zip(families, counts):
        names += [f"{family}_{len(names) + i:04d}.tif" for i in range(count)]
    for name, micrograph in (micrographs or {}).items():
        stem = _file_stem(name)
        names += [f"{stem}_crop_{c:03d}.tif" for c in range(crops)]
        if np.ndim(micrograph) == 2:
            names += [f"{stem}_reconstruction_{r:03d}.tif" for r in range(reconstructions)]
    return names


def _volume_fraction_range(volume_fraction) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in volume_fraction)
    except (TypeError, ValueError):
        raise InputError(
            f"The volume-fraction range is two numbers, LOW HIGH; got {volume_fraction!r}."
        ) from None
    if low > high:
        raise InputError(
            f"The volume-fraction range is LOW HIGH, and LOW ({low:g}) is above HIGH ({high:g}): "
            "LOW must be below HIGH (or equal, for one fraction); give the lower value first."
        )
    if not 0.0 < low <= high < 1.0:
        raise InputError(
            f"The volume-fraction range must lie strictly between 0 and 1; got {volume_fraction}."
        )
    return low, high


def build_dataset_steps(
    options: DatasetOptions | None = None,
    *,
    micrographs: Mapping[str, np.ndarray] | None = None,
    cache: LabelCache | None = None,
    **changes,
) -> Generator[BuildProgress, str | None, Dataset]:
    """Build a labelled dataset; a generator of :class:`BuildProgress` returning a :class:`Dataset`.

    Parameters
    ----------
    options : :class:`DatasetOptions`, optional
        What to build (the defaults when None); ``changes`` given as keywords replace single
        fields (``build_dataset_steps(generated=300, size=128)``).
    micrographs : ``{name: 2D or 3D label image}`` (a napari layer's data, a file's array), the
        source of crops and reconstructions.
    cache : :class:`LabelCache` for the labels.

    Send ``"stop"`` to end after the current sample with the samples made so far
    (``Dataset.partial``); the reconstructions of one micrograph are made together, so a stop
    sent while they run takes effect when they are done. Every option (the reconstructions'
    too) is checked when this function is called; :func:`planned_files` names the samples.
    """
    from .decoder import MAX_SEED, reconstruct_steps, whole_number
    from .device import resolve_device

    options = merge(DatasetOptions, options, changes)
    families, size, phase, axes = options.families, options.size, options.phase, options.axes
    label, seed, device = options.label, options.seed, options.device
    families = [families] if isinstance(families, str) else list(families)
    unknown = [str(f) for f in families if f not in ALL_FAMILIES]
    if unknown:
        raise InputError(
            f"Unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}: choose from {', '.join(ALL_FAMILIES)}."
        )
    generated = whole_number(options.generated, "The number of generated samples", 0)
    crops = whole_number(options.crops, "The number of crops per micrograph", 0)
    reconstructions = whole_number(
        options.reconstructions, "The number of reconstructions per micrograph", 0
    )
    if generated and not families:
        raise InputError("Choose at least one family of generated microstructures.")
    fractions = _volume_fraction_range(options.volume_fraction)
    sides = [size] if np.ndim(size) == 0 else list(size)
    sides = [whole_number(side, "The sample size", 1) for side in sides]
    shape = tuple(sides * 2 if len(sides) == 1 else sides)
    if generated and (len(shape) not in FAMILY_NDIMS or min(shape) < MIN_SIDE):
        raise InputError(
            f"Generated microstructures are 2D (H W) or 3D (D H W), at least {MIN_SIDE}x{MIN_SIDE} "
            f"({MIN_SIDE} a side); asked for {shape}."
        )
    micrographs = dict(micrographs or {})
    seed = whole_number(seed, "The seed", 0, MAX_SEED - 2000 - len(micrographs))
    ndims = {len(shape)} if generated else set()
    changes = dict(options.reconstruction_options or {})
    fixed = sorted({"size", "samples", "seed"} & changes.keys())
    if fixed:
        raise InputError(
            f"reconstruction_options cannot set {', '.join(fixed)}: the builder sets them."
        )
    reconstruction_steps = {}
    for m, (name, image) in enumerate(micrographs.items()):
        array = check_label_image(image, f"micrograph {name!r}", phase)
        side = (sides[0],) * array.ndim if len(sides) == 1 else tuple(sides)
        if crops:
            if len(side) != array.ndim or any(s > n for s, n in zip(side, array.shape)):
                raise InputError(
                    f"Crops of {side} do not fit in the micrograph {name!r} of shape "
                    f"{array.shape}."
                )
            ndims.add(array.ndim)
        if reconstructions:
            if array.ndim != 2:
                raise InputError(
                    f"Reconstructions are made from 2D micrographs; {name!r} is {array.ndim}D."
                )
            if len(shape) != 2:
                raise InputError(
                    f"Reconstructions are 2D: give their size as one side or H W, not {shape}."
                )
            reconstruction_steps[name] = reconstruct_steps(
                array, size=shape, samples=reconstructions, seed=seed + 2000 + m, **changes
            )
            ndims.add(2)
    names = planned_files(
        generated=generated,
        families=families,
        micrographs=micrographs,
        crops=crops,
        reconstructions=reconstructions,
    )
    if not names:
        raise InputError("Nothing to build: ask for generated samples, crops or reconstructions.")
    if len(set(names)) != len(names):
        raise InputError(
            "Two micrographs have the same name (up to / and \\): give them different names."
        )
    for ndim in ndims:
        axis_indices(axes, ndim)
    axes = [axes] if isinstance(axes, (str, int, np.integer)) else list(axes)
    torch_device = resolve_device(device) if label else device
    return _build(
        generated,
        families,
        shape,
        fractions,
        micrographs,
        crops,
        reconstructions,
        changes,
        phase,
        axes,
        label,
        cache,
        seed,
        torch_device,
        names,
        size,
        reconstruction_steps,
    )


def _build(
    generated,
    families,
    shape,
    fractions,
    micrographs,
    crops,
    reconstructions,
    options,
    phase,
    axes,
    label,
    cache,
    seed,
    device,
    names,
    size,
    reconstruction_steps,
):
    import pandas as pd

    started = time.perf_counter()
    cpu_started = time.process_time()
    images: list[np.ndarray] = []
    rows: list[dict] = []
    timings = {"label_seconds": 0.0}
    stopped = False

    def finish(image, row):
        label_start = time.perf_counter()
        row = {"file": names[len(rows)], **row}
        if label:
            indices = axis_indices(axes, np.ndim(image))
            row.update(_label_row(np.asarray(image), row["phase"], indices, cache, device))
        else:
            row["volume_fraction"] = float((np.asarray(image) == row["phase"]).mean())
        timings["label_seconds"] += time.perf_counter() - label_start
        images.append(image)
        rows.append(row)
        return BuildProgress(
            len(rows),
            len(names),
            row["source"],
            row["file"],
            time.perf_counter() - started,
            timings["label_seconds"],
        )

    def samples():
        rng = np.random.default_rng(seed)
        for family, count in zip(families, _spread(generated, len(families)) if generated else []):
            for _ in range(count):
                parameters = random_parameters(family, rng, fractions, len(shape))
                sample_seed = int(rng.integers(2**31))
                image = generate(family, shape, sample_seed, **parameters)
                yield (
                    image,
                    {
                        "source": "generated",
                        "family": family,
                        "phase": 1,
                        "seed": sample_seed,
                        **parameters,
                    },
                )
        for m, (name, micrograph) in enumerate(micrographs.items()):
            if crops:
                pieces, corners = random_crops(micrograph, size, crops, seed=seed + 1000 + m)
                for piece, corner in zip(pieces, corners):
                    yield (
                        piece,
                        {
                            "source": "crop",
                            "family": name,
                            "phase": phase,
                            "seed": seed + 1000 + m,
                            "corner": " ".join(map(str, corner)),
                        },
                    )
            if name in reconstruction_steps:
                result = run_to_end(reconstruction_steps.pop(name))
                for r, image in enumerate(result.images):
                    loss = float(result.final_loss[r])
                    yield (
                        image,
                        {
                            "source": "reconstruction",
                            "family": name,
                            "phase": phase,
                            "seed": seed + 2000 + m,
                            "final_loss": loss,
                        },
                    )

    for image, row in samples():
        command = yield finish(image, row)
        if command == STOP:
            stopped = True
            break
    table = pd.DataFrame(rows)
    provenance = {
        "generated": generated,
        "families": families,
        "size": list(shape),
        "volume_fraction_range": list(fractions),
        "micrographs": {k: list(np.shape(v)) for k, v in micrographs.items()},
        "crops": crops,
        "reconstructions": reconstructions,
        "reconstruction_options": options,
        "phase": phase,
        "axes": [str(a) for a in axes],
        "seed": seed,
        **environment(device),
        "solver": {"name": "taufactor", "iter_limit": ITER_LIMIT, "conv_crit": CONV_CRIT},
        "timings": {
            "total_seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "label_seconds": timings["label_seconds"],
        },
    }
    return Dataset(images, table, provenance, partial=stopped)


def build_dataset(
    options: DatasetOptions | None = None,
    callback: Callable[[BuildProgress], object] | None = None,
    **changes,
) -> Dataset:
    """Run :func:`build_dataset_steps` to the end; ``callback`` gets every message and may
    return ``"stop"``."""
    return run_to_end(build_dataset_steps(options, **changes), callback)


def dataset_outputs(
    folder: str | os.PathLike, files: Sequence[str], *, cache: bool = False
) -> list[Path]:
    """The files a dataset of images ``files`` has in ``folder``: the images, ``labels.csv``,
    ``provenance.json`` and, with ``cache``, the folder's label cache."""
    folder = Path(folder)
    outputs = [folder / str(name) for name in files]
    outputs += [folder / LABELS_FILE, folder / PROVENANCE_FILE]
    return outputs + [folder / CACHE_FILE] if cache else outputs


def stale_files(
    folder: str | os.PathLike, files: Sequence[str], inputs: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Images of an earlier dataset in ``folder`` (named by its ``labels.csv``) that a dataset of
    ``files`` would leave behind, out of date, except ``inputs``: they are removed with
    ``overwrite``, else refused (:func:`~napari_microstructure.io.check_outputs`)."""
    import pandas as pd

    folder = Path(folder)
    try:
        earlier = pd.read_csv(folder / LABELS_FILE)["file"].astype(str)
    except (OSError, ValueError, KeyError):  # no table, or none that names files: nothing stale
        return []
    keep = {str(name) for name in files}
    protected = {Path(p).resolve() for p in inputs}
    candidates = {
        folder / name for name in earlier if name not in keep and Path(name).name == name
    }
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.resolve() not in protected
        and path.suffix.lower() in (".tif", ".tiff")
    )


def write_dataset(
    dataset: Dataset,
    folder: str | os.PathLike,
    overwrite: bool = False,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    cache: LabelCache | None = None,
) -> Path:
    """Write the images as ``folder/<file>`` (.tif) and the table as ``folder/labels.csv``, with
    the provenance in ``folder/provenance.json``, all or nothing.

    Existing files are kept unless ``overwrite``; then the images of an earlier dataset there
    that this one does not have are removed (:func:`stale_files`). No output may be one of
    ``inputs``. ``cache`` (a :class:`LabelCache`) is written as the folder's
    ``transport_labels.json`` with the rest. Returns the path of ``labels.csv``.
    """
    from .. import io

    folder = Path(folder)
    files = [str(name) for name in dataset.table["file"]] if len(dataset.table) else []
    outputs = dataset_outputs(folder, files, cache=cache is not None)
    inputs = list(inputs)
    stale = stale_files(folder, files, inputs)
    with io.atomic_outputs(outputs, overwrite=overwrite, inputs=inputs, stale=stale) as staged:
        for image, name in zip(dataset.images, files):
            io.write_tif(staged[folder / name], image)
        dataset.table.to_csv(staged[folder / LABELS_FILE], index=False)
        provenance = {**dataset.provenance, "partial": dataset.partial}
        io.write_json(staged[folder / PROVENANCE_FILE], provenance)
        if cache is not None:
            cache.save(staged[folder / CACHE_FILE])
    return folder / LABELS_FILE


def sample_groups(table) -> list[str]:
    """A group per row of a dataset's table for grouped cross-validation: the crops and
    reconstructions of one micrograph share a group (its name, in ``family``); every other
    sample is a group of its own."""
    columns = table.columns
    groups = []
    for index, row in enumerate(table.itertuples(index=False)):
        source = getattr(row, "source", None) if "source" in columns else None
        if source in ("crop", "reconstruction") and "family" in columns:
            groups.append(f"micrograph {row.family}")
        else:
            groups.append(f"sample {index}")
    return groups


def read_dataset(folder: str | os.PathLike, table: str | os.PathLike | None = None) -> Dataset:
    """Read a dataset folder: the table (default ``folder/labels.csv``) and the images it names
    (its ``file`` column, relative to the folder)."""
    import pandas as pd

    from .. import io

    folder = Path(folder)
    table_path = Path(table) if table is not None else folder / LABELS_FILE
    if not table_path.is_file():
        raise InputError(
            f"{table_path} does not exist: a dataset folder holds {LABELS_FILE} beside its images."
        )
    frame = pd.read_csv(table_path)
    if "file" not in frame.columns:
        raise InputError(f"{table_path} has no 'file' column naming the images.")
    images = [io.read_image(folder / name) for name in frame["file"]]
    provenance_path = folder / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return Dataset(images, frame, provenance)
