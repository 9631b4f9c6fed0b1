"""What the widgets need to know about the viewer's layers (Qt-free helpers)."""

from __future__ import annotations

__all__ = ["layer_files"]


def layer_files(viewer) -> list[str]:
    """The files the viewer's layers were read from: no Save button may replace one of them."""
    return [str(layer.source.path) for layer in viewer.layers if layer.source.path]
