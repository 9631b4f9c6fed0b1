"""The checks of images, phases and axes that every entry point makes, each written once.

Each check returns the array (or index) it accepted and raises :class:`~.errors.InputError`
with a message that names the input and says what to do. ``name`` is how the message calls
the input ("micrograph", "volume", "layer 'alloy'").
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

#: Names of the array axes of a 2D image and a 3D volume: ``x`` is the last axis.
AXIS_NAMES: dict[int, tuple[str, ...]] = {2: ("y", "x"), 3: ("z", "y", "x")}
#: The most phases a label image has (more distinct values make a grey image).
MAX_PHASES = 8


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def check_unmasked(image, name: str = "image") -> None:
    """Refuse a numpy masked array with masked pixels: its mask would be silently ignored."""
    if np.ma.isMaskedArray(image) and np.ma.getmaskarray(image).any():
        raise InputError(
            f"The {name} is a masked array with {int(np.ma.count_masked(image))} masked "
            "pixel(s); the mask cannot be honoured. Fill them first (image.filled(value)) or "
            "crop them away."
        )


def _numbers(image, name: str, needed: str) -> np.ndarray:
    """``image`` as an array of numbers without masked pixels; ``needed`` says what kind."""
    check_unmasked(image, name)
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise InputError(f"The {name} has dtype {array.dtype}; it must hold {needed}.")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"The {name} contains NaN or Inf values; replace or crop them first.")


def _check_2d_or_3d(array: np.ndarray, name: str, what: str) -> None:
    """Refuse anything but a 2D image or 3D volume of at least 2 pixels along every axis."""
    if array.ndim not in (2, 3):
        raise InputError(
            f"The {name} must be a 2D or 3D array of {what}; got {array.ndim} dimension(s) "
            f"with shape {array.shape}."
        )
    if min(array.shape) < 2:
        raise InputError(
            f"The {name} must be at least 2 pixels along every axis; got shape {array.shape}."
        )


def validate_image(image, ndim: int = 2, name: str = "image") -> np.ndarray:
    """A finite, non-constant image of ``ndim`` dimensions (longer shapes squeezed), without
    masked pixels: what a reconstruction starts from."""
    array = _numbers(image, name, "numbers (grey levels or phase labels)")
    squeezed = array.squeeze() if array.ndim > ndim else array
    if squeezed.ndim != ndim:
        hint = " Pick one slice or channel first." if array.ndim > ndim else ""
        raise InputError(
            f"The {name} has shape {array.shape}: {ndim} dimensions are needed.{hint}"
        )
    _check_finite(squeezed, name)
    if squeezed.size == 0 or squeezed.min() == squeezed.max():
        value = squeezed.flat[0] if squeezed.size else "missing"
        raise InputError(
            f"The {name} is constant (every pixel is {value}): it has no microstructure to "
            "reconstruct."
        )
    return squeezed


def label_image(image, name: str = "image") -> np.ndarray:
    """A 2D or 3D image of whole-number phase labels, at least 2 pixels along every axis, as
    integers (booleans as ``uint8``, whole floats as ``int64``): what a metric measures."""
    array = _numbers(image, name, "integer phase labels")
    _check_2d_or_3d(array, name, "phase labels")
    if array.dtype == bool:
        return array.view(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise InputError(
                f"The {name} must hold integer phase labels; its {array.dtype} values are not "
                "all whole numbers (segment the image first; grey images have compare_grey)."
            )
        return array.astype(np.int64)
    return array


def grey_image(image, name: str = "image") -> np.ndarray:
    """A finite 2D or 3D grey image, at least 2 pixels along every axis, as float64."""
    array = _numbers(image, name, "grey levels (numbers)")
    _check_2d_or_3d(array, name, "grey levels")
    values = array.astype(np.float64)
    _check_finite(values, name)
    return values


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """The distinct values of an array, ascending (counted, not sorted, for small unsigned
    types)."""
    if array.dtype.kind == "b" or (array.dtype.kind == "u" and array.dtype.itemsize <= 2):
        return np.flatnonzero(np.bincount(array.ravel()))
    return np.unique(array)


def check_label_image(image, name: str = "image", phase=None) -> np.ndarray:
    """``image`` as an array if it is a 2D image or 3D volume of phase labels, else InputError.

    Phase labels are whole numbers, at most :data:`MAX_PHASES` distinct values; a grey
    micrograph (floats that are not whole numbers, or more distinct values) is refused with the
    advice to segment it. With ``phase``, an image in which that phase does not occur is
    refused too, naming the labels it has.
    """
    array = _numbers(image, name, "phase labels (one whole number per phase)")
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(
            f"The {name} has shape {array.shape}: a 2D image or a 3D volume of phase labels is "
            "needed."
        )
    _check_finite(array, name)
    if array.dtype.kind == "f" and not (array == np.round(array)).all():
        raise InputError(
            f"The {name} holds grey levels (values that are not whole numbers), not phase "
            "labels: segment it into phases (one whole number per phase) first."
        )
    values = _distinct_values(array)
    if len(values) > MAX_PHASES:
        raise InputError(
            f"The {name} has {len(values)} distinct values: it looks like a grey image, not phase "
            f"labels (at most {MAX_PHASES} phases). Segment it into phases first."
        )
    if phase is not None:
        if isinstance(phase, str) or not np.isscalar(phase) or not np.isfinite(phase):
            raise InputError(f"The phase must be a label (a whole number); got {phase!r}.")
        _check_phase_occurs(array == phase, phase, values, name)
    return array


def _check_phase_occurs(mask: np.ndarray, phase, values, name: str) -> None:
    if not mask.any():
        labels = ", ".join(f"{v:g}" for v in values)
        raise InputError(
            f"Phase {phase} does not occur in the {name} (its labels are {labels}): give the "
            "label of the phase of interest (--phase on the command line, phase= in Python)."
        )


def indicator(image: np.ndarray, phase, name: str = "image") -> np.ndarray:
    """The boolean indicator ``image == phase`` of a checked label image; refused if the phase
    does not occur in it."""
    mask = image == phase
    if not mask.any():
        _check_phase_occurs(mask, phase, np.unique(image), name)
    return mask


# --------------------------------------------------------------------------------------------
# Axes
# --------------------------------------------------------------------------------------------


def axis_index(axis, ndim: int) -> int:
    """The array axis of ``axis`` in an image of ``ndim`` (2 or 3) dimensions: an index
    (negative ones count from the end) or a name, ``x`` the last axis, then ``y``, ``z``."""
    names = AXIS_NAMES[ndim]
    if isinstance(axis, str):
        if axis.lower() not in names:
            raise InputError(
                f"Axis {axis!r} does not exist in {ndim}D: choose one of {', '.join(names)}."
            )
        return names.index(axis.lower())
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InputError(
            f"Unknown axis {axis!r}: give a name ({', '.join(names)}) or an array index."
        )
    if not -ndim <= axis < ndim:
        raise InputError(
            f"Axis {axis} is out of range for an image of {ndim} dimensions: give 0 .. {ndim - 1} "
            f"or a name ({', '.join(names)})."
        )
    return int(axis) % ndim


def axis_indices(axes, ndim: int) -> list[int]:
    """The array axes of ``axes`` (one, or several names or indices): see :func:`axis_index`."""
    axes = [axes] if isinstance(axes, (str, int, np.integer)) else list(axes)
    if not axes:
        raise InputError("Give at least one transport axis (x, y or z).")
    return [axis_index(axis, ndim) for axis in axes]
