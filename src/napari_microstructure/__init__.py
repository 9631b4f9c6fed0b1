"""napari-microstructure: microstructure reconstruction and analysis with a pretrained VGG19.

The Python API (torch is imported only when one of these is first used)::

    from napari_microstructure import reconstruct, compare
    result = reconstruct(micrograph, samples=2, seed=1)
    table = compare(micrograph, list(result.images))

    from napari_microstructure import build_dataset, train_property_model, predict_property
    dataset = build_dataset(generated=300, size=128)  # labelled with D_eff_x by TauFactor
    model = train_property_model(dataset.images, dataset.table["D_eff_x"])
    d_eff = predict_property(model, micrograph, phase=0)

    from napari_microstructure import batch  # many tasks on a dask cluster
    from napari_microstructure.batching import Task
    table = batch([Task("a.tif", "reconstruct", {"samples": 10})], "results")
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "reconstruct": "napari_microstructure.core.decoder",
    "reconstruct_steps": "napari_microstructure.core.decoder",
    "ReconstructionOptions": "napari_microstructure.core.decoder",
    "VolumeOptions": "napari_microstructure.core.volume",
    "StudyOptions": "napari_microstructure.core.pruning",
    "DatasetOptions": "napari_microstructure.core.datasets",
    "TrainOptions": "napari_microstructure.core.properties",
    "run_to_end": "napari_microstructure.core.steps",
    "STOP": "napari_microstructure.core.steps",
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
    "build_dataset": "napari_microstructure.core.datasets",
    "build_dataset_steps": "napari_microstructure.core.datasets",
    "transport_labels": "napari_microstructure.core.datasets",
    "LabelCache": "napari_microstructure.core.datasets",
    # (module, name there) where the package-level name says more than the module's own
    "train_property_model": ("napari_microstructure.core.properties", "train"),
    "train_property_model_steps": ("napari_microstructure.core.properties", "train_steps"),
    "predict_property": ("napari_microstructure.core.properties", "predict"),
    "load_property_model": ("napari_microstructure.core.properties", "load_model"),
    "validate_property_model": ("napari_microstructure.core.property_validation", "validate"),
    "validate_property_model_steps": (
        "napari_microstructure.core.property_validation",
        "validate_steps",
    ),
    "adapt_property_model_steps": ("napari_microstructure.core.adaptation", "adapt_steps"),
    "PropertyModel": "napari_microstructure.core.properties",
    "effective_conductivity": "napari_microstructure.core.physics",
    "load_sample": "napari_microstructure._sample_data",
    "read_image": "napari_microstructure.io",
    "MicrostructureError": "napari_microstructure.core.errors",
    "batch": "napari_microstructure.batching",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'napari_microstructure' has no attribute {name!r}")
