"""Shared fixtures: the ``../shared`` folder beside the repository and the Li et al. micrographs.

``../shared`` exists on the developers' machines and in CI, not in a user's clone: every
fixture that needs it skips the test, with the reason, where it is absent.

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
LI2018_DIR = SHARED_DIR / "data" / "li2018"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the repository root (skips the test where absent)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(
            f"{SHARED_DIR} is absent: the shared data only exist beside a project checkout"
        )
    return SHARED_DIR


def _li2018(shared: Path, name: str) -> np.ndarray:
    path = shared / "data" / "li2018" / f"{name}.npy"
    if not path.is_file():
        pytest.skip(f"{path} is absent from the shared data")
    array = np.load(path, allow_pickle=False)
    array.setflags(write=False)
    return array


@pytest.fixture(scope="session")
def alloy_256(shared_dir: Path) -> np.ndarray:
    """Alloy micrograph 256x256, uint8 labels: grains (1) and grain boundaries (0)."""
    return _li2018(shared_dir, "alloy_256")


@pytest.fixture(scope="session")
def alloy_64(shared_dir: Path) -> np.ndarray:
    """Alloy micrograph downsized to 64x64, uint8 labels 0/1."""
    return _li2018(shared_dir, "alloy_64")


@pytest.fixture(scope="session")
def carbonate_256(shared_dir: Path) -> np.ndarray:
    """Carbonate rock micrograph 256x256, uint8 labels 0/1."""
    return _li2018(shared_dir, "carbonate_256")


@pytest.fixture(scope="session")
def carbonate_64(shared_dir: Path) -> np.ndarray:
    """Carbonate rock micrograph downsized to 64x64, uint8 labels 0/1."""
    return _li2018(shared_dir, "carbonate_64")


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # macOS and Windows always have a window system
    # pytest-xvfb has started Xvfb and set DISPLAY before collection, where Xvfb is installed
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gui`` tests, with the reason, where no display can be had."""
    if _has_display():
        return
    skip = pytest.mark.skip(
        reason="no display: install Xvfb (pytest-xvfb then starts it) or run under xvfb-run -a"
    )
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)
