"""Time the default 2D reconstruction against a plain baseline, and score both.

Baseline: the paper's layer set (conv1_1, pool1, pool2, pool3, pool4), full resolution only,
300 L-BFGS iterations. Both run in this process on the same micrographs and seeds, so the ratio
of their times is a like-for-like speed-up on this machine.

    python benchmarks/reconstruction.py                      # alloy_256 and carbonate_256
    python benchmarks/reconstruction.py --seeds 0 1 2 --no-baseline
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_microstructure import load_sample
from napari_microstructure.core import metrics
from napari_microstructure.core.decoder import reconstruct

BASELINE = dict(layers=("conv1_1", "pool1", "pool2", "pool3", "pool4"), levels=1, iterations=300)


def score(original: np.ndarray, result, seconds: float, with_transport: bool) -> dict:
    """Fidelity of the first reconstruction: errors, connectivity and transport of each phase."""
    image = result.images[0]
    row = {
        "seconds": seconds,
        "e_vf": metrics.e_vf(original, image),
        "e_s2": metrics.e_s2(original, image),
        "e_lp": metrics.e_lp(original, image),
    }
    for phase in metrics.phases_of(original):
        mine, theirs = metrics.connectivity(image, phase), metrics.connectivity(original, phase)
        row[f"largest[{phase}]"] = mine.largest_cluster_fraction
        row[f"spans[{phase}]"] = "".join("yx"[a] for a, s in enumerate(mine.spans) if s) or "-"
        row[f"clusters[{phase}]"] = f"{mine.n_clusters}/{theirs.n_clusters}"
    if with_transport:
        from napari_microstructure.core.physics import transport

        minority = min(metrics.phases_of(original), key=lambda p: (original == p).mean())
        for axis in (0, 1):
            ours = transport(image, minority, axis).d_eff
            reference = transport(original, minority, axis).d_eff
            row[f"D_eff[{minority}] axis {axis}"] = f"{ours:.4f}/{reference:.4f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=["alloy_256", "carbonate_256"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-transport", action="store_true", help="skip D_eff (TauFactor)")
    parser.add_argument("--levels", type=int, help="override the default number of levels")
    parser.add_argument("--iterations", type=int, help="override the default iteration budget")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    rows = []
    for name in args.samples:
        original = load_sample(name)
        chosen = {k: v for k, v in (("levels", args.levels), ("iterations", args.iterations)) if v}
        configurations = (
            {"default": chosen} if args.no_baseline else {"default": chosen, "baseline": BASELINE}
        )
        for seed in args.seeds:
            for label, options in configurations.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                result = reconstruct(original, seed=seed, device="cpu", **options)
                seconds, cpu_seconds = (
                    time.perf_counter() - started,
                    time.process_time() - cpu_started,
                )
                row = {
                    "micrograph": name,
                    "run": label,
                    "seed": seed,
                    "cpu_seconds": cpu_seconds,
                    **score(original, result, seconds, not args.no_transport),
                }
                rows.append(row)
                print(json.dumps(row, default=float), flush=True)
        floor = metrics.floor(original)
        print(f"{name}: floor e_s2 {floor['e_s2']:.4f}, e_lp {floor['e_lp']:.4f}")

    import pandas as pd

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if not args.no_baseline:
        for name in args.samples:
            mean = (
                table[table.micrograph == name]
                .groupby("run")[["seconds", "cpu_seconds", "e_s2"]]
                .mean()
            )
            ratio = mean.loc["baseline", "seconds"] / mean.loc["default", "seconds"]
            cpu_ratio = mean.loc["baseline", "cpu_seconds"] / mean.loc["default", "cpu_seconds"]
            print(
                f"{name}: default {mean.loc['default', 'seconds']:.1f} s ({mean.loc['default', 'cpu_seconds']:.1f} s CPU), "
                f"e_s2 {mean.loc['default', 'e_s2']:.4f}; baseline {mean.loc['baseline', 'seconds']:.1f} s "
                f"({mean.loc['baseline', 'cpu_seconds']:.1f} s CPU), e_s2 {mean.loc['baseline', 'e_s2']:.4f}; "
                f"default is {ratio:.1f}x faster (CPU time: {cpu_ratio:.1f}x)"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
