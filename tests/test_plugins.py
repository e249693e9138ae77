"""Plugin discovery: built-ins, entry points, the user folder, fault isolation and duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib import metadata

import pytest

import rnnstudio
from rnnstudio import plugins
from rnnstudio.errors import RNNStudioError
from rnnstudio.plugins import load_plugins

from plugin_files import SHOUT_METRIC

BUILTIN = {
    "corpus": {"python-docs", "text-file", "time-machine"},
    "cell": {"rnn-scratch", "gru"},
    "metric": {"perplexity", "cross-entropy", "bits-per-token", "nats-per-char", "bits-per-char", "accuracy"},
    "tokenizer": {"char", "word", "bpe"},
}


def _corpus_plugin(name: str, text: str = "abc abc abc"):
    class MyCorpus(rnnstudio.Corpus):
        description = "a test corpus"
        params = (rnnstudio.Param("repeat", "int", 2, min=1, help="times to repeat"),)

        def read(self):
            return text * self.options["repeat"]

    MyCorpus.name = name

    class Plugin:
        @rnnstudio.hookimpl
        def register_corpora(self, register):
            register(MyCorpus)

    return Plugin()


def test_builtins_are_registered_with_their_source():
    host = load_plugins(no_plugins=True)
    for kind, names in BUILTIN.items():
        assert names <= set(host.names(kind))
    assert host.source_of("cell", "gru") == "builtin:cells"
    assert host.failures == []


def test_programmatic_plugin_adds_a_component_with_declared_params():
    host = load_plugins(no_plugins=True, extra=[("test:mine", _corpus_plugin("mine"))])
    cls = host.corpus("mine")
    assert host.source_of("corpus", "mine") == "test:mine"
    corpus = cls(repeat="3")
    assert corpus.options == {"repeat": 3}
    assert corpus.read() == "abc abc abc" * 3
    with pytest.raises(RNNStudioError, match="repeat must be >= 1"):
        cls(repeat=0)
    with pytest.raises(RNNStudioError, match="has no option"):
        cls(nope=1)


def test_duplicate_name_is_rejected_naming_both_sources():
    host = load_plugins(no_plugins=True, extra=[("test:dup", _corpus_plugin("python-docs"))])
    assert host.source_of("corpus", "python-docs") == "builtin:corpora"
    [failure] = host.failures
    assert failure.plugin == "test:dup"
    assert "builtin:corpora" in failure.error and "test:dup" in failure.error and "duplicate" in failure.error


def test_hook_that_raises_is_reported_and_others_keep_working():
    class Broken:
        @rnnstudio.hookimpl
        def register_cells(self, register):
            raise RuntimeError("boom")

    host = load_plugins(no_plugins=True, extra=[("test:broken", Broken()), ("test:ok", _corpus_plugin("ok"))])
    assert "ok" in host.names("corpus")
    assert any(f.plugin == "test:broken" and "boom" in f.error for f in host.failures)
    assert set(host.names("cell")) >= BUILTIN["cell"]


def test_register_rejects_a_class_of_the_wrong_kind():
    class Wrong:
        @rnnstudio.hookimpl
        def register_metrics(self, register):
            register(dict)

    host = load_plugins(no_plugins=True, extra=[("test:wrong", Wrong())])
    assert any("subclass of rnnstudio.Metric" in f.error for f in host.failures)


def test_user_folder_plugins_load_and_broken_ones_are_reported(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "good.py").write_text(SHOUT_METRIC)
    (folder / "bad.py").write_text("import does_not_exist_anywhere\n")
    host = load_plugins(user_dir=folder)
    assert host.source_of("metric", "shout") == f"user:{folder / 'good.py'}"
    [failure] = [f for f in host.failures if "bad.py" in f.plugin]
    assert "does_not_exist_anywhere" in failure.error
    safe = load_plugins(no_plugins=True, user_dir=folder)
    assert "shout" not in safe.names("metric")


def test_world_writable_user_plugin_is_refused(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    marker = tmp_path / "ran"
    f = folder / "evil.py"
    f.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    f.chmod(0o666)
    host = load_plugins(user_dir=folder)
    assert any("world-writable" in x.error for x in host.failures)
    assert not marker.exists()


def test_entry_point_plugins_load_and_import_failures_are_isolated(monkeypatch):
    good = types.ModuleType("rnnstudio_test_ep_good")
    good.plugin = _corpus_plugin("from-ep")
    sys.modules["rnnstudio_test_ep_good"] = good
    eps = [
        metadata.EntryPoint("good", "rnnstudio_test_ep_good:plugin", "rnnstudio"),
        metadata.EntryPoint("broken", "rnnstudio_test_ep_missing_module", "rnnstudio"),
    ]

    def fake_entry_points(group=None, **kw):
        return eps if group == "rnnstudio" else []

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", fake_entry_points)
    try:
        host = load_plugins(user_dir=None)
        assert host.source_of("corpus", "from-ep") == "entrypoint:good"
        assert any(f.plugin == "entrypoint:broken" and "failed to import" in f.error for f in host.failures)
        assert "from-ep" not in load_plugins(no_plugins=True).names("corpus")
    finally:
        del sys.modules["rnnstudio_test_ep_good"]


def test_unknown_component_suggests_a_close_name():
    host = load_plugins(no_plugins=True)
    with pytest.raises(RNNStudioError, match="Did you mean 'gru'"):
        host.cell("gur")


def test_cli_plugins_json_shows_failed_user_plugin(rnnstudio_home):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "oops.py").write_text("raise ValueError('broken on purpose')\n")
    out = subprocess.run([sys.executable, "-m", "rnnstudio", "plugins", "--json"], capture_output=True, text=True,
                         check=True)
    info = json.loads(out.stdout)
    assert {c["name"] for c in info["corpora"]} >= BUILTIN["corpus"]
    assert {c["name"] for c in info["cells"]} >= BUILTIN["cell"]
    assert {c["name"] for c in info["metrics"]} >= BUILTIN["metric"]
    assert any("oops.py" in f["plugin"] and "broken on purpose" in f["error"] for f in info["failed"])
    text_file = next(c for c in info["corpora"] if c["name"] == "text-file")
    assert {p["name"]: p["type"] for p in text_file["params"]} == {"path": "path", "encoding": "str", "errors": "choice"}
    safe = subprocess.run([sys.executable, "-m", "rnnstudio", "--no-plugins", "plugins", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(safe.stdout)["failed"] == []
