"""Decoding Gram matrices into new microstructures (Li et al. 2018, after Gatys et al. 2015).

Start from random noise of the wanted size and minimize the difference between its Gram
matrices and the micrograph's, then restore the micrograph's phases and their exact fractions.
The work is a generator of :class:`Progress` messages that returns a :class:`Reconstruction`;
:func:`reconstruct` runs it to the end. Sending ``"stop"`` into the generator ends it after the
current step with the partial result; closing it abandons the run.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._optimize import (
    LBFGS_HISTORY,
    OPTIMIZERS,
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
    take_step,
)
from ._validate import validate_image
from .descriptors import GramLoss, check_terms, two_point_term
from .device import free_memory_bytes, resolve_device
from .encoder import LAYER_NAMES, check_layers, get_encoder, layer_channels, min_input_size
from .errors import InputError, MemoryBudgetError
from .options import merge, option
from .phases import (
    ImageModel,
    describe_image,
    phase_colours,
    small_inner_clusters,
    to_colour,
)
from .polish import PolishRound, polish_images
from .provenance import environment
from .steps import STOP, describe_step, run_to_end
from .transport import DEFAULT_WEIGHT as TRANSPORT_WEIGHT
from .transport import image_targets, micrograph_diffusivities, transport_term
from .weights import load_weights

#: Gram layers: below both floors; pool3 costs 2.5x, no gain (docs/measurements/reconstruction.md)
DEFAULT_LAYERS: tuple[str, ...] = ("conv1_1", "pool1", "pool2")
#: Steps over all levels; 450 gave no better fidelity (docs/measurements/reconstruction.md)
DEFAULT_ITERATIONS = 300
#: Coarse-to-fine levels; coarse ones keep networks whole (docs/measurements/reconstruction.md)
DEFAULT_LEVELS = 4
#: Finest level's share of a coarse one's steps: 40 % faster (docs/measurements/reconstruction.md)
FINEST_LEVEL_WEIGHT = 0.4
#: Islands under this size (and the micrograph's) are removed (docs/measurements/reconstruction.md)
MAX_ISLAND = 8
#: Most levels a run may ask for: a bound against typos (docs/measurements/reconstruction.md)
MAX_LEVELS = 16
#: Seeds run from 0 to this (2**63 - 1): the range that torch's and numpy's generators share.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Progress:
    """One optimizer step: where the run is, its loss and time, and sometimes a preview."""

    iteration: int  # steps done so far, over all levels
    total: int  # steps planned, over all levels
    loss: float  # mean loss per sample after this step
    elapsed: float  # seconds since the run started
    level: int  # resolution level, 0 = coarsest
    n_levels: int
    preview: np.ndarray | None = None  # the first sample now, at its current resolution

    @property
    def fraction_done(self) -> float:
        return self.iteration / max(self.total, 1)

    def describe(self) -> str:
        """One line: the step, the level, the loss and the time."""
        return describe_step(self)


@dataclass
class Reconstruction:
    """Reconstructed microstructures and how they were made."""

    images: np.ndarray  # (samples, H, W), labels in the micrograph's values or grey levels
    model: ImageModel
    loss_history: list[float]  # mean loss per sample after each step
    final_loss: list[float]  # loss of each sample at the end
    partial: bool  # stopped before the planned budget
    provenance: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkOptions:
    """The options every reconstruction shares, 2D and 3D (:class:`ReconstructionOptions`,
    :class:`~napari_microstructure.core.volume.VolumeOptions`)."""

    layers: tuple[str, ...] | str = option(
        DEFAULT_LAYERS,
        "VGG19 layers whose Gram matrices are matched (names, or one string: 'conv1_1,pool2')",
    )
    iterations: int = option(
        DEFAULT_ITERATIONS, "optimizer steps over all resolution levels", low=1, high=100_000
    )
    levels: int = option(
        DEFAULT_LEVELS,
        "coarse-to-fine resolution levels, each twice the size of the one before "
        "(1 = full size only; levels too small for the layers are dropped)",
        low=1,
        high=MAX_LEVELS,
    )
    optimizer: str = option("lbfgs", "lbfgs (with a line search) or adam", choices=OPTIMIZERS)
    learning_rate: float = option(0.1, "Adam's step (lbfgs ignores it)", low=1e-4, high=10.0)
    layer_weights: Mapping | None = option(
        None, "{layer: weight} for layers of this run, each 0 or more (a layer left out weighs 1)"
    )
    periodic: bool = option(False, "make outputs that tile seamlessly (circular padding)")
    kind: str = option("auto", "phase labels or grey levels", choices=("auto", "labels", "grey"))
    seed: int = option(
        0, "random seed: the same seed and options give the same result", low=0, high=MAX_SEED
    )
    device: str = option(
        "auto", "where torch computes: auto picks CUDA, then Apple MPS, then the CPU"
    )
    weights: str = option(
        "normalized",
        "network weights: normalized (the VGG19 of Li et al.), torchvision, random (plumbing "
        "tests only), or the path of a weights file",
    )
    max_island: int = option(
        MAX_ISLAND,
        "islands of a phase smaller than this (and than the micrograph's own clusters) join "
        "the surrounding phase; 0 keeps every island",
        low=0,
        high=10_000,
    )
    preview_interval: float | None = option(
        None, "seconds between previews in the progress messages (None: no previews)", low=0
    )
    #: Off: on the alloy it fixed D_eff (-23 % -> -6 %) but cost 3.1x the time and split the
    #: boundary network a little (largest cluster 0.94); ``keep_transport`` keeps D_eff for
    #: seconds (docs/measurements/transport.md).
    transport: bool = option(
        False,
        "keep the micrograph's effective diffusivity (D_eff) of every phase that spans it, "
        "along each axis, with a differentiable transport term in the loss",
    )
    transport_weight: float = option(
        TRANSPORT_WEIGHT, "weight of the transport term beside the Gram loss", low=0.0, high=1e3
    )
    two_point_weight: float = option(
        0.0,
        "weight of the two-point term beside the Gram loss: each phase's autocovariance C(r) "
        "of the samples against the micrograph's, at the finest level (0: no term)",
        low=0.0,
        high=1e4,
    )
    target_deff: tuple = option(
        (),
        "design targets ((phase, axis, value), ...): a phase's D_eff along an axis (y, x), a "
        "number or a factor of the micrograph's own written 0.5x; they replace the transport "
        "term's own targets",
    )
    #: On: without it the alloy's boundary network lost 21-33 % of its D_eff along one axis (five
    #: seeds); with it every D_eff of the benchmark came within 6.5 %, the repair taking 0.2-3 s
    #: at 256x256 on two cores, e_S2 as low as before (docs/measurements/transport.md,
    #: "Restoring D_eff after the rounding").
    keep_transport: bool = option(
        True,
        "after the rounding to phases, swap pixels on the phases' boundaries (every fraction "
        "kept) until D_eff of every phase that spans the micrograph is within 5 percent of its "
        "own along each axis, or of the design targets (a volume: with 3D targets only)",
    )


@dataclass(frozen=True)
class ReconstructionOptions(NetworkOptions):
    """The options of a 2D reconstruction (:func:`reconstruct_steps`); picklable."""

    size: tuple[int, int] | None = option(None, "output size (H, W); the micrograph's if None")
    samples: int = option(1, "number of reconstructions", low=1, high=64)


def whole_number(value, what: str, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int between ``low`` and ``high`` (None: no upper bound), or InputError
    that names ``what`` and the valid range. Whole floats (``3.0``) are accepted."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        valid = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise InputError(f"{what} must be a whole number {valid}; got {value!r}.")
    return number


def check_seed(seed) -> int:
    """The seed as an int, or InputError: seeds run from 0 to :data:`MAX_SEED` (2**63 - 1)."""
    return whole_number(seed, "The seed", 0, MAX_SEED)


def check_levels(levels) -> int:
    """The number of resolution levels as an int, or InputError above :data:`MAX_LEVELS`."""
    return whole_number(levels, "levels (coarse-to-fine resolution levels)", 1, MAX_LEVELS)


def check_learning_rate(learning_rate) -> float:
    """The learning rate as a float, or InputError unless it is finite and positive."""
    try:
        value = float(learning_rate)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"The learning rate must be a finite number above 0; got {learning_rate!r}."
        )
    return value


def check_layer_weights(layer_weights, layers: Sequence[str]) -> dict | None:
    """``{layer: weight}`` for layers of this run, each finite and 0 or more, at least one layer
    weighing more than 0 (a layer left out weighs 1); None stays None. InputError otherwise."""
    if layer_weights is None:
        return None
    if not isinstance(layer_weights, Mapping):
        raise InputError(f"layer_weights must map layer names to weights; got {layer_weights!r}.")
    unknown = [str(name) for name in layer_weights if name not in layers]
    if unknown:
        raise InputError(
            f"layer_weights names {', '.join(unknown)}, which this run does not match; its layers "
            f"are {', '.join(layers)}. Weigh those, or add the layer to layers."
        )
    checked = {}
    for name, weight in layer_weights.items():
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise InputError(
                f"The weight of layer {name} must be a finite number of 0 or more; got {weight!r}."
            )
        checked[name] = value
    if all(checked.get(name, 1.0) == 0 for name in layers):
        raise InputError("Every layer weighs 0: give at least one layer a weight above 0.")
    return checked


def _output_size(size, shape: tuple[int, ...]) -> tuple[int, int]:
    """The output size (H, W) from ``size`` (None: ``shape``), or InputError."""
    if size is None:
        return tuple(int(s) for s in shape)
    is_pair = isinstance(size, (Sequence, np.ndarray)) and not isinstance(size, str)
    values = list(size) if is_pair else [size]
    if len(values) != 2:
        raise InputError(f"The output size {size!r} must have two numbers (height, width).")
    return tuple(whole_number(v, "Each side of the output size", 1) for v in values)


def _schedule(
    size: tuple[int, int],
    target_shape: tuple[int, int],
    levels: int,
    iterations: int,
    smallest: int,
):
    """Resolution levels ``[(factor, steps)]``, coarsest first; levels whose output or target
    would be smaller than the layers allow are dropped."""
    factors = [2 ** (levels - 1 - i) for i in range(levels)]
    factors = [f for f in factors if min(*size, *target_shape) // f >= smallest] or [1]
    # A step at a coarse level costs a quarter, a sixteenth ... of a full-size one; the coarse
    # levels share the budget equally and the finest level gets FINEST_LEVEL_WEIGHT of a share.
    return share_steps(factors, iterations, FINEST_LEVEL_WEIGHT)


def estimate_memory(
    size: Sequence[int],
    samples: int,
    layers: Sequence[str],
    n_channels: int,
    optimizer: str = "lbfgs",
) -> int:
    """Bytes that one optimization of ``samples`` images of ``size`` needs (an upper estimate)."""
    layers = check_layers(layers)
    plan = LAYER_NAMES[: LAYER_NAMES.index(layers[-1]) + 1]
    pixels = int(np.prod(size))
    activations = 3 * pixels  # the colour input
    for name in plan:
        scale = 4 ** (int(name[4]) if name.startswith("pool") else int(name[4]) - 1)
        copies = 2 if name.startswith("conv") else 1  # convolution output and its rectification
        activations += copies * layer_channels(name) * pixels // scale
    parameters = n_channels * pixels
    optimizer_state = (2 * LBFGS_HISTORY + 6 if optimizer == "lbfgs" else 4) * parameters
    # forward activations, their gradients, and the padded copies made by the convolutions
    return 4 * samples * (3 * activations + optimizer_state)


def _check_memory(needed: int, device) -> None:
    free = free_memory_bytes(device)
    if free is not None and needed > 0.8 * free:
        raise MemoryBudgetError(
            f"This reconstruction needs about {needed / 2**30:.1f} GiB of memory on {device} and "
            f"{free / 2**30:.1f} GiB is free. Choose a smaller output size or fewer samples, "
            "or close other programs."
        )


def run_terms(terms: Sequence, options: NetworkOptions, micrographs: Mapping, model) -> tuple:
    """A run's loss terms, checked: ``terms`` and those its options ask for (the transport term,
    the two-point term). ``micrographs`` maps each slice axis to its micrograph (``{None:
    micrograph}`` in 2D)."""
    asked = (
        transport_term(
            options.transport, options.target_deff, options.transport_weight, micrographs, model
        ),
        two_point_term(options.two_point_weight, model),
    )
    return check_terms((*terms, *(term for term in asked if term)))


def island_limits(micrograph: np.ndarray, model: ImageModel, largest: int = MAX_ISLAND) -> dict:
    """Per phase, the cluster size below which an island in a reconstruction is noise: the 5th
    percentile of the sizes of that phase's clusters inside the micrograph (away from its
    borders), at most ``largest`` pixels."""
    inner = small_inner_clusters(micrograph, model.labels)
    return {label: min(size or largest, largest) for label, size in inner.items()}


def reconstruct_steps(
    image,
    options: ReconstructionOptions | None = None,
    *,
    terms: Sequence = (),
    **changes,
) -> Generator[Progress, str | None, Reconstruction]:
    """Reconstruct ``samples`` microstructures statistically equivalent to a 2D micrograph.

    Parameters
    ----------
    image : 2D array
        The micrograph: phase labels (up to 8 phases) or grey levels. Never modified.
    options : :class:`ReconstructionOptions`, optional
        The run's options (the defaults when None); ``changes`` given as keywords replace
        single fields (``reconstruct_steps(image, seed=3, iterations=100)``).
    terms : extra loss terms (:class:`~napari_microstructure.core.descriptors.LossTerm`), each
        added with its weight to the Gram loss; the provenance records each one's final loss.

    Yields
    ------
    Progress after every step. Send ``"stop"`` to end early with the partial result.

    Returns
    -------
    Reconstruction
        as the generator's return value.

    The image and every option are checked when this function is called, before the generator
    runs: bad input raises :class:`~napari_microstructure.core.errors.MicrostructureError`.
    """
    import torch

    options = merge(ReconstructionOptions, options, changes)
    micrograph = validate_image(image, 2, "micrograph")
    model = describe_image(micrograph, options.kind)
    layers = check_layers(options.layers)
    optimizer = check_optimizer(options.optimizer)
    terms = check_terms(terms)
    samples = whole_number(options.samples, "samples")
    iterations = whole_number(options.iterations, "iterations")
    levels = check_levels(options.levels)
    seed = check_seed(options.seed)
    learning_rate = check_learning_rate(options.learning_rate)
    layer_weights = check_layer_weights(options.layer_weights, layers)
    size = _output_size(options.size, micrograph.shape)
    smallest = min_input_size(layers)
    if min(micrograph.shape) < smallest or min(size) < smallest:
        raise InputError(
            f"The micrograph {micrograph.shape} and the output {size} must each be at least "
            f"{smallest}x{smallest} pixels for layers up to {layers[-1]} (its pooling shrinks "
            "the image). Choose shallower layers or a larger image."
        )
    terms = run_terms(terms, options, {None: micrograph}, model)
    torch_device = resolve_device(options.device)
    _check_memory(
        estimate_memory(size, samples, layers, model.n_channels, optimizer), torch_device
    )
    vgg_weights = load_weights(options.weights)
    encoder = get_encoder(layers, options.weights, torch_device)
    colour = to_colour(micrograph, model)
    colours = torch.from_numpy(phase_colours(max(len(model.labels), 2))).to(torch_device)
    schedule = _schedule(size, micrograph.shape, levels, iterations, smallest)
    total = sum(steps for _, steps in schedule)

    generator = torch.Generator().manual_seed(seed)
    coarse = level_shape(size, schedule[0][0])
    parameters = initial_logits(model, samples, coarse, generator).to(torch_device)
    objective = Objective(
        (GramLoss(layer_weights), *terms),
        encoder,
        colours,
        model,
        bool(options.periodic),
        torch_device,
    )
    islands = (
        island_limits(micrograph, model, int(options.max_island)) if model.kind == "labels" else {}
    )
    return _optimize(
        micrograph=micrograph,
        model=model,
        layers=layers,
        size=size,
        samples=samples,
        schedule=schedule,
        total=total,
        parameters=parameters,
        objective=objective,
        colour=colour,
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
        keep_transport=bool(options.keep_transport),
    )


def _optimize(
    *,
    micrograph,
    model,
    layers,
    size,
    samples,
    schedule,
    total,
    parameters,
    objective,
    colour,
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
    keep_transport,
) -> Generator[Progress | PolishRound, str | None, Reconstruction]:
    import torch

    started = time.perf_counter()
    history: list[float] = []
    # the loss per sample and each term's, at the point the last step arrived at
    per_sample = torch.zeros(samples)
    per_term = {term.name: [math.nan] * samples for term in objective.terms}
    evaluations, done, partial = 0, 0, False
    clock = PreviewClock(preview_interval)
    timings = []
    for level, (factor, steps) in enumerate(schedule):
        level_started = time.perf_counter()
        shape = level_shape(size, factor)
        parameters = resize(parameters, shape).detach().requires_grad_(True)
        objective.prepare(micrograph, (colour,), level, factor)
        optimizer_ = make_optimizer(optimizer, parameters, learning_rate)
        evaluate = functools.partial(_evaluate, objective, parameters, level, factor)
        closure = CachedClosure(optimizer_, parameters, evaluate)
        for _ in range(steps):
            take_step(optimizer_, closure)
            per_sample, per_term = closure.record
            done += 1
            history.append(float(per_sample.mean()))
            preview = None
            now = time.perf_counter()
            if clock.due(now):
                preview = finish(score_array(parameters[:1], model)[0], model, micrograph, islands)
            command = yield Progress(
                done, total, history[-1], now - started, level, len(schedule), preview
            )
            if command == STOP:
                partial = True
                break
            check_finite(history[-1], "try another seed or optimizer='lbfgs'")
        evaluations += closure.evaluations
        timings.append(level_timing(level, factor, shape, steps, level_started))
        if partial:
            break
    parameters = resize(parameters.detach(), size)
    scores = score_array(parameters, model)
    images = np.stack([finish(s, model, micrograph, islands) for s in scores])
    polished = []
    if keep_transport and model.kind == "labels" and not partial:
        targets = image_targets(objective.terms) or micrograph_diffusivities(micrograph, model)
        images, polished, partial = yield from polish_images(images, targets, started=started)
    elapsed = time.perf_counter() - started
    provenance = {
        "method": "Gram-matrix reconstruction with a pretrained VGG19 (Li et al. 2018)",
        "parameters": {
            "size": list(size),
            "samples": samples,
            "layers": list(layers),
            "iterations": iterations,
            "levels": len(schedule),
            "levels_requested": levels,
            "optimizer": optimizer,
            "learning_rate": learning_rate if optimizer == "adam" else None,
            "layer_weights": layer_weights,
            "periodic": objective.periodic,
            "kind": model.kind,
            "island_limits": {str(k): v for k, v in islands.items()},
        },
        "seed": seed,
        **environment(device, vgg_weights),
        "input": {
            "shape": list(micrograph.shape),
            "dtype": model.dtype,
            "labels": list(model.labels),
            "fractions": list(model.fractions),
        },
        "timings": {"total_seconds": elapsed, "levels": timings},
        "steps": done,
        "evaluations": evaluations,
        "final_loss": [float(v) for v in per_sample],
        "loss_terms": objective.provenance(per_term),
        "transport_polish": polished,
        "partial": partial,
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Reconstruction(
        images, model, history, [float(v) for v in per_sample], partial, provenance
    )


def _evaluate(objective: Objective, parameters, level: int, factor: int) -> tuple:
    """The summed loss of the samples (back-propagated) and, on the CPU, the loss per sample
    and each term's."""
    losses, values = objective(parameters, level, factor)
    loss = losses.sum()
    loss.backward()
    record = {name: value.detach().cpu() for name, value in values.items()}
    return loss, (losses.detach().cpu(), record)


def reconstruct(
    image,
    options: ReconstructionOptions | None = None,
    callback: Callable[[Progress], object] | None = None,
    **changes,
) -> Reconstruction:
    """Reconstruct microstructures from a micrograph; see :func:`reconstruct_steps`."""
    return run_to_end(reconstruct_steps(image, options, **changes), callback)
