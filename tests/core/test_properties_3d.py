"""3D structure-property models: 3D datasets labelled in 3D, a 3D model on straight channels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microstructure.core.datasets import build_dataset, transport_labels
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.physics import transport
from napari_microstructure.core.properties import train
from napari_microstructure.core.weights import find_normalized_weights

pytest.importorskip(
    "taufactor", reason="the physics labels need TauFactor (pip install taufactor)"
)

SIDE = 24


def rod(height: int, width: int, axis: int = 2, corner: tuple[int, int] = (3, 5)) -> np.ndarray:
    """A ``SIDE``^3 volume holding one straight rod of phase 1 along ``axis``, of cross-section
    ``height`` x ``width`` voxels at ``corner``."""
    volume = np.zeros((SIDE,) * 3, np.uint8)
    y, x = corner
    volume[:, y : y + height, x : x + width] = 1  # along z
    return np.ascontiguousarray(np.moveaxis(volume, 0, axis))


def test_a_3d_build_makes_volumes_labelled_in_3d():
    dataset = build_dataset(generated=5, size=(16, 16, 20), axes=("x", "z"), device="cpu")
    assert dataset.provenance["size"] == [16, 16, 20]
    assert [image.shape for image in dataset.images] == [(16, 16, 20)] * 5
    for image, row in zip(dataset.images, dataset.table.itertuples()):
        assert row.volume_fraction == round(row.volume_fraction * image.size) / image.size
        assert row.volume_fraction == pytest.approx(image.mean())
        assert row.D_eff_x == pytest.approx(transport(image, 1, "x", device="cpu").d_eff)
        assert row.D_eff_z == pytest.approx(transport(image, 1, "z", device="cpu").d_eff)
    assert "correlation_length_z" in dataset.table.columns  # the anisotropic field's third length


def test_a_3d_build_refuses_other_shapes_and_3d_reconstructions():
    with pytest.raises(InputError, match="2D \\(H W\\) or 3D \\(D H W\\)"):
        build_dataset(generated=2, size=(16, 16, 16, 16), label=False)
    with pytest.raises(InputError, match="Reconstructions are 2D"):
        build_dataset(
            micrographs={"m": np.eye(32, dtype=np.uint8)}, reconstructions=1, size=(16, 16, 16)
        )


@pytest.mark.weights
def test_a_3d_model_predicts_a_straight_channel_by_its_fraction():
    """Trained on straight rods of other sections (TauFactor's D_eff: their fraction) and on
    rods across the axis (D_eff 0), a 3D model gives a new rod its fraction within 0.03, and a
    rod across the axis, which spans in no direction the model looks along, 0."""
    if find_normalized_weights() is None:
        pytest.skip("the normalized VGG19 is not installed")
    sections = [(4, 4), (4, 8), (6, 6), (8, 8), (6, 12), (12, 12), (8, 16), (16, 16), (12, 18)]
    volumes = [rod(h, w) for h, w in sections]
    volumes += [rod(h, w, axis) for h, w in sections[::2] for axis in (0, 1)]
    targets = [transport_labels(v, 1, ("x",), device="cpu")["D_eff_x"] for v in volumes]
    assert targets[: len(sections)] == pytest.approx(
        [h * w / SIDE**2 for h, w in sections], rel=1e-3
    )
    model = train(volumes, targets, folds=0, device="cpu")
    assert model.header["preprocessing"]["physics"] == "coarse_solve"
    new = [rod(10, 10), rod(14, 14, corner=(6, 2))]
    predicted = model.predict(new + [rod(10, 10, axis=1)], device="cpu")
    assert predicted[:2] == pytest.approx([100 / SIDE**2, 196 / SIDE**2], abs=0.03)
    assert predicted[2] == pytest.approx(0.0, abs=0.01)
