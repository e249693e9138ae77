"""Architecture contracts: the import-linter layers (Qt only under gui/, built-ins on the public API) and no unpickling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _sources(*folders):
    for folder in folders:
        yield from (ROOT / folder).rglob("*.py")


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    """The layers and forbidden contracts of pyproject.toml (import-linter sees relative and function-level imports)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_every_core_module_is_in_the_contracts():
    """A new module cannot slip past the contracts: each one outside cli, gui and __main__ is in the core layer."""
    modules = {p.stem if p.parent.name == "rnnstudio" else p.parent.name
               for p in (ROOT / "rnnstudio").glob("*") if (p.suffix == ".py" or (p / "__init__.py").exists())}
    core = modules - {"__init__", "__main__", "cli", "gui", "__pycache__"}
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    listed = {name.strip() for name in layers[-1].replace("|", ":").split(":")}
    assert core == listed, f"add to / remove from the core layer of pyproject.toml: {sorted(core ^ listed)}"
    for contract in _contracts():
        if contract["type"] == "forbidden":
            named = set(contract["source_modules"]) | set(contract["forbidden_modules"])
            assert {f"rnnstudio.{m}" for m in core} <= named, contract["name"]


def test_core_and_plugins_import_without_loading_qt():
    code = (
        "import sys, rnnstudio, rnnstudio.cli, rnnstudio.trainer, rnnstudio.checkpoint, rnnstudio.sampling;"
        "from rnnstudio.plugins import load_plugins; h = load_plugins();"
        "assert not h.failures, h.failures;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_no_unsafe_deserialisation():
    for path in _sources("rnnstudio", "plugins"):
        text = path.read_text(encoding="utf-8")
        assert "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
