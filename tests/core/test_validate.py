"""The image, phase and axis checks (core/_validate.py), and that every entry point uses them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microstructure import load_sample
from napari_microstructure.core import _validate, datasets, metrics, physics, volume
from napari_microstructure.core.errors import InputError

ALLOY = load_sample("alloy_64")


def _masked():
    return np.ma.masked_array(ALLOY, mask=np.eye(64, dtype=bool))


# every function that reads a micrograph refuses a masked one with the same message
MASKED = {
    "reconstruction input": lambda image: _validate.validate_image(image, 2, "micrograph"),
    "metric": lambda image: metrics.two_point(image, 1),
    "grey metric": lambda image: metrics.grey_autocovariance(image),
    "dataset label": lambda image: datasets.transport_labels(image, 1),
    "volume slices": lambda image: volume.slice_two_point(np.ma.stack([image] * 4), 1, axis=0),
}


@pytest.mark.parametrize("check", MASKED.values(), ids=MASKED)
def test_every_entry_point_refuses_masked_pixels_alike(check):
    with pytest.raises(InputError, match=r"masked array with \d+ masked pixel\(s\).*filled"):
        check(_masked())


def test_an_absent_phase_gets_one_message_from_metrics_and_labels():
    messages = []
    for check in (
        lambda: metrics.two_point(ALLOY, 3),
        lambda: datasets.transport_labels(ALLOY, 3),
    ):
        with pytest.raises(InputError, match="Phase 3 does not occur") as refused:
            check()
        messages.append(str(refused.value))
    assert messages[0] == messages[1]
    assert "its labels are 0, 1" in messages[0] and "--phase" in messages[0]


REFUSED_IMAGES = {
    "1D": (_validate.label_image, np.arange(8) % 2, "2D or 3D array of phase labels"),
    "one row": (_validate.label_image, np.ones((1, 8)), "at least 2 pixels"),
    "grey floats": (_validate.label_image, np.linspace(0, 1, 16).reshape(4, 4), "whole numbers"),
    "text": (_validate.label_image, np.array([["a", "b"], ["b", "a"]]), "dtype <U1"),
    "grey NaN": (_validate.grey_image, np.full((4, 4), np.nan), "NaN or Inf"),
    "grey 4D": (_validate.grey_image, np.zeros((2, 2, 2, 2)), "2D or 3D array of grey levels"),
    "constant": (lambda a: _validate.validate_image(a, 2), np.zeros((8, 8)), "constant"),
    "stack": (lambda a: _validate.validate_image(a, 2), np.zeros((3, 8, 8)), "2 dimensions"),
    "labels grey": (_validate.check_label_image, np.random.default_rng(0).random((8, 8)), "grey"),
    "many labels": (_validate.check_label_image, np.arange(64).reshape(8, 8), "64 distinct"),
}


@pytest.mark.parametrize(("check", "image", "needle"), REFUSED_IMAGES.values(), ids=REFUSED_IMAGES)
def test_bad_images_are_refused_with_what_to_do(check, image, needle):
    with pytest.raises(InputError, match=needle):
        check(image)


def test_accepted_images_come_back_as_the_metrics_need_them():
    assert _validate.label_image(ALLOY.astype(bool)).dtype == np.uint8
    assert _validate.label_image(ALLOY.astype(float)).dtype == np.int64
    assert _validate.grey_image(ALLOY).dtype == np.float64
    assert _validate.validate_image(ALLOY[None], 2).shape == (64, 64)  # a single plane squeezed


@pytest.mark.parametrize(
    ("axis", "ndim", "index"),
    [("x", 2, 1), ("y", 2, 0), ("X", 3, 2), ("z", 3, 0), (-1, 2, 1), (np.int64(1), 3, 1)],
)
def test_axes_by_name_or_index(axis, ndim, index):
    assert _validate.axis_index(axis, ndim) == index


@pytest.mark.parametrize(
    ("axis", "ndim", "needle"),
    [
        ("z", 2, "Axis 'z' does not exist in 2D: choose one of y, x"),
        (2, 2, "Axis 2 is out of range for an image of 2 dimensions"),
        (1.0, 3, "Unknown axis 1.0: give a name"),
        (True, 2, "Unknown axis True"),
    ],
)
def test_bad_axes_are_refused(axis, ndim, needle):
    with pytest.raises(InputError, match=needle):
        _validate.axis_index(axis, ndim)


def test_every_axis_argument_takes_names():
    """Metrics, the solver, the labels and a volume's micrographs read axes the same way."""
    structure = np.zeros((16, 16), np.uint8)
    structure[:, 4:8] = 1  # a channel along y
    assert physics.transport(structure, 1, "y").percolates
    assert not physics.transport(structure, 1, "x").percolates
    np.testing.assert_array_equal(
        metrics.lineal_path(ALLOY, 1, axis="x").probability,
        metrics.lineal_path(ALLOY, 1, axis=1).probability,
    )
    assert set(volume.per_axis({"Z": ALLOY, 2: ALLOY})) == {0, 2}
    with pytest.raises(InputError, match="given twice"):
        volume.per_axis({"x": ALLOY, -1: ALLOY})
    with pytest.raises(InputError, match="Give at least one transport axis"):
        datasets.transport_labels(ALLOY, 1, axes=())
