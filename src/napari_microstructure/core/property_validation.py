"""Whether to trust a property model on a material: its predictions against TauFactor.

:func:`validate_steps` labels images with TauFactor (:func:`~.datasets.transport_labels`, the
same labels a model is trained on), predicts them with intervals
(:meth:`~.properties.PropertyModel.predict_intervals`) and scores the predictions per group
of images (a folder, for the command line): the mean absolute error, the relative mean
absolute error (over the mean true value, on the percolating images only: those whose true
D_eff is above 0), R², the share of true values inside their intervals and the number of
images out of the training range. It is a generator of :class:`ValidationProgress` that
returns a :class:`Validation`; send ``"stop"`` to score the images labelled so far.
No napari or Qt here.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._validate import AXIS_NAMES, axis_index, check_label_image
from .errors import InputError
from .steps import STOP, run_to_end, timing

__all__ = ["Validation", "ValidationProgress", "validate", "validate_steps"]

#: The name of the summary row over every group.
ALL = "all"


@dataclass(frozen=True)
class ValidationProgress:
    """A step of :func:`validate_steps`: ``stage`` ``"label"`` (``done`` of ``total`` images
    labelled by TauFactor, the last ``name``) or ``"predict"`` (the predictions are made)."""

    stage: str
    done: int
    total: int
    elapsed: float
    name: str = ""

    @property
    def fraction_done(self) -> float:
        """The share of the images labelled (1 once predicted)."""
        return self.done / max(self.total, 1)

    def describe(self) -> str:
        """One line: where the validation is, and the time."""
        if self.stage == "label":
            return f"TauFactor labels {self.done}/{self.total} ({self.name}) · {timing(self)}"
        return f"predicted {self.total} image(s) · {timing(self)}"


@dataclass
class Validation:
    """What :func:`validate_steps` returns.

    ``images``: one row per image (``group``, ``name``, the true value, ``predicted``,
    ``low``, ``high``, ``inside``, ``distance``, ``out_of_range``, ``reason``); ``summary``:
    one row per group and one over all (``group`` :data:`ALL`), with ``n``, ``percolating``,
    ``mae``, ``relative_mae``, ``r2``, ``coverage`` (the share inside), ``nominal_coverage``
    and ``out_of_range`` (a count). ``partial``: stopped before every image was labelled.
    """

    images: object  # pandas.DataFrame
    summary: object  # pandas.DataFrame
    property: str
    note: str = ""
    partial: bool = False
    provenance: dict = field(default_factory=dict)


def _label_column(model, axis, ndim: int) -> str:
    """The TauFactor column that holds the model's property along ``axis``."""
    name = model.header["property"]
    if not name.startswith("D_eff"):
        raise InputError(
            f"The model predicts {name!r}; validate compares predictions with TauFactor's D_eff "
            "only. Compare the model's predictions with your own labels instead "
            "(`properties predict`)."
        )
    axis = model.header["preprocessing"]["axis"] if axis is None else axis
    return f"D_eff_{AXIS_NAMES[ndim][axis_index(axis, ndim)]}"


def validate_steps(
    model,
    images,
    names: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    phase=None,
    axis: int | str | None = None,
    coverage: float | None = None,
    cache=None,
    device: str = "cpu",
) -> Generator[ValidationProgress, str | None, Validation]:
    """Label ``images`` (named ``names``; 2D or 3D, the model's dimension) with TauFactor,
    predict them with ``model`` (a :class:`~.properties.PropertyModel`) and score each group.

    ``groups``: the group of each image (default: one group, :data:`ALL`); ``phase``, ``axis``:
    default the model's; ``coverage``: of the intervals (default
    :data:`~.properties.COVERAGE`); ``cache``: a :class:`~.datasets.LabelCache`. Every input is
    checked when this function is called, before any label is computed.
    """
    from .device import resolve_device
    from .properties import COVERAGE, _check_coverage

    images = list(images)
    names = [str(n) for n in names]
    groups = [ALL] * len(images) if groups is None else [str(g) for g in groups]
    if not images:
        raise InputError("No images to validate on: give image files or folders of them.")
    if not len(names) == len(groups) == len(images):
        raise InputError(
            f"{len(images)} images, {len(names)} names and {len(groups)} groups: give one each."
        )
    coverage = _check_coverage(COVERAGE if coverage is None else coverage)
    model.check_dimensions(images, names)
    phases = model._phases(images, phase)
    columns = set()
    for image, p, name in zip(images, phases, names):
        array = check_label_image(image, name, p)
        columns.add(_label_column(model, axis, array.ndim))
    column = columns.pop()
    torch_device = resolve_device(device)
    return _validate(
        model, images, names, groups, phases, axis, coverage, cache, torch_device, column
    )


def _validate(model, images, names, groups, phases, axis, coverage, cache, device, column):
    from .datasets import transport_labels
    from .provenance import environment

    started = time.perf_counter()
    truth: list[float] = []
    label_axis = column.rsplit("_", 1)[1]
    for image, p, name in zip(images, phases, names):
        row = transport_labels(image, p, (label_axis,), cache=cache, device=device)
        truth.append(row[column])
        message = ValidationProgress(
            "label", len(truth), len(images), time.perf_counter() - started, name
        )
        if (yield message) == STOP:
            break
    n = len(truth)
    partial = n < len(images)
    predictions = model.predict_intervals(
        images[:n],
        coverage=coverage,
        phase=[phases[i] for i in range(n)],
        axis=axis,
        device=device,
        names=names[:n],
    )
    yield ValidationProgress("predict", len(images), len(images), time.perf_counter() - started)
    table = _image_rows(groups[:n], names[:n], column, np.asarray(truth), predictions)
    summary = _summary(table, column, predictions.coverage)
    provenance = {
        "model_property": model.header["property"],
        "model_weights_sha256": model.header["weights"].get("sha256"),
        "seconds": time.perf_counter() - started,
        **environment(device),
    }
    return Validation(table, summary, column, predictions.note, partial, provenance)


def _image_rows(groups, names, column, truth, predictions):
    import pandas as pd

    with np.errstate(invalid="ignore"):
        inside = (predictions.low <= truth) & (truth <= predictions.high)
    table = pd.DataFrame(
        {
            "group": groups,
            "name": names,
            column: truth,
            "predicted": predictions.values,
            **predictions.columns(),
        }
    )
    table.insert(table.columns.get_loc("coverage"), "inside", inside)
    if predictions.coverage is None:
        table["inside"] = None
    return table


def _summary(table, column, coverage):
    """One row per group, then one over every image."""
    import pandas as pd

    from .properties import scores

    parts = [(g, rows) for g, rows in table.groupby("group", sort=False)]
    if len(parts) != 1 or parts[0][0] != ALL:
        parts.append((ALL, table))
    rows = []
    for group, part in parts:
        truth, predicted = part[column].to_numpy(float), part["predicted"].to_numpy(float)
        percolating = truth > 0
        found = scores(truth, predicted) if len(truth) > 1 else {"r2": np.nan}
        mean_true = truth[percolating].mean() if percolating.any() else np.nan
        relative = (
            np.abs(truth - predicted)[percolating].mean() / mean_true
            if percolating.any() and mean_true > 0
            else np.nan
        )
        rows.append(
            {
                "group": group,
                "n": len(part),
                "percolating": int(percolating.sum()),
                "mae": float(np.abs(truth - predicted).mean()),
                "relative_mae": float(relative),
                "r2": float(found["r2"]),
                "coverage": float(part["inside"].astype(float).mean())
                if coverage is not None
                else np.nan,
                "nominal_coverage": np.nan if coverage is None else coverage,
                "out_of_range": int(part["out_of_range"].sum()),
            }
        )
    return pd.DataFrame(rows)


def validate(model, images, names, **options) -> Validation:
    """Run :func:`validate_steps` to the end."""
    return run_to_end(validate_steps(model, images, names, **options))
