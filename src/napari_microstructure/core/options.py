"""What the options classes of every job share.

Each job has one frozen dataclass of options beside its function (``ReconstructionOptions`` in
``core/decoder.py``, ``VolumeOptions`` in ``core/volume.py``, ``StudyOptions`` in
``core/pruning.py``, ``DatasetOptions`` in ``core/datasets.py``, ``TrainOptions`` in
``core/properties.py``). Its fields are the single source of the defaults, and their metadata
(a help text, a range, choices) is what the command line and the widgets show. The objects hold
plain values only, so they pickle: batch work sends them to other processes. The job function
checks them when it is called, before any work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError

__all__ = ["OptionSpec", "merge", "option", "redefault", "spec"]


def option(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence | None = None,
):
    """A dataclass field with its ``default`` and what a user interface shows about it."""
    metadata = {"help": help, "low": low, "high": high, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("Options hold immutable defaults: give a tuple, not a list or dict.")
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of an options class: its default and what a user interface shows."""

    name: str
    default: Any
    help: str
    low: float | None
    high: float | None
    choices: tuple | None


def spec(options_class, name: str) -> OptionSpec:
    """The :class:`OptionSpec` of the field ``name`` of ``options_class``."""
    for item in dataclasses.fields(options_class):
        if item.name == name:
            meta = item.metadata
            choices = meta.get("choices")
            return OptionSpec(
                name,
                item.default,
                meta.get("help", ""),
                meta.get("low"),
                meta.get("high"),
                tuple(choices) if choices is not None else None,
            )
    raise KeyError(f"{options_class.__name__} has no option {name!r}.")


def redefault(options_class, name: str, default: Any, help: str | None = None):
    """The field ``name`` of ``options_class`` with another ``default`` (and ``help``), its range
    and choices kept: a subclass's own default (3D beside 2D)."""
    item = spec(options_class, name)
    return option(
        default,
        item.help if help is None else help,
        low=item.low,
        high=item.high,
        choices=item.choices,
    )


def merge(options_class, options, changes: Mapping):
    """``options`` (an ``options_class`` or None for the defaults) with ``changes`` applied, or
    InputError naming an unknown option and listing the known ones."""
    if options is None:
        options = options_class()
    elif not isinstance(options, options_class):
        raise InputError(
            f"options must be a {options_class.__name__}, not {type(options).__name__}."
        )
    names = [item.name for item in dataclasses.fields(options_class)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise InputError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the options of {options_class.__name__} are {', '.join(names)}."
        )
    return dataclasses.replace(options, **changes) if changes else options
