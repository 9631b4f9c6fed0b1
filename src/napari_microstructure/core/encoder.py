"""VGG19's convolution stack as a feature extractor with named layers.

Layers are named as in the VGG papers: ``conv{block}_{i}`` (the rectified output of that
convolution) and ``pool{block}`` (2x2 average pooling after each block, as in the normalized
VGG19 of Gatys et al.). The network is truncated after the deepest layer in use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import InputError
from .weights import VGG19_CHANNELS, VGGWeights, load_weights

LAYER_NAMES: tuple[str, ...] = tuple(
    name
    for block, channels in enumerate(VGG19_CHANNELS, start=1)
    for name in [f"conv{block}_{i}" for i in range(1, len(channels) + 1)] + [f"pool{block}"]
)


def layer_channels(name: str) -> int:
    """Number of feature channels of a named layer."""
    check_layers([name])
    return VGG19_CHANNELS[int(name[4]) - 1][0]


def layer_downsampling(name: str) -> int:
    """Factor by which a layer's feature map is smaller than the input (1, 2, 4, ... 32)."""
    check_layers([name])
    block = int(name[4])
    return 2 ** (block if name.startswith("pool") else block - 1)


def check_layers(layers: Sequence[str] | str) -> list[str]:
    """Validate layer names and return them in network order, without repeats.

    ``layers`` is a sequence of names or one string of names separated by commas or spaces
    (``"pool2"``, ``"conv1_1,pool2"``).
    """
    if isinstance(layers, str):
        layers = layers.replace(",", " ").split()
    elif not isinstance(layers, Iterable):
        raise InputError(
            f"layers must be layer names, for example ['conv1_1', 'pool2']; got {layers!r}."
        )
    layers = list(layers)
    if not layers:
        raise InputError("Choose at least one layer, for example conv1_1 pool1 pool2.")
    unknown = [str(name) for name in layers if name not in LAYER_NAMES]
    if unknown:
        raise InputError(
            f"Unknown layer(s) {', '.join(unknown)}. Valid names: {', '.join(LAYER_NAMES)}."
        )
    return sorted(set(layers), key=LAYER_NAMES.index)


def min_input_size(layers: Sequence[str]) -> int:
    """Smallest image side for which every chosen layer has a feature map of at least 2x2."""
    return 2 * max(layer_downsampling(name) for name in check_layers(layers))


class Encoder:
    """VGG19 truncated after the deepest of ``layers``, on a device, returning named features.

    Input: a float tensor ``(batch, 3, H, W)`` with values in [0, 1] (a grey image replicated to
    three channels). It is scaled to 0..255 and the weights' mean is subtracted, the convention
    of the normalized VGG19. With ``periodic=True`` the convolutions pad circularly, so that the
    features of an image that tiles seamlessly see no border.
    """

    def __init__(
        self, layers: Sequence[str], weights: str | VGGWeights = "normalized", device="cpu"
    ):
        import torch

        self.layers = check_layers(layers)
        self.weights = weights if isinstance(weights, VGGWeights) else load_weights(weights)
        self.device = torch.device(device)
        deepest = LAYER_NAMES.index(self.layers[-1])
        self._plan = LAYER_NAMES[: deepest + 1]
        n_convs = sum(name.startswith("conv") for name in self._plan)
        if n_convs > self.weights.n_convs:
            raise InputError(
                f"Layer {self.layers[-1]} needs {n_convs} convolution layers but the weights hold "
                f"{self.weights.n_convs}."
            )
        self._convs = [
            (
                torch.from_numpy(np.ascontiguousarray(w)).to(self.device),
                torch.from_numpy(np.ascontiguousarray(b)).to(self.device),
            )
            for w, b in self.weights.convs[:n_convs]
        ]
        self._mean = torch.tensor(self.weights.mean_bgr, dtype=torch.float32, device=self.device)

    def __call__(self, images, periodic: bool = False) -> dict:
        """Return ``{layer name: features (batch, C, h, w)}`` for the chosen layers."""
        import torch.nn.functional as F

        x = images * 255.0 - self._mean.view(1, 3, 1, 1)
        features, conv_index = {}, 0
        for name in self._plan:
            if name.startswith("conv"):
                weight, bias = self._convs[conv_index]
                conv_index += 1
                if periodic:
                    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), weight, bias)
                else:
                    x = F.conv2d(x, weight, bias, padding=1)
                x = F.relu(x)
            else:
                x = F.avg_pool2d(x, 2)
            if name in self.layers:
                features[name] = x
        return features


_ENCODERS: dict = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(
    layers: Sequence[str], weights: str | VGGWeights = "normalized", device="cpu"
) -> Encoder:
    """Return a cached :class:`Encoder` (weights are loaded and moved to the device once)."""
    key = (
        tuple(check_layers(layers)),
        weights if isinstance(weights, str) else id(weights),
        str(device),
    )
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = Encoder(layers, weights, device)
        return _ENCODERS[key]
