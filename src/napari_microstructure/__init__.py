"""napari-microstructure: microstructure reconstruction and analysis with a pretrained VGG19.

The Python API (torch is imported only when one of these is first used)::

    from napari_microstructure import reconstruct, compare
    result = reconstruct(micrograph, samples=2, seed=1)
    table = compare(micrograph, list(result.images))
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "reconstruct": "napari_microstructure.core.decoder",
    "reconstruct_steps": "napari_microstructure.core.decoder",
    "run_to_end": "napari_microstructure.core.decoder",
    "Reconstruction": "napari_microstructure.core.decoder",
    "Progress": "napari_microstructure.core.decoder",
    "DEFAULT_LAYERS": "napari_microstructure.core.decoder",
    "Encoder": "napari_microstructure.core.encoder",
    "load_weights": "napari_microstructure.core.weights",
    "compare": "napari_microstructure.core.metrics",
    "floor": "napari_microstructure.core.metrics",
    "reconstruct_volume": "napari_microstructure.core.volume",
    "reconstruct_volume_steps": "napari_microstructure.core.volume",
    "prune": "napari_microstructure.core.pruning",
    "prune_steps": "napari_microstructure.core.pruning",
    "PruningProfile": "napari_microstructure.core.pruning",
    "load_profile": "napari_microstructure.core.pruning",
    "load_sample": "napari_microstructure._sample_data",
    "read_image": "napari_microstructure.io",
    "MicrostructureError": "napari_microstructure.core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'napari_microstructure' has no attribute {name!r}")
