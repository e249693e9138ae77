"""The GUI inspector draws a long text a page at a time (pytest-qt, offscreen, an untrained in-memory model)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402

from rnnstudio.checkpoint import LoadedModel  # noqa: E402
from rnnstudio.data import Vocab  # noqa: E402
from rnnstudio.gui import inspector_page  # noqa: E402
from rnnstudio.gui.inspector_page import InspectorView  # noqa: E402
from rnnstudio.model import ModelConfig, RNNLanguageModel  # noqa: E402
from rnnstudio.plugins import default_host  # noqa: E402

TEXT = "abcdefghij" * 125  # 1,250 tokens: three pages of 500 (the page size is lowered below)


def _loaded(text: str) -> LoadedModel:
    vocab = Vocab.build(Counter(text), tokenizer="char")
    cfg = ModelConfig(cell="gru", vocab_size=len(vocab), hidden_size=8)
    model = RNNLanguageModel(cfg, default_host().cell("gru")).eval()
    return LoadedModel("paged", Path("."), model, vocab, {"model": cfg.to_json(), "data": {"preprocess": "raw"}})


def test_a_long_text_is_drawn_one_page_at_a_time(qtbot, monkeypatch):
    monkeypatch.setattr(inspector_page, "PAGE_TOKENS", 500)
    view = InspectorView(default_host())
    qtbot.addWidget(view)
    loaded = _loaded(TEXT)
    view.models.loaded["paged"] = loaded
    view.model_a.addItem("paged")
    view.select_models("paged")
    view.set_text(TEXT)
    with qtbot.waitSignal(view.explained, timeout=30_000) as blocker:
        assert view.inspect()  # (the button is off: no model is saved on disk)
    result = blocker.args[0]
    assert result["scored"] == len(TEXT) - 1 and view.pages() == 3
    assert len(view.view_a.starts) == 500 and not view.prev_button.isEnabled() and view.next_button.isEnabled()
    assert view.page_label.text() == "tokens 1–500 of 1,249"
    tip_first = view.view_a.tips[0]
    qtbot.mouseClick(view.next_button, Qt.LeftButton)
    assert view.page == 1 and len(view.view_a.starts) == 500 and view.prev_button.isEnabled()
    assert "at position 501" in view.view_a.tips[0] and view.view_a.tips[0] != tip_first
    qtbot.mouseClick(view.next_button, Qt.LeftButton)
    assert view.page == 2 and len(view.view_a.starts) == 249 and not view.next_button.isEnabled()
    assert view.page_label.text() == "tokens 1,001–1,249 of 1,249"
    view.show_page(99)  # clamped
    assert view.page == 2
    qtbot.mouseClick(view.prev_button, Qt.LeftButton)
    assert view.page == 1
