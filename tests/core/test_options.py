"""The options objects: picklable, the one source of defaults, and strict about names."""

import dataclasses
import pickle

import pytest

from napari_microstructure import (
    DatasetOptions,
    ReconstructionOptions,
    StudyOptions,
    TrainOptions,
    VolumeOptions,
)
from napari_microstructure.cli import build_parser
from napari_microstructure.cli._common import options_from
from napari_microstructure.core.errors import InputError
from napari_microstructure.core.options import merge, spec

CHANGED = {
    ReconstructionOptions: dict(size=(64, 96), samples=3, layers=("pool1",), seed=7),
    VolumeOptions: dict(size=(16, 24, 32), slices_per_axis=None, symmetric=False),
    StudyOptions: dict(depths=(1, 2), samples=1, seconds=2.5, tolerance=0.2),
    DatasetOptions: dict(
        generated=10, families=("gaussian_field",), reconstruction_options={"iterations": 5}
    ),
    TrainOptions: dict(mode="finetune", phase=(0, 1, 1), folds=0, learning_rate=1e-2),
}


@pytest.mark.parametrize("options_class", list(CHANGED), ids=lambda c: c.__name__)
def test_every_options_object_pickles_and_is_frozen(options_class):
    for options in (options_class(), options_class(**CHANGED[options_class])):
        copy = pickle.loads(pickle.dumps(options))
        assert copy == options and copy is not options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 1


def test_an_unknown_option_is_refused_with_the_known_ones():
    with pytest.raises(InputError, match="Unknown option iteration;.*iterations"):
        merge(ReconstructionOptions, None, {"iteration": 5})
    with pytest.raises(InputError, match="must be a VolumeOptions"):
        merge(VolumeOptions, ReconstructionOptions(), {})


def test_the_3d_options_differ_from_2d_only_where_measured():
    shared = {f.name for f in dataclasses.fields(VolumeOptions)} & {
        f.name for f in dataclasses.fields(ReconstructionOptions)
    }
    differ = {
        n
        for n in shared
        if spec(VolumeOptions, n).default != spec(ReconstructionOptions, n).default
    }
    assert differ == {"iterations", "optimizer", "learning_rate", "periodic", "two_point_weight"}


@pytest.mark.parametrize(
    "command, options_class",
    [
        (["reconstruct"], ReconstructionOptions),
        (["prune", "a.npy"], StudyOptions),
        (["properties", "build", "--out", "d"], DatasetOptions),
        (["properties", "train", "d"], TrainOptions),
    ],
)
def test_the_command_line_defaults_are_the_options_defaults(command, options_class):
    args = build_parser().parse_args(command)
    assert options_from(args, options_class) == options_class()


def test_the_command_line_help_shows_the_options_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    iterations = spec(ReconstructionOptions, "iterations").default
    volume_iterations = spec(VolumeOptions, "iterations").default
    assert f"(default: {iterations}; 3D: {volume_iterations})" in shown
