"""The wheel really ships the built-in plugins and resources: install it elsewhere and run it from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, timeout=300)
    [wheel] = list((tmp / "dist").glob("rnnstudio-*.whl"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    return target


def _run(target, args, cwd, home):
    env = {**os.environ, "PYTHONPATH": str(target), "RNNSTUDIO_HOME": str(home)}
    script = target / "bin" / "rnnstudio"
    cmd = [sys.executable, str(script), *args] if script.exists() else [sys.executable, "-m", "rnnstudio", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_wheel_contains_plugins_and_resources(installed_wheel):
    pkg = installed_wheel / "rnnstudio"
    assert (pkg / "builtin_plugins" / "corpora.py").is_file()
    assert (pkg / "builtin_plugins" / "cells.py").is_file()
    resources = [p.name for p in (pkg / "resources").iterdir()]
    assert any(name.endswith(".qss") for name in resources), resources


def test_installed_wheel_runs_plugins_and_train_from_any_folder(installed_wheel, tmp_path, tiny_corpus):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([sys.executable, "-c", "import rnnstudio; print(rnnstudio.__file__)"], cwd=elsewhere,
                           env={**os.environ, "PYTHONPATH": str(installed_wheel)}, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(installed_wheel))  # the wheel, not the source checkout
    out = _run(installed_wheel, ["plugins", "--json"], elsewhere, tmp_path / "home")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["failed"] == []
    assert {"python-docs", "text-file", "time-machine"} <= {c["name"] for c in info["corpora"]}
    train = _run(installed_wheel, ["train", "--corpus", "text-file", "--corpus-opt", f"path={tiny_corpus}",
                                   "--hidden-size", "16", "--batch-size", "4", "--seq-len", "8", "--max-steps", "5",
                                   "--name", "w", "--json"], elsewhere, tmp_path / "home")
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout.splitlines()[-1])["steps"] == 5


def test_wheel_metadata_single_version_licence_and_gui_script(installed_wheel):
    import rnnstudio

    [info] = list(installed_wheel.glob("rnnstudio-*.dist-info"))
    metadata = (info / "METADATA").read_text(encoding="utf-8")
    assert f"\nVersion: {rnnstudio.__version__}\n" in metadata  # pyproject reads it from rnnstudio.__version__
    assert "License-Expression: MIT" in metadata and "Classifier: " in metadata
    licence = next(installed_wheel.rglob("LICENSE"))
    assert "MIT License" in licence.read_text(encoding="utf-8")
    entry_points = (info / "entry_points.txt").read_text(encoding="utf-8")
    assert "[gui_scripts]" in entry_points and "rnnstudio-gui = rnnstudio.gui.app:main" in entry_points
