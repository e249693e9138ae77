"""Architecture contracts: Qt only under rnnstudio/gui/, built-ins use the public API, nothing unpickles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(*folders):
    for folder in folders:
        yield from (ROOT / folder).rglob("*.py")


def test_qt_is_imported_only_under_gui():
    offenders = []
    for path in _sources("rnnstudio", "plugins"):
        if "gui" in path.relative_to(ROOT).parts:
            continue
        if any(n.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6") for n in _imports(path)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_core_and_plugins_import_without_loading_qt():
    code = (
        "import sys, rnnstudio, rnnstudio.cli, rnnstudio.trainer, rnnstudio.checkpoint, rnnstudio.sampling;"
        "from rnnstudio.plugins import load_plugins; h = load_plugins();"
        "assert not h.failures, h.failures;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_builtin_plugins_use_only_the_public_api():
    for path in _sources("plugins"):
        for name in _imports(path):
            if name.startswith("rnnstudio"):
                assert name == "rnnstudio", f"{path.name} imports {name}; built-ins may only use `import rnnstudio`"


def test_no_unsafe_deserialisation():
    for path in _sources("rnnstudio", "plugins"):
        text = path.read_text(encoding="utf-8")
        assert "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
