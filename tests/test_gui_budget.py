"""GUI: the Training form's "train for N minutes", and the Models tab's last and best columns."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytestqt")

from rnnstudio import checkpoint  # noqa: E402
from rnnstudio.gui import fields as F  # noqa: E402
from rnnstudio.gui.models_page import COLUMNS, ModelsPanel  # noqa: E402
from rnnstudio.gui.training_page import TrainingPanel  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from rnnstudio.trainer import TrainConfig, Trainer  # noqa: E402


@pytest.fixture
def host():
    return load_plugins(no_plugins=True)


@pytest.mark.parametrize("mode, expected", [("minutes", (0, 0, 3.0)), ("steps", (0, 3, 0.0)), ("epochs", (3, 0, 0.0))])
def test_train_for_n_minutes_steps_or_epochs(qtbot, host, tiny_corpus, mode, expected):
    panel = TrainingPanel(host)
    qtbot.addWidget(panel)
    panel.set_corpus("text-file")
    panel.corpus_form.editors["path"].setText(str(tiny_corpus))
    F.set_value(panel.fields["length_mode"], mode)
    F.set_value(panel.fields["length"], 3)
    config = panel.config()
    assert (config.epochs, config.max_steps, config.minutes) == expected


def test_models_tab_shows_the_step_and_perplexity_of_the_last_and_the_best_weights(qtbot, tiny_corpus):
    for name in ("recorded", "older"):
        config = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, hidden_size=8,
                             batch_size=4, seq_len=8, max_steps=4, eval_every=0, name=name, device="cpu", threads=1)
        list(Trainer(config, host=load_plugins(no_plugins=True)).run())
    path = checkpoint.model_path("older") / checkpoint.CONFIG
    saved = json.loads(path.read_text())
    for key in ("best_step", "best_val_perplexity"):
        del saved["summary"][key]  # as a model saved before the best's step was recorded
    path.write_text(json.dumps(saved))

    panel = ModelsPanel()
    qtbot.addWidget(panel)
    panel.refresh()
    rows = {panel.table.item(i, 0).text(): i for i in range(panel.table.rowCount())}
    cell = lambda name, col: panel.table.item(rows[name], COLUMNS.index(col)).text()  # noqa: E731
    ppl = checkpoint.read_config(checkpoint.model_path("recorded"))["summary"]["best_val_perplexity"]
    assert cell("recorded", "best step") == "4" and cell("recorded", "best val perplexity") == f"{ppl:.3f}"
    assert cell("recorded", "steps") == "4"
    assert cell("older", "best step") == "—" and cell("older", "best val perplexity") == "—"
