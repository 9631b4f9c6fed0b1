"""What the commands share: input loading, progress printers, refusing to overwrite."""

from __future__ import annotations

import time
from pathlib import Path

#: The micrograph reconstructed when no INPUT is given.
DEFAULT_SAMPLE = "alloy_256"


def progress_printer(stream):
    """Print a one-line progress bar that rewrites itself."""
    state = {"last": 0.0}

    def show(progress):
        now = time.perf_counter()
        if now - state["last"] < 0.2 and progress.iteration < progress.total:
            return None
        state["last"] = now
        width = 30
        filled = int(width * progress.fraction_done)
        remaining = progress.elapsed / max(progress.fraction_done, 1e-9) - progress.elapsed
        stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.iteration}/{progress.total} "
            f"level {progress.level + 1}/{progress.n_levels} loss {progress.loss:.3e} "
            f"{progress.elapsed:5.1f} s, ~{remaining:4.0f} s left "
        )
        if progress.iteration >= progress.total:
            stream.write("\n")
        stream.flush()
        return None

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
                raise InputError(f"The folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            files.extend(found)
        else:
            files.append(path)
    return files


def counter(stream, what: str):
    """Print ``what done/total`` on one line that rewrites itself."""
    state = {"last": 0.0}

    def show(message):
        now = time.perf_counter()
        if now - state["last"] < 0.2 and message.done < message.total:
            return
        state["last"] = now
        stream.write(f"\r{what} {message.done}/{message.total} {message.elapsed:6.1f} s ")
        if message.done >= message.total:
            stream.write("\n")
        stream.flush()

    return show

