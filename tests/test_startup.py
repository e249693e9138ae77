"""Commands that do not train start without importing torch (checked in a fresh process, never timed)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

# Runs the real CLI entry point with the given arguments, then reports which heavy modules it imported.
PROBE = """
import json, sys
from rnnstudio.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "numpy", "PySide6", "safetensors.torch") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def run_probe(*argv: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    *rest, last = proc.stderr.strip().splitlines()
    return json.loads(last), proc.stdout


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["models"], ["models", "--json"]])
def test_commands_that_do_not_train_do_not_import_torch(argv):
    report, _ = run_probe(*argv)
    assert report["code"] in (0, None) and "torch" not in report["heavy"], report


def test_models_lists_a_saved_model_without_torch(tiny_corpus):
    from rnnstudio.trainer import TrainConfig, Trainer

    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell="gru", hidden_size=8,
                      batch_size=4, seq_len=8, max_steps=2, eval_every=0, device="cpu", threads=1, name="listed")
    list(Trainer(cfg).run())
    report, out = run_probe("models", "--json")
    assert report["code"] in (0, None) and "torch" not in report["heavy"], report
    assert [m["name"] for m in json.loads(out)] == ["listed"]


def test_version_is_the_packages_and_needs_no_torch():
    report, out = run_probe("--version")
    assert out.strip() == f"rnnstudio {importlib.metadata.version('rnnstudio')}"
    assert "torch" not in report["heavy"]


def test_the_plugin_api_loads_its_torch_parts_on_first_use():
    code = ("import sys, rnnstudio; before = 'torch' in sys.modules; from rnnstudio import Cell, Corpus, hookimpl; "
            "import torch; print(before, issubclass(Cell, torch.nn.Module), 'Cell' in dir(rnnstudio), "
            "sorted(rnnstudio.__all__) == sorted(set(rnnstudio.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["False", "True", "True", "True"]
    with pytest.raises(AttributeError):
        import rnnstudio

        rnnstudio.no_such_name  # noqa: B018
