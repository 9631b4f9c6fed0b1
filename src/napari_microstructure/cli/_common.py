"""What the commands share: input loading, the progress printer, refusing to overwrite."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from ..core.options import merge, spec
from ..core.steps import describe, milestone

#: The micrograph reconstructed when no INPUT is given.
DEFAULT_SAMPLE = "alloy_256"
#: Where each command writes when --out is not given.
OUTPUTS = {
    "reconstruct": "reconstructions",
    "prune": "pruning",
    "label": "labels.csv",
    "train": "property_model",
    "predict": "predictions.csv",
    "batch": "batch",
}
#: Seconds between two rewrites of the progress line (a line that stays is written at once).
PRINT_INTERVAL = 0.2
#: Characters of the progress bar.
BAR_WIDTH = 20


def printer(stream):
    """A :func:`~napari_microstructure.core.steps.run_to_end` callback that shows any job's
    progress messages on ``stream``: one line, rewritten at most every :data:`PRINT_INTERVAL`
    seconds, with a bar of ``fraction_done`` and the message's description; a message that
    marks a finished unit (a configuration, a fold) or the end keeps its line. Never stops the
    job."""
    shown = {"at": -math.inf, "width": 0}

    def show(message) -> None:
        now = time.perf_counter()
        kept = milestone(message)
        if not kept and now - shown["at"] < PRINT_INTERVAL:
            return
        shown["at"] = now
        filled = int(BAR_WIDTH * min(max(message.fraction_done, 0.0), 1.0))
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {describe(message)}"
        stream.write(f"\r{line.ljust(shown['width'])}" + ("\n" if kept else ""))
        shown["width"] = 0 if kept else len(line)
        stream.flush()

    return show


def load_input(path: str | None):
    from .. import io
    from .._sample_data import load_sample

    if path is None:
        return load_sample(DEFAULT_SAMPLE), DEFAULT_SAMPLE
    return io.read_image(path), Path(path).stem


def image_files(inputs: list[str]) -> list[Path]:
    """The image files named by ``inputs``: files, and the image files inside folders (sorted)."""
    from ..core.errors import InputError
    from ..io import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(
                    f"The folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})."
                )
            files.extend(found)
        else:
            files.append(path)
    return files


def _shown(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    return str(value)


def add_option(
    parser, options_class, name: str, *flags: str, also=(), note: str = "", **kwargs
) -> None:
    """An argument for the option ``name`` of ``options_class`` (flag ``--name`` unless
    ``flags`` are given): its help and the default it shows come from the options class, and
    ``also`` (pairs of a label and another options class, e.g. ``("3D", VolumeOptions)``) shows
    that class's default too; ``note`` is added to the help. Not given, the argument is None
    and the options' default holds."""
    item = spec(options_class, name)
    shown = f"default: {_shown(item.default)}"
    shown += "".join(f"; {label}: {_shown(spec(other, name).default)}" for label, other in also)
    if item.choices is not None and kwargs.get("action") is None:
        kwargs.setdefault("choices", item.choices)
    parser.add_argument(
        *(flags or (f"--{name.replace('_', '-')}",)),
        dest=name,
        default=None,
        help=f"{item.help}{note} ({shown})",
        **kwargs,
    )


def options_from(args, options_class, **fixed):
    """``options_class`` with the arguments of its options that were given (not None) and
    ``fixed``; lists become tuples."""
    given = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(options_class)
        if getattr(args, item.name, None) is not None
    }
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return merge(options_class, None, {**given, **fixed})
