"""3D structure-property models: trained on generated 3D volumes, tested on crops of real volumes.

1. Generated 3D volumes (the five families of core/synthetic.py, ``--size``^3, volume fraction
   uniform in the given range), labelled with the 3D D_eff of phase 1 along x by TauFactor:
   generation and labelling time per volume.
2. Test crops of the two shared volumes, never in training: ``--crops`` crops of ``--size``^3 of
   the electrode (``../shared/data/taufactor/electrode.tiff``, pore phase, label 0) and of
   TauFactor's anisotropic benchmark volume (``TF-500x500x500-1x2x6-v3``, its 30 % phase, label
   255), each labelled along its three axes (the model turns a volume so that the asked axis
   lies along its own).
3. Features, pretrained and random trunk (to pool2, two scales, square roots of channel means
   and deviations): per slice of the volume's spanning clusters (found in 3D), the slices that
   contain the transport axis (two directions, ``--slices`` each; what core/properties.py
   does) and the cross-sections normal to it. Feature sets compared: ``mean`` (the model's:
   mean over the slices that contain the axis), ``mean+std`` (and the standard deviation over
   those slices), ``mean+cross`` (and the cross-sections' mean), ``mean+std+cross``;
   ``mean/inverse_tortuosity``: the ``mean`` features, the ridge fitting D_eff over the
   spanning clusters' fraction (what a 2D model of D_eff learns); ``mean+coarse_solve``: least
   squares on the coarse solves of the spanning clusters first, the ridge on the ``mean``
   features learning what it leaves (what a model of D_eff does, physics ``coarse_solve``);
   ``mean+coarse_joint``: the coarse solves' features beside the trunk's in one ridge.
4. Ridge regression (core/properties.fit_ridge) on the generated volumes: relative MAE (MAE
   over the mean true value, percolating crops only) on the real crops, per volume and axis,
   and R² on held-out generated volumes (the last ``--held-out``); learning curves over
   ``--sizes`` training volumes, ``--repeats`` random draws each, pretrained against random.
5. The time of one ``--timing-size``^3 prediction by a trained PropertyModel (the electrode's
   central crop), against TauFactor's time on the same volume along x.

One CPU thread for torch; wall seconds with the load average (a shared machine inflates them).

    python benchmarks/properties_3d.py                    # 500 volumes of 64^3, /tmp/properties_3d
    python benchmarks/properties_3d.py --generated 150 --held-out 50 --sizes 25 50 100 --repeats 2
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
from transport_3d import centre_crop, load_volume, random_crops  # noqa: E402

from napari_microstructure.core import datasets, properties  # noqa: E402
from napari_microstructure.core.physics import transport  # noqa: E402

#: (volume, conducting phase, what it is)
REAL = (("electrode", 0, "electrode pores"), ("benchmark", 255, "benchmark 30 % phase"))
AXES = ("z", "y", "x")
#: The coarse solves a model with physics makes (core/properties.py).
COARSE = properties._coarse_settings("coarse_solve")
VARIANTS = (
    "mean",
    "mean+coarse_solve",  # least squares on the coarse solves first, the ridge on the rest
    "mean+coarse_joint",  # the coarse solves as features beside the trunk's, one ridge
    "mean+std",
    "mean+cross",
    "mean+std+cross",
    "mean/inverse_tortuosity",  # the ridge learns D_eff over the spanning fraction
)


def slice_statistics(volume, phase, axis, convs, mean_bgr, layers, max_slices, cross) -> dict:
    """Per-slice trunk statistics of a volume's spanning clusters along ``axis``: ``along``
    (slices that contain the axis, both directions) and, with ``cross``, ``cross`` (normal
    to it)."""
    smallest = properties._smallest_side(layers)
    along, fraction, solves = properties._slices(
        volume, phase, axis, "spanning", max_slices, smallest, "volume", coarse=COARSE
    )
    stacks = {"along": np.concatenate(along)}
    if cross:
        index = AXES.index(axis)
        spanning = np.moveaxis(properties._spanning(np.asarray(volume) == phase, index), index, 0)
        chosen = np.unique(np.linspace(0, len(spanning) - 1, min(max_slices, len(spanning))))
        stacks["cross"] = spanning[chosen.round().astype(int)]
    result = {}
    with torch.inference_mode():
        for name, stack in stacks.items():
            x = torch.from_numpy(np.ascontiguousarray(stack, np.float32)[:, None])
            result[name] = properties._statistics(x, convs, mean_bgr, layers).double().numpy()
    result["spanning_fraction"] = fraction
    result["solves"] = solves
    return result


def aggregate(statistics: dict, variant: str) -> np.ndarray:
    """One feature row of a volume from its per-slice statistics."""
    parts = [statistics["along"].mean(0)]
    if "std" in variant:
        parts.append(statistics["along"].std(0))
    if "cross" in variant:
        parts.append(statistics["cross"].mean(0))
    return np.concatenate(parts)


def relative_mae(targets, predicted) -> float:
    """MAE over the mean true value, on percolating samples (D_eff > 0)."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    keep = targets > 0
    return float(np.abs(targets[keep] - predicted[keep]).mean() / targets[keep].mean())


def fit_predict(
    train_x, train_y, test_x, learns="property", fractions=None, solves=None, joint=False
) -> np.ndarray:
    """Ridge on ``train_x``; with ``learns="inverse_tortuosity"`` it fits D_eff over the spanning
    fraction and ``fractions`` = (training fractions, test fractions) turn it back; with
    ``solves`` = (training, test coarse solves), least squares on those first (the model's
    physics ``coarse_solve``), or with ``joint`` their features beside the trunk's."""
    physics = [None, None]
    if solves is not None:
        physics = [properties._physics_features(v, f, learns) for v, f in zip(solves, fractions)]
    if joint:
        train_x, test_x = (np.hstack([x, p]) for x, p in zip((train_x, test_x), physics))
        physics = [None, None]
    train_t = properties._learnt(train_y, fractions[0], learns) if fractions else train_y
    fitted = properties.fit_regression(train_x, train_t, physics[0])
    values = properties.apply_regression(fitted, test_x, physics[1])
    if learns == "property":
        return np.maximum(values, 0)
    return properties._property_of(values, fractions[1], learns)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/properties_3d", help="results.json and the cache")
    parser.add_argument("--generated", type=int, default=500, help="generated volumes")
    parser.add_argument("--held-out", type=int, default=100, help="of which held out")
    parser.add_argument("--size", type=int, default=64, help="side of volumes and crops")
    parser.add_argument("--volume-fraction", nargs=2, type=float, default=[0.1, 0.9])
    parser.add_argument("--crops", type=int, default=12, help="crops per real volume")
    parser.add_argument("--slices", type=int, default=properties.MAX_SLICES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[25, 50, 100, 200, 400])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timing-size", type=int, default=128)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=["mean", "mean+coarse_solve"],
        help="features",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = datasets.LabelCache(out)
    print(f"load average at the start: {load_average()}", flush=True)

    started = time.perf_counter()
    side = args.size
    dataset = datasets.build_dataset(
        generated=args.generated,
        size=(side, side, side),
        volume_fraction=tuple(args.volume_fraction),
        cache=cache,
        device="cpu",
    )
    build = dataset.provenance["timings"]
    print(
        f"{args.generated} generated {side}^3 volumes: {build['total_seconds']:.0f} s, of which "
        f"labelling {build['label_seconds']:.0f} s (cached labels are not timed again); "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    volumes = dataset.images
    targets = dataset.table["D_eff_x"].to_numpy(float)

    tests = []  # (volume name, axis, crop, phase, D_eff)
    for name, phase, _what in REAL:
        volume = load_volume(name)
        for crop in random_crops(volume, side, args.crops, seed=1):
            if not (crop == phase).any():
                continue
            row_ = datasets.transport_labels(crop, phase, AXES, cache=cache, device="cpu")
            tests += [(name, axis, crop, phase, row_[f"D_eff_{axis}"]) for axis in AXES]
    print(f"{len(tests)} real test crop-axes labelled; {time.perf_counter() - started:.0f} s")

    layers = properties.trunk_layers()
    results = {"load_average_start": load_average(), "args": vars(args), "trunks": {}}
    n_train = args.generated - args.held_out
    rng = np.random.default_rng(0)
    for trunk in ("normalized", "random"):
        loaded, convs = properties._convs_for(layers, trunk, "cpu")
        cross = any("cross" in v for v in args.variants)
        clock = time.perf_counter()
        train_stats = []
        for i, v in enumerate(volumes):
            train_stats.append(
                slice_statistics(v, 1, "x", convs, loaded.mean_bgr, layers, args.slices, cross)
            )
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} volumes: {time.perf_counter() - clock:.0f} s", flush=True)
        test_stats = [
            slice_statistics(c, p, a, convs, loaded.mean_bgr, layers, args.slices, cross)
            for _n, a, c, p, _y in tests
        ]
        seconds = (time.perf_counter() - clock) / (len(volumes) + len(tests))
        print(f"{trunk} trunk: {seconds:.2f} s of features per volume", flush=True)
        entry = {"feature_seconds_per_volume": seconds, "variants": {}}
        for variant in args.variants:
            x = np.stack([aggregate(s, variant) for s in train_stats])
            test_x = np.stack([aggregate(s, variant) for s in test_stats])
            learns = variant.partition("/")[2] or "property"
            fractions = np.array([s["spanning_fraction"] for s in train_stats])
            test_fractions = np.array([s["spanning_fraction"] for s in test_stats])
            physics = "coarse" in variant
            solves = np.array([s["solves"] for s in train_stats]) if physics else None
            test_solves = np.array([s["solves"] for s in test_stats]) if physics else None

            def fitted(train, test_x, test_fractions, test_solves):
                """Predictions for ``test_x`` of the variant trained on rows ``train``."""
                return fit_predict(
                    x[train],
                    targets[train],
                    test_x,
                    learns,
                    (fractions[train], test_fractions),
                    (solves[train], test_solves) if physics else None,
                    joint="joint" in variant,
                )

            held_out = slice(n_train, None)
            own = (x[held_out], fractions[held_out], solves[held_out] if physics else None)
            predicted = fitted(slice(0, n_train), test_x, test_fractions, test_solves)
            held = fitted(slice(0, n_train), *own)
            per = {}
            for name, _phase, _what in REAL:
                for axis in AXES:
                    keep = [i for i, t in enumerate(tests) if t[0] == name and t[1] == axis]
                    truth = np.array([tests[i][4] for i in keep])
                    per[f"{name} {axis}"] = {
                        "relative_mae": relative_mae(truth, predicted[keep]),
                        "mean_true": float(truth.mean()),
                        "mean_predicted": float(predicted[keep].mean()),
                        "percolating": int((truth > 0).sum()),
                        "n": len(keep),
                    }
            truth = np.array([t[4] for t in tests])
            curve = {}
            for size in [s for s in args.sizes if s <= n_train]:
                draws = [rng.choice(n_train, size, replace=False) for _ in range(args.repeats)]
                external = [
                    relative_mae(truth, fitted(d, test_x, test_fractions, test_solves))
                    for d in draws
                ]
                generated_r2 = [
                    properties.scores(targets[n_train:], fitted(d, *own))["r2"] for d in draws
                ]
                curve[size] = {
                    "external_relative_mae": [float(np.mean(external)), float(np.std(external))],
                    "held_out_r2": [float(np.mean(generated_r2)), float(np.std(generated_r2))],
                }
            entry["variants"][variant] = {
                "real": per,
                "real_relative_mae": relative_mae(truth, predicted),
                "held_out": properties.scores(targets[n_train:], held),
                "learning_curve": curve,
            }
            print(
                f"  {variant}: real relative MAE {relative_mae(truth, predicted):.3f}, held-out "
                f"R² {properties.scores(targets[n_train:], held)['r2']:.3f}",
                flush=True,
            )
        results["trunks"][trunk] = entry

    print(f"\nload average: {load_average()}")
    print(row("trunk", "features", *[f"{n} {a}" for n, _p, _w in REAL for a in AXES], "all"))
    print(row(*["---"] * (3 + len(REAL) * len(AXES))))
    for trunk, entry in results["trunks"].items():
        for variant, v in entry["variants"].items():
            cells = [
                f"{v['real'][f'{n} {a}']['relative_mae']:.2f} "
                f"({v['real'][f'{n} {a}']['mean_true']:.2f}/"
                f"{v['real'][f'{n} {a}']['mean_predicted']:.2f})"
                for n, _p, _w in REAL
                for a in AXES
            ]
            print(row(trunk, variant, *cells, f"{v['real_relative_mae']:.3f}"))
    for variant in args.variants:
        print(f"\nlearning curves ({variant}): training volumes, real relative MAE, held-out R²")
        print(row("n", "pretrained rel. MAE", "random rel. MAE", "pretrained R²", "random R²"))
        print(row(*["---"] * 5))
        curves = {
            t: e["variants"][variant]["learning_curve"] for t, e in results["trunks"].items()
        }
        for size in curves["normalized"]:
            cells = [
                f"{curves[t][size][k][0]:.3f} ± {curves[t][size][k][1]:.3f}"
                for k in ("external_relative_mae", "held_out_r2")
                for t in ("normalized", "random")
            ]
            print(row(size, *cells))

    # the model as a user gets it: train on the first volumes, time one larger prediction
    model = properties.train(volumes[:50], targets[:50], folds=0, device="cpu")
    volume = centre_crop(load_volume("electrode"), args.timing_size)
    seconds, cpu = [], []
    for _ in range(3):
        clock, cpu_clock = time.perf_counter(), time.process_time()
        model.predict(volume, phase=0, axis="x", device="cpu")
        seconds.append(time.perf_counter() - clock)
        cpu.append(time.process_time() - cpu_clock)
    clock, cpu_clock = time.perf_counter(), time.process_time()
    solved = transport(volume, 0, "x", device="cpu")
    solver = (time.perf_counter() - clock, time.process_time() - cpu_clock)
    results["timing"] = {
        "size": args.timing_size,
        "predict_seconds": seconds,
        "predict_cpu_seconds": cpu,
        "taufactor_seconds": solver[0],
        "taufactor_cpu_seconds": solver[1],
        "taufactor_d_eff": solved.d_eff,
        "load_average": load_average(),
    }
    print(
        f"\none {args.timing_size}^3 prediction: {min(seconds):.2f} s wall, {min(cpu):.2f} s CPU "
        f"(best of 3); TauFactor on it: {solver[0]:.1f} s wall, {solver[1]:.1f} s CPU "
        f"({solver[1] / min(cpu):.0f}x in CPU); load {load_average()}"
    )
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"total {time.perf_counter() - started:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
