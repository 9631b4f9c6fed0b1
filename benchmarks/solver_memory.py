"""Peak memory of one whole-volume D_eff solve with its gradient (core/diffusion.py).

Each side runs in a fresh process: a random binary conductivity field of side^3 voxels (1 and
1e-4, half each) is solved along axis 0 to the transport term's tolerance and back-propagated;
the rise of the process's peak resident memory over the voxels is the figure behind
``core.volume.SOLVE_BYTES_PER_VOXEL``.

    python benchmarks/solver_memory.py --sides 64 96 128
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys


def measure(side: int) -> None:
    """Solve one side^3 field and print the peak memory's rise per voxel."""
    import torch

    from napari_microstructure.core.diffusion import DiffusionSolver
    from napari_microstructure.core.transport import MAX_ITERATIONS, TOLERANCE

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    field = (torch.rand((side,) * 3, generator=generator) > 0.5).float() * (1 - 1e-4) + 1e-4
    field.requires_grad_(True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    solver = DiffusionSolver(0, tolerance=TOLERANCE, max_iterations=MAX_ITERATIONS)
    solver(field).backward()
    rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(
        f"{side}^3: peak rise {rise / 2**20:.0f} MiB, {rise / side**3:.0f} bytes per voxel, "
        f"{solver.last.iterations} iterations"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        measure(args.one)
        return 0
    for side in args.sides:
        subprocess.run([sys.executable, __file__, "--one", str(side)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
