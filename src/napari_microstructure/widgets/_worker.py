"""The plumbing every dock widget shares: its jobs in worker threads.

A job is a generator function of the core's kind (progress messages out, commands such as
``"stop"`` in, a result returned) or a plain function. :class:`JobRunner` runs a widget's jobs
in napari thread workers and owns them:

- one Run button becomes Stop while the widget's main job runs, and a disabled "Stopping…"
  once Stop was pressed, until the worker has finished;
- one error policy: a user's error (a
  :class:`~napari_microstructure.core.errors.MicrostructureError`, or an optimization that
  diverged) becomes one notification with its message; any other exception goes once through
  napari's traceback path (``notification_manager.receive_error``);
- when the widget's dock is closed or the widget is destroyed (the viewer closes), every worker
  of the widget is told to quit and waited for: no thread outlives its widget.

:func:`worker_settings` are the settings of a worker thread during a job (torch threads, a lower
priority than the interface).
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import notification_manager, show_error
from qtpy.QtCore import QEvent, QObject, QThreadPool
from qtpy.QtWidgets import QPushButton, QWidget

from ..core.errors import MicrostructureError
from ..core.steps import STOP

__all__ = [
    "USER_ERRORS",
    "JobRunner",
    "auto_threads",
    "avoid_triton_llvm_crash",
    "set_thread_niceness",
    "worker_settings",
]

#: Errors a user can act on: one notification with the message, no traceback.
USER_ERRORS = (MicrostructureError, FloatingPointError)
#: Nice-value increment of a worker thread (Linux): the interface thread gets the CPU first.
WORKER_NICENESS = 10


# ------------------------------------------------------------------------------------------
# the worker thread's settings
# ------------------------------------------------------------------------------------------


def avoid_triton_llvm_crash() -> bool:
    """Keep torch from importing triton in a process where Mesa has loaded its own LLVM.

    torch's optimizers import ``torch._dynamo`` on first use, which imports triton if it is
    installed (the CUDA wheels of torch bring it); triton's bundled LLVM crashes the process
    (segmentation fault) when it is loaded after the libLLVM that Mesa's software OpenGL
    (llvmpipe: Xvfb, VMs, remote desktops) maps for napari's canvas. Where a libLLVM is mapped
    and triton is not imported yet, triton is marked as absent (``sys.modules["triton"] =
    None``): torch then works without it, as on a machine without triton. Returns whether it
    did so. Linux only (reads /proc/self/maps); elsewhere it does nothing.
    """
    if "triton" in sys.modules:
        return False
    try:
        with open("/proc/self/maps") as maps:
            mesa_llvm = any("libLLVM" in line for line in maps)
    except OSError:
        return False
    if mesa_llvm:
        sys.modules["triton"] = None
    return mesa_llvm


def set_thread_niceness(value: int | None = None, increment: int = WORKER_NICENESS) -> int | None:
    """Make the calling (worker) thread yield the CPU to napari's main thread: raise its nice
    value by ``increment``, or set it to ``value`` (Linux, where nice values are per thread;
    a pool thread keeps it, so a run puts the old value back). The worker's CPU share against
    other programs barely changes; the interface thread wins every contest with it. Returns
    the previous nice value, or None where this is not possible (other systems)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return None
    try:
        tid = threading.get_native_id()
        previous = os.getpriority(os.PRIO_PROCESS, tid)
        niceness = value if value is not None else min(19, previous + increment)
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError:  # lowering back needs a privilege an ordinary user may lack
        return None
    return previous


def auto_threads() -> int:
    """Torch threads for a run: one fewer than torch's default (the physical cores), at least 1,
    so that a core is left for napari's event loop and its (often software) rendering."""
    import torch

    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2)) - 1)


@contextmanager
def worker_settings(torch_threads: int = 0, lower_priority: bool = True):
    """Settings of a worker thread for the span of a job, put back at its end: triton kept away
    from Mesa's LLVM (:func:`avoid_triton_llvm_crash`), a lower priority than the interface
    (:func:`set_thread_niceness`), and ``torch_threads`` intra-op threads (0:
    :func:`auto_threads`)."""
    import torch

    avoid_triton_llvm_crash()
    niceness = set_thread_niceness() if lower_priority else None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or auto_threads())
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if niceness is not None:
            set_thread_niceness(niceness)


# ------------------------------------------------------------------------------------------
# the job runner
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """What a job that raised returns to the main thread."""

    error: Exception
    by_user: bool


def _guarded(job, args: tuple):
    """Run ``job(*args)`` (a generator function, relayed, or a plain function) and return its
    result, or a :class:`_Failure` for an exception (reported on the main thread)."""
    try:
        if inspect.isgeneratorfunction(job):
            return (yield from job(*args))
        return job(*args)
    except USER_ERRORS as error:
        return _Failure(error, by_user=True)
    except Exception as error:  # noqa: BLE001 - reported with its traceback by the runner
        return _Failure(error, by_user=False)


class _Worker(GeneratorWorker):
    """A napari generator worker that closes its generator in its own thread when its work
    ends (finished or told to quit), so that the job's ``finally`` clauses run there."""

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


class _Job:
    """One worker and the widget's handlers of its signals; inactive once its runner closed."""

    def __init__(self, runner: JobRunner, yielded, returned, failed, finished) -> None:
        self.runner = runner
        self.active = True
        self.worker: _Worker | None = None
        self._yielded, self._returned = yielded, returned
        self._failed, self._finished = failed, finished

    def on_yielded(self, message) -> None:
        if self.active and self._yielded is not None:
            self._yielded(message)

    def on_returned(self, result) -> None:
        if not self.active:
            return
        if isinstance(result, _Failure):
            error = result.error
            if result.by_user:
                show_error(str(error))
            else:
                notification_manager.receive_error(type(error), error, error.__traceback__)
            self._fail(error)
        elif self._returned is not None:
            self._returned(result)

    def on_errored(self, error: Exception) -> None:
        # an error outside the job: napari's worker has shown it with its traceback already
        if self.active:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self._failed is not None:
            by_user = isinstance(error, USER_ERRORS)
            self._failed(str(error) if by_user else f"{type(error).__name__}: {error}")

    def on_finished(self) -> None:
        if not self.active:
            return
        self.runner._forget(self)
        if self._finished is not None:
            self._finished()


def _close_runner(runner: JobRunner, *_signal_arguments) -> None:
    runner.close()


class _RemovalWatcher(QObject):
    """Calls ``on_removed`` when the widget it watches loses its parent: its dock was closed
    (napari takes the widget out of the dock it deletes)."""

    def __init__(self, widget: QWidget, on_removed) -> None:
        super().__init__(widget)
        self._on_removed = on_removed

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None:
            self._on_removed()
        return False


class JobRunner:
    """Runs a widget's jobs in napari thread workers, in a thread pool of the widget's own.

    ``button`` (optional) is the widget's Run button: :meth:`start` of a main job turns it into
    Stop, :meth:`stop` into a disabled "Stopping…", and the end of the job back into what it
    said before; :meth:`bind` makes a click call the widget's run, or its stop while a job
    runs. The runner closes itself (:meth:`close`) when the
    ``owner`` widget is taken out of its dock or destroyed; it keeps no reference to the owner.
    """

    def __init__(self, owner: QWidget, button: QPushButton | None = None) -> None:
        self.button = button
        self._run_text = button.text() if button is not None else ""
        self._jobs: list[_Job] = []
        self._main: _Job | None = None
        # a pool of the widget's own: closing waits for this widget's threads only
        self.pool = QThreadPool()
        self.pool.setExpiryTimeout(0)  # a thread ends with its job
        close = partial(_close_runner, self)
        owner.destroyed.connect(close)
        owner.installEventFilter(_RemovalWatcher(owner, close))

    def bind(self, run, stop) -> None:
        """Make a click on the button call ``run()``, or ``stop()`` while a main job runs."""
        self.button.clicked.connect(lambda: stop() if self.running else run())

    @property
    def worker(self) -> GeneratorWorker | None:
        """The worker of the main job, or None when none runs."""
        return self._main.worker if self._main is not None else None

    @property
    def running(self) -> bool:
        """Whether a main job runs."""
        return self._main is not None

    def start(
        self,
        job,
        *args,
        main: bool = True,
        yielded=None,
        returned=None,
        failed=None,
        finished=None,
    ) -> GeneratorWorker:
        """Run ``job(*args)`` in a worker thread; return the worker (started).

        The handlers run on the main thread: ``yielded(message)`` for each message,
        ``returned(result)`` when the job succeeded, ``failed(message)`` when it raised (after
        the notification), ``finished()`` at the end in every case (after the button is back
        to Run). A main job (one at a time) drives the button; other jobs (a warm-up, a
        prediction) run beside it.
        """
        if main and self._main is not None:
            raise RuntimeError("A main job is running already: stop it first.")
        record = _Job(self, yielded, returned, failed, finished)
        worker = create_worker(
            _guarded,
            job,
            args,
            _start_thread=False,
            _worker_class=_Worker,
            _connect={"errored": record.on_errored},  # napari's own handler shows the traceback
        )
        worker.yielded.connect(record.on_yielded)
        worker.returned.connect(record.on_returned)
        worker.finished.connect(record.on_finished)
        worker.setAutoDelete(False)  # the runner keeps it, done or not, until it has forgotten it
        record.worker = worker
        self._jobs.append(record)
        if main:
            self._main = record
            self._set_button("Stop", enabled=True)
        self.pool.start(worker)
        return worker

    def stop(self, command=STOP) -> None:
        """Ask the main job to end after its current step (``command`` is sent into it; the
        core's generators then return what they have) and show "Stopping…" until it has."""
        if self._main is not None:
            self._main.worker.send(command)
            self._set_button("Stopping…", enabled=False)

    def close(self) -> None:
        """Tell every job to quit and wait until their threads are done; their remaining
        messages and results are dropped. The runner can start new jobs afterwards."""
        jobs, self._jobs, self._main = self._jobs, [], None
        for job in jobs:
            job.active = False
            job.worker.quit()
        for job in jobs:
            if self.pool.tryTake(job.worker):  # not started yet: it never will be
                job.worker.finished.emit()  # for napari's list of running tasks
        self.pool.waitForDone()

    def _forget(self, job: _Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        if job is self._main:
            self._main = None
            self._set_button(self._run_text, enabled=True)

    def _set_button(self, text: str, enabled: bool) -> None:
        if self.button is not None:
            self.button.setText(text)
            self.button.setEnabled(enabled)
