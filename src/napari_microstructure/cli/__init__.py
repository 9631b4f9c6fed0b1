"""The command line: ``napari-microstructure reconstruct|prune|properties|batch|info ...``.

Each command is a module with ``add_parser(commands)``; its parser sets ``run``, the function
that does the work and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..core.errors import MicrostructureError
from . import batch, info, properties, prune, reconstruct

COMMANDS = (reconstruct, prune, properties, batch, info)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog="napari-microstructure",
        description="Reconstruct statistically equivalent microstructures from a micrograph with a pretrained VGG19 (Li et al. 2018).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-microstructure`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (MicrostructureError, FileExistsError) as error:
        print(f"napari-microstructure: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written, a full disk
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"napari-microstructure: error: {error.strerror or error}{where}; nothing was "
            "written.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("\nnapari-microstructure: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
