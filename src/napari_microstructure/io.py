"""Reading micrographs and writing results: no napari or Qt, usable from the command line.

- :func:`read_image` reads ``.npy``, ``.tif``/``.tiff``, ``.png`` and ``.jpg``/``.jpeg`` files
  into a numpy array, with errors (subclasses of ``ValueError``) that say what to do.
- :func:`write_tif` writes an array as TIFF, with a metadata dict stored as JSON in the
  ImageDescription tag; it never overwrites an existing file unless ``overwrite=True``.
- :func:`write_json` writes provenance and other records, turning numpy scalars and arrays,
  paths and the like into plain JSON.
- :func:`check_outputs` refuses, before any work, outputs that cannot or may not be written;
  :func:`atomic_outputs` writes a set of outputs all or nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .core.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageNotFoundError",
    "atomic_outputs",
    "check_outputs",
    "json_default",
    "read_image",
    "read_tif_metadata",
    "write_json",
    "write_tif",
]

#: The file name endings that :func:`read_image` understands (compared case-insensitively).
IMAGE_SUFFIXES: tuple[str, ...] = (".npy", ".tif", ".tiff", ".png", ".jpg", ".jpeg")

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
_TIF_SUFFIXES = (".tif", ".tiff")

# The key under which write_tif stores the caller's metadata in the JSON ImageDescription.
# tifffile reads the "shape" key beside it to restore the array's shape, so the two are kept
# apart: a caller's own "shape" entry cannot confuse the reader.
_TIF_METADATA_KEY = "metadata"


class ImageNotFoundError(InputError, FileNotFoundError):
    """The image file does not exist (both an :class:`InputError` and a ``FileNotFoundError``)."""


# --------------------------------------------------------------------------------------------
# reading


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a micrograph (2D) or volume (3D) from ``path`` into a numpy array.

    Supported: ``.npy`` (numpy, no pickles), ``.tif``/``.tiff`` (tifffile; the first series),
    ``.png``, ``.jpg``/``.jpeg`` (Pillow). The array is returned as stored, except for
    Pillow images: an RGB(A) or grey-plus-alpha image whose colour channels are all equal
    (and whose alpha channel, if any, is constant) becomes a 2D grey image, a palette image is
    expanded to its colours first, and a 1-bit image becomes ``uint8`` 0/1. A true colour image
    is refused: convert it to grey or to labels first.

    Raises
    ------
    ImageNotFoundError
        ``path`` does not exist (a subclass of both ``InputError`` and ``FileNotFoundError``).
    InputError
        ``path`` is a folder, has an unsupported ending, cannot be read (damaged or not of the
        format its ending says), is a true colour image, or holds an array whose dtype is not
        numeric (object, complex, strings, records, dates).
    """
    p = Path(path)
    if not p.exists():
        raise ImageNotFoundError(f"{p} does not exist: check the path and the file name.")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image file: give the path of a file in it.")
    suffix = p.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(
            f"{p} has an unsupported file type {p.suffix or '(no extension)'!r}: "
            f"supported are {', '.join(IMAGE_SUFFIXES)}."
        )
    if suffix == ".npy":
        array = _read_npy(p)
    elif suffix in _TIF_SUFFIXES:
        array = _read_tif(p)
    else:
        array = _read_pil(p)
    _check_dtype(array, p)
    return array


def _read_npy(p: Path) -> np.ndarray:
    with p.open("rb") as fh:
        magic = fh.read(6)
    if magic[:4] == b"PK\x03\x04":  # an .npz (zip) archive saved under a .npy name
        raise InputError(
            f"{p} is an .npz archive, not a single .npy array: save one array with numpy.save."
        )
    if magic != b"\x93NUMPY":
        raise _unreadable(p, "NPY", ValueError("the file does not start with an NPY header"))
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise InputError(
                f"{p} holds an array of Python objects (dtype object), which cannot be used "
                "as an image: save a numeric array (integer labels or grey values) instead."
            ) from exc
        raise _unreadable(p, "NPY", exc) from exc
    except (OSError, EOFError) as exc:
        raise _unreadable(p, "NPY", exc) from exc


def _read_tif(p: Path) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(p))
    except Exception as exc:  # tifffile raises many kinds: TiffFileError, ValueError, OSError...
        raise _unreadable(p, "TIFF", exc) from exc


def _read_pil(p: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as image:
            image.load()
            if image.mode == "P" or image.mode == "PA":
                has_alpha = image.mode == "PA" or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            mode = image.mode
            array = np.array(image)  # a writable copy
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{p} is too large for Pillow to open safely ({exc}): save it as TIFF or .npy."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(p, p.suffix.lstrip(".").upper(), exc) from exc

    if mode == "1":
        return array.astype(np.uint8)
    if mode in ("LA", "RGBA", "RGBa", "La") or (array.ndim == 3 and array.shape[-1] in (2, 4)):
        alpha = array[..., -1]
        if alpha.min() != alpha.max():
            raise InputError(
                f"{p} has a transparency (alpha) channel that varies across the image: "
                "flatten it, and save the image as grey values or labels."
            )
        array = array[..., :-1]
    if array.ndim == 3:
        if array.shape[-1] == 1 or np.all(array == array[..., :1]):
            return np.ascontiguousarray(array[..., 0])
        raise InputError(
            f"{p} is a colour image (its red, green and blue channels differ): convert it to "
            "grey values or to labels (one integer per phase) before using it."
        )
    return array


def _unreadable(p: Path, kind: str, exc: BaseException) -> InputError:
    return InputError(
        f"{p} could not be read as {kind}: the file is damaged or not in {kind} format "
        f"({type(exc).__name__}: {exc})."
    )


def _check_dtype(array: np.ndarray, p: Path) -> None:
    kind = array.dtype.kind
    if kind == "O":
        raise InputError(
            f"{p} holds an array of Python objects (dtype object), which cannot be used as an "
            "image: save a numeric array (integer labels or grey values) instead."
        )
    if kind == "c":
        raise InputError(
            f"{p} holds a complex array (dtype {array.dtype}), which cannot be used as an "
            "image: save its real part or magnitude instead."
        )
    if kind not in "biuf":
        raise InputError(
            f"{p} holds an array of dtype {array.dtype}, which is not numeric: save integer "
            "labels or grey values instead."
        )


# --------------------------------------------------------------------------------------------
# writing


def write_tif(
    path: str | os.PathLike[str],
    array: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``array`` to the TIFF file ``path`` and return the path written.

    ``uint8``, ``uint16`` and ``float32`` are written as they are; ``bool`` becomes ``uint8``
    0/1, other floats become ``float32``, and other integers become the smallest of ``uint8``
    or ``uint16`` that holds their values (else they keep their dtype). A 3D array is written
    as a stack of pages that :func:`read_image` reads back as 3D.

    ``metadata`` (JSON-serializable after :func:`json_default`: numpy values and paths are
    fine) is stored as JSON in the ImageDescription tag, under the key ``"metadata"`` beside
    the ``"shape"`` that tifffile uses; :func:`read_tif_metadata` reads it back.

    An existing file is never replaced unless ``overwrite=True``: ``FileExistsError``
    otherwise. Missing parent folders are created.
    """
    import tifffile

    p = Path(path)
    data = _tif_ready(np.asarray(array))
    description = json.dumps(
        {"shape": list(data.shape), _TIF_METADATA_KEY: dict(metadata or {})},
        default=json_default,
        ensure_ascii=True,  # TIFF ASCII tags hold 7-bit text only
    )
    p.parent.mkdir(parents=True, exist_ok=True)
    with _open_for_writing(p, overwrite=overwrite) as fh:
        tifffile.imwrite(
            fh,
            data,
            description=description,
            metadata=None,  # the description above already is tifffile's JSON form
            photometric="minisblack",
        )
    return p


def read_tif_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the metadata dict that :func:`write_tif` stored in ``path`` (``{}`` if none)."""
    import tifffile

    p = Path(path)
    if not p.exists():
        raise ImageNotFoundError(f"{p} does not exist: check the path and the file name.")
    try:
        with tifffile.TiffFile(p) as tif:
            description = tif.pages.first.description if len(tif.pages) else ""
    except Exception as exc:
        raise _unreadable(p, "TIFF", exc) from exc
    if not description.startswith("{"):
        return {}
    try:
        parsed = json.loads(description)
    except ValueError:
        return {}
    stored = parsed.get(_TIF_METADATA_KEY, {}) if isinstance(parsed, dict) else {}
    return stored if isinstance(stored, dict) else {}


def _tif_ready(data: np.ndarray) -> np.ndarray:
    kind = data.dtype.kind
    if kind not in "biuf":
        raise InputError(
            f"cannot write an array of dtype {data.dtype} as TIFF: give integer labels, "
            "grey values or floats."
        )
    if data.ndim < 2:
        raise InputError(
            f"cannot write an array of shape {data.shape} as an image: need 2D or 3D."
        )
    if data.dtype in (np.uint8, np.uint16, np.float32):
        return data
    if kind == "b":
        return data.astype(np.uint8)
    if kind == "f":
        return data.astype(np.float32)
    # other integer types: the smallest unsigned type that holds the values, else unchanged
    if data.size == 0:
        return data.astype(np.uint8)
    low, high = int(data.min()), int(data.max())
    if low >= 0 and high <= np.iinfo(np.uint8).max:
        return data.astype(np.uint8)
    if low >= 0 and high <= np.iinfo(np.uint16).max:
        return data.astype(np.uint16)
    return data


class _open_for_writing:
    """Open ``path`` for binary writing: refuse an existing file unless ``overwrite``; remove
    a half-written new file if writing fails."""

    def __init__(self, path: Path, *, overwrite: bool) -> None:
        self.path = path
        self.overwrite = overwrite
        self.created = False
        self.fh = None

    def __enter__(self):
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder: give a file name to write to.")
        try:
            self.fh = open(self.path, "wb" if self.overwrite else "xb")
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} already exists and was left unchanged: choose another file name, "
                "or pass overwrite=True to replace it."
            ) from None
        self.created = True
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.fh is not None
        self.fh.close()
        if exc_type is not None and self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()


def json_default(obj: Any) -> Any:
    """``default=`` hook for :func:`json.dump`: numpy scalars and arrays, paths, sets, dates,
    enums, and objects with a ``tolist`` method (torch tensors among them)."""
    if isinstance(obj, np.generic):
        value = obj.item()
        if isinstance(value, complex):
            return [value.real, value.imag]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.dtype):
        return str(obj)
    if isinstance(obj, complex):
        return [obj.real, obj.imag]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors, array-likes
        return obj.tolist()
    if type(obj).__module__.split(".")[0] == "torch":  # torch.device, torch.dtype
        return str(obj)
    raise TypeError(
        f"Object of type {type(obj).__name__} is not JSON serializable: convert it to a "
        "number, a string, a list or a dict first."
    )


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` and return the path written.

    numpy scalars and arrays, paths, sets, dates and enums are converted by
    :func:`json_default`; non-finite floats are written as ``NaN``/``Infinity``, as Python's
    json module reads them back. An existing file is never replaced unless ``overwrite=True``
    (``FileExistsError`` otherwise). Missing parent folders are created.
    """
    p = Path(path)
    # serialize first, so that an object that cannot be written leaves no file behind
    text = json.dumps(obj, default=json_default, indent=2, ensure_ascii=False)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _open_for_writing(p, overwrite=overwrite) as fh:
        fh.write(text.encode("utf-8") + b"\n")
    return p


# --------------------------------------------------------------------------------------------
# all-or-nothing outputs


def check_outputs(
    paths: Iterable[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    stale: Iterable[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Refuse, before any work, outputs that could not or may not be written.

    Each path's folder must be a folder (or not exist yet, under a folder) that can be written
    to; a path may not be a folder, may not be one of ``inputs`` (not even with ``overwrite``),
    and may not exist unless ``overwrite``. ``stale`` are files of an earlier run that the new
    outputs would leave behind out of date (say a fourth sample when three are written): they
    are refused like existing outputs, and :func:`atomic_outputs` removes them with
    ``overwrite``. Returns the paths.

    Raises ``FileExistsError`` for an existing output, :class:`InputError` for the rest.
    """
    planned = [Path(p) for p in paths]
    protected = {_identity(Path(p)) for p in inputs}
    for path in planned:
        if _identity(path) in protected:
            raise InputError(
                f"{path} is an input of this run: an output may never replace an input. "
                "Choose another output name or folder."
            )
        if path.is_dir():
            raise InputError(f"{path} is a folder: give a file name to write to.")
        _check_folder(path.parent)
    for path in [*planned, *(Path(p) for p in stale)]:
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path} exists already; choose another output folder or name, or pass --overwrite "
                "(overwrite=True) to replace it."
            )
    return planned


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the path."""
    try:
        status = path.stat()
    except OSError:
        return ("path", os.path.abspath(path))
    return ("file", status.st_dev, status.st_ino)


def _check_folder(folder: Path) -> None:
    existing = folder
    while not existing.exists():
        if existing.is_symlink() or existing.parent == existing:
            raise InputError(f"{folder} cannot be created: choose another output folder.")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(
            f"{existing} is a file, not a folder: choose another output folder than {folder}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"{existing} cannot be written to (permission denied): choose another output "
            "folder, or make it writable."
        )


@contextlib.contextmanager
def atomic_outputs(
    paths: Iterable[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    stale: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[dict[Path, Path]]:
    """Write a set of outputs all or nothing.

    Yields a dict from each output path to a temporary path beside it (a hidden name with the
    same suffix): write each output there. When the block ends normally, every output is
    renamed into place (files it replaces are kept aside until all are in place) and the
    ``stale`` files are removed; when it raises, Ctrl-C included, the temporary files are
    removed and the folder holds what it held before. The paths are checked first, as by
    :func:`check_outputs`.
    """
    planned = check_outputs(paths, overwrite=overwrite, inputs=inputs, stale=stale)
    stale_files = [Path(p) for p in stale if Path(p).exists()]
    created = _make_folders({path.parent for path in planned})
    token = secrets.token_hex(4)
    staged = {
        path: path.with_name(f".{path.stem}.partial-{token}{path.suffix}") for path in planned
    }
    try:
        yield staged
        missing = [str(path) for path, temporary in staged.items() if not temporary.exists()]
        if missing:
            raise RuntimeError(f"outputs were not written: {', '.join(missing)}")
        _commit(staged, stale_files, token)
    except BaseException:
        for temporary in staged.values():
            with contextlib.suppress(OSError):
                temporary.unlink()
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _make_folders(folders: Iterable[Path]) -> list[Path]:
    """Create the missing folders, and return those this call created, parents first. Another
    writer (a batch's other worker) may create the same folder at the same moment: the first
    one's folder is used, and is not this call's to remove."""
    created: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        for part in reversed([p for p in [folder, *folder.parents] if not p.exists()]):
            try:
                part.mkdir()
            except FileExistsError:
                if not part.is_dir():
                    raise
                continue
            created.append(part)
    return created


def _commit(staged: dict[Path, Path], stale: list[Path], token: str) -> None:
    """Move the staged files into place; on failure put back what was there."""
    aside: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path in [*staged, *stale]:
            if path.exists():
                backup = path.with_name(f".{path.name}.replaced-{token}")
                os.replace(path, backup)
                aside[path] = backup
        for path, temporary in staged.items():
            os.replace(temporary, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            with contextlib.suppress(OSError):
                path.unlink()
        for path, backup in aside.items():
            with contextlib.suppress(OSError):
                os.replace(backup, path)
        raise
    for backup in aside.values():
        with contextlib.suppress(OSError):
            backup.unlink()
