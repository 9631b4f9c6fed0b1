"""The environment record (core/provenance.py) that every result's provenance carries."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import napari_microstructure
from napari_microstructure import load_sample
from napari_microstructure.core.datasets import build_dataset
from napari_microstructure.core.decoder import reconstruct
from napari_microstructure.core.provenance import environment
from napari_microstructure.core.volume import reconstruct_volume
from napari_microstructure.core.weights import load_weights

torch = pytest.importorskip("torch")

# plumbing runs: random weights, few steps (the record does not depend on the network)
FAST = {"iterations": 2, "levels": 1, "weights": "random", "device": "cpu"}
ENVIRONMENT = ("package_version", "python", "numpy", "torch", "threads", "platform")


def test_environment_names_versions_threads_and_platform():
    record = environment()
    assert record["package_version"] == napari_microstructure.__version__
    assert record["python"] == platform.python_version()
    assert record["numpy"] == np.__version__ and record["torch"] == torch.__version__
    assert record["threads"] == torch.get_num_threads()
    assert record["platform"] == platform.platform()
    assert "device" not in record and "weights" not in record


def test_environment_with_device_and_weights():
    weights = load_weights("random")
    record = environment(torch.device("cpu"), weights)
    assert record["device"] == "cpu"
    assert record["weights"] == {
        "source": weights.source,
        "path": weights.path,
        "sha256": weights.sha256,
    }


def test_every_result_carries_the_same_environment():
    alloy = load_sample("alloy_64")
    expected = environment("cpu")
    records = [
        reconstruct(alloy[:32, :32], seed=1, **FAST).provenance,
        reconstruct_volume(alloy[:16, :16], 16, seed=1, **FAST).provenance,
        build_dataset(generated=2, size=16, label=False, device="cpu").provenance,
    ]
    for record in records:
        assert {key: record[key] for key in (*ENVIRONMENT, "device")} == expected
    assert records[0]["weights"]["source"] == records[1]["weights"]["source"] == "random"
