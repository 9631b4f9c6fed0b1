"""How responsive napari stays while the reconstruction widget runs (target: no gap over 100 ms).

A 5 ms timer on the Qt main thread records when it fires; a gap between two ticks is time in
which the event loop could not react (to a click, a repaint, a slider). The benchmark opens a
shown napari viewer with a micrograph (256x256 by default), runs the reconstruction widget on
the CPU with its default parameters, and reports the longest gap and its percentiles in three
phases: ``setup`` (Run pressed until the first optimizer step: weights, network), ``optimizing``
and ``finishing`` (statistics, new layers, table, plots). With ``--profile`` it also times the
widget's main-thread slots, to tell a slow slot from a starved event loop.

Needs a display; on a headless Linux machine run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/responsiveness.py
    xvfb-run -a python benchmarks/responsiveness.py --iterations 60 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np

TICK_MS = 5


def _percentiles(gaps: np.ndarray) -> dict:
    if gaps.size == 0:
        return {"n": 0}
    return {
        "n": int(gaps.size),
        "max_ms": float(gaps.max()),
        "p99_ms": float(np.percentile(gaps, 99)),
        "p50_ms": float(np.percentile(gaps, 50)),
        "over_50ms": int((gaps > 50).sum()),
        "over_100ms": int((gaps > 100).sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sample", default="alloy_256", help="shipped sample (default: %(default)s)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="optimizer steps (default: the widget's)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads for the run (0: the widget's default)",
    )
    parser.add_argument(
        "--preview",
        type=float,
        default=None,
        help="seconds between previews (default: the widget's)",
    )
    parser.add_argument("--weights", default="normalized")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="load the weights before the measured run (as after a first run)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also time the widget's main-thread slots"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the whole process, in seconds (default: the widget's choice)",
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    import sys

    import napari
    from qtpy.QtCore import Qt, QTimer

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    from napari_microstructure import load_sample
    from napari_microstructure.widgets import ReconstructionWidget

    viewer = napari.Viewer(show=True)
    viewer.add_labels(load_sample(args.sample), name=args.sample)
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Microstructure reconstruction")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.weights_combo.setCurrentText(args.weights)
    if args.iterations:
        widget.iterations_spin.setValue(args.iterations)
    if args.threads:
        widget.threads_spin.setValue(args.threads)
    if args.preview is not None:
        widget.preview_spin.setValue(args.preview)
    if args.warm:
        from napari_microstructure.core.weights import load_weights

        load_weights(args.weights)

    slot_times: dict[str, list[float]] = {}
    slot_calls: list[tuple[float, float, str]] = []
    slot_cpu: dict[str, list[float]] = {}
    if args.profile:
        for name in ("_on_yielded", "_on_returned", "_on_finished", "_show_preview"):
            original = getattr(widget, name)

            @functools.wraps(original)
            def timed(*a, _original=original, _name=name, **k):
                started, cpu = time.perf_counter(), time.thread_time()
                try:
                    return _original(*a, **k)
                finally:
                    slot_times.setdefault(_name, []).append(1000 * (time.perf_counter() - started))
                    slot_cpu.setdefault(_name, []).append(1000 * (time.thread_time() - cpu))
                    slot_calls.append((started, time.perf_counter(), _name))

            setattr(widget, name, timed)
        for name in ("add_loss", "set_curves", "set_loss"):
            original = getattr(widget.plot, name)

            @functools.wraps(original)
            def timed_plot(*a, _original=original, _name=name, **k):
                started = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    slot_times.setdefault(f"plot.{_name}", []).append(
                        1000 * (time.perf_counter() - started)
                    )
                    slot_calls.append((started, time.perf_counter(), f"plot.{_name}"))

            setattr(widget.plot, name, timed_plot)

    ticks: list[float] = []
    tick_cpu: list[float] = []
    marks: dict[str, float] = {}
    app = napari.qt.get_qapp()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(TICK_MS)
    timer.timeout.connect(
        lambda: (ticks.append(time.perf_counter()), tick_cpu.append(time.thread_time()))
    )

    def on_yielded(message):
        if "first_step" not in marks and not isinstance(message, str):
            marks["first_step"] = time.perf_counter()
        if message == "analysing":
            marks["analysing"] = time.perf_counter()

    def start():
        marks["run"] = time.perf_counter()
        worker = widget.run()
        if worker is None:
            raise SystemExit(f"the run did not start: {widget.status.text()}")
        worker.yielded.connect(on_yielded)

    settings: dict = {}

    def finished():
        marks["finished"] = time.perf_counter()
        settings.update(
            iterations=widget.iterations_spin.value(),
            preview_s=widget.preview_spin.value(),
            provenance=widget.runs[-1]["provenance"] if widget.runs else {},
            status=widget.status.text(),
        )
        QTimer.singleShot(1000, app.quit)  # keep measuring while the new layers are drawn

    widget.run_finished.connect(finished)
    timer.start()
    QTimer.singleShot(1500, start)  # let the window settle first
    app.exec()
    timer.stop()

    t = np.asarray(ticks)
    gaps = np.diff(t) * 1000.0
    busy = np.diff(np.asarray(tick_cpu)) * 1000.0  # main-thread CPU time between two ticks
    mid = t[1:]
    end = marks["finished"] + 1.0
    first_step = marks.get("first_step", marks["finished"])
    analysing = marks.get("analysing", marks["finished"])
    phases = {
        "setup": (marks["run"], first_step),
        "optimizing": (first_step, analysing),
        "finishing": (analysing, end),
        "whole run": (marks["run"], end),
    }
    report = {
        "sample": args.sample,
        "iterations": settings["iterations"],
        "threads": args.threads or "default",
        "preview_s": settings["preview_s"],
        "weights_warm": args.warm,
        "status": settings["status"],
        "run_seconds": marks["finished"] - marks["run"],
        "tick_ms": TICK_MS,
        "phases": {
            name: _percentiles(gaps[(mid > a) & (mid <= b)]) for name, (a, b) in phases.items()
        },
        "main_thread_cpu": {
            name: _percentiles(busy[(mid > a) & (mid <= b)]) for name, (a, b) in phases.items()
        },
    }
    if args.profile:
        report["slots_ms"] = {
            name: {
                "n": len(v),
                "max": max(v),
                "total": sum(v),
                "cpu_total": sum(slot_cpu.get(name, [0.0])),
            }
            for name, v in slot_times.items()
        }
        longest = []
        for i in np.argsort(gaps)[::-1][:8]:
            a, b = t[i], t[i + 1]
            inside = sorted({n for s0, s1, n in slot_calls if s0 < b and s1 > a})
            phase = next(
                (p for p, (x, y) in phases.items() if p != "whole run" and x < b <= y), "outside"
            )
            longest.append(
                {
                    "gap_ms": float(gaps[i]),
                    "at_s": float(a - marks["run"]),
                    "phase": phase,
                    "slots": inside,
                }
            )
        report["longest_gaps"] = longest
    result = settings["provenance"]
    report["torch_threads_in_run"] = result.get("threads")
    report["steps"] = result.get("steps")

    print(
        f"{args.sample}, {report['iterations']} iterations on the CPU, torch threads {report['torch_threads_in_run']}, run {report['run_seconds']:.1f} s"
    )
    for name, stats in report["phases"].items():
        if stats.get("n"):
            print(
                f"  {name:11s} longest gap {stats['max_ms']:7.1f} ms   p99 {stats['p99_ms']:6.1f} ms   "
                f"gaps > 50 ms: {stats['over_50ms']:3d}   > 100 ms: {stats['over_100ms']:3d}"
            )
    stats = report["main_thread_cpu"]["whole run"]
    if stats.get("n"):
        print(
            f"  main-thread CPU time between two ticks (the widget's and napari's own work, without waiting "
            f"for a core): longest {stats['max_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms"
        )
    for name, stats in report.get("slots_ms", {}).items():
        print(
            f"  slot {name:18s} n {stats['n']:5d}  max {stats['max']:7.1f} ms  total {stats['total']:8.1f} ms  (main-thread CPU {stats['cpu_total']:8.1f} ms)"
        )
    for gap in report.get("longest_gaps", []):
        print(
            f"  gap {gap['gap_ms']:6.1f} ms at {gap['at_s']:6.2f} s ({gap['phase']}): {', '.join(gap['slots']) or 'no widget slot'}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
