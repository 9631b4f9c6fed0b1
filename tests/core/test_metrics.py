"""Tests of core.metrics: analytic cases, brute-force definitions, invariances, the measured floors
of the real micrographs (docs/method.md section 7) and cross-checks against PoreSpy where it computes
the same quantity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from napari_microstructure._sample_data import load_sample
from napari_microstructure.core import metrics as m


def _micrograph(name: str) -> np.ndarray:
    """A shipped 256x256 micrograph of Li et al. 2018."""
    return load_sample(f"{name}_256")


def _blobs(shape, sigma=2.0, fraction=0.4, seed=0) -> np.ndarray:
    """Isotropic two-phase random field: smoothed noise thresholded at the given fraction."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field > np.quantile(field, 1 - fraction)).astype(np.uint8)


def _stripes(n_rows, n_cols, period, width) -> np.ndarray:
    """Phase 1 in columns j with j % period < width (stripes normal to axis 1)."""
    cols = (np.arange(n_cols) % period) < width
    return np.broadcast_to(cols, (n_rows, n_cols)).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# volume fractions and validation
# ------------------------------------------------------------------------------------------


def test_volume_fractions_three_phases():
    img = np.zeros((10, 10), dtype=np.int32)
    img[:3] = 2
    img[3:4] = 7
    vf = m.volume_fractions(img)
    assert list(vf) == [0, 2, 7]
    assert vf == pytest.approx({0: 0.6, 2: 0.3, 7: 0.1})
    np.testing.assert_array_equal(m.phases_of(img), [0, 2, 7])
    assert all(type(k) is int for k in vf)


def test_validation_errors():
    img = np.zeros((8, 8), dtype=np.uint8)
    img[:4] = 1
    with pytest.raises(ValueError, match="2D or 3D"):
        m.two_point(np.zeros(8, dtype=int), 0)
    with pytest.raises(ValueError, match="2D or 3D"):
        m.volume_fractions(np.zeros((2, 2, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="Phase 3 does not occur"):
        m.two_point(img, 3)
    for func in (m.specific_surface, m.connectivity):
        with pytest.raises(ValueError, match="does not occur"):
            func(img, 5)
    with pytest.raises(ValueError, match="does not occur"):
        m.lineal_path(img, 5, axis=0)
    with pytest.raises(ValueError, match="out of range"):
        m.lineal_path(img, 1, axis=2)
    with pytest.raises(ValueError, match="out of range"):
        m.chord_lengths(img, 1, axis=-3)
    with pytest.raises(ValueError, match="whole numbers"):
        m.volume_fractions(img + 0.5)
    with pytest.raises(ValueError, match="max_radius"):
        m.two_point(img, 1, max_radius=5)
    with pytest.raises(ValueError, match="same dimension"):
        m.e_s2(img, np.zeros((8, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="one name per"):
        m.compare(img, [img], names=["a", "b"])
    # bool and integral float images are accepted
    assert m.volume_fractions(img.astype(bool)) == {0: 0.5, 1: 0.5}
    assert m.volume_fractions(img.astype(float)) == {0: 0.5, 1: 0.5}


# ------------------------------------------------------------------------------------------
# two-point statistics
# ------------------------------------------------------------------------------------------


def _brute_force_radial_s2(ind: np.ndarray, max_radius: int) -> np.ndarray:
    """S2 by explicit periodic shifts of every lag, binned by rint of the minimal-image length."""
    sums = np.zeros(max_radius + 1)
    counts = np.zeros(max_radius + 1)
    x = ind.astype(float)
    for lag in itertools.product(*[range(n) for n in ind.shape]):
        minimal = [min(d, n - d) for d, n in zip(lag, ind.shape)]
        k = int(np.rint(np.sqrt(sum(d * d for d in minimal))))
        if k <= max_radius:
            shifted = np.roll(x, shift=[-d for d in lag], axis=tuple(range(x.ndim)))
            sums[k] += np.mean(x * shifted)
            counts[k] += 1
    return sums / counts


@pytest.mark.parametrize(
    "shape, max_radius", [((24, 20), None), ((24, 20), 10), ((8, 12, 10), 4), ((9, 11, 10), 2)]
)
def test_two_point_matches_brute_force(shape, max_radius):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 3, size=shape)
    tp = m.two_point(img, 2, max_radius=max_radius)
    L = min(shape) // 4 if max_radius is None else max_radius
    np.testing.assert_array_equal(tp.radius, np.arange(L + 1))
    np.testing.assert_allclose(tp.s2, _brute_force_radial_s2(img == 2, L), atol=1e-12)
    phi = np.mean(img == 2)
    assert tp.volume_fraction == pytest.approx(phi)
    assert tp.s2[0] == pytest.approx(phi)
    assert tp.autocovariance[0] == pytest.approx(1.0)
    np.testing.assert_allclose(tp.autocovariance, (tp.s2 - phi**2) / (phi - phi**2))
    # the full map: zero lag at index 0, lag (1, 0, ...) explicit
    assert tp.s2_map.shape == shape
    assert tp.s2_map.flat[0] == pytest.approx(phi)
    x = (img == 2).astype(float)
    assert tp.s2_map[(1,) + (0,) * (img.ndim - 1)] == pytest.approx(
        np.mean(x * np.roll(x, -1, axis=0))
    )


@pytest.mark.parametrize("period, width", [(8, 4), (16, 8), (10, 5)])
def test_two_point_along_stripes_is_a_triangle_wave(period, width):
    img = _stripes(40, 20 * period, period, width)
    L = 40 // 4
    tp = m.two_point_along(img, 1, axis=1, max_length=L)
    k = np.arange(L + 1)
    mod = k % period
    expected_s2 = np.abs(width - mod) / period  # overlap of a stripe with its shifted copy
    np.testing.assert_allclose(tp.s2, expected_s2, atol=1e-12)
    np.testing.assert_allclose(tp.autocovariance, 4 * np.abs(width - mod) / period - 1, atol=1e-12)
    # along the stripes the phase is perfectly correlated
    along = m.two_point_along(img, 1, axis=0)
    np.testing.assert_allclose(along.autocovariance, 1.0, atol=1e-12)
    # the axis line of the full map
    full = m.two_point(img, 1).s2_map
    np.testing.assert_allclose(tp.s2, full[0, : L + 1], atol=1e-12)


def test_two_point_along_3d_matches_full_map():
    img = _blobs((20, 24, 28), sigma=1.5)
    full = m.two_point(img, 1).s2_map
    for axis in range(3):
        tp = m.two_point_along(img, 1, axis=axis)
        line = np.moveaxis(full, axis, 0)[:, 0, 0][: len(tp.s2)]
        np.testing.assert_allclose(tp.s2, line, atol=1e-12)


def test_autocovariance_of_bernoulli_field_vanishes():
    rng = np.random.default_rng(2)
    img = (rng.random((512, 512)) < 0.3).astype(np.uint8)
    for phase in (0, 1):
        c = m.two_point(img, phase).autocovariance
        assert c[0] == pytest.approx(1.0)
        assert np.max(np.abs(c[1:])) < 0.01
    vol = (rng.random((64, 64, 64)) < 0.3).astype(np.uint8)
    c = m.two_point(vol, 1).autocovariance
    assert c[0] == pytest.approx(1.0)
    assert np.max(np.abs(c[1:])) < 0.01


def test_two_point_of_a_filling_phase_uses_the_constant_convention():
    tp = m.two_point(np.ones((16, 16), dtype=np.uint8), 1)
    np.testing.assert_allclose(tp.s2, 1.0)
    np.testing.assert_allclose(tp.autocovariance, [1, 0, 0, 0, 0])


# ------------------------------------------------------------------------------------------
# lineal path and chord lengths
# ------------------------------------------------------------------------------------------


def _brute_force_lineal(ind: np.ndarray, axis: int, max_length: int) -> np.ndarray:
    return np.array(
        [
            sliding_window_view(ind, length, axis=axis).all(axis=-1).mean()
            for length in range(1, max_length + 1)
        ]
    )


@pytest.mark.parametrize("shape", [(40, 36), (12, 14, 16)])
def test_lineal_path_matches_sliding_windows(shape):
    img = _blobs(shape, sigma=1.5, fraction=0.6, seed=3)
    for axis in range(img.ndim):
        for phase in (0, 1):
            lp = m.lineal_path(img, phase, axis, max_length=shape[axis])
            np.testing.assert_array_equal(lp.length, np.arange(1, shape[axis] + 1))
            np.testing.assert_allclose(
                lp.probability, _brute_force_lineal(img == phase, axis, shape[axis]), atol=1e-12
            )
            assert lp.probability[0] == pytest.approx(np.mean(img == phase))


def test_lineal_path_analytic_cases():
    full = np.zeros((32, 32), dtype=np.uint8)
    for axis in (0, 1):
        lp = m.lineal_path(full, 0, axis)
        assert len(lp.length) == 8
        np.testing.assert_allclose(lp.probability, 1.0)
    # isolated single pixels (checkerboard): phi at l = 1, nothing longer
    checker = (np.indices((32, 32)).sum(axis=0) % 2).astype(np.uint8)
    lp = m.lineal_path(checker, 1, 0)
    assert lp.probability[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(lp.probability[1:], 0.0)
    # stripes of width w, period p, N = 12 p columns, non-periodic windows
    p, w, n = 10, 4, 120
    img = _stripes(30, n, p, w)
    ell = np.arange(1, 31)
    lp = m.lineal_path(img, 1, axis=1, max_length=30)
    expected = (n // p) * np.maximum(0, w - ell + 1) / (n - ell + 1)
    np.testing.assert_allclose(lp.probability, expected, atol=1e-12)
    np.testing.assert_allclose(m.lineal_path(img, 1, axis=0).probability, w / p)
    # Bernoulli: L(l) = phi**l on average
    rng = np.random.default_rng(4)
    noise = (rng.random((400, 400)) < 0.7).astype(np.uint8)
    lp = m.lineal_path(noise, 1, 1, max_length=6)
    np.testing.assert_allclose(lp.probability, 0.7 ** np.arange(1, 7), rtol=0.02)


def test_chord_lengths_of_stripes():
    p, w = 10, 4
    img = _stripes(30, 120, p, w)
    ch = m.chord_lengths(img, 1, axis=1)
    assert ch.length[0] == 1 and len(ch.length) == 120
    expected = np.zeros(120, dtype=int)
    expected[w - 1] = 30 * (120 // p - 1)  # the first stripe of each row touches the border
    np.testing.assert_array_equal(ch.count, expected)
    assert ch.mean == pytest.approx(w)
    assert ch.probability[w - 1] == pytest.approx(1.0)
    with_border = m.chord_lengths(img, 1, axis=1, include_border=True)
    assert with_border.count[w - 1] == 30 * (120 // p)
    # gaps of phase 0 have length p - w; the last one touches the right border
    gaps = m.chord_lengths(img, 0, axis=1)
    assert gaps.count[p - w - 1] == 30 * (120 // p - 1)
    assert gaps.count.sum() == gaps.count[p - w - 1]
    # along the stripes every chord spans the image: none unless border chords count
    along = m.chord_lengths(img, 1, axis=0)
    assert along.count.sum() == 0 and np.all(along.probability == 0) and np.isnan(along.mean)
    along = m.chord_lengths(img, 1, axis=0, include_border=True)
    assert along.count[29] == 120 * w // p and along.count.sum() == along.count[29]


def test_chord_lengths_3d_and_consistency_with_lineal_path():
    img = _blobs((16, 18, 20), sigma=1.2, fraction=0.5, seed=5)
    for axis in range(3):
        ch = m.chord_lengths(img, 1, axis, include_border=True)
        # every phase pixel belongs to exactly one chord
        assert (ch.length * ch.count).sum() == np.count_nonzero(img == 1)
        # windows of length l counted from the chords = lineal path numerator
        n = img.shape[axis]
        lp = m.lineal_path(img, 1, axis, max_length=n)
        windows = [
            (np.maximum(0, ch.length - length + 1) * ch.count).sum() for length in range(1, n + 1)
        ]
        lines = img.size // n
        expected = np.array(windows) / (lines * (n - lp.length + 1))
        np.testing.assert_allclose(lp.probability, expected)


# ------------------------------------------------------------------------------------------
# specific surface and connectivity
# ------------------------------------------------------------------------------------------


def test_specific_surface_exact_cases():
    n = 64
    half = np.zeros((n, n), dtype=np.uint8)
    half[:, : n // 2] = 1
    assert m.specific_surface(half, 1) == pytest.approx(1 / n)
    assert m.specific_surface(half, 0) == pytest.approx(1 / n)
    square = np.zeros((n, 48), dtype=np.uint8)
    square[10:30, 5:25] = 1
    assert m.specific_surface(square, 1) == pytest.approx(4 * 20 / (n * 48))
    checker = (np.indices((n, n)).sum(axis=0) % 2).astype(np.uint8)
    assert m.specific_surface(checker, 1) == pytest.approx(2 * n * (n - 1) / n**2)
    cube = np.zeros((20, 22, 24), dtype=np.uint8)
    cube[3:11, 4:12, 5:13] = 1
    assert m.specific_surface(cube, 1) == pytest.approx(6 * 8**2 / cube.size)
    slab = np.zeros((20, 22, 24), dtype=np.uint8)
    slab[:, :, :7] = 1
    assert m.specific_surface(slab, 0) == pytest.approx(20 * 22 / slab.size)
    # three phases: the interfaces of each phase with all others
    three = np.zeros((10, 30), dtype=np.uint8)
    three[:, 10:20] = 1
    three[:, 20:] = 2
    assert m.specific_surface(three, 1) == pytest.approx(2 * 10 / 300)
    assert m.specific_surface(three, 2) == pytest.approx(10 / 300)


def test_connectivity_blocks_and_bars():
    img = np.zeros((40, 50), dtype=np.uint8)
    img[2:10, 2:10] = 1  # 64 px
    img[20:30, 20:30] = 1  # 100 px
    img[10:12, 10:12] = 1  # touches the first block at a corner only: separate (4 px)
    conn = m.connectivity(img, 1)
    assert conn.n_clusters == 3
    assert conn.clusters_per_area == pytest.approx(3 / img.size)
    assert conn.largest_cluster_fraction == pytest.approx(100 / 168)
    assert conn.spans == (False, False)
    background = m.connectivity(img, 0)
    assert background.n_clusters == 1 and background.largest_cluster_fraction == 1.0
    assert background.spans == (True, True)

    bar = np.zeros((40, 50), dtype=np.uint8)
    bar[15:18, :] = 1  # spans axis 1
    assert m.connectivity(bar, 1).spans == (False, True)
    # phase 0 lies above and below the bar: two clusters, each touching both faces normal to
    # axis 1 but only one of the faces normal to axis 0
    two_parts = m.connectivity(bar, 0)
    assert two_parts.n_clusters == 2 and two_parts.spans == (False, True)
    assert two_parts.largest_cluster_fraction == pytest.approx(22 / 37)

    # touching both faces with *different* clusters is not spanning
    split = np.zeros((30, 30), dtype=np.uint8)
    split[:, :14] = 1
    split[:, 16:] = 1
    split[15, :] = 0  # cut both halves: top-left/bottom-left/top-right/bottom-right
    conn = m.connectivity(split, 1)
    assert conn.n_clusters == 4 and conn.spans == (False, False)

    # a bar that stops one pixel short of a face does not span
    near = np.zeros((20, 20), dtype=np.uint8)
    near[1:, 8:10] = 1
    assert m.connectivity(near, 1).spans == (False, False)
    near[0, 8] = 1
    assert m.connectivity(near, 1).spans == (True, False)
    near[:-1, 8:10] = near[1:, 8:10].copy()
    near[-1, 8:10] = 0
    assert m.connectivity(near, 1).spans == (False, False)

    vol = np.zeros((12, 14, 16), dtype=np.uint8)
    vol[:, 5:7, 5:7] = 1  # a rod along axis 0
    conn = m.connectivity(vol, 1)
    assert conn.n_clusters == 1 and conn.spans == (True, False, False)
    assert conn.clusters_per_area == pytest.approx(1 / vol.size)


# ------------------------------------------------------------------------------------------
# errors, compare, floor
# ------------------------------------------------------------------------------------------


def test_errors_are_zero_for_identity_and_periodic_shift():
    img = _blobs((96, 80), sigma=2.5, fraction=0.35, seed=6)
    assert m.e_s2(img, img) == 0 and m.e_vf(img, img) == 0 and m.e_lp(img, img) == 0
    shifted = np.roll(img, (17, -23), axis=(0, 1))
    assert m.e_s2(img, shifted) < 1e-12
    assert m.e_vf(img, shifted) == 0
    vol = _blobs((24, 28, 32), sigma=1.5, seed=7)
    assert m.e_s2(vol, np.roll(vol, (5, 9, -3), axis=(0, 1, 2))) < 1e-12


def test_radial_s2_is_exactly_invariant_under_transpose_and_flips_but_lp_is_not():
    # radial averaging over the lags (a, b) and (b, a), d and -d is symmetric: exact invariance
    img = _blobs((96, 80), sigma=2.0, fraction=0.4, seed=8)
    assert m.e_s2(img, img.T) < 1e-12
    assert m.e_s2(img, img[::-1, ::-1]) < 1e-12
    # which makes radially averaged S2 blind to a rotated anisotropic structure
    stripes = _stripes(64, 64, 8, 4)
    assert m.e_s2(stripes, stripes.T) < 1e-12
    assert m.e_lp(stripes, stripes.T) > 0.5


def test_errors_of_similar_and_dissimilar_structures():
    a = _blobs((128, 128), sigma=2.5, fraction=0.4, seed=9)
    b = _blobs((128, 128), sigma=2.5, fraction=0.4, seed=10)  # same statistics
    c = _blobs((128, 128), sigma=6.0, fraction=0.4, seed=11)  # coarser
    rng = np.random.default_rng(12)
    noise = (rng.random((128, 128)) < np.mean(a == 1)).astype(np.uint8)
    assert m.e_s2(a, b) < 0.03
    assert m.e_s2(a, c) > 0.15
    assert m.e_s2(a, noise) > 0.15  # RMS of C_orig(r > 0): noise has C = 0 there
    assert m.e_lp(a, b) < 0.1 < m.e_lp(a, noise)
    # e_vf: worst phase of three
    x = np.zeros((20, 20), dtype=np.uint8)
    x[:5] = 1
    x[5:8] = 2
    y = np.zeros((20, 20), dtype=np.uint8)
    y[:4] = 1
    y[4:10] = 2
    assert m.e_vf_by_phase(x, y) == pytest.approx({0: 0.1, 1: 0.05, 2: 0.15})
    assert m.e_vf(x, y) == pytest.approx(0.15)


def test_e_s2_definition_by_hand():
    a = _blobs((64, 64), sigma=2.0, fraction=0.3, seed=13)
    b = _blobs((64, 64), sigma=3.0, fraction=0.5, seed=14)
    for p in (0, 1):
        ca, cb = m.two_point(a, p).autocovariance, m.two_point(b, p).autocovariance
        assert m.e_s2_by_phase(a, b)[p] == pytest.approx(np.sqrt(np.mean((cb - ca) ** 2)))
        phi = np.mean(a == p)
        worst = max(
            np.sqrt(
                np.mean(
                    (m.lineal_path(b, p, ax).probability - m.lineal_path(a, p, ax).probability)
                    ** 2
                )
            )
            / phi
            for ax in (0, 1)
        )
        assert m.e_lp_by_phase(a, b)[p] == pytest.approx(worst)


def test_reconstruction_of_another_size_is_compared_on_the_original_radii():
    a = _blobs((64, 64), sigma=2.0, seed=15)
    tiled = np.tile(a, (2, 3))  # periodic S2 of the tiling equals that of a at every lag
    assert m.e_s2(a, tiled) < 1e-12
    assert m.e_vf(a, tiled) < 1e-12
    # the smaller image sets nothing: L = 64 // 4 = 16 on both
    assert m.e_s2(tiled, a) > 0  # L = 32 now, radii a cannot tell apart from wrapped ones


def test_a_reconstruction_smaller_than_the_radii_is_compared_on_the_radii_it_allows():
    a = _blobs((64, 64), sigma=2.0, seed=15)
    small = a[:20, :24]  # the original's radii go to 16; 20 // 2 = 10 is what it allows
    assert m.comparison_max_length(a.shape, small.shape) == 10
    assert m.comparison_max_length(a.shape, (32, 40)) == 16  # large enough: the original's
    expected = np.sqrt(
        np.mean(
            (m.two_point(small, 1, 10).autocovariance - m.two_point(a, 1, 10).autocovariance) ** 2
        )
    )
    assert m.e_s2_by_phase(a, small)[1] == pytest.approx(expected)
    table = m.compare(a, [small, a], names=["small", "same"])  # one table, two radius ranges
    assert table.loc[1, "e_s2[phase 1]"] == pytest.approx(expected)
    assert table.loc[2, "e_s2"] == 0 and np.isfinite(table.loc[1, "e_lp"])


def test_a_reconstruction_that_lost_a_phase_still_compares():
    a = _blobs((64, 64), sigma=2.0, fraction=0.3, seed=16)
    flat = np.zeros_like(a)
    assert m.e_vf(a, flat) == pytest.approx(np.mean(a == 1))
    assert np.isfinite(m.e_s2(a, flat)) and m.e_s2(a, flat) > 0.1
    assert m.e_lp_by_phase(a, flat)[1] > 0.3
    table = m.compare(a, [flat])
    assert table.loc[1, "n_clusters[phase 1]"] == 0


def test_compare_table():
    a = _blobs((64, 64), sigma=2.0, fraction=0.3, seed=17)
    a[a == 0] = 2 * (np.arange(a.size).reshape(a.shape)[a == 0] % 3 == 0)  # phases 0, 1, 2
    b = np.roll(a, 5, axis=1)
    c = _blobs((64, 64), sigma=3.0, fraction=0.5, seed=18)
    table = m.compare(a, [b, c], names=["shifted", "other"])
    assert list(table["name"]) == ["original", "shifted", "other"]
    assert list(table["shape"]) == ["64x64"] * 3
    per_phase = [
        "vf", "e_vf", "e_s2", "e_lp", "n_clusters", "clusters_per_area",
        "largest_cluster_fraction", "spans_0", "spans_1", "specific_surface",
    ]  # fmt: skip
    expected = ["name", "shape", "e_vf", "e_s2", "e_lp"] + [
        f"{q}[phase {p}]" for p in (0, 1, 2) for q in per_phase
    ]
    assert list(table.columns) == expected
    original = table.iloc[0]
    assert original["e_vf"] == original["e_s2"] == original["e_lp"] == 0
    assert table.loc[1, "e_s2"] < 1e-12 and table.loc[1, "e_vf"] == 0
    assert table.loc[2, "e_s2"] == pytest.approx(m.e_s2(a, c))
    assert table.loc[2, "e_vf"] == pytest.approx(m.e_vf(a, c))
    assert table.loc[2, "e_lp"] == pytest.approx(m.e_lp(a, c))
    assert table.loc[2, "e_s2[phase 2]"] == pytest.approx(m.e_s2_by_phase(a, c)[2])
    conn = m.connectivity(c, 1)
    assert table.loc[2, "n_clusters[phase 1]"] == conn.n_clusters
    largest = table.loc[2, "largest_cluster_fraction[phase 1]"]
    assert largest == pytest.approx(conn.largest_cluster_fraction)
    assert table.loc[2, "spans_0[phase 1]"] == conn.spans[0]
    assert table.loc[0, "specific_surface[phase 2]"] == pytest.approx(m.specific_surface(a, 2))
    assert table.loc[0, "vf[phase 1]"] == pytest.approx(np.mean(a == 1))
    # 3D: three spans columns and default names
    vol = _blobs((16, 16, 16), sigma=1.5)
    table3 = m.compare(vol, [np.roll(vol, 3, axis=2)])
    assert "spans_2[phase 1]" in table3.columns
    assert list(table3["name"]) == ["original", "reconstruction 1"]


def test_floor_of_a_homogeneous_field_2d_and_3d():
    fl = m.floor(_blobs((128, 128), sigma=2.0, seed=19))
    assert fl["piece_shape"] == (64, 64) and fl["max_length"] == 16
    assert 0 < fl["e_s2"] < 0.05 and fl["e_vf"] < 0.05 and fl["e_lp"] < 0.2
    odd = m.floor(_blobs((41, 50), sigma=1.0, seed=20))
    assert odd["piece_shape"] == (20, 25)
    fl3 = m.floor(_blobs((32, 32, 32), sigma=1.5, seed=21))
    assert fl3["piece_shape"] == (16, 16, 16) and fl3["max_length"] == 4
    assert 0 < fl3["e_s2"] < 0.05


@pytest.mark.parametrize("name, expected", [("alloy", 0.020), ("carbonate", 0.028)])
def test_floor_of_the_real_micrographs(name, expected):
    """docs/method.md section 7: measured floors of e_S2, top-left vs bottom-right 128x128 quadrant."""
    img = _micrograph(name)
    fl = m.floor(img)
    assert fl["piece_shape"] == (128, 128)
    assert fl["e_s2"] == pytest.approx(expected, abs=0.003)
    h = 128
    assert fl["e_s2"] == pytest.approx(m.e_s2(img[:h, :h], img[h:, h:]))
    assert fl["e_vf"] == pytest.approx(m.e_vf(img[:h, :h], img[h:, h:]))


# ------------------------------------------------------------------------------------------
# cross-checks against PoreSpy (only where the definitions agree)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def porespy():
    return pytest.importorskip("porespy")


def _reference_images():
    images = {"blobs": _blobs((256, 256), sigma=2.0, fraction=0.35, seed=22)}
    for name in ("alloy", "carbonate"):
        images[name] = _micrograph(name)
    return images


def test_volume_fraction_against_porespy(porespy):
    """porespy.metrics.porosity (mean of a boolean image) and phase_fraction: the same phi."""
    three = np.random.default_rng(23).integers(0, 3, size=(30, 40))
    for img in list(_reference_images().values()) + [three]:
        vf = m.volume_fractions(img)
        pf = porespy.metrics.phase_fraction(img)
        for p in vf:
            assert vf[p] == pytest.approx(porespy.metrics.porosity(img == p))
            assert vf[p] == pytest.approx(pf[p])


def test_two_point_against_porespy(porespy):
    """porespy.metrics.two_point_correlation radially averages a *non-periodic* (zero-padded,
    unbiased) S2 over half-open distance bins. With bins [k - 1/2, k + 1/2) it averages exactly
    our lag set of radius k (rint binning, every lag equally weighted); ``probability_scaled`` is
    then the radial S2. The two estimators differ only by the pairs that wrap around: at a lag
    d a fraction f <= (|d_0| + |d_1|) / N of our pairs wrap, so |S2_ours - S2_porespy| <= f,
    which bounds the difference by sqrt(2) (k + 1/2) / N at radius k. r = 0 agrees exactly."""
    for name, img in _reference_images().items():
        L = min(img.shape) // 4
        for phase in (0, 1):
            ours = m.two_point(img, phase)
            ref = porespy.metrics.two_point_correlation(img == phase, bins=np.arange(-0.5, L + 1))
            np.testing.assert_allclose(ref.bin_centers, ours.radius, atol=1e-12)
            assert ref.probability_scaled[0] == pytest.approx(ours.s2[0], abs=1e-12)
            bound = np.sqrt(2) * (ours.radius + 0.5) / min(img.shape)
            assert np.all(np.abs(ref.probability_scaled - ours.s2) <= bound), name
            # in practice much closer near the origin than the bound: a binning error
            # (one radius off) would show here as 1e-2 or more
            assert np.max(np.abs(ref.probability_scaled - ours.s2)[:6]) < 3e-3, name


def test_lineal_path_against_porespy(porespy):
    """porespy.filters.distance_transform_lin(mode='forward') gives each phase pixel the number
    of phase pixels from the start of its run (image edge = end of run) up to it, so a segment
    of l pixels ending at x lies in the phase iff that value >= l: L(l) = #{value >= l} /
    (lines * (n - l + 1)), exactly our non-periodic definition."""
    for name, img in _reference_images().items():
        for phase in (0, 1):
            for axis in (0, 1):
                dt = porespy.filters.distance_transform_lin(
                    img == phase, axis=axis, mode="forward"
                )
                n = img.shape[axis]
                ell = np.arange(1, 65)
                ref = np.array([np.count_nonzero(dt >= length) for length in ell]) / (
                    (img.size // n) * (n - ell + 1)
                )
                ours = m.lineal_path(img, phase, axis, max_length=64).probability
                np.testing.assert_allclose(ours, ref, atol=1e-12, err_msg=name)


def test_chord_lengths_against_porespy(porespy):
    """porespy.filters.apply_chords draws the phase's chords on every other line parallel to
    ``axis`` and chord_counts lists their lengths. trim_edges=False keeps every chord (our
    include_border=True on those lines); trim_edges=True removes the chords touching any border
    of the sampled image: ours without border chords, on the sampled lines other than the first
    and last."""
    for name, img in _reference_images().items():
        for phase in (0, 1):
            for axis in (0, 1):
                ind = img == phase
                sample = [slice(None)] * 2
                sample[1 - axis] = slice(None, None, 2)
                for trim in (False, True):
                    chords = porespy.filters.apply_chords(
                        ind, spacing=1, axis=axis, trim_edges=trim
                    )
                    lengths = porespy.metrics.chord_counts(chords)
                    ref = np.bincount(lengths, minlength=img.shape[axis] + 1)[1:]
                    lines = img[tuple(sample)]
                    if trim:
                        inner = [slice(None)] * 2
                        inner[1 - axis] = slice(1, -1)
                        lines = lines[tuple(inner)]
                    ours = m.chord_lengths(lines, phase, axis, include_border=not trim).count
                    message = f"{name} phase {phase} axis {axis} trim {trim}"
                    np.testing.assert_array_equal(ours, ref, err_msg=message)


def test_spanning_against_porespy(porespy):
    """porespy.metrics.is_percolating(conn='min'): a face-connected cluster touches both faces
    normal to the axis, our ``spans``."""
    images = list(_reference_images().values())
    images.append(_blobs((24, 26, 28), sigma=1.0, fraction=0.3, seed=24))
    rng = np.random.default_rng(25)
    images += [(rng.random((60, 60)) < q).astype(np.uint8) for q in (0.45, 0.55, 0.6, 0.65)]
    for img in images:
        for phase in (0, 1):
            spans = m.connectivity(img, phase).spans
            ref = tuple(
                bool(porespy.metrics.is_percolating(img == phase, axis=ax, conn="min"))
                for ax in range(img.ndim)
            )
            assert spans == ref
