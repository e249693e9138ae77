"""`rnnstudio new-plugin`: the package it writes installs with pip (offline) and its own tests pass as written."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata

import pytest

from rnnstudio import cli


def test_rnnstudio_testing_is_a_pytest_plugin():
    [ep] = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "rnnstudio.testing"]
    assert ep.dist.name == "rnnstudio"


def test_new_plugin_installs_and_its_tests_pass(tmp_path, capsys):
    pkg = tmp_path / "rnnstudio-demo-x"
    assert cli.main(["new-plugin", "demo-x", "--dir", str(pkg)]) == 0
    assert "pip install -e" in capsys.readouterr().out
    assert (pkg / "rnnstudio_demo_x" / "__init__.py").is_file() and (pkg / "tests" / "test_plugin.py").is_file()
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--prefix", str(prefix), "-e", str(pkg)], check=True, timeout=300,
                   capture_output=True)
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = {**os.environ, "RNNSTUDIO_HOME": str(tmp_path / "home")}
    env.pop("RNNSTUDIO_NO_PLUGINS", None)
    # site.addsitedir runs the editable install's .pth file, as the interpreter does for its own site-packages
    run_tests = (f"import site, sys; site.addsitedir({site!r}); import pytest; "
                 f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider']))")
    tests = subprocess.run([sys.executable, "-c", run_tests], cwd=pkg, env=env, capture_output=True, text=True,
                           timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout
    listing = subprocess.run([sys.executable, "-c", f"import site, sys; site.addsitedir({site!r}); "
                              f"from rnnstudio.cli import main; sys.exit(main(['plugins', '--strict']))"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "rnnstudio-demo-x 0.1.0" in listing.stdout and "demo-x-rnn" in listing.stdout


@pytest.mark.parametrize("name", ["Bad", "1x", "a_b", "a--b", ""])
def test_new_plugin_refuses_bad_names(tmp_path, capsys, name):
    assert cli.main(["new-plugin", name, "--dir", str(tmp_path / "p")]) == 2
    assert "lowercase letters" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_new_plugin_never_writes_into_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cli.main(["new-plugin", "demo", "--dir", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
