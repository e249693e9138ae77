"""Small helpers to read, write and save the state of plain Qt editors generically."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QWidget


def spin(value: int, lo: int, hi: int, tip: str = "") -> QSpinBox:
    w = QSpinBox()
    w.setCorrectionMode(QAbstractSpinBox.CorrectToNearestValue)  # 0 typed in a 1.. box becomes 1, not the old value
    w.setRange(lo, hi)
    w.setValue(value)
    w.setToolTip(tip)
    return w


def combo(items, current=None, tip: str = "") -> QComboBox:
    """``items``: values, or (label, value) pairs."""
    w = QComboBox()
    w.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)  # long items must not widen the form
    w.setMinimumContentsLength(8)
    for item in items:
        label, value = item if isinstance(item, tuple) else (str(item), item)
        w.addItem(label, value)
    if current is not None:
        set_value(w, current)
    w.setToolTip(tip)
    return w


def line(text: str = "", placeholder: str = "", tip: str = "") -> QLineEdit:
    w = QLineEdit(text)
    w.setPlaceholderText(placeholder)
    w.setToolTip(tip)
    return w


def get_value(w: QWidget) -> Any:
    if isinstance(w, (QSpinBox, QDoubleSpinBox)):
        return w.value()
    if isinstance(w, QComboBox):
        return w.currentData()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, QLineEdit):
        return w.text()
    raise TypeError(f"no value for {type(w).__name__}")


def set_value(w: QWidget, value: Any) -> None:
    """Set an editor from a saved value; a value of the wrong type is ignored (old or hand-edited settings)."""
    try:
        if isinstance(w, QSpinBox):
            w.setValue(int(value))
        elif isinstance(w, QDoubleSpinBox):
            w.setValue(float(value))
        elif isinstance(w, QComboBox):
            index = w.findData(value)
            if index >= 0:
                w.setCurrentIndex(index)
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QLineEdit):
            w.setText("" if value is None else str(value))
    except (TypeError, ValueError, OverflowError):
        pass


def changed_signal(w: QWidget):
    if isinstance(w, (QSpinBox, QDoubleSpinBox)):
        return w.valueChanged
    if isinstance(w, QComboBox):
        return w.currentIndexChanged
    if isinstance(w, QCheckBox):
        return w.toggled
    return w.editingFinished
