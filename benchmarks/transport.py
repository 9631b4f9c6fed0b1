"""Reconstructions with and without the transport term and the polish after the rounding, in
the same run: D_eff, spanning, largest clusters, e_S2 and time.

For every case and seed the default reconstruction runs in each mode: ``plain`` (neither),
``polish`` (the default: ``keep_transport``, :mod:`~napari_microstructure.core.polish`),
``term`` (:class:`~napari_microstructure.core.transport.TransportLoss` in the loss) and
``term+polish``. D_eff is TauFactor's, on the hard
images, for every phase that spans the micrograph along each axis; "ok" means every such D_eff
within 10 % of the micrograph's, the same spanning status of every phase, every phase's
largest-cluster fraction within 0.05 and e_S2 below the floor.

    python benchmarks/transport.py                  # shipped and generated micrographs, 5 seeds
    python benchmarks/transport.py --quick          # one seed, generated ones at 128x128
    python benchmarks/transport.py --cases alloy_256 --seeds 1 2 --modes plain polish --threads 2
    python benchmarks/transport.py --cases alloy_256 --seeds 0 --weight 3 --temperature 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from napari_microstructure import load_sample
from napari_microstructure.core import metrics, synthetic
from napari_microstructure.core.decoder import reconstruct
from napari_microstructure.core.physics import transport
from napari_microstructure.core.transport import DEFAULT_WEIGHT, TEMPERATURE, TransportLoss

#: mode -> (the term in the loss, the polish after the rounding: ``keep_transport``)
MODES = {
    "plain": (False, False),
    "polish": (False, True),
    "term": (True, False),
    "term+polish": (True, True),
}


def generated(side: int) -> dict:
    """Structures that are hard for connectivity, ``side`` pixels square."""
    shape = (side, side)
    return {
        "cell_boundaries": synthetic.generate(
            "cell_boundaries", shape, seed=1, volume_fraction=0.15, cell_size=20.0
        ),
        "gaussian_20": synthetic.generate("gaussian_field", shape, seed=2, volume_fraction=0.2),
        "gaussian_30": synthetic.generate("gaussian_field", shape, seed=3, volume_fraction=0.3),
        "three_phase": synthetic.three_phase(shape, matrix_fraction=0.4, seed=4),
    }


def score(original: np.ndarray, image: np.ndarray, floor: float) -> dict:
    """D_eff (relative to the micrograph's), spanning, largest clusters and e_S2 of ``image``."""
    row = {"e_s2": metrics.e_s2(original, image), "floor": floor}
    same_spans, largest_gap, worst = True, 0.0, 0.0
    for phase in metrics.phases_of(original):
        mine, theirs = metrics.connectivity(image, phase), metrics.connectivity(original, phase)
        same_spans &= mine.spans == theirs.spans
        largest_gap = max(
            largest_gap, abs(mine.largest_cluster_fraction - theirs.largest_cluster_fraction)
        )
        for axis, spans in enumerate(theirs.spans):
            if spans:
                reference = transport(original, phase, axis, conv_crit=1e-3).d_eff
                ours = transport(image, phase, axis, conv_crit=1e-3).d_eff
                row[f"D{phase}/{axis}"] = ours / reference - 1
                worst = max(worst, abs(ours / reference - 1))
    row.update(spans=same_spans, largest=largest_gap, worst_deff=worst)
    row["ok"] = bool(worst <= 0.10 and same_spans and largest_gap <= 0.05 and row["e_s2"] < floor)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", help="micrographs or generated structures")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="seed 0, generated at 128x128")
    parser.add_argument("--weight", type=float, default=DEFAULT_WEIGHT)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help="0: none")
    parser.add_argument("--max-factor", type=int, default=1)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=["plain", "polish", "term+polish"],
        help="plain: neither the term nor the polish after the rounding; polish: the default",
    )
    parser.add_argument("--no-baseline", action="store_true", help="--modes term")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else args.seeds
    structures = generated(128 if args.quick else 256)
    cases = args.cases or ["alloy_256", "carbonate_256", *structures]
    rows = []
    print(
        f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}, "
        f"weight {args.weight}, temperature {args.temperature}, max_factor {args.max_factor}"
    )
    for case in cases:
        original = structures[case] if case in structures else load_sample(case)
        floor = metrics.floor(original)["e_s2"]
        for seed in seeds:
            for mode in ["term"] if args.no_baseline else args.modes:
                with_term, polish = MODES[mode]
                term = TransportLoss(
                    weight=args.weight,
                    temperature=args.temperature or None,
                    max_factor=args.max_factor,
                )
                started = time.perf_counter()
                result = reconstruct(
                    original,
                    seed=seed,
                    device="cpu",
                    transport=False,  # the term below, with this run's settings, or none
                    terms=[term] if with_term else [],
                    keep_transport=polish,
                )
                seconds = time.perf_counter() - started
                row = {"case": case, "seed": seed, "mode": mode, "seconds": seconds}
                row.update(score(original, result.images[0], floor))
                if with_term:
                    stats = term.provenance()
                    row["solves"], row["term_seconds"] = stats["solves"], stats["seconds"]
                    targets = term.targets[None]
                    for (phase, axis), values in term.last_soft_d_eff().items():
                        row[f"soft{phase}/{axis}"] = values[0] / targets[(phase, axis)] - 1
                for record in result.provenance["transport_polish"]:
                    row["polish_seconds"] = record["seconds"]
                    row["changed"] = record["changed_fraction"]
                rows.append(row)
                deff = " ".join(
                    f"{k} {v:+.3f}" for k, v in row.items() if k.startswith(("D", "soft"))
                )
                polished = (
                    f" (polish {row['polish_seconds']:.1f} s, {row['changed']:.2%} changed)"
                    if "changed" in row
                    else ""
                )
                print(
                    f"{case:16s} seed {seed} {mode:11s} {seconds:6.1f} s{polished}  "
                    f"e_S2 {row['e_s2']:.4f} (floor {floor:.3f})  {deff}  "
                    f"spans {'same' if row['spans'] else 'DIFFERENT'}  "
                    f"largest {row['largest']:.3f}  {'ok' if row['ok'] else '--'}",
                    flush=True,
                )
    print("\nsummary (per case: runs ok, median |D_eff error|, median seconds)")
    for case in cases:
        for mode in MODES:
            mine = [r for r in rows if r["case"] == case and r["mode"] == mode]
            if mine:
                print(
                    f"{case:16s} {mode:11s} "
                    f"{sum(r['ok'] for r in mine)}/{len(mine)} ok  "
                    f"|D_eff err| {np.median([r['worst_deff'] for r in mine]):.3f}  "
                    f"{np.median([r['seconds'] for r in mine]):.1f} s"
                )
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
