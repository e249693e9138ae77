"""The models folder as a list: each model checked from its JSON and safetensors headers (no torch), and
renaming, deleting and exporting folders."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import RNNStudioError
from ..fileio import atomic_write_json
from .format import (CONFIG, VOCAB, WEIGHTS, check_config, check_header_shapes, check_name, check_vocab,
                     expected_shapes, read_header, read_json, shapes)
from .lock import ModelLock


def read_config(path: Path) -> dict:
    """A model's config.json, checked field by field against the schema."""
    name = path.name
    if not path.is_dir():
        raise RNNStudioError(f"no model named {name!r} (looked in {path.parent}); see `rnnstudio models`")
    config = read_json(path / CONFIG, name, missing=f"; the folder {path} is not a complete model")
    return check_config(config, name)


def read_vocab_json(path: Path, vocab_size: int | None = None) -> dict:
    """vocab.json, checked (and against the config's vocab size when given)."""
    data = read_json(path / VOCAB, path.name, missing="; the model cannot decode without it")
    return check_vocab(data, path.name, vocab_size)


def check_model_folder(path: Path) -> dict:
    """The config of a model whose config, vocab and weights header agree; else a one-line RNNStudioError."""
    config = read_config(path)
    read_vocab_json(path, config["model"]["vocab_size"])
    header = read_header(path / WEIGHTS, path.name)
    check_header_shapes(shapes(header), expected_shapes(config["model"]), path.name, WEIGHTS)
    return config


@dataclass
class ModelInfo:
    name: str
    path: Path
    config: dict | None
    error: str | None = None

    def row(self) -> dict:
        if self.config is None:
            return {"name": self.name, "path": str(self.path), "error": self.error}
        m = self.config["model"]
        d, s = self.config.get("data") or {}, self.config.get("summary") or {}
        return {
            "name": self.name,
            "path": str(self.path),
            "corpus": d.get("corpus"),
            "tokens": d.get("tokenizer"),
            "cell": m.get("cell"),
            "hidden_size": m.get("hidden_size"),
            "num_layers": m.get("num_layers"),
            "vocab_size": m.get("vocab_size"),
            "parameters": s.get("parameters"),
            "steps": s.get("step"),
            "val_perplexity": s.get("val_perplexity"),
            "best_step": s.get("best_step"),  # None for models saved before it was recorded
            "best_val_perplexity": s.get("best_val_perplexity"),
            "date": s.get("updated"),
            "error": None,
        }


def list_models() -> list[ModelInfo]:
    """Every model folder; a broken one is listed with its error and never hides the others."""
    root = paths.models_dir()
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RNNStudioError(f"cannot list the models folder {root} ({exc.strerror or exc}); check its "
                             f"permissions") from None
    out = []
    for path in entries:
        try:
            out.append(ModelInfo(path.name, path, check_model_folder(path)))
        except RNNStudioError as exc:
            out.append(ModelInfo(path.name, path, None, str(exc)))
        except Exception as exc:  # a case the checks above missed still only marks this one model
            out.append(ModelInfo(path.name, path, None, f"model {path.name!r} could not be read "
                                                        f"({type(exc).__name__}: {exc})"))
    return out


# -- managing model folders (the GUI's models view) ------------------------------------

def _existing_idle_model(name: str) -> Path:
    path = paths.models_dir() / check_name(name)
    if not path.is_dir():
        raise RNNStudioError(f"no model named {name!r} (looked in {path.parent}); refresh the list")
    if ModelLock(name).busy():
        raise RNNStudioError(f"model {name!r} is being trained right now; stop the training first")
    return path


def rename_model(name: str, new_name: str) -> Path:
    """Rename a model folder; refuses while it trains or when the new name is taken."""
    path = _existing_idle_model(name)
    target = paths.models_dir() / check_name(new_name)
    if target.exists():
        raise RNNStudioError(f"a model named {new_name!r} already exists; pick another name")
    os.rename(path, target)
    try:  # keep config.json's own name in step with the folder
        config = json.loads((target / CONFIG).read_text(encoding="utf-8"))
        config["name"] = new_name
        if isinstance(config.get("train"), dict):
            config["train"]["name"] = new_name
        atomic_write_json(target / CONFIG, config)
    except (OSError, ValueError, TypeError, RecursionError):
        pass  # a broken model keeps its broken config; it is still renamed
    return target


def delete_model(name: str) -> None:
    """Remove a model folder for good; refuses while it trains."""
    path = _existing_idle_model(name)
    trash = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.rename(path, trash)  # atomic: the model vanishes from lists at once
    shutil.rmtree(trash, ignore_errors=True)


def export_model(name: str, dest: str | os.PathLike) -> Path:
    """Copy a model folder to ``dest``; a ``dest`` ending in ``.zip`` becomes a zip archive of the folder."""
    path = _existing_idle_model(name)
    dest = Path(dest).expanduser()
    if dest.suffix.lower() == ".zip":
        dest.parent.mkdir(parents=True, exist_ok=True)
        archive = shutil.make_archive(str(dest.with_suffix("")), "zip", root_dir=path.parent, base_dir=path.name)
        return Path(archive)
    if dest.exists():
        raise RNNStudioError(f"{dest} already exists; pick a new folder name to export to")
    shutil.copytree(path, dest)
    return dest
