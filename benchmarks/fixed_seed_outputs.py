"""Fixed-seed outputs of the main jobs, saved and compared array for array across code versions.

    python benchmarks/fixed_seed_outputs.py save DIR        # run the jobs, write DIR/*.npz
    python benchmarks/fixed_seed_outputs.py compare A B     # every array of A equals B's

The jobs (CPU, one torch thread, fixed seeds, through the public Python API only, so that the
script runs unchanged on the code before and after a refactoring): alloy_256 and carbonate_256
reconstructed in 2D with the defaults; a 32^3 volume of alloy_64; a two-depth pruning study of
alloy_64; a frozen property model trained on 60 generated samples, and its predictions.
``compare`` exits 1 and names the first arrays that differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

TIMING_WORDS = ("second", "time", "elapsed", "flop", "memory")


def _numeric_columns(table) -> dict[str, np.ndarray]:
    """The table's numeric columns that do not measure time or memory."""
    return {
        f"table.{column}": table[column].to_numpy(float)
        for column in table.columns
        if table[column].dtype.kind in "biuf"
        and not any(w in column.lower() for w in TIMING_WORDS)
    }


def run_jobs() -> dict[str, dict[str, np.ndarray]]:
    import torch

    from napari_microstructure import (
        build_dataset,
        load_sample,
        prune,
        reconstruct,
        reconstruct_volume,
        train_property_model,
    )

    torch.set_num_threads(1)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name in ("alloy_256", "carbonate_256"):
        result = reconstruct(load_sample(name), seed=3, device="cpu")
        outputs[f"reconstruct_{name}"] = {
            "images": result.images,
            "loss_history": np.asarray(result.loss_history),
        }
    volume = reconstruct_volume(load_sample("alloy_64"), 32, seed=3, device="cpu")
    outputs["volume_alloy_64_32"] = {"volume": volume.volume}
    profile = prune(
        load_sample("alloy_64"),
        depths=[1, 2],
        samples=1,
        iterations=20,
        levels=2,
        seed=3,
        device="cpu",
    )
    outputs["prune_alloy_64"] = _numeric_columns(profile.table())
    data = build_dataset(generated=60, size=64, seed=3, device="cpu")
    model = train_property_model(
        data.images, data.table["D_eff_x"], property="D_eff_x", folds=3, seed=3, device="cpu"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        model.save(path)
        with np.load(path) as stored:
            arrays = {
                f"model.{k}": stored[k] for k in stored.files if stored[k].dtype.kind in "biuf"
            }
    arrays["dataset.labels"] = data.table["D_eff_x"].to_numpy(float)
    arrays["dataset.images"] = np.stack(data.images)
    arrays["predictions"] = np.asarray(model.predict(data.images[:10], device="cpu"), float)
    outputs["property_model_60"] = arrays
    return outputs


def save(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for job, arrays in run_jobs().items():
        np.savez(folder / f"{job}.npz", **arrays)
        print(f"{job}: {', '.join(f'{k} {v.shape}' for k, v in arrays.items())}")


def compare(first: Path, second: Path) -> int:
    differences = []
    for path in sorted(first.glob("*.npz")):
        other = second / path.name
        if not other.exists():
            differences.append(f"{path.name}: missing in {second}")
            continue
        with np.load(path) as a, np.load(other) as b:
            for key in sorted(set(a.files) | set(b.files)):
                if key not in a.files or key not in b.files:
                    differences.append(f"{path.name}:{key}: only in one of them")
                elif a[key].shape != b[key].shape or not np.array_equal(
                    a[key], b[key], equal_nan=True
                ):
                    differences.append(f"{path.name}:{key}: differs")
                else:
                    print(f"identical  {path.name}:{key} {a[key].shape}")
    for line in differences:
        print(f"DIFFERENT  {line}")
    print(f"{len(differences)} difference(s)")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("save").add_argument("folder", type=Path)
    check = commands.add_parser("compare")
    check.add_argument("first", type=Path)
    check.add_argument("second", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        save(args.folder)
        return 0
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
