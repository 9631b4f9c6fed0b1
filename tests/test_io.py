"""Tests of napari_microstructure.io and of the shipped sample micrographs (no napari, no Qt)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_microstructure import _sample_data
from napari_microstructure.core.errors import InputError
from napari_microstructure.io import (
    IMAGE_SUFFIXES,
    ImageNotFoundError,
    atomic_outputs,
    check_outputs,
    read_image,
    read_tif_metadata,
    write_json,
    write_tif,
)

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, size=(32, 48), dtype=np.uint8)


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "array",
    [
        LABELS,
        (LABELS.astype(np.uint16) * 1000),
        RNG.random((32, 48), dtype=np.float32),
        RNG.integers(0, 3, size=(5, 16, 16), dtype=np.uint8),  # a small 3D volume
    ],
    ids=["uint8", "uint16", "float32", "volume-uint8"],
)
def test_tif_round_trip_keeps_values_dtype_and_shape(tmp_path: Path, array: np.ndarray) -> None:
    path = write_tif(tmp_path / "out.tif", array)
    back = read_image(path)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_tif_metadata_is_json_in_the_image_description(tmp_path: Path) -> None:
    metadata = {
        "seed": np.int64(7),
        "loss": np.float32(0.25),
        "weights": Path("/tmp/vgg19.pt"),
        "histogram": np.array([1, 2, 3]),
        "shape": "a caller's own shape entry must not confuse the reader",
    }
    path = write_tif(tmp_path / "out.tif", LABELS, metadata)
    with tifffile.TiffFile(path) as tif:
        description = json.loads(tif.pages.first.description)
    assert description["metadata"]["seed"] == 7
    assert read_tif_metadata(path) == {
        "seed": 7,
        "loss": 0.25,
        "weights": "/tmp/vgg19.pt",
        "histogram": [1, 2, 3],
        "shape": "a caller's own shape entry must not confuse the reader",
    }
    np.testing.assert_array_equal(read_image(path), LABELS)


def test_tif_without_metadata_reads_back_an_empty_dict(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "out.tif", LABELS)
    assert read_tif_metadata(path) == {}
    foreign = tmp_path / "foreign.tif"
    tifffile.imwrite(foreign, LABELS, description="made elsewhere", metadata=None)
    assert read_tif_metadata(foreign) == {}


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (LABELS.astype(bool), np.uint8),
        (LABELS.astype(np.int64), np.uint8),
        (LABELS.astype(np.int64) * 300, np.uint16),
        (RNG.random((8, 8)), np.float32),
    ],
    ids=["bool", "int64-small", "int64-medium", "float64"],
)
def test_write_tif_converts_other_dtypes(tmp_path: Path, array: np.ndarray, dtype) -> None:
    back = read_image(write_tif(tmp_path / "out.tif", array))
    assert back.dtype == dtype
    np.testing.assert_allclose(back, array.astype(dtype))


def test_npy_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, LABELS)
    back = read_image(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, LABELS)


def test_npy_is_returned_unmodified(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.npy"), rgb)


@pytest.mark.parametrize("suffix", [".png", ".PNG", ".jpg"])
def test_grey_image_round_trip(tmp_path: Path, suffix: str) -> None:
    grey = (LABELS * 255).astype(np.uint8)
    path = tmp_path / f"grey{suffix}"
    options = {"quality": 100} if suffix == ".jpg" else {}
    Image.fromarray(grey).save(path, **options)
    back = read_image(path)
    assert back.shape == grey.shape
    assert back.dtype == np.uint8
    if suffix == ".jpg":  # lossy: the two phases stay apart
        assert np.array_equal(back > 127, grey > 127)
    else:
        np.testing.assert_array_equal(back, grey)


def test_png_uint16_is_kept(tmp_path: Path) -> None:
    grey16 = LABELS.astype(np.uint16) * 40000
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    back = read_image(path)
    assert back.ndim == 2
    np.testing.assert_array_equal(back.astype(np.int64), grey16.astype(np.int64))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_png_with_equal_channels_becomes_2d_grey(tmp_path: Path, mode: str) -> None:
    grey = (LABELS * 200).astype(np.uint8)
    channels = {"RGB": [grey] * 3, "RGBA": [grey] * 3 + [np.full_like(grey, 255)]}.get(
        mode, [grey, np.full_like(grey, 255)]
    )
    path = tmp_path / f"{mode}.png"
    Image.fromarray(np.stack(channels, axis=-1), mode=mode).save(path)
    back = read_image(path)
    assert back.shape == grey.shape
    np.testing.assert_array_equal(back, grey)


def test_bilevel_png_becomes_uint8_labels(tmp_path: Path) -> None:
    path = tmp_path / "bilevel.png"
    Image.fromarray(LABELS.astype(bool)).convert("1").save(path)
    back = read_image(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, LABELS)


def test_grey_palette_png_becomes_grey(tmp_path: Path) -> None:
    grey = (LABELS * 255).astype(np.uint8)
    path = tmp_path / "palette.png"
    Image.fromarray(grey).convert("P").save(path)
    np.testing.assert_array_equal(read_image(path), grey)


# ------------------------------------------------------------------------------ errors


def test_errors_are_value_errors() -> None:
    assert issubclass(InputError, ValueError)
    assert issubclass(ImageNotFoundError, InputError)
    assert issubclass(ImageNotFoundError, FileNotFoundError)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tif"
    with pytest.raises(ImageNotFoundError, match="does not exist") as info:
        read_image(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_image(missing)


def test_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("name", ["image.bmp", "image.npz", "image"])
def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="unsupported file type") as info:
        read_image(path)
    for suffix in IMAGE_SUFFIXES:
        assert suffix in str(info.value)


@pytest.mark.parametrize("name", ["broken.npy", "broken.tif", "broken.png", "broken.jpg"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="could not be read"):
        read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "truncated.png"
    Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="could not be read"):
        read_image(path)


def test_npz_under_npy_name(tmp_path: Path) -> None:
    path = tmp_path / "archive.npy"
    with path.open("wb") as fh:
        np.savez(fh, a=LABELS)
    with pytest.raises(InputError, match="npz"):
        read_image(path)


def test_object_dtype(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="object"):
        read_image(path)


def test_complex_dtype(tmp_path: Path) -> None:
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="complex"):
        read_image(path)


def test_string_dtype(tmp_path: Path) -> None:
    path = tmp_path / "strings.npy"
    np.save(path, np.array([["a", "b"]]))
    with pytest.raises(InputError, match="not numeric"):
        read_image(path)


def test_complex_tif(tmp_path: Path) -> None:
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.ones((4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="complex"):
        read_image(path)


def test_true_colour_image_is_refused(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(InputError, match="grey values or to labels"):
        read_image(path)


def test_varying_transparency_is_refused(tmp_path: Path) -> None:
    rgba = np.full((8, 8, 4), 100, dtype=np.uint8)
    rgba[:4, :, 3] = 0
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba).save(path)
    with pytest.raises(InputError, match="alpha"):
        read_image(path)


def test_write_tif_refuses_unusable_arrays(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="complex"):
        write_tif(tmp_path / "c.tif", np.ones((4, 4), dtype=complex))
    with pytest.raises(InputError, match="2D or 3D"):
        write_tif(tmp_path / "v.tif", np.ones(4, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ no overwrite


def test_write_tif_never_overwrites(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "out.tif", LABELS)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists") as info:
        write_tif(path, 1 - LABELS)
    assert "overwrite=True" in str(info.value)
    assert path.read_bytes() == before
    write_tif(path, 1 - LABELS, overwrite=True)
    np.testing.assert_array_equal(read_image(path), 1 - LABELS)


def test_write_tif_creates_parent_folders(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a" / "b" / "out.tif", LABELS)
    assert path.is_file()


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_tif(tmp_path / "out.tif", LABELS, {"bad": object()})
    assert not (tmp_path / "out.tif").exists()


# ------------------------------------------------------------------------------- JSON


def test_write_json_serializes_numpy_and_paths(tmp_path: Path) -> None:
    record = {
        "seed": np.int32(3),
        "loss": np.float64(0.125),
        "converged": np.bool_(True),
        "volume_fraction": np.array([0.86, 0.14]),
        "field": np.arange(4, dtype=np.uint8).reshape(2, 2),
        "input": Path("micrograph.tif"),
        "phases": {1, 0},
        "nan": float("nan"),
    }
    path = write_json(tmp_path / "provenance.json", record)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    back = json.loads(text)
    assert back["seed"] == 3
    assert back["loss"] == 0.125
    assert back["converged"] is True
    assert back["volume_fraction"] == [0.86, 0.14]
    assert back["field"] == [[0, 1], [2, 3]]
    assert back["input"] == "micrograph.tif"
    assert back["phases"] == [0, 1]
    assert math.isnan(back["nan"])


def test_write_json_never_overwrites(tmp_path: Path) -> None:
    path = write_json(tmp_path / "p.json", {"a": 1})
    with pytest.raises(FileExistsError, match="already exists"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text())["a"] == 1
    write_json(path, {"a": 2}, overwrite=True)
    assert json.loads(path.read_text())["a"] == 2


def test_write_json_unserializable_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(tmp_path / "p.json", {"bad": object()})
    assert not (tmp_path / "p.json").exists()


# ------------------------------------------------------------------- shipped samples


def test_load_sample_names_and_errors() -> None:
    assert set(_sample_data.SAMPLES) == {"alloy_256", "alloy_64", "carbonate_256", "carbonate_64"}
    with pytest.raises(InputError, match="alloy_256"):
        _sample_data.load_sample("granite_256")


@pytest.mark.parametrize("name", _sample_data.SAMPLES)
def test_shipped_samples_are_binary_labels(name: str) -> None:
    array = _sample_data.load_sample(name)
    size = int(name.rsplit("_", 1)[1])
    assert array.shape == (size, size)
    assert array.dtype == np.uint8
    assert set(np.unique(array).tolist()) == {0, 1}
    array[0, 0] = 7  # a fresh, writable array each call
    assert _sample_data.load_sample(name)[0, 0] != 7


@pytest.mark.parametrize("name", _sample_data.SAMPLES)
def test_shipped_samples_equal_the_shared_ones(shared_dir: Path, name: str) -> None:
    path = shared_dir / "data" / "li2018" / f"{name}.npy"
    if not path.is_file():
        pytest.skip(f"{path} is absent from the shared data")
    expected = np.load(path, allow_pickle=False)
    shipped = _sample_data.load_sample(name)
    assert shipped.dtype == expected.dtype
    np.testing.assert_array_equal(shipped, expected)


def test_volume_fractions_match_the_shared_readme() -> None:
    # the fractions of label 1 that shared/data/li2018/README.md gives
    assert _sample_data.load_sample("alloy_256").mean() == pytest.approx(0.865, abs=5e-4)
    assert _sample_data.load_sample("carbonate_256").mean() == pytest.approx(0.139, abs=5e-4)


def test_io_and_sample_data_import_no_napari_or_qt() -> None:
    import subprocess
    import sys

    code = (
        "import sys, napari_microstructure.io, napari_microstructure._sample_data;"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')"
        " if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shared_fixtures_are_read_only(alloy_64: np.ndarray) -> None:
    with pytest.raises(ValueError, match="read-only"):
        alloy_64[0, 0] = 5


# ------------------------------------------------------------------ all-or-nothing outputs


def _folder_state(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_atomic_outputs_write_every_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder"
    paths = [out / "a.tif", out / "b.json"]
    with atomic_outputs(paths) as staged:
        write_tif(staged[paths[0]], LABELS)
        write_json(staged[paths[1]], {"x": 1})
        assert not paths[0].exists()  # nothing is in place before the end
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.json"]
    np.testing.assert_array_equal(read_image(paths[0]), LABELS)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_the_folder_as_it_was(tmp_path: Path, interruption) -> None:
    (tmp_path / "b.json").write_text("earlier run")
    before = _folder_state(tmp_path)
    paths = [tmp_path / "a.tif", tmp_path / "b.json"]
    with pytest.raises(interruption):
        with atomic_outputs(paths, overwrite=True) as staged:
            write_tif(staged[paths[0]], LABELS)
            raise interruption()
    assert _folder_state(tmp_path) == before


def test_an_interrupted_write_removes_the_folders_it_made(tmp_path: Path) -> None:
    out = tmp_path / "x" / "y"
    with pytest.raises(KeyboardInterrupt):
        with atomic_outputs([out / "a.json"]) as staged:
            write_json(staged[out / "a.json"], {})
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_folder_another_writer_creates_meanwhile_is_used_and_kept(
    tmp_path: Path, monkeypatch
) -> None:
    """Two workers of a batch writing into one new folder: the one that finds the folder made
    by the other between its check and its mkdir writes into it, and does not remove it when
    its own write fails."""
    real_mkdir = Path.mkdir

    def other_writer_first(self, *args, **kwargs):
        if self.name == "batch" and not self.exists():
            real_mkdir(self)  # the other worker's mkdir, and its file
            (self / "theirs.json").write_text("{}")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", other_writer_first)
    written = tmp_path / "written" / "batch"
    with atomic_outputs([written / "a" / "row.json"]) as staged:
        write_json(staged[written / "a" / "row.json"], {"x": 1})
    assert json.loads((written / "a" / "row.json").read_text()) == {"x": 1}

    failed = tmp_path / "failed" / "batch"
    with pytest.raises(KeyboardInterrupt):
        with atomic_outputs([failed / "a" / "row.json"]):
            raise KeyboardInterrupt
    assert sorted(p.name for p in failed.iterdir()) == ["theirs.json"]


def test_a_failure_while_renaming_puts_back_the_replaced_files(
    tmp_path: Path, monkeypatch
) -> None:
    import os

    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(f"old {name}")
    before = _folder_state(tmp_path)
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    real_replace = os.replace

    def failing_replace(source, target):
        if ".partial-" in str(source) and Path(target).name == "b.json":
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        with atomic_outputs(paths, overwrite=True) as staged:
            for path in paths:
                write_json(staged[path], {"new": path.name})
    assert _folder_state(tmp_path) == before


def test_stale_files_of_an_earlier_run_are_refused_or_removed(tmp_path: Path) -> None:
    stale = tmp_path / "x_reconstruction_3.tif"
    stale.write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match="x_reconstruction_3"):
        check_outputs([tmp_path / "x_reconstruction_1.tif"], stale=[stale])
    with atomic_outputs(
        [tmp_path / "x_reconstruction_1.tif"], overwrite=True, stale=[stale]
    ) as staged:
        write_tif(staged[tmp_path / "x_reconstruction_1.tif"], LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_reconstruction_1.tif"]


def test_an_output_may_never_be_an_input(tmp_path: Path) -> None:
    source = tmp_path / "image.npy"
    np.save(source, LABELS)
    before = source.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(InputError, match="input of this run"):
            check_outputs([tmp_path / "." / "image.npy"], overwrite=overwrite, inputs=[source])
    assert source.read_bytes() == before


def test_outputs_that_cannot_be_written_are_refused_before_work(
    tmp_path: Path, monkeypatch
) -> None:
    import os

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_outputs([a_file / "out.csv"], overwrite=True)
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_outputs([a_file / "deeper" / "out.csv"], overwrite=True)
    with pytest.raises(InputError, match="is a folder"):
        check_outputs([tmp_path], overwrite=True)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match="permission denied"):
        check_outputs([tmp_path / "new" / "out.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip(
            "root writes into read-only folders: the refusal is tested with os.access patched"
        )
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="permission denied"):
            check_outputs([folder / "out.csv"])
    finally:
        folder.chmod(0o700)
