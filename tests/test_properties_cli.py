"""``napari-microstructure properties label|build|train|predict``, end to end on a tiny dataset."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_microstructure.cli import main
from napari_microstructure.core.weights import find_normalized_weights

pytest.importorskip("taufactor", reason="the physics labels need TauFactor (pip install taufactor)")


@pytest.mark.skipif(find_normalized_weights() is None, reason="the normalized VGG19 is not installed")
def test_build_label_train_predict(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["properties", "build", "--out", str(data), "--generated", "24", "--size", "40", "--seed", "2", "--quiet"]) == 0
    table = pd.read_csv(data / "labels.csv")
    assert len(table) == 24 and len(list(data.glob("*.tif"))) == 24

    assert main(["properties", "label", str(data), "--out", str(tmp_path / "labels.csv"), "--quiet"]) == 0
    relabelled = pd.read_csv(tmp_path / "labels.csv")
    assert len(relabelled) == 24
    by_name = dict(zip(relabelled["file"].map(lambda f: f.split("/")[-1]), relabelled["D_eff_x"]))
    np.testing.assert_allclose([by_name[f] for f in table["file"]], table["D_eff_x"], rtol=1e-6)

    models = tmp_path / "models"
    code = main(["properties", "train", str(data), "--column", "D_eff_x", "--folds", "3", "--out", str(models), "--quiet"])
    assert code == 0
    assert sorted(p.name for p in models.iterdir()) == [
        "D_eff_x_frozen.npz", "D_eff_x_frozen_metrics.json", "D_eff_x_frozen_parity.png", "D_eff_x_frozen_predictions.csv"]
    metrics = json.loads((models / "D_eff_x_frozen_metrics.json").read_text())
    assert metrics["cross_validation"]["folds"] == 3 and metrics["weights"]["source"] == "normalized"
    assert "cross-validated R2" in capsys.readouterr().out

    out = tmp_path / "predictions.csv"
    files = [str(data / f) for f in table["file"][:3]]
    assert main(["properties", "predict", str(models / "D_eff_x_frozen.npz"), *files, "--out", str(out)]) == 0
    predicted = pd.read_csv(out)
    assert list(predicted.columns) == ["file", "D_eff_x_predicted"] and len(predicted) == 3

    # nothing is overwritten without --overwrite
    assert main(["properties", "predict", str(models / "D_eff_x_frozen.npz"), *files, "--out", str(out)]) == 2
    assert main(["properties", "train", str(data), "--folds", "3", "--out", str(models), "--quiet"]) == 2
    assert main(["properties", "build", "--out", str(data), "--generated", "2", "--size", "40", "--quiet"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_bad_input_ends_with_a_message(tmp_path, capsys):
    (tmp_path / "model.npz").write_text("not a model")
    image = tmp_path / "image.npy"
    np.save(image, np.eye(40, dtype=np.uint8))
    assert main(["properties", "predict", str(tmp_path / "model.npz"), str(image), "--out", str(tmp_path / "p.csv")]) == 2
    assert "not a readable property model" in capsys.readouterr().err
    assert main(["properties", "label", str(tmp_path / "missing"), "--out", str(tmp_path / "l.csv")]) == 2
    assert main(["properties", "train", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "labels.csv does not exist" in capsys.readouterr().err
