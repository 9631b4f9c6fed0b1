"""The dock widgets' forms read every default, range and choice from the core's options classes:
an untouched form sends the job the options' defaults (Xvfb, a real napari viewer, the shipped
alloy micrograph)."""

from __future__ import annotations

import pytest

from napari_microstructure import load_sample
from napari_microstructure.core.datasets import DatasetOptions
from napari_microstructure.core.decoder import OPTIMIZERS, ReconstructionOptions
from napari_microstructure.core.options import spec
from napari_microstructure.core.properties import DEFAULT_DEPTH, MODES, TrainOptions
from napari_microstructure.core.pruning import StudyOptions, default_configurations
from napari_microstructure.core.volume import VolumeOptions
from napari_microstructure.widgets._form import CROPS_PER_LAYER, PREVIEW_INTERVAL, QT_INT_MAX

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_labels(load_sample("alloy_64"), name="alloy")
    return viewer


def _open(viewer, widget_class, name: str):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=name)
    return widget


def _range(box) -> tuple:
    return box.minimum(), box.maximum()


def test_reconstruction_form_sends_the_options_defaults_in_2d_and_3d(viewer) -> None:
    from napari_microstructure.widgets import ReconstructionWidget

    widget = _open(viewer, ReconstructionWidget, "Microstructure reconstruction")
    # the one setting of the interface: previews of the live layer, which the job leaves off
    expected = ReconstructionOptions(preview_interval=PREVIEW_INTERVAL)
    assert widget._capture().options == expected

    widget.volume_check.setChecked(True)
    options = widget._capture().options
    assert options == VolumeOptions(preview_interval=PREVIEW_INTERVAL, size=(64, 64, 64))
    assert (options.iterations, options.optimizer) != (expected.iterations, expected.optimizer)
    widget.volume_check.setChecked(False)  # untouched parameters take the 2D defaults again
    assert widget._capture().options == expected

    for box, name in [
        (widget.iterations_spin, "iterations"),
        (widget.levels_spin, "levels"),
        (widget.samples_spin, "samples"),
        (widget.island_spin, "max_island"),
        (widget.lr_spin, "learning_rate"),
    ]:
        item = spec(ReconstructionOptions, name)
        assert _range(box) == pytest.approx((item.low, item.high)), name
        assert box.toolTip().lower().startswith(item.help.lower()), name
    item = spec(VolumeOptions, "slices_per_axis")
    assert _range(widget.slices_spin) == (item.low, item.high)
    assert [widget.optimizer_combo.itemData(i) for i in range(len(OPTIMIZERS))] == list(OPTIMIZERS)
    assert [widget.kind_combo.itemData(i) for i in range(3)] == list(
        spec(ReconstructionOptions, "kind").choices
    )
    # seeds go up to 2**63 - 1 in the core; Qt's box stops earlier, and says so
    assert widget.seed_spin.maximum() == QT_INT_MAX and f"{QT_INT_MAX:,}" in (
        widget.seed_spin.toolTip()
    )
    widget.seed_spin.setValue(QT_INT_MAX)
    widget.preview_spin.setValue(0)  # "no preview"
    options = widget._capture().options
    assert options.seed == QT_INT_MAX and options.preview_interval is None


def test_pruning_form_sends_the_study_defaults(viewer) -> None:
    from napari_microstructure.widgets import PruningWidget

    widget = _open(viewer, PruningWidget, "Pruning study")
    widget.select_layers(["alloy"])
    study = StudyOptions()
    assert sorted(d for d, box in widget.depth_checks.items() if box.isChecked()) == sorted(
        study.depths
    )
    reconstruction = ReconstructionOptions()  # what the study leaves to the reconstruction
    assert widget._capture().options == StudyOptions(
        configurations=tuple(default_configurations(study.depths, study.subsets)),
        iterations=reconstruction.iterations,
        levels=reconstruction.levels,
    )
    assert widget.tolerance_spin.value() == pytest.approx(100 * study.tolerance)  # in percent
    assert _range(widget.samples_spin) == (
        spec(StudyOptions, "samples").low,
        spec(StudyOptions, "samples").high,
    )
    widget.budget_combo.setCurrentText("seconds")
    seconds = spec(StudyOptions, "seconds")
    assert _range(widget.seconds_spin) == pytest.approx((seconds.low, seconds.high))
    assert widget._capture().options.seconds == widget.seconds_spin.value()


def test_property_form_sends_the_training_and_dataset_defaults(viewer) -> None:
    from napari_microstructure.widgets import PropertyWidget

    widget = _open(viewer, PropertyWidget, "Property prediction")
    widget.source_combo.setCurrentText("crops of the layers, D_eff by TauFactor")
    widget.select_layers(["alloy"])
    request = widget._capture()
    training = TrainOptions()
    assert request.options == TrainOptions(property=f"D_eff_{training.axis}", depth=DEFAULT_DEPTH)
    # the crops of the layers, labelled on the CPU along the training's axis
    assert request.build == DatasetOptions(
        crops=CROPS_PER_LAYER, axes=(training.axis,), device="cpu"
    )
    assert [widget.mode_combo.itemData(i) for i in range(len(MODES))] == list(MODES)
    for box, options_class, name in [
        (widget.folds_spin, TrainOptions, "folds"),
        (widget.crop_size_spin, DatasetOptions, "size"),
        (widget.generated_spin, DatasetOptions, "generated"),
    ]:
        item = spec(options_class, name)
        assert _range(box) == (item.low, item.high), name
