"""The public Python API: lazy imports and the names it promises."""

import subprocess
import sys

import napari_microstructure


def test_importing_the_package_and_its_manifest_modules_does_not_import_torch():
    code = (
        "import sys, napari_microstructure, napari_microstructure._sample_data, napari_microstructure.io; "
        "assert 'torch' not in sys.modules, 'torch imported at package import'"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_the_report_module_imports_neither_qt_nor_torch():
    code = (
        "import sys, napari_microstructure.report; "
        "heavy = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'torch'); "
        "loaded = [m for m in heavy if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_every_public_name_resolves():
    for name in napari_microstructure.__all__:
        assert getattr(napari_microstructure, name) is not None


def test_unknown_name_raises_attribute_error():
    import pytest

    with pytest.raises(AttributeError):
        _ = napari_microstructure.no_such_thing
