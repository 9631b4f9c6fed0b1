"""The run flow every dock widget shares: Run captures the form and starts the job, Stop ends
it after its current step, and a refusal or a failure is said once."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QPushButton, QWidget

from ..core.errors import MicrostructureError
from ..core.steps import STOP
from ._worker import JobRunner

__all__ = ["JobWidget"]


class JobWidget(QWidget):
    """A dock widget that runs one main job at a time through its :class:`JobRunner`.

    A subclass builds its form with a ``status`` label and a button that :meth:`_bind` gives
    to the runner, and provides ``job`` (the job function, a ``staticmethod``), ``_capture``
    (the job's request: copies of the input and every parameter, or MicrostructureError) and
    the handlers ``_on_yielded``, ``_on_returned`` and ``_on_finished``.
    Run refuses with one notification and "Not started: ..." in the status line when the
    input or the parameters are refused (:class:`MicrostructureError`).
    """

    #: The warning when Run is pressed while the job runs.
    busy_message = "A job is running already: stop it first."

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer

    def _bind(self, button: QPushButton) -> None:
        """Make ``button`` the Run/Stop button of the widget's :class:`JobRunner`."""
        self.runner = JobRunner(self, button)
        self.runner.bind(self.run, self.stop)

    @property
    def worker(self):
        """The worker of the running job, or None."""
        return self.runner.worker

    def run(self):
        """Start the job with the current input and parameters; return its worker (None if
        they were refused, with a notification)."""
        return self.start_job(self.job, self._capture, self._on_returned)

    def start_job(self, job, capture, returned):
        """Start ``job(capture())`` as the main job (the Run button stops it) and hand its
        result to ``returned``; return the worker, or None when ``capture`` refused the input
        (:class:`MicrostructureError`, said in a notification and the status line)."""
        if self._busy():
            show_warning(self.busy_message)
            return None
        try:
            request = capture()
        except MicrostructureError as error:
            show_error(str(error))
            self.status.setText(f"Not started: {error}")
            return None
        self._started(request)
        return self.runner.start(
            job,
            request,
            yielded=self._on_yielded,
            returned=returned,
            failed=self._on_failed,
            finished=self._on_finished,
        )

    def stop(self) -> None:
        """Stop the running job after its current step (see :meth:`_stopping`)."""
        if self.runner.running:
            command, text = self._stopping()
            self.runner.stop(command)
            self.status.setText(text)

    def _busy(self) -> bool:
        return self.runner.running

    def _started(self, request) -> None:
        """Set the widget up for the job of ``request``, which starts next."""

    def _stopping(self) -> tuple[str, str]:
        """The command sent into the job on Stop, and the status line until it has ended."""
        return STOP, "Stopping after the current step…"

    def _on_failed(self, message: str) -> None:
        # the job runner has shown the error
        self.status.setText(f"Failed: {message}")

    def _dock(self, widget: QWidget, name: str, area: str) -> None:
        """Dock ``widget`` as ``name`` in ``area``, or show its dock again."""
        if name in self.viewer.window.dock_widgets:
            dock = widget.parent()
            if dock is not None:
                dock.show()
                dock.raise_()
            return
        self.viewer.window.add_dock_widget(widget, name=name, area=area)
