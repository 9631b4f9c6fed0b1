"""A property model re-fitted on the user's own material (``properties adapt``).

:func:`adapt_steps` makes crops (and, if asked, reconstructions) of the user's micrographs
with :func:`~.datasets.build_dataset_steps`, labels them with TauFactor along every axis, adds
each to the model's training set once per axis, turned so that the axis lies along the
model's (measured: labelling the model's axis alone left the error along the others where it
was; docs/measurements/properties_trust.md) (a :class:`~.datasets.Dataset`: the folder the model was
trained on) and trains a model of the same kind on the whole (:func:`~.properties.train_steps`
with the options the model records), the crops of one micrograph held out together in
cross-validation, so that its intervals are calibrated on new regions of the material. It is
a generator of the build's and the training's progress that returns the new
:class:`~.properties.PropertyModel` (None when stopped while the samples were made). No
napari or Qt here.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._validate import AXIS_NAMES
from .datasets import LABELS_FILE, Dataset, DatasetOptions, read_dataset, sample_groups
from .errors import InputError
from .options import merge
from .steps import relay

__all__ = [
    "ADAPT_CROPS",
    "ADAPT_RECONSTRUCTIONS",
    "adapt_steps",
    "check_adaptable",
    "training_options",
]

#: Crops of each micrograph added to the training set unless asked otherwise.
ADAPT_CROPS = 32
#: Reconstructions of each 2D micrograph added unless asked otherwise (each takes a minute):
#: 8 of them beside the crops brought no gain on held-out halves (docs/measurements/
#: properties_physics.md, "What reconstructions add to adapt").
ADAPT_RECONSTRUCTIONS = 0


def training_options(model):
    """The :class:`~.properties.TrainOptions` a model was trained with, as its header records
    them; InputError for a model whose trunk no depth reproduces (one a pruning profile chose)."""
    from .properties import TrainOptions, trunk_layers

    header = model.header
    prep, training = header["preprocessing"], header.get("training", {})
    if trunk_layers(header["depth"]) != header["layers"]:
        raise InputError(
            f"The model's trunk ({', '.join(header['layers'])}) came from a pruning profile: "
            "train the adapted model with `properties train --profile` on the combined data."
        )
    finetuning = {
        k: training[k]
        for k in ("epochs", "patience", "learning_rate", "validation")
        if k in training
    }
    return TrainOptions(
        property=header["property"],
        units=header.get("units", ""),
        mode=header["mode"],
        depth=header["depth"],
        weights=header["weights"]["name"],
        phase=TrainOptions.phase if prep["phase"] is None else prep["phase"],
        axis=prep["axis"],
        input=prep["input"],
        learns=prep.get("learns", "property"),
        physics=prep.get("physics", "none"),
        folds=training.get("folds", 5),
        seed=training.get("seed", 0),
        max_slices=prep["max_slices"],
        **finetuning,
    )


def check_adaptable(model) -> None:
    """Refuse, with what to do instead, a model whose property TauFactor cannot label."""
    column = model.header["property"]
    if not column.startswith("D_eff"):
        raise InputError(
            f"The model predicts {column!r}; adapt labels new samples with TauFactor's D_eff "
            "only. Add your labelled images to the dataset and train again instead."
        )


def adapt_steps(
    model,
    micrographs: Mapping[str, np.ndarray],
    dataset,
    options: DatasetOptions | None = None,
    *,
    cache=None,
    **changes,
) -> Generator[object, str | None, object]:
    """Re-fit ``model`` on its training ``dataset`` plus labelled samples of ``micrographs``.

    ``micrographs``: ``{name: label image}`` of the model's dimension; ``dataset``: the
    model's training set, with its property among the columns: a :class:`~.datasets.Dataset`,
    or its folder (its table is checked now, its images read when the generator starts, and
    the adapted model records the folder as its ``provenance["dataset"]``); ``options``: what to make of the
    micrographs (:class:`~.datasets.DatasetOptions`: ``crops``, default :data:`ADAPT_CROPS`,
    ``reconstructions``, default :data:`ADAPT_RECONSTRUCTIONS`, ``size``, ``phase`` of the
    micrographs, ``seed``); ``changes`` replace single fields. No generated samples are added;
    each sample is added once per axis, turned so that the axis lies along the model's, with
    its D_eff along that axis. Every input is checked when this function is called.
    """
    from .datasets import build_dataset_steps
    from .properties import check_training_options

    if not micrographs:
        raise InputError("Give at least one micrograph of your material to adapt the model to.")
    check_adaptable(model)
    column = model.header["property"]
    columns = dataset.table.columns if isinstance(dataset, Dataset) else _folder_columns(dataset)
    if column not in columns:
        raise InputError(
            f"The training dataset has no column {column!r}: give the dataset the model was "
            "trained on."
        )
    base = DatasetOptions(crops=ADAPT_CROPS, reconstructions=ADAPT_RECONSTRUCTIONS)
    build = merge(DatasetOptions, options or base, changes)
    model.check_dimensions(list(micrographs.values()), [f"micrograph {n!r}" for n in micrographs])
    axes = AXIS_NAMES[model.header.get("training", {}).get("ndim", 2)]
    build = replace(build, generated=0, axes=axes, label=True)
    train_options = training_options(model)
    check_training_options(train_options)
    building = build_dataset_steps(build, micrographs=micrographs, cache=cache)
    return _adapt(model, dataset, building, train_options, column, axes)


def _folder_columns(folder) -> list[str]:
    """The columns of a dataset folder's table (InputError when it has none)."""
    import pandas as pd

    table = Path(folder) / LABELS_FILE
    if not table.is_file():
        raise InputError(
            f"{table} does not exist: give the folder of the dataset the model was trained on "
            f"(with {LABELS_FILE} beside its images)."
        )
    return [str(c) for c in pd.read_csv(table, nrows=0).columns]


def _turned(added, column: str, axes) -> tuple[list, list, list, list, list]:
    """Each added sample once per axis, turned so that the axis lies along the model's (the
    axis of ``column``): images, labels, names, phases and cross-validation groups."""
    target = axes.index(column.removeprefix("D_eff_"))
    images, labels, names, phases, groups = [], [], [], [], []
    for image, group, (_, row) in zip(
        added.images, sample_groups(added.table), added.table.iterrows()
    ):
        for index, axis in enumerate(axes):
            images.append(np.swapaxes(image, index, target))
            labels.append(float(row[f"D_eff_{axis}"]))
            names.append(str(row["file"]) if index == target else f"{row['file']} along {axis}")
            phases.append(int(row["phase"]))
            groups.append(group)
    return images, labels, names, phases, groups


def _adapt(model, dataset, building, train_options, column, axes):
    from .properties import train_steps

    folder = None
    if not isinstance(dataset, Dataset):
        folder, dataset = str(Path(dataset).resolve()), read_dataset(dataset)
    added = yield from relay(building)
    if added.partial:
        return None
    table = dataset.table
    phases = (
        list(table["phase"])
        if "phase" in table.columns
        else [train_options.phase] * len(dataset.images)
    )
    new_images, new_labels, new_names, new_phases, new_groups = _turned(added, column, axes)
    images = [*dataset.images, *new_images]
    targets = np.concatenate([table[column].to_numpy(float), new_labels])
    names = [*map(str, table["file"]), *new_names]
    options = replace(train_options, phase=tuple(int(p) for p in [*phases, *new_phases]))
    groups = [*sample_groups(table), *new_groups]
    adapted = yield from relay(train_steps(images, targets, options, names=names, groups=groups))
    if adapted is not None:
        adapted.header["provenance"]["adapted"] = {
            "from": {
                "created": model.header.get("provenance", {}).get("created"),
                "n_samples": len(dataset.images),
            },
            "micrographs": added.provenance["micrographs"],
            "crops": added.provenance["crops"],
            "reconstructions": added.provenance["reconstructions"],
            "phase": added.provenance["phase"],
            "added": len(new_images),
        }
        if folder is not None:
            adapted.header["provenance"]["dataset"] = folder
    return adapted
