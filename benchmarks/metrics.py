"""Seconds per call of each fidelity metric on a 256x256 micrograph (the shipped alloy).

    python benchmarks/metrics.py [--repeat 5]

Each metric runs once to warm up, then ``--repeat`` times; the best time is printed, with the
time of a whole ``compare`` table (the original and one image) and of ``floor``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_microstructure._sample_data import load_sample
from napari_microstructure.core import metrics


def best_seconds(function, *args, repeat: int) -> float:
    function(*args)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    image = load_sample("alloy_256")
    other = np.roll(image.T, 31, axis=0)
    cases = [
        ("two_point", metrics.two_point, (image, 1)),
        ("lineal_path", metrics.lineal_path, (image, 1, 0)),
        ("chord_lengths", metrics.chord_lengths, (image, 0, 1)),
        ("specific_surface", metrics.specific_surface, (image, 1)),
        ("connectivity", metrics.connectivity, (image, 0)),
        ("e_s2", metrics.e_s2, (image, other)),
        ("e_lp", metrics.e_lp, (image, other)),
        ("floor", metrics.floor, (image,)),
        ("compare (original + 1)", metrics.compare, (image, [other])),
        ("e_hist (grey)", metrics.e_hist, (image.astype(float), other.astype(float))),
        ("e_ac (grey)", metrics.e_ac, (image.astype(float), other.astype(float))),
    ]
    print(f"{'metric':<24} {'best of ' + str(args.repeat):>12}")
    for name, function, arguments in cases:
        print(
            f"{name:<24} {best_seconds(function, *arguments, repeat=args.repeat) * 1000:9.1f} ms"
        )


if __name__ == "__main__":
    main()
