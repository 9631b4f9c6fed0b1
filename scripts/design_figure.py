"""Make the README's design figure: carbonate_256, its reconstruction with the transport term (its own D_eff) and two designs
with the matrix's D_eff scaled along both axes, each titled with its D_eff per axis.

Runs the designs of ``benchmarks/transport_design.py`` (seed 0, on the CPU) and prints their
table; run it from the repository root:

    python scripts/design_figure.py
    python scripts/design_figure.py --factors 0.5 1.25 --weight 10 --out /tmp/design.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from transport_design import d_eff, run  # noqa: E402

from napari_microstructure import load_sample  # noqa: E402
from napari_microstructure.core.decoder import NetworkOptions  # noqa: E402

#: Phase colours of the README's pictures (scripts/screenshot.py): phase 0 dark, phase 1 sand.
COLOURS = ListedColormap(["#27304a", "#e8c872"])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default="carbonate_256", help="shipped micrograph")
    parser.add_argument(
        "--factors", nargs=2, type=float, default=[0.5, 1.5], help="the two designs' factors"
    )
    parser.add_argument(
        "--weight", type=float, default=NetworkOptions.transport_weight, help="term's weight"
    )
    parser.add_argument("--iterations", type=int, help="steps (default: the reconstruction's)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "design.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    micrograph = load_sample(args.sample)
    options = {"transport_weight": args.weight}
    if args.iterations:
        options["iterations"] = args.iterations
    rows = run(micrograph, [1.0, *args.factors], [0], **options)
    phase = rows[0]["phase"]
    own = d_eff(micrograph, phase)
    panels = [(args.sample, micrograph, own)]
    for row in rows:
        name = (
            "reconstruction, own D_eff kept"
            if row["factor"] == 1
            else f"design: {row['factor']:g}x D_eff"
        )
        panels.append((name, row["image"], row["d_eff"]))
    figure, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.8), layout="constrained"
    )
    for axis, (name, image, values) in zip(axes, panels):
        axis.imshow(image, cmap=COLOURS, vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(f"{name}\nD_eff {values[0]:.3f} (y) / {values[1]:.3f} (x)", fontsize=10)
        axis.set_axis_off()
    figure.suptitle(f"D_eff of the matrix (phase {phase}, TauFactor)", fontsize=11)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
