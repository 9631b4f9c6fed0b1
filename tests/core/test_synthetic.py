"""Generated microstructures (core/synthetic.py) and napari's generated samples built on them."""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pytest

from napari_microstructure import _sample_data
from napari_microstructure.core import synthetic
from napari_microstructure.core.errors import InputError


@pytest.mark.parametrize("family", synthetic.ALL_FAMILIES)
def test_every_family_reaches_about_its_volume_fraction(family):
    rng = np.random.default_rng(0)
    parameters = synthetic.random_parameters(family, rng, (0.4, 0.4))
    image = synthetic.generate(family, (96, 96), seed=1, **parameters)
    labels = {0, 1, 2} if family == "interphase" else {0, 1}
    assert image.shape == (96, 96) and image.dtype == np.uint8 and set(np.unique(image)) <= labels
    assert abs((image == 1).mean() - 0.4) < 0.12


@pytest.mark.parametrize("family", synthetic.ALL_FAMILIES)
def test_generate_is_the_family_function_and_is_seeded(family):
    function = getattr(synthetic, family)
    by_name = synthetic.generate(family, (40, 48), 5, volume_fraction=0.3)
    np.testing.assert_array_equal(by_name, function((40, 48), volume_fraction=0.3, seed=5))
    np.testing.assert_array_equal(
        by_name, synthetic.generate(family, (40, 48), 5, volume_fraction=0.3)
    )
    assert not np.array_equal(
        by_name, synthetic.generate(family, (40, 48), 6, volume_fraction=0.3)
    )


def test_thresholded_fields_have_the_exact_fraction():
    field = synthetic.gaussian_field(
        (128, 128), volume_fraction=0.3, correlation_length=6.0, seed=3
    )
    assert int(field.sum()) == round(0.3 * 128 * 128)
    boundaries = synthetic.cell_boundaries((64, 80), volume_fraction=0.2, seed=1)
    assert int(boundaries.sum()) == round(0.2 * 64 * 80)
    particles = synthetic.particle_dispersion((128, 128), area_fraction=0.2, seed=3)
    assert particles.mean() == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("family", synthetic.ALL_FAMILIES)
def test_3d_families_have_the_exact_fraction_and_are_seeded(family):
    parameters = synthetic.random_parameters(family, np.random.default_rng(2), (0.35, 0.35), 3)
    volume = synthetic.generate(family, (20, 24, 28), 5, **parameters)
    assert volume.shape == (20, 24, 28) and volume.dtype == np.uint8
    assert int((volume == 1).sum()) == round(0.35 * 20 * 24 * 28)
    np.testing.assert_array_equal(
        volume, synthetic.generate(family, (20, 24, 28), 5, **parameters)
    )
    assert not np.array_equal(volume, synthetic.generate(family, (20, 24, 28), 6, **parameters))


def test_3d_families_keep_their_shapes():
    """Spheres are round, ellipsoids long along their angle, the anisotropic field long along
    its longest correlation length, and the cell network's faces thin."""
    from scipy import ndimage

    def extent(labels, axis):  # mean run length of phase 1 along an axis
        runs = np.diff(np.moveaxis(labels, axis, -1).astype(int), axis=-1)
        return labels.sum() / max(int((runs == 1).sum()), 1)

    field = synthetic.anisotropic_field(
        (32, 32, 32),
        volume_fraction=0.5,
        correlation_length_z=8.0,
        correlation_length_y=2.0,
        correlation_length_x=2.0,
        seed=1,
    )
    assert extent(field, 0) > 2 * extent(field, 1)
    ellipsoids = synthetic.oriented_ellipses(
        (32, 32, 32), volume_fraction=0.2, semi_major=8.0, aspect_ratio=4.0, seed=1
    )
    assert extent(ellipsoids, 2) > 2 * extent(ellipsoids, 1)
    spheres = synthetic.overlapping_discs((32, 32, 32), volume_fraction=0.1, radius=4.0, seed=1)
    assert extent(spheres, 0) == pytest.approx(extent(spheres, 2), rel=0.3)
    cells = synthetic.cell_boundaries((32, 32, 32), volume_fraction=0.2, cell_size=12.0, seed=1)
    clusters = np.bincount(ndimage.label(cells)[0].ravel())[1:]
    assert clusters.max() > 0.95 * clusters.sum()  # one network of faces, a few specks aside


#: Per family, the sum of phase 1's flat indices in a 40x48 sample, before 3D support came.
EXPECTED_2D_CHECKSUMS = [1036397, 1194735, 1372517, 1195239, 724201]


def test_the_2d_families_are_what_they_were():
    """3D support left the 2D samples unchanged, pixel for pixel."""
    rng = np.random.default_rng(7)
    checksums = [
        int(
            np.flatnonzero(
                synthetic.generate(f, (40, 48), 3, **synthetic.random_parameters(f, rng))
            ).sum()
        )
        for f in synthetic.FAMILIES
    ]
    assert checksums == EXPECTED_2D_CHECKSUMS


def test_a_fibre_network_spans_at_a_low_fraction():
    """At 20 % long fibres span the image; discs covering as much do not."""
    from napari_microstructure.core.physics import percolates

    fibres = synthetic.fibre_network(
        (128, 128), volume_fraction=0.2, fibre_length=60.0, fibre_width=2.0, seed=3
    )
    assert fibres.mean() == pytest.approx(0.2, abs=0.03)
    assert percolates(fibres == 1, 1)
    discs = synthetic.overlapping_discs((128, 128), volume_fraction=0.2, radius=4.0, seed=3)
    assert not percolates(discs == 1, 1)


@pytest.mark.parametrize("shape", [(96, 96), (32, 32, 32)])
def test_an_interphase_lies_between_the_other_two_phases(shape):
    """Phase 1 is the layer of the given fraction between phases 0 and 2: they barely touch."""
    image = synthetic.interphase(shape, volume_fraction=0.25, correlation_length=5.0, level=0.5)
    assert set(np.unique(image)) == {0, 1, 2}
    assert int((image == 1).sum()) == round(0.25 * image.size)
    assert (image == 2).mean() < (image == 0).mean()  # the level lies above the mean
    contacts = faces = 0
    for axis, n in enumerate(image.shape):
        first, second = np.take(image, range(n - 1), axis), np.take(image, range(1, n), axis)
        contacts += int(np.sum((first != 1) & (second != 1) & (first != second)))
        faces += first.size
    assert contacts < 0.002 * faces


def test_matrix_as_phase_one_inverts_the_inclusions():
    discs = synthetic.overlapping_discs((64, 64), volume_fraction=0.7, phase_1="matrix", seed=2)
    assert discs.mean() == pytest.approx(0.7, abs=0.1)
    ellipses = synthetic.oriented_ellipses((64, 64), volume_fraction=0.7, phase_1="matrix")
    assert ellipses.mean() == pytest.approx(0.7, abs=0.1)


def test_three_phase_puts_particles_on_a_two_phase_field():
    image = synthetic.three_phase((96, 96), seed=4)
    assert set(np.unique(image)) == {0, 1, 2}
    assert (image == 2).mean() == pytest.approx(0.12, abs=0.03)


def test_grey_field_spans_the_8_bit_range():
    grey = synthetic.grey_field((64, 64), seed=1)
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert len(np.unique(grey)) > 32


REFUSED = {
    "fraction 0": (synthetic.gaussian_field, {"volume_fraction": 0.0}, "volume_fraction"),
    "fraction 1.5": (synthetic.cell_boundaries, {"volume_fraction": 1.5}, "volume_fraction"),
    "fraction text": (synthetic.anisotropic_field, {"volume_fraction": "half"}, "volume_fraction"),
    "length 0": (synthetic.gaussian_field, {"correlation_length": 0}, "correlation_length"),
    "negative radius": (synthetic.overlapping_discs, {"radius": -2.0}, "radius"),
    "phase_1 unknown": (synthetic.oriented_ellipses, {"phase_1": "holes"}, "phase_1"),
    "aspect ratio NaN": (synthetic.oriented_ellipses, {"aspect_ratio": np.nan}, "aspect_ratio"),
    "cell size inf": (synthetic.cell_boundaries, {"cell_size": np.inf}, "cell_size"),
    "level beyond 3": (synthetic.interphase, {"level": 4.0}, "level"),
    "3D shape, 2D only": (synthetic.grey_field, {"shape": (16, 16, 16)}, "are 2D, at least"),
    "4D shape": (synthetic.gaussian_field, {"shape": (8, 8, 8, 8)}, "2D or 3D"),
    "z length in 2D": (synthetic.anisotropic_field, {"correlation_length_z": 2.0}, "3D shape"),
    "fibres wider than long": (
        synthetic.fibre_network,
        {"fibre_length": 4.0, "fibre_width": 5.0},
        "fibre_width",
    ),
    "z length 0": (
        synthetic.anisotropic_field,
        {"shape": (16, 16, 16), "correlation_length_z": 0},
        "correlation_length_z",
    ),
    "tiny shape": (synthetic.grey_field, {"shape": (4, 64)}, "at least 8x8"),
    "negative seed": (synthetic.particle_dispersion, {"seed": -1}, "seed"),
    "float seed": (synthetic.three_phase, {"seed": 1.5}, "seed"),
    "radius range": (synthetic.particle_dispersion, {"radius": (5.0, 2.0)}, "LOW <= HIGH"),
    "area fraction": (synthetic.particle_dispersion, {"area_fraction": 1.0}, "area_fraction"),
    "matrix fraction": (synthetic.three_phase, {"matrix_fraction": -0.1}, "matrix_fraction"),
}


@pytest.mark.parametrize(("function", "changes", "needle"), REFUSED.values(), ids=REFUSED)
def test_bad_parameters_are_refused_with_their_name(function, changes, needle):
    changes = dict(changes)
    shape = changes.pop("shape", (32, 32))
    with pytest.raises(InputError, match=needle):
        function(shape, **changes)


def test_generate_refuses_unknown_families_and_parameters():
    with pytest.raises(InputError, match="choose one of gaussian_field"):
        synthetic.generate("foam", (32, 32))
    with pytest.raises(InputError, match="choose one of gaussian_field"):
        synthetic.random_parameters("foam", np.random.default_rng(0))
    with pytest.raises(InputError, match="no parameter radius: its parameters are"):
        synthetic.generate("gaussian_field", (32, 32), radius=3.0)


# --------------------------------------------------------------------------------------------
# napari's generated samples


@pytest.mark.parametrize(
    ("function", "n_phases"),
    [
        (_sample_data.gaussian_field_sample, 2),
        (_sample_data.particles_sample, 2),
        (_sample_data.three_phase_sample, 3),
    ],
)
def test_generated_samples_are_seeded_label_layers(function, n_phases: int) -> None:
    ((data, kwargs, layer_type),) = function()
    ((again, _, _),) = function()
    assert layer_type == "labels"
    assert data.shape == (256, 256) and data.dtype == np.uint8
    assert len(np.unique(data)) == n_phases
    np.testing.assert_array_equal(data, again)  # seeded: the same every call
    assert kwargs["metadata"]["parameters"]["seed"] == 0
    assert kwargs["metadata"]["description"]


@pytest.mark.parametrize("key", _sample_data.GENERATED_SAMPLES)
def test_generated_sample_metadata_remakes_the_layer(key: str) -> None:
    """The generator and parameters recorded in a sample's metadata give back its data."""
    ((data, kwargs, _),) = getattr(_sample_data, f"{key}_sample")()
    metadata = kwargs["metadata"]
    module, name = metadata["generator"].rsplit(".", 1)
    parameters = dict(metadata["parameters"])
    remade = getattr(import_module(module), name)(parameters.pop("shape"), **parameters)
    np.testing.assert_array_equal(remade, data)
    assert kwargs["name"] == key


def test_the_grey_sample_is_an_image_layer() -> None:
    ((grey, kwargs, layer_type),) = _sample_data.grey_field_sample()
    assert layer_type == "image" and kwargs["colormap"] == "gray" and len(np.unique(grey)) > 32
