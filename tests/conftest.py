"""Shared fixtures: every test gets its own RNN Studio home, so no test touches real user folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def rnnstudio_home(tmp_path, monkeypatch):
    """Point every per-user folder (models, plugins, cache, config) at a fresh temp folder."""
    home = tmp_path / "rnnstudio-home"
    monkeypatch.setenv("RNNSTUDIO_HOME", str(home))
    monkeypatch.delenv("RNNSTUDIO_NO_PLUGINS", raising=False)
    from rnnstudio import plugins

    plugins.set_default_host(None)
    yield home
    plugins.set_default_host(None)


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small repeating text file: a model can learn it almost perfectly in a few hundred steps."""
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    return path


@pytest.fixture
def errors(monkeypatch):
    """GUI tests: every error dialog as (title, text), recorded instead of shown (a modal would block the test)."""
    from PySide6.QtWidgets import QMessageBox

    shown: list[tuple[str, str]] = []

    def critical(parent, title, text, *args, **kwargs):
        shown.append((title, text))
        return QMessageBox.Ok

    monkeypatch.setattr(QMessageBox, "critical", critical)
    return shown


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (and a busy machine makes extra threads spin); restore after.
    A test module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
