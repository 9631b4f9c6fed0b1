"""``napari-microstructure info``: what this installation has (weights, devices, versions)."""

from __future__ import annotations

import os
from importlib import metadata

#: Distributions whose installed versions are reported (read from their metadata, not imported).
PACKAGES = ("torch", "numpy", "napari")


def add_parser(commands) -> None:
    """Add the ``info`` command to the subparsers ``commands``."""
    info = commands.add_parser(
        "info",
        help="show the package version, the weights found, the devices and the versions",
        description="Show the package version, the normalized VGG19 weights found and whether "
        "their sha256 is the pinned one, the torch devices available, torch's threads and the "
        "versions of torch, numpy and napari. Changes nothing.",
    )
    info.set_defaults(run=run)


def _installed_version(name: str) -> str:
    """The installed version of the distribution ``name``, or ``"not installed"`` (the package
    is never imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _weights_lines() -> list[str]:
    """Where the normalized weights are, and whether their sha256 is the pinned one."""
    from ..core.weights import (
        HOW_TO_GET_WEIGHTS,
        NORMALIZED_SHA256,
        find_normalized_weights,
        sha256_of,
    )

    path = find_normalized_weights()
    if path is None:
        return ["weights (normalized): not found. " + HOW_TO_GET_WEIGHTS]
    found = f"weights (normalized): {path}"
    if os.environ.get("NAPARI_MICROSTRUCTURE_WEIGHTS"):
        found += " (from NAPARI_MICROSTRUCTURE_WEIGHTS)"
    if not path.is_file():
        return [f"{found} is not a file"]
    digest = sha256_of(path)
    if digest == NORMALIZED_SHA256:
        return [found, f"  sha256 {digest}: matches the pinned sha256"]
    return [found, f"  sha256 {digest}: differs from the pinned sha256 {NORMALIZED_SHA256}"]


def run(args) -> int:
    """Print what this installation has; return 0."""
    from ..core.device import available_devices
    from ..core.provenance import environment

    devices = available_devices()
    record = environment()
    lines = [
        f"napari-microstructure {record['package_version']}",
        *_weights_lines(),
        f"devices: {', '.join(devices)} (auto: {devices[0]})",
        f"torch threads: {record['threads']}",
        f"python {record['python']} on {record['platform']}",
        *(f"{name} {_installed_version(name)}" for name in PACKAGES),
    ]
    print("\n".join(lines))
    return 0
