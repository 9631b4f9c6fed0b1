"""Whether a property model's intervals and range check hold on data it never saw.

The model is the README's default workflow: ``--generated`` generated 128x128 microstructures
(``properties build --generated 300``), labelled with D_eff of phase 1 along x by TauFactor,
and the default model (``properties train``: frozen pretrained trunk to pool2, ridge, 5-fold
cross-validation, whose residuals calibrate the intervals). Then, against TauFactor:

1. held-out generated samples (``--held-out`` of another seed): the share of true values in
   the 90 % interval (and at 50 % and 95 %), the mean width, the share flagged out of range;
2. held-out real crops, none in training: the test sets of ``properties_external.py``
   (128x128 crops of alloy_256 and carbonate_256, both phases, and of slices of the two shared
   volumes when ``../shared/data/taufactor`` is present), along x and y: coverage, width,
   relative MAE (over the mean true D_eff, percolating crops only), out-of-range count;
3. the range check on a constant image and on a phase fraction outside the training range;
4. with ``--variants``: the coverage and width for other numbers of neighbours and distance
   floors (``properties.NEIGHBOURS``, ``properties.DISTANCE_FLOOR``), and without scaling;
5. with ``--adapt``: ``properties adapt`` (``ADAPT_CROPS`` crops of one half of a micrograph,
   or of one slice of a shared volume, labelled along x, added to the training set), tested
   on 128x128 crops of the other half (of slices of the volume's other half), along x and y:
   relative MAE and coverage before and after; with ``--reconstructions N``, N reconstructions
   of the part are added as well.

One CPU thread; labels are cached in ``--out``.

    python benchmarks/properties_trust.py                 # a few minutes
    python benchmarks/properties_trust.py --variants --adapt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from properties import load_average, row  # noqa: E402 - the benchmarks beside this one
from properties_external import test_sets  # noqa: E402

from napari_microstructure._sample_data import load_sample  # noqa: E402
from napari_microstructure.core import datasets, properties  # noqa: E402
from napari_microstructure.core.adaptation import adapt_steps  # noqa: E402
from napari_microstructure.core.steps import run_to_end  # noqa: E402

#: (material, source, phase): ``properties adapt`` on one half, tested on the other
ADAPTED = (
    ("alloy phase 0 (boundaries)", "alloy_256", 0),
    ("carbonate phase 0 (matrix)", "carbonate_256", 0),
    ("electrode slices, pores", "electrode", 0),
    ("benchmark slices, 30 % phase", "benchmark", 255),
)

COVERAGES = (0.5, 0.9, 0.95)


def interval_rows(model, sets: dict) -> tuple[list, dict]:
    """Per real test set: n, percolating, coverage at 90 %, mean width, relative MAE,
    out-of-range count (crops along x and y); and the pooled inside flags."""
    rows, pooled = [], {"all": [], "percolating": []}
    for name, (crops, phase, labels) in sets.items():
        truth, found = [], []
        for axis in ("x", "y"):
            truth += [label[f"D_eff_{axis}"] for label in labels]
            found.append(model.predict_intervals(crops, phase=phase, axis=axis, device="cpu"))
        truth = np.array(truth)
        low, high, values = (
            np.concatenate([getattr(f, k) for f in found]) for k in ("low", "high", "values")
        )
        flagged = np.concatenate([f.out_of_range for f in found])
        inside = (low <= truth) & (truth <= high)
        open_ = truth > 0
        relative = (
            np.abs(truth - values)[open_].mean() / truth[open_].mean() if open_.any() else np.nan
        )
        pooled["all"] += list(inside)
        pooled["percolating"] += list(inside[open_])
        rows.append(
            (
                name,
                len(truth),
                int(open_.sum()),
                f"{inside.mean():.2f}",
                f"{np.mean(high - low):.3f}",
                f"{relative:.2f}",
                int(flagged.sum()),
            )
        )
    return rows, pooled


def variants(model, train, held_out, sets) -> None:
    """Coverage at 90 % and width for other neighbours and floors, from the same features."""
    arrays = model.arrays
    layers = model.header["layers"]

    def standardized(images, phase=1, axis="x"):
        raw = properties.extract_features(images, phase=phase, axis=axis, layers=layers)
        return (raw - arrays["feature_mean"]) / arrays["feature_scale"]

    reference = standardized(train.images)
    y = train.table["D_eff_x"].to_numpy()
    oof = np.array(model.header["cross_validation"]["predictions"], float)
    tests = [("generated", standardized(held_out.images), held_out.table["D_eff_x"].to_numpy())]
    real_x, real_y = [], []
    for crops, phase, labels in sets.values():
        real_x.append(standardized(crops, phase))
        real_y += [label["D_eff_x"] for label in labels]
    tests.append(("real crops (x)", np.concatenate(real_x), np.array(real_y)))
    print(row("neighbours", "floor", *(f"{n}: coverage, width" for n, _, _ in tests)))
    print(row(*["---"] * (2 + len(tests))))
    for k in (5, 10, 20):
        own = properties._neighbour_distance(reference, reference, k, leave_one_out=True)
        scale = np.median(own)
        for floor in (None, 0.1, 0.5, 1.0, 2.0):
            difficulty = np.ones_like(own) if floor is None else own / scale + floor
            scores = np.sort(np.abs(y - oof) / difficulty)
            q = properties._conformal_quantile(scores, 0.9)
            cells = []
            for _, features, truth in tests:
                predicted = np.maximum(
                    properties.apply_ridge(
                        arrays, features * arrays["feature_scale"] + arrays["feature_mean"]
                    ),
                    0,
                )
                d = properties._neighbour_distance(reference, features, k) / scale
                half = q * (np.ones_like(d) if floor is None else d + floor)
                low, high = np.maximum(predicted - half, 0), predicted + half
                cells.append(
                    f"{np.mean((low <= truth) & (truth <= high)):.3f}, {np.mean(high - low):.3f}"
                )
            print(row(k, "none (plain)" if floor is None else floor, *cells))


def halves(source: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The part of ``source`` to adapt on (a half of a micrograph, one slice of a volume), and
    16 crops of 128x128 of the part held out (the other half, slices of the volume's other
    half)."""
    if source in ("electrode", "benchmark"):
        from transport_3d import load_volume

        volume = load_volume(source)
        half = volume.shape[0] // 2
        rng = np.random.default_rng(5)
        crops = []
        for _ in range(16):
            z = int(rng.integers(half, volume.shape[0]))
            y, x = (int(rng.integers(0, n - 127)) for n in volume.shape[1:])
            crops.append(np.ascontiguousarray(volume[z, y : y + 128, x : x + 128]))
        return volume[half // 2], crops
    image = load_sample(source)
    crops, _ = datasets.random_crops(image[128:], 128, 16, seed=5)
    return image[:128], crops


def score(model, crops, phase, cache, axis) -> tuple[float, float, int]:
    """Relative MAE (percolating crops) and coverage at 90 % along ``axis``."""
    truth = np.array(
        [
            datasets.transport_labels(c, phase, (axis,), cache=cache, device="cpu")[
                f"D_eff_{axis}"
            ]
            for c in crops
        ]
    )
    found = model.predict_intervals(crops, phase=phase, axis=axis, device="cpu")
    inside = (found.low <= truth) & (truth <= found.high)
    open_ = truth > 0
    relative = np.abs(truth - found.values)[open_].mean() / truth[open_].mean()
    return relative, float(np.mean(inside)), int(open_.sum())


def adapt_rows(model, train, cache, reconstructions: int = 0) -> None:
    print(
        row(
            "material",
            "axis",
            "percolating",
            "relative MAE: default",
            "adapted",
            "coverage: default",
            "adapted",
        )
    )
    print(row(*["---"] * 7))
    from transport_3d import VOLUMES

    for name, source, phase in ADAPTED:
        if source in VOLUMES and not VOLUMES[source].exists():
            print(row(name, f"skipped: {VOLUMES[source]} is absent", *[""] * 5))
            continue
        part, crops = halves(source)
        crops = [c for c in crops if (c == phase).any()]
        steps = adapt_steps(
            model,
            {source: part},
            train,
            phase=phase,
            reconstructions=reconstructions,
            seed=0,
            cache=cache,
            device="cpu",
        )
        adapted = run_to_end(steps)
        for axis in ("x", "y"):
            before, cover_before, n = score(model, crops, phase, cache, axis)
            after, cover_after, _ = score(adapted, crops, phase, cache, axis)
            cells = (f"{before:.2f}", f"{after:.2f}", f"{cover_before:.2f}", f"{cover_after:.2f}")
            print(row(name, axis, n, *cells), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/properties_trust", help="label cache")
    parser.add_argument("--generated", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--crops", type=int, default=16, help="crops per real test set")
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--adapt", action="store_true")
    parser.add_argument(
        "--reconstructions", type=int, default=0, help="reconstructions of each part to adapt on"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = datasets.LabelCache(out)
    print(f"load average at the start: {load_average()}", flush=True)
    started = time.perf_counter()
    train = datasets.build_dataset(generated=args.generated, seed=0, cache=cache, device="cpu")
    held_out = datasets.build_dataset(generated=args.held_out, seed=7, cache=cache, device="cpu")
    model = properties.train(train.images, train.table["D_eff_x"], folds=5, seed=0, device="cpu")
    cv = model.metrics
    print(
        f"datasets and model: {time.perf_counter() - started:.0f} s; CV R² {cv['r2']:.3f}, "
        f"MAE {cv['mae']:.4f}; distance threshold {model.header['trust']['distance_threshold']:.2f}",
        flush=True,
    )

    print("\n1. held-out generated samples\n")
    truth = held_out.table["D_eff_x"].to_numpy()
    print(row("coverage asked", "share inside", "mean width", "out of range"))
    print(row("---", "---", "---", "---"))
    for coverage in COVERAGES:
        found = model.predict_intervals(held_out.images, coverage=coverage, device="cpu")
        inside = (found.low <= truth) & (truth <= found.high)
        print(
            row(
                coverage,
                f"{inside.mean():.3f}",
                f"{np.mean(found.high - found.low):.3f}",
                int(found.out_of_range.sum()),
            )
        )

    print("\n2. held-out real crops, along x and y (90 % intervals)\n")
    sets = test_sets(128, args.crops, cache)
    rows, pooled = interval_rows(model, sets)
    print(
        row(
            "test set",
            "n",
            "percolating",
            "coverage",
            "mean width",
            "relative MAE",
            "out of range",
        )
    )
    print(row(*["---"] * 7))
    for cells in rows:
        print(row(*cells))
    print(
        f"\npooled: coverage {np.mean(pooled['all']):.3f} of {len(pooled['all'])} crop-axes; "
        f"{np.mean(pooled['percolating']):.3f} of the {len(pooled['percolating'])} percolating"
    )

    print("\n3. the range check\n")
    constant = np.ones((128, 128), np.uint8)
    sparse = np.zeros((128, 128), np.uint8)
    sparse[:, :6] = 1
    for name, image in (("constant image", constant), ("phase fraction 0.047", sparse)):
        found = model.predict_intervals(image, device="cpu")
        print(f"- {name}: out of range {bool(found.out_of_range[0])}: {found.reasons[0]}")

    if args.variants:
        print("\n4. neighbours and floors (90 % intervals)\n")
        variants(model, train, held_out, sets)
    if args.adapt:
        print("\n5. properties adapt, tested on the held-out half (90 % intervals)\n")
        adapt_rows(model, train, cache, args.reconstructions)
    print(f"\n{time.perf_counter() - started:.0f} s; load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
