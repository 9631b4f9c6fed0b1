"""Where a result was computed: the environment part of every result's provenance.

:func:`environment` is the one record of versions, threads and platform, with the device and
the network weights where a computation used them; reconstructions, volumes, pruning studies,
datasets, property models and ``napari-microstructure info`` all take it from here.
"""

from __future__ import annotations

import platform

import numpy as np

__all__ = ["environment"]


def environment(device=None, weights=None) -> dict:
    """The package, Python, numpy and torch versions, torch's CPU threads and the platform;
    with ``device`` (a torch device or its name) its name, with ``weights`` (a
    :class:`~.weights.VGGWeights`) their source, path and sha256 (:func:`~.weights.describe`).
    """
    import torch

    from .. import __version__

    record = {
        "package_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device is not None:
        record["device"] = str(device)
    if weights is not None:
        from .weights import describe

        record["weights"] = describe(weights)
    return record
