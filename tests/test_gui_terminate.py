"""The desktop app under SIGTERM or SIGHUP (offscreen): training stops and saves, the settings are saved, it quits."""

from __future__ import annotations

import json
import os
import signal

import pytest

pytest.importorskip("pytestqt")
from rnnstudio import checkpoint, paths  # noqa: E402
from rnnstudio.gui import fields as F  # noqa: E402
from rnnstudio.gui.app import install_terminate_handlers  # noqa: E402
from rnnstudio.gui.main_window import MainWindow  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_terminated_app_saves_the_model_and_its_settings(qtbot, tiny_corpus, signum, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's thread count
    window = MainWindow(load_plugins(no_plugins=True), restore=False)
    qtbot.addWidget(window)
    panel = window.training
    panel.set_corpus("text-file")
    panel.corpus_form.editors["path"].setText(str(tiny_corpus))
    for key, value in {"hidden_size": 12, "batch_size": 4, "seq_len": 8, "length_mode": "steps",
                       "length": 1_000_000, "eval_every": 0, "device": "cpu", "threads": 1,
                       "name": "terminated"}.items():
        F.set_value(panel.fields[key], value)
    quits = []
    old = install_terminate_handlers(window, lambda: quits.append(True))
    try:
        assert panel.start()
        qtbot.waitUntil(lambda: panel.charts.point_count("train") > 0, timeout=30_000)
        os.kill(os.getpid(), signum)  # handled in this (the main) thread at the next Python bytecode
        qtbot.waitUntil(lambda: quits == [True], timeout=30_000)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        window.training.stop_and_join(timeout_s=30)
    assert not panel.is_training()
    loaded = checkpoint.load_model("terminated")
    assert loaded.config["summary"]["step"] > 0  # stopped mid-run, validated and saved
    settings = json.loads((paths.config_dir() / "gui-settings.json").read_text(encoding="utf-8"))
    assert settings["training"]["fields"]["hidden_size"] == 12
