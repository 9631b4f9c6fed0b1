"""The results tables of reconstructions, one code for the command line and the widgets (no Qt).

:func:`run_table` gives the rows of a 2D run, :func:`volume_run_table` those of a 3D run: the
original (or micrograph), its floor (two disjoint quadrants compared with each other) and each
reconstruction. Phase labels get the phase errors (``e_VF``, ``e_S2``, ``e_LP``) and the
clusters of each phase; grey levels get the grey errors (``e_hist``, ``e_AC``) and the grey
levels' mean and spread. The definitions are those of :mod:`napari_microstructure.core.metrics`.
"""

from __future__ import annotations

import numpy as np

from .core import metrics
from .core.errors import InputError

__all__ = ["KINDS", "error_columns", "floor_of", "run_table", "volume_run_table"]

#: What a run reconstructed: phase labels or grey levels (``ImageModel.kind``).
KINDS = ("labels", "grey")
_ERRORS = {"labels": ("e_VF", "e_S2", "e_LP"), "grey": ("e_hist", "e_AC")}


def error_columns(kind: str = "labels") -> tuple[str, ...]:
    """The error columns of a table of ``kind`` (``"labels"`` or ``"grey"``)."""
    return _ERRORS[_check_kind(kind)]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"Unknown kind {kind!r}: choose one of {', '.join(KINDS)}.")
    return kind


def _as_labels(original: np.ndarray, images: list[np.ndarray]):
    """Phase labels the metrics accept: labels that are not whole numbers become the phase
    index (0, 1, ... in ascending order of value)."""
    original = np.asarray(original)
    if original.dtype.kind in "biu" or np.all(original == np.round(original)):
        return original, images
    values = np.unique(original)
    return np.searchsorted(values, original), [np.searchsorted(values, im) for im in images]


def floor_of(original, kind: str = "labels") -> dict | None:
    """The floor of an original (:func:`~napari_microstructure.core.metrics.floor` for phase
    labels, :func:`~napari_microstructure.core.metrics.grey_floor` for grey levels), or None
    for an original too small to split into quadrants."""
    try:
        if _check_kind(kind) == "grey":
            return metrics.grey_floor(original)
        return metrics.floor(_as_labels(original, [])[0])
    except InputError:
        return None


def _floor_errors(floor: dict, kind: str) -> dict:
    if kind == "grey":
        return {"e_hist": floor["e_hist"], "e_AC": floor["e_ac"]}
    return {"e_VF": floor["e_vf"], "e_S2": floor["e_s2"], "e_LP": floor["e_lp"]}


def _run_columns(row: dict, is_reconstruction: bool, loss: float, seconds: float, partial: bool):
    row["final loss"] = loss if is_reconstruction else np.nan
    row["run time (s)"] = seconds if is_reconstruction else np.nan
    row["partial"] = partial if is_reconstruction else ""
    return row


def _phases(original: np.ndarray) -> list:
    return [p.item() if isinstance(p, np.generic) else p for p in metrics.phases_of(original)]


def run_table(
    original: np.ndarray,
    images: list[np.ndarray],
    names: list[str],
    *,
    run: int,
    seconds: float,
    final_loss: list[float],
    partial: bool,
    kind: str = "labels",
):
    """Rows of one 2D run: the original, its floor and each reconstruction (a DataFrame).

    ``kind="labels"``: ``original`` and ``images`` are phase labels (labels that are not whole
    numbers are numbered 0, 1, ... by value). Columns ``run``, ``name``, ``e_VF``, ``e_S2``,
    ``e_LP`` (worst phase, :func:`~napari_microstructure.core.metrics.compare`), per phase ``p``
    ``clusters[p]`` and ``largest cluster[p]`` (fraction of the phase in its largest cluster).

    ``kind="grey"``: grey levels. Columns ``run``, ``name``, ``e_hist`` (grey-level
    distributions, :func:`~napari_microstructure.core.metrics.e_hist`), ``e_AC``
    (autocovariance of the intensity, :func:`~napari_microstructure.core.metrics.e_ac`),
    ``grey mean`` and ``grey std``.

    Both end with ``final loss``, ``run time (s)`` and ``partial``. The floor row holds the
    errors between two disjoint quadrants of the original (:func:`floor_of`); an original too
    small to split has none.
    """
    import pandas as pd

    if _check_kind(kind) == "grey":
        table = metrics.compare_grey(original, images, names=names)
        phases = []
    else:
        original, images = _as_labels(original, images)
        table = metrics.compare(original, images, names=names)
        phases = _phases(original)
    rows = []
    for index, record in enumerate(table.to_dict("records")):
        row = {"run": run, "name": record["name"]}
        if kind == "grey":
            row.update(
                {
                    "e_hist": record["e_hist"],
                    "e_AC": record["e_ac"],
                    "grey mean": record["mean"],
                    "grey std": record["std"],
                }
            )
        else:
            row.update({"e_VF": record["e_vf"], "e_S2": record["e_s2"], "e_LP": record["e_lp"]})
        for phase in phases:
            row[f"clusters[{phase}]"] = record[f"n_clusters[phase {phase}]"]
            row[f"largest cluster[{phase}]"] = record[f"largest_cluster_fraction[phase {phase}]"]
        loss = final_loss[index - 1] if 0 < index <= len(final_loss) else np.nan
        rows.append(_run_columns(row, index > 0, loss, seconds, partial))
    floor = floor_of(original, kind)
    if floor is not None:
        rows.insert(
            1,
            {
                "run": run,
                "name": "floor (two quadrants of the original)",
                **_floor_errors(floor, kind),
            },
        )
    frame = pd.DataFrame(rows)
    return frame[list(rows[0])]


def _micrographs(reference) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    """The distinct micrographs of a 3D run: (what they are called, their axes, the array)."""
    from .core.volume import AXIS_NAMES, per_axis

    given = per_axis(reference)
    distinct: dict = {}
    for axis, image in sorted(given.items()):
        distinct.setdefault(id(image), (image, []))[1].append(axis)
    if len(distinct) == 1:
        ((image, axes),) = distinct.values()
        return [("micrograph (2D)", tuple(axes), np.asarray(image))]
    named = []
    for image, axes in distinct.values():
        normal_to = " ".join(AXIS_NAMES[a] for a in axes)
        named.append((f"micrograph ⊥{normal_to} (2D)", tuple(axes), np.asarray(image)))
    return named


def volume_run_table(
    micrograph,
    volume: np.ndarray,
    name: str,
    *,
    run: int,
    seconds: float,
    final_loss: list[float],
    partial: bool,
    kind: str = "labels",
):
    """Rows of one 3D run: the micrograph(s), their floor and the volume, per axis.

    ``micrograph`` is what the volume was reconstructed from: one 2D micrograph, or one per
    axis (a mapping axis -> micrograph, as :func:`~napari_microstructure.core.volume.per_axis`
    takes). ``kind="labels"``: phase labels; the volume's ``e_S2`` and ``e_LP`` are the worst of
    the three slice families, ``e_S2 ⊥z`` (and ``⊥y``, ``⊥x``) compare the slices normal to each
    axis with the micrograph (:func:`~napari_microstructure.core.volume.compare_volume`);
    ``spans[p]`` lists the axes along which one cluster of phase ``p`` connects opposite faces.
    ``kind="grey"``: grey levels; ``e_hist``, ``e_AC`` and ``e_AC ⊥z`` (...)
    (:func:`~napari_microstructure.core.volume.compare_volume_grey`), ``grey mean`` and
    ``grey std``.
    """
    import pandas as pd

    from .core.volume import AXIS_NAMES, compare_volume, compare_volume_grey

    micrographs = _micrographs(micrograph)
    volume = np.asarray(volume)
    if _check_kind(kind) == "labels":
        others = [image for _, _, image in micrographs[1:]]
        first, (volume, *others) = _as_labels(micrographs[0][2], [volume, *others])
        micrographs = [
            (label, axes, image) for (label, axes, _), image in zip(micrographs, [first, *others])
        ]
    reference = {axis: image for _, axes, image in micrographs for axis in axes}
    rows = [_micrograph_row(run, label, axes, image, kind) for label, axes, image in micrographs]
    for label, _axes, image in micrographs:
        floor = floor_of(image, kind)
        if floor is not None:
            where = label.replace(" (2D)", "").replace("micrograph", "the micrograph")
            rows.append(
                {
                    "run": run,
                    "name": f"floor (two quadrants of {where})",
                    **_floor_errors(floor, kind),
                }
            )
    row = {"run": run, "name": name}
    if kind == "grey":
        scores = compare_volume_grey(reference, volume)
        row.update({"e_hist": scores["e_hist"], "e_AC": scores["e_ac"]})
        row.update({f"e_AC ⊥{AXIS_NAMES[a]}": scores[f"e_ac_axis{a}"] for a in sorted(reference)})
        row.update({"grey mean": float(volume.mean()), "grey std": float(volume.std())})
    else:
        scores = compare_volume(reference, volume)
        row.update({"e_VF": scores["e_vf"], "e_S2": scores["e_s2"], "e_LP": scores["e_lp"]})
        row.update({f"e_S2 ⊥{AXIS_NAMES[a]}": scores[f"e_s2_axis{a}"] for a in sorted(reference)})
        row.update({f"e_LP ⊥{AXIS_NAMES[a]}": scores[f"e_lp_axis{a}"] for a in sorted(reference)})
        for phase in sorted(set().union(*(_phases(m) for _, _, m in micrographs))):
            row[f"clusters[{phase}]"] = scores.get(f"n_clusters[phase {phase}]", 0)
            largest = scores.get(f"largest_cluster_fraction[phase {phase}]", np.nan)
            row[f"largest cluster[{phase}]"] = largest
            row[f"spans[{phase}]"] = " ".join(
                AXIS_NAMES[a] for a in range(3) if scores.get(f"spans_{a}[phase {phase}]")
            )
    loss = final_loss[0] if final_loss else np.nan
    rows.append(_run_columns(row, True, loss, seconds, partial))
    frame = pd.DataFrame(rows)
    return frame[list(row)]


def _micrograph_row(run: int, label: str, axes, image: np.ndarray, kind: str) -> dict:
    """The row of a micrograph of a 3D run: errors 0, its clusters or its grey levels."""
    from .core.volume import AXIS_NAMES

    if kind == "grey":
        values = np.asarray(image, dtype=np.float64)
        return {
            "run": run,
            "name": label,
            "e_hist": 0.0,
            "e_AC": 0.0,
            "grey mean": float(values.mean()),
            "grey std": float(values.std()),
        }
    row = {"run": run, "name": label, "e_VF": 0.0, "e_S2": 0.0, "e_LP": 0.0}
    # the volume's axes along the micrograph's two array axes (one micrograph for all: y, x)
    normal = axes[0] if len(axes) == 1 else 0
    in_plane = [AXIS_NAMES[a] for a in range(3) if a != normal]
    for phase in _phases(image):
        conn = metrics.connectivity(image, phase)
        row[f"clusters[{phase}]"] = conn.n_clusters
        row[f"largest cluster[{phase}]"] = conn.largest_cluster_fraction
        row[f"spans[{phase}]"] = " ".join(
            in_plane[a] for a, spans in enumerate(conn.spans) if spans
        )
    return row
