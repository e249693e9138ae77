"""The app starts, offscreen, with every kind of broken model folder and run record present: each broken one
is listed as broken, the good ones stay usable, and no error dialog or traceback appears."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from rnnstudio import runs  # noqa: E402
from rnnstudio.gui.main_window import MainWindow  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from store_cases import HOSTILE_FOLDERS, make_hostile_folders, train_good  # noqa: E402


def test_main_window_starts_with_broken_models_and_run_records(qtbot, tiny_corpus, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: shown.append(a) or QMessageBox.Ok)
    good = train_good(tiny_corpus)
    names = make_hostile_folders(good)
    (record,) = runs.list_runs()
    folder = Path(record["path"]).parent
    (folder / "nested.json").write_text("[" * 100_000)
    broken_record = {**json.loads(Path(record["path"]).read_text()), "final": [1], "started": 5}
    (folder / "wrong-shape.json").write_text(json.dumps(broken_record))

    window = MainWindow(load_plugins(no_plugins=True))
    qtbot.addWidget(window)
    rows = {r["name"]: r for r in window.models.rows}
    assert set(rows) == {"good", *names}
    assert rows["good"]["error"] is None
    for name in names:
        assert HOSTILE_FOLDERS[name][1] in rows[name]["error"]
    combo = window.generation.model_combo
    assert combo.findData("good") >= 0 and all(combo.findData(name) < 0 for name in names)

    from rnnstudio.gui.runs_page import RunsView

    view = RunsView()
    qtbot.addWidget(view)
    view.refresh()
    statuses = {r["id"]: r.get("status") for r in view.records}
    assert statuses == {record["id"]: "finished", "nested": "broken", "wrong-shape": "broken"}
    assert shown == []
    window.close()
