"""Gram-matrix descriptors of microstructures and the loss that compares them.

For a layer with feature maps F (C channels by N = H*W positions) the Gram matrix is
G = F Fᵀ / N. The Gram matrices of a few layers describe a microstructure's texture, whatever the
image size, so a reconstruction may be of any size.
"""

from __future__ import annotations

from collections.abc import Mapping


def gram_matrices(features: Mapping) -> dict:
    """Return ``{layer: G (batch, C, C)}`` with ``G = F Fᵀ / N`` for each feature map."""
    grams = {}
    for name, feature in features.items():
        batch, channels = feature.shape[:2]
        flat = feature.reshape(batch, channels, -1)
        grams[name] = flat @ flat.transpose(1, 2) / flat.shape[-1]
    return grams


def gram_loss(grams: Mapping, targets: Mapping, layer_weights: Mapping | None = None):
    """Per-sample loss ``sum_l w_l ||G_l - T_l||² / ||T_l||²`` (a tensor of shape (batch,)).

    ``targets`` hold one Gram matrix per layer, shape (1, C, C) or (C, C).
    """
    total = 0.0
    for name, gram in grams.items():
        target = targets[name].reshape(1, *gram.shape[-2:])
        weight = 1.0 if layer_weights is None else float(layer_weights.get(name, 1.0))
        difference = ((gram - target) ** 2).sum(dim=(1, 2))
        total = total + weight * difference / (target**2).sum().clamp_min(1e-30)
    return total
