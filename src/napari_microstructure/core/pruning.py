"""The model-pruning study (docs/method.md section 4): which depth of VGG19 a material needs.

For one material (one micrograph or several of it), reconstruct with the network truncated at
each depth and with chosen subsets of Gram layers, score every configuration by fidelity
(docs/method.md section 7) and cost, and recommend the shallowest configuration that is as good as
the best one. The result is a :class:`PruningProfile`, saved and loaded as JSON, with the table
as a pandas DataFrame.

Configurations
    By default the network truncated after pool1 ... pool5, depth ``d`` matching the Gram matrices
    of conv1_1 and of every pool up to pool``d`` (depth 3: conv1_1, pool1, pool2, pool3); also any
    user-given subsets of layers (a single layer too), named by their layers
    (``"only conv1_1+pool2"``). See :func:`default_configurations`.

Budget
    Every configuration gets the same seeds (image ``i`` of the material uses ``seed + i``) and the
    same budget: ``iterations`` optimizer steps (the decoder's default), or ``seconds`` of wall time
    per image. A seconds budget stops the decoder (``send("stop")``) once the time is spent: the
    decoder still plans ``iterations`` steps over its coarse-to-fine levels, so a configuration too
    slow for the budget ends at a coarser level (its result is upsampled to full size), which is
    what that budget buys it; ``steps`` in the table says how far each got.

Measurements, per configuration (mean and spread, the sample standard deviation, over every
sample of every image)
    ``e_s2``, ``e_lp``, ``e_vf`` against the image the sample was reconstructed from (worst
    phase); connectivity: ``e_conn``, the worst phase's absolute difference in the fraction of the
    phase held by its largest cluster, and per phase ``p`` ``largest_cluster[p]`` and
    ``clusters[p]`` (number of face-connected clusters; the micrograph's own values are in
    :attr:`PruningProfile.reference`).
    ``seconds``: wall time of the reconstructions (all images), not counting the metrics;
    ``cpu_seconds``: the CPU time the process used meanwhile (all its threads), which, unlike wall
    time, hardly grows when other programs share the machine's cores.
    ``gflop_per_iteration``: see :func:`flops_per_iteration` (one loss-and-gradient evaluation of
    one sample at the output size; ``evaluations_per_iteration`` is what the L-BFGS line search
    actually used). ``peak_memory_mb``: see :class:`PeakMemory` (``memory_method`` in the
    provenance says how it was measured); ``memory_estimate_mb``: the decoder's
    :func:`~napari_microstructure.core.decoder.estimate_memory`. ``n_layers``: Gram layers
    matched; ``n_convs``: convolution layers in the truncated network.

Recommendation (:func:`recommend`)
    The shallowest configuration (deepest layer earliest in the network; ties: fewer layers, then
    fewer FLOPs) whose mean e_S2 is within ``tolerance`` (default 10 %) of the best mean e_S2 or at
    or below the floor (the mean e_S2 between two disjoint quadrants of each micrograph,
    :func:`~napari_microstructure.core.metrics.floor`), with the reason in words.

The study is a generator of :class:`StudyProgress` messages (:func:`prune_steps`) that returns the
profile; send ``"stop"`` to end it early: the finished configurations are kept (``partial``).
Closing the generator abandons it; the finished rows were delivered in the messages
(``StudyProgress.result``). :func:`prune` runs it to the end. No napari, Qt or figures here:
the profile is drawn by :func:`napari_microstructure.report.plot_profile`.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .encoder import LAYER_NAMES, check_layers, min_input_size
from .errors import InputError, MemoryBudgetError
from .options import merge, option
from .provenance import environment
from .steps import STOP, relay, run_to_end, timing
from .weights import VGG19_CHANNELS

__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_SAMPLES",
    "DEFAULT_TOLERANCE",
    "Configuration",
    "PeakMemory",
    "PruningProfile",
    "Recommendation",
    "StudyProgress",
    "default_configurations",
    "default_material",
    "depth_configuration",
    "flops_per_iteration",
    "forward_macs",
    "load_profile",
    "parse_configurations",
    "prune",
    "prune_steps",
    "recommend",
    "subset_configuration",
]

#: Depths of the default study: the network truncated after pool1 ... pool5.
DEFAULT_DEPTHS: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Reconstructions per image and configuration.
DEFAULT_SAMPLES = 2
#: A configuration whose mean e_S2 is within this fraction of the best one's is "as good".
DEFAULT_TOLERANCE = 0.10
#: Passes per loss-and-gradient evaluation, as torch's FLOP counter (docs/measurements/pruning.md)
CONV_PASSES = 2
GRAM_PASSES = 3
PROFILE_FORMAT = "napari-microstructure pruning profile"
PROFILE_VERSION = 1
FLOP_CONVENTION = (
    "FLOPs of one evaluation of the loss and its gradient (forward and backward) for one sample "
    "at the output size: 2 FLOPs per multiply-add; the 3x3 convolutions up to the deepest layer "
    "counted twice (forward, input gradient; frozen weights need no weight gradient) and the Gram "
    "matrices (C*C*H*W multiply-adds each) three times (forward, a gradient for each operand); "
    "pooling, ReLU and the loss itself (under 1 %) not counted."
)


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """A set of Gram layers to match, named ``pool3`` for a depth or by its layers for a subset."""

    name: str
    layers: tuple[str, ...]
    kind: str = "subset"  # "depth" or "subset"

    @property
    def deepest(self) -> str:
        return self.layers[-1]

    @property
    def truncation(self) -> int:
        """Index in :data:`LAYER_NAMES` of the last layer the truncated network computes."""
        return LAYER_NAMES.index(self.deepest)

    @property
    def depth(self) -> int:
        """The block (1 ... 5) of the deepest layer."""
        return int(self.deepest[4])

    @property
    def n_convs(self) -> int:
        return sum(name.startswith("conv") for name in LAYER_NAMES[: self.truncation + 1])


@dataclass(frozen=True)
class StudyOptions:
    """The options of a pruning study (:func:`prune_steps`); picklable."""

    configurations: tuple | None = option(
        None,
        "configurations (Configuration objects, depths, or layer subsets; see "
        "parse_configurations); None: depths then subsets",
    )
    depths: tuple[int, ...] = option(
        DEFAULT_DEPTHS, "depths: the network truncated after pool1 ... pool5", low=1, high=5
    )
    subsets: tuple = option((), "layer subsets to study besides the depths")
    samples: int = option(
        DEFAULT_SAMPLES, "reconstructions per image and configuration", low=1, high=16
    )
    iterations: int | None = option(
        None,
        "optimizer steps per reconstruction (None: the reconstruction's default)",
        low=1,
        high=100_000,
    )
    seconds: float | None = option(
        None,
        "wall-time budget per image and configuration instead of iterations (None: none)",
        low=0.1,
        high=86_400.0,
    )
    levels: int | None = option(
        None, "coarse-to-fine levels (None: the reconstruction's default)", low=1, high=16
    )
    seed: int = option(0, "image i uses seed + i in every configuration", low=0)
    device: str = option("auto", "where torch computes: auto, cpu, cuda, cuda:N or mps")
    weights: str = option(
        "normalized", "network weights: normalized, torchvision, random, or a weights file"
    )
    tolerance: float = option(
        DEFAULT_TOLERANCE,
        "a configuration within this fraction of the best mean e_S2 is as good",
        low=0.0,
        high=1.0,
    )


def depth_configuration(depth: int | str) -> Configuration:
    """The network truncated after pool``depth``: conv1_1 and pool1 ... pool``depth``.

    ``depth`` is 1 ... 5, or a name such as ``"pool3"`` or ``"3"``.
    """
    text = str(depth).strip().lower()
    if text.startswith("pool"):
        text = text[4:]
    if text.startswith("depth"):
        text = text[5:]
    try:
        block = int(text)
    except ValueError:
        block = -1
    if not 1 <= block <= len(VGG19_CHANNELS):
        raise InputError(f"Unknown depth {depth!r}: choose 1 ... 5 (or pool1 ... pool5).")
    return Configuration(
        f"pool{block}", ("conv1_1", *(f"pool{b}" for b in range(1, block + 1))), "depth"
    )


def subset_configuration(layers: Sequence[str] | str) -> Configuration:
    """A user-given subset of Gram layers (``"conv1_1,pool2"`` or a list), named ``only`` and its
    layers (``"only conv1_1+pool2"``, ``"only pool3"``), so that it never shares a name with a
    depth."""
    if isinstance(layers, str):
        layers = [part for part in layers.replace("+", ",").replace(" ", ",").split(",") if part]
    ordered = tuple(check_layers(layers))
    return Configuration("only " + "+".join(ordered), ordered, "subset")


def default_configurations(
    depths: Iterable = DEFAULT_DEPTHS, subsets: Iterable = ()
) -> list[Configuration]:
    """The study's configurations: one per depth, then one per subset; a subset with the same
    layers as an earlier configuration is dropped."""
    found: list[Configuration] = []
    for config in [depth_configuration(d) for d in depths] + [
        subset_configuration(s) for s in subsets
    ]:
        if all(config.layers != other.layers for other in found):
            found.append(config)
    if not found:
        raise InputError("Choose at least one depth or one subset of layers to study.")
    return found


_DEPTH_PATTERN = re.compile(r"^\s*(depth\s*)?\d\s*$", re.IGNORECASE)


def parse_configurations(items: Iterable) -> list[Configuration]:
    """Configurations from :class:`Configuration` objects, depths (an int, ``"3"`` or
    ``"depth 3"``) or layer subsets (lists, or strings such as ``"conv1_1,pool2"``; a string
    ``"pool3"`` is the single layer pool3, the depth is ``3``)."""
    configs = []
    for item in items:
        if isinstance(item, Configuration):
            configs.append(item)
        elif isinstance(item, (int, np.integer)) or (
            isinstance(item, str) and _DEPTH_PATTERN.match(item)
        ):
            configs.append(depth_configuration(item))
        else:
            configs.append(subset_configuration(item))
    unique: list[Configuration] = []
    for config in configs:
        if all(config.layers != other.layers for other in unique):
            unique.append(config)
    if not unique:
        raise InputError("Choose at least one depth or one subset of layers to study.")
    return unique


# --------------------------------------------------------------------------------------------
# Cost: FLOPs and memory
# --------------------------------------------------------------------------------------------


def forward_macs(layers: Sequence[str], size: Sequence[int]) -> dict:
    """Multiply-adds of one forward pass of one ``size`` image through VGG19 truncated after the
    deepest of ``layers``, plus the Gram matrices of ``layers``.

    A 3x3 convolution from ``C_in`` to ``C_out`` channels on an ``h x w`` map (padding keeps the
    size) costs ``h * w * C_out * C_in * 9``; a Gram matrix ``F Fᵀ`` of ``C`` channels on
    ``h x w`` costs ``C * C * h * w`` (the full product, as computed). Each 2x2 pool halves the
    map, rounding down. Returns ``{"conv": ..., "gram": ..., "total": ...}``.
    """
    chosen = check_layers(layers)
    h, w = (int(s) for s in size)
    plan = LAYER_NAMES[: LAYER_NAMES.index(chosen[-1]) + 1]
    channels = [c for block in VGG19_CHANNELS for c in block]
    conv = gram = 0
    c_in, conv_index = 3, 0
    for name in plan:
        if name.startswith("conv"):
            c_out = channels[conv_index]
            conv += h * w * c_out * c_in * 9
            c_in, conv_index = c_out, conv_index + 1
        else:
            h, w = h // 2, w // 2
        if name in chosen:
            gram += c_in * c_in * h * w
    return {"conv": conv, "gram": gram, "total": conv + gram}


def flops_per_iteration(layers: Sequence[str], size: Sequence[int]) -> int:
    """FLOPs of one evaluation of the loss and its gradient, for one sample at ``size``.

    ``2 * (CONV_PASSES * conv + GRAM_PASSES * gram)`` with the multiply-adds of
    :func:`forward_macs`: 2 FLOPs per multiply-add; each convolution once forward and once
    backward (the input gradient; the weights are frozen, so autograd computes no weight
    gradient), each Gram matrix once forward and twice backward (a gradient for each operand of
    ``F Fᵀ``). This is what ``torch.utils.flop_counter.FlopCounterMode`` counts for the same work.
    Pooling, ReLU and the loss are not counted (under 1 %). An L-BFGS step with a line search
    makes one or more evaluations (``evaluations_per_iteration`` in the study's table), and
    coarse-to-fine levels run at a quarter, a sixteenth ... of this cost.

    Example: conv1_1 alone on 64x64: convolution 64*64 * 64*3*9 = 7,077,888 multiply-adds, Gram
    64*64 * 64*64 = 16,777,216; FLOPs = 2 * (2 * 7,077,888 + 3 * 16,777,216) = 128,974,848.
    """
    macs = forward_macs(layers, size)
    return 2 * (CONV_PASSES * macs["conv"] + GRAM_PASSES * macs["gram"])


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _peak_rss_bytes() -> int | None:
    """The kernel's high-water mark of the resident set (``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark to the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _peak_rss_bytes() is not None


def _release_freed_memory() -> None:
    """Collect garbage and ask glibc to return freed heap memory to the system, so that the next
    RSS measurement starts from what is really in use."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of the work done inside a ``with`` block, in bytes (``.peak``).

    - CUDA: ``torch.cuda.max_memory_allocated`` (after resetting the peak) minus the memory
      allocated at the start: exact, for torch's tensors.
    - CPU on Linux: the kernel's high-water mark of the process's resident set (``VmHWM``,
      reset at the start through ``/proc/self/clear_refs``) minus the resident set at the start:
      exact, however short the peak (freed memory is first returned to the system with
      ``malloc_trim``). torch's CPU tensors live in the process heap, so they are seen.
      Where the mark cannot be reset, the resident set is sampled every ``interval`` seconds by
      a thread (and at each :meth:`sample`), and a peak between two samples may be missed.
    - Elsewhere (MPS, no ``/proc``): ``None``; the study then reports the decoder's estimate only.

    The peak is the whole process's: work in other threads during the block counts too.
    ``.method`` names the method used.
    """

    def __init__(self, device=None, interval: float = 0.01, sampled: bool = False):
        self.device = device
        self.interval = float(interval)
        self.sampled = sampled
        self.peak: int | None = None
        self.method = "none"
        self._start = 0
        self._max = 0
        self._high_water_mark = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _device_type(self) -> str:
        return getattr(self.device, "type", str(self.device or "cpu").split(":")[0])

    def __enter__(self) -> PeakMemory:
        device_type = self._device_type()
        if device_type == "cuda":
            import torch

            self.method = "torch.cuda.max_memory_allocated minus the memory allocated at the start"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        if device_type != "cpu":
            return self
        _release_freed_memory()
        start = _rss_bytes()
        if start is None:
            return self
        self._start = self._max = start
        if not self.sampled and _reset_peak_rss():
            self._high_water_mark = True
            self.method = (
                "process resident set high-water mark (VmHWM) minus the value at the start"
            )
            return self
        self.method = (
            f"process resident set size, sampled every {self.interval * 1000:.0f} ms, "
            "peak minus the value at the start"
        )
        self._thread = threading.Thread(
            target=self._sample_every_interval, name="PeakMemory", daemon=True
        )
        self._thread.start()
        return self

    def sample(self) -> None:
        """Take one sample of the resident set now (the sampled method only)."""
        value = _rss_bytes()
        if value is not None and value > self._max:
            self._max = value

    def _sample_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __exit__(self, *exc) -> None:
        device_type = self._device_type()
        if device_type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device) - self._start)
        elif self._high_water_mark:
            mark = _peak_rss_bytes()
            self.peak = None if mark is None else int(max(mark - self._start, 0))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.sample()
            self.peak = int(max(self._max - self._start, 0))


# --------------------------------------------------------------------------------------------
# Recommendation
# --------------------------------------------------------------------------------------------


@dataclass
class Recommendation:
    """The recommended configuration and why (``configuration`` is None when no row finished)."""

    configuration: str | None
    layers: list[str]
    reason: str
    tolerance: float
    best: str | None = None
    best_e_s2: float | None = None
    e_s2: float | None = None
    floor: float | None = None
    rule: str = ""
    connectivity_note: str = ""


#: The reason warns when e_conn exceeds the study's lowest by more (docs/measurements/pruning.md)
CONNECTIVITY_NOTE_GAP = 0.05

RULE = (
    "the shallowest configuration (deepest layer earliest in the network; ties: fewer layers, "
    "then fewer FLOPs) whose mean e_S2 is within the tolerance of the best mean e_S2, or at or "
    "below the floor (mean e_S2 between two disjoint quadrants of the micrograph)"
)


def _layers_of(row) -> tuple[str, ...]:
    layers = row["layers"]
    if isinstance(layers, str):
        layers = layers.replace(",", " ").replace("+", " ").split()
    return tuple(check_layers(layers))


def shallowness(row) -> tuple:
    """Sort key of a table row, shallowest first: its deepest layer's place in the network,
    then its number of layers, then its GFLOP per iteration."""
    layers = _layers_of(row)
    flops = row.get("gflop_per_iteration", 0.0)
    flops = 0.0 if flops is None or not math.isfinite(float(flops)) else float(flops)
    return (LAYER_NAMES.index(layers[-1]), len(layers), flops)


def percent(value: float) -> str:
    """A fraction as a percentage in words: ``"10 %"``, ``"12.5 %"``."""
    return (
        f"{100 * value:.0f} %"
        if abs(100 * value - round(100 * value)) < 1e-9
        else f"{100 * value:.1f} %"
    )


def recommend(
    rows, tolerance: float = DEFAULT_TOLERANCE, floor: float | None = None
) -> Recommendation:
    """Apply the recommendation rule to a metrics table.

    The rule: among the configurations with a finite mean e_S2, let ``best`` be the lowest one;
    a configuration is *as good* when its mean e_S2 is at most ``best * (1 + tolerance)``, or at
    most ``floor`` (when given). The recommendation is the shallowest configuration that is as
    good: the one whose deepest layer comes earliest in the network, ties broken by fewer Gram
    layers, then by fewer FLOPs per iteration.

    Parameters
    ----------
    rows : DataFrame or list of dict
        One row per configuration with ``name``, ``layers`` (a list, or names separated by
        spaces or commas) and ``e_s2_mean``; ``gflop_per_iteration`` and ``seconds`` are used
        when present.
    tolerance : float
        Relative tolerance, 0.10 for 10 %.
    floor : float, optional
        The e_S2 floor of the micrograph(s).
    """
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    rows = [dict(r) for r in rows]
    tolerance = float(tolerance)
    if not tolerance >= 0:
        raise InputError(f"The tolerance must be 0 or more (0.10 for 10 %), not {tolerance}.")
    floor = None if floor is None or not math.isfinite(float(floor)) else float(floor)
    scored = [
        r for r in rows if r.get("e_s2_mean") is not None and math.isfinite(float(r["e_s2_mean"]))
    ]
    if not scored:
        return Recommendation(
            None,
            [],
            "No configuration finished, so there is nothing to recommend.",
            tolerance,
            floor=floor,
            rule=RULE,
        )
    best = min(scored, key=lambda r: (float(r["e_s2_mean"]), shallowness(r)))
    best_value = float(best["e_s2_mean"])
    limit = best_value * (1 + tolerance)
    good = [
        r
        for r in scored
        if float(r["e_s2_mean"]) <= limit or (floor is not None and float(r["e_s2_mean"]) <= floor)
    ]
    chosen = min(good, key=shallowness)
    value = float(chosen["e_s2_mean"])
    layers = list(_layers_of(chosen))
    described = f"{chosen['name']} ({', '.join(layers)})"
    within = value <= limit
    at_floor = floor is not None and value <= floor
    floor_text = (
        f"the floor {floor:.4f} (two disjoint quadrants of the micrograph)"
        if floor is not None
        else ""
    )
    if chosen is best:
        reason = f"{described} gives the lowest mean e_S2 of the {len(scored)} configurations, {value:.4f}"
        if at_floor:
            reason += f", at or below {floor_text}"
        shallower = [r for r in scored if shallowness(r) < shallowness(chosen)]
        if shallower:
            reason += f"; no shallower configuration comes within {percent(tolerance)} of it" + (
                " or reaches the floor" if floor is not None else ""
            )
        reason += "."
    else:
        if within:
            reason = (
                f"{described} is the shallowest configuration whose mean e_S2, {value:.4f}, is within "
                f"{percent(tolerance)} of the best, {best_value:.4f} ({best['name']})"
            )
            if at_floor:
                reason += f", and at or below {floor_text}"
        else:
            excess = value / best_value - 1 if best_value > 0 else math.inf
            reason = (
                f"{described} is the shallowest configuration whose mean e_S2, {value:.4f}, is at or "
                f"below {floor_text}, though {percent(excess)} above the best, {best_value:.4f} "
                f"({best['name']})"
            )
        costs = []
        for key, unit in (("seconds", "s"), ("gflop_per_iteration", "GFLOP per iteration")):
            if (
                chosen.get(key) is not None
                and best.get(key) is not None
                and math.isfinite(float(chosen[key]))
                and math.isfinite(float(best[key]))
            ):
                costs.append(f"{float(chosen[key]):.3g} {unit} against {float(best[key]):.3g}")
        reason += "." + (f" It costs {' and '.join(costs)}." if costs else "")
    note = _connectivity_note(chosen, scored)
    if note:
        reason += " " + note
    return Recommendation(
        configuration=str(chosen["name"]),
        layers=layers,
        reason=reason,
        tolerance=tolerance,
        best=str(best["name"]),
        best_e_s2=best_value,
        e_s2=value,
        floor=floor,
        rule=RULE,
        connectivity_note=note,
    )


def _connectivity_note(chosen: dict, rows: list[dict]) -> str:
    """A warning when another configuration keeps the phases' connectivity clearly better."""

    def e_conn(row):
        value = row.get("e_conn_mean")
        return float(value) if value is not None and math.isfinite(float(value)) else None

    mine = e_conn(chosen)
    others = [r for r in rows if e_conn(r) is not None]
    if mine is None or not others:
        return ""
    best = min(others, key=lambda r: (e_conn(r), shallowness(r)))
    if mine - e_conn(best) <= CONNECTIVITY_NOTE_GAP:
        return ""
    return (
        f"Mind the connectivity: its e_conn (change in the fraction of a phase held by its largest "
        f"cluster) is {mine:.3f}, against {e_conn(best):.3f} for {best['name']}; two-point "
        "statistics do not see connectivity, so choose "
        f"{best['name']} where connected phases matter."
    )


# --------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------


#: Columns of the table, in order (per-phase connectivity columns follow ``e_conn_std``).
TABLE_COLUMNS = (
    "name",
    "kind",
    "layers",
    "depth",
    "n_layers",
    "n_convs",
    "e_s2_mean",
    "e_s2_std",
    "e_lp_mean",
    "e_lp_std",
    "e_vf_mean",
    "e_vf_std",
    "e_conn_mean",
    "e_conn_std",
)
TAIL_COLUMNS = (
    "seconds",
    "cpu_seconds",
    "iterations",
    "steps",
    "evaluations_per_iteration",
    "gflop_per_iteration",
    "peak_memory_mb",
    "memory_estimate_mb",
    "final_loss_mean",
    "n_reconstructions",
    "budget_stopped",
)


@dataclass
class PruningProfile:
    """The result of a pruning study: one row of metrics per finished configuration, the
    recommendation, and how it was made. Saved and loaded as JSON; :meth:`table` is the
    DataFrame view. ``images`` (best reconstruction of each configuration, with the index of the
    image it was made from) stays in memory and is not saved."""

    material: str
    configurations: list[dict]
    rows: list[dict]
    recommendation: dict
    weights: dict
    image_shapes: list[list[int]]
    floor: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    partial: bool = False
    images: dict = field(default_factory=dict, repr=False, compare=False)

    # ---------------------------------------------------------------- views
    def table(self):
        """The metrics as a DataFrame, one row per finished configuration, with ``recommended``."""
        import pandas as pd

        frame = pd.DataFrame(self.rows)
        if frame.empty:
            return pd.DataFrame(columns=[*TABLE_COLUMNS, *TAIL_COLUMNS, "recommended"])
        frame["recommended"] = frame["name"] == self.recommendation.get("configuration")
        first = [c for c in TABLE_COLUMNS if c in frame.columns]
        last = [c for c in (*TAIL_COLUMNS, "recommended") if c in frame.columns]
        middle = [c for c in frame.columns if c not in first and c not in last]
        return frame[first + middle + last]

    @property
    def recommended(self) -> str | None:
        return self.recommendation.get("configuration")

    def summary(self) -> str:
        """The table's main columns and the recommendation, as text."""
        table = self.table()
        shown = [
            c
            for c in (
                "name",
                "layers",
                "e_s2_mean",
                "e_s2_std",
                "e_lp_mean",
                "e_vf_mean",
                "e_conn_mean",
                "seconds",
                "steps",
                "gflop_per_iteration",
                "peak_memory_mb",
                "recommended",
            )
            if c in table.columns
        ]
        text = (
            table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}")
            if len(table)
            else "(no configuration finished)"
        )
        floor = self.floor.get("e_s2_mean")
        lines = [
            f"Pruning profile of {self.material} ({len(self.image_shapes)} image(s) {', '.join('x'.join(map(str, s)) for s in self.image_shapes)})",
            text,
        ]
        if floor is not None:
            lines.append(f"floor (two disjoint quadrants of each image): e_s2 {floor:.4f}")
        lines.append(f"recommendation: {self.recommendation.get('reason', '')}")
        if self.partial:
            lines.append(
                f"partial: {len(self.rows)} of {len(self.configurations)} configurations finished"
            )
        return "\n".join(lines)

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "material": self.material,
            "configurations": self.configurations,
            "rows": self.rows,
            "recommendation": self.recommendation,
            "weights": self.weights,
            "image_shapes": self.image_shapes,
            "floor": self.floor,
            "reference": self.reference,
            "provenance": self.provenance,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PruningProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise InputError(
                f"This is not a pruning profile (its 'format' is {data.get('format')!r})."
            )
        if int(data.get("version", 0)) > PROFILE_VERSION:
            raise InputError(
                f"This pruning profile has version {data['version']}; this napari-microstructure reads "
                f"up to version {PROFILE_VERSION}: update napari-microstructure."
            )
        return cls(
            material=data["material"],
            configurations=data["configurations"],
            rows=data["rows"],
            recommendation=data["recommendation"],
            weights=data["weights"],
            image_shapes=[list(s) for s in data["image_shapes"]],
            floor=data.get("floor", {}),
            reference=data.get("reference", {}),
            provenance=data.get("provenance", {}),
            partial=bool(data.get("partial", False)),
        )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the profile as JSON (never replacing a file unless ``overwrite``)."""
        from ..io import write_json

        return write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningProfile:
        """Read a profile written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} does not exist: give the path of a pruning profile (.json).")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path} is not a JSON file: {error}") from error
        if not isinstance(data, dict):
            raise InputError(f"{path} is not a pruning profile.")
        return cls.from_dict(data)


def load_profile(path: str | os.PathLike) -> PruningProfile:
    """Read a pruning profile saved as JSON."""
    return PruningProfile.load(path)


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyProgress:
    """Where a study is: configuration ``index`` of ``n_configurations``, image ``image`` of
    ``n_images``, the decoder's own message (``step``), and, once a configuration has finished,
    its table row (``result``) and best reconstruction (``best``, from image ``best_source``)."""

    index: int
    n_configurations: int
    configuration: str
    layers: tuple[str, ...]
    image: int
    n_images: int
    elapsed: float  # seconds since the study started
    fraction_done: float
    step: object = None  # decoder.Progress, or None for a "configuration finished" message
    result: dict | None = None
    best: np.ndarray | None = None
    best_source: int | None = None

    @property
    def finished(self) -> bool:
        """Whether this message reports a finished configuration (its row, its best image)."""
        return self.result is not None

    def describe(self) -> str:
        """One line: the configuration, image and optimizer step now, with the study's time;
        or the finished configuration's e_S2 and seconds."""
        where = f"{self.configuration} ({self.index + 1}/{self.n_configurations})"
        if self.finished:
            row = self.result
            return (
                f"{where}: e_S2 {row['e_s2_mean']:.4f} ± {row['e_s2_std']:.4f} in "
                f"{row['seconds']:.1f} s"
            )
        step = self.step
        return (
            f"{where} · image {self.image + 1}/{self.n_images} · step "
            f"{step.iteration}/{step.total} · {timing(self)}"
        )


def _as_images(images) -> list[np.ndarray]:
    from ._validate import check_unmasked, validate_image

    if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
        images = [images]
    found = []
    for item in images:
        check_unmasked(item, "micrograph")
        array = np.asarray(item)
        if array.ndim == 3 and min(array.shape) > 1 and array.shape[0] < min(array.shape[1:]):
            found.extend(validate_image(plane, 2, "micrograph") for plane in array)  # a stack
        else:
            found.append(validate_image(array, 2, "micrograph"))
    if not found:
        raise InputError("Give at least one micrograph.")
    return found


def _std(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def default_material(names: list[str]) -> str:
    """The material's name from its images' names: their common prefix (``alloy_1``,
    ``alloy_2`` -> ``alloy``), else the first name."""
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip("_- ")
    return prefix or names[0]


def prune_steps(
    images,
    options: StudyOptions | None = None,
    *,
    material: str | None = None,
    names: Sequence[str] | None = None,
    **changes,
) -> Generator[StudyProgress, str | None, PruningProfile]:
    """The pruning study of one material, as a generator of :class:`StudyProgress` messages
    that returns a :class:`PruningProfile`.

    Parameters
    ----------
    images : 2D array, stack (N, H, W) or list of 2D arrays
        Segmented micrographs (phase labels) of one material, all with the same phases.
    options : :class:`StudyOptions`, optional
        The study's options (the defaults when None); ``changes`` given as keywords replace
        single fields (``prune_steps(images, depths=(1, 2), samples=1)``).
    material, names : the material's name (default: the common prefix of ``names``) and one
        name per image (default ``image 1`` ...).

    Send ``"stop"`` into the generator to end the study after the current optimizer step; the
    configurations that finished are kept and the profile is marked ``partial``. Everything is
    checked when this function is called, before the generator runs: bad input raises
    :class:`~napari_microstructure.core.errors.MicrostructureError`.
    """
    from .decoder import (
        DEFAULT_ITERATIONS,
        DEFAULT_LEVELS,
        check_levels,
        check_seed,
        estimate_memory,
        whole_number,
    )
    from .device import free_memory_bytes, resolve_device
    from .metrics import floor as metric_floor
    from .phases import describe_image
    from .weights import describe as describe_weights
    from .weights import load_weights

    options = merge(StudyOptions, options, changes)
    micrographs = _as_images(images)
    names = (
        [f"image {i + 1}" for i in range(len(micrographs))]
        if names is None
        else [str(n) for n in names]
    )
    if len(names) != len(micrographs):
        raise InputError(
            f"Got {len(names)} name(s) for {len(micrographs)} image(s): give one name per image."
        )
    models = [describe_image(m) for m in micrographs]
    for name, model in zip(names, models):
        if model.kind != "labels":
            raise InputError(
                f"{name} is a grey image; the pruning study scores phases (e_S2, connectivity): "
                "segment it into phase labels first."
            )
    if len({model.labels for model in models}) > 1:
        raise InputError(
            "The images have different phase labels "
            f"({'; '.join(f'{n}: {m.labels}' for n, m in zip(names, models))}); images of one "
            "material must share their phases."
        )
    configs = (
        parse_configurations(options.configurations)
        if options.configurations is not None
        else default_configurations(options.depths, options.subsets)
    )
    smallest = min(min(m.shape) for m in micrographs)
    too_deep = [c for c in configs if min_input_size(c.layers) > smallest]
    if too_deep:
        raise InputError(
            f"The smallest image ({smallest} pixels across) is too small for "
            f"{', '.join(c.name for c in too_deep)}: layers up to {max(too_deep, key=lambda c: c.truncation).deepest} need "
            f"{max(min_input_size(c.layers) for c in too_deep)} pixels. Choose shallower "
            "configurations or larger images."
        )
    samples = whole_number(options.samples, "samples", 1)
    iterations = whole_number(
        DEFAULT_ITERATIONS if options.iterations is None else options.iterations, "iterations", 1
    )
    levels = check_levels(DEFAULT_LEVELS if options.levels is None else options.levels)
    seed = check_seed(options.seed)
    check_seed(seed + len(micrographs) - 1)  # image i uses seed + i
    seconds = options.seconds
    if seconds is not None:
        seconds = float(seconds)
        if not seconds > 0:
            raise InputError(f"The seconds budget must be positive, not {seconds}.")
    tolerance = float(options.tolerance)
    if not tolerance >= 0:
        raise InputError(f"The tolerance must be 0 or more (0.10 for 10 %), not {tolerance}.")
    torch_device = resolve_device(options.device)
    vgg_weights = load_weights(options.weights)
    deepest = max(configs, key=lambda c: c.truncation)
    largest = max(micrographs, key=lambda m: m.size)
    needed = estimate_memory(
        largest.shape, samples, deepest.layers, max(m.n_channels for m in models)
    )
    free = free_memory_bytes(torch_device)
    if free is not None and needed > 0.8 * free:
        raise MemoryBudgetError(
            f"{deepest.name} needs about {needed / 2**30:.1f} GiB of memory on {torch_device} and "
            f"{free / 2**30:.1f} GiB is free. Choose fewer samples, shallower configurations or "
            "smaller images, or close other programs."
        )
    floors = []
    for m in micrographs:
        try:
            floors.append(float(metric_floor(m)["e_s2"]))
        except InputError:
            floors.append(float("nan"))
    settings = dict(
        micrographs=micrographs,
        names=names,
        configs=configs,
        samples=samples,
        iterations=iterations,
        seconds=seconds,
        levels=levels,
        seed=seed,
        device=options.device,
        torch_device=torch_device,
        weights=options.weights,
        weights_info=describe_weights(vgg_weights),
        tolerance=tolerance,
        material=material or default_material(names),
        floors=floors,
        labels=models[0].labels,
    )
    return _study(**settings)


def _reference(micrographs, labels) -> dict:
    from .metrics import connectivity

    reference = {}
    for label in labels:
        conns = [connectivity(m, label) for m in micrographs]
        reference[f"largest_cluster[{label}]"] = float(
            np.mean([c.largest_cluster_fraction for c in conns])
        )
        reference[f"clusters[{label}]"] = float(np.mean([c.n_clusters for c in conns]))
    return reference


def _score(micrograph: np.ndarray, reconstructions: np.ndarray, labels) -> list[dict]:
    """Per reconstruction: e_s2, e_lp, e_vf, e_conn and per-phase connectivity."""
    from .metrics import compare

    table = compare(micrograph, list(reconstructions)).to_dict("records")
    original, scored = table[0], []
    for record in table[1:]:
        row = {"e_s2": record["e_s2"], "e_lp": record["e_lp"], "e_vf": record["e_vf"]}
        worst = 0.0
        for label in labels:
            key = f"largest_cluster_fraction[phase {label}]"
            row[f"largest_cluster[{label}]"] = float(record[key])
            row[f"clusters[{label}]"] = float(record[f"n_clusters[phase {label}]"])
            worst = max(worst, abs(float(record[key]) - float(original[key])))
        row["e_conn"] = worst
        scored.append(row)
    return scored


def _summarize(
    config: Configuration,
    scores: list[dict],
    runs: list[dict],
    labels,
    sizes,
    samples,
    iterations,
    memory,
) -> dict:
    from .decoder import estimate_memory

    row = {
        "name": config.name,
        "kind": config.kind,
        "layers": " ".join(config.layers),
        "depth": config.depth,
        "n_layers": len(config.layers),
        "n_convs": config.n_convs,
    }
    keys = ["e_s2", "e_lp", "e_vf", "e_conn"]
    for label in labels:
        keys += [f"largest_cluster[{label}]", f"clusters[{label}]"]
    for key in keys:
        values = [s[key] for s in scores]
        row[f"{key}_mean"] = float(np.mean(values))
        row[f"{key}_std"] = _std(values)
    steps = sum(r["steps"] for r in runs)
    evaluations = sum(r["evaluations"] for r in runs)
    row["seconds"] = float(sum(r["seconds"] for r in runs))
    row["cpu_seconds"] = float(sum(r["cpu_seconds"] for r in runs))
    row["iterations"] = int(iterations)
    row["steps"] = float(np.mean([r["steps"] for r in runs]))
    row["evaluations_per_iteration"] = evaluations / steps if steps else float("nan")
    row["gflop_per_iteration"] = (
        float(np.mean([flops_per_iteration(config.layers, s) for s in sizes])) / 1e9
    )
    peaks = [r["peak_memory"] for r in runs if r["peak_memory"] is not None]
    row["peak_memory_mb"] = max(peaks) / 2**20 if peaks else float("nan")
    row["memory_estimate_mb"] = (
        max(estimate_memory(s, samples, config.layers, memory) for s in sizes) / 2**20
    )
    row["final_loss_mean"] = float(np.mean([v for r in runs for v in r["final_loss"]]))
    row["n_reconstructions"] = len(scores)
    row["budget_stopped"] = any(r["budget_stopped"] for r in runs)
    return row


def _warm_up(micrograph: np.ndarray, device, weights) -> None:
    """Two unmeasured optimizer steps (conv1_1 and pool1, full resolution), so that what torch
    sets up once per process (the optimizer's modules, autograd, thread pools, kernels: 200 MB
    or more of memory on a CPU) is not counted in the first configuration's time and memory."""
    from .decoder import reconstruct_steps

    run_to_end(
        reconstruct_steps(
            micrograph,
            layers=("conv1_1", "pool1"),
            iterations=2,
            levels=1,
            samples=1,
            device=device,
            weights=weights,
            kind="labels",
            transport=False,
            keep_transport=False,
        )
    )


def _study(
    *,
    micrographs,
    names,
    configs,
    samples,
    iterations,
    seconds,
    levels,
    seed,
    device,
    torch_device,
    weights,
    weights_info,
    tolerance,
    material,
    floors,
    labels,
) -> Generator[StudyProgress, str | None, PruningProfile]:
    import torch

    from .decoder import reconstruct_steps

    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    rows: list[dict] = []
    best_images: dict = {}
    runs_provenance: dict = {}
    memory_method = "none"
    stopped = False
    n_configs, n_images = len(configs), len(micrographs)
    n_channels = 1 if len(labels) == 2 else len(labels)
    _warm_up(micrographs[0], device, weights)

    def answer(message, reply):
        """STOP the reconstruction for the user's Stop, or where its time budget is spent."""
        nonlocal stopped, budget_stopped
        if reply == STOP:
            stopped = True
        elif (
            seconds is not None
            and message.elapsed >= seconds
            and message.iteration < message.total
        ):
            budget_stopped = True
        else:
            return None
        return STOP

    for index, config in enumerate(configs):
        scores: list[dict] = []
        runs: list[dict] = []
        best = (math.inf, None, None)
        for image_index, micrograph in enumerate(micrographs):
            steps = reconstruct_steps(
                micrograph,
                layers=config.layers,
                samples=samples,
                iterations=iterations,
                levels=levels,
                seed=seed + image_index,
                device=device,
                weights=weights,
                kind="labels",
                # the study weighs the network's depth: the Gram loss alone, no polish after it
                transport=False,
                keep_transport=False,
            )

            def progress(message):
                if seconds is not None:
                    part = min(max(message.elapsed / seconds, message.fraction_done), 1.0)
                else:
                    part = message.fraction_done
                fraction = (index + (image_index + part) / n_images) / n_configs
                return StudyProgress(
                    index,
                    n_configs,
                    config.name,
                    config.layers,
                    image_index,
                    n_images,
                    time.perf_counter() - started,
                    fraction,
                    step=message,
                )

            budget_stopped = False
            with PeakMemory(torch_device) as meter:
                run_started, cpu_started = time.perf_counter(), time.process_time()
                result = yield from relay(steps, progress, answer)
                run_seconds = time.perf_counter() - run_started
                cpu_seconds = time.process_time() - cpu_started
            memory_method = meter.method
            if stopped:
                break
            scored = _score(micrograph, result.images, labels)
            scores.extend(scored)
            for sample, s in enumerate(scored):
                if s["e_s2"] < best[0]:
                    best = (s["e_s2"], result.images[sample].copy(), image_index)
            provenance = result.provenance
            runs.append(
                {
                    "image": names[image_index],
                    "seed": seed + image_index,
                    "seconds": run_seconds,
                    "cpu_seconds": cpu_seconds,
                    "steps": provenance["steps"],
                    "evaluations": provenance["evaluations"],
                    "final_loss": provenance["final_loss"],
                    "budget_stopped": budget_stopped,
                    "levels": provenance["timings"]["levels"],
                    "peak_memory": meter.peak,
                }
            )
            del result, steps
        if stopped:
            break
        row = _summarize(
            config,
            scores,
            runs,
            labels,
            [m.shape for m in micrographs],
            samples,
            iterations,
            n_channels,
        )
        rows.append(row)
        best_images[config.name] = {"image": best[1], "source": best[2], "e_s2": best[0]}
        runs_provenance[config.name] = runs
        reply = yield StudyProgress(
            index,
            n_configs,
            config.name,
            config.layers,
            n_images - 1,
            n_images,
            time.perf_counter() - started,
            (index + 1) / n_configs,
            result=dict(row),
            best=best[1],
            best_source=best[2],
        )
        if reply == STOP:
            stopped = index + 1 < n_configs
            if stopped:
                break

    finite_floors = [f for f in floors if math.isfinite(f)]
    floor_mean = float(np.mean(finite_floors)) if finite_floors else None
    recommendation = recommend(rows, tolerance, floor_mean)
    provenance = {
        "method": "model-pruning study (Li et al. 2018): reconstructions with VGG19 truncated at each depth",
        "rule": RULE,
        "tolerance": tolerance,
        "samples": samples,
        "budget": {"iterations": iterations, "seconds": seconds, "levels": levels},
        "seeds": {name: seed + i for i, name in enumerate(names)},
        "images": names,
        **environment(torch_device),
        "started": started_at,
        "total_seconds": time.perf_counter() - started,
        "flops": FLOP_CONVENTION,
        "memory_method": memory_method,
        "spread": "sample standard deviation over every reconstruction of every image",
        "stopped_by_user": stopped,
        "runs": runs_provenance,
    }
    profile = PruningProfile(
        material=material,
        configurations=[
            {"name": c.name, "layers": list(c.layers), "kind": c.kind} for c in configs
        ],
        rows=rows,
        recommendation=asdict(recommendation),
        weights=weights_info,
        image_shapes=[list(m.shape) for m in micrographs],
        floor={"e_s2_mean": floor_mean, "e_s2": dict(zip(names, floors))},
        reference=_reference(micrographs, labels),
        provenance=provenance,
        partial=stopped,
        images=best_images,
    )
    if torch_device.type == "cuda":
        torch.cuda.empty_cache()
    return profile


def prune(
    images,
    options: StudyOptions | None = None,
    callback: Callable[[StudyProgress], object] | None = None,
    **changes,
) -> PruningProfile:
    """Run a pruning study to the end (see :func:`prune_steps`); ``callback`` sees each
    message and may return ``"stop"`` to end the study with the finished rows."""
    return run_to_end(prune_steps(images, options, **changes), callback)
