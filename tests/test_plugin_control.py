"""Plugin discovery and control: distributions and versions, --disable, --strict, --debug, contested names."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from rnnstudio import cli, plugins
from rnnstudio.plugins import load_plugins

CORPUS_MODULE = '''
import rnnstudio

class Clash(rnnstudio.Corpus):
    name = "clash"
    description = "from {dist}"
    def read(self):
        return "{text} " * 200

@rnnstudio.hookimpl
def register_corpora(register):
    register(Clash)
'''


def _install(site, dist: str, version: str, ep_name: str, module: str, source: str) -> None:
    """A real installed distribution on sys.path: a module and a dist-info folder with the entry point."""
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[rnnstudio]\n{ep_name} = {module}\n", encoding="utf-8")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Two packages that both register corpus 'clash'; their entry-point names sort the other way round."""
    folder = tmp_path / "site"
    folder.mkdir()
    _install(folder, "rnnstudio-aaa", "1.0", "zed", "rnnstudio_aaa_mod", CORPUS_MODULE.format(dist="aaa", text="aaa"))
    _install(folder, "rnnstudio-zzz", "2.5", "alpha", "rnnstudio_zzz_mod", CORPUS_MODULE.format(dist="zzz", text="zzz"))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for mod in ("rnnstudio_aaa_mod", "rnnstudio_zzz_mod"):
        sys.modules.pop(mod, None)


def test_distributions_sort_the_entry_points_and_the_loser_is_recorded(site):
    host = load_plugins()
    assert host.source_of("corpus", "clash") == "entrypoint:zed"  # rnnstudio-aaa sorts first
    assert host.provenance("entrypoint:zed") == ("rnnstudio-aaa", "1.0")
    contest = host.contests[("corpus", "clash")]
    assert contest.winner == "entrypoint:zed" and contest.losers == ("entrypoint:alpha",)
    warning = host.contest_warning("corpus", "clash")
    assert "rnnstudio-aaa 1.0" in warning and "rnnstudio-zzz 2.5" in warning
    assert host.contest_warning("corpus", "text-file") is None


def test_plugins_json_shows_distribution_version_and_hooks(site, capsys):
    assert cli.main(["plugins", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    dists = {d["source"]: d for d in info["distributions"]}
    assert dists["entrypoint:alpha"]["distribution"] == "rnnstudio-zzz"
    assert dists["entrypoint:alpha"]["version"] == "2.5"
    assert dists["entrypoint:alpha"]["hooks"] == ["register_corpora"]
    assert dists["builtin:cells"]["distribution"] == "rnnstudio"
    [clash] = [c for c in info["corpora"] if c["name"] == "clash"]
    assert clash["distribution"] == "rnnstudio-aaa"
    assert info["contested"] == [{"kind": "corpus", "name": "clash", "winner": "entrypoint:zed",
                                  "rejected": ["entrypoint:alpha"]}]


def test_train_warns_once_about_a_contested_name_naming_both_packages(site, capsys):
    args = ["train", "--corpus", "clash", "--max-steps", "1", "--hidden-size", "8", "--batch-size", "2",
            "--seq-len", "4", "--eval-every", "0", "--sample-every", "0", "--name", "clashing"]
    assert cli.main(args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line and "clash" in line]
    assert len(lines) == 1
    assert "rnnstudio-aaa 1.0" in lines[0] and "rnnstudio-zzz 2.5" in lines[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_disable_one_plugin_by_distribution_name(site, capsys, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("RNNSTUDIO_DISABLE", "rnnstudio-aaa, other")
        argv = ["plugins", "--json"]
    else:
        argv = ["--disable", "rnnstudio-aaa", "plugins", "--json"]
    assert cli.main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    [clash] = [c for c in info["corpora"] if c["name"] == "clash"]
    assert clash["source"] == "entrypoint:alpha" and clash["description"] == "from zzz"
    assert info["disabled"] == ["entrypoint:zed"] and info["contested"] == []


def test_disable_matches_entry_point_and_user_file_names(rnnstudio_home, site):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "mine.py").write_text("raise RuntimeError('never run')\n")
    host = load_plugins(disable=["alpha", "mine", "nothing-called-this"])
    assert set(host.disabled) == {"entrypoint:alpha", f"user:{folder / 'mine.py'}"}
    assert host.failures == [] and host.contests == {}
    assert host.unmatched_disable == ["nothing-called-this"]


def test_strict_exits_non_zero_on_any_failure(rnnstudio_home, capsys):
    assert cli.main(["plugins", "--strict"]) == 0
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "broken.py").write_text("import sys\nsys.exit(4)\n")
    plugins.set_default_host(None)
    assert cli.main(["plugins", "--strict"]) == 1
    assert "broken.py" in capsys.readouterr().out
    plugins.set_default_host(None)
    assert cli.main(["plugins"]) == 0  # without --strict a failure is only listed
    plugins.set_default_host(None)
    assert cli.main(["--disable", "broken", "plugins", "--strict"]) == 0


@pytest.mark.parametrize("how", ["flag", "env", "off"])
def test_debug_prints_the_plugin_traceback(rnnstudio_home, capsys, monkeypatch, how):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "deep.py").write_text(textwrap.dedent('''
        def inner_helper_of_the_plugin():
            raise ValueError("bad idea")
        inner_helper_of_the_plugin()
    '''))
    argv = ["plugins"]
    if how == "flag":
        argv = ["--debug", "plugins"]
    elif how == "env":
        monkeypatch.setenv("RNNSTUDIO_DEBUG", "1")
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert ("Traceback" in err and "inner_helper_of_the_plugin" in err) == (how != "off")


def test_debug_prints_the_traceback_of_a_cell_that_raises_in_training(rnnstudio_home, capsys, tiny_corpus):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    (folder / "badcell.py").write_text(textwrap.dedent('''
        import rnnstudio

        class Bad(rnnstudio.Cell):
            name = "bad-cell"
            description = "raises in forward"
            def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
                super().__init__(input_size, hidden_size, num_layers, dropout, **options)
            def init_state(self, batch_size, device):
                return None
            def forward(self, x, state):
                return the_cells_own_failure()

        def the_cells_own_failure():
            raise ArithmeticError("cell broke")

        @rnnstudio.hookimpl
        def register_cells(register):
            register(Bad)
    '''))
    args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--cell", "bad-cell",
            "--max-steps", "2", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "4", "--eval-every", "0",
            "--sample-every", "0", "--name", "bad"]
    assert cli.main(args) == 2
    plain = capsys.readouterr().err
    assert "cell broke" in plain and "Traceback" not in plain
    plugins.set_default_host(None)
    assert cli.main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "the_cells_own_failure" in err
    assert any(line.startswith("rnnstudio: error:") and "cell broke" in line for line in err.splitlines())


CELL_MODULE = '''
import torch
import rnnstudio

class Provided(rnnstudio.Cell):
    name = "provided-gru"
    description = "a GRU from an installed package"
    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, dropout, **options)
        self.rnn = torch.nn.GRU(input_size, hidden_size, num_layers)
    def forward(self, inputs, state):
        return self.rnn(inputs, state)

@rnnstudio.hookimpl
def register_cells(register):
    register(Provided)
'''


def test_a_saved_model_names_the_package_that_provided_its_cell(tmp_path, monkeypatch, capsys, tiny_corpus):
    from rnnstudio.checkpoint import load_model

    folder = tmp_path / "cellsite"
    folder.mkdir()
    _install(folder, "rnnstudio-provided", "3.1", "provided", "rnnstudio_provided_mod", CELL_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--cell", "provided-gru",
            "--max-steps", "1", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "4", "--eval-every", "0",
            "--name", "provided"]
    assert cli.main(args) == 0
    loaded = load_model("provided", host=load_plugins())
    providers = loaded.config["providers"]
    assert providers["cell"] == {"name": "provided-gru", "source": "entrypoint:provided",
                                 "distribution": "rnnstudio-provided", "version": "3.1"}
    assert providers["tokenizer"]["distribution"] == "rnnstudio" and providers["corpus"]["name"] == "text-file"
    capsys.readouterr()

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])  # the package is gone
    sys.modules.pop("rnnstudio_provided_mod", None)
    plugins.set_default_host(None)
    assert cli.main(["generate", "--model", "provided", "--length", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a cell plugin that is not loaded" in err and "unknown cell 'provided-gru'" in err
    assert "rnnstudio-provided 3.1" in err and "pip install rnnstudio-provided" in err
    assert len(err.splitlines()) == 1


def test_gui_disable_reaches_the_apps_plugin_host(monkeypatch):
    seen = {}

    def fake_gui_main(no_plugins=False):
        seen["host"] = load_plugins(no_plugins=no_plugins)
        return 0

    import rnnstudio.gui.app as app

    monkeypatch.setattr(app, "main", fake_gui_main)
    monkeypatch.setenv("RNNSTUDIO_DISABLE", "observers")
    assert cli.main(["--disable", "metrics", "gui"]) == 0
    assert set(seen["host"].disabled) == {"builtin:metrics", "builtin:observers"}


def test_a_missing_user_tokenizer_is_named_with_its_file(rnnstudio_home, capsys, tiny_corpus):
    folder = rnnstudio_home / "data" / "plugins"
    folder.mkdir(parents=True)
    plugin = folder / "pairs.py"
    plugin.write_text(textwrap.dedent('''
        import rnnstudio

        class Pairs(rnnstudio.Tokenizer):
            name = "pairs"
            description = "two characters a token"
            whole_words = False
            def split(self, text):
                return [text[i:i + 2] for i in range(0, len(text), 2)]

        @rnnstudio.hookimpl
        def register_tokenizers(register):
            register(Pairs)
    '''))
    args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--tokens", "pairs",
            "--max-steps", "1", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "4", "--eval-every", "0",
            "--name", "paired"]
    assert cli.main(args) == 0
    plugin.unlink()
    plugins.set_default_host(None)
    capsys.readouterr()
    assert cli.main(["generate", "--model", "paired", "--length", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a tokenizer plugin that is not loaded" in err and f"user plugin file {plugin}" in err
    assert len(err.splitlines()) == 1
