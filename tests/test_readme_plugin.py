"""The README's example plugin is real: copy it into the user plugin folder and train with all three components."""

from __future__ import annotations

import re
from pathlib import Path

from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer

README = Path(__file__).resolve().parent.parent / "README.md"


def _example_plugin() -> str:
    section = README.read_text(encoding="utf-8").split("<!-- section:plugins -->")[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    [plugin] = [b for b in blocks if "@rnnstudio.hookimpl" in b]
    return plugin


def test_readme_plugin_registers_and_trains(rnnstudio_home):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "counting.py").write_text(_example_plugin(), encoding="utf-8")
    host = load_plugins()
    assert host.failures == []
    assert host.source_of("corpus", "counting").startswith("user:")
    assert "relu-rnn" in host.names("cell") and "top5-accuracy" in host.names("metric")
    cfg = TrainConfig(corpus="counting", corpus_options={"limit": 300}, cell="relu-rnn", hidden_size=24,
                      batch_size=8, seq_len=10, max_steps=40, save=False, eval_every=0)
    events = list(Trainer(cfg, host=host).run())
    final = events[-1]
    assert final.kind == "summary" and final.steps == 40
    assert 0.0 <= final.val["top5-accuracy"] <= 1.0
    assert final.val["top5-accuracy"] >= final.val["accuracy"]
