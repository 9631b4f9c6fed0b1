"""Opening the sample micrographs in a real napari viewer (needs a display: Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microstructure import _sample_data


@pytest.mark.gui
@pytest.mark.parametrize("key", ["alloy_256", "carbonate_64"])
def test_open_sample_adds_a_labels_layer(make_napari_viewer, key: str) -> None:
    from napari.layers import Labels

    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-microstructure", key)

    assert len(layers) == 1
    layer = layers[0]
    assert isinstance(layer, Labels)
    assert layer in viewer.layers
    assert layer.name == key
    np.testing.assert_array_equal(np.asarray(layer.data), _sample_data.load_sample(key))
    assert "Scientific Reports" in layer.metadata["attribution"]
