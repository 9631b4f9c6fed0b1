"""The full default pruning study (docs/method.md section 4) on the alloy and carbonate micrographs.

For each material: the network truncated after pool1 ... pool5 (conv1_1 and every pool up to the
depth), 2 samples per depth, the decoder's default iteration budget and levels, the same seeds;
prints the table, the recommendation and the run time, and the machine's load average at the
start and the end (timings on a shared machine are inflated by the other work on it).

    python benchmarks/pruning_study.py                          # alloy_256 and carbonate_256
    python benchmarks/pruning_study.py --out pruning_results    # also write profile, CSV, PNG
    python benchmarks/pruning_study.py --materials alloy_64 --iterations 30 --depths 1 2 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from napari_microstructure import report
from napari_microstructure.core import pruning

LI2018 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "li2018"


def load(name: str) -> np.ndarray:
    """A micrograph from ../shared/data/li2018, else the copy shipped with the package."""
    path = LI2018 / f"{name}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    from napari_microstructure import load_sample

    return load_sample(name)


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"
    except OSError:
        return "unknown"


def printer():
    state = {"last": 0.0}

    def show(message):
        now = time.perf_counter()
        if message.finished:
            row = message.result
            sys.stderr.write(
                f"\r  {message.configuration}: e_S2 {row['e_s2_mean']:.4f} +- {row['e_s2_std']:.4f}, "
                f"{row['seconds']:.0f} s, load {load_average()}{' ' * 10}\n"
            )
        elif now - state["last"] > 5:
            state["last"] = now
            step = message.step
            sys.stderr.write(
                f"\r  {message.configuration} step {step.iteration}/{step.total} level "
                f"{step.level + 1}/{step.n_levels} {message.elapsed:6.0f} s "
            )
        sys.stderr.flush()

    return show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", nargs="+", default=["alloy_256", "carbonate_256"])
    parser.add_argument("--depths", nargs="+", type=int, default=list(pruning.DEFAULT_DEPTHS))
    parser.add_argument("--samples", type=int, default=pruning.DEFAULT_SAMPLES)
    parser.add_argument("--iterations", type=int, help="default: the decoder's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write <material>_pruning.json/.csv/.png here")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"load average at start: {load_average()}")
    started = time.perf_counter()
    for name in args.materials:
        image = load(name)
        print(f"\n=== {name} {image.shape} ===", flush=True)
        t0 = time.perf_counter()
        profile = pruning.prune(
            image,
            printer(),
            depths=args.depths,
            samples=args.samples,
            iterations=args.iterations,
            seed=args.seed,
            device=args.device,
            material=name,
            names=[name],
        )
        seconds = time.perf_counter() - t0
        table = profile.table()
        columns = [
            "name",
            "e_s2_mean",
            "e_s2_std",
            "e_lp_mean",
            "e_lp_std",
            "e_vf_mean",
            "e_conn_mean",
            "largest_cluster[0]_mean",
            "largest_cluster[1]_mean",
            "clusters[0]_mean",
            "clusters[1]_mean",
            "seconds",
            "cpu_seconds",
            "steps",
            "evaluations_per_iteration",
            "gflop_per_iteration",
            "peak_memory_mb",
            "memory_estimate_mb",
            "n_layers",
            "recommended",
        ]
        print(
            table[[c for c in columns if c in table.columns]].to_string(
                index=False, float_format=lambda v: f"{v:.4g}"
            )
        )
        print(f"micrograph: {profile.reference}")
        print(f"floor e_S2: {profile.floor['e_s2_mean']:.4f}")
        print(f"recommendation: {profile.recommendation['reason']}")
        print(
            f"run time {seconds:.0f} s ({seconds / 60:.1f} min); budget {profile.provenance['budget']}; load average now {load_average()}"
        )
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            profile.save(out / f"{name}_pruning.json", overwrite=True)
            table.to_csv(out / f"{name}_pruning.csv", index=False)
            report.save_plots(profile, out / f"{name}_pruning.png")
    print(
        f"\ntotal run time {time.perf_counter() - started:.0f} s; load average at end: {load_average()}"
    )


if __name__ == "__main__":
    main()
