"""Editors generated from the settings schema: one widget per setting, filled from and read back into a config."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QHBoxLayout, QLineEdit, QSpinBox, QWidget

from ..settings import SettingError, SettingInfo, schema
from . import fields as F

_INT_LIMIT = 2_000_000_000  # a QSpinBox holds a C int


class OptionalSpin(QWidget):
    """An optional integer (``None`` = let the program choose): a check box that enables a spin box."""

    def __init__(self, box: QCheckBox, spin: QSpinBox, parent=None):
        super().__init__(parent)
        self.check, self.spin = box, spin
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(box)
        row.addWidget(spin, 1)
        box.toggled.connect(spin.setEnabled)
        spin.setEnabled(False)


class CompactDoubleSpin(QDoubleSpinBox):
    """A number box that keeps four decimals but shows only the ones a value needs (0.1, not 0.1000)."""

    def textFromValue(self, value: float) -> str:
        locale = self.locale()
        point = locale.decimalPoint()
        text = locale.toString(value, "f", self.decimals()).replace(locale.groupSeparator(), "").rstrip("0")
        return text + "0" if text.endswith(point) else text


def _int_range(s: SettingInfo) -> tuple[int, int]:
    m = s.meta
    lo = m.min if m.min is not None else (m.above + 1 if m.above is not None else -_INT_LIMIT)
    hi = m.max if m.max is not None else (m.below - 1 if m.below is not None else _INT_LIMIT)
    return int(max(lo, -_INT_LIMIT)), int(min(hi, _INT_LIMIT))


def _float_range(s: SettingInfo, decimals: int) -> tuple[float, float]:
    m, tiny = s.meta, 10.0 ** -decimals
    lo = m.min if m.min is not None else (m.above + tiny if m.above is not None else -1e9)
    hi = m.max if m.max is not None else (m.below - tiny if m.below is not None else 1e9)
    return float(lo), float(hi)


def editor(s: SettingInfo, value: Any = None) -> QWidget:
    """The widget for one setting, holding ``value`` (the schema's default when None is not allowed)."""
    tip = s.meta.help
    if s.meta.choices:
        labels = s.meta.choice_labels or tuple(map(str, s.meta.choices))
        items = list(zip(labels, s.meta.choices))
        if s.optional:
            items.insert(0, (s.meta.placeholder or "default", None))
        w: QWidget = F.combo(items, value, tip)
    elif s.kind == "bool":
        w = QCheckBox(s.label)
        w.setChecked(bool(value))
        w.setToolTip(tip)
    elif s.kind == "int" and s.optional:
        spin = F.spin(0, *_int_range(s), tip)
        w = OptionalSpin(QCheckBox("fixed"), spin)
        set_editor(w, value)
        w.setToolTip(tip)
    elif s.kind == "int":
        w = F.spin(value if value is not None else 0, *_int_range(s), tip)
    elif s.kind == "float" and not s.optional:
        decimals = 4
        lo, hi = _float_range(s, decimals)
        w = CompactDoubleSpin()
        w.setCorrectionMode(QDoubleSpinBox.CorrectToNearestValue)
        w.setRange(lo, hi)
        w.setDecimals(decimals)
        w.setSingleStep(0.05 if hi <= 1 else 0.5)
        w.setValue(float(value))
        w.setToolTip(tip)
    else:  # text, and optional numbers typed as text ("" means the default)
        w = F.line("" if value is None else str(value), s.meta.placeholder, tip)
    w.setObjectName(f"setting_{s.name}")
    return w


def set_editor(w: QWidget, value: Any) -> None:
    if isinstance(w, OptionalSpin):
        w.check.setChecked(value is not None)
        if value is not None:
            F.set_value(w.spin, value)
        return
    F.set_value(w, value)


def raw_value(w: QWidget) -> Any:
    """What the widget holds, unchecked (for the settings file)."""
    if isinstance(w, OptionalSpin):
        return w.spin.value() if w.check.isChecked() else None
    return F.get_value(w)


def value_of(s: SettingInfo, w: QWidget, owner: type) -> Any:
    """The setting's value as the config wants it; typed text that is not a number is a settings error."""
    raw = raw_value(w)
    if isinstance(w, QLineEdit):
        text = raw.strip()
        if not text:
            return None if s.optional else s.default
        if s.kind in ("int", "float"):
            try:
                number = float(text) if s.kind == "float" else int(text)
            except ValueError:
                raise SettingError(f"{{{s.name}}} must be a number, got {{got}}", config=owner,
                                   got=repr(text)) from None
            return number
        return text if s.kind == "str" else raw
    if isinstance(w, QDoubleSpinBox):
        return round(raw, w.decimals())
    return raw


def changed_signal(w: QWidget):
    if isinstance(w, OptionalSpin):
        return w.spin.valueChanged
    return F.changed_signal(w)


def focus_chain(w: QWidget) -> list[QWidget]:
    return [w.check, w.spin] if isinstance(w, OptionalSpin) else [w]


def gui_settings(cls: type, group: str) -> list[SettingInfo]:
    """The settings of ``group`` that the GUI shows, in declaration order."""
    return [s for s in schema(cls) if s.meta.gui and s.meta.group == group]

