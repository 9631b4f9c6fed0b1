"""The generator protocol shared by every long computation of the package.

A computation is a generator that yields progress messages and returns its result. Sending
:data:`STOP` into it ends it after the current step with the partial result; closing it
abandons the work. :func:`run_to_end` drives one synchronously (the command line, the tests);
:func:`relay` drives one from inside another generator (a study made of reconstructions, a
widget's job made of a core computation).

Every progress message follows :class:`ProgressMessage`: ``fraction_done``, ``elapsed`` and
``describe()``, so that one printer (the command line) and one label (the widgets) show them
all; :func:`describe` and :func:`milestone` read any message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Protocol, runtime_checkable

__all__ = [
    "DISCARD",
    "STOP",
    "ProgressMessage",
    "describe",
    "describe_step",
    "milestone",
    "relay",
    "run_to_end",
    "timing",
]

#: The command that asks a running generator to finish early with its partial result.
STOP = "stop"
#: The command that makes :func:`relay` abandon its generator at once (closed, no result).
DISCARD = "discard"


@runtime_checkable
class ProgressMessage(Protocol):
    """What a progress message offers, whatever the computation."""

    @property
    def fraction_done(self) -> float:
        """The share of the work (of the job, or of its current stage) done, 0 to 1."""

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""

    def describe(self) -> str:
        """One line for a person: where the job is."""


def run_to_end(steps: Generator, callback: Callable[[object], object] | None = None):
    """Run a progress generator to the end and return its result; ``callback`` sees each message
    (it may return ``"stop"`` to end the run early with the partial result)."""
    command = None
    while True:
        try:
            message = steps.send(command)
        except StopIteration as finished:
            return finished.value
        command = callback(message) if callback is not None else None


def relay(
    steps: Generator,
    transform: Callable[[object], object] | None = None,
    answer: Callable[[object, object], object] | None = None,
):
    """Drive the generator ``steps`` from inside another one: ``result = yield from relay(steps)``.

    Each message of ``steps`` is yielded (``transform(message)`` instead, when given). What is
    sent back (the reply) goes on to ``steps``: :data:`STOP` as it is, anything else as None;
    ``answer(message, reply)``, when given, chooses the command instead (for a rule of the
    outer generator, such as a time budget). :data:`DISCARD` closes ``steps`` at once and
    returns None. Returns what ``steps`` returned; ``steps`` is closed when the relay ends in
    any way (the outer generator closed, an error).
    """
    command = None
    try:
        while True:
            try:
                message = steps.send(command)
            except StopIteration as finished:
                return finished.value
            reply = yield message if transform is None else transform(message)
            if answer is not None:
                reply = answer(message, reply)
            if reply == DISCARD:
                return None
            command = STOP if reply == STOP else None
    finally:
        steps.close()


def timing(message) -> str:
    """``"12 s, ~30 s left"``: the time so far, and the time left where ``fraction_done`` allows
    an estimate."""
    done = message.fraction_done
    left = message.elapsed * (1 - done) / done if done > 0 else math.nan
    return f"{message.elapsed:.0f} s" + (f", ~{left:.0f} s left" if math.isfinite(left) else "")


def describe(message) -> str:
    """One line that says where a job is: the message's own ``describe()``, else
    :func:`describe_step`."""
    own = getattr(message, "describe", None)
    return own() if callable(own) else describe_step(message)


def describe_step(message) -> str:
    """A line made of the optimizer-step attributes ``message`` has (``iteration``, ``total``,
    ``level``, ``n_levels``, ``loss``) and its timing."""
    parts = []
    if hasattr(message, "iteration") and hasattr(message, "total"):
        parts.append(f"step {message.iteration}/{message.total}")
    if hasattr(message, "level") and hasattr(message, "n_levels"):
        parts.append(f"level {message.level + 1}/{message.n_levels}")
    if hasattr(message, "loss"):
        parts.append(f"loss {message.loss:.3g}")
    return " · ".join([*parts, timing(message)])


def milestone(message) -> bool:
    """Whether ``message`` marks a finished unit of the work (its ``finished`` attribute: a
    configuration, a fold) or the end of the job or stage (``fraction_done`` reaches 1): a
    printer keeps its line."""
    return bool(getattr(message, "finished", False)) or message.fraction_done >= 1
