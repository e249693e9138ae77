"""The GUI forms come from the settings schema: every setting has its widget, with the schema's help as its tooltip."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from rnnstudio.config import SamplingConfig, TrainConfig  # noqa: E402
from rnnstudio.gui.generation_page import GenerationPanel  # noqa: E402
from rnnstudio.gui.training_page import TrainingPanel  # noqa: E402
from rnnstudio.plugins import load_plugins  # noqa: E402
from rnnstudio.settings import schema  # noqa: E402


def _training_widget(panel, s):
    special = {"corpus": panel.corpus_combo, "cell": panel.cell_combo, "corpus_options": panel.corpus_form,
               "cell_options": panel.cell_form, "tokens_options": panel.tokens_form}
    if s.name in special:
        return special[s.name]
    return panel.fields["length"] if s.widget == "length" else panel.fields[s.name]


@pytest.mark.parametrize("s", [s for s in schema(TrainConfig) if s.meta.gui], ids=lambda s: s.name)
def test_every_training_setting_has_a_widget_in_the_training_form(qtbot, s):
    panel = TrainingPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    widget = _training_widget(panel, s)
    assert widget is not None
    if s.name in panel.fields and s.widget not in ("device",):
        assert panel.fields[s.name].toolTip().startswith(s.meta.help)


@pytest.mark.parametrize("s", [s for s in schema(SamplingConfig) if s.meta.gui], ids=lambda s: s.name)
def test_every_generation_setting_has_a_widget_in_the_generate_form(qtbot, s):
    panel = GenerationPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    assert panel.fields[s.name].toolTip().startswith(s.meta.help)


def test_a_tokenizers_own_options_show_under_the_tokens_picker(qtbot):
    from rnnstudio.gui import fields as F

    panel = TrainingPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    F.set_value(panel.fields["tokens"], "char")
    assert panel.tokens_form.isHidden()  # characters need no options
    F.set_value(panel.fields["tokens"], "bpe")
    assert not panel.tokens_form.isHidden() and "vocab_size" in panel.tokens_form.editors
    panel.tokens_form.editors["vocab_size"].setValue(300)
    config = panel.config()
    assert config.tokens == "bpe" and config.tokens_options["vocab_size"] == 300


def test_the_forms_give_back_the_configs_they_were_filled_with(qtbot):
    from rnnstudio.gui import settings_form as SF

    panel = TrainingPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    for key, value in {"hidden_size": 48, "dropout": 0.25, "lr": "0.02", "checkpoint_minutes": 2.5,
                       "val_fraction": 0.2, "sample_length": 30, "explode_patience": 7}.items():
        SF.set_editor(panel.fields[key], value)
    config = panel.config()
    assert (config.hidden_size, config.dropout, config.lr, config.checkpoint_minutes, config.val_fraction,
            config.sample_length, config.explode_patience) == (48, 0.25, 0.02, 2.5, 0.2, 30, 7)
    gen = GenerationPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(gen)
    for key, value in {"length": 33, "temperature": 0.7, "seed": 9, "num_samples": 2, "stop_at": r"\n"}.items():
        SF.set_editor(gen.fields[key], value)
    cfg = gen.sampling_config()
    assert (cfg.length, cfg.temperature, cfg.seed, cfg.num_samples, cfg.stop_at) == (33, 0.7, 9, 2, "\n")
    SF.set_editor(gen.fields["seed"], None)
    assert gen.sampling_config().seed is None
