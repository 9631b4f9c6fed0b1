"""Seconds the transport checks add to a results table: alloy_256, carbonate_256, a 64^3 volume.

    OMP_NUM_THREADS=1 python benchmarks/transport_checks.py [--repeat 3] [--side 64]

2D: the table of the micrograph and one reconstruction (its mirror image: the same D_eff by
symmetry, so the relative differences show TauFactor's own reproducibility), with and without
the checks. 3D: the table of a ``--side``^3 central crop of the electrode (three phases) against
its three middle planes, or, without ``../shared``, of a generated two-phase volume against its
middle plane. Prints the best of ``--repeat`` tables, the TauFactor solves (spanning phase and
axis pairs) and the largest ``|D_eff rel diff|`` of the mirror image; CPU, one torch thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_microstructure import load_sample, report

ELECTRODE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "taufactor" / "electrode.tiff"
)


def volume_case(side: int):
    """(name, per-axis micrographs, the volume) for the 3D table."""
    from napari_microstructure.core.volume import mid_planes

    if ELECTRODE.exists():
        import tifffile

        volume = tifffile.imread(ELECTRODE)
        start = [(n - side) // 2 for n in volume.shape]
        crop = volume[tuple(slice(s, s + side) for s in start)]
        return f"electrode {side}^3", mid_planes(crop), crop
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(0).random((side,) * 3), 3.0)
    crop = (field > np.median(field)).astype(np.uint8)
    return f"Gaussian field {side}^3", crop[side // 2], crop


def best(function, repeat: int):
    """The shortest of ``repeat`` calls: (seconds, its result)."""
    calls = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        calls.append((time.perf_counter() - started, result))
    return min(calls, key=lambda call: call[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    common = dict(run=1, seconds=0.0, partial=False)
    cases = []
    for name in ("alloy_256", "carbonate_256"):
        image = load_sample(name)
        mirror = np.flip(image, axis=1)

        def table(transport, image=image, mirror=mirror):
            return report.run_table(
                image, [mirror], ["mirror"], final_loss=[0.0], transport=transport, **common
            )

        cases.append((name, table))
    name, micrographs, volume = volume_case(args.side)

    def volume_table(transport):
        return report.volume_run_table(
            micrographs, volume, "volume", final_loss=[0.0], transport=transport, **common
        )

    cases.append((name, volume_table))
    cases[0][1](True)  # imports and TauFactor's first solve, outside the timings
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        "| image | table without (s) | with checks (s) | checks (s) | solves | s/solve | max rel |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, table in cases:
        without, _ = best(lambda: table(False), args.repeat)
        with_checks, frame = best(lambda: table(True), args.repeat)
        d_eff = [c for c in frame.columns if c.startswith("D_eff[") and "rel" not in c]
        solves = int(np.isfinite(frame[d_eff].to_numpy(float)).sum())
        checks = frame["transport (s)"].sum()
        rel = [c for c in frame.columns if c.endswith("rel diff")]
        worst = np.nanmax(np.abs(frame[rel].to_numpy(float))) if rel else float("nan")
        print(
            f"| {name} | {without:.2f} | {with_checks:.2f} | {checks:.2f} | {solves} | "
            f"{checks / max(solves, 1):.2f} | {worst:.1e} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
