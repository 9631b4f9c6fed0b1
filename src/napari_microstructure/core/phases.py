"""What kind of image a micrograph is, how it is shown to the network, and how phases come back.

A micrograph is either *grey* (a continuous grey level) or *labels* (K phases, 2 <= K <= 8).
The network sees colours in [0, 1]³: a grey level is replicated to the three channels; phase k
gets the k-th colour of :data:`PHASE_COLOURS`, the corners of the colour cube, so that any mixture
of phases is distinguishable from a pure phase. After optimization, phases are assigned so that
each phase's pixel count equals the micrograph's fraction times the output size, and a grey output
gets the micrograph's grey-level histogram, both by rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import MAX_PHASES
from .errors import InputError

#: Integer images with more distinct values than this are grey images; between MAX_PHASES and
#: this they are taken for label images with too many phases (the user may say kind="grey").
_LABEL_AMBIGUITY_LIMIT = 32
#: Corners of the colour cube, black and white first; pairs of complementary colours follow.
PHASE_COLOURS = np.array(
    [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 0]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class ImageModel:
    """How a micrograph is represented: its kind, phase labels and fractions, or grey values."""

    kind: str  # "grey" or "labels"
    labels: tuple  # phase label values, ascending ("labels" only)
    fractions: tuple  # volume fraction of each phase ("labels" only)
    grey_range: tuple  # (min, max) of a grey image, used to scale it to [0, 1]
    dtype: str

    @property
    def n_channels(self) -> int:
        """Channels optimized per pixel: 1 for grey and two phases, K for K >= 3 phases."""
        return 1 if self.kind == "grey" or len(self.labels) == 2 else len(self.labels)


def describe_image(image: np.ndarray, kind: str = "auto") -> ImageModel:
    """Decide whether ``image`` is grey or labels (``kind='auto'``) and describe it.

    Auto: a boolean image, or an integer or float image with at most 8 distinct values, is a
    label image; an integer image with 9 to 32 distinct values is refused as having too many
    phases; anything else is grey.
    """
    if kind not in ("auto", "grey", "labels"):
        raise InputError(f"Unknown image kind {kind!r}: choose 'auto', 'grey' or 'labels'.")
    values, counts = np.unique(image, return_counts=True)
    if kind == "auto":
        if image.dtype.kind == "b" or len(values) <= MAX_PHASES:
            kind = "labels"
        elif image.dtype.kind in "iu" and len(values) <= _LABEL_AMBIGUITY_LIMIT:
            raise InputError(
                f"The image looks like a label image with {len(values)} phases; at most "
                f"{MAX_PHASES} are supported. Merge phases, or treat it as a grey image "
                "(kind='grey')."
            )
        else:
            kind = "grey"
    if kind == "labels":
        if len(values) > MAX_PHASES:
            raise InputError(
                f"The image has {len(values)} distinct values; at most {MAX_PHASES} phases are "
                "supported. Merge phases, or treat it as a grey image (kind='grey')."
            )
        fractions = tuple(float(c) / image.size for c in counts)
        return ImageModel(
            "labels", tuple(v.item() for v in values), fractions, (0.0, 1.0), str(image.dtype)
        )
    low, high = float(values[0]), float(values[-1])
    return ImageModel("grey", (), (), (low, high), str(image.dtype))


def to_colour(image: np.ndarray, model: ImageModel) -> np.ndarray:
    """Colour image ``(3, *shape)`` in [0, 1] that the network sees for a micrograph."""
    if model.kind == "grey":
        low, high = model.grey_range
        grey = ((image.astype(np.float32) - low) / (high - low)).astype(np.float32)
        return np.broadcast_to(grey, (3, *image.shape)).copy()
    index = np.searchsorted(np.asarray(model.labels), image)
    colours = phase_colours(len(model.labels))
    return np.moveaxis(colours[index], -1, 0).copy()


def phase_colours(n_phases: int) -> np.ndarray:
    """The colours ``(K, 3)`` of K phases."""
    return PHASE_COLOURS[:n_phases]


def target_counts(fractions, n_pixels: int) -> np.ndarray:
    """Pixel counts per phase that sum to ``n_pixels`` and are each within one pixel of
    ``fraction * n_pixels`` (largest remainders get the spare pixels)."""
    ideal = np.asarray(fractions, dtype=np.float64) * n_pixels
    counts = np.floor(ideal).astype(np.int64)
    spare = n_pixels - counts.sum()
    counts[np.argsort(-(ideal - counts), kind="stable")[:spare]] += 1
    return counts


def assign_phases(scores: np.ndarray, model: ImageModel) -> np.ndarray:
    """Label image with exact phase counts from per-pixel scores.

    ``scores`` is ``(*shape,)`` for grey/two-phase (higher means the upper phase: a logit or a
    probability) or ``(K, *shape)`` log-probabilities (or probabilities) for K phases. Two
    phases: the pixels ranked by score are cut at the target count. K phases: phases are filled
    from the rarest to the most common, each taking the unassigned pixels where its score leads
    the best of the remaining phases' by the most.
    """
    labels = np.asarray(model.labels, dtype=model.dtype)
    if scores.ndim == 0 or (len(labels) > 2 and scores.shape[0] != len(labels)):
        raise ValueError("scores do not match the number of phases")
    shape = scores.shape if len(labels) == 2 else scores.shape[1:]
    n_pixels = int(np.prod(shape))
    counts = target_counts(model.fractions, n_pixels)
    result = np.empty(n_pixels, dtype=labels.dtype)
    if len(labels) == 2:
        order = np.argsort(scores.ravel(), kind="stable")
        result[order[: counts[0]]] = labels[0]
        result[order[counts[0] :]] = labels[1]
        return result.reshape(shape)
    probabilities = scores.reshape(len(labels), -1).astype(np.float64)
    unassigned = np.ones(n_pixels, dtype=bool)
    remaining = list(np.argsort(counts, kind="stable"))
    while remaining:
        phase = remaining.pop(0)
        candidates = np.flatnonzero(unassigned)
        if remaining:
            rivals = probabilities[np.ix_(remaining, candidates)].max(axis=0)
            margin = probabilities[phase, candidates] - rivals
        else:
            margin = probabilities[phase, candidates]
        chosen = candidates[np.argsort(-margin, kind="stable")[: counts[phase]]]
        result[chosen] = labels[phase]
        unassigned[chosen] = False
    return result.reshape(shape)


def small_inner_clusters(image: np.ndarray, labels, percentile: float = 5) -> dict:
    """Per phase, the given percentile of the sizes of the face-connected clusters that touch no
    image border (None for a phase whose every cluster touches a border)."""
    from scipy import ndimage

    smallest = {}
    for label in labels:
        clusters, count = ndimage.label(image == label)
        sizes = np.bincount(clusters.ravel())[1:]
        border = np.zeros(count + 1, dtype=bool)
        for axis in range(image.ndim):
            for index in (0, -1):
                border[np.take(clusters, index, axis=axis)] = True
        inner = sizes[~border[1:]]
        smallest[label] = int(np.percentile(inner, percentile)) if inner.size else None
    return smallest


def drop_islands(
    scores: np.ndarray, model: ImageModel, max_island: dict, rounds: int = 3
) -> np.ndarray:
    """Assign phases with exact counts, without islands smaller than ``max_island[label]``.

    Clusters of a phase with fewer pixels than its limit, away from the border, are given to the
    neighbouring phase and the counts are restored by ranking again; this repeats a few times,
    since the pixels that fill the counts may form new islands.
    """
    from scipy import ndimage

    scores = np.array(scores, dtype=np.float64)
    labels = np.asarray(model.labels, dtype=model.dtype)
    result = assign_phases(scores, model)
    for _ in range(rounds):
        changed = False
        for index, label in enumerate(labels):
            limit = max_island.get(label.item())
            if not limit or limit <= 1:
                continue
            clusters, count = ndimage.label(result == label)
            sizes = np.bincount(clusters.ravel())
            small = np.flatnonzero(sizes[1:] < limit) + 1
            if small.size == 0:
                continue
            border = np.unique(
                np.concatenate(
                    [
                        np.take(clusters, i, axis=a).ravel()
                        for a in range(result.ndim)
                        for i in (0, -1)
                    ]
                )
            )
            small = np.setdiff1d(small, border)
            if small.size == 0:
                continue
            island = np.isin(clusters, small)
            if len(labels) == 2:
                scores[island] = np.inf if index == 0 else -np.inf
            else:
                scores[index][island] = -np.inf
            changed = True
        if not changed:
            break
        result = assign_phases(scores, model)
    return result


def match_histogram(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Give ``values`` the grey-level histogram of ``reference`` (rank by rank), in its dtype."""
    order = np.argsort(values.ravel(), kind="stable")
    quantiles = np.sort(reference.ravel())
    if quantiles.size != order.size:
        positions = (np.arange(order.size) + 0.5) / order.size * quantiles.size
        quantiles = quantiles[np.clip(positions.astype(np.int64), 0, quantiles.size - 1)]
    result = np.empty(order.size, dtype=reference.dtype)
    result[order] = quantiles
    return result.reshape(values.shape)
