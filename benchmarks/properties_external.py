"""The default 2D property workflow on real micrographs it never saw: relative MAE per material.

The workflow is the README's: a dataset of ``--generated`` generated 128x128 microstructures
(``properties build --generated 300``: the families and volume-fraction range given here,
the defaults otherwise), labelled with D_eff of phase 1 along x by TauFactor, and the default
model trained on it (``properties train``: frozen pretrained trunk to pool2, ridge; trained
here without cross-validation, which does not change the model). It is then tested against
TauFactor on ``--crops`` random 128x128 crops, along x and y, of:

- ``alloy_256`` and ``carbonate_256`` (the shipped micrographs, ``_sample_data.load_sample``),
  both phases;
- slices of the two shared volumes (``../shared/data/taufactor``): the electrode (pores,
  active material and binder, each as the phase of interest against the rest) and TauFactor's
  benchmark volume (both phases), a random slice normal to a random axis per crop.

Relative MAE = MAE / mean true D_eff over the crops where the phase percolates (D_eff > 0);
the blocked crops are counted apart (their mean prediction). Labels are cached in ``--out``.

    python benchmarks/properties_external.py                              # the defaults
    python benchmarks/properties_external.py --volume-fraction 0.05 0.95  # a wider range
    python benchmarks/properties_external.py --families gaussian_field cell_boundaries fibre_network
    python benchmarks/properties_external.py --physics none               # the trunk alone
    python benchmarks/properties_external.py --coarse-blocks 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from properties import load_average, row  # noqa: E402 - the benchmark beside this one
from transport_3d import VOLUMES, load_volume  # noqa: E402

from napari_microstructure._sample_data import load_sample  # noqa: E402
from napari_microstructure.core import datasets, properties  # noqa: E402
from napari_microstructure.core.synthetic import FAMILIES  # noqa: E402

#: (test set, source, phase of interest)
MICROGRAPHS = (
    ("alloy phase 0 (boundaries)", "alloy_256", 0),
    ("alloy phase 1 (grains)", "alloy_256", 1),
    ("carbonate phase 0 (matrix)", "carbonate_256", 0),
    ("carbonate phase 1 (pores)", "carbonate_256", 1),
)
SLICES = (
    ("electrode slices, pores", "electrode", 0),
    ("electrode slices, active", "electrode", 85),
    ("electrode slices, binder", "electrode", 170),
    ("benchmark slices, 30 % phase", "benchmark", 255),
    ("benchmark slices, 70 % phase", "benchmark", 0),
)


def slice_crops(volume: np.ndarray, side: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` crops of ``side`` x ``side`` of slices normal to random axes of ``volume``."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        plane = np.take(volume, int(rng.integers(volume.shape[0])), axis=int(rng.integers(3)))
        y, x = (int(rng.integers(0, n - side + 1)) for n in plane.shape)
        crops.append(np.ascontiguousarray(plane[y : y + side, x : x + side]))
    return crops


def test_sets(side: int, count: int, cache) -> dict:
    """{test set: (crops, phase, D_eff along x and y per crop, as two rows per crop)}."""
    sets = {}
    volumes = {}
    missing = sorted({source for _, source, _ in SLICES if not VOLUMES[source].exists()})
    if missing:
        print(f"without the slices of {', '.join(missing)}: ../shared/data/taufactor/ is absent")
    for name, source, phase in MICROGRAPHS + SLICES:
        if source in missing:
            continue
        if source in ("electrode", "benchmark"):
            volume = volumes.setdefault(source, load_volume(source))
            crops = slice_crops(volume, side, count, seed=3)
        else:
            crops, _ = datasets.random_crops(load_sample(source), side, count, seed=3)
        crops = [c for c in crops if (c == phase).any()]
        labels = [
            datasets.transport_labels(c, phase, ("x", "y"), cache=cache, device="cpu")
            for c in crops
        ]
        sets[name] = (crops, phase, labels)
    return sets


def evaluate(model, sets: dict) -> dict:
    """Per test set: the relative MAE over percolating crop-axes, and the blocked ones."""
    results = {}
    for name, (crops, phase, labels) in sets.items():
        truth, predicted = [], []
        for axis in ("x", "y"):
            predicted += list(model.predict(crops, phase=phase, axis=axis, device="cpu"))
            truth += [label[f"D_eff_{axis}"] for label in labels]
        truth, predicted = np.array(truth), np.array(predicted)
        open_ = truth > 0
        results[name] = {
            "n": len(truth),
            "percolating": int(open_.sum()),
            "fraction": float(np.mean([(c == phase).mean() for c in crops])),
            "mean_true": float(truth[open_].mean()) if open_.any() else None,
            "mean_predicted": float(predicted[open_].mean()) if open_.any() else None,
            "relative_mae": float(np.abs(truth - predicted)[open_].mean() / truth[open_].mean())
            if open_.any()
            else None,
            "blocked_mean_predicted": float(predicted[~open_].mean()) if (~open_).any() else None,
        }
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/properties_external", help="results and cache")
    parser.add_argument("--generated", type=int, default=300)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--volume-fraction", nargs=2, type=float, default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--crops", type=int, default=16, help="crops per test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--learns", choices=properties.LEARNS, default="auto", help="what the ridge learns"
    )
    parser.add_argument(
        "--physics", choices=properties.PHYSICS, default="auto", help="physics in the regression"
    )
    parser.add_argument(
        "--coarse-blocks",
        nargs="+",
        type=int,
        default=list(properties.COARSE_BLOCKS),
        help="block sides of the coarse solves",
    )
    args = parser.parse_args(argv)
    properties.COARSE_BLOCKS = tuple(args.coarse_blocks)  # read when a model is trained
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = datasets.LabelCache(out)
    print(f"load average at the start: {load_average()}", flush=True)
    started = time.perf_counter()
    changes = {"volume_fraction": tuple(args.volume_fraction)} if args.volume_fraction else {}
    dataset = datasets.build_dataset(
        generated=args.generated,
        families=tuple(args.families),
        size=args.size,
        seed=args.seed,
        cache=cache,
        device="cpu",
        **changes,
    )
    print(f"dataset built: {time.perf_counter() - started:.0f} s", flush=True)
    model = properties.train(
        dataset.images,
        dataset.table["D_eff_x"],
        folds=0,
        device="cpu",
        learns=args.learns,
        physics=args.physics,
    )
    print(f"model trained: {time.perf_counter() - started:.0f} s", flush=True)
    sets = test_sets(args.size, args.crops, cache)
    print(f"test sets labelled: {time.perf_counter() - started:.0f} s", flush=True)
    results = evaluate(model, sets)
    label = (
        f"{args.generated} generated, {' '.join(args.families)}, volume fraction "
        f"{dataset.provenance['volume_fraction_range']}, learns "
        f"{model.header['preprocessing']['learns']}, physics "
        f"{model.header['preprocessing']['physics']}"
    )
    print(f"\n{label}; load average {load_average()}")
    print(row("test set", "fraction", "percolating", "mean true", "mean predicted", "rel. MAE"))
    print(row(*["---"] * 6))
    for name, r in results.items():
        if r["relative_mae"] is None:
            cells = ["-", "-", f"- (blocked: predicted {r['blocked_mean_predicted']:.3f})"]
        else:
            cells = [f"{r['mean_true']:.3f}", f"{r['mean_predicted']:.3f}"]
            cells.append(f"{r['relative_mae']:.3f}")
        print(row(name, f"{r['fraction']:.2f}", f"{r['percolating']}/{r['n']}", *cells))
    fractions = "-".join(map(str, args.volume_fraction or ["default"]))
    learns = model.header["preprocessing"]["learns"]
    physics = model.header["preprocessing"]["physics"]
    if physics == "coarse_solve":
        coarse = model.header["preprocessing"]["coarse"]
        physics += f"_{'-'.join(map(str, coarse['blocks']))}"
    path = out / (
        f"results_{'_'.join(sorted(args.families))}_{fractions}_seed{args.seed}_{learns}"
        f"_{physics}.json"
    )
    path.write_text(json.dumps({"args": vars(args), "label": label, "results": results}))
    print(f"total {time.perf_counter() - started:.0f} s; {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
