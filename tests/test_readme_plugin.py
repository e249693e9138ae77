"""The plugin guide's examples are real: the counting plugin trains with all three components, and every
other example loads and keeps its contract."""

from __future__ import annotations

import re
from pathlib import Path

from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _plugin_blocks(text: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "@rnnstudio.hookimpl" in b]


def _example_plugin() -> str:
    section = GUIDE.read_text(encoding="utf-8").split("<!-- section:plugins -->")[1].split("<!-- /section:plugins -->")[0]
    [plugin] = _plugin_blocks(section)
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


def test_every_example_in_the_guide_loads_and_keeps_its_contract(rnnstudio_home, tmp_path, monkeypatch):
    from rnnstudio import testing

    blocks = _plugin_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) == 4  # counting (corpus, cell, metric), a tokenizer, an observer, a page
    kinds = set()
    for i, block in enumerate(blocks):
        path = tmp_path / f"example_{i}.py"
        path.write_text(block, encoding="utf-8")
        host = testing.load_plugin_file(path)
        assert host.failures == [], (i, host.failures)
        mine = {(reg.kind, reg.name): reg.cls for regs in host.registry.values() for reg in regs.values()
                if reg.source == f"user:{path}"}
        kinds |= {k for k, _ in mine} | ({"page"} if any(p.source == f"user:{path}" for p in host.pages) else set())
        for (kind, _name), cls in mine.items():
            check = {"cell": testing.check_cell, "metric": testing.check_metric,
                     "tokenizer": testing.check_tokenizer}.get(kind)
            if check:
                check(cls)
            if kind == "corpus":
                testing.check_corpus(cls, options={"limit": 50})
    assert kinds == {"corpus", "cell", "metric", "tokenizer", "observer", "page"}
    monkeypatch.chdir(tmp_path)  # the observer example writes val.csv into the current folder
    [obs_path] = [tmp_path / f"example_{i}.py" for i, b in enumerate(blocks) if "register_observers" in b]
    host = testing.load_plugin_file(obs_path)
    testing.train_briefly(host, corpus="python-docs", max_tokens=3000, steps=2, eval_every=1)
    assert (tmp_path / "val.csv").read_text().splitlines()[:2][0] == "step,perplexity"


def test_the_readmes_short_plugin_loads_and_trains_a_word_model(rnnstudio_home):
    readme = (GUIDE.parent.parent / "README.md").read_text(encoding="utf-8")
    [plugin] = _plugin_blocks(readme.split("<!-- example:readme-plugin -->")[1])
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "counting.py").write_text(plugin, encoding="utf-8")
    host = load_plugins()
    assert host.failures == [] and "counting" in host.names("corpus")
    cfg = TrainConfig(corpus="counting", corpus_options={"limit": 500}, tokens="word", hidden_size=16, batch_size=4,
                      seq_len=8, max_steps=10, save=False, eval_every=0)
    final = list(Trainer(cfg, host=host).run())[-1]
    assert final.kind == "summary" and final.steps == 10
