"""Hostile and careless input to property prediction, one table per entry point.

Every case must be refused before any work, with exit code 2 (commands) or an
:class:`InputError`/``MicrostructureError`` (API) whose message contains the given phrase, and
must leave every file as it was: nothing written, no input changed. Tiny data throughout: six
generated 32x32 samples and models on random weights (the numbers do not matter here).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_microstructure import (
    build_dataset,
    build_dataset_steps,
    load_property_model,
    predict_property,
    train_property_model,
    transport_labels,
)
from napari_microstructure.cli import main
from napari_microstructure.core.datasets import LabelCache, write_dataset
from napari_microstructure.core.errors import MicrostructureError

pytest.importorskip(
    "taufactor", reason="the physics labels need TauFactor (pip install taufactor)"
)

#: A device that no machine has: refused on a CPU-only machine and on one with a GPU alike.
NO_SUCH_DEVICE = "cuda:99"


def _save_model_variant(model_path: Path, target: Path, change) -> Path:
    """Copy a model file with its arrays changed by ``change(arrays)`` (the header kept)."""
    with np.load(model_path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    arrays = {
        name.split("/", 1)[1]: value
        for name, value in members.items()
        if name.startswith("array/")
    }
    change(arrays)
    np.savez(target, header=members["header"], **{f"array/{k}": v for k, v in arrays.items()})
    return target


def _save_header_variant(model_path: Path, target: Path, change) -> Path:
    """Copy a model file with its JSON header changed by ``change(header)``."""
    with np.load(model_path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(str(members.pop("header")))
    change(header)
    np.savez(target, header=np.array(json.dumps(header)), **members)
    return target


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A dataset folder, a frozen and a fine-tuned model on random weights, images of every
    careless kind, and model files damaged in every way (made once; each test gets a copy)."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    dataset = build_dataset(generated=6, size=32, seed=1)
    write_dataset(dataset, root / "data")
    frozen = train_property_model(
        dataset.images, dataset.table["D_eff_x"], weights="random", folds=2
    )
    finetuned = train_property_model(
        dataset.images,
        dataset.table["D_eff_x"],
        weights="random",
        mode="finetune",
        folds=0,
        epochs=1,
    )
    models = root / "models"
    frozen_path, finetuned_path = (
        frozen.save(models / "frozen.npz"),
        finetuned.save(models / "finetuned.npz"),
    )

    images = {
        "img": (rng.random((32, 32)) > 0.5).astype(np.uint8),
        "grey": rng.random((32, 32)),
        "grey8": rng.integers(0, 256, (32, 32)).astype(np.uint8),
        "img255": 255 * (rng.random((32, 32)) > 0.5).astype(np.uint8),
        "nan": np.where(rng.random((32, 32)) > 0.5, 1.0, np.nan),
    }
    for name, array in images.items():
        np.save(root / f"{name}.npy", array)
    (root / "existing.csv").write_text("earlier results\n")
    for name, values in (
        ("absurd", [0.1, 0.2, 1e308, 0.3, 0.4, 0.5]),
        ("infinite", [0.1, 0.2, "inf", 0.3, 0.4, 0.5]),
    ):
        (root / f"{name}.csv").write_text(
            "file,D_eff_x\n"
            + "".join(f"{file},{value}\n" for file, value in zip(dataset.table["file"], values))
        )
    table = (root / "data" / "labels.csv").read_text()
    (root / "data" / "T_predictions.csv").write_text(table)  # a label table named like an output
    with open(root / "pickle.npz", "wb") as handle:
        pickle.dump({"format": "napari-microstructure property model"}, handle)
    np.savez(root / "object_header.npz", header=np.array([{"format": "x"}], dtype=object))
    (root / "text.npz").write_text("not a model")
    np.save(root / "single.npy", np.zeros(3))
    damaged = root / "damaged"
    damaged.mkdir()
    broken = {
        "no_feature_mean": _save_model_variant(
            frozen_path, damaged / "a.npz", lambda a: a.pop("feature_mean")
        ),
        "short_coef": _save_model_variant(
            frozen_path, damaged / "b.npz", lambda a: a.update(coef=a["coef"][:-1])
        ),
        "nan_coef": _save_model_variant(
            frozen_path, damaged / "c.npz", lambda a: a["coef"].__setitem__(0, np.nan)
        ),
        "no_head_w1": _save_model_variant(
            finetuned_path, damaged / "d.npz", lambda a: a.pop("head_w1")
        ),
        "wide_head_w1": _save_model_variant(
            finetuned_path,
            damaged / "e.npz",
            lambda a: a.update(head_w1=np.zeros((5, 32), np.float32)),
        ),
        "no_conv0": _save_model_variant(
            finetuned_path, damaged / "f.npz", lambda a: a.pop("conv0_weight")
        ),
        "no_layers": _save_header_variant(
            frozen_path, damaged / "g.npz", lambda h: h.pop("layers")
        ),
        "bad_version": _save_header_variant(
            frozen_path, damaged / "h.npz", lambda h: h.update(version="one")
        ),
        "unknown_mode": _save_header_variant(
            frozen_path, damaged / "i.npz", lambda h: h.update(mode="deep")
        ),
    }
    return SimpleNamespace(
        root=root,
        dataset=dataset,
        frozen=frozen,
        images=images,
        broken={name: path.relative_to(root) for name, path in broken.items()},
    )


@pytest.fixture
def w(prepared, tmp_path):
    """The test's own copy of the prepared files, so that no case can change another's."""
    root = tmp_path / "workspace"
    shutil.copytree(prepared.root, root)
    return SimpleNamespace(
        root=root,
        data=root / "data",
        model=root / "models" / "frozen.npz",
        dataset=prepared.dataset,
        frozen=prepared.frozen,
        images=prepared.images,
        broken={name: root / path for name, path in prepared.broken.items()},
        **{name: root / f"{name}.npy" for name in prepared.images},
    )


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` (hidden ones too) with the sha256 of its bytes."""
    return {
        p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _run_refused(argv: list[str], w, phrase: str, capsys) -> None:
    before = _snapshot(w.root)
    try:
        code = main(["properties", *argv])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert phrase in err
    assert "Traceback" not in err
    assert _snapshot(w.root) == before, "a refused command wrote or changed a file"


def _argv(template: list[str], w) -> list[str]:
    return [
        part.format(
            root=w.root, data=w.data, model=w.model, **{k: getattr(w, k) for k in w.images}
        )
        for part in template
    ]


# --------------------------------------------------------------------------------------------
# properties label

LABEL_CASES = {
    "a grey float image": (["{grey}"], "holds grey levels"),
    "an 8-bit grey image": (["{grey8}"], "distinct values"),
    "a phase absent from the image": (["{img}", "--phase", "3"], "Phase 3 does not occur"),
    "a 0/255 image, default phase": (["{img255}"], "its labels are 0, 255"),
    "an image with NaN": (["{nan}"], "NaN"),
    "the output is the input": (
        ["{img}", "--out", "{img}", "--overwrite"],
        "an output may never replace an input",
    ),
    "the output is a folder": (["{img}", "--out", "{data}"], "is a folder"),
    "the output exists": (["{img}", "--out", "{root}/existing.csv"], "exists already"),
    "a cache that is a file": (["{img}", "--cache", "{img}"], "is a file: give a folder"),
    "an axis the image lacks": (["{img}", "--axes", "z"], "Axis 'z' does not exist"),
    "a device this machine lacks": (["{img}", "--device", NO_SUCH_DEVICE], NO_SUCH_DEVICE),
    "a missing image": (["{root}/missing.npy"], "does not exist"),
}


@pytest.mark.parametrize("template, phrase", LABEL_CASES.values(), ids=LABEL_CASES.keys())
def test_label_refuses(template, phrase, w, capsys):
    argv = _argv(["label", *template], w)
    if "--out" not in argv:
        argv += ["--out", str(w.root / "labels_out.csv")]
    _run_refused(argv + ["--quiet"], w, phrase, capsys)


# --------------------------------------------------------------------------------------------
# properties build

BUILD_CASES = {
    "a volume-fraction range in the wrong order": (
        ["--volume-fraction", "0.9", "0.1"],
        "LOW (0.9) is above HIGH (0.1)",
    ),
    "a volume fraction of 0": (["--volume-fraction", "0", "0.5"], "strictly between 0 and 1"),
    "a negative seed": (["--seed", "-1"], "The seed must be a whole number"),
    "a seed of 2**63": (["--seed", str(2**63)], "The seed must be a whole number"),
    "a negative count": (["--generated", "-1"], "at least 0"),
    "nothing to build": (["--generated", "0"], "Nothing to build"),
    "samples too small": (["--size", "4"], "at least 8x8"),
    "an axis 2D samples lack": (["--axes", "z"], "Axis 'z' does not exist"),
    "a cache that is a file": (["--cache", "{img}"], "is a file: give a folder"),
    "an output folder that is a file": (["--out", "{img}"], "is a file, not a folder"),
    "an existing dataset": (["--out", "{data}"], "exists already"),
    "a grey micrograph": (["--micrographs", "{grey}", "--crops", "2"], "holds grey levels"),
    "a micrograph without the phase": (
        ["--micrographs", "{img255}", "--crops", "2"],
        "Phase 1 does not occur",
    ),
    "crops larger than the micrograph": (
        ["--micrographs", "{img}", "--crops", "2", "--size", "40"],
        "do not fit",
    ),
    "a device this machine lacks": (["--device", NO_SUCH_DEVICE], NO_SUCH_DEVICE),
}


@pytest.mark.parametrize("template, phrase", BUILD_CASES.values(), ids=BUILD_CASES.keys())
def test_build_refuses(template, phrase, w, capsys):
    argv = _argv(["build", *template], w)
    defaults = {"--out": str(w.root / "new_dataset"), "--generated": "6", "--size": "32"}
    for option, value in defaults.items():
        if option not in argv:
            argv += [option, value]
    _run_refused(argv + ["--quiet"], w, phrase, capsys)


# --------------------------------------------------------------------------------------------
# properties train

TRAIN_CASES = {
    "fine-tuning for 0 epochs": (["--mode", "finetune", "--epochs", "0"], "epochs"),
    "fine-tuning for -1 epochs": (["--mode", "finetune", "--epochs", "-1"], "epochs"),
    "one fold": (["--folds", "1"], "folds must be 0 (no cross-validation) or at least 2"),
    "more folds than samples": (["--folds", "7"], "needs at least 7 labelled images; 6 given"),
    "a negative seed": (["--seed", "-1"], "The seed must be a whole number"),
    "an infinite label": (["--labels", "{root}/infinite.csv"], "labels must be finite numbers"),
    "a label of 1e308": (["--labels", "{root}/absurd.csv"], "too large"),
    "a missing column": (["--column", "modulus"], "no column modulus"),
    "an unknown depth": (["--depth", "pool9"], "Unknown depth"),
    "the label table as an output": (
        ["--labels", "{data}/T_predictions.csv", "--out", "{data}", "--name", "T", "--overwrite"],
        "an output may never replace an input",
    ),
    "existing outputs": (["--out", "{root}/models", "--name", "frozen"], "exists already"),
    "a device this machine lacks": (["--device", NO_SUCH_DEVICE], NO_SUCH_DEVICE),
    "a folder without a label table": (["--labels", "{root}/missing.csv"], "does not exist"),
}


@pytest.mark.parametrize("template, phrase", TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_refuses(template, phrase, w, capsys):
    argv = _argv(["train", "{data}", *template], w)
    for option, value in {
        "--out": str(w.root / "new_models"),
        "--weights": "random",
        "--folds": "2",
    }.items():
        if option not in argv:
            argv += [option, value]
    _run_refused(argv + ["--quiet"], w, phrase, capsys)


# --------------------------------------------------------------------------------------------
# properties predict

PREDICT_CASES = {
    "a grey float image": (["{model}", "{grey}"], "holds grey levels"),
    "an 8-bit grey image": (["{model}", "{grey8}"], "distinct values"),
    "a phase absent from the image": (
        ["{model}", "{img}", "--phase", "3"],
        "Phase 3 does not occur",
    ),
    "a 0/255 image, the model's phase": (["{model}", "{img255}"], "its labels are 0, 255"),
    "the output is the input image": (
        ["{model}", "{img}", "--out", "{img}", "--overwrite"],
        "never replace an input",
    ),
    "the output is the model": (
        ["{model}", "{img}", "--out", "{model}", "--overwrite"],
        "never replace an input",
    ),
    "a model without feature_mean": (["{root}/damaged/a.npz", "{img}"], "no array 'feature_mean'"),
    "a model with a short coef": (["{root}/damaged/b.npz", "{img}"], "an array 'coef' of shape"),
    "a model without head_w1": (["{root}/damaged/d.npz", "{img}"], "no array 'head_w1'"),
    "a model whose head_w1 is mis-shaped": (
        ["{root}/damaged/e.npz", "{img}"],
        "an array 'head_w1' of shape",
    ),
    "a pickle as the model": (
        ["{root}/pickle.npz", "{img}"],
        "not a property model written by `properties train`",
    ),
    "a folder as the model": (["{data}", "{img}"], "is a folder"),
    "an axis the image lacks": (["{model}", "{img}", "--axis", "z"], "Axis 'z' does not exist"),
    "a device this machine lacks": (
        ["{model}", "{img}", "--device", NO_SUCH_DEVICE],
        NO_SUCH_DEVICE,
    ),
}


@pytest.mark.parametrize("template, phrase", PREDICT_CASES.values(), ids=PREDICT_CASES.keys())
def test_predict_refuses(template, phrase, w, capsys):
    argv = _argv(["predict", *template], w)
    if "--out" not in argv:
        argv += ["--out", str(w.root / "predictions_out.csv")]
    _run_refused(argv, w, phrase, capsys)


def test_a_pickled_model_is_never_to_be_loaded_unsafely(w, capsys):
    _run_refused(
        _argv(["predict", "{root}/object_header.npz", "{img}", "--out", "{root}/p.csv"], w),
        w,
        "pickled Python objects, which are never loaded",
        capsys,
    )
    for path in (w.root / "pickle.npz", w.root / "object_header.npz"):
        with pytest.raises(MicrostructureError) as refused:
            load_property_model(path)
        assert "unsafe" not in str(refused.value) and "allow_pickle" not in str(refused.value)


# --------------------------------------------------------------------------------------------
# the Python API: each call raises at once, before any work (generators before they start)


def _refused(call, w, phrase: str) -> None:
    before = _snapshot(w.root)
    images = {k: v.copy() for k, v in w.images.items()}
    with pytest.raises(MicrostructureError) as refused:
        call(w)
    assert phrase in str(refused.value)
    assert _snapshot(w.root) == before
    for name, array in images.items():
        np.testing.assert_array_equal(w.images[name], array)


BUILD_API_CASES = {
    "a volume-fraction range in the wrong order": (
        {"volume_fraction": (0.9, 0.1)},
        "LOW (0.9) is above HIGH (0.1)",
    ),
    "a NaN volume fraction": (
        {"volume_fraction": (float("nan"), 0.5)},
        "strictly between 0 and 1",
    ),
    "a seed above 2**63": ({"seed": 2**63}, "The seed must be a whole number"),
    "a fractional count": ({"generated": 2.5}, "whole number"),
    "an unknown family": ({"families": ["foam"]}, "Unknown family"),
    "a grey micrograph": ({"micrographs": {"m": "grey"}, "crops": 1}, "holds grey levels"),
    "a masked micrograph": ({"micrographs": {"m": "masked"}, "crops": 1}, "masked"),
    "an axis 2D samples lack": ({"axes": ["z"]}, "Axis 'z' does not exist"),
    "no axis": ({"axes": []}, "at least one transport axis"),
    "a device this machine lacks": ({"device": NO_SUCH_DEVICE}, NO_SUCH_DEVICE),
    "reconstruction options the builder sets": (
        {"micrographs": {"m": "img"}, "reconstructions": 1, "reconstruction_options": {"seed": 3}},
        "cannot set seed",
    ),
}


def _micrographs(w, names: dict) -> dict:
    masked = np.ma.masked_array(w.images["img"], mask=w.images["img"] == 0)
    return {key: masked if value == "masked" else w.images[value] for key, value in names.items()}


@pytest.mark.parametrize("options, phrase", BUILD_API_CASES.values(), ids=BUILD_API_CASES.keys())
def test_build_dataset_refuses(options, phrase, w):
    options = {"generated": 6, "size": 32, **options}
    if "micrographs" in options:
        options["micrographs"] = _micrographs(w, options["micrographs"])
    _refused(lambda w: build_dataset_steps(**options), w, phrase)
    _refused(lambda w: build_dataset(**options), w, phrase)


TRAIN_API_CASES = {
    "fine-tuning for 0 epochs": ({"mode": "finetune", "epochs": 0}, "epochs"),
    "fine-tuning for -1 epochs": ({"mode": "finetune", "epochs": -1}, "epochs"),
    "one fold": ({"folds": 1}, "folds must be 0 (no cross-validation) or at least 2"),
    "a label of 1e308": ({"labels": [0.1, 0.2, 1e308, 0.3, 0.4, 0.5]}, "too large"),
    "a NaN label": ({"labels": [0.1, 0.2, np.nan, 0.3, 0.4, 0.5]}, "finite"),
    "labels that are not numbers": ({"labels": ["a"] * 6}, "must be numbers"),
    "a learning rate of NaN": ({"learning_rate": float("nan")}, "learning rate"),
    "a validation share of 1": ({"mode": "finetune", "validation": 1.0}, "validation"),
    "a negative seed": ({"seed": -1}, "The seed must be a whole number"),
    "grey images": ({"images": "grey"}, "holds grey levels"),
    "names that do not match": ({"names": ["a"]}, "names"),
    "max_slices of 0": ({"max_slices": 0}, "max_slices"),
    "a device this machine lacks": ({"device": NO_SUCH_DEVICE}, NO_SUCH_DEVICE),
}


@pytest.mark.parametrize("options, phrase", TRAIN_API_CASES.values(), ids=TRAIN_API_CASES.keys())
def test_train_property_model_refuses(options, phrase, w):
    options = {"weights": "random", "folds": 2, **options}
    images = [w.images["grey"]] * 6 if options.pop("images", None) == "grey" else w.dataset.images
    labels = options.pop("labels", list(w.dataset.table["D_eff_x"]))
    messages = []
    _refused(
        lambda w: train_property_model(images, labels, callback=messages.append, **options),
        w,
        phrase,
    )
    assert messages == [], "the training started before the input was refused"


LOAD_API_CASES = {
    "no feature_mean": ("no_feature_mean", "no array 'feature_mean'"),
    "a short coef": ("short_coef", "an array 'coef' of shape"),
    "a NaN coefficient": ("nan_coef", "not finite"),
    "no head_w1": ("no_head_w1", "no array 'head_w1'"),
    "a mis-shaped head_w1": ("wide_head_w1", "an array 'head_w1' of shape"),
    "no first convolution": ("no_conv0", "no array 'conv0_weight'"),
    "no layers in the header": ("no_layers", "no valid trunk layers"),
    "a version that is not a number": ("bad_version", "format version"),
    "an unknown mode": ("unknown_mode", "unknown mode"),
    "a pickle": ("pickle.npz", "pickled Python objects, which are never loaded"),
    "an archive of Python objects": (
        "object_header.npz",
        "pickled Python objects, which are never loaded",
    ),
    "a text file": ("text.npz", "not a property model written by `properties train`"),
    "a single array": ("single.npy", "single numpy array"),
    "a folder": ("data", "is a folder"),
}


@pytest.mark.parametrize("name, phrase", LOAD_API_CASES.values(), ids=LOAD_API_CASES.keys())
def test_load_property_model_refuses(name, phrase, w):
    path = w.broken.get(name, w.root / name)
    _refused(lambda w: load_property_model(path), w, phrase)


PREDICT_API_CASES = {
    "a grey float image": ({"image": "grey"}, "holds grey levels"),
    "an 8-bit grey image": ({"image": "grey8"}, "distinct values"),
    "an image with NaN": ({"image": "nan"}, "NaN"),
    "a phase absent from the image": ({"image": "img", "phase": 3}, "Phase 3 does not occur"),
    "a masked image": ({"image": "masked"}, "masked"),
    "names that do not match": ({"image": "img", "names": ["a", "b"]}, "names"),
    "max_slices of 0": ({"image": "img", "max_slices": 0}, "max_slices"),
    "an axis the image lacks": ({"image": "img", "axis": "z"}, "Axis 'z' does not exist"),
    "a device this machine lacks": ({"image": "img", "device": NO_SUCH_DEVICE}, NO_SUCH_DEVICE),
    "a model file that is damaged": (
        {"image": "img", "model": "no_head_w1"},
        "no array 'head_w1'",
    ),
}


@pytest.mark.parametrize(
    "options, phrase", PREDICT_API_CASES.values(), ids=PREDICT_API_CASES.keys()
)
def test_predict_property_refuses(options, phrase, w):
    options = dict(options)
    image = _micrographs(w, {"image": options.pop("image")})["image"]
    model = w.broken[options.pop("model")] if "model" in options else w.frozen
    _refused(lambda w: predict_property(model, image, **options), w, phrase)


TRANSPORT_API_CASES = {
    "a grey float image": (lambda w: transport_labels(w.images["grey"]), "holds grey levels"),
    "a phase absent from the image": (
        lambda w: transport_labels(w.images["img255"]),
        "Phase 1 does not occur",
    ),
    "a masked image": (
        lambda w: transport_labels(_micrographs(w, {"m": "masked"})["m"]),
        "masked",
    ),
    "an axis the image lacks": (
        lambda w: transport_labels(w.images["img"], axes=["z"]),
        "Axis 'z' does not exist",
    ),
    "an axis that is no axis": (
        lambda w: transport_labels(w.images["img"], axes=[0.5]),
        "Unknown axis 0.5: give a name",
    ),
    "no axis": (
        lambda w: transport_labels(w.images["img"], axes=[]),
        "at least one transport axis",
    ),
    "an iteration limit of 0": (
        lambda w: transport_labels(w.images["img"], iter_limit=0),
        "iter_limit",
    ),
    "a NaN convergence criterion": (
        lambda w: transport_labels(w.images["img"], conv_crit=float("nan")),
        "conv_crit",
    ),
    "a device this machine lacks": (
        lambda w: transport_labels(w.images["img"], device=NO_SUCH_DEVICE),
        NO_SUCH_DEVICE,
    ),
    "a cache folder that is a file": (
        lambda w: transport_labels(w.images["img"], cache=LabelCache(w.img)),
        "is a file: give a folder",
    ),
}


@pytest.mark.parametrize(
    "call, phrase", TRANSPORT_API_CASES.values(), ids=TRANSPORT_API_CASES.keys()
)
def test_transport_labels_refuses(call, phrase, w):
    _refused(call, w, phrase)
