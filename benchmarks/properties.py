"""Structure-property prediction by transfer learning (docs/method.md section 5): the numbers to show.

1. A dataset of generated 2D microstructures (five families, volume fraction uniform in the
   given range), labelled with D_eff of phase 1 along x by TauFactor: build and label time.
2. The default model (frozen pretrained trunk to pool2, ridge regression, with the coarse
   solves unless ``--physics none``): 5-fold
   cross-validated R², MAE, RMSE on ``--train`` samples, per family too, and the same with a
   random trunk; training time (features, cross-validation and the final fit).
3. That model on random 128x128 crops of the two real micrographs, none seen in training,
   against TauFactor's D_eff of the same crops: the alloy's grain-boundary network (phase 0)
   and both phases of the carbonate (label 1, 14 %: the pores; label 0: the matrix).
4. Learning curves: test R² and MAE on the held-out samples (those not among the ``--train``)
   for 25, 50, 100, 200 training samples, pretrained against random trunk, ``--repeats``
   random draws each: the trunks' features alone in a ridge on D_eff (no physics), what
   transfer buys by itself.
5. Prediction time of one 256x256 micrograph.
Optionally (``--finetune N``): the fine-tuned mode, pretrained against random initialization,
trained on N samples, tested on the held-out samples.

Every run uses one CPU thread (``torch.set_num_threads(1)``), and prediction is also timed with
torch's default thread count (all cores); wall and CPU seconds are printed
with the machine's load average (other work on a shared machine inflates wall time).

    python benchmarks/properties.py                         # writes into /tmp/properties_bench
    python benchmarks/properties.py --samples 120 --train 80 --repeats 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from napari_microstructure import report
from napari_microstructure.core import datasets, properties

LI2018 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "li2018"
#: (micrograph, conducting phase, what it is)
REAL = (
    ("alloy_256", 0, "alloy grain boundaries"),
    ("carbonate_256", 1, "carbonate pores"),
    ("carbonate_256", 0, "carbonate matrix"),
)


def load(name: str) -> np.ndarray:
    """A micrograph from ../shared/data/li2018, else the copy shipped with the package."""
    path = LI2018 / f"{name}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    from napari_microstructure import load_sample

    return load_sample(name)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self):
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} s CPU"


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def fit_and_test(features, targets, fit, test) -> dict:
    arrays = properties.fit_ridge(features[fit], targets[fit])
    predicted = np.maximum(properties.apply_ridge(arrays, features[test]), 0.0)
    return properties.scores(targets[test], predicted)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="/tmp/properties_bench", help="folder for the PNGs and results.json"
    )
    parser.add_argument(
        "--samples", type=int, default=400, help="generated microstructures (default: %(default)s)"
    )
    parser.add_argument(
        "--train",
        type=int,
        default=300,
        help="of which cross-validated and trained on (default: %(default)s)",
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--volume-fraction", nargs=2, type=float, default=[0.1, 0.9], metavar=("LOW", "HIGH")
    )
    parser.add_argument(
        "--crops", type=int, default=16, help="crops per real micrograph (default: %(default)s)"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[25, 50, 100, 200],
        help="learning-curve training sizes",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="random draws per learning-curve size (default: %(default)s)",
    )
    parser.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="N",
        help="also fine-tune on N samples, pretrained and random",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--physics", choices=properties.PHYSICS, default="auto", help="the model's physics"
    )
    args = parser.parse_args(argv)

    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"arguments": vars(args), "load_average_start": load_average()}
    print(f"load average {results['load_average_start']}; torch threads {torch.get_num_threads()}")

    # 1. dataset --------------------------------------------------------------------------
    with Clock() as clock:
        dataset = datasets.build_dataset(
            generated=args.samples,
            size=args.size,
            volume_fraction=tuple(args.volume_fraction),
            seed=args.seed,
        )
    table = dataset.table
    targets = table["D_eff_x"].to_numpy(float)
    label_seconds = dataset.provenance["timings"]["label_seconds"]
    print(
        f"\n## Dataset: {len(targets)} microstructures {args.size}x{args.size}, {table['family'].nunique()} families, "
        f"volume fraction {table['volume_fraction'].min():.2f}-{table['volume_fraction'].max():.2f}"
    )
    print(
        f"built and labelled in {clock} (TauFactor {label_seconds:.1f} s); blocked (D_eff = 0): "
        f"{(targets == 0).mean():.0%}"
    )
    results["dataset"] = {
        "n": len(targets),
        "seconds": clock.wall,
        "cpu_seconds": clock.cpu,
        "label_seconds": label_seconds,
        "blocked_fraction": float((targets == 0).mean()),
        "per_family": table.groupby("family")["D_eff_x"].agg(["count", "mean"]).to_dict(),
    }

    order = np.random.default_rng(args.seed).permutation(len(targets))
    train_index, test_index = np.sort(order[: args.train]), np.sort(order[args.train :])
    train_images = [dataset.images[i] for i in train_index]

    # 2. cross-validation and training time ------------------------------------------------
    models = {}
    print(f"\n## 5-fold cross-validation on {args.train} samples (D_eff_x)\n")
    print(row("trunk", "R²", "MAE", "RMSE", "training time (features + CV + fit)"))
    print(row(*["---"] * 5))
    for weights in ("normalized", "random"):
        with Clock() as clock:
            model = properties.train(
                train_images,
                targets[train_index],
                weights=weights,
                folds=5,
                seed=args.seed,
                physics=args.physics,
            )
        models[weights] = model
        cv = model.header["cross_validation"]
        print(row(weights, f"{cv['r2']:.3f}", f"{cv['mae']:.4f}", f"{cv['rmse']:.4f}", str(clock)))
        results[f"cv_{weights}"] = {k: cv[k] for k in ("r2", "mae", "rmse", "fold_r2")} | {
            "seconds": clock.wall,
            "cpu_seconds": clock.cpu,
        }
    model = models["normalized"]
    out_of_fold = np.array(model.header["cross_validation"]["predictions"], float)
    families = table["family"].to_numpy()[train_index]
    print(
        "\nper family (pretrained): "
        + ", ".join(
            f"{f} R² {properties.scores(targets[train_index][families == f], out_of_fold[families == f])['r2']:.3f}"
            for f in sorted(set(families))
        )
    )

    # 3. real micrographs ------------------------------------------------------------------
    print(
        f"\n## {args.crops} random {args.size}x{args.size} crops of each real micrograph (not seen in training)\n"
    )
    print(
        row(
            "micrograph, phase",
            "volume fraction",
            "D_eff TauFactor (mean)",
            "D_eff predicted (mean)",
            "blocked crops",
            "MAE",
            "R²",
        )
    )
    print(row(*["---"] * 7))
    real = {}
    for index, (name, phase, what) in enumerate(REAL):
        crops, _ = datasets.random_crops(load(name), args.size, args.crops, seed=args.seed + index)
        truth = np.array([datasets.transport_labels(c, phase, ("x",))["D_eff_x"] for c in crops])
        predicted = model.predict(crops, phase=phase)
        fractions = np.array([(c == phase).mean() for c in crops])
        result = properties.scores(truth, predicted)
        r2 = f"{result['r2']:.3f}" if np.ptp(truth) > 0 else "n/a (all equal)"
        print(
            row(
                f"{name}, phase {phase} ({what})",
                f"{fractions.mean():.3f}",
                f"{truth.mean():.4f}",
                f"{predicted.mean():.4f}",
                f"{(truth == 0).sum()}/{len(truth)}",
                f"{result['mae']:.4f}",
                r2,
            )
        )
        real[f"{name} phase {phase}"] = {"truth": truth, "predicted": predicted, **result}
    results["real"] = {
        k: {
            "mae": v["mae"],
            "r2": v["r2"],
            "truth": v["truth"].tolist(),
            "predicted": v["predicted"].tolist(),
        }
        for k, v in real.items()
    }

    # 4. learning curves -------------------------------------------------------------------
    all_features = {}
    for weights in ("normalized", "random"):
        with Clock() as clock:
            all_features[weights] = properties.extract_features(dataset.images, weights=weights)
        print(f"\nfeatures of {len(targets)} samples, {weights} trunk: {clock}")
    print(
        f"\n## Learning curves: test set of {len(test_index)} held-out samples, {args.repeats} draws per size\n"
    )
    print(row("training samples", "R² pretrained", "R² random", "MAE pretrained", "MAE random"))
    print(row(*["---"] * 5))
    curves = {w: {"r2": [], "mae": []} for w in all_features}
    rng = np.random.default_rng(args.seed + 1)
    for size in args.sizes:
        draws = [
            np.sort(rng.choice(train_index, size, replace=False)) for _ in range(args.repeats)
        ]
        for weights, features in all_features.items():
            found = [fit_and_test(features, targets, fit, test_index) for fit in draws]
            curves[weights]["r2"].append([f["r2"] for f in found])
            curves[weights]["mae"].append([f["mae"] for f in found])
        r2 = {w: np.array(curves[w]["r2"][-1]) for w in curves}
        mae = {w: np.array(curves[w]["mae"][-1]) for w in curves}
        print(
            row(
                size,
                f"{r2['normalized'].mean():.3f} ± {r2['normalized'].std():.3f}",
                f"{r2['random'].mean():.3f} ± {r2['random'].std():.3f}",
                f"{mae['normalized'].mean():.4f}",
                f"{mae['random'].mean():.4f}",
            )
        )
    results["learning_curves"] = {"sizes": args.sizes, **curves}

    # 5. prediction time -------------------------------------------------------------------
    micrographs = [load("alloy_256"), load("carbonate_256")]
    model.predict(micrographs[0], phase=0)  # warm-up
    results["prediction_seconds"] = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        walls, cpus = [], []
        for _ in range(10):
            for micrograph in micrographs:
                with Clock() as clock:
                    model.predict(micrograph, phase=0)
                walls.append(clock.wall)
                cpus.append(clock.cpu)
        print(
            f"\n## Prediction of one 256x256 micrograph, {threads} thread(s): median {np.median(walls):.3f} s wall, "
            f"{np.median(cpus):.3f} s CPU (min {min(walls):.3f} s; 20 runs)"
        )
        results["prediction_seconds"][f"{threads}_threads"] = {
            "median_wall": float(np.median(walls)),
            "median_cpu": float(np.median(cpus)),
            "min_wall": min(walls),
        }
    torch.set_num_threads(1)

    # optional: fine-tuning ----------------------------------------------------------------
    if args.finetune:
        print(
            f"\n## Fine-tuning on {args.finetune} samples, tested on the {len(test_index)} held-out samples\n"
        )
        print(row("initialization", "test R²", "test MAE", "epochs", "time"))
        print(row(*["---"] * 5))
        fit = train_index[: args.finetune]
        test_images = [dataset.images[i] for i in test_index]
        results["finetune"] = {}
        for weights in ("normalized", "random"):
            with Clock() as clock:
                tuned = properties.train(
                    [dataset.images[i] for i in fit],
                    targets[fit],
                    mode="finetune",
                    weights=weights,
                    folds=0,
                    seed=args.seed,
                )
            found = properties.scores(targets[test_index], tuned.predict(test_images))
            epochs = len(tuned.header["training"]["history"])
            print(row(weights, f"{found['r2']:.3f}", f"{found['mae']:.4f}", epochs, str(clock)))
            results["finetune"][weights] = found | {
                "epochs": epochs,
                "seconds": clock.wall,
                "cpu_seconds": clock.cpu,
            }

    # figures ------------------------------------------------------------------------------
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    for weights, colour, label in (
        ("normalized", "C0", "pretrained (normalized VGG19)"),
        ("random", "C3", "random initialization"),
    ):
        for ax, metric in ((left, "r2"), (right, "mae")):
            values = np.array(curves[weights][metric])
            ax.errorbar(
                args.sizes,
                values.mean(1),
                yerr=values.std(1),
                marker="o",
                color=colour,
                capsize=3,
                label=label,
            )
    left.set_ylabel("test R²")
    right.set_ylabel("test MAE of D_eff")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xlabel("training samples")
        ax.set_xticks(args.sizes, [str(s) for s in args.sizes])
    left.legend()
    figure.suptitle(
        f"D_eff along x, frozen trunk to {model.header['depth']} + ridge; test set of {len(test_index)}"
    )
    figure.savefig(out / "learning_curves.png", dpi=150)

    figure = Figure(figsize=(5, 5), layout="constrained")
    report.plot_parity(
        targets[train_index], out_of_fold, title="D_eff along x", label="5-fold CV", figure=figure
    )
    axes = figure.axes[0]
    for (key, found), marker in zip(real.items(), ("s", "^", "D")):
        axes.scatter(
            found["truth"],
            found["predicted"],
            marker=marker,
            s=22,
            label=f"{key} crops: MAE {found['mae']:.3f}",
        )
    axes.legend(loc="upper left", fontsize=7)
    figure.savefig(out / "parity.png", dpi=150)

    results["load_average_end"] = load_average()
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(
        f"\nload average {results['load_average_end']}; wrote learning_curves.png, parity.png and results.json to {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
