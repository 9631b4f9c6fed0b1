"""Make the README picture: napari with the reconstruction widget, original and reconstruction
side by side (grid mode), the results table and the plots.

Runs the widget as a user would (its default parameters, on the CPU unless told otherwise) on
a shipped micrograph and saves a screenshot of the whole window. Needs a display; on a
headless Linux machine run it under Xvfb:

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshot.py
    xvfb-run -a python scripts/screenshot.py --sample carbonate_256 --out /tmp/carbonate.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "images" / "reconstruction.png"
#: Phase colours of the picture: phase 0 dark blue-grey, phase 1 sand, then two more.
COLOURS = {0: "#27304a", 1: "#e8c872", 2: "#c0504d", 3: "#6fb3b8"}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sample", default="alloy_256", help="shipped sample (default: %(default)s)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="optimizer steps (default: the widget's)"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, auto, cuda ... (default: %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(1600, 1000),
        metavar=("W", "H"),
        help="window size in pixels",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="PNG to write (default: docs/images/reconstruction.png)",
    )
    args = parser.parse_args(argv)

    import napari
    from napari.utils.colormaps import DirectLabelColormap
    from qtpy.QtCore import QTimer

    from napari_microstructure import _sample_data
    from napari_microstructure.widgets import ReconstructionWidget

    viewer = napari.Viewer(title="napari-microstructure", show=True)
    viewer.window.set_geometry(0, 0, *args.size)
    data = _sample_data.load_sample(args.sample)
    layer = viewer.add_labels(
        data, name=args.sample, metadata=_sample_data.sample_metadata(args.sample)
    )
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Microstructure reconstruction", area="right")
    widget.device_combo.setCurrentIndex(max(0, widget.device_combo.findData(args.device)))
    if args.iterations:
        widget.iterations_spin.setValue(args.iterations)

    app = napari.qt.get_qapp()
    shot: dict = {}

    def finished() -> None:
        if not widget.runs:
            shot["error"] = widget.status.text()
            app.quit()
            return
        # phase 0 is a phase here, not background: give every phase a colour
        colours = {
            None: "transparent",
            **{v: COLOURS.get(v, "white") for v in np.unique(data).tolist()},
        }
        for target in [layer, *widget.runs[-1]["layers"]]:
            target.colormap = DirectLabelColormap(color_dict=colours, background_value=-1)
        viewer.canvas.grid.enabled = True
        viewer.canvas.grid.shape = (1, 2)
        viewer.canvas.grid.spacing = 0.05
        viewer.reset_view()
        viewer.status = "Ready"  # not the layer last under the (idle) pointer
        QTimer.singleShot(1500, take)  # let the canvas, the table and the plots repaint

    def take() -> None:
        shot["image"] = viewer.screenshot(canvas_only=False, flash=False)
        app.quit()

    widget.run_finished.connect(finished)
    QTimer.singleShot(1500, widget.run)
    app.exec()
    if "error" in shot:
        raise SystemExit(f"the reconstruction did not finish: {shot['error']}")

    from PIL import Image

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shot["image"]).save(args.out, optimize=True)
    print(f"wrote {args.out} ({shot['image'].shape[1]}x{shot['image'].shape[0]})")
    return args.out


if __name__ == "__main__":
    main()
