"""The generator protocol: running to the end, relaying, stopping, and messages that describe
themselves (core/steps.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microstructure.core.datasets import BuildProgress
from napari_microstructure.core.decoder import Progress
from napari_microstructure.core.properties import TrainProgress
from napari_microstructure.core.pruning import StudyProgress
from napari_microstructure.core.steps import (
    DISCARD,
    STOP,
    ProgressMessage,
    describe,
    milestone,
    relay,
    run_to_end,
)
from napari_microstructure.core.volume import VolumeProgress


class Counter:
    """A generator of the core's kind: counts to ``n`` (a message per step), returns what it
    did; ``"stop"`` ends it after the current step. Records what it was sent and whether it
    was closed before its end."""

    def __init__(self, n: int = 5) -> None:
        self.n, self.received, self.closed = n, [], False

    def steps(self):
        done = 0
        try:
            while done < self.n:
                done += 1
                command = yield done
                self.received.append(command)
                if command == STOP:
                    break
        except GeneratorExit:
            self.closed = True
            raise
        return {"done": done, "stopped": done < self.n}


# ------------------------------------------------------------------------------ run_to_end


def test_run_to_end_returns_the_result_and_shows_every_message():
    counter, seen = Counter(4), []
    assert run_to_end(counter.steps(), seen.append) == {"done": 4, "stopped": False}
    assert seen == [1, 2, 3, 4] and counter.received == [None] * 4
    assert run_to_end(Counter(3).steps()) == {"done": 3, "stopped": False}


def test_run_to_end_stops_when_the_callback_says_stop():
    counter = Counter(10)
    result = run_to_end(counter.steps(), lambda step: STOP if step == 3 else None)
    assert result == {"done": 3, "stopped": True} and counter.received[-1] == STOP


# ------------------------------------------------------------------------------ relay


def outer(inner, **options):
    """An outer generator made of one inner computation: returns the inner's result."""
    result = yield from relay(inner, **options)
    return {"inner": result}


def test_relay_forwards_stop_to_the_inner_generator_and_returns_its_result():
    counter = Counter(10)
    result = run_to_end(outer(counter.steps()), lambda step: STOP if step == 2 else None)
    assert result == {"inner": {"done": 2, "stopped": True}}
    assert counter.received == [None, STOP]


def test_relay_passes_only_stop_on():
    counter = Counter(3)
    run_to_end(outer(counter.steps()), lambda step: "pause")
    assert counter.received == [None, None, None]


def test_relay_transforms_the_messages_and_answers_with_the_outer_rule():
    counter, seen = Counter(10), []
    steps = outer(
        counter.steps(),
        transform=lambda step: f"step {step}",
        answer=lambda step, reply: STOP if step == 4 else reply,
    )
    assert run_to_end(steps, seen.append) == {"inner": {"done": 4, "stopped": True}}
    assert seen == ["step 1", "step 2", "step 3", "step 4"]


def test_discard_closes_the_inner_generator_at_once():
    counter = Counter(10)
    result = run_to_end(outer(counter.steps()), lambda step: DISCARD if step == 2 else None)
    assert result == {"inner": None} and counter.closed and counter.received == [None]


def test_closing_the_outer_generator_closes_the_inner_one():
    counter = Counter(10)
    steps = outer(counter.steps())
    assert next(steps) == 1 and steps.send(None) == 2
    steps.close()
    assert counter.closed


def test_an_error_of_the_inner_generator_reaches_the_caller():
    def failing():
        yield 1
        raise FloatingPointError("diverged")

    with pytest.raises(FloatingPointError, match="diverged"):
        run_to_end(outer(failing()))


# ------------------------------------------------------------------------------ progress messages

STEP = Progress(iteration=12, total=300, loss=0.0123, elapsed=3.0, level=1, n_levels=4)
ROW = {"e_s2_mean": 0.0123, "e_s2_std": 0.0011, "seconds": 12.3}
MESSAGES = {
    "reconstruction step": (STEP, ["step 12/300", "level 2/4", "loss 0.0123", "~72 s left"]),
    "volume step": (
        VolumeProgress(iteration=300, total=300, loss=0.5, elapsed=9.0, level=3, n_levels=4),
        ["step 300/300", "9 s"],
    ),
    "study step": (
        StudyProgress(0, 2, "pool1", ("conv1_1", "pool1"), 0, 1, 3.0, 0.02, step=STEP),
        ["pool1 (1/2)", "image 1/1", "step 12/300"],
    ),
    "finished configuration": (
        StudyProgress(1, 2, "pool2", (), 0, 1, 30.0, 1.0, result=ROW),
        ["pool2 (2/2)", "e_S2 0.0123 ± 0.0011", "12.3 s"],
    ),
    "dataset sample": (
        BuildProgress(6, 60, "generated", "gaussian_field_0006.tif", 3.0, 1.0),
        ["sample 6/60", "gaussian_field_0006.tif", "~27 s left"],
    ),
    "features": (TrainProgress("features", 16, 64, 2.0), ["features of 16/64 slices", "~6 s"]),
    "fold": (TrainProgress("fold", 2, 5, 9.0, 2, 5, r2=0.912), ["fold 2/5", "R² 0.912"]),
    "epoch": (
        TrainProgress("epoch", 7, 40, 20.0, 0, 5, 7, 0.1234, 0.2345),
        ["final fit, epoch 7/40", "train 0.1234", "validation 0.2345"],
    ),
    "final fit": (TrainProgress("fit", 1, 1, 25.0), ["final model fitted", "25 s"]),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_every_progress_message_describes_itself_on_one_line(name):
    message, parts = MESSAGES[name]
    text = describe(message)
    assert "\n" not in text and all(part in text for part in parts), text
    assert 0 <= message.fraction_done <= 1 and message.elapsed >= 0


def test_the_packages_own_messages_follow_the_protocol():
    for message, _parts in MESSAGES.values():
        if not isinstance(message, Progress):  # decoder.py's: described from its attributes
            assert isinstance(message, ProgressMessage) and message.describe() == describe(message)


def test_finished_units_and_ends_are_milestones():
    finished = {name for name, (message, _) in MESSAGES.items() if milestone(message)}
    assert finished == {"volume step", "finished configuration", "fold", "final fit"}


def test_no_estimate_of_the_time_left_before_any_progress():
    start = Progress(iteration=0, total=300, loss=np.nan, elapsed=0.5, level=0, n_levels=4)
    assert "left" not in describe(start) and "step 0/300" in describe(start)
