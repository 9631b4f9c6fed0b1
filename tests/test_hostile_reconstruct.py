"""Hostile and careless input to the reconstruction entry points, one table per entry point.

Every case must be refused before the work starts (the optimization is replaced by a function
that fails the test if it is reached) with a message that says what was wrong: exit code 2 and
the message on stderr for the command line, a MicrostructureError for the Python API. Nothing
may be written (every file under the test's folder is compared before and after: the inputs
keep their bytes, no output appears) and an input array is left as it was.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from napari_microstructure import load_sample
from napari_microstructure.cli import main
from napari_microstructure.core import decoder, pruning, volume
from napari_microstructure.core.errors import MicrostructureError
from napari_microstructure.core.metrics import compare

SEED_RANGE = "from 0 to 9223372036854775807"
ALLOY = load_sample("alloy_64")
#: image i of a pruning study uses seed + i, so this seed is valid for one image, not for two
LAST_SEED = str(2**63 - 1)


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Fail the test if a reconstruction or a pruning study takes its first step."""

    def started(**_):  # a generator, as the real work: nothing runs until its first step
        raise AssertionError("the work started: the input should have been refused before it")
        yield

    monkeypatch.setattr(decoder, "_optimize", started)
    monkeypatch.setattr(volume, "_optimize_volume", started)
    monkeypatch.setattr(pruning, "_study", started)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links as their target's path) and its bytes."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            files[path] = ("link", os.readlink(path))
        elif path.is_file():
            files[path] = path.read_bytes()
        else:
            files[path] = "folder"
    return files


def saved(tmp_path: Path, name: str, array) -> str:
    np.save(tmp_path / name, array)
    return str(tmp_path / name)


def nan_image():
    return np.where(np.eye(32) > 0, np.nan, 1.0)


def many_phases():
    return (np.arange(32 * 32).reshape(32, 32) % 12).astype(np.uint8)


def grey():
    return np.random.default_rng(0).random((32, 32)).astype(np.float32)


def alloy(tmp_path: Path) -> str:
    return saved(tmp_path, "alloy.npy", ALLOY)


def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def folder_weights(tmp_path: Path) -> str:
    (tmp_path / "weights").mkdir()
    return str(tmp_path / "weights")


def linked_output(tmp_path: Path, name: str) -> str:
    """An input reached through an output's name: ``out/<name>`` links to ``alloy.npy``."""
    source = alloy(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).symlink_to(source)
    return source


def file_out(tmp_path: Path) -> str:
    (tmp_path / "out").write_text("a file where the output folder should be")
    return str(tmp_path / "out")


def existing(tmp_path: Path, *names: str) -> None:
    (tmp_path / "out").mkdir()
    for name in names:
        (tmp_path / "out" / name).write_text("an earlier run's output")


def not_writable(tmp_path: Path, monkeypatch) -> str:
    """An --out folder that cannot be written to: read-only, and (root ignores permissions)
    reported so by os.access as it is to a user."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: Path(path) != out and real_access(path, mode, **kw)
    )
    return str(out)


def run_cli(argv, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = main(argv)
    error = capsys.readouterr().err
    assert snapshot(tmp_path) == before, "a file was written, changed or removed"
    return code, error


def restore_permissions(tmp_path: Path) -> None:
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


# --- reconstruct (command line) ---------------------------------------------------------------

FAST = ["--iterations", "2", "--levels", "1", "--weights", "random", "--device", "cpu", "--quiet"]

RECONSTRUCT_CLI = [
    pytest.param(lambda d, mp: [str(d / "missing.npy")], "does not exist", id="missing-file"),
    pytest.param(lambda d, mp: [saved(d, "line.npy", np.arange(64) % 2)], "2 dimensions", id="1D"),
    pytest.param(
        lambda d, mp: [saved(d, "4d.npy", np.zeros((2, 2, 32, 32)))], "2 dimensions", id="4D"
    ),
    pytest.param(
        lambda d, mp: [saved(d, "stack.npy", np.zeros((3, 32, 32)))], "2 dimensions", id="3D-stack"
    ),
    pytest.param(lambda d, mp: [saved(d, "nan.npy", nan_image())], "NaN or Inf", id="NaN"),
    pytest.param(
        lambda d, mp: [saved(d, "flat.npy", np.zeros((32, 32)))], "constant", id="constant"
    ),
    pytest.param(
        lambda d, mp: [saved(d, "many.npy", many_phases())], "at most 8", id="too-many-phases"
    ),
    pytest.param(lambda d, mp: [saved(d, "tiny.npy", np.eye(6))], "at least 8x8", id="too-small"),
    pytest.param(
        lambda d, mp: [saved(d, "grey.npy", grey()), "--kind", "labels"],
        "at most 8",
        id="grey-as-labels",
    ),
    pytest.param(
        lambda d, mp: [d.joinpath("bad.tif").write_bytes(b"no tiff") and str(d / "bad.tif")],
        "tif",
        id="damaged-tif",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--device", "tpu"], "Unknown device", id="unknown-device"
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--device", "cuda:first"], "Unknown device", id="malformed-cuda"
    ),
    pytest.param(
        lambda d, mp: no_cuda(mp) or [alloy(d), "--device", "cuda"],
        "CUDA is not available",
        id="cuda-without-gpu",
    ),
    pytest.param(lambda d, mp: [alloy(d), "--seed", str(2**63)], SEED_RANGE, id="seed-2**63"),
    pytest.param(lambda d, mp: [alloy(d), "--seed", str(2**64)], SEED_RANGE, id="seed-2**64"),
    pytest.param(lambda d, mp: [alloy(d), "--seed", "-1"], SEED_RANGE, id="seed-negative"),
    pytest.param(
        lambda d, mp: [alloy(d), "--levels", "1000000"], "from 1 to 16", id="levels-10**6"
    ),
    pytest.param(lambda d, mp: [alloy(d), "--size", "0", "32"], "output size", id="size-0"),
    pytest.param(lambda d, mp: [alloy(d), "--size", "4", "64"], "at least 8x8", id="size-4"),
    pytest.param(lambda d, mp: [alloy(d), "--samples", "0"], "samples", id="samples-0"),
    pytest.param(lambda d, mp: [alloy(d), "--iterations", "0"], "iterations", id="iterations-0"),
    pytest.param(
        lambda d, mp: [alloy(d), "--layers", "pool9"], "Unknown layer", id="unknown-layer"
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--weights", folder_weights(d)],
        "is a folder",
        id="weights-folder",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--weights", "/dev/zero"],
        "not a regular file",
        id="weights-dev-zero",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--weights", str(d / "w.pkl")],
        "does not exist",
        id="weights-missing",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", file_out(d)],
        "is a file, not a folder",
        id="out-is-a-file",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", file_out(d), "--overwrite"],
        "is a file, not a folder",
        id="out-is-a-file-overwrite",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", not_writable(d, mp)],
        "cannot be written to",
        id="out-read-only",
    ),
    pytest.param(
        lambda d, mp: [linked_output(d, "alloy_metrics.csv"), "--overwrite"],
        "is an input of this run",
        id="output-is-the-input",
    ),
    pytest.param(
        lambda d, mp: existing(d, "alloy_metrics.csv") or [alloy(d)],
        "exists already",
        id="existing-output",
    ),
    pytest.param(
        lambda d, mp: existing(d, "alloy_reconstruction_3.tif") or [alloy(d), "--samples", "2"],
        "exists already",
        id="earlier-sample",
    ),
]


def command_refused(command, build, phrase, tmp_path, capsys, monkeypatch, after=()) -> str:
    """Run ``command`` + the case's arguments (+ ``after``); assert exit 2 with ``phrase``."""
    arguments = build(tmp_path, monkeypatch)
    if "--out" not in arguments:
        arguments += ["--out", str(tmp_path / "out")]
    try:
        code, error = run_cli([*command, *arguments, *after], tmp_path, capsys)
    finally:
        restore_permissions(tmp_path)
    assert code == 2 and phrase in error, error
    return error


@pytest.mark.parametrize("build, phrase", RECONSTRUCT_CLI)
def test_reconstruct_command_refuses_before_the_work(tmp_path, capsys, monkeypatch, build, phrase):
    error = command_refused(["reconstruct", *FAST], build, phrase, tmp_path, capsys, monkeypatch)
    assert error.startswith("napari-microstructure: error: ") and "Traceback" not in error


# --- reconstruct --3d (command line) ----------------------------------------------------------

VOLUME_FAST = ["--layers", "conv1_1", *FAST]


def volume_input_in_out(tmp_path: Path) -> list[str]:
    """--x is a micrograph named as this run's volume output: out/z_volume.tif."""
    (tmp_path / "out").mkdir()
    import tifffile

    tifffile.imwrite(tmp_path / "out" / "z_volume.tif", ALLOY)
    return [
        "--z",
        saved(tmp_path, "z.npy", ALLOY),
        "--x",
        str(tmp_path / "out" / "z_volume.tif"),
        "--overwrite",
    ]


VOLUME_CLI = [
    pytest.param(lambda d, mp: [str(d / "missing.npy")], "does not exist", id="missing-file"),
    pytest.param(lambda d, mp: [saved(d, "line.npy", np.arange(64) % 2)], "2 dimensions", id="1D"),
    pytest.param(
        lambda d, mp: [saved(d, "stack.npy", np.zeros((8, 32, 32)))],
        "3D reconstruction starts from 2D",
        id="3D",
    ),
    pytest.param(lambda d, mp: [saved(d, "nan.npy", nan_image())], "NaN or Inf", id="NaN"),
    pytest.param(
        lambda d, mp: [saved(d, "flat.npy", np.zeros((32, 32)))], "constant", id="constant"
    ),
    pytest.param(
        lambda d, mp: [saved(d, "many.npy", many_phases())], "at most 8", id="too-many-phases"
    ),
    pytest.param(
        lambda d, mp: [saved(d, "tiny.npy", np.eye(6)), "--layers", "pool2"],
        "at least 8 pixels",
        id="too-small",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--device", "tpu"], "Unknown device", id="unknown-device"
    ),
    pytest.param(
        lambda d, mp: no_cuda(mp) or [alloy(d), "--device", "cuda"],
        "CUDA is not available",
        id="cuda-without-gpu",
    ),
    pytest.param(lambda d, mp: [alloy(d), "--seed", str(2**63)], SEED_RANGE, id="seed-2**63"),
    pytest.param(
        lambda d, mp: [alloy(d), "--levels", "1000000"], "from 1 to 16", id="levels-10**6"
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--slices", "-1"], "slices_per_axis", id="slices-negative"
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--size", "16", "16"],
        "--size and --samples are for 2D",
        id="size-with-3d",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--weights", folder_weights(d)],
        "is a folder",
        id="weights-folder",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", file_out(d), "--overwrite"],
        "is a file, not a folder",
        id="out-is-a-file",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", not_writable(d, mp)],
        "cannot be written to",
        id="out-read-only",
    ),
    pytest.param(
        lambda d, mp: volume_input_in_out(d), "is an input of this run", id="output-is-an-input"
    ),
    pytest.param(
        lambda d, mp: existing(d, "alloy_volume_metrics.csv") or [alloy(d)],
        "exists already",
        id="existing-output",
    ),
]


@pytest.mark.parametrize("build, phrase", VOLUME_CLI)
def test_volume_command_refuses_before_the_work(tmp_path, capsys, monkeypatch, build, phrase):
    command = ["reconstruct", *VOLUME_FAST]
    after = ["--3d", "16"]
    error = command_refused(command, build, phrase, tmp_path, capsys, monkeypatch, after)
    assert "Traceback" not in error


# --- prune (command line) ---------------------------------------------------------------------

PRUNE_FAST = [
    "--depths",
    "1",
    "--samples",
    "1",
    "--iterations",
    "2",
    "--levels",
    "1",
    "--weights",
    "random",
    "--device",
    "cpu",
    "--quiet",
]


def png_named_as_output(tmp_path: Path) -> list[str]:
    """An input micrograph m_pruning.png where the study of material m writes its plot."""
    from PIL import Image

    Image.fromarray(ALLOY * 255).save(tmp_path / "m_pruning.png")
    return [
        str(tmp_path / "m_pruning.png"),
        "--material",
        "m",
        "--out",
        str(tmp_path),
        "--overwrite",
    ]


PRUNE_CLI = [
    pytest.param(lambda d, mp: [str(d / "missing.npy")], "does not exist", id="missing-file"),
    pytest.param(lambda d, mp: [saved(d, "line.npy", np.arange(64) % 2)], "2 dimensions", id="1D"),
    pytest.param(
        lambda d, mp: [saved(d, "4d.npy", np.zeros((2, 2, 32, 32)))], "2 dimensions", id="4D"
    ),
    pytest.param(lambda d, mp: [saved(d, "nan.npy", nan_image())], "NaN or Inf", id="NaN"),
    pytest.param(
        lambda d, mp: [saved(d, "flat.npy", np.zeros((32, 32)))], "constant", id="constant"
    ),
    pytest.param(
        lambda d, mp: [saved(d, "many.npy", many_phases())], "at most 8", id="too-many-phases"
    ),
    pytest.param(lambda d, mp: [saved(d, "grey.npy", grey())], "segment it", id="grey"),
    pytest.param(
        lambda d, mp: [saved(d, "small.npy", ALLOY[:16, :16]), "--depths", "5"],
        "too small",
        id="too-small",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--device", "tpu"], "Unknown device", id="unknown-device"
    ),
    pytest.param(
        lambda d, mp: no_cuda(mp) or [alloy(d), "--device", "cuda"],
        "CUDA is not available",
        id="cuda-without-gpu",
    ),
    pytest.param(lambda d, mp: [alloy(d), "--seed", str(2**63)], SEED_RANGE, id="seed-2**63"),
    pytest.param(
        lambda d, mp: [alloy(d), alloy(d), "--seed", LAST_SEED],
        SEED_RANGE,
        id="seed-of-the-second-image",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--levels", "1000000"], "from 1 to 16", id="levels-10**6"
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--weights", folder_weights(d)],
        "is a folder",
        id="weights-folder",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", file_out(d), "--overwrite"],
        "is a file, not a folder",
        id="out-is-a-file",
    ),
    pytest.param(
        lambda d, mp: [alloy(d), "--out", not_writable(d, mp)],
        "cannot be written to",
        id="out-read-only",
    ),
    pytest.param(
        lambda d, mp: png_named_as_output(d), "is an input of this run", id="output-is-the-input"
    ),
    pytest.param(
        lambda d, mp: existing(d, "alloy_pruning.csv") or [alloy(d)],
        "exists already",
        id="existing-output",
    ),
]


@pytest.mark.parametrize("build, phrase", PRUNE_CLI)
def test_prune_command_refuses_before_the_work(tmp_path, capsys, monkeypatch, build, phrase):
    error = command_refused(["prune", *PRUNE_FAST], build, phrase, tmp_path, capsys, monkeypatch)
    assert "Traceback" not in error


def test_prune_names_a_stack_after_its_file(tmp_path, monkeypatch):
    """A 3D stack's images are named arr3d[0], arr3d[1]: the material is arr3d, not arr3d[."""
    seen = {}

    def study(**settings):
        seen.update(settings)
        raise MicrostructureError("the settings are all this test needs")

    monkeypatch.setattr(pruning, "_study", study)
    source = saved(tmp_path, "arr3d.npy", np.stack([ALLOY[:32, :32], ALLOY[32:, 32:]]))
    main(["prune", *PRUNE_FAST, source, "--out", str(tmp_path / "out")])
    assert seen["material"] == "arr3d" and seen["names"] == ["arr3d[0]", "arr3d[1]"]


# --- the Python API ---------------------------------------------------------------------------


def masked():
    return np.ma.masked_array(ALLOY, mask=np.eye(64, dtype=bool))


def weights_folder_option(tmp_path: Path) -> dict:
    return {"weights": folder_weights(tmp_path)}


# (image, options, phrase); options may be a function of the test folder and monkeypatch
RECONSTRUCT_API = [
    pytest.param(np.arange(64) % 2, {}, "2 dimensions", id="1D"),
    pytest.param(np.zeros((2, 2, 32, 32)), {}, "2 dimensions", id="4D"),
    pytest.param(nan_image(), {}, "NaN or Inf", id="NaN"),
    pytest.param(np.zeros((32, 32)), {}, "constant", id="constant"),
    pytest.param(many_phases(), {}, "at most 8", id="too-many-phases"),
    pytest.param(np.eye(6), {}, "at least 8x8", id="too-small"),
    pytest.param(np.array([["a", "b"], ["b", "a"]]), {}, "must hold numbers", id="strings"),
    pytest.param(masked(), {}, "masked array", id="masked-array"),
    pytest.param(ALLOY, {"device": "tpu"}, "Unknown device", id="unknown-device"),
    pytest.param(
        ALLOY,
        lambda d, mp: no_cuda(mp) or {"device": "cuda"},
        "CUDA is not available",
        id="cuda-without-gpu",
    ),
    pytest.param(ALLOY, {"seed": 2**63}, SEED_RANGE, id="seed-2**63"),
    pytest.param(ALLOY, {"seed": 2**64}, SEED_RANGE, id="seed-2**64"),
    pytest.param(ALLOY, {"seed": -1}, SEED_RANGE, id="seed-negative"),
    pytest.param(ALLOY, {"seed": 2.5}, SEED_RANGE, id="seed-fraction"),
    pytest.param(ALLOY, {"levels": 10**6}, "from 1 to 16", id="levels-10**6"),
    pytest.param(ALLOY, {"levels": 0}, "levels", id="levels-0"),
    pytest.param(ALLOY, {"samples": 0}, "samples", id="samples-0"),
    pytest.param(ALLOY, {"iterations": None}, "iterations", id="iterations-None"),
    pytest.param(ALLOY, {"size": "64"}, "two numbers", id="size-string"),
    pytest.param(ALLOY, {"size": (32, 0)}, "output size", id="size-0"),
    pytest.param(ALLOY, {"layers": "pool9"}, "Unknown layer(s) pool9", id="unknown-layer-string"),
    pytest.param(ALLOY, {"layers": None}, "layers must be layer names", id="layers-None"),
    pytest.param(
        ALLOY,
        {"layer_weights": {"pool5": 1.0}},
        "does not match",
        id="layer-weights-unknown-layer",
    ),
    pytest.param(
        ALLOY, {"layer_weights": {"pool1": -1.0}}, "0 or more", id="layer-weights-negative"
    ),
    pytest.param(
        ALLOY, {"layer_weights": {"pool1": float("nan")}}, "0 or more", id="layer-weights-nan"
    ),
    pytest.param(
        ALLOY,
        {"layer_weights": dict.fromkeys(decoder.DEFAULT_LAYERS, 0)},
        "weighs 0",
        id="layer-weights-all-0",
    ),
    pytest.param(ALLOY, {"layer_weights": [1, 2]}, "map layer names", id="layer-weights-list"),
    pytest.param(
        ALLOY,
        {"optimizer": "adam", "learning_rate": float("nan")},
        "learning rate",
        id="learning-rate-nan",
    ),
    pytest.param(ALLOY, {"learning_rate": 0}, "learning rate", id="learning-rate-0"),
    pytest.param(ALLOY, {"optimizer": "sgd"}, "Unknown optimizer", id="unknown-optimizer"),
    pytest.param(ALLOY, {"kind": "rgb"}, "Unknown image kind", id="unknown-kind"),
    pytest.param(
        ALLOY, lambda d, mp: weights_folder_option(d), "is a folder", id="weights-folder"
    ),
    pytest.param(ALLOY, {"weights": "/dev/zero"}, "not a regular file", id="weights-dev-zero"),
]


def options_of(options, tmp_path, monkeypatch) -> dict:
    return options(tmp_path, monkeypatch) if callable(options) else dict(options)


def refused(function, image, options, phrase):
    before = image.copy()
    mask = np.ma.getmaskarray(image).copy()
    with pytest.raises(MicrostructureError) as refusal:
        function(image, **options)
    assert phrase in str(refusal.value)
    np.testing.assert_array_equal(np.ma.getdata(image), np.ma.getdata(before))
    np.testing.assert_array_equal(np.ma.getmaskarray(image), mask)


@pytest.mark.parametrize("image, options, phrase", RECONSTRUCT_API)
def test_reconstruct_refuses_before_the_work(tmp_path, monkeypatch, image, options, phrase):
    options = {
        "iterations": 2,
        "levels": 1,
        "weights": "random",
        "device": "cpu",
        **options_of(options, tmp_path, monkeypatch),
    }
    refused(decoder.reconstruct_steps, image, options, phrase)


RECONSTRUCT_VOLUME_API = [
    pytest.param(np.arange(64) % 2, {}, "2 dimensions", id="1D"),
    pytest.param(np.zeros((8, 32, 32)), {}, "3D reconstruction starts from 2D", id="3D"),
    pytest.param(nan_image(), {}, "NaN or Inf", id="NaN"),
    pytest.param(np.zeros((32, 32)), {}, "constant", id="constant"),
    pytest.param(many_phases(), {}, "at most 8", id="too-many-phases"),
    pytest.param(np.eye(6), {"layers": ["pool2"]}, "at least 8 pixels", id="too-small"),
    pytest.param(masked(), {}, "masked array", id="masked-array"),
    pytest.param(ALLOY, {"device": "tpu"}, "Unknown device", id="unknown-device"),
    pytest.param(
        ALLOY,
        lambda d, mp: no_cuda(mp) or {"device": "cuda"},
        "CUDA is not available",
        id="cuda-without-gpu",
    ),
    pytest.param(ALLOY, {"seed": 2**63}, SEED_RANGE, id="seed-2**63"),
    pytest.param(ALLOY, {"seed": -5}, SEED_RANGE, id="seed-negative"),
    pytest.param(ALLOY, {"levels": 10**6}, "from 1 to 16", id="levels-10**6"),
    pytest.param(ALLOY, {"size": "abc"}, "volume", id="size-string"),
    pytest.param(ALLOY, {"size": (16, 16)}, "one integer N", id="size-two-sides"),
    pytest.param(ALLOY, {"slices_per_axis": 0}, "slices_per_axis", id="slices-0"),
    pytest.param(ALLOY, {"layers": "pool9"}, "Unknown layer", id="unknown-layer"),
    pytest.param(
        ALLOY,
        {"layer_weights": {"pool2": 1.0}},
        "does not match",
        id="layer-weights-unknown-layer",
    ),
    pytest.param(
        ALLOY, {"layer_weights": {"conv1_1": -2}}, "0 or more", id="layer-weights-negative"
    ),
    pytest.param(ALLOY, {"learning_rate": float("nan")}, "learning rate", id="learning-rate-nan"),
    pytest.param(ALLOY, {"weights": "/dev/zero"}, "not a regular file", id="weights-dev-zero"),
]


@pytest.mark.parametrize("image, options, phrase", RECONSTRUCT_VOLUME_API)
def test_reconstruct_volume_refuses_before_the_work(tmp_path, monkeypatch, image, options, phrase):
    options = {
        "size": 16,
        "iterations": 2,
        "levels": 1,
        "weights": "random",
        "device": "cpu",
        "layers": ["conv1_1"],
        **options_of(options, tmp_path, monkeypatch),
    }
    refused(volume.reconstruct_volume_steps, image, options, phrase)


PRUNE_API = [
    pytest.param(np.arange(64) % 2, {}, "2 dimensions", id="1D"),
    pytest.param(np.zeros((2, 2, 32, 32)), {}, "2 dimensions", id="4D"),
    pytest.param(nan_image(), {}, "NaN or Inf", id="NaN"),
    pytest.param(np.zeros((32, 32)), {}, "constant", id="constant"),
    pytest.param(many_phases(), {}, "at most 8", id="too-many-phases"),
    pytest.param(grey(), {}, "segment it", id="grey"),
    pytest.param(ALLOY[:16, :16], {"depths": [5]}, "too small", id="too-small"),
    pytest.param(
        masked(),
        {},
        "masked array",
        id="masked-array",
    ),
    pytest.param(ALLOY, {"device": "tpu"}, "Unknown device", id="unknown-device"),
    pytest.param(ALLOY, {"names": ["a", "b"]}, "one name per image", id="names-mismatch"),
    pytest.param(ALLOY, {"depths": [7]}, "Unknown depth", id="unknown-depth"),
    pytest.param(ALLOY, {"weights": "/dev/zero"}, "not a regular file", id="weights-dev-zero"),
    pytest.param(
        ALLOY,
        {"seed": 2**63},
        SEED_RANGE,
        id="seed-2**63",
    ),
    pytest.param(
        ALLOY,
        {"levels": 10**6},
        "from 1 to 16",
        id="levels-10**6",
    ),
]


@pytest.mark.parametrize("image, options, phrase", PRUNE_API)
def test_prune_refuses_before_the_work(image, options, phrase):
    options = {
        "depths": [1],
        "samples": 1,
        "iterations": 2,
        "levels": 1,
        "weights": "random",
        "device": "cpu",
        **options,
    }
    refused(pruning.prune_steps, image, options, phrase)


COMPARE_API = [
    pytest.param(np.arange(64) % 2, [ALLOY], "2D or 3D", id="1D"),
    pytest.param(np.zeros((2, 2, 8, 8), int), [ALLOY], "2D or 3D", id="4D"),
    pytest.param(nan_image(), [ALLOY], "whole numbers", id="NaN"),
    pytest.param(grey(), [grey()], "segment the image first", id="grey"),
    pytest.param(masked(), [ALLOY], "masked array", id="masked-original"),
    pytest.param(ALLOY, [masked()], "masked array", id="masked-reconstruction"),
    pytest.param(ALLOY, [np.zeros((8, 8, 8), np.uint8)], "same dimension", id="2D-against-3D"),
    pytest.param(ALLOY, [np.ones((1, 64), np.uint8)], "at least 2 pixels", id="too-small"),
    pytest.param(np.array([["a", "b"], ["b", "a"]]), [ALLOY], "dtype", id="strings"),
]


@pytest.mark.parametrize("original, reconstructions, phrase", COMPARE_API)
def test_compare_refuses_with_a_message(original, reconstructions, phrase):
    copies = [r.copy() for r in reconstructions]
    refused(lambda image: compare(image, reconstructions), original, {}, phrase)
    for reconstruction, copy in zip(reconstructions, copies):
        np.testing.assert_array_equal(reconstruction, copy)


def test_compare_refuses_a_name_per_reconstruction_mismatch():
    with pytest.raises(MicrostructureError, match="one name per reconstruction"):
        compare(ALLOY, [ALLOY], names=["a", "b"])
