"""User-plugin safety from outside: cached bytecode is never run, and a plugin that exits is contained."""

from __future__ import annotations

import importlib._bootstrap_external as bootstrap
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from plugin_files import SHOUT_METRIC


def _cli(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "rnnstudio", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _plugins_folder(home):
    folder = home / "data" / "plugins"
    folder.mkdir(parents=True)
    return folder


def test_a_planted_pyc_matching_the_source_never_runs(rnnstudio_home, tmp_path):
    folder = _plugins_folder(rnnstudio_home)
    good = folder / "good.py"
    good.write_text(SHOUT_METRIC)
    good.chmod(0o644)
    marker = tmp_path / "pwned"
    evil = compile(f"open({str(marker)!r}, 'w').write('ran')\n", str(good), "exec")
    st = good.stat()
    pyc = importlib.util.cache_from_source(str(good))  # what the import system would look up
    os.makedirs(os.path.dirname(pyc), exist_ok=True)
    with open(pyc, "wb") as f:  # the header says "compiled from good.py as it is now"
        f.write(bootstrap._code_to_timestamp_pyc(evil, st.st_mtime, st.st_size))
    os.chmod(pyc, 0o666)
    if os.getuid() == 0:
        os.chown(pyc, 4242, 4242)  # foreign-owned as well, as in the report
    os.chmod(os.path.dirname(pyc), 0o777)
    before = sorted(os.listdir(os.path.dirname(pyc)))

    out = _cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert not marker.exists(), "the cached bytecode ran"
    assert "shout" in {m["name"] for m in info["metrics"]}  # the real source ran instead
    assert info["failed"] == []
    assert sorted(os.listdir(os.path.dirname(pyc))) == before  # and no bytecode was written


def test_a_plugin_that_exits_or_runs_argparse_at_import_is_contained(rnnstudio_home, tiny_corpus):
    folder = _plugins_folder(rnnstudio_home)
    (folder / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    (folder / "parser.py").write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--x')\n"
                                      "p.parse_args()\n")
    (folder / "good.py").write_text(SHOUT_METRIC)
    (folder / "hook_exits.py").write_text(textwrap.dedent('''
        import sys, rnnstudio
        @rnnstudio.hookimpl
        def register_cells(register):
            raise SystemExit("bye")
    '''))

    out = _cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    failed = {os.path.basename(f["plugin"]): f["error"] for f in json.loads(out.stdout)["failed"]}
    assert failed["quitter.py"] == "failed to import: called sys.exit(3)"
    assert failed["parser.py"].startswith("failed to import: called sys.exit(2)") and "unrecognized" in failed["parser.py"]
    assert failed["hook_exits.py"] == "register_cells raised called sys.exit('bye')"
    assert "usage:" not in out.stderr  # the plugin's argparse usage block is held back

    trained = _cli("train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}", "--hidden-size", "8",
                   "--batch-size", "4", "--seq-len", "8", "--max-steps", "3", "--device", "cpu", "--threads", "1",
                   "--name", "still-works", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["steps"] == 3 and summary["path"]


def test_the_desktop_app_starts_with_a_plugin_that_exits_at_import(rnnstudio_home, qtbot):
    pytest.importorskip("PySide6")
    from rnnstudio.gui.app import create_window

    (_plugins_folder(rnnstudio_home) / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    window = create_window(restore=False)
    qtbot.addWidget(window)
    assert window.statusBar().currentMessage().startswith("some plugins failed to load")
    assert [os.path.basename(f.plugin) for f in window.training.host.failures] == ["quitter.py"]
    assert "gru" in window.training.host.names("cell")  # the built-ins are all there
