"""The parameter rows of the dock widgets, built from the core's options classes.

A :class:`Form` makes the Qt widget of a job's option (a spin box, a combo box, a check box)
from the option's :func:`~napari_microstructure.core.options.spec`: its range, initial value,
choices and tooltip come from the options class, the single source of defaults, and
:meth:`Form.options` reads the rows back into an options object for the job. The settings of
the interface alone (not options of a job) have their defaults here, as named constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from ..core.options import spec

__all__ = [
    "CPU_THREADS",
    "CROPS_PER_LAYER",
    "KEEP_PARTIAL",
    "MAX_LABEL",
    "MAX_SIDE",
    "PREVIEW_INTERVAL",
    "PREVIEW_INTERVAL_MAX",
    "QT_INT_MAX",
    "SECONDS_BUDGET",
    "SHOW_GRID",
    "WEIGHT_NAMES",
    "Form",
    "spin_box",
]

#: The largest value a Qt spin box holds: larger limits (seeds) are clamped to it.
QT_INT_MAX = 2**31 - 1
#: Seconds between live previews of a reconstruction (the job's own default, None, sends none).
PREVIEW_INTERVAL = 0.5
#: The longest interval between previews the box offers.
PREVIEW_INTERVAL_MAX = 60.0
#: CPU threads of torch during a run; 0 is auto (one core fewer than torch would use).
CPU_THREADS = 0
#: The largest side (height, width, depth) an output-size box offers.
MAX_SIDE = 16384
#: Whether a stopped reconstruction's partial result is kept as layers.
KEEP_PARTIAL = True
#: The pruning study's wall-time budget per image and configuration, once seconds are chosen.
SECONDS_BUDGET = 60.0
#: Whether the pruning study's results are shown in napari's grid mode.
SHOW_GRID = True
#: Random crops per layer when the property widget builds a dataset of crops (the dataset's
#: own default, 0, builds from generated microstructures only).
CROPS_PER_LAYER = 40
#: The largest phase label the phase boxes offer (8-bit labels).
MAX_LABEL = 255
#: The weights offered by name (an editable box also takes the path of a weights file).
WEIGHT_NAMES = ("normalized", "torchvision", "random")


def spin_box(low, high, value, tip: str, special: str | None = None) -> QSpinBox | QDoubleSpinBox:
    """A spin box from ``low`` to ``high`` showing ``value`` (a float makes a double spin box,
    with two decimals or the more its numbers need); ``special`` is the text shown at ``low``."""
    double = any(isinstance(number, float) for number in (low, high, value))
    box = QDoubleSpinBox() if double else QSpinBox()
    if double:
        box.setDecimals(max(_decimals(low), _decimals(value), 2))
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    if special:
        box.setSpecialValueText(special)
    return box


def _decimals(number) -> int:
    """Decimal places of ``number`` (up to 6)."""
    return len(f"{float(number):.6f}".rstrip("0").split(".")[1])


def _names(options_class) -> set[str]:
    return {item.name for item in dataclasses.fields(options_class)}


def _tip(help_text: str, note: str) -> str:
    return f"{help_text[:1].upper()}{help_text[1:]}{note}"


@dataclasses.dataclass
class _Row:
    """How to read and set one option's widget."""

    get: Callable[[], Any]
    set: Callable[[Any], None]


class Form:
    """The rows of a widget's form for the options of ``options_class`` (and of any other
    options class a row names). Each row takes its range, initial value, choices and tooltip
    from the option's spec; ``note`` adds to the tooltip, ``default`` replaces an initial value
    that the spec leaves to the job (None)."""

    def __init__(self, options_class) -> None:
        self.options_class = options_class
        self._rows: dict[str, _Row] = {}

    def spin(
        self,
        name: str,
        note: str = "",
        *,
        options_class=None,
        default=None,
        high=None,
        special: str | None = None,
        none_at_minimum: bool = False,
        scale: float = 1,
    ) -> QSpinBox | QDoubleSpinBox:
        """A spin box for a number option (of ``options_class``, the form's when None); its
        minimum is the spec's low, or 0. ``high`` replaces a spec without an upper limit; a
        box stops at :data:`QT_INT_MAX` (said in its tooltip). With ``none_at_minimum`` its
        minimum (showing ``special``) stands for None; ``scale`` shows the value multiplied
        (100 for percent)."""
        item = spec(options_class or self.options_class, name)
        value = item.default if default is None else default
        low, high = item.low or 0, item.high if high is None else high
        if high is None or high * scale > QT_INT_MAX:
            high = QT_INT_MAX // scale
            note += f" (this box stops at {QT_INT_MAX:,}, the largest number a Qt box holds)"
        if isinstance(value, int):
            low, high = int(low), int(high)
        box = spin_box(low * scale, high * scale, value * scale, _tip(item.help, note), special)

        def get():
            shown = box.value()
            if none_at_minimum and shown == box.minimum():
                return None
            return shown / scale if scale != 1 else shown

        def set_(new) -> None:
            box.setValue(box.minimum() if new is None else new * scale)

        self._rows[name] = _Row(get, set_)
        return box

    def combo(
        self,
        name: str,
        note: str = "",
        *,
        items=None,
        texts: dict | None = None,
        default=None,
        editable: bool = False,
    ) -> QComboBox:
        """A combo box offering ``items`` (the spec's choices when None), each shown as its
        entry in ``texts`` if any; an ``editable`` box also takes typed text (a file path)."""
        item = spec(self.options_class, name)
        box = QComboBox()
        box.setEditable(editable)
        for choice in item.choices if items is None else items:
            box.addItem((texts or {}).get(choice, str(choice)), choice)
        box.setToolTip(_tip(item.help, note))

        def get():
            if editable:
                return box.currentText().strip() or item.default
            return box.currentData()

        def set_(new) -> None:
            index = box.findData(new)
            if index >= 0:
                box.setCurrentIndex(index)
            else:
                box.setEditText(str(new))

        set_(item.default if default is None else default)
        self._rows[name] = _Row(get, set_)
        return box

    def device(self, note: str = "") -> QComboBox:
        """The ``device`` option: auto (naming the device it picks here), then every device
        that works on this machine."""
        from ..core.device import available_devices

        devices = available_devices()
        return self.combo(
            "device", note, items=("auto", *devices), texts={"auto": f"auto ({devices[0]})"}
        )

    def check(self, name: str, text: str, note: str = "") -> QCheckBox:
        """A check box for a yes/no option, labelled ``text``."""
        item = spec(self.options_class, name)
        box = QCheckBox(text)
        box.setChecked(bool(item.default))
        box.setToolTip(_tip(item.help, note))
        self._rows[name] = _Row(box.isChecked, box.setChecked)
        return box

    def values(self, options_class=None) -> dict:
        """The rows' values of the options of ``options_class`` (the form's when None)."""
        names = _names(options_class or self.options_class)
        return {name: row.get() for name, row in self._rows.items() if name in names}

    def options(self, options_class=None, **given):
        """An ``options_class`` object (the form's when None) of the rows' values and
        ``given``."""
        options_class = options_class or self.options_class
        return options_class(**{**self.values(options_class), **given})

    def switch_defaults(self, old, new) -> None:
        """Rows left at their default in options class ``old`` take their default in ``new``
        (e.g. from a 2D to a 3D reconstruction)."""
        shared = _names(old) & _names(new)
        for name, row in self._rows.items():
            if name not in shared:
                continue
            before, after = spec(old, name).default, spec(new, name).default
            if before != after and row.get() == before:
                row.set(after)
