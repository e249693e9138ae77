"""Under the hood: one real RNN time step, H_t = tanh(X_t W_xh + H_{t-1} W_hh + b), computed two ways side by side."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                               QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .. import checkpoint
from ..errors import RNNStudioError
from .dialogs import show_error
from .model_choice import ModelCache, fill_combo

RNN_CELLS = ("rnn-scratch", "rnn")
COLUMNS = ("unit", "H(t-1)", "separate matmuls", "one concatenated matmul", "the cell's own output",
           "|separate − concatenated|")
COLUMN_TIPS = ("", "the previous state, layer 1", "tanh(X_t W_xh + H_(t-1) W_hh + b)",
               "tanh([X_t, H_(t-1)] [W_xh; W_hh] + b)", "what the cell's forward returns for this step", "")
FORMULA = ("<p style='font-size:13pt'>H<sub>t</sub> = tanh(X<sub>t</sub> W<sub>xh</sub> + H<sub>t−1</sub> "
           "W<sub>hh</sub> + b) &nbsp; = &nbsp; tanh([X<sub>t</sub>, H<sub>t−1</sub>] [W<sub>xh</sub>; "
           "W<sub>hh</sub>] + b)</p><p>d2l 8.4: concatenating the input with the previous state, and stacking the "
           "two weight matrices, gives the same numbers with one matrix product. Below, both are computed on a real "
           "step of the model (layer 1), next to what the cell itself returns.</p>")


def rnn_model_names() -> list[str]:
    """Saved models whose cell is a plain RNN (the only ones with one W_xh and one W_hh)."""
    return [m.name for m in checkpoint.list_models()
            if m.config is not None and m.config.get("model", {}).get("cell") in RNN_CELLS]


class HoodView(QWidget):
    """Pick an RNN model, type a text and a step; the table shows H_t computed both ways."""

    computed = Signal(object)
    status = Signal(str)

    def __init__(self, host=None, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.models = ModelCache(host)
        self.result: dict | None = None
        self.model = QComboBox()
        self.model.setMinimumContentsLength(18)
        self.text = QLineEdit("The Time Traveller")
        self.text.setPlaceholderText("text to run through the model")
        self.step = QSpinBox()
        self.step.setRange(0, 10_000)
        self.step.setValue(5)
        self.step.setToolTip("the time step t whose H_t is computed (0: the first token)")
        self.compute_button = QPushButton("Compute H_t", objectName="primary")
        self.compute_button.clicked.connect(self.compute)
        top = QHBoxLayout()
        for w in (QLabel("RNN model"), self.model, QLabel("text"), self.text, QLabel("step t"), self.step,
                  self.compute_button):
            top.addWidget(w)
        top.setStretchFactor(self.text, 1)

        self.formula = QLabel(FORMULA)
        self.formula.setWordWrap(True)
        self.shapes = QLabel("")
        self.shapes.setWordWrap(True)
        self.difference = QLabel("")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        for j, tip in enumerate(COLUMN_TIPS):
            self.table.horizontalHeaderItem(j).setToolTip(tip)
        col = QVBoxLayout(self)
        col.addLayout(top)
        for w in (self.formula, self.shapes, self.difference):
            col.addWidget(w)
        col.addWidget(self.table, 1)
        self.refresh_models()

    def refresh_models(self) -> None:
        self.models.clear()
        names = rnn_model_names()
        fill_combo(self.model, names)
        self.compute_button.setEnabled(bool(names))
        if not names:
            self.shapes.setText("No saved RNN model yet: train one with the cell rnn-scratch or rnn.")
        elif self.result is None:
            self.shapes.setText("Pick a model, a text and a step t, then press Compute H_t.")

    def select_model(self, name: str) -> None:
        self.model.setCurrentText(name)

    def compute(self) -> dict | None:
        """One step is a few small matrix products: computed right here, no worker needed."""
        from ..explorer import recurrence_both_ways

        name = self.model.currentText()
        try:
            if not name:
                raise RNNStudioError("no saved RNN model; train one with the cell rnn-scratch or rnn")
            result = recurrence_both_ways(self.models.get(name), self.text.text(), self.step.value())
        except RNNStudioError as exc:
            show_error(self, exc)
            return None
        self.show_result(result)
        self.computed.emit(result)
        return result

    def show_result(self, r: dict) -> None:
        self.result = r
        s = r["shapes"]
        before = "".join(r["previous"])
        self.shapes.setText(
            f"Step t = {r['step']}: input token {r['token']!r} after {before!r}. Shapes: X_t {s['X_t']}, "
            f"H_(t-1) {s['H_prev']}, W_xh {s['W_xh']}, W_hh {s['W_hh']}, b {s['b']}; concatenated [X_t, H_(t-1)] "
            f"{s['XH']} times [W_xh; W_hh] {s['W']}. Nonlinearity {r['nonlinearity']}, {r['dtype']}.")
        self.difference.setText(
            f"<b>max |separate − concatenated| = {r['max_difference']:.3g}</b> &nbsp; (float rounding: the two "
            f"ways sum the same products in a different order); max |separate − cell output| = "
            f"{r['max_difference_model']:.3g}")
        n = len(r["separate"])
        self.table.setRowCount(n)
        for i in range(n):
            diff = abs(r["separate"][i] - r["concatenated"][i])
            cells = [str(i), f"{r['h_prev'][i]:+.6f}", f"{r['separate'][i]:+.8f}", f"{r['concatenated'][i]:+.8f}",
                     f"{r['model_output'][i]:+.8f}", f"{diff:.2e}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j in (2, 3):
                    item.setBackground(QColor("#eef3ff") if j == 2 else QColor("#fff4e5"))
                self.table.setItem(i, j, item)
        self.status.emit(f"H_t both ways: max difference {r['max_difference']:.3g}")


def page(window):
    """The main window's tab (see ``pages.py``): refreshed whenever models change or a training run ends."""
    from .pages import attach_view

    return attach_view(window, HoodView(window.host), "refresh_models")


def screenshot(window) -> None:
    """For ``screenshots.py`` (after the runs shot trained an ``rnn`` model): one real step both ways."""
    from .screenshots import DEMO_MODEL, settle, show_tab

    view = show_tab(window, HoodView)
    view.refresh_models()
    view.select_model(f"{DEMO_MODEL}-rnn")
    view.text.setText("The Time Traveller")
    view.step.setValue(9)
    if view.compute() is None:
        raise RuntimeError("under the hood: the step could not be computed")
    settle()
