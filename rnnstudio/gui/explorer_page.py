"""The hidden-state explorer view: colour each character by one unit's activation; units ranked by how well
they track simple text features; PNG and HTML export."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..errors import RNNStudioError
from .dialogs import show_error
from .inspector_page import TokenView
from .model_choice import fill_combo
from .model_text_view import ModelTextView

BEST = "(each unit's best feature)"
MAX_TOKENS = 5_000  # the charts and the coloured text redraw every token: keep the view responsive
RANKED = 40  # rows in the ranking table


class ExplorerView(ModelTextView):
    """Run a model over a text, then pick a layer/unit (or click a ranked unit) to colour the text by it."""

    explored = Signal(object)  # explorer.Activations now on screen

    def __init__(self, host=None, parent=None):
        super().__init__(host, input_height=90, parent=parent)
        self.acts = None
        self.features = {}

        self.model = QComboBox()
        self.model.setMinimumContentsLength(18)
        self.run_button = QPushButton("Run", objectName="primary")
        self.run_button.setToolTip(f"feed the text through the model and record every hidden unit after each token (first {MAX_TOKENS:,})")
        self.run_button.clicked.connect(self.run)
        self.layer = QComboBox()
        self.layer.setMinimumContentsLength(22)
        self.layer.currentIndexChanged.connect(self._layer_changed)
        self.unit = QSpinBox()
        self.unit.valueChanged.connect(lambda _v: self.redraw())
        self.feature = QComboBox()
        self.feature.currentIndexChanged.connect(lambda _i: self.rerank())
        self.png_button = QPushButton("Export PNG…")
        self.png_button.clicked.connect(lambda: self.export_png())
        self.html_button = QPushButton("Export HTML…")
        self.html_button.clicked.connect(lambda: self.export_html())
        for b in (self.png_button, self.html_button):
            b.setEnabled(False)
        top, second = QHBoxLayout(), QHBoxLayout()  # two rows, so the window can be narrow
        for w in (QLabel("Model"), self.model, self.open_button, self.run_button):
            top.addWidget(w)
        top.addStretch(1)
        for w in (QLabel("state"), self.layer, QLabel("unit"), self.unit):
            second.addWidget(w)
        second.addStretch(1)
        for w in (self.png_button, self.html_button):
            second.addWidget(w)

        self.text_view = TokenView()
        self.text_view.setPlaceholderText("Pick a model and press Run: the text is coloured by a hidden unit.")
        self.caption = QLabel("", objectName="hint")
        self.caption.setWordWrap(True)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["state", "unit", "feature", "r"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._ranked_selected)
        rank_box = QWidget()
        rank_col = QVBoxLayout(rank_box)
        rank_col.setContentsMargins(0, 0, 0, 0)
        rank_col.addWidget(QLabel("Units ranked by |correlation| with"))
        rank_col.addWidget(self.feature)
        rank_col.addWidget(self.table, 1)
        left = QWidget()
        left_col = QVBoxLayout(left)
        left_col.setContentsMargins(0, 0, 0, 0)
        left_col.addWidget(self.caption)
        left_col.addWidget(self.text_view, 1)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(rank_box)
        split.setSizes([900, 380])
        self.lay_out([top, second], split)

    def list_models(self, names: list[str]) -> None:
        fill_combo(self.model, names)
        self.run_button.setEnabled(bool(names))

    def select_model(self, name: str) -> None:
        self.model.setCurrentText(name)

    # -- work -----------------------------------------------------------------------
    def run(self) -> bool:
        name = self.model.currentText()
        return self.start(self.run_button, name, f"running {name} over the text…", name, self.input.toPlainText())

    def compute(self, name: str, text: str):
        from ..explorer import explore, rank_units, text_features

        acts = explore(self.models.get(name), text, max_tokens=MAX_TOKENS)
        features = text_features(acts.tokens)
        return acts, features, rank_units(acts, features=features, limit=RANKED)

    def show_done(self, result) -> None:
        self.acts, self.features, ranked = result
        self.layer.blockSignals(True)
        self.layer.clear()
        from ..explorer import series_label

        for name in self.acts.names:
            self.layer.addItem(series_label(name), name)
        self.layer.blockSignals(False)
        self.feature.blockSignals(True)
        self.feature.clear()
        self.feature.addItems([BEST, *self.features])
        self.feature.blockSignals(False)
        self._fill_table(ranked)
        for b in (self.png_button, self.html_button):
            b.setEnabled(True)
        self._layer_changed()
        if ranked:  # start on the most interesting unit
            self.show_unit(ranked[0]["layer"], ranked[0]["unit"])
        self.explored.emit(self.acts)
        notes = "; ".join(self.acts.notes)
        self.status.emit(f"{len(self.acts.tokens):,} tokens through {self.acts.model}{'; ' + notes if notes else ''}")

    # -- ranking ----------------------------------------------------------------------
    def rerank(self) -> None:
        if self.acts is None:
            return
        from ..explorer import rank_units

        feature = self.feature.currentText()
        ranked = rank_units(self.acts, feature=None if feature in ("", BEST) else feature, features=self.features,
                            limit=RANKED)
        self._fill_table(ranked)

    def _fill_table(self, ranked: list[dict]) -> None:
        from ..explorer import FEATURES, series_label

        self.ranked = ranked
        self.table.blockSignals(True)
        self.table.setRowCount(len(ranked))
        for i, r in enumerate(ranked):
            kind, _, layer = r["layer"].partition("[")
            cells = [f"{kind} (layer {int(layer.rstrip(']') or 0) + 1})", str(r["unit"]), r["feature"], f"{r['r']:+.3f}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 0:
                    item.setToolTip(series_label(r["layer"]))
                if j == 2:
                    item.setToolTip(FEATURES.get(r["feature"], ""))
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)

    def _ranked_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            r = self.ranked[rows[0].row()]
            self.show_unit(r["layer"], r["unit"])

    # -- display ----------------------------------------------------------------------
    def _layer_changed(self) -> None:
        if self.acts is None or self.layer.currentData() is None:
            return
        self.unit.setMaximum(self.acts.series[self.layer.currentData()].shape[1] - 1)
        self.redraw()

    def show_unit(self, series: str, unit: int) -> None:
        index = self.layer.findData(series)
        if index < 0:
            raise RNNStudioError(f"no state {series!r} in this model")
        self.layer.blockSignals(True)
        self.layer.setCurrentIndex(index)
        self.layer.blockSignals(False)
        self.unit.blockSignals(True)
        self.unit.setMaximum(self.acts.series[series].shape[1] - 1)
        self.unit.setValue(unit)
        self.unit.blockSignals(False)
        self.redraw()

    def current(self) -> tuple[str, int]:
        return self.layer.currentData(), self.unit.value()

    def redraw(self) -> None:
        if self.acts is None or self.layer.currentData() is None:
            return
        from ..explorer import activation_colour, correlations, scale_for, series_label

        series, unit = self.current()
        values = self.acts.values(series, unit)
        scale = scale_for(values)
        names = list(self.features)
        r = correlations(self.acts, self.features)[series][unit]
        best = sorted(range(len(names)), key=lambda k: -abs(r[k]))[:3]
        tips = []
        for t, (token, v) in enumerate(zip(self.acts.tokens, values)):
            feats = ", ".join(f"{names[k]} {self.features[names[k]][t]:g}" for k in best)
            tips.append(f"<b>{html.escape(repr(token))}</b> at {t}<br>unit {unit} = <b>{v:+.4f}</b><br>{html.escape(feats)}")
        self.text_view.set_tokens(self.acts.tokens, [activation_colour(float(v), scale) for v in values], tips,
                                  separator=self.acts.separator)
        corr = ", ".join(f"{names[k]} r = {r[k]:+.2f}" for k in best)
        self.caption.setText(f"{self.acts.model} ({self.acts.cell}): unit {unit} of {series_label(series)}. "
                             f"Red positive, blue negative, full colour at |value| = {scale:.3g}. "
                             f"Tracks best: {corr}.")

    # -- export -------------------------------------------------------------------------
    def export_png(self, path: str | None = None) -> str | None:
        """Save the coloured text as an image; the path written, or None."""
        def write(path: str) -> None:
            if not self.text_view.grab().save(path, "PNG"):
                raise RNNStudioError(f"could not write {path}; pick another folder")

        return self._export(path, "PNG", write)

    def export_html(self, path: str | None = None) -> str | None:
        """Save the coloured text, with its tooltips, as a web page; the path written, or None."""
        from ..explorer import save_html

        def write(path: str) -> None:
            series, unit = self.current()
            try:
                save_html(self.acts, series, unit, path)
            except OSError as exc:
                raise RNNStudioError(f"could not write {path} ({exc.strerror or exc}); pick another folder") from None

        return self._export(path, "HTML", write)

    def _export(self, path: str | None, kind: str, write) -> str | None:
        """Ask where to save unless ``path`` is given, then ``write(path)``; its error shows in a dialog."""
        if self.acts is None:
            return None
        if not path:
            ext = kind.lower()
            path, _ = QFileDialog.getSaveFileName(self, f"Save the coloured text as {kind}", f"unit.{ext}",
                                                  f"{kind} (*.{ext})")
            if not path:
                return None
        try:
            write(path)
        except RNNStudioError as exc:
            show_error(self, exc)
            return None
        self.status.emit(f"saved {path}")
        return path


def page(window):
    """The main window's tab (see ``pages.py``): refreshed whenever models change or a training run ends."""
    from .pages import attach_view

    return attach_view(window, ExplorerView(window.host), "refresh_models")


def screenshot(window) -> None:
    """For ``screenshots.py``: the demo model's units over a docs-like text, opened on the best-ranked unit."""
    from .inspector_page import SCREENSHOT_TEXT
    from .screenshots import DEMO_MODEL, run_to_end, settle, show_tab

    view = show_tab(window, ExplorerView)
    view.refresh_models()
    try:  # a real page of the demo corpus: quotes, brackets and code
        from pydoc_data.topics import topics

        view.set_text(topics["for"][:1400])
    except (ImportError, KeyError):
        view.set_text(SCREENSHOT_TEXT * 4)
    view.select_model(DEMO_MODEL)
    run_to_end(view, view.run, 180, "the explorer")
    if view.acts is None or not view.text_view.starts:
        raise RuntimeError("the explorer shows no activations")
    settle()
