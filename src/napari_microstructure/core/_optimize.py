"""The optimization that 2D (:mod:`.decoder`) and 3D (:mod:`.volume`) reconstruction share.

Both optimize logits, one per phase and pixel or voxel (one for two phases and for grey
levels), coarse to fine. This module holds what they share: the starting noise, resizing
between levels, soft scores and the colours the network sees, the loss terms' evaluation
(:class:`Objective`), the optimizer factory, the cached closure of the L-BFGS line search,
the preview throttle, the divergence check, the timings, and the final phase assignment.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .descriptors import LossContext, TargetContext, log_probabilities
from .errors import InputError
from .phases import ImageModel, drop_islands, match_histogram

OPTIMIZERS = ("lbfgs", "adam")
#: Curvature pairs that L-BFGS keeps.
LBFGS_HISTORY = 20
#: Points whose loss and gradient the closure keeps: the line search returns to the point it
#: accepts, and the next step starts there.
CACHED_POINTS = 3


def check_optimizer(optimizer) -> str:
    """The optimizer's name, or InputError unless it is one of :data:`OPTIMIZERS`."""
    if optimizer not in OPTIMIZERS:
        raise InputError(
            f"Unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}."
        )
    return optimizer


def share_steps(factors: Sequence[int], iterations: int, finest_weight: float) -> list:
    """``[(factor, steps)]``: the coarser levels share ``iterations`` equally, the finest level
    gets ``finest_weight`` of a share (all of them when it is the only level)."""
    weights = np.array([1.0] * (len(factors) - 1) + [finest_weight if len(factors) > 1 else 1.0])
    shares = np.floor(iterations * weights / weights.sum()).astype(int)
    shares[0] += iterations - shares.sum()
    return list(zip(factors, (int(s) for s in shares)))


def level_shape(size: Sequence[int], factor: int) -> tuple:
    """The sides of a level whose image is ``size`` divided by ``factor`` (rounded up)."""
    return tuple(math.ceil(s / factor) for s in size)


def initial_logits(model: ImageModel, batch: int, shape: Sequence[int], generator):
    """Starting logits ``(batch, C, *shape)`` on the CPU: standard normal noise from
    ``generator`` around the micrograph's log-fractions (phases) or around 0 (grey)."""
    import torch

    if model.kind == "labels":
        prior = np.log(np.clip(np.asarray(model.fractions), 1e-6, None))
        bias = prior[1] - prior[0] if model.n_channels == 1 else prior
    else:
        bias = 0.0
    bias = torch.as_tensor(np.reshape(bias, (1, -1) + (1,) * len(shape)), dtype=torch.float32)
    return torch.randn((batch, model.n_channels, *shape), generator=generator) + bias


def resize(parameters, shape: Sequence[int]):
    """``parameters`` (n, C, *sides) interpolated (bi- or trilinear) to ``shape`` if needed."""
    import torch.nn.functional as F

    if tuple(parameters.shape[2:]) == tuple(shape):
        return parameters
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(parameters, size=tuple(shape), mode=mode, align_corners=False)


def soft_scores(parameters, model: ImageModel):
    """Differentiable scores (n, C, h, w): the sigmoid (C = 1) or the phase probabilities."""
    import torch

    if model.n_channels == 1:
        return torch.sigmoid(parameters)
    return torch.softmax(parameters, dim=1)


def colour_of(scores, model: ImageModel, colours):
    """Network input (n, 3, h, w) in [0, 1] from soft scores: grey, or the phases' colours
    ``colours`` (K, 3) mixed by their probabilities."""
    import torch

    if model.n_channels == 1:
        return scores.expand(-1, 3, -1, -1)
    return torch.einsum("bkhw,kc->bchw", scores, colours)


def score_array(parameters, model: ImageModel) -> np.ndarray:
    """Per-pixel scores (n, ...) as numpy, in double precision, ranked by the final assignment:
    the logit of one channel (grey levels, or phase 1 of two phases) or the phases'
    log-probabilities. Probabilities in single precision tie at 1 where a run sharpens (then
    the ranking fell back to the pixels' order)."""
    import torch

    with torch.no_grad():
        if model.n_channels == 1:
            return parameters[:, 0].double().cpu().numpy()
        return log_probabilities(parameters).cpu().numpy()


def finish(scores: np.ndarray, model: ImageModel, reference: np.ndarray, islands: dict):
    """Phase labels with exact fractions, or grey levels with the micrograph's histogram."""
    if model.kind == "grey":
        return match_histogram(scores, reference)
    return drop_islands(scores, model, islands)


@dataclass(frozen=True)
class Objective:
    """The weighted sum of a run's loss terms (the Gram loss first) on samples of logits."""

    terms: tuple
    encoder: Any
    colours: Any  # (K, 3) phase colours on the device
    model: ImageModel
    periodic: bool
    device: Any

    def prepare(self, micrograph, views: tuple, level: int, factor: int, axis=None) -> None:
        """Let every term compute its targets for this level (and axis)."""
        context = TargetContext(
            micrograph, self.model, views, self.encoder, level, factor, axis, self.device
        )
        for term in self.terms:
            term.prepare(context)

    def __call__(self, logits, level: int, factor: int, axis=None) -> tuple:
        """``(weighted sum per sample, {term name: loss per sample})`` of ``logits``."""
        scores = soft_scores(logits, self.model)
        features = self.encoder(
            colour_of(scores, self.model, self.colours), periodic=self.periodic
        )
        context = LossContext(
            scores, features, self.model, level, factor, axis, self.periodic, self.device, logits
        )
        values = {}
        for term in self.terms:
            value = term(context)
            if tuple(getattr(value, "shape", ())) != (len(logits),):
                raise ValueError(
                    f"The loss term {term.name} must return one loss per sample, shape "
                    f"({len(logits)},); it returned {value!r}."
                )
            values[term.name] = value
        parts = (term.weight * values[term.name] for term in self.terms)
        return functools.reduce(operator.add, parts), values

    def provenance(self, finals: dict) -> list:
        """Each term's name, weight and final loss per sample (``finals``: name -> values), with
        what a term records of itself (its ``provenance()``, where it has one)."""
        return [
            {
                **(t.provenance() if callable(getattr(t, "provenance", None)) else {}),
                "name": t.name,
                "weight": float(t.weight),
                "final": [float(v) for v in finals[t.name]],
            }
            for t in self.terms
        ]


def make_optimizer(optimizer: str, parameters, learning_rate: float):
    """L-BFGS (one step per call, strong-Wolfe line search) or Adam over ``parameters``."""
    import torch

    if optimizer == "lbfgs":
        return torch.optim.LBFGS(
            [parameters],
            lr=1.0,
            max_iter=1,
            max_eval=25,
            history_size=LBFGS_HISTORY,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )
    return torch.optim.Adam([parameters], lr=learning_rate)


class CachedClosure:
    """The closure an optimizer calls: zeroes the gradient and evaluates ``objective()`` (which
    back-propagates and returns ``(loss, record)``), or replays the loss, gradient and record of
    one of the last :data:`CACHED_POINTS` points when the parameters are one of them."""

    def __init__(self, optimizer, parameters, objective: Callable[[], tuple]):
        self.optimizer, self.parameters, self.objective = optimizer, parameters, objective
        self.cache: list = []
        self.evaluations = 0
        self.record = None  # what the objective reported at the current point

    def evaluate(self):
        """Evaluate at the current point, without the cache."""
        self.optimizer.zero_grad(set_to_none=False)
        loss, self.record = self.objective()
        self.evaluations += 1
        return loss

    def __call__(self):
        import torch

        for saved, loss, gradient, record in self.cache:
            if torch.equal(saved, self.parameters):
                self.parameters.grad = gradient.clone()
                self.record = record
                return loss
        loss = self.evaluate()
        point = self.parameters.detach().clone()
        self.cache.append((point, loss.detach(), self.parameters.grad.clone(), self.record))
        del self.cache[:-CACHED_POINTS]
        return loss

    def forget(self) -> None:
        """Drop the cached points (the objective changed)."""
        self.cache.clear()


def take_step(optimizer, closure: CachedClosure) -> None:
    """One optimizer step; afterwards ``closure.record`` describes the point it arrived at
    (L-BFGS: cached, no extra cost) or, for Adam, the point it started from."""
    import torch

    if isinstance(optimizer, torch.optim.LBFGS):
        optimizer.step(closure)
        closure()
    else:
        optimizer.step(closure.evaluate)


class PreviewClock:
    """Whether a preview is due: at most one every ``interval`` seconds (None: never)."""

    def __init__(self, interval: float | None):
        self.interval, self.last = interval, -math.inf

    def due(self, now: float) -> bool:
        """True (and the clock restarts) when ``interval`` seconds passed since the last one."""
        if self.interval is None or now - self.last < self.interval:
            return False
        self.last = now
        return True


def check_finite(loss: float, advice: str) -> None:
    """FloatingPointError (with ``advice``) when the loss is not finite: the run diverged."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"The optimization diverged (loss is not finite); {advice}.")


def level_timing(level: int, factor: int, shape, steps: int, started: float, **extra) -> dict:
    """The provenance entry of one level; ``started``: its ``time.perf_counter()``."""
    return {
        "level": level,
        "factor": factor,
        "size": list(shape),
        "steps": steps,
        **extra,
        "seconds": time.perf_counter() - started,
    }
