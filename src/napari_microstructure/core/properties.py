"""Structure-property models by transfer learning (Li et al. 2018; docs/method.md section 5).

A model predicts one property of a phase (``D_eff_x`` from :mod:`.datasets`, or a user's
column) from a microstructure. Its trunk is VGG19 truncated at the depth the pruning study
recommends (:func:`trunk_layers`; ``pool2`` without a profile), initialized with the pretrained
weights, or with random weights for the control that shows what transfer buys.

Input
    The image becomes a 0/1 map of the phase (``input="phase"``) or, the default, of the
    phase's clusters that connect the two faces normal to the transport axis
    (``input="spanning"``): the only part of a phase that carries flux. The transport axis is
    turned to the image's columns, so a model trained along x predicts along y of a transposed
    image. A 3D volume gives the 2D slices that contain the axis (at most ``max_slices`` per
    slicing direction; the spanning clusters found in 3D), and its features are their mean.

Target
    A 2D model of D_eff learns D_eff over the fraction of the phase's spanning clusters (the
    inverse tortuosity factor of those clusters, ``learns="inverse_tortuosity"``) and predicts
    that fraction times its output clipped to [0, 1]: a prediction lies from 0 to the
    fraction. 3D models and other properties learn the value itself (:data:`LEARNS`).

Physics
    A frozen model of D_eff also solves for the D_eff of coarse copies of the spanning clusters
    (blocks of 2 and of 4 pixels joined by the fine faces between them, :func:`_coarse_solves`,
    by :func:`~.diffusion.aggregated_diffusivities`: milliseconds for a 128x128 image). The
    model fits those solves (and their square roots; over the spanning fraction when it learns
    the inverse tortuosity) by least squares first, and the ridge on the trunk's features
    learns what that fit leaves (``physics="coarse_solve"``, :data:`PHYSICS`). On real crops
    the trunk's features alone were 16 to 30 times further from TauFactor.

Modes
    ``"frozen"`` (default): features are the channel means and standard deviations of every
    kept layer of the frozen trunk, for the image and for the image averaged over 2x2 blocks,
    square-rooted; a ridge regression on the standardized features, its regularization chosen
    by leave-one-out cross-validation (scikit-learn's ``RidgeCV``).
    ``"finetune"``: the same statistics of the trunk at full size into a small head (one hidden
    layer of 32), trained end to end with Adam, early stopping on a validation split.
    When every training label is non-negative (D_eff), predictions are clipped at zero
    (``clip_min`` in the model's header).

Checks
    Images must hold phase labels (grey images are refused), and a predicted image the phase of
    interest. Labels must be finite and small enough to square; a model whose cross-validated
    metrics or parameters are not finite is refused, never returned. :func:`load_model` checks
    every array the model's mode needs. A model records the dimension of its training images
    (``training.ndim``; 2 in files that predate it) and refuses images of the other dimension.

Trust
    :meth:`PropertyModel.predict_intervals` gives each prediction an interval at a stated
    coverage (:data:`COVERAGE` by default) and flags the inputs outside the training data
    (:meth:`PropertyModel.out_of_range`: a constant image, a phase fraction outside the
    training images' range, features far from every training image). The interval is
    conformal (Vovk et al. 2005; Lei et al. 2018) on the cross-validated residuals, each
    divided by its image's difficulty: the mean distance of its standardized features to the
    :data:`NEIGHBOURS` nearest training images (leave-one-out for a training image), relative
    to the training images' median, plus :data:`DISTANCE_FLOOR`. A new image's interval is
    its prediction plus or minus that quantile of the ratios times its own difficulty, so
    intervals widen away from the training data (a model that learns the inverse tortuosity
    multiplies the difficulty by the spanning fraction too, and leaves the images where nothing
    spans, predicted 0 exactly, out of the scores); an image whose relative distance exceeds
    the training images' quantile :data:`DISTANCE_QUANTILE` is out of range. The model keeps the standardized training
    features and the ratios (``neighbour_features``, ``conformal_scores``); models trained
    without cross-validation have the range check but no intervals, and older files neither.

Measured with benchmarks/properties.py (generated 128x128 microstructures, D_eff of phase 1
along x by TauFactor, a third of them blocked; 5-fold CV R² on 300 samples, pretrained / random
trunk; one CPU thread). First on four families (no cell boundaries), volume fraction 0.2-0.8:

- phase map, channel means of conv1_1, pool1, pool2, ridge: 0.857; with square roots: 0.896;
  with standard deviations: 0.908; RBF kernel ridge on 40 principal components: 0.918. The
  generation parameters themselves (volume fraction, family, lengths, orientation) into
  gradient boosting reached only 0.87: near the percolation threshold a 128-pixel sample
  percolates or not by chance, which texture statistics cannot see.
- the same on the 2x2-averaged image too (two scales): 0.926; adding 4x4 and 8x8: 0.921, 0.909.
- upper-triangle Gram matrices (10,000 numbers) instead of channel statistics: 0.894 (phase
  map), 0.948 (spanning clusters): no better, 40x more numbers.
- **spanning clusters** instead of the phase map, means and stds, one scale: 0.951 / 0.939;
  two scales: **0.960 / 0.941** (the default); adding the phase map's features as well: 0.948.
  Kernel ridge was never better than ridge on these features (0.957).

With the default, five families (cell boundaries added), 400 samples: volume fraction 0.2-0.8:
CV R² 0.954 / 0.906; 0.1-0.9: 0.986 / 0.978 (a wider spread of labels). Training on 300
samples takes 10 s; one 256x256 prediction 0.09 s (channels-last maps and one-pass moments:
0.145 s before). Fine-tuning (100 samples, tested on 100 others): R² 0.902 / 0.857, 140 s.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import AXIS_NAMES, axis_index, check_label_image
from .encoder import LAYER_NAMES, check_layers, layer_channels, min_input_size
from .errors import InputError, WeightsError
from .options import merge, option
from .provenance import environment
from .steps import STOP, relay, run_to_end, timing
from .weights import describe

__all__ = [
    "DEFAULT_DEPTH",
    "INPUTS",
    "LEARNS",
    "COVERAGE",
    "PHYSICS",
    "MODES",
    "Predictions",
    "PropertyModel",
    "RangeCheck",
    "TrainProgress",
    "check_training_options",
    "apply_regression",
    "extract_features",
    "fit_regression",
    "fit_ridge",
    "load_model",
    "predict",
    "scores",
    "train",
    "train_steps",
    "trunk_layers",
]

MODEL_FORMAT = "napari-microstructure property model"
#: 2: the training images' dimension, intervals and the range of the features; 3: what the
#: regression learns (``preprocessing.learns``; older files learnt the property itself)
#: 4: a coarse solve's D_eff in the regression (``preprocessing.physics``; older files: none)
#: 5: coarse copies joined by the fine faces between blocks (version 4 averaged the blocks)
MODEL_VERSION = 5
#: The first version whose coarse solves this version makes.
COARSE_FACES_VERSION = 5
MODES = ("frozen", "finetune")
INPUTS = ("spanning", "phase")
#: What the regression learns: ``inverse_tortuosity`` (D_eff over the fraction of the phase's
#: spanning clusters), ``property`` (the value itself), ``auto`` (the first for a 2D model of a
#: D_eff_* property, the second otherwise): real 2D crops 0.33 -> 0.25, 3D 0.085 -> 0.16
#: (docs/measurements/properties_3d.md)
LEARNS = ("auto", "inverse_tortuosity", "property")
#: Physics in a frozen model's regression, from the D_eff of coarse copies of the phase's
#: spanning clusters (:func:`_coarse_solves`) and their square roots: ``coarse_solve`` fits
#: those by least squares first, and the ridge on the trunk's features learns what that fit
#: leaves; ``coarse_features`` puts them beside the trunk's features in one ridge; ``none``:
#: the trunk's features alone; ``auto``: for a D_eff_* property in frozen mode the first, else
#: none. Relative MAE on real crops: 2D 0.25 (trunk alone) -> 0.010 (coarse_solve); 3D from
#: 400 volumes 0.085 -> 0.011 (coarse_solve; coarse_features 0.053), from 25-200 volumes
#: 0.007-0.011 (docs/measurements/properties_physics.md).
PHYSICS = ("auto", "coarse_solve", "coarse_features", "none")
#: Block sides of the coarse copies (:func:`~.diffusion.aggregated_diffusivities`: the
#: potential held constant on each block, neighbouring blocks joined by the fine faces between
#: them), and the conductivity outside the spanning clusters. The faces between blocks keep the
#: thin necks and the corner contacts of the fine grid that averaging the blocks lost: relative
#: MAE on real 2D crops 0.047-0.057 -> 0.016-0.018 over three dataset seeds, the slices of the
#: electrode's pores 0.088-0.112 -> 0.032-0.035 (docs/measurements/properties_physics.md).
COARSE_BLOCKS = (2, 4)
COARSE_FLOOR = 1e-4
#: Relative residual at which a coarse solve stops: D_eff, from the dissipation, is accurate to
#: the second order of it (the electrode's 128^3 centre, pores along x, at blocks 2 and 4:
#: 0.1999 / 0.2309 against 0.1996 / 0.2308 at 1e-6, in 0.27 s against 0.50 s on one thread).
COARSE_TOLERANCE = 1e-3
#: Depth of the trunk when no pruning profile is given (docs/method.md section 4).
DEFAULT_DEPTH = "pool2"
#: Image scales of the frozen features: 1 = as given, 2 = averaged over 2x2 blocks.
SCALES = (1, 2)
#: Candidate ridge penalties (on standardized features), chosen by leave-one-out CV.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
#: Slices per slicing direction of a 3D volume (evenly spaced).
MAX_SLICES = 16
#: Images per forward pass of the trunk.
BATCH = 16
#: Trunk's learning rate relative to the head's: 0.1 diverged (docs/measurements/properties.md)
TRUNK_LEARNING_RATE = 0.01
#: Coverage of a prediction interval unless another is asked for.
COVERAGE = 0.9
#: Training images whose mean feature distance is an image's difficulty (the interval's scale).
NEIGHBOURS = 10
#: Added to an image's relative distance to make its difficulty: images at distance 0 (every
#: phase map without a spanning cluster gives the same features) still get an interval.
#: k = 5, 10, 20 and 0.1 to 2 gave the same coverage (docs/measurements/properties_trust.md).
DISTANCE_FLOOR = 0.5
#: Quantile of the training images' own difficulties beyond which an input is out of range.
DISTANCE_QUANTILE = 0.99


# --------------------------------------------------------------------------------------------
# Trunk and features
# --------------------------------------------------------------------------------------------


def trunk_layers(depth: str | int | None = None, profile=None) -> list[str]:
    """The layers whose statistics are features: those of a depth (``"pool2"``, 3 ...), or of a
    pruning profile's recommendation (a :class:`~.pruning.PruningProfile` or its JSON path);
    ``pool2``'s without either."""
    from .pruning import PruningProfile, depth_configuration, load_profile

    if depth is not None and profile is not None:
        raise InputError("Give either a depth or a pruning profile, not both.")
    if profile is not None:
        profile = profile if isinstance(profile, PruningProfile) else load_profile(profile)
        layers = profile.recommendation.get("layers")
        if not layers:
            raise InputError(
                f"The pruning profile of {profile.material} recommends no configuration (no row finished)."
            )
        return check_layers(layers)
    return list(depth_configuration(DEFAULT_DEPTH if depth is None else depth).layers)


def _coarse_solves(spanning: np.ndarray, axis: int, coarse: dict) -> np.ndarray:
    """D_eff along ``axis`` of coarse copies of the spanning-cluster mask (conductivity 1 in it,
    ``coarse["floor"]`` outside), one per block side in ``coarse["blocks"]``
    (:func:`~.diffusion.aggregated_diffusivities`); 0 where nothing spans."""
    from .diffusion import aggregated_diffusivities

    spanning = np.asarray(spanning, bool)
    if not spanning.any():
        return np.zeros(len(coarse["blocks"]))
    field = np.where(spanning, 1.0, coarse["floor"])
    return np.array(
        aggregated_diffusivities(field, axis, coarse["blocks"], tolerance=COARSE_TOLERANCE)
    )


def _physics_features(solves, fractions: np.ndarray, learns: str):
    """The coarse solves' columns of the regression (None without physics): each D_eff and its
    square root, over the spanning fraction where the model learns the inverse tortuosity."""
    if solves is None:
        return None
    values = np.clip(_learnt(np.asarray(solves, float), fractions[:, None], learns), 0, None)
    return np.hstack([values, np.sqrt(values)])


def _regression_inputs(features, solves, fractions: np.ndarray, preprocessing: dict) -> tuple:
    """The ridge's features and the physics columns fitted first (None): ``coarse_features``
    puts the coarse solves' columns beside the trunk's features instead."""
    physics = _physics_features(solves, fractions, preprocessing.get("learns", "property"))
    if preprocessing.get("physics") == "coarse_features":
        return np.hstack([features, physics]), None
    return features, physics


def _recorded_coarse(preprocessing: dict) -> dict | None:
    """The coarse solves a model records (None for a model without physics)."""
    return preprocessing.get("coarse") if preprocessing.get("physics", "none") != "none" else None


def _spanning(mask: np.ndarray, axis: int) -> np.ndarray:
    """The face-connected clusters of ``mask`` that touch both faces normal to ``axis``."""
    from scipy import ndimage

    clusters, _ = ndimage.label(mask)
    first = np.unique(np.take(clusters, 0, axis=axis))
    last = np.unique(np.take(clusters, -1, axis=axis))
    spanning = np.intersect1d(first[first > 0], last[last > 0])
    return np.isin(clusters, spanning) if spanning.size else np.zeros_like(mask, dtype=bool)


def _slices(
    image,
    phase,
    axis,
    input: str,
    max_slices: int,
    smallest: int,
    name: str,
    require_phase: bool = False,
    coarse: dict | None = None,
) -> tuple[list[np.ndarray], float, np.ndarray | None]:
    """The 2D maps the trunk sees, as stacks (n, H, W) of float32 0/1 with the transport along
    the last axis: one stack for an image, one per slicing direction for a volume; the share
    of the image in the phase's clusters that span ``axis``; and, with ``coarse``, their
    :func:`_coarse_solves` (else None). The image must hold phase labels and, with
    ``require_phase``, the phase."""
    array = check_label_image(image, name, phase if require_phase else None)
    index = axis_index(axis, array.ndim)
    mask = array == phase
    spanning = _spanning(mask, index)
    solves = _coarse_solves(spanning, index, coarse) if coarse is not None else None
    if input == "spanning":
        mask = spanning
    mask = np.moveaxis(mask, index, -1)  # transport along the last axis
    if array.ndim == 2:
        stacks = [mask[None]]
    else:
        stacks = []
        for other in (0, 1):  # slices normal to each of the two other axes
            stack = np.moveaxis(mask, other, 0)
            chosen = np.unique(
                np.linspace(0, stack.shape[0] - 1, min(max_slices, stack.shape[0]))
                .round()
                .astype(int)
            )
            stacks.append(stack[chosen])
    for stack in stacks:
        if min(stack.shape[-2:]) < smallest:
            raise InputError(
                f"The {name} is too small: its slices are {tuple(stack.shape[-2:])} pixels, and the trunk's pooling "
                f"needs at least {smallest} a side. Use a larger image or a shallower depth."
            )
    return [stack.astype(np.float32) for stack in stacks], float(spanning.mean()), solves


def _smallest_side(layers) -> int:
    return min_input_size(layers) * max(SCALES)


def _statistics(x, convs, mean_bgr, layers, scales=SCALES):
    """Per image of ``x`` (n, 1, H, W): square roots of the channel means and standard
    deviations of each layer, at each scale; differentiable in ``convs``.

    The maps are channels-last and the moments come from one pass (mean and mean square):
    0.085 s instead of 0.145 s for one 256x256 image to pool2 on one CPU thread."""
    import torch
    import torch.nn.functional as F

    plan = LAYER_NAMES[: LAYER_NAMES.index(layers[-1]) + 1]
    mean = torch.as_tensor(mean_bgr, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    parts = []
    for scale in scales:
        h = F.avg_pool2d(x, scale) if scale > 1 else x
        h = (h.expand(-1, 3, -1, -1) * 255.0 - mean).contiguous(memory_format=torch.channels_last)
        conv_index = 0
        for name in plan:
            if name.startswith("conv"):
                weight, bias = convs[conv_index]
                conv_index += 1
                h = F.relu(F.conv2d(h, weight, bias, padding=1), inplace=True)
            else:
                h = F.avg_pool2d(h, 2)
            if name in layers:
                average = h.mean((2, 3))
                variance = ((h * h).mean((2, 3)) - average * average).clamp_min(0)
                parts += [average, variance]
    # sqrt of the mean; of the variance it is the standard deviation
    return torch.sqrt(torch.cat(parts, 1).clamp_min(0) + 1e-12)


def _conv_count(layers) -> int:
    """Convolutions of VGG19 up to the deepest of ``layers``."""
    plan = LAYER_NAMES[: LAYER_NAMES.index(layers[-1]) + 1]
    return sum(name.startswith("conv") for name in plan)


def _convs_for(layers, weights, device):
    import torch

    from .weights import VGGWeights, load_weights

    loaded = weights if isinstance(weights, VGGWeights) else load_weights(weights)
    n_convs = _conv_count(layers)
    convs = [
        (
            torch.from_numpy(np.ascontiguousarray(w))
            .to(device)
            .contiguous(memory_format=torch.channels_last),
            torch.from_numpy(np.ascontiguousarray(b)).to(device),
        )
        for w, b in loaded.convs[:n_convs]
    ]
    return loaded, convs


def _sample_maps(
    images, phases, axis, input, max_slices, layers, names, require_phase=False, coarse=None
):
    """Each image's stacks of :func:`_slices`, the images' spanning fractions (an array) and,
    with ``coarse``, their coarse solves (n_images, n_blocks; else None)."""
    smallest = _smallest_side(layers)
    found = [
        _slices(image, p, axis, input, max_slices, smallest, n, require_phase, coarse)
        for image, p, n in zip(images, phases, names)
    ]
    solves = np.array([row[2] for row in found]) if coarse is not None else None
    return [row[0] for row in found], np.array([row[1] for row in found]), solves


def _learnt(y: np.ndarray, fractions: np.ndarray, learns: str) -> np.ndarray:
    """What the regression fits: ``y``, or with ``inverse_tortuosity`` ``y`` over the spanning
    fraction (0 where nothing spans)."""
    if learns != "inverse_tortuosity":
        return y
    return np.where(fractions > 0, y / np.where(fractions > 0, fractions, 1.0), 0.0)


def _property_of(learnt: np.ndarray, fractions: np.ndarray, learns: str) -> np.ndarray:
    """The property from the regression's output: with ``inverse_tortuosity``, the spanning
    fraction times the output clipped to [0, 1] (D_eff lies from 0 to the fraction)."""
    if learns != "inverse_tortuosity":
        return learnt
    return fractions * np.clip(learnt, 0.0, 1.0)


def _check_learns(learns: str) -> str:
    if learns not in LEARNS:
        raise InputError(f"Unknown learns {learns!r}: choose one of {', '.join(LEARNS)}.")
    return learns


def _check_physics(physics: str, mode: str) -> str:
    if physics not in PHYSICS:
        raise InputError(f"Unknown physics {physics!r}: choose one of {', '.join(PHYSICS)}.")
    if physics.startswith("coarse") and mode != "frozen":
        raise InputError(
            f"physics {physics} is part of a ridge regression: use it with mode frozen, or "
            "choose physics none to fine-tune."
        )
    return physics


def _resolve_physics(physics: str, property_name: str, mode: str) -> str:
    """``physics`` with ``auto`` resolved for a ``mode`` model of ``property_name``."""
    if physics != "auto":
        return physics
    return "coarse_solve" if property_name.startswith("D_eff") and mode == "frozen" else "none"


def _coarse_settings(physics: str) -> dict | None:
    """What a model records of its coarse solves (None without physics)."""
    if not physics.startswith("coarse"):
        return None
    return {"blocks": list(COARSE_BLOCKS), "floor": COARSE_FLOOR}


def _resolve_learns(learns: str, property_name: str, ndim: int) -> str:
    """``learns`` with ``auto`` resolved for a model of ``property_name`` on ``ndim``-D images."""
    if learns != "auto":
        return learns
    d_eff = property_name.startswith("D_eff")
    return "inverse_tortuosity" if d_eff and ndim == 2 else "property"


def _feature_batches(sample_maps, convs, mean_bgr, layers, device):
    """Generator of ``(slices done, slices in all)`` after each batch through the trunk; returns
    the mean statistics over each sample's slices, (n_samples, n_features), or None when
    ``"stop"`` was sent."""
    import torch

    queue = [(i, m) for i, groups in enumerate(sample_maps) for maps in groups for m in maps]
    order = sorted(range(len(queue)), key=lambda k: queue[k][1].shape)
    sums: dict[int, np.ndarray] = {}
    counts = np.zeros(len(sample_maps))
    start = 0
    while start < len(order):
        shape = queue[order[start]][1].shape
        stop = start
        while stop < len(order) and stop - start < BATCH and queue[order[stop]][1].shape == shape:
            stop += 1
        batch = np.stack([queue[order[k]][1] for k in range(start, stop)])[:, None]
        with torch.inference_mode():
            stats = (
                _statistics(torch.from_numpy(batch).to(device), convs, mean_bgr, layers)
                .double()
                .cpu()
                .numpy()
            )
        for k, row in zip(range(start, stop), stats):
            i = queue[order[k]][0]
            sums[i] = sums.get(i, 0.0) + row
            counts[i] += 1
        start = stop
        if (yield start, len(queue)) == STOP:
            return None
    return np.stack([sums[i] / counts[i] for i in range(len(sample_maps))])


def _features_of(sample_maps, convs, mean_bgr, layers, device) -> np.ndarray:
    return run_to_end(_feature_batches(sample_maps, convs, mean_bgr, layers, device))


def _as_list(images) -> list:
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype.kind in "biuf":
        return [images]
    return list(images)


def _phases(phase, n) -> list:
    if isinstance(phase, (list, tuple, np.ndarray)):
        if len(phase) != n:
            raise InputError(
                f"{len(phase)} phases for {n} images: give one phase, or one per image."
            )
        return list(phase)
    return [phase] * n


def extract_features(
    images,
    *,
    phase=1,
    axis: int | str = "x",
    layers: Sequence[str] | None = None,
    weights="normalized",
    input: str = "spanning",
    max_slices: int = MAX_SLICES,
    device: str = "cpu",
) -> np.ndarray:
    """Frozen-trunk features of images or volumes, one row per image (see the module's notes).

    ``images``: one 2D/3D label array or a list of them (sizes may differ); ``phase``: the
    phase of interest (one, or one per image); ``layers``: default :func:`trunk_layers`.
    """
    from .device import resolve_device

    if input not in INPUTS:
        raise InputError(f"Unknown input {input!r}: choose one of {', '.join(INPUTS)}.")
    images = _as_list(images)
    layers = check_layers(layers) if layers is not None else trunk_layers()
    torch_device = resolve_device(device)
    names = [f"image {i + 1}" for i in range(len(images))]
    maps, _, _ = _sample_maps(
        images, _phases(phase, len(images)), axis, input, max_slices, layers, names
    )
    loaded, convs = _convs_for(layers, weights, torch_device)
    return _features_of(maps, convs, loaded.mean_bgr, layers, torch_device)


# --------------------------------------------------------------------------------------------
# Regression and scores
# --------------------------------------------------------------------------------------------


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, alphas: Sequence[float] = RIDGE_ALPHAS
) -> dict:
    """Ridge regression on standardized features, the penalty chosen by leave-one-out CV.

    Returns plain arrays: ``feature_mean``, ``feature_scale``, ``coef``, ``intercept`` and
    ``alpha``; :func:`apply_ridge` predicts with them.
    """
    from sklearn.linear_model import RidgeCV

    x = np.asarray(features, float)
    y = np.asarray(targets, float)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    ridge = RidgeCV(alphas=list(alphas)).fit((x - mean) / scale, y)
    return {
        "feature_mean": mean,
        "feature_scale": scale,
        "coef": np.asarray(ridge.coef_, float),
        "intercept": np.asarray(float(ridge.intercept_)),
        "alpha": np.asarray(float(ridge.alpha_)),
    }


def apply_ridge(arrays: dict, features: np.ndarray) -> np.ndarray:
    """Predictions of a :func:`fit_ridge` result for rows of features."""
    x = (np.asarray(features, float) - arrays["feature_mean"]) / arrays["feature_scale"]
    return x @ arrays["coef"] + float(arrays["intercept"])


def _with_intercept(physics: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(physics), 1)), np.asarray(physics, float)])


def fit_regression(features: np.ndarray, targets: np.ndarray, physics=None) -> dict:
    """:func:`fit_ridge` on the trunk's ``features``; with ``physics`` (rows of physics
    features), least squares on those first (``physics_coef``, the intercept first), and the
    ridge on what they leave."""
    if physics is None:
        return fit_ridge(features, targets)
    design = _with_intercept(physics)
    coef = np.linalg.lstsq(design, np.asarray(targets, float), rcond=None)[0]
    return {**fit_ridge(features, targets - design @ coef), "physics_coef": coef}


def apply_regression(arrays: dict, features: np.ndarray, physics=None) -> np.ndarray:
    """Predictions of a :func:`fit_regression` result."""
    values = apply_ridge(arrays, features)
    if "physics_coef" in arrays:
        values = values + _with_intercept(physics) @ arrays["physics_coef"]
    return values


def scores(targets, predictions) -> dict:
    """R² (1 - residual / total sum of squares), MAE and RMSE of predictions."""
    y = np.asarray(targets, float)
    p = np.asarray(predictions, float)
    residual = float(((y - p) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return {
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
        "mae": float(np.abs(y - p).mean()),
        "rmse": math.sqrt(residual / len(y)),
        "n": len(y),
    }


def _folds(n: int, k: int, seed: int, groups=None) -> list[np.ndarray]:
    """``k`` folds of ``n`` samples at random; with ``groups`` (a label per sample), each
    group whole in one fold, the largest groups first into the smallest fold."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(n), k)]
    labels, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    sizes = np.bincount(inverse)
    members: list[list[int]] = [[] for _ in range(k)]
    filled = np.zeros(k)
    for group in sorted(rng.permutation(len(labels)), key=lambda g: -sizes[g]):
        fold = int(np.argmin(filled))
        members[fold].append(group)
        filled[fold] += sizes[group]
    return [np.flatnonzero(np.isin(inverse, chosen)) for chosen in members]


# --------------------------------------------------------------------------------------------
# Intervals and range
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeCheck:
    """:meth:`PropertyModel.out_of_range`: per image, ``flags`` (True: an extrapolation) and
    ``reasons`` (why, "" where in range)."""

    flags: np.ndarray
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Predictions:
    """:meth:`PropertyModel.predict_intervals`, one entry per image.

    ``values``: the predictions; ``low``, ``high``: the interval at ``coverage`` (NaN and None
    when the model has none; ``note`` says why); ``distance``: the features' distance to the
    training images relative to the training images' median (1: typical; NaN: unknown);
    ``out_of_range`` and ``reasons``: as :class:`RangeCheck`.
    """

    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    coverage: float | None
    distance: np.ndarray
    out_of_range: np.ndarray
    reasons: tuple[str, ...]
    note: str = ""

    def columns(self) -> dict:
        """The columns a table of these predictions shows beside the values: ``low``,
        ``high``, ``coverage``, ``distance``, ``out_of_range``, ``reason``."""
        coverage = np.nan if self.coverage is None else self.coverage
        return {
            "low": self.low,
            "high": self.high,
            "coverage": np.full(len(self.values), coverage),
            "distance": self.distance,
            "out_of_range": self.out_of_range,
            "reason": list(self.reasons),
        }


def _check_coverage(coverage) -> float:
    try:
        value = float(coverage)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:
        raise InputError(
            f"The coverage of an interval is a share between 0 and 1 (0.9: 90 %); got "
            f"{coverage!r}."
        )
    return value


def _neighbour_distance(
    reference: np.ndarray, queries: np.ndarray, k: int, leave_one_out: bool = False
) -> np.ndarray:
    """Per row of ``queries``: the mean Euclidean distance to its ``k`` nearest rows of
    ``reference`` over the square root of the number of features (a root mean square per
    feature); with ``leave_one_out`` the queries are the reference rows, each without itself."""
    r = np.asarray(reference, float)
    q = np.asarray(queries, float)
    squared = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    distances = np.sqrt(np.maximum(squared, 0.0) / r.shape[1])
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    k = max(1, min(k, r.shape[0] - int(leave_one_out)))
    return np.partition(distances, k - 1, axis=1)[:, :k].mean(1)


def _conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The conformal quantile of sorted ``scores``: the ceil((n + 1) coverage)-th smallest
    (infinite when that rank exceeds n: too few scores for this coverage)."""
    rank = math.ceil((len(scores) + 1) * coverage)
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


def _fewest_scores(coverage: float) -> int:
    """The fewest scores that give :func:`_conformal_quantile` a finite value at ``coverage``."""
    n = 1
    while math.ceil((n + 1) * coverage) > n:
        n += 1
    return n


def _calibration(features, targets, out_of_fold, spread=None) -> tuple[dict, dict]:
    """The header's ``trust`` record and the arrays of :meth:`PropertyModel.predict_intervals`
    from the training's standardized features and its cross-validated predictions (NaN where
    a fold did not finish; no intervals without any). ``spread``: a factor per image that
    multiplies its difficulty (the spanning fraction of a model that learns the inverse
    tortuosity); images where it is 0 are predicted exactly and left out of the scores."""
    features = np.asarray(features, np.float32)
    own = _neighbour_distance(features, features, NEIGHBOURS, leave_one_out=True)
    scale = float(np.median(own)) or 1.0
    relative = own / scale
    trust = {
        "features": "standardized features of the training images",
        "neighbours": NEIGHBOURS,
        "distance_scale": scale,
        "distance_floor": DISTANCE_FLOOR,
        "distance_quantile": DISTANCE_QUANTILE,
        "distance_threshold": float(np.quantile(relative, DISTANCE_QUANTILE)),
    }
    arrays = {"neighbour_features": features}
    all_ones = spread is None
    spread = np.ones(len(targets)) if all_ones else np.asarray(spread, float)
    finished = ~np.isnan(out_of_fold) & (spread > 0)
    if finished.any():
        residuals = np.abs(targets[finished] - out_of_fold[finished])
        difficulty = (relative[finished] + DISTANCE_FLOOR) * spread[finished]
        arrays["conformal_scores"] = np.sort(residuals / difficulty)
        trust["intervals"] = (
            "conformal on the cross-validated residuals, each divided by its image's "
            "relative distance to the other training images plus the distance floor"
            + ("" if all_ones else ", times its spanning fraction (images without one left out)")
        )
        trust["coverage"] = COVERAGE
    return trust, arrays


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class PropertyModel:
    """A trained structure-property model: a JSON-ready ``header`` and plain ``arrays``.

    ``header`` holds the property and units, the mode, the trunk layers, the weights (source
    and sha256), the preprocessing (input, phase, axis, scales), ``clip_min``, the training
    metrics (``cross_validation``: r2, mae, rmse, per-fold r2, out-of-fold predictions), the
    training's record (``training``: labels, names, ``ndim``, the phase fractions' range), the
    record of the intervals and the range check (``trust``) and the provenance (seed, device,
    timings, versions). ``arrays``: the regressor (frozen) or the trunk and head parameters
    (finetune), and the standardized training features and the interval's scores.
    """

    header: dict
    arrays: dict = field(repr=False)

    @property
    def property_name(self) -> str:
        return self.header["property"]

    @property
    def metrics(self) -> dict:
        """Cross-validated r2, mae, rmse (empty when trained without cross-validation)."""
        return {
            k: v
            for k, v in self.header.get("cross_validation", {}).items()
            if k in ("r2", "mae", "rmse", "n", "folds")
        }

    def predict(
        self,
        images,
        *,
        phase=None,
        axis: int | str | None = None,
        device: str = "cpu",
        max_slices: int | None = None,
        names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Predict the property of one 2D/3D label array or a list of them (one value each).

        ``phase`` and ``axis`` default to the ones the model was trained with; another axis
        turns the image so that it lies along the model's. Every image must hold phase labels
        (grey images are refused) in which the phase occurs, and have the dimension of the
        training images; ``names`` name the images in messages. :meth:`predict_intervals`
        adds intervals and says which predictions are extrapolations.
        """
        return self._evaluate(images, phase, axis, device, max_slices, names, False)[0]

    def predict_intervals(
        self,
        images,
        *,
        coverage: float | None = None,
        phase=None,
        axis: int | str | None = None,
        device: str = "cpu",
        max_slices: int | None = None,
        names: Sequence[str] | None = None,
    ) -> Predictions:
        """:meth:`predict` with an interval at ``coverage`` (default :data:`COVERAGE`) around
        each prediction and the :meth:`out_of_range` check of each image (see the module's
        notes); a model without intervals gives NaN bounds and says why in ``note``."""
        coverage = _check_coverage(COVERAGE if coverage is None else coverage)
        images = _as_list(images)
        values, features, fractions = self._evaluate(
            images, phase, axis, device, max_slices, names, True
        )
        trust = self.header.get("trust")
        distances = np.full(len(values), np.nan)
        if features is not None:
            reference = self.arrays["neighbour_features"]
            distances = _neighbour_distance(reference, features, trust["neighbours"])
            distances /= trust["distance_scale"]
        low = high = np.full(len(values), np.nan)
        note = ""
        if trust is not None and "conformal_scores" in self.arrays:
            scores = self.arrays["conformal_scores"]
            quantile = _conformal_quantile(scores, coverage)
            half = quantile * (distances + trust["distance_floor"])
            spanning = ""
            if self.header["preprocessing"].get("learns") == "inverse_tortuosity":
                # nothing spans: D_eff is 0 by construction, even where the quantile is not
                half = np.where(fractions > 0, half * np.where(fractions > 0, fractions, 1), 0.0)
                spanning = " with a spanning cluster"
            if math.isinf(quantile):
                note = (
                    f"{len(scores)} cross-validated training images{spanning} are too few for a "
                    f"{coverage:.0%} interval (it needs {_fewest_scores(coverage)}): "
                    "the intervals are unbounded"
                )
            low, high = values - half, values + half
            clip_min = self.header.get("clip_min")
            if clip_min is not None:
                low = np.maximum(low, clip_min)
        else:
            note = (
                "the model has no intervals: "
                + (
                    "it was trained without cross-validation (folds 0)"
                    if trust is not None
                    else "its file predates them"
                )
                + "; train it again with cross-validation to get them"
            )
            coverage = None
        check = self.out_of_range(images, phase=phase, distances=distances)
        return Predictions(
            values, low, high, coverage, distances, check.flags, check.reasons, note
        )

    def check_dimensions(self, images, names: Sequence[str] | None = None) -> None:
        """Refuse, with what to train instead, an image whose dimension differs from the
        training images' (``training.ndim``; 2 for models that predate the record)."""
        images = _as_list(images)
        trained = self.header.get("training", {}).get("ndim", 2)
        for image, name in zip(images, self._names(images, names)):
            ndim = np.ndim(image)
            if ndim == trained:
                continue
            if trained == 2:
                raise InputError(
                    f"The {name} is a 3D volume, but this model was trained on 2D images: it "
                    "cannot see connectivity in 3D. Train a 3D model: build a dataset of "
                    "volumes (`napari-microstructure properties build --size D H W ...`) and "
                    "train on it (`properties train`)."
                )
            raise InputError(
                f"The {name} is {ndim}D, but this model was trained on 3D volumes. Use a 2D "
                "model (`napari-microstructure properties build --generated 300`, then "
                "`properties train`), or give a volume."
            )

    def _evaluate(self, images, phase, axis, device, max_slices, names, with_features):
        """The (clipped) predictions; with ``with_features`` and a model that keeps its
        training features, the images' standardized features (else None); the images' spanning
        fractions."""
        from .decoder import whole_number
        from .device import resolve_device

        prep = self.header["preprocessing"]
        images = _as_list(images)
        layers = self.header["layers"]
        names = self._names(images, names)
        self.check_dimensions(images, names)
        phases = self._phases(images, phase)
        slices = prep["max_slices"]
        if max_slices is not None:
            slices = whole_number(max_slices, "max_slices (slices of a volume per direction)")
        axis = prep["axis"] if axis is None else axis
        learns = prep.get("learns", "property")
        maps, fractions, solves = _sample_maps(
            images,
            phases,
            axis,
            prep["input"],
            slices,
            layers,
            names,
            True,
            _recorded_coarse(prep),
        )
        torch_device = resolve_device(device)
        if self.header["mode"] == "frozen":
            convs, mean_bgr = self._frozen_trunk(torch_device)
            features = _features_of(maps, convs, mean_bgr, layers, torch_device)
            features, physics = _regression_inputs(features, solves, fractions, prep)
            values = apply_regression(self.arrays, features, physics)
            features = (features - self.arrays["feature_mean"]) / self.arrays["feature_scale"]
        else:
            tuned = _FineTuned.from_arrays(self.arrays, layers, torch_device)
            values, features = tuned.predict(maps, with_features=True)
        values = _property_of(values, fractions, learns)
        clip_min = self.header.get("clip_min")
        if clip_min is not None:
            values = np.maximum(values, clip_min)
        keeps = with_features and "neighbour_features" in self.arrays
        return values, (features if keeps else None), fractions

    def out_of_range(self, images, *, phase=None, distances=None) -> RangeCheck:
        """Per image, whether its prediction is an extrapolation, and why: the image is
        constant; its phase fraction lies outside the training images' range
        (``training.volume_fraction_range``); or its feature ``distances`` (relative, from
        :meth:`predict_intervals`; NaN or None: not checked) exceed the training images'
        quantile ``trust.distance_threshold``. Older models check what they record."""
        images = _as_list(images)
        known = self.header.get("training", {}).get("volume_fraction_range")
        trust = self.header.get("trust")
        if distances is None:
            distances = np.full(len(images), np.nan)
        reasons = []
        for image, p, distance in zip(images, self._phases(images, phase), distances):
            array = np.asarray(image)
            fraction = float((array == p).mean())
            why = []
            if array.min() == array.max():
                why.append("a constant image")
            elif known is not None and not known[0] <= fraction <= known[1]:
                why.append(
                    f"phase fraction {fraction:.3g} outside the training images' "
                    f"{known[0]:.3g} to {known[1]:.3g}"
                )
            if trust is not None and distance > trust["distance_threshold"]:
                why.append(
                    f"features far from the training images (distance {distance:.2f}, "
                    f"beyond {trust['distance_threshold']:.2f}, the training images' "
                    f"{trust['distance_quantile']:.0%} quantile)"
                )
            reasons.append("; ".join(why))
        return RangeCheck(np.array([bool(r) for r in reasons], dtype=bool), tuple(reasons))

    def _phases(self, images: list, phase) -> list:
        """The phase of interest of each image: ``phase``, else the model's."""
        trained = self.header["preprocessing"]["phase"]
        if phase is None and trained is None:
            raise InputError(
                "The model was trained on images with different phases of interest: give the "
                "phase."
            )
        return _phases(trained if phase is None else phase, len(images))

    @staticmethod
    def _names(images: list, names) -> list[str]:
        if names is None:
            return [f"image {i + 1}" for i in range(len(images))]
        if len(names) != len(images):
            raise InputError(
                f"{len(images)} images but {len(names)} names: give one name per image, or none."
            )
        return [str(name) for name in names]

    def _frozen_trunk(self, device):
        from .weights import load_weights

        weights = self.header["weights"]
        loaded, convs = _convs_for(self.header["layers"], load_weights(weights["name"]), device)
        if loaded.sha256 != weights["sha256"]:
            raise WeightsError(
                f"The model was trained on weights with sha256 {weights['sha256']}, but {weights['name']!r} "
                f"now loads weights with sha256 {loaded.sha256}: its predictions would be meaningless."
            )
        return convs, loaded.mean_bgr

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model as one ``.npz`` file: the arrays and the header as a JSON string.

        The file is written under a temporary name and renamed at the end, so that an
        interrupted save leaves nothing (or the earlier file, with ``overwrite``) behind."""
        from ..io import atomic_outputs, json_default

        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header = json.dumps(self.header, default=json_default)
        arrays = {f"array/{k}": np.asarray(v) for k, v in self.arrays.items()}
        with (
            atomic_outputs([path], overwrite=overwrite) as staged,
            open(staged[path], "wb") as handle,
        ):
            np.savez(handle, header=np.array(header), **arrays)
        return path


#: What a model file is, for the messages that refuse other files.
_WHAT_A_MODEL_IS = (
    "give a model file (.npz) that `napari-microstructure properties train` or "
    "PropertyModel.save wrote"
)


def _unreadable_model(path: Path, exc: BaseException) -> InputError:
    """The error for a file that numpy cannot read as a model; pickles are named, never loaded."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start[:1] == b"\x80" or (start == b"PK\x03\x04" and "pickle" in str(exc).lower()):
        detail = (
            "it holds pickled Python objects, which are never loaded (loading them could run code)"
        )
    else:
        detail = f"it is not a numpy .npz archive of arrays ({type(exc).__name__})"
    return InputError(
        f"{path} is not a property model written by `properties train`: {detail}; "
        f"{_WHAT_A_MODEL_IS}."
    )


def _expected_arrays(
    mode: str, layers: list[str], physics: str = "none", coarse: dict | None = None
) -> dict:
    """The name and shape of every array that a model of ``mode`` on ``layers`` (with its
    ``physics`` and the ``coarse`` solves it records) needs."""
    width = 2 * sum(layer_channels(name) for name in layers)  # channel means and deviations
    if mode == "frozen":
        width *= len(SCALES)
        columns = 2 * len(coarse["blocks"]) if coarse else 0
        first = {"physics_coef": (columns + 1,)} if physics == "coarse_solve" else {}
        if physics == "coarse_features":
            width += columns
        return {
            "feature_mean": (width,),
            "feature_scale": (width,),
            "coef": (width,),
            "intercept": (),
            "alpha": (),
            **first,
        }
    shapes, channels_in = {}, 3
    plan = LAYER_NAMES[: LAYER_NAMES.index(layers[-1]) + 1]
    for i, name in enumerate(name for name in plan if name.startswith("conv")):
        channels = layer_channels(name)
        shapes[f"conv{i}_weight"] = (channels, channels_in, 3, 3)
        shapes[f"conv{i}_bias"] = (channels,)
        channels_in = channels
    hidden = _FineTuned.HIDDEN
    return {
        **shapes,
        "feature_mean": (width,),
        "feature_scale": (width,),
        "head_w1": (width, hidden),
        "head_b1": (hidden,),
        "head_w2": (hidden, 1),
        "head_b2": (1,),
        "target": (2,),
        "mean_bgr": (3,),
    }


def _valid_coarse(coarse) -> bool:
    """Whether a model's record of its coarse solves can be used."""
    return (
        isinstance(coarse, dict)
        and isinstance(coarse.get("blocks"), list)
        and len(coarse["blocks"]) > 0
        and all(isinstance(b, int) and b >= 1 and not b & (b - 1) for b in coarse["blocks"])
        and isinstance(coarse.get("floor"), (int, float))
        and coarse["floor"] > 0
    )


def _model_problem(header: dict, arrays: dict) -> str | None:
    """What keeps a model with a valid format header from being used, or None."""
    prep, weights, layers = (header.get(k) for k in ("preprocessing", "weights", "layers"))
    if not isinstance(header.get("property"), str):
        return "no property name"
    if header.get("mode") not in MODES:
        return f"an unknown mode {header.get('mode')!r}"
    if not (
        isinstance(layers, list)
        and layers
        and all(isinstance(n, str) and n in LAYER_NAMES for n in layers)
    ):
        return f"no valid trunk layers ({layers!r})"
    if not (
        isinstance(weights, dict) and isinstance(weights.get("name"), str) and "sha256" in weights
    ):
        return "no record of the network weights it was trained with"
    if not (
        isinstance(prep, dict)
        and prep.get("input") in INPUTS
        and "phase" in prep
        and isinstance(prep.get("axis"), (str, int))
        and isinstance(prep.get("max_slices"), int)
        and prep["max_slices"] >= 1
        and prep.get("learns", "property") in LEARNS[1:]
        and prep.get("physics", "none") in PHYSICS[1:]
    ):
        return "no valid preprocessing (input, phase, axis, max_slices, learns, physics)"
    physics = prep.get("physics", "none")
    coarse = _recorded_coarse(prep)
    if physics != "none" and not _valid_coarse(coarse):
        return f"no valid record of its coarse solves ({coarse!r})"
    if physics != "coarse_solve" and "physics_coef" in arrays:
        return "coefficients of coarse solves first (physics_coef) in a model without them"
    if header.get("clip_min") is not None and not isinstance(header["clip_min"], (int, float)):
        return f"a clip_min that is not a number ({header['clip_min']!r})"
    for name, shape in _expected_arrays(header["mode"], layers, physics, coarse).items():
        if name not in arrays:
            return f"no array {name!r}"
        array = arrays[name]
        if array.dtype.kind != "f" or array.shape != shape:
            return (
                f"an array {name!r} of shape {array.shape} and dtype {array.dtype} where "
                f"float {shape} is needed"
            )
        if not np.isfinite(array).all():
            return f"values in the array {name!r} that are not finite"
    if not (arrays["feature_scale"] > 0).all():
        return "feature scales that are not positive"
    training = header.get("training")
    if isinstance(training, dict) and training.get("ndim", 2) not in (2, 3):
        return f"a training dimension that is neither 2 nor 3 ({training.get('ndim')!r})"
    return _trust_problem(header.get("trust"), arrays)


def _trust_problem(trust, arrays: dict) -> str | None:
    """What is wrong with a model's record of its intervals and range, or None (also when it
    has none: a file that predates them)."""
    if trust is None:
        return None
    numbers = (
        "neighbours",
        "distance_scale",
        "distance_floor",
        "distance_quantile",
        "distance_threshold",
    )
    if not (
        isinstance(trust, dict)
        and all(isinstance(trust.get(k), (int, float)) for k in numbers)
        and trust["neighbours"] >= 1
        and trust["distance_scale"] > 0
        and trust["distance_floor"] > 0
    ):
        return f"no valid record of its training features' distances ({', '.join(numbers)})"
    width = arrays["feature_mean"].shape
    needed = {"neighbour_features": 2, **({"conformal_scores": 1} if "intervals" in trust else {})}
    for name, ndim in needed.items():
        array = arrays.get(name)
        if array is None:
            return f"no array {name!r}"
        if array.dtype.kind != "f" or array.ndim != ndim or array.shape[0] < 1:
            return f"an array {name!r} of shape {array.shape} and dtype {array.dtype}"
        if not np.isfinite(array).all():
            return f"values in the array {name!r} that are not finite"
    if arrays["neighbour_features"].shape[1:] != width:
        return "training features of another width than the model's"
    return None


def load_model(path: str | os.PathLike) -> PropertyModel:
    """Read a model written by :meth:`PropertyModel.save` (arrays only: nothing is unpickled).

    Every array that the model's mode needs is checked (names, shapes, finite values), so that
    a damaged or hand-made file is refused here with a reason, never in the middle of a
    prediction.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: {_WHAT_A_MODEL_IS}.")
    if not path.is_file():
        raise InputError(f"{path} does not exist: give the path of a property model (.npz).")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - not a zip or npy, damaged, or a pickle
        raise _unreadable_model(path, exc) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(
            f"{path} holds a single numpy array, not a property model: {_WHAT_A_MODEL_IS}."
        )
    with archive:
        if "header" not in archive.files:
            raise InputError(
                f"{path} is not a property model: it has no header; {_WHAT_A_MODEL_IS}."
            )
        try:
            header = json.loads(str(archive["header"]))
            arrays = {
                k.split("/", 1)[1]: archive[k] for k in archive.files if k.startswith("array/")
            }
        except Exception as exc:  # noqa: BLE001 - damaged members, pickled objects, not JSON
            raise _unreadable_model(path, exc) from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise InputError(
            f"{path} is not a property model (format {header.get('format') if isinstance(header, dict) else None!r})."
        )
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise InputError(
            f"{path} is not a usable property model: its format version is {version!r}."
        )
    if version > MODEL_VERSION:
        raise InputError(
            f"{path} was written by a newer version (model format {version}); update "
            "napari-microstructure."
        )
    prep = header.get("preprocessing")
    if (
        version < COARSE_FACES_VERSION
        and isinstance(prep, dict)
        and prep.get("physics", "none") != "none"
    ):
        raise InputError(
            f"{path} was trained on the coarse solves of an earlier version (averaged blocks), "
            "which this version no longer makes: train the model again (`properties train`)."
        )
    problem = _model_problem(header, arrays)
    if problem is not None:
        raise InputError(
            f"{path} is not a usable property model: it has {problem}. The file is damaged or "
            f"was not written by `properties train`: {_WHAT_A_MODEL_IS}, or train the model "
            "again."
        )
    return PropertyModel(header, arrays)


def predict(model: PropertyModel | str | os.PathLike, images, **options) -> np.ndarray:
    """Predict with a model or a model file; see :meth:`PropertyModel.predict`."""
    model = model if isinstance(model, PropertyModel) else load_model(model)
    return model.predict(images, **options)


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


class _FineTuned:
    """Trunk (trainable copies of the conv layers) + head: statistics -> 32 -> 1."""

    HIDDEN = 32

    def __init__(
        self,
        convs,
        mean_bgr,
        layers,
        feature_mean,
        feature_scale,
        head,
        target_mean,
        target_scale,
        device,
    ):
        import torch

        self.layers, self.device = layers, device
        self.mean_bgr = tuple(float(m) for m in mean_bgr)
        self.convs = [
            (w.clone().to(device).requires_grad_(True), b.clone().to(device).requires_grad_(True))
            for w, b in convs
        ]
        self.feature_mean = torch.as_tensor(feature_mean, dtype=torch.float32, device=device)
        self.feature_scale = torch.as_tensor(feature_scale, dtype=torch.float32, device=device)
        self.head = [
            torch.as_tensor(a, dtype=torch.float32, device=device).clone().requires_grad_(True)
            for a in head
        ]
        self.target_mean, self.target_scale = float(target_mean), float(target_scale)

    def parameters(self):
        return [t for pair in self.convs for t in pair], self.head

    def forward(self, maps_per_sample):
        """Standardized predictions, one per sample (each a list of (n, H, W) arrays)."""
        return self.head_of(self.standardized(maps_per_sample))

    def head_of(self, x):
        """The head's standardized predictions of standardized statistics ``x``."""
        import torch

        w1, b1, w2, b2 = self.head
        return (torch.relu(x @ w1 + b1) @ w2 + b2).squeeze(-1)

    def standardized(self, maps_per_sample):
        """The trunk's standardized statistics, one row per sample."""
        import torch

        rows = []
        for groups in maps_per_sample:
            stats = [
                _statistics(
                    torch.from_numpy(g[:, None]).to(self.device),
                    self.convs,
                    self.mean_bgr,
                    self.layers,
                    (1,),
                )
                for g in groups
            ]
            rows.append(torch.cat(stats).mean(0))
        return (torch.stack(rows) - self.feature_mean) / self.feature_scale

    def predict(self, maps_per_sample, with_features: bool = False):
        """Predictions of the samples; with ``with_features``, also their standardized
        statistics (a pair)."""
        import torch

        values, features = [], []
        with torch.inference_mode():
            for i in range(0, len(maps_per_sample), BATCH):
                x = self.standardized(maps_per_sample[i : i + BATCH])
                values.append(self.head_of(x).cpu().numpy())
                features.append(x.double().cpu().numpy())
        values = np.concatenate(values).astype(float) * self.target_scale + self.target_mean
        return (values, np.concatenate(features)) if with_features else values

    def to_arrays(self) -> dict:
        arrays = {}
        for i, (w, b) in enumerate(self.convs):
            arrays[f"conv{i}_weight"] = w.detach().cpu().numpy()
            arrays[f"conv{i}_bias"] = b.detach().cpu().numpy()
        for name, tensor in zip(("head_w1", "head_b1", "head_w2", "head_b2"), self.head):
            arrays[name] = tensor.detach().cpu().numpy()
        arrays.update(
            feature_mean=self.feature_mean.cpu().numpy(),
            feature_scale=self.feature_scale.cpu().numpy(),
            target=np.array([self.target_mean, self.target_scale]),
            mean_bgr=np.array(self.mean_bgr),
        )
        return arrays

    @classmethod
    def from_arrays(cls, arrays, layers, device):
        import torch

        convs = [
            (
                torch.from_numpy(np.array(arrays[f"conv{i}_weight"], np.float32)),
                torch.from_numpy(np.array(arrays[f"conv{i}_bias"], np.float32)),
            )
            for i in range(_conv_count(layers))
        ]
        head = [arrays[k] for k in ("head_w1", "head_b1", "head_w2", "head_b2")]
        target = arrays["target"]
        return cls(
            convs,
            arrays["mean_bgr"],
            layers,
            arrays["feature_mean"],
            arrays["feature_scale"],
            head,
            target[0],
            target[1],
            device,
        )


def _finetune_steps(
    maps,
    targets,
    convs,
    mean_bgr,
    layers,
    device,
    seed,
    epochs,
    patience,
    learning_rate,
    validation,
):
    """Train trunk + head with Adam, early stopping on a validation split: a generator of
    ``(epoch, train_loss, val_loss)`` that returns the arrays of the best epoch, the history
    and whether it was stopped; send ``"stop"`` to end after the current epoch."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(maps)
    order = rng.permutation(n)
    n_val = max(1, round(validation * n)) if n >= 4 else 0
    val, fit = order[:n_val], order[n_val:]
    y = np.asarray(targets, float)
    stats = _features_of([maps[i] for i in fit], convs, mean_bgr, layers, device)
    # the head sees the full-size statistics only (the first half of the frozen features)
    stats = stats[:, : stats.shape[1] // len(SCALES)]
    scale = stats.std(0)
    scale[scale < 1e-12] = 1.0
    y_mean, y_scale = float(y[fit].mean()), float(y[fit].std() or 1.0)
    generator = torch.Generator().manual_seed(seed)
    width = stats.shape[1]
    head = [
        torch.randn(width, _FineTuned.HIDDEN, generator=generator) * math.sqrt(2.0 / width),
        torch.zeros(_FineTuned.HIDDEN),
        torch.randn(_FineTuned.HIDDEN, 1, generator=generator)
        * math.sqrt(1.0 / _FineTuned.HIDDEN),
        torch.zeros(1),
    ]
    model = _FineTuned(
        convs, mean_bgr, layers, stats.mean(0), scale, head, y_mean, y_scale, device
    )
    trunk, head_params = model.parameters()
    optimizer = torch.optim.Adam(
        [
            {"params": trunk, "lr": learning_rate * TRUNK_LEARNING_RATE},
            {"params": head_params, "lr": learning_rate},
        ]
    )
    target = torch.as_tensor((y - y_mean) / y_scale, dtype=torch.float32, device=device)
    best, best_arrays, history, waited = math.inf, model.to_arrays(), [], 0
    stopped = False
    for epoch in range(epochs):
        rng.shuffle(fit)
        losses = []
        for start in range(0, len(fit), BATCH):
            batch = fit[start : start + BATCH]
            optimizer.zero_grad()
            loss = torch.mean((model.forward([maps[i] for i in batch]) - target[batch]) ** 2)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()) * len(batch))
        train_loss = sum(losses) / len(fit)
        if n_val:
            with torch.inference_mode():
                val_loss = float(
                    torch.mean((model.forward([maps[i] for i in val]) - target[val]) ** 2)
                )
        else:
            val_loss = train_loss
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best:
            best, best_arrays, waited = val_loss, model.to_arrays(), 0
        else:
            waited += 1
        stopped = (yield epoch + 1, train_loss, val_loss) == STOP
        if stopped or waited >= patience:
            break
    return best_arrays, history, stopped


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """The options of :func:`train_steps`; picklable."""

    property: str = option("D_eff_x", "the property to learn (a column of the labels)")
    units: str = option("", "units of the property, for the record and the plot")
    mode: str = option(
        "frozen",
        "frozen: the pretrained trunk's features into ridge regression; finetune: train it",
        choices=MODES,
    )
    depth: str | int | None = option(
        None, "the trunk's deepest layer or depth (None: a profile's recommendation, or pool2)"
    )
    weights: str = option(
        "normalized", "normalized (pretrained), random (the control), or a weights file"
    )
    phase: int | tuple = option(1, "the phase of interest (a list: one per image)")
    axis: int | str = option("x", "the transport axis ('x' is the last axis)")
    input: str = option(
        "spanning",
        "spanning: the phase's clusters that span the axis; phase: the whole phase",
        choices=INPUTS,
    )
    learns: str = option(
        "auto",
        "what the regression learns: inverse_tortuosity (D_eff over the spanning clusters' "
        "fraction), property (the value), auto (the first for D_eff_*)",
        choices=LEARNS,
    )
    physics: str = option(
        "auto",
        "physics in the regression, from D_eff of coarse copies of the spanning clusters: "
        "coarse_solve (fitted first, the trunk's features learn the rest), coarse_features "
        "(beside the trunk's features), none, auto (coarse_solve for D_eff_* in frozen mode)",
        choices=PHYSICS,
    )
    folds: int = option(5, "k of the k-fold cross-validation (0: none)", low=0, high=100)
    seed: int = option(0, "random seed of the folds and the fine-tuning", low=0)
    device: str = option("auto", "where torch computes: auto, cpu, cuda, cuda:N or mps")
    max_slices: int = option(
        MAX_SLICES, "slices of a 3D volume per direction (evenly spaced)", low=1, high=1024
    )
    epochs: int = option(40, "fine-tuning: the most epochs", low=1, high=10_000)
    patience: int = option(
        6, "fine-tuning: epochs without improvement before it stops", low=1, high=1_000
    )
    learning_rate: float = option(
        1e-3, "fine-tuning: the head's learning rate", low=1e-6, high=1.0
    )
    validation: float = option(
        0.2, "fine-tuning: the share of samples held out to choose the epoch", low=0.0, high=0.9
    )


@dataclass(frozen=True)
class TrainProgress:
    """A step of :func:`train_steps`.

    ``stage``: ``"features"`` (``done`` of ``total`` slices through the frozen trunk),
    ``"fold"`` (cross-validation fold ``fold`` of ``n_folds`` finished, ``r2`` of that fold),
    ``"epoch"`` (fine-tuning: ``epoch``, ``train_loss``, ``val_loss`` standardized MSE, in
    fold ``fold``, 0 for the final fit) or ``"fit"`` (the final model is fitted).
    """

    stage: str
    done: int
    total: int
    elapsed: float
    fold: int = 0
    n_folds: int = 0
    epoch: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    r2: float | None = None

    @property
    def fraction_done(self) -> float:
        """The share of the current stage done (of the features, of the folds, of the epochs
        planned in a fine-tuning)."""
        return self.done / max(self.total, 1)

    @property
    def finished(self) -> bool:
        """Whether this message ends a unit of the training: a fold, or the final fit."""
        return self.stage in ("fold", "fit")

    def describe(self) -> str:
        """One line: the stage, where it is, and the time."""
        if self.stage == "features":
            return f"features of {self.done}/{self.total} slices · {timing(self)}"
        if self.stage == "fold":
            return f"fold {self.fold}/{self.n_folds}: R² {self.r2:.3f} · {self.elapsed:.0f} s"
        if self.stage == "epoch":
            where = f"fold {self.fold}/{self.n_folds}" if self.fold else "final fit"
            return (
                f"{where}, epoch {self.epoch}/{self.total}: train {self.train_loss:.4f}, "
                f"validation {self.val_loss:.4f} · {self.elapsed:.0f} s"
            )
        return f"final model fitted · {self.elapsed:.0f} s"


def check_training_options(options: TrainOptions | None = None, **changes) -> dict:
    """The options of :func:`train_steps` checked, whole numbers as ints, or InputError saying
    what to do: it runs before any data are read or any work starts."""
    from .decoder import check_learning_rate, check_seed, whole_number

    options = merge(TrainOptions, options, changes)
    mode, folds, validation = options.mode, options.folds, options.validation
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}: choose one of {', '.join(MODES)}.")
    if options.input not in INPUTS:
        raise InputError(f"Unknown input {options.input!r}: choose one of {', '.join(INPUTS)}.")
    learns = _check_learns(options.learns)
    physics = _check_physics(options.physics, mode)
    folds = whole_number(folds, "folds (k of the k-fold cross-validation)", 0)
    if folds == 1:
        raise InputError("folds must be 0 (no cross-validation) or at least 2; got 1.")
    try:
        validation_share = float(validation)
    except (TypeError, ValueError):
        validation_share = math.nan
    if not 0.0 <= validation_share < 1.0:
        raise InputError(
            f"validation (the share of samples held out) must be from 0 to below 1; got "
            f"{validation!r}."
        )
    return {
        "mode": mode,
        "input": options.input,
        "learns": learns,
        "physics": physics,
        "folds": folds,
        "seed": check_seed(options.seed),
        "epochs": whole_number(options.epochs, "epochs (the most epochs of fine-tuning)", 1),
        "patience": whole_number(
            options.patience, "patience (epochs without improvement to stop)", 1
        ),
        "learning_rate": check_learning_rate(options.learning_rate),
        "validation": validation_share,
        "max_slices": whole_number(
            options.max_slices, "max_slices (slices of a volume per direction)", 1
        ),
    }


def _check_targets(targets, n_images: int, names) -> np.ndarray:
    """The labels as a float array, one per image, finite and small enough that their squares
    (which the regression and the scores sum) do not overflow; InputError otherwise."""
    try:
        y = np.asarray(targets, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"The labels must be numbers, one per image ({exc}).") from None
    if len(y) != n_images:
        raise InputError(f"{n_images} images but {len(y)} labels: give one label per image.")
    if names is not None and len(names) != n_images:
        raise InputError(
            f"{n_images} images but {len(names)} names: give one name per image, or none."
        )
    if not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        name = names[bad] if names is not None else f"image {bad + 1}"
        raise InputError(
            f"Label {bad + 1} ({name}) is {y[bad]}: labels must be finite numbers (tau is "
            "infinite where a phase is blocked: train on D_eff instead)."
        )
    if len(y) < 3:
        raise InputError(
            f"At least 3 labelled images are needed to train a model; {len(y)} given."
        )
    with np.errstate(over="ignore", invalid="ignore"):
        spread = float(np.sum((y - y.mean()) ** 2))
    if not math.isfinite(spread):
        raise InputError(
            f"The labels are too large to train on (they reach {np.abs(y).max():.3g}; their "
            "squares overflow): rescale them, e.g. give them in other units."
        )
    if np.ptp(y) == 0:
        raise InputError("Every label has the same value: there is nothing to learn.")
    return y


def train_steps(
    images,
    targets,
    options: TrainOptions | None = None,
    *,
    profile=None,
    names: Sequence[str] | None = None,
    groups: Sequence | None = None,
    **changes,
) -> Generator[TrainProgress, str | None, PropertyModel | None]:
    """Train a model of ``property`` on images and their labels, with ``folds``-fold CV.

    Parameters
    ----------
    images : list of 2D/3D label arrays (sizes may differ). targets : one number per image.
    options : :class:`TrainOptions`, optional
        The training's options (the defaults when None); ``changes`` given as keywords replace
        single fields (``train_steps(images, targets, mode="finetune", folds=0)``).
    profile : a pruning profile (or its file) whose recommended depth is the trunk, when
        ``options.depth`` is None.
    names : one name per image, for the record.
    groups : one label per image: images of one label fall in the same cross-validation fold
        (crops of one micrograph), so that the cross-validated scores, and the intervals
        calibrated on them, measure the error on new regions rather than on overlapping
        neighbours (:func:`~.datasets.sample_groups`).

    Yields :class:`TrainProgress`; send ``"stop"`` to end early: the remaining folds are
    skipped (the metrics cover the finished folds) and the final model is fitted; in the final
    fine-tuning, the best epoch so far is kept. Stopped while computing features, it returns
    None. Every input is checked when this function is called.
    """
    from .device import resolve_device

    options = merge(TrainOptions, options, changes)
    units, mode, depth = options.units, options.mode, options.depth
    weights, phase, axis = options.weights, options.phase, options.axis
    device = options.device
    checked = check_training_options(options)
    folds, seed, max_slices = checked["folds"], checked["seed"], checked["max_slices"]
    epochs, patience = checked["epochs"], checked["patience"]
    learning_rate, validation = checked["learning_rate"], checked["validation"]
    images = _as_list(images)
    y = _check_targets(targets, len(images), names)
    if folds > len(y):
        raise InputError(
            f"{folds}-fold cross-validation needs at least {folds} labelled images; {len(y)} "
            "given: choose fewer folds (0 for none)."
        )
    if groups is not None:
        groups = [str(g) for g in groups]
        if len(groups) != len(y):
            raise InputError(f"{len(y)} images but {len(groups)} groups: give one group each.")
        if folds > len(set(groups)):
            raise InputError(
                f"{folds}-fold cross-validation needs at least {folds} groups of images; "
                f"{len(set(groups))} given: choose fewer folds."
            )
    layers = trunk_layers(depth, profile)
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    ndim = _training_dimension(images, names)
    phases = _phases(phase, len(images))
    physics = _resolve_physics(checked["physics"], str(options.property), mode)
    coarse = _coarse_settings(physics)
    maps, spanning_fractions, solves = _sample_maps(
        images, phases, axis, options.input, max_slices, layers, names, coarse=coarse
    )
    fractions = [float((np.asarray(image) == p).mean()) for image, p in zip(images, phases)]
    torch_device = resolve_device(device)
    loaded, convs = _convs_for(layers, weights, torch_device)
    single_phase = (
        phases[0] if all(p == phases[0] for p in phases) else None
    )  # None: give it to predict
    if isinstance(single_phase, np.generic):
        single_phase = single_phase.item()
    axis_label = AXIS_NAMES[ndim][axis_index(axis, ndim)]
    header = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "property": options.property,
        "units": units,
        "mode": mode,
        "layers": layers,
        "depth": layers[-1],
        "weights": {
            "name": str(weights)
            if isinstance(weights, (str, os.PathLike))
            else loaded.path or loaded.source,
            **describe(loaded),
        },
        "preprocessing": {
            "input": options.input,
            "phase": single_phase,
            "axis": axis_label,
            "scales": list(SCALES) if mode == "frozen" else [1],
            "statistics": "square roots of channel means and standard deviations",
            "max_slices": max_slices,
            "learns": _resolve_learns(checked["learns"], str(options.property), ndim),
            "physics": physics,
            **({"coarse": coarse} if coarse is not None else {}),
        },
        "clip_min": 0.0 if (y >= 0).all() else None,
        "training": {
            "n_samples": len(y),
            "ndim": ndim,
            "seed": seed,
            "folds": folds,
            **({"groups": groups} if groups is not None else {}),
            "names": names,
            "targets": y.tolist(),
            "volume_fraction_range": [min(fractions), max(fractions)],
            **(
                {
                    "epochs": epochs,
                    "patience": patience,
                    "learning_rate": learning_rate,
                    "validation": validation,
                }
                if mode == "finetune"
                else {"alphas": list(RIDGE_ALPHAS)}
            ),
        },
    }
    return _train(
        maps,
        spanning_fractions,
        solves,
        y,
        header,
        convs,
        loaded.mean_bgr,
        layers,
        torch_device,
        folds,
        seed,
    )


def _training_dimension(images: list, names: list) -> int:
    """The dimension shared by every training image (2 or 3); InputError for a mixture."""
    ndims = [np.ndim(image) for image in images]
    if any(n != ndims[0] for n in ndims):
        other = next(i for i, n in enumerate(ndims) if n != ndims[0])
        raise InputError(
            f"{names[0]} is {ndims[0]}D but {names[other]} is {ndims[other]}D: a model learns "
            "from 2D images or from 3D volumes; train one model on each."
        )
    return ndims[0]


def _train(maps, fractions, solves, y, header, convs, mean_bgr, layers, device, folds, seed):
    started, cpu_started = time.perf_counter(), time.process_time()
    frozen = header["mode"] == "frozen"
    clip_min = header["clip_min"]
    settings = header["training"]
    learns = header["preprocessing"]["learns"]
    learnt = _learnt(y, fractions, learns)
    physics = None  # the columns fitted first, once the features are known

    def rows(indices):
        return None if physics is None else physics[indices]

    def elapsed():
        return time.perf_counter() - started

    def prediction(values, indices):
        values = _property_of(values, fractions[indices], learns)
        return np.maximum(values, clip_min) if clip_min is not None else values

    def finetune(indices, fold):
        steps = _finetune_steps(
            [maps[i] for i in indices],
            learnt[indices],
            convs,
            mean_bgr,
            layers,
            device,
            seed + fold,
            settings["epochs"],
            settings["patience"],
            settings["learning_rate"],
            settings["validation"],
        )
        return relay(
            steps,
            lambda item: TrainProgress(
                "epoch", item[0], settings["epochs"], elapsed(), fold, folds, *item
            ),
        )

    features = None
    if frozen:
        features = yield from relay(
            _feature_batches(maps, convs, mean_bgr, layers, device),
            lambda item: TrainProgress("features", item[0], item[1], elapsed(), 0, folds),
        )
        if features is None:
            return None
        features, physics = _regression_inputs(
            features, solves, fractions, header["preprocessing"]
        )
    feature_seconds = elapsed()

    out_of_fold = np.full(len(y), np.nan)
    fold_r2: list[float] = []
    stopped = False
    groups = settings.get("groups")
    for fold, test in enumerate(_folds(len(y), folds, seed, groups) if folds else [], start=1):
        fit = np.setdiff1d(np.arange(len(y)), test)
        if frozen:
            fitted = fit_regression(features[fit], learnt[fit], rows(fit))
            out_of_fold[test] = prediction(
                apply_regression(fitted, features[test], rows(test)), test
            )
        else:
            arrays, _history, stopped = yield from finetune(fit, fold)
            out_of_fold[test] = prediction(
                _FineTuned.from_arrays(arrays, layers, device).predict([maps[i] for i in test]),
                test,
            )
        fold_r2.append(scores(y[test], out_of_fold[test])["r2"] if len(test) > 1 else float("nan"))
        command = yield TrainProgress("fold", fold, folds, elapsed(), fold, folds, r2=fold_r2[-1])
        if stopped or command == STOP:
            stopped = True
            break
    cv_seconds = elapsed() - feature_seconds

    history: list = []
    if frozen:
        arrays = fit_regression(features, learnt, physics)
        standardized = (features - arrays["feature_mean"]) / arrays["feature_scale"]
    else:
        arrays, history, final_stopped = yield from finetune(np.arange(len(y)), 0)
        stopped = stopped or final_stopped
        tuned = _FineTuned.from_arrays(arrays, layers, device)
        standardized = tuned.predict(maps, with_features=True)[1]
    header = dict(header)
    spread = fractions if learns == "inverse_tortuosity" else None
    header["trust"], calibration = _calibration(standardized, y, out_of_fold, spread)
    finished = ~np.isnan(out_of_fold)
    if finished.any():
        header["cross_validation"] = {
            **scores(y[finished], out_of_fold[finished]),
            "folds": folds,
            "finished_folds": len(fold_r2),
            "fold_r2": fold_r2,
            "predictions": [None if np.isnan(v) else float(v) for v in out_of_fold],
        }
    _check_finite(header.get("cross_validation"), y[finished], arrays)
    arrays = {**arrays, **calibration}
    header["training"] = {
        **settings,
        **({"alpha": float(arrays["alpha"])} if frozen else {"history": history}),
    }
    header["provenance"] = {
        "device": str(device),
        "partial": stopped,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "timings": {
            "feature_seconds": feature_seconds,
            "cross_validation_seconds": cv_seconds,
            "total_seconds": elapsed(),
            "cpu_seconds": time.process_time() - cpu_started,
        },
        **_versions(),
    }
    yield TrainProgress("fit", 1, 1, elapsed(), 0, folds)
    return PropertyModel(header, arrays)


def _check_finite(cross_validation: dict | None, targets: np.ndarray, arrays: dict) -> None:
    """Refuse a model whose cross-validated metrics or parameters are not finite numbers (R² is
    undefined, and may be NaN, only where the cross-validated labels are all equal)."""
    bad = []
    if cross_validation is not None:
        undefined_r2 = np.ptp(targets) == 0
        bad = [
            f"{k} {cross_validation[k]}"
            for k in ("r2", "mae", "rmse")
            if not math.isfinite(cross_validation[k]) and not (k == "r2" and undefined_r2)
        ]
    if not all(np.isfinite(np.asarray(v, float)).all() for v in arrays.values()):
        bad.append("parameters that are not finite")
    if bad:
        raise InputError(
            f"Training gave {', '.join(bad)}: the labels are too large or too spread for this "
            "model. Rescale them (e.g. other units) and train again; no model was made."
        )


def _versions() -> dict:
    """:func:`~.provenance.environment` with scikit-learn's version (the ridge's library)."""
    import sklearn

    return {**environment(), "scikit_learn": sklearn.__version__}


def train(
    images,
    targets,
    options: TrainOptions | None = None,
    callback: Callable[[TrainProgress], object] | None = None,
    **changes,
) -> PropertyModel | None:
    """Run :func:`train_steps` to the end; ``callback`` gets every message and may return
    ``"stop"``."""
    return run_to_end(train_steps(images, targets, options, **changes), callback)
