"""GUI tests for the inspector, explorer, runs and 'under the hood' views (pytest-qt, offscreen, tiny models)."""

from __future__ import annotations

import csv
import shutil

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QEvent, Qt  # noqa: E402
from PySide6.QtGui import QHelpEvent, QImage, QTextCursor  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QToolTip  # noqa: E402

from rnnstudio import runs  # noqa: E402
from rnnstudio.gui.explorer_page import ExplorerView  # noqa: E402
from rnnstudio.gui.hood_page import HoodView  # noqa: E402
from rnnstudio.gui.inspector_page import InspectorView  # noqa: E402
from rnnstudio.gui.main_window import MainWindow  # noqa: E402
from rnnstudio.gui.runs_page import RunsView  # noqa: E402
from rnnstudio.inspector import probability_colour  # noqa: E402
from rnnstudio.plugins import default_host  # noqa: E402
from tiny_models import train_on_file  # noqa: E402

WAIT_MS = 30_000
TEXT = 'the cat sat on the mat.\n"the mat" (sat) on the cat.'


def train(corpus, name, cell, steps=6):
    train_on_file(corpus, name, cell=cell, hidden_size=16, batch_size=4, seq_len=16, max_steps=steps, eval_every=3,
                  checkpoint_every=0)


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """Three small models (gru-a, rnn-b: rnn-scratch, lstm-x), trained once for the module, with their run records."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:  # a module-scoped fixture cannot use ``monkeypatch``
        mp.setenv("RNNSTUDIO_HOME", str(root / "home"))
        for name, cell in (("gru-a", "gru"), ("rnn-b", "rnn-scratch"), ("lstm-x", "lstm")):
            train(corpus, name, cell)
    return root / "home"


@pytest.fixture
def trained(trained_home, rnnstudio_home):
    """This test's own copy of the trained models and runs."""
    shutil.copytree(trained_home, rnnstudio_home, dirs_exist_ok=True)
    return rnnstudio_home


def background_colour(view, index):
    cursor = QTextCursor(view.document())
    cursor.setPosition(view.starts[index] + 1)  # the format of the character just before the cursor
    c = cursor.charFormat().background().color()
    return c.red(), c.green(), c.blue()


def test_inspector_colours_tokens_shows_tooltips_and_compares(qtbot, trained, tmp_path, monkeypatch, errors):
    view = InspectorView(default_host())
    qtbot.addWidget(view)
    view.resize(1000, 700)
    view.show()
    picked = tmp_path / "pasted.txt"
    picked.write_text(TEXT, encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(picked), ""))
    qtbot.mouseClick(view.open_button, Qt.LeftButton)
    assert view.input.toPlainText() == TEXT
    view.select_models("gru-a")
    with qtbot.waitSignal(view.explained, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(view.inspect_button, Qt.LeftButton)
    result = blocker.args[0]
    assert result["kind"] == "explain" and len(view.view_a.starts) == result["scored"] == len(TEXT) - 1
    for i in (0, 7, len(TEXT) - 2):
        assert background_colour(view.view_a, i) == probability_colour(result["rows"][i]["probability"])
        assert view.view_a.token_at(view.view_a.point_of(i)) == i
    # a real hover: the tooltip names the token's NLL and its top predictions
    i = 4
    point = view.view_a.point_of(i)
    event = QHelpEvent(QEvent.ToolTip, point, view.view_a.viewport().mapToGlobal(point))
    view.view_a.viewportEvent(event)
    tip = QToolTip.text()
    assert f"{result['rows'][i]['nll']:.4f}" in tip and result["rows"][i]["top"][0]["token"] in tip
    page = view.breakdown.toPlainText()
    assert f"{result['perplexity']:.4f}" in page and "bits per token" in page and "exp(" in page
    assert not view.view_b.isVisible()

    view.select_models("gru-a", "rnn-b")
    with qtbot.waitSignal(view.explained, timeout=WAIT_MS) as blocker:
        view.inspect()
    both = blocker.args[0]
    assert both["kind"] == "compare" and view.view_b.isVisible() and view.view_diff.isVisible()
    assert len(view.view_diff.starts) == both["scored"]
    assert f"A wins {both['wins']['a']} tokens, B wins {both['wins']['b']}" in view.breakdown.toPlainText()
    assert not errors


def test_explorer_ranks_units_switches_state_and_exports(qtbot, trained, tmp_path, errors):
    view = ExplorerView(default_host())
    qtbot.addWidget(view)
    view.resize(1000, 700)
    view.show()
    view.set_text(TEXT)
    view.select_model("lstm-x")
    with qtbot.waitSignal(view.explored, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(view.run_button, Qt.LeftButton)
    acts = blocker.args[0]
    assert [view.layer.itemData(i) for i in range(view.layer.count())] == ["h[0]", "c[0]"]
    assert view.table.rowCount() > 0 and len(view.text_view.starts) == len(TEXT)
    top = view.ranked[0]
    assert view.current() == (top["layer"], top["unit"])  # opens on the best-correlated unit
    # clicking a ranked row shows that unit
    view.table.selectRow(2)
    assert view.current() == (view.ranked[2]["layer"], view.ranked[2]["unit"])
    view.layer.setCurrentIndex(1)
    view.unit.setValue(3)
    assert view.current() == ("c[0]", 3) and "cell state c" in view.caption.text()
    # ranking by one feature lists every unit of both states against it
    view.feature.setCurrentText("inside quotes")
    assert {view.table.item(r, 2).text() for r in range(view.table.rowCount())} == {"inside quotes"}
    assert view.table.rowCount() == 32
    png = view.export_png(str(tmp_path / "unit.png"))
    image = QImage(png)
    assert not image.isNull() and image.width() > 100
    page = (tmp_path / "unit.html")
    view.export_html(str(page))
    html = page.read_text(encoding="utf-8")
    assert html.count("<span ") == len(acts.tokens) and "cell state c" in html and "&quot;" in html
    assert not errors


def test_runs_view_overlays_ticked_runs_and_exports_csv(qtbot, trained, tiny_corpus, tmp_path, errors):
    view = RunsView()
    qtbot.addWidget(view)
    view.show()
    ids = [r["id"] for r in runs.list_runs()]
    assert len(ids) == 3 and view.row_count() == 3 and view.selected_ids() == ids  # the latest start ticked
    assert view.metric_choice.currentText() == "val perplexity"
    assert [view.point_count(i) for i in ids] == [2, 2, 2]  # validations at step 3 and the last step, 6
    view.set_checked(ids[0], False)
    assert view.selected_ids() == ids[1:] and view.point_count(ids[0]) == 0
    view.set_metric("train loss")
    assert view.point_count(ids[1]) == 6
    out = view.export_csv(str(tmp_path / "runs.csv"))
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["rnn-b", "lstm-x"] and rows[0]["cell"] == "rnn-scratch"
    train(tiny_corpus, "run-late", "gru", steps=2)
    view.refresh()  # keeps the ticks, and ticks the new run
    new = runs.list_runs()[-1]["id"]
    assert view.row_count() == 4 and view.selected_ids() == ids[1:] + [new] and view.point_count(new) == 2  # train loss, 2 steps
    assert not errors


def test_runs_view_is_a_sortable_filterable_experiment_table(qtbot, trained, errors):
    from rnnstudio.gui.runs_page import COLUMNS

    view = RunsView()
    qtbot.addWidget(view)
    view.show()
    for column in ("cell", "hidden", "layers", "optimizer", "lr", "batch", "seq len", "tokens/s", "best val ppl"):
        assert column in COLUMNS
    by_model = {r["model"]: r["id"] for r in runs.list_runs()}
    assert view.cell_text(by_model["rnn-b"], "cell") == "rnn-scratch"
    assert view.cell_text(by_model["rnn-b"], "hidden") == "16" and view.cell_text(by_model["rnn-b"], "lr") == "0.005 (default)"
    # sorting is numeric on the raw values, both ways
    col = COLUMNS.index("best val ppl")
    view.table.sortByColumn(col, Qt.AscendingOrder)
    best = {r["id"]: r["final"]["best_val_perplexity"] for r in runs.list_runs()}
    assert view.shown_ids() == sorted(best, key=best.get)
    view.table.sortByColumn(col, Qt.DescendingOrder)
    assert view.shown_ids() == sorted(best, key=best.get, reverse=True)
    # the filter matches any column's text
    view.filter.setText("LSTM")
    assert view.shown_ids() == [by_model["lstm-x"]]
    view.filter.setText("")
    assert view.row_count() == 3
    # selecting a row overlays it even when it is not ticked, drawn thicker
    view.set_selected([])
    assert view.curves == {}
    view.table.selectRow(view.shown_ids().index(by_model["gru-a"]))
    assert list(view.curves) == [by_model["gru-a"]]
    assert not errors


def test_runs_and_training_tabs_draw_the_same_per_step_train_curve(qtbot, trained, errors):
    """Train perplexity is exp(each step's loss) in both tabs, smoothed the same way; never a per-window mean."""
    import math

    from rnnstudio.gui import charts
    from rnnstudio.gui.charts import TrainingCharts, ema

    record = runs.list_runs()[0]
    steps, losses = record["curves"]["train"]["step"], record["curves"]["train"]["loss"]
    view = RunsView()
    qtbot.addWidget(view)
    view.set_selected([record["id"]])
    view.set_metric("train perplexity")
    live = TrainingCharts()
    qtbot.addWidget(live)
    live.add_train_points(list(zip(steps, losses)))
    for weight in (0.0, 0.6, 0.9):
        view.smoothing.set_value(weight)
        live.smoothing.set_value(weight)
        live.refresh()
        x_runs, y_runs = view.curves[record["id"]].getData()
        x_live, y_live = live.train_curve.getData()
        assert list(x_runs) == list(x_live) == steps
        assert list(y_runs) == pytest.approx(list(y_live))
        assert list(y_live) == pytest.approx(ema([math.exp(v) for v in losses], weight))
    assert charts.ema([4.0, 2.0], 0.5) == pytest.approx([4.0, 4.0 / 3 + 2.0 * 2 / 3])  # debiased: starts at the first value
    assert not errors


def test_hood_view_computes_one_step_both_ways(qtbot, trained, errors):
    view = HoodView(default_host())
    qtbot.addWidget(view)
    assert [view.model.itemText(i) for i in range(view.model.count())] == ["rnn-b"]  # only plain RNNs
    view.text.setText("the cat sat")
    view.step.setValue(4)
    with qtbot.waitSignal(view.computed, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(view.compute_button, Qt.LeftButton)
    r = blocker.args[0]
    assert r["token"] == "c" and view.table.rowCount() == 16
    assert r["max_difference"] < 1e-5 and "max |separate − concatenated|" in view.difference.text()
    assert float(view.table.item(0, 2).text()) == pytest.approx(r["separate"][0], abs=1e-7)
    assert float(view.table.item(0, 3).text()) == pytest.approx(r["concatenated"][0], abs=1e-7)
    view.step.setValue(50)
    assert view.compute() is None and "step must be between" in errors[-1][1]


def test_main_window_has_the_pages_and_refreshes_runs_after_training(qtbot, tiny_corpus, errors):
    win = MainWindow(default_host(), restore=False)
    qtbot.addWidget(win)
    titles = [win.tabs.tabText(i) for i in range(win.tabs.count())]
    for title in ("Inspector", "Explorer", "Runs", "Under the hood"):
        assert title in titles
    runs_page = win.tabs.widget(titles.index("Runs"))
    inspector_page = win.tabs.widget(titles.index("Inspector"))
    assert runs_page.row_count() == 0 and inspector_page.model_a.count() == 0
    train(tiny_corpus, "late", "gru", steps=2)
    win.models_changed.emit()  # what the window emits when a training run ends
    assert runs_page.row_count() == 1 and inspector_page.model_a.currentText() == "late"
