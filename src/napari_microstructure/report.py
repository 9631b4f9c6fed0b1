"""A job's results: tables, figures and files, one code for the command line and the widgets.

:func:`run_table` gives the rows of a 2D run, :func:`volume_run_table` those of a 3D run: the
original (or micrograph), its floor (two disjoint quadrants compared with each other) and each
reconstruction. Phase labels get the phase errors (``e_VF``, ``e_S2``, ``e_LP``) and the
clusters of each phase; grey levels get the grey errors (``e_hist``, ``e_AC``) and the grey
levels' mean and spread. The definitions are those of :mod:`napari_microstructure.core.metrics`.

:func:`plot_profile` draws a pruning study, :func:`plot_parity` a property model's
cross-validated predictions, on matplotlib figures (no pyplot state, no GUI backend).
:func:`write_report` writes a job's files (tables as CSV, figures as PNG, records as JSON) all
or nothing. numpy, pandas and matplotlib only: no Qt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .core import metrics
from .core.errors import InputError

__all__ = [
    "KINDS",
    "error_columns",
    "floor_of",
    "plot_parity",
    "outside_tolerance",
    "plot_profile",
    "run_table",
    "save_plots",
    "transport_columns",
    "volume_run_table",
    "write_report",
]

#: Resolution of the PNG figures a report writes.
FIGURE_DPI = 150

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
    transport: bool = True,
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

    ``transport=True`` (phase labels) adds the transport checks of each image before them
    (:func:`transport_columns`): ``spans[p]``, ``clusters/Mpx[p]``, ``D_eff[p] y`` (and
    ``x``) with ``D_eff[p] y rel diff`` against the original, and ``transport (s)``;
    ``transport=False`` leaves them out (huge images: a TauFactor solve per spanning phase and
    axis).
    """
    import pandas as pd

    if _check_kind(kind) == "grey":
        table = metrics.compare_grey(original, images, names=names)
        phases = []
    else:
        original, images = _as_labels(original, images)
        table = metrics.compare(original, images, names=names)
        phases = _phases(original)
    checks = transport_columns([original, *images], phases) if phases and transport else []
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
        if checks:
            row.update(checks[index])
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
    transport: bool = True,
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

    ``transport=True`` (phase labels) adds the transport checks (:func:`transport_columns`):
    the micrographs' 2D D_eff along their two axes (named as the volume's axes) and the
    volume's 3D D_eff along its three, without a relative difference: a section's D_eff is not
    its volume's (a 3D phase has paths that leave the plane). :func:`outside_tolerance` marks
    the volume's ``spans[p]`` when it lacks an axis along which a micrograph's phase spans: a
    slice that spans along an axis is a path of the volume along it.
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
    phases = []
    if kind == "labels":
        phases = sorted(set().union(*(_phases(m) for _, _, m in micrographs)))
    checks = []
    if phases and transport:
        images = [image for _, _, image in micrographs]
        names = [_in_plane(axes) for _, axes, _ in micrographs]
        checks = transport_columns([*images, volume], phases, [*names, AXIS_NAMES], compare=False)
        for micrograph_row, columns in zip(rows, checks):
            micrograph_row.update(columns)
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
        for phase in phases:
            row[f"clusters[{phase}]"] = scores.get(f"n_clusters[phase {phase}]", 0)
            largest = scores.get(f"largest_cluster_fraction[phase {phase}]", np.nan)
            row[f"largest cluster[{phase}]"] = largest
            row[f"spans[{phase}]"] = " ".join(
                AXIS_NAMES[a] for a in range(3) if scores.get(f"spans_{a}[phase {phase}]")
            )
        if checks:
            row.update(checks[-1])
    loss = final_loss[0] if final_loss else np.nan
    rows.append(_run_columns(row, True, loss, seconds, partial))
    frame = pd.DataFrame(rows)
    return frame[list(row)]


def _micrograph_row(run: int, label: str, axes, image: np.ndarray, kind: str) -> dict:
    """The row of a micrograph of a 3D run: errors 0, its clusters or its grey levels."""
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
    in_plane = _in_plane(axes)
    for phase in _phases(image):
        conn = metrics.connectivity(image, phase)
        row[f"clusters[{phase}]"] = conn.n_clusters
        row[f"largest cluster[{phase}]"] = conn.largest_cluster_fraction
        row[f"spans[{phase}]"] = " ".join(
            in_plane[a] for a, spans in enumerate(conn.spans) if spans
        )
    return row


def _in_plane(axes) -> tuple[str, str]:
    """The volume's axes along a micrograph's two array axes, the micrograph being normal to
    ``axes`` (one micrograph for all three: y, x)."""
    from .core.volume import AXIS_NAMES

    normal = axes[0] if len(axes) == 1 else 0
    return tuple(AXIS_NAMES[a] for a in range(3) if a != normal)


# --------------------------------------------------------------------------------------------
# Transport checks
# --------------------------------------------------------------------------------------------


def transport_columns(images, phases, axes=None, *, compare: bool = True) -> list[dict]:
    """The transport-check columns of each phase-label image: one dict per image.

    Per phase ``p``: ``spans[p]`` (the axes along which one cluster connects the opposite
    faces) and ``clusters/Mpx[p]`` (clusters per million pixels, or voxels); per phase and
    axis ``a`` along which some image spans: ``D_eff[p] a`` (TauFactor; empty where the image
    does not span) and, with ``compare``, ``D_eff[p] a rel diff`` against the first image
    (:func:`~napari_microstructure.core.transport_checks.relative_difference`); last,
    ``transport (s)``: the seconds the image's checks took
    (:func:`~napari_microstructure.core.transport_checks.transport_record`). ``axes`` names
    each image's axes (default: y x in 2D, z y x in 3D).
    """
    from .core.datasets import AXIS_NAMES
    from .core.transport_checks import relative_difference, transport_record

    phases = list(phases)
    if axes is None:
        axes = [AXIS_NAMES[np.ndim(image)] for image in images]
    records = [transport_record(image, phases) for image in images]
    d_eff = [
        {(p.phase, names[a]): value for p in record.phases for a, value in enumerate(p.d_eff)}
        for record, names in zip(records, axes)
    ]
    order = AXIS_NAMES[3]
    spanning = sorted(
        {key for values in d_eff for key, value in values.items() if not np.isnan(value)},
        key=lambda key: (phases.index(key[0]), order.index(key[1])),
    )
    rows = []
    for record, names, values in zip(records, axes, d_eff):
        row = {}
        for p in record.phases:
            spans = zip(names, p.connectivity.spans)
            row[f"spans[{p.phase}]"] = " ".join(name for name, spanned in spans if spanned)
            row[f"clusters/Mpx[{p.phase}]"] = p.connectivity.clusters_per_area * 1e6
        for phase, axis in spanning:
            value = values.get((phase, axis), np.nan)
            row[f"D_eff[{phase}] {axis}"] = value
            if compare:
                reference = d_eff[0].get((phase, axis), np.nan)
                row[f"D_eff[{phase}] {axis} rel diff"] = relative_difference(value, reference)
        row["transport (s)"] = record.seconds
        rows.append(row)
    return rows


def _axis_set(value) -> set[str]:
    return set(value.split()) if isinstance(value, str) else set()


def _phase_of(column: str) -> str:
    return column[column.index("[") + 1 : column.index("]")]


def outside_tolerance(table, tolerance=None) -> dict[tuple[int, str], str]:
    """The cells of a results table outside the transport tolerance, and why.

    Returns ``{(row position, column): reason}``, each reason starting "Outside tolerance". In a 2D run (rows of one ``run`` with a
    row named ``original``), each reconstruction against its original: ``spans[p]`` that
    differs, ``largest cluster[p]`` further than ``tolerance.largest_cluster``, ``D_eff[p] a
    rel diff`` (and ``D_eff[p] a``) beyond ``tolerance.d_eff``, ``D_eff[p] a`` missing where
    the original has one. In a 3D run: the volume's ``spans[p]`` that lacks an axis along
    which a micrograph's phase spans. Floor rows are never marked. ``tolerance``: default
    :data:`~napari_microstructure.core.transport_checks.TOLERANCE`.
    """
    from .core.transport_checks import TOLERANCE

    tolerance = tolerance or TOLERANCE
    marks: dict[tuple[int, str], str] = {}
    if table.empty or "name" not in table.columns:
        return marks
    table = table.reset_index(drop=True)
    runs = table["run"] if "run" in table.columns else np.zeros(len(table))
    for _, group in table.groupby(runs, sort=False):
        names = group["name"].astype(str)
        references = (names == "original") | names.str.startswith("micrograph")
        measured = group[~references & ~names.str.startswith("floor")]
        if (names == "original").any():
            original = group[names == "original"].iloc[0]
            for position, row in measured.iterrows():
                marks.update(_against_original(position, row, original, tolerance))
        else:
            for position, row in measured.iterrows():
                marks.update(_against_micrographs(position, row, group[references]))
    return {cell: f"Outside tolerance: {reason}" for cell, reason in marks.items()}


def _against_original(position: int, row, original, tolerance) -> dict:
    marks = {}
    for column in row.index:
        value, reference = row[column], original[column]
        if column.startswith("spans["):
            if _axis_set(value) != _axis_set(reference):
                marks[position, column] = (
                    f"spans along {value or 'no axis'}; the original along "
                    f"{reference or 'no axis'}"
                )
        elif column.startswith("largest cluster["):
            if abs(value - reference) > tolerance.largest_cluster:
                marks[position, column] = (
                    f"the largest cluster holds {value:.3f} of the phase, {reference:.3f} in the "
                    f"original (tolerance {tolerance.largest_cluster})"
                )
        elif column.startswith("D_eff[") and column.endswith(" rel diff"):
            if abs(value) > tolerance.d_eff:
                base = column.removesuffix(" rel diff")
                reason = (
                    f"D_eff {row[base]:.4g} is {value:+.0%} from the original's "
                    f"{original[base]:.4g} (tolerance ±{tolerance.d_eff:.0%})"
                )
                marks[position, column] = marks[position, base] = reason
        elif column.startswith("D_eff[") and np.isnan(value) and not np.isnan(reference):
            marks[position, column] = (
                f"no D_eff: the phase does not span along this axis; the original's is "
                f"{reference:.4g}"
            )
    return marks


def _against_micrographs(position: int, row, micrographs) -> dict:
    marks = {}
    for column in row.index:
        if column.startswith("spans["):
            expected = set().union(*(_axis_set(m) for m in micrographs[column]))
            missing = " ".join(sorted(expected - _axis_set(row[column]), reverse=True))
            if missing:
                marks[position, column] = (
                    f"phase {_phase_of(column)} spans a micrograph along {missing}, the volume "
                    "does not: its slices lost that path"
                )
    return marks


# --------------------------------------------------------------------------------------------
# Figures (matplotlib, imported on use)
# --------------------------------------------------------------------------------------------


def plot_profile(profile, figure=None, colours: dict | None = None):
    """Draw fidelity (mean e_S2 with its spread, the floor and the tolerance band) and cost
    (seconds, and GFLOP per iteration on a second axis) against the configurations of a
    :class:`~napari_microstructure.core.pruning.PruningProfile`, ordered by depth, the
    recommendation marked with a star. Returns the matplotlib ``Figure``.

    ``figure``: a Figure to draw into (cleared first); a new one by default (no pyplot, no GUI
    backend). ``colours``: ``background``, ``axes``, ``text``, ``accent`` (hex), for themes.
    """
    from matplotlib.figure import Figure

    from .core.pruning import DEFAULT_TOLERANCE, percent, shallowness

    colours = {
        "background": "#ffffff",
        "axes": "#ffffff",
        "text": "#000000",
        "accent": "#d62728",
        **(colours or {}),
    }
    fig = figure if figure is not None else Figure(figsize=(6.4, 5.2), dpi=100)
    fig.clear()
    fig.set_facecolor(colours["background"])
    ax_fid, ax_cost = fig.subplots(2, 1, sharex=True)
    ax_flop = ax_cost.twinx()
    rows = sorted(profile.rows, key=shallowness)
    x = np.arange(len(rows))
    labels = [r["name"] for r in rows]
    recommended = profile.recommendation.get("configuration")
    for ax in (ax_fid, ax_cost, ax_flop):
        ax.set_facecolor(colours["axes"])
        for spine in ax.spines.values():
            spine.set_color(colours["text"])
        ax.tick_params(colors=colours["text"], labelsize=8)
        ax.yaxis.label.set_color(colours["text"])
        ax.xaxis.label.set_color(colours["text"])
        ax.title.set_color(colours["text"])
    if rows:
        mean = np.array([r["e_s2_mean"] for r in rows])
        spread = np.array([r["e_s2_std"] for r in rows])
        ax_fid.errorbar(
            x,
            mean,
            yerr=spread,
            fmt="o-",
            color="#1f77b4",
            ecolor="#1f77b4",
            capsize=3,
            lw=1.4,
            label="e_S2 (mean ± sd)",
        )
        best = np.nanmin(mean)
        tolerance = profile.recommendation.get("tolerance", DEFAULT_TOLERANCE)
        ax_fid.axhline(
            best * (1 + tolerance),
            color="#2ca02c",
            ls=":",
            lw=1,
            label=f"best + {percent(tolerance)}",
        )
        floor = profile.floor.get("e_s2_mean")
        if floor is not None:
            ax_fid.axhline(floor, color=colours["text"], ls="--", lw=1, label="floor")
        seconds = np.array([r["seconds"] for r in rows])
        flops = np.array([r["gflop_per_iteration"] for r in rows])
        ax_cost.bar(x, seconds, color="#ff7f0e", alpha=0.8, label="seconds")
        ax_flop.plot(x, flops, "s--", color="#9467bd", lw=1, label="GFLOP / iteration")
        if recommended in labels:
            i = labels.index(recommended)
            ax_fid.plot(
                [x[i]],
                [mean[i]],
                marker="*",
                ms=16,
                color=colours["accent"],
                ls="none",
                label=f"recommended: {recommended}",
            )
            ax_cost.bar([x[i]], [seconds[i]], color="none", edgecolor=colours["accent"], lw=2)
        legend = ax_fid.legend(fontsize=7, frameon=False)
        for text in legend.get_texts():
            text.set_color(colours["text"])
        handles = ax_cost.get_legend_handles_labels()
        more = ax_flop.get_legend_handles_labels()
        legend = ax_cost.legend(
            handles[0] + more[0], handles[1] + more[1], fontsize=7, frameon=False, loc="upper left"
        )
        for text in legend.get_texts():
            text.set_color(colours["text"])
    ax_fid.set_ylabel("e_S2", fontsize=9)
    ax_fid.set_title(
        f"Pruning profile of {profile.material}" + (" (partial)" if profile.partial else ""),
        fontsize=10,
    )
    ax_cost.set_ylabel("seconds", fontsize=9)
    ax_flop.set_ylabel("GFLOP / iteration", fontsize=9)
    ax_cost.set_xticks(x)
    ax_cost.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax_cost.set_xlabel("configuration (by depth)", fontsize=9)
    fig.tight_layout()
    return fig


def save_plots(profile, path: str | os.PathLike, dpi: int = FIGURE_DPI) -> Path:
    """Write :func:`plot_profile` as a PNG file (matplotlib's Agg renderer; no display needed)."""
    path = Path(path)
    _save_figure(plot_profile(profile), path, dpi)
    return path


def plot_parity(
    targets, predictions, *, title: str = "", units: str = "", label: str = "", figure=None
):
    """Parity plot (predicted against true, with the identity line and R², MAE in the legend)
    on a matplotlib ``Figure`` (a new one unless given); no pyplot state is used."""
    from matplotlib.figure import Figure

    from .core.properties import scores

    y = np.asarray(targets, float)
    p = np.asarray(predictions, float)
    keep = np.isfinite(y) & np.isfinite(p)
    figure = figure if figure is not None else Figure(figsize=(4.5, 4.2), layout="constrained")
    axes = figure.add_subplot(111)
    result = scores(y[keep], p[keep])
    low, high = float(min(y[keep].min(), p[keep].min())), float(max(y[keep].max(), p[keep].max()))
    axes.plot([low, high], [low, high], color="0.5", lw=1, label="identity")
    axes.scatter(
        y[keep],
        p[keep],
        s=12,
        alpha=0.7,
        label=f"{label + ': ' if label else ''}R² {result['r2']:.3f}, MAE {result['mae']:.3g}",
    )
    unit = f" ({units})" if units else ""
    axes.set_xlabel(f"true{unit}")
    axes.set_ylabel(f"predicted{unit}")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_aspect("equal", adjustable="datalim")
    return figure


def _save_figure(figure, path: Path, dpi: int = FIGURE_DPI) -> None:
    figure.savefig(path, dpi=dpi, format="png", facecolor=figure.get_facecolor())


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_report(
    folder: str | os.PathLike,
    files: Mapping[str, object],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    stale: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Write a job's files into ``folder``, all or nothing, and return their paths.

    ``files`` maps each file name to what it holds: a pandas DataFrame is written as CSV
    (every column, no index), a matplotlib Figure as PNG, a mapping as JSON (a provenance
    record), and a callable is called with the path to write (a model's or a profile's
    ``save``, or a TIFF writer). The files go through
    :func:`~napari_microstructure.io.atomic_outputs` (``overwrite``, ``inputs`` and ``stale`` as
    there): an error leaves ``folder`` as it was.
    """
    from . import io

    paths = {Path(folder) / name: content for name, content in files.items()}
    with io.atomic_outputs(paths, overwrite=overwrite, inputs=inputs, stale=stale) as staged:
        for path, content in paths.items():
            _write(staged[path], content)
    return list(paths)


def _write(path: Path, content) -> None:
    """Write one file of :func:`write_report`."""
    import pandas as pd
    from matplotlib.figure import Figure

    from . import io

    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, Figure):
        _save_figure(content, path)
    elif isinstance(content, Mapping):
        io.write_json(path, content)
    elif callable(content):
        content(path)
    else:
        raise TypeError(f"write_report cannot write a {type(content).__name__} ({path.name}).")
