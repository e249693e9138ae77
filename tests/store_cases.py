"""Shared test helper: a small trained model and hostile copies of it, one per malformed field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from rnnstudio import paths


def train_good(corpus: Path, name: str = "good", steps: int = 6) -> Path:
    """A tiny model (and its run record), trained in-process."""
    from tiny_models import train_on_file

    train_on_file(corpus, name, cell="gru", hidden_size=16, batch_size=4, seq_len=8, max_steps=steps, eval_every=0,
                  threads=1, seed=1)
    return paths.models_dir() / name


def _edit_json(file: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = json.loads((folder / file).read_text(encoding="utf-8"))
        edit(data)
        (folder / file).write_text(json.dumps(data), encoding="utf-8")
    return apply


def _set(file: str, dotted: str, value) -> Callable[[Path], None]:
    def edit(data: dict) -> None:
        *parents, last = dotted.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return _edit_json(file, edit)


def _raw(file: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_text(text, encoding="utf-8")


def _truncate(file: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: len(data) // 2])
    return apply


def _into_folder(file: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / file).unlink()
        (folder / file).mkdir()
    return apply


# name -> (how to break a copy of the good model, what the error must say)
HOSTILE_FOLDERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "cfg-nested": (_raw("config.json", "[" * 100_000 + "]" * 100_000), "config.json is corrupt (nested too deeply)"),
    "cfg-null": (_raw("config.json", "null"), "config.json is not an RNN Studio model config"),
    "cfg-list": (_raw("config.json", "[1, 2]"), "config.json is not an RNN Studio model config"),
    "cfg-format-string": (_set("config.json", "format_version", "1"), "field format_version must be an integer"),
    "cfg-data-null": (_set("config.json", "data", None), "field data is missing or null"),
    "cfg-model-list": (_set("config.json", "model", [16]), "field model must be a JSON object"),
    "cfg-model-string": (_set("config.json", "model", "gru"), "field model must be a JSON object"),
    "cfg-summary-string": (_set("config.json", "summary", "great"), "field summary must be a JSON object"),
    "cfg-val-ppl-string": (_set("config.json", "summary.val_perplexity", "low"),
                           "field summary.val_perplexity must be a number"),
    "cfg-hidden-abc": (_set("config.json", "model.hidden_size", "abc"), "field model.hidden_size must be an integer"),
    "cfg-hidden-float": (_set("config.json", "model.hidden_size", 32.5), "field model.hidden_size must be an integer"),
    "cfg-hidden-1e9": (_set("config.json", "model.hidden_size", 1e9), "field model.hidden_size must be an integer"),
    "cfg-hidden-20000": (_set("config.json", "model.hidden_size", 20000), "weights.safetensors does not match"),
    "cfg-layers-1e6": (_set("config.json", "model.num_layers", 1_000_000), "field model.num_layers must be"),
    "cfg-dropout-x": (_set("config.json", "model.dropout", "x"), "field model.dropout must be a number"),
    "cfg-prefix-5": (_set("config.json", "data.sample_prefix", 5), "field data.sample_prefix must be text"),
    "cfg-train-lr-string": (_set("config.json", "train.lr", "fast"), "field train.lr must be"),
    "vocab-ints": (_set("vocab.json", "tokens", [0, 1, 2]), "vocab.json field tokens[0] must be text"),
    "vocab-null": (_raw("vocab.json", "null"), "vocab.json must be a JSON object"),
    "weights-truncated": (_truncate("weights.safetensors"), "weights.safetensors is corrupt"),
    "weights-folder": (_into_folder("weights.safetensors"), "weights.safetensors is a folder"),
}


def make_hostile_folders(good: Path, names=None) -> list[str]:
    """Copies of ``good``, each broken one way (see HOSTILE_FOLDERS); returns their names."""
    names = list(names or HOSTILE_FOLDERS)
    for name in names:
        target = good.parent / name
        shutil.copytree(good, target)
        HOSTILE_FOLDERS[name][0](target)
    return names


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real `rnnstudio` command in a fresh interpreter (RNNSTUDIO_HOME comes from the test's environment)."""
    return subprocess.run([sys.executable, "-m", "rnnstudio", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RNNSTUDIO_NO_PLUGINS": "1"}, **kwargs)


def assert_one_line_error(proc: subprocess.CompletedProcess, *must_contain: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert err.startswith("rnnstudio: error: ") and "\n" not in err and "Traceback" not in err, err
    for text in must_contain:
        assert text in err, err
    return err
