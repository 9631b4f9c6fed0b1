"""Property targets (designs): carbonate_256's matrix given a D_eff scaled along both axes.

For each factor the default 2D reconstruction runs with the design targets
``(phase, 0, "<f>x")`` and ``(phase, 1, "<f>x")`` (factor 1: the default reconstruction, no
targets); the phase is the one that spans the micrograph
(``core.transport.micrograph_diffusivities``). The table gives the target, the D_eff reached per
axis by TauFactor on the hard image (``core.physics.transport``), its relative error, the soft
map's D_eff at the transport term's last evaluation, e_S2 (``core.metrics.compare``) beside the
floor (``core.metrics.floor``) and the seconds.

    python benchmarks/transport_design.py                        # factors 1, 0.5, 1.5; seed 0
    python benchmarks/transport_design.py --factors 0.5 --weight 10 --iterations 600
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from napari_microstructure import load_sample
from napari_microstructure.core import metrics
from napari_microstructure.core import transport as transport_module
from napari_microstructure.core.decoder import NetworkOptions, reconstruct
from napari_microstructure.core.physics import transport
from napari_microstructure.core.transport import micrograph_diffusivities


def spanning_phase(micrograph: np.ndarray):
    """The phase that spans the micrograph along both axes (the matrix)."""
    own = micrograph_diffusivities(micrograph)
    return next(p for p in metrics.phases_of(micrograph) if {(p, 0), (p, 1)} <= set(own))


def d_eff(image: np.ndarray, phase) -> tuple:
    """TauFactor's D_eff of ``phase`` along axes 0 and 1 (0 where it does not span)."""
    return tuple(transport(image, phase, axis, conv_crit=1e-3).d_eff for axis in (0, 1))


def design(micrograph, phase, factor: float, seed: int, **options):
    """The reconstruction with the matrix's D_eff scaled by ``factor`` (1: its own, kept), the
    soft map's D_eff per axis at the transport term's last evaluation (NaN without it), the
    seconds and the repair's record after the rounding (None without it)."""
    targets = () if factor == 1 else tuple((phase, axis, f"{factor:g}x") for axis in (0, 1))
    started = time.perf_counter()
    # factor 1: the term holds the micrograph's own D_eff (what the README's figure shows)
    result = reconstruct(
        micrograph, seed=seed, device="cpu", transport=True, target_deff=targets, **options
    )
    seconds = time.perf_counter() - started
    soft = {}
    for term in result.provenance["loss_terms"]:
        soft.update(term.get("last_soft_d_eff", {}))
    soft = tuple(soft.get(f"phase {phase} axis {axis}", [np.nan])[0] for axis in (0, 1))
    repair = (result.provenance.get("transport_polish") or [None])[0]
    return result.images[0], soft, seconds, repair


def run(micrograph, factors, seeds, **options):
    """Run the designs, printing the table; the rows, each with its ``image``."""
    phase = int(spanning_phase(micrograph))
    own = d_eff(micrograph, phase)
    floor = metrics.floor(micrograph)["e_s2"]
    print(
        f"phase {phase} spans, fraction {np.mean(micrograph == phase):.4f}, D_eff (TauFactor) "
        f"{own[0]:.4f} / {own[1]:.4f}; e_S2 floor {floor:.4f}; options {options}, "
        f"load average {os.getloadavg()[0]:.2f}\n"
        "| target (axis 0 / 1) | seed | D_eff axis 0 | D_eff axis 1 | error 0 | error 1 "
        "| soft map 0 / 1 | e_S2 | floor | repair: pixels changed, s | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for factor in factors:
        for seed in seeds:
            image, soft, seconds, repair = design(micrograph, phase, factor, seed, **options)
            reached = d_eff(image, phase)
            target = tuple(factor * value for value in own)
            errors = [r / t - 1 for r, t in zip(reached, target)]
            e_s2 = float(metrics.compare(micrograph, [image])["e_s2"].iloc[1])
            rows.append(
                {"factor": factor, "seed": seed, "phase": phase, "target": target,
                 "d_eff": reached, "error": errors, "soft": soft, "e_s2": e_s2, "floor": floor,
                 "seconds": seconds, "repair": repair, "image": image}
            )  # fmt: skip
            label = (
                "1x (its own)"
                if factor == 1
                else f"{factor:g}x: {target[0]:.3f} / {target[1]:.3f}"
            )
            repaired = (
                "-"
                if repair is None
                else f"{repair['changed_fraction']:.2%}, {repair['seconds']:.1f}"
            )
            print(
                f"| {label} | {seed} | {reached[0]:.4f} | {reached[1]:.4f} | {errors[0]:+.1%} | "
                f"{errors[1]:+.1%} | {soft[0]:.3f} / {soft[1]:.3f} | {e_s2:.4f} | {floor:.4f} | "
                f"{repaired} | {seconds:.0f} |",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micrograph", default="carbonate_256")
    parser.add_argument("--factors", nargs="+", type=float, default=[1.0, 0.5, 1.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--weight", type=float, default=NetworkOptions.transport_weight, help="term's weight"
    )
    parser.add_argument("--iterations", type=int, help="steps (default: the reconstruction's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--crop", type=int, help="design on the micrograph's top-left crop")
    parser.add_argument(
        "--design-min-side",
        type=int,
        help="smallest side of a level below the finest at which a design acts "
        f"(core.transport.DESIGN_MIN_SIDE, {transport_module.DESIGN_MIN_SIDE})",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.design_min_side is not None:
        transport_module.DESIGN_MIN_SIDE = args.design_min_side
    torch.set_num_threads(args.threads)
    options = {"transport_weight": args.weight}
    if args.iterations:
        options["iterations"] = args.iterations
    micrograph = load_sample(args.micrograph)
    if args.crop:
        micrograph = np.ascontiguousarray(micrograph[: args.crop, : args.crop])
    print(f"{args.micrograph}{f' ({args.crop}x{args.crop} crop)' if args.crop else ''}", end=": ")
    rows = run(micrograph, args.factors, args.seeds, **options)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{k: v for k, v in r.items() if k != "image"} for r in rows], handle)


if __name__ == "__main__":
    main()
