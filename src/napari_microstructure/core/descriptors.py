"""Gram-matrix descriptors of microstructures, and the loss terms a reconstruction minimizes.

For a layer with feature maps F (C channels by N = H*W positions) the Gram matrix is
G = F Fᵀ / N. The Gram matrices of a few layers describe a microstructure's texture, whatever the
image size, so a reconstruction may be of any size.

A reconstruction minimizes a weighted sum of loss terms (:class:`LossTerm`): :class:`GramLoss`
always, and any extra terms given to ``reconstruct_steps(..., terms=...)`` or
``reconstruct_volume_steps(..., terms=...)``. At every resolution level a term is prepared from
the micrograph (:class:`TargetContext`: once per level in 2D, once per level and axis in 3D), then
called at every evaluation with the samples' soft phase scores and network features
(:class:`LossContext`); it returns one loss per sample (a 3D run: per sampled slice).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError
from .phases import ImageModel


def gram_matrices(features: Mapping) -> dict:
    """Return ``{layer: G (batch, C, C)}`` with ``G = F Fᵀ / N`` for each feature map."""
    grams = {}
    for name, feature in features.items():
        batch, channels = feature.shape[:2]
        flat = feature.reshape(batch, channels, -1)
        grams[name] = flat @ flat.transpose(1, 2) / flat.shape[-1]
    return grams


def gram_loss(grams: Mapping, targets: Mapping, layer_weights: Mapping | None = None):
    """Per-sample loss ``sum_l w_l ||G_l - T_l||² / ||T_l||²`` (a tensor of shape (batch,)).

    ``targets`` hold one Gram matrix per layer, shape (1, C, C) or (C, C).
    """
    total = 0.0
    for name, gram in grams.items():
        target = targets[name].reshape(1, *gram.shape[-2:])
        weight = 1.0 if layer_weights is None else float(layer_weights.get(name, 1.0))
        difference = ((gram - target) ** 2).sum(dim=(1, 2))
        total = total + weight * difference / (target**2).sum().clamp_min(1e-30)
    return total


@dataclass(frozen=True)
class TargetContext:
    """What :meth:`LossTerm.prepare` sees: the micrograph the samples must match at one level."""

    micrograph: np.ndarray  # phase labels or grey levels, full resolution
    model: ImageModel  # the micrograph's kind, phases and fractions
    views: (
        tuple  # colour images (3, H, W) to match: the micrograph, or its 8 rotations/reflections
    )
    encoder: Any  # the network: images (n, 3, h, w) in [0, 1] -> {layer: features}
    level: int  # resolution level, 0 = coarsest
    factor: int  # the level's images are the full-resolution ones average-pooled by this
    axis: int | None  # 3D: the samples are slices normal to this axis; None in 2D
    device: Any  # torch device of the run

    def images(self) -> Iterator:
        """Each view at this level, as a tensor (1, 3, h, w) on the run's device."""
        import torch
        import torch.nn.functional as F

        for view in self.views:
            with torch.no_grad():
                image = torch.from_numpy(np.ascontiguousarray(view)).to(self.device)[None]
                if self.factor > 1:
                    image = F.avg_pool2d(image, self.factor)
            yield image

    def features(self) -> Iterator[dict]:
        """The network features of each view at this level (one view at a time, no gradient)."""
        import torch

        for image in self.images():
            with torch.no_grad():
                features = self.encoder(image)
            yield features


@dataclass(frozen=True)
class LossContext:
    """What a :class:`LossTerm` sees at one evaluation: the samples under optimization."""

    scores: Any  # (n, C, h, w) soft scores ((1, C, D, H, W) for a whole-volume term), differentiable: softmax phase probabilities (C >= 3),
    # or the sigmoid (C = 1) that is phase 1's probability of two phases or the grey level
    features: Mapping  # {layer: features (n, channels, h', w')} of the samples, differentiable
    model: ImageModel
    level: int  # resolution level, 0 = coarsest
    factor: int  # the samples' sides are the output's divided by this (1 at the finest level)
    axis: int | None  # 3D: the samples are slices normal to this axis; None in 2D
    periodic: bool  # the samples tile seamlessly (the network pads circularly)
    device: Any
    logits: Any = None  # the optimized parameters the scores come from, (n, C, h, w), or None

    @property
    def probabilities(self):
        """Phase probabilities (n, K, h, w) of the samples (phase k: ``model.labels[k]``)."""
        import torch

        self._check_phases()
        if self.scores.shape[1] == 1:
            return torch.cat([1 - self.scores, self.scores], dim=1)
        return self.scores

    @property
    def log_probabilities(self):
        """Phase log-probabilities (n, K, h, w) in double precision: from the logits where the
        context has them (exact where the probabilities round to 0 or 1), else from the
        probabilities."""
        import torch

        self._check_phases()
        if self.logits is None:
            return torch.log(self.probabilities.double().clamp_min(1e-300))
        return log_probabilities(self.logits)

    def _check_phases(self) -> None:
        if self.model.kind != "labels":
            raise ValueError("A grey reconstruction has grey levels (scores), not phases.")


def log_probabilities(logits):
    """Phase log-probabilities (n, K, ...) in double precision of the optimized logits: the
    log-sigmoid of the one channel of two phases (K = 2), or the log-softmax of K channels.
    Unlike the probabilities in single precision, they never tie at 0 or 1."""
    import torch

    logits = logits.double()
    if logits.shape[1] == 1:
        return torch.cat(
            [torch.nn.functional.logsigmoid(-logits), torch.nn.functional.logsigmoid(logits)],
            dim=1,
        )
    return torch.log_softmax(logits, dim=1)


@runtime_checkable
class LossTerm(Protocol):
    """One term of a reconstruction's loss, added with ``weight`` to the others.

    ``name`` (unique within a run) labels the term in the provenance; ``weight`` is a finite
    number of 0 or more. ``prepare`` computes the term's targets from the micrograph at each
    level (in 3D: for each axis, ``context.axis``); calling the term returns the differentiable
    loss of each sample, a tensor of shape ``(n,)``. In 3D, a term whose ``whole_volume``
    attribute is true is prepared once per level (``context.micrograph`` None) and called once
    per step on the whole soft volume (``scores`` of shape ``(1, C, D, H, W)``, no features,
    ``axis`` None) instead of on slices (:mod:`.volume`).
    """

    name: str
    weight: float

    def prepare(self, context: TargetContext) -> None: ...

    def __call__(self, context: LossContext): ...


class GramLoss:
    """The Gram-matrix loss (:func:`gram_loss`) of the samples' features against the
    micrograph's; with several views, against the mean of their Gram matrices."""

    name = "gram"

    def __init__(self, layer_weights: Mapping | None = None, weight: float = 1.0):
        self.layer_weights = layer_weights
        self.weight = weight
        self.targets: dict = {}  # axis (None in 2D) -> {layer: target Gram matrix (C, C)}

    def prepare(self, context: TargetContext) -> None:
        """Keep the target Gram matrices of this level (and axis)."""
        views = [{k: v[0] for k, v in gram_matrices(f).items()} for f in context.features()]
        self.targets[context.axis] = (
            views[0]
            if len(views) == 1
            else {name: sum(view[name] for view in views) / len(views) for name in views[0]}
        )

    def __call__(self, context: LossContext):
        """The loss of each sample, shape (n,)."""
        grams = gram_matrices(context.features)
        return gram_loss(grams, self.targets[context.axis], self.layer_weights)


class TwoPointLoss:
    """The two-point loss of phase samples against the micrograph, at the finest level.

    For every phase of the micrograph, the mean square over ``r = 0 .. L`` of the difference
    between the normalized autocovariance ``C(r)`` of a sample's phase probabilities (periodic
    ``S2`` maps radially averaged as :func:`~napari_microstructure.core.metrics.two_point` does)
    and the micrograph's; summed over the phases. ``L`` is that of
    :func:`~napari_microstructure.core.metrics.comparison_max_length`, so on phase images the
    term is the sum over the phases of ``e_S2`` squared. A volume's slices (``context.axis`` set)
    are pooled, as :func:`~napari_microstructure.core.volume.compare_volume` scores them, and the
    pooled value is each slice's loss. Zero at coarser levels and for grey micrographs.
    """

    name = "two_point"

    def __init__(self, weight: float = 1.0):
        self.weight = weight
        self.labels: tuple = ()  # the run's phase labels, in the order of the probabilities
        self.micrographs: dict = {}  # axis (None in 2D) -> the micrograph's phase labels
        self.targets: dict = {}  # (axis, h, w) -> (phases, C targets, flat lags, bins, counts)

    def prepare(self, context: TargetContext) -> None:
        """Keep the micrograph of this axis (its targets depend on the samples' size)."""
        if context.model.kind == "labels":
            self.labels = tuple(context.model.labels)
            self.micrographs[context.axis] = context.micrograph

    def _targets(self, axis, shape: tuple[int, int], device) -> tuple:
        import torch

        from . import metrics

        key = (axis, *shape)
        if key not in self.targets:
            micrograph = self.micrographs[axis]
            length = metrics.comparison_max_length(micrograph.shape, shape)
            present = set(np.unique(micrograph).tolist())
            phases = [k for k, label in enumerate(self.labels) if label in present]
            targets = np.array(
                [
                    metrics.two_point(micrograph, self.labels[k], length).autocovariance
                    for k in phases
                ]
            )
            index, bins, keep, counts = metrics._radial_bins(shape, length)
            flat = (index[0] * shape[1] + index[1]).ravel()[keep]
            self.targets[key] = tuple(
                torch.as_tensor(a, device=device) for a in (phases, targets, flat, bins, counts)
            )
        return self.targets[key]

    def __call__(self, context: LossContext):
        """The loss of each sample, shape (n,); of a volume's slices, their pooled loss."""
        import torch

        n = context.scores.shape[0]
        if context.factor > 1 or context.model.kind != "labels":
            return context.scores.new_zeros(n)
        probabilities = context.probabilities.double()
        shape = tuple(probabilities.shape[-2:])
        phases, targets, flat, bins, counts = self._targets(
            context.axis, shape, probabilities.device
        )
        p = probabilities[:, phases]
        spectrum = torch.fft.rfft2(p)
        maps = torch.fft.irfft2(spectrum.real**2 + spectrum.imag**2, s=shape) / math.prod(shape)
        phi = p.mean(dim=(2, 3))
        if context.axis is not None:  # a volume's slices, pooled as compare_volume scores them
            maps, phi = maps.mean(0, keepdim=True), phi.mean(0, keepdim=True)
        s2 = torch.zeros(len(maps), *targets.shape, dtype=maps.dtype, device=maps.device)
        s2 = s2.index_add_(2, bins, maps.flatten(2)[..., flat]) / counts
        variance = (phi - phi**2).clamp_min(1e-12)
        autocovariance = (s2 - phi[..., None] ** 2) / variance[..., None]
        loss = ((autocovariance - targets) ** 2).mean(dim=2).sum(dim=1)
        return loss.to(context.scores.dtype).expand(n)


def two_point_term(weight: float, model: ImageModel) -> TwoPointLoss | None:
    """The two-point term of a run, or None (``weight`` 0, or a grey micrograph); a weight that
    is not a finite number of 0 or more is refused with InputError."""
    (term,) = check_terms([TwoPointLoss(weight)])
    return term if weight > 0 and model.kind == "labels" else None


def check_terms(terms: Sequence) -> tuple:
    """The extra loss terms as a tuple, or InputError: each must be a :class:`LossTerm` with a
    unique name other than ``"gram"`` and a finite weight of 0 or more."""
    if isinstance(terms, LossTerm) or not isinstance(terms, Sequence):
        raise InputError(f"terms must be a list of loss terms; got {terms!r}.")
    names = {GramLoss.name}
    for term in terms:
        if not isinstance(term, LossTerm):
            raise InputError(
                f"The loss term {term!r} needs a name, a weight, prepare(context) and "
                "__call__(context) (see core.descriptors.LossTerm)."
            )
        if not isinstance(term.name, str) or not term.name or term.name in names:
            raise InputError(
                f"Each loss term needs its own name (not {', '.join(map(repr, sorted(names)))}); "
                f"got {term.name!r}."
            )
        names.add(term.name)
        weight = term.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, Real)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise InputError(
                f"The weight of loss term {term.name} must be a finite number of 0 or more; "
                f"got {weight!r}."
            )
    return tuple(terms)
