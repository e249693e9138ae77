"""ParamForm: a form generated from a component's declared ``params``, so a new plugin needs no GUI code."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSpinBox, QWidget)

from ..errors import RNNStudioError
from ..params import Param

_INT_LIMIT = 2_000_000_000


class PathEdit(QWidget):
    """A line edit with File… and Folder… buttons that open file dialogs."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.file_button = QPushButton("File…")
        self.folder_button = QPushButton("Folder…")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)
        self.file_button.clicked.connect(self.choose_file)
        self.folder_button.clicked.connect(self.choose_folder)
        self.edit.editingFinished.connect(self.changed)
        self.edit.textChanged.connect(self._show_whole)

    def _show_whole(self, text: str) -> None:
        """A long path is clipped in the narrow form: its tooltip has all of it, and the view shows its end."""
        self.edit.setToolTip(text)
        if not self.edit.hasFocus():
            self.edit.setCursorPosition(len(text))

    def text(self) -> str:
        return self.edit.text()

    def setText(self, text: str) -> None:
        self.edit.setText(text)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.edit.text())
        if path:
            self.edit.setText(path)
            self.changed.emit()

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.edit.text())
        if path:
            self.edit.setText(path)
            self.changed.emit()


class ParamForm(QWidget):
    """Editors for a tuple of ``Param``: int spin box, float/str line edit, bool check box, choice combo, path picker.

    ``values()`` checks every entry against its ``Param`` and raises ``RNNStudioError`` naming the
    owner and the option; ``set_values()`` fills the editors; ``changed`` fires on every edit.
    """

    changed = Signal()

    def __init__(self, params: tuple[Param, ...] = (), owner: str = "", parent=None):
        super().__init__(parent)
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.params: tuple[Param, ...] = ()
        self.owner = owner
        self.editors: dict[str, QWidget] = {}
        self.set_params(params, owner)

    def set_params(self, params: tuple[Param, ...], owner: str = "") -> None:
        while self.layout_.rowCount():
            self.layout_.removeRow(0)
        self.params, self.owner, self.editors = tuple(params), owner, {}
        for p in self.params:
            editor = self._make_editor(p)
            editor.setObjectName(f"param_{p.name}")
            tip = p.help + (f" (one of {', '.join(map(str, p.choices))})" if p.choices else "")
            editor.setToolTip(tip)
            label = QLabel(p.name.replace("_", " "))
            label.setToolTip(tip)
            self.layout_.addRow(label, editor)
            self.editors[p.name] = editor
        if not self.params:
            hint = QLabel("no options")
            hint.setObjectName("hint")
            self.layout_.addRow(hint)
        self.set_values({})

    def focus_chain(self) -> list[QWidget]:
        """The editors' focusable widgets in the order they are shown (for the Tab order of the page)."""
        out: list[QWidget] = []
        for p in self.params:
            w = self.editors[p.name]
            out += [w.edit, w.file_button, w.folder_button] if isinstance(w, PathEdit) else [w]
        return out

    def _make_editor(self, p: Param) -> QWidget:
        if p.type == "int":
            w = QSpinBox()
            w.setRange(int(p.min) if p.min is not None else -_INT_LIMIT, int(p.max) if p.max is not None else _INT_LIMIT)
            w.valueChanged.connect(self.changed)
        elif p.type == "bool":
            w = QCheckBox()
            w.toggled.connect(self.changed)
        elif p.type == "choice":
            w = QComboBox()
            w.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            w.setMinimumContentsLength(8)
            for c in p.choices:
                w.addItem(str(c), c)
            w.currentIndexChanged.connect(self.changed)
        elif p.type == "path":
            w = PathEdit()
            w.changed.connect(self.changed)
        else:  # float and str: typed text, checked by Param on values()
            w = QLineEdit()
            w.editingFinished.connect(self.changed)
        return w

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the editors: given values first, declared defaults for the rest. Unknown keys are ignored."""
        for p in self.params:
            value = values.get(p.name, p.default)
            w = self.editors[p.name]
            w.blockSignals(True)
            try:
                if p.type == "int":
                    w.setValue(int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0)
                elif p.type == "bool":
                    w.setChecked(bool(value))
                elif p.type == "choice":
                    index = w.findData(value)
                    w.setCurrentIndex(index if index >= 0 else 0)
                else:
                    w.setText("" if value is None else str(value))
            finally:
                w.blockSignals(False)

    def raw_values(self) -> dict[str, Any]:
        """What the editors hold, unchecked (for saving settings)."""
        out: dict[str, Any] = {}
        for p in self.params:
            w = self.editors[p.name]
            if p.type == "int":
                out[p.name] = w.value()
            elif p.type == "bool":
                out[p.name] = w.isChecked()
            elif p.type == "choice":
                out[p.name] = w.currentData()
            else:
                out[p.name] = w.text()
        return out

    def values(self) -> dict[str, Any]:
        """The checked values; a bad entry raises RNNStudioError naming the component and the option."""
        out: dict[str, Any] = {}
        raws = self.raw_values()
        for p in self.params:
            raw = raws[p.name]
            try:
                if p.type in ("str", "path"):
                    out[p.name] = p.validate(raw) if raw != "" or p.default not in (None, "") else p.default
                elif p.type == "float":
                    out[p.name] = p.parse(raw) if raw.strip() else p.validate(p.default)
                else:
                    out[p.name] = p.validate(raw)
            except RNNStudioError as exc:
                raise RNNStudioError(str(exc), source=self.owner or None) from None
        return out
