"""3D transport of volumes reconstructed from 2D slices of real volumes, with and without the
transport term, against same-size crops of the real volume.

For each real volume the micrographs are the three middle planes of its central crop (one per
axis, so an anisotropic volume keeps its anisotropy), and the reconstruction runs twice in the
same process: without and with ``transport=True`` (the term holds the sampled slices of each axis
to the 2D D_eff of that axis's micrograph). With ``--target-from-crops`` the second run has
instead 3D design targets: the crops' mean 3D D_eff of one phase (``TARGET_PHASE``) along each
axis, which the whole-volume term holds the soft volume to (as a user would give values measured
on a volume of the material). Each volume is scored against ``--crops`` crops of the real volume
of the reconstruction's size (seeded positions):

- 3D D_eff per phase and axis (TauFactor on the hard volume), for every phase that spans most
  crops along that axis; the crops' mean and standard deviation, the reconstruction's relative
  difference to the mean;
- 2D D_eff of the slices along each axis (TauFactor on every ``--slice-step``-th slice that
  contains the axis, mean), against the micrographs' own 2D D_eff along that axis;
- per-axis e_S2 against the micrographs (``core.volume.compare_volume``), also for the crops;
- spanning and the largest cluster's fraction of each phase (3D, face-connected);
- with targets, the soft volume's last 3D D_eff (the term's own solver) beside the hard
  volume's (TauFactor): what the final rounding changes.

Volumes: ``electrode`` (``../shared/data/taufactor/electrode.tiff``, 256^3, labels 0/85/170) and
``benchmark`` (TauFactor's ``TF-500x500x500-1x2x6-v3.tiff.zip``, read from the zip in memory).
Times are wall seconds of the reconstruction alone; the 1-minute load average is printed before
and after each run (the machine is shared: times are inflated by roughly the load over the cores).

    python benchmarks/transport_3d.py                          # both volumes, 64^3, seed 0
    python benchmarks/transport_3d.py --volumes electrode --weight 3 --no-baseline
    python benchmarks/transport_3d.py --volumes benchmark --slices 16 --iterations 900
    python benchmarks/transport_3d.py --target-from-crops --no-baseline
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from napari_microstructure.core import metrics
from napari_microstructure.core.physics import transport
from napari_microstructure.core.transport import DEFAULT_WEIGHT
from napari_microstructure.core.volume import compare_volume, mid_planes, reconstruct_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "taufactor"
VOLUMES = {
    "electrode": SHARED / "electrode.tiff",
    "benchmark": SHARED / "TF-500x500x500-1x2x6-v3.tiff.zip",
}
#: TauFactor's convergence criterion for every D_eff here (its default is 1e-2).
CONV_CRIT = 1e-3
#: The phase whose crops' mean 3D D_eff becomes the targets with --target-from-crops.
TARGET_PHASE = {"electrode": 0, "benchmark": 255}


def load_volume(name: str) -> np.ndarray:
    """The real volume ``name`` (a tiff, or the tiff inside a zip, read in memory)."""
    import tifffile

    path = VOLUMES[name]
    if path.suffix != ".zip":
        return tifffile.imread(path)
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".tiff") and "__MACOSX" not in n)
        return tifffile.imread(io.BytesIO(archive.read(member)))


def centre_crop(volume: np.ndarray, side: int) -> np.ndarray:
    """The central ``side``^3 crop of ``volume``."""
    starts = [(n - side) // 2 for n in volume.shape]
    return volume[tuple(slice(s, s + side) for s in starts)]


def random_crops(volume: np.ndarray, side: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` crops of side ``side`` at seeded uniform positions."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        starts = [int(rng.integers(0, n - side + 1)) for n in volume.shape]
        crops.append(volume[tuple(slice(s, s + side) for s in starts)])
    return crops


def slice_d_eff(volume: np.ndarray, phase, axis: int, step: int) -> float:
    """Mean 2D D_eff of ``phase`` along ``axis`` over every ``step``-th slice containing it
    (the slices normal to the two other axes; 0 for a slice the phase does not span)."""
    values = []
    for normal in (a for a in range(3) if a != axis):
        in_plane = axis - (axis > normal)  # the axis's index within the slice
        for index in range(step // 2, volume.shape[normal], step):
            plane = np.take(volume, index, axis=normal)
            values.append(transport(plane, phase, in_plane, conv_crit=CONV_CRIT).d_eff)
    return float(np.mean(values))


def micrograph_d_eff(micrographs: dict, phase, axis: int) -> float:
    """Mean 2D D_eff of ``phase`` along 3D ``axis`` in the two micrographs that contain it."""
    values = []
    for normal, plane in micrographs.items():
        if normal != axis:
            in_plane = axis - (axis > normal)
            values.append(transport(plane, phase, in_plane, conv_crit=CONV_CRIT).d_eff)
    return float(np.mean(values))


def describe(volume: np.ndarray, micrographs: dict, phases, step: int) -> dict:
    """3D D_eff, slice D_eff, per-axis e_S2, spanning and largest cluster of ``volume``."""
    row = {}
    scores = compare_volume(micrographs, volume)
    for axis in range(3):
        row[f"e_s2/{axis}"] = scores[f"e_s2_axis{axis}"]
    for phase in metrics.phases_of(volume):
        clusters = metrics.connectivity(volume, phase)
        row[f"largest[{phase}]"] = clusters.largest_cluster_fraction
        row[f"spans[{phase}]"] = "".join("yn"[not s] for s in clusters.spans)
    for phase in phases:
        for axis in range(3):
            row[f"D[{phase}]/{axis}"] = transport(volume, phase, axis, conv_crit=CONV_CRIT).d_eff
            row[f"D2[{phase}]/{axis}"] = slice_d_eff(volume, phase, axis, step)
    return row


def reference(volume: np.ndarray, micrographs: dict, args) -> tuple[list, dict, dict]:
    """The conducting phases (spanning most crops along some axis), and the crops' mean and
    standard deviation of every column of :func:`describe`."""
    crops = random_crops(volume, args.size, args.crops, args.crop_seed)
    phases = [
        p
        for p in metrics.phases_of(volume)
        if max(sum(metrics.connectivity(c, p).spans[a] for c in crops) for a in range(3))
        > len(crops) / 2
    ]
    rows = [describe(c, micrographs, phases, args.slice_step) for c in crops]
    numeric = [k for k, v in rows[0].items() if not isinstance(v, str)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in numeric}
    spread = {k: float(np.std([r[k] for r in rows])) for k in numeric}
    for phase in phases:
        for axis in range(3):
            mean[f"D2m[{phase}]/{axis}"] = micrograph_d_eff(micrographs, phase, axis)
    for key in [k for k in rows[0] if k.startswith("spans")]:  # crops spanning, per axis
        mean[key] = " ".join(
            f"{sum(r[key][a] == 'y' for r in rows)}/{len(rows)}" for a in range(3)
        )
    return phases, mean, spread


def print_rows(name: str, phases, mean: dict, spread: dict, runs: list[dict]) -> None:
    """One table per volume: the crops, then each reconstruction."""
    print(f"\n{name}: crops' mean (std); reconstructions (relative difference to the crops)")
    for phase in phases:
        for axis in range(3):
            key, key2 = f"D[{phase}]/{axis}", f"D2[{phase}]/{axis}"
            line = (
                f"  phase {phase} axis {axis}: 3D D_eff crops {mean[key]:.4f} ({spread[key]:.4f})"
            )
            for run in runs:
                relative = run[key] / mean[key] - 1 if mean[key] else float("nan")
                line += f" | {run['label']} {run[key]:.4f} ({relative:+.0%})"
            line += (
                f"\n      2D slices: micrographs {mean[f'D2m[{phase}]/{axis}']:.4f}, crops "
                f"{mean[key2]:.4f}" + "".join(f", {run['label']} {run[key2]:.4f}" for run in runs)
            )
            print(line)
    for axis in range(3):
        key = f"e_s2/{axis}"
        print(
            f"  e_S2 axis {axis}: crops {mean[key]:.3f} ({spread[key]:.3f})"
            + "".join(f" | {run['label']} {run[key]:.3f}" for run in runs)
        )
    for key in [k for k in mean if k.startswith(("largest", "spans"))]:
        shown = mean[key] if isinstance(mean[key], str) else f"{mean[key]:.3f}"
        print(
            f"  {key}: crops {shown}"
            + "".join(
                f" | {run['label']} "
                + (run.get(key, "-") if key.startswith("spans") else f"{run.get(key, 0):.3f}")
                for run in runs
            )
        )
    for run in runs:
        for key, soft in run.get("soft", {}).items():
            print(
                f"  {run['label']} {key}: soft {soft:.4f}, hard {run[key]:.4f} "
                f"(rounding {run[key] / soft - 1:+.1%})"
            )
        print(
            f"  {run['label']}: {run['seconds']:.0f} s, load {run['load_before']:.2f} -> "
            f"{run['load_after']:.2f}, term {run.get('term_seconds', 0):.0f} s, "
            f"{run.get('solves', 0)} solves ({run.get('not_converged', 0)} not converged)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", nargs="+", default=list(VOLUMES), choices=list(VOLUMES))
    parser.add_argument("--size", type=int, default=64, help="the reconstruction's side")
    parser.add_argument("--crop", type=int, default=128, help="side of the micrographs' crop")
    parser.add_argument("--crops", type=int, default=8, help="reference crops of the volume")
    parser.add_argument("--crop-seed", type=int, default=0)
    parser.add_argument("--slice-step", type=int, default=16, help="every n-th slice's 2D D_eff")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="transport weight")
    parser.add_argument("--slices", type=int, help="slices per axis per step (core default)")
    parser.add_argument("--iterations", type=int, help="optimizer steps (core default)")
    parser.add_argument(
        "--periodic",
        action=argparse.BooleanOptionalAction,
        help="periodic reconstruction (default: the core's)",
    )
    parser.add_argument(
        "--two-point-weight",
        dest="two_point_weight",
        type=float,
        help="weight of the two-point term (default: the core's)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="only with the term")
    parser.add_argument("--no-term", action="store_true", help="only without the term")
    parser.add_argument(
        "--target-from-crops",
        action="store_true",
        help="the run with the term gets 3D targets: the crops' mean D_eff of TARGET_PHASE",
    )
    parser.add_argument(
        "--all-phases",
        action="store_true",
        help="with --target-from-crops: targets for every phase the crops span, not one",
    )
    parser.add_argument(
        "--no-polish",
        action="store_true",
        help="keep_transport=False: no pixel swaps toward the 3D targets after the rounding",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--save", help="folder for the reconstructed volumes (.npy)")
    parser.add_argument("--json", help="append the rows to this file (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {
        "device": "cpu",
        "transport_weight": args.weight,
        "keep_transport": not args.no_polish,
    }
    if args.slices is not None:
        options["slices_per_axis"] = args.slices
    if args.iterations is not None:
        options["iterations"] = args.iterations
    if args.periodic is not None:
        options["periodic"] = args.periodic
    if args.two_point_weight is not None:
        options["two_point_weight"] = args.two_point_weight
    print(f"threads {torch.get_num_threads()}, options {options}", flush=True)
    for name in args.volumes:
        volume = load_volume(name)
        micrographs = mid_planes(centre_crop(volume, args.crop))
        phases, mean, spread = reference(volume, micrographs, args)
        del volume
        runs = []
        target_phases = phases if args.all_phases else [TARGET_PHASE[name]]
        if args.target_from_crops:  # the crops' mean 3D D_eff of the phases along each axis
            targets = tuple(
                (int(phase), axis, mean[f"D[{phase}]/{axis}"])
                for phase in target_phases
                for axis in range(3)
                if mean.get(f"D[{phase}]/{axis}", 0) > 0
            )
            term_options = {"target_deff": targets}
        else:
            targets, term_options = None, {"transport": True}
        for seed in args.seeds:
            variants = ((False, args.no_baseline), (True, args.no_term))
            for with_term in [with_term for with_term, skip in variants if not skip]:
                load_before = os.getloadavg()[0]
                started = time.perf_counter()
                result = reconstruct_volume(
                    micrographs,
                    args.size,
                    seed=seed,
                    **(term_options if with_term else {}),
                    **options,
                )
                seconds = time.perf_counter() - started
                label = "targets" if with_term and args.target_from_crops else "with"
                run = {
                    "volume": name,
                    "label": f"{label if with_term else 'without'} s{seed}",
                    "seed": seed,
                    "transport": with_term,
                    "targets": targets if with_term else None,
                    "seconds": seconds,
                    "load_before": load_before,
                    "load_after": os.getloadavg()[0],
                    **options,
                }
                for term in result.provenance["loss_terms"]:
                    if term["name"] == "transport":
                        run["term_seconds"] = term["seconds"]
                        run["solves"], run["not_converged"] = term["solves"], term["not_converged"]
                        if args.target_from_crops:
                            run["soft"] = {
                                f"D[{phase}]/{axis}": term["last_soft_d_eff"][
                                    f"phase {phase} axis {axis}"
                                ][0]
                                for phase, axis, _ in targets
                            }
                for record in result.provenance["transport_polish"]:
                    run["polish"] = {
                        key: record.get(key)
                        for key in ("before", "after", "rounds", "changed_fraction", "seconds")
                    }
                run.update(describe(result.volume, micrographs, phases, args.slice_step))
                runs.append(run)
                print(json.dumps(run), flush=True)
                if args.save:
                    label = run["label"].replace(" ", "_")
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    np.save(Path(args.save) / f"{name}_{args.size}_{label}.npy", result.volume)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps(run) + "\n")
        print_rows(name, phases, mean, spread, runs)


if __name__ == "__main__":
    main()
