"""Choosing the torch device, and how much memory it has free."""

from __future__ import annotations

import os
import re

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Devices that work on this machine, best first (``cuda:N`` for each GPU, ``mps``, ``cpu``)."""
    import torch

    devices = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def resolve_device(device: str = "auto"):
    """Return a ``torch.device`` for ``auto`` (CUDA, then MPS, then CPU) or an explicit name.

    The one device policy of every command, widget and function: an explicit device that this
    machine lacks, or a name that is no device, raises :class:`DeviceError`; nothing falls back
    to another device silently.
    """
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not re.fullmatch(r"cuda(:\d+)?", name):
            raise DeviceError(
                f"Unknown device {device!r}: write cuda, or cuda:N for the GPU of index N "
                "(cuda:0 is the first)."
            )
        if not torch.cuda.is_available():
            raise DeviceError(
                f"Device {device!r} was requested but CUDA is not available here (no NVIDIA GPU, "
                "or torch was built without CUDA). Use device='auto' or 'cpu'."
            )
        parsed = torch.device(name)
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(
                f"Device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
        return parsed
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("Device 'mps' was requested but Apple MPS is not available here.")
        return torch.device("mps")
    raise DeviceError(f"Unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}.")


def free_memory_bytes(device) -> int | None:
    """Free memory on ``device`` in bytes (host memory for the CPU), or None if unknown."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
