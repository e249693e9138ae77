"""Model folders on disk: safetensors weights, JSON config and vocab, resumable training state, and a lock.

A model lives in ``models/NAME/``:
  config.json              architecture, data and training settings, and a summary (never executed)
  vocab.json               the tokens, in id order
  weights.safetensors      the latest weights (what generate and score load)
  best.safetensors         the weights with the best validation perplexity so far
  train_state.safetensors  weights, optimizer, RNG, hidden state and data position, for an exact resume
Each file is replaced atomically; a new folder appears only once it is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import paths
from .data import Vocab
from .errors import RNNStudioError
from .fileio import atomic_write, atomic_write_json
from .model import ModelConfig, RNNLanguageModel

FORMAT_VERSION = 1
CONFIG, VOCAB = "config.json", "vocab.json"
WEIGHTS, BEST, STATE = "weights.safetensors", "best.safetensors", "train_state.safetensors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise RNNStudioError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (up to 100, not starting with '.')"
        )
    return name


def model_path(name_or_path: str | os.PathLike) -> Path:
    """A model name (looked up under the models folder) or a path to a model folder."""
    p = Path(name_or_path)
    if isinstance(name_or_path, Path) or os.sep in str(name_or_path) or p.is_dir() and (p / CONFIG).exists():
        return p
    return paths.models_dir() / check_name(str(name_or_path))


# -- writing ----------------------------------------------------------------------------

def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict())


def save_weights(path: Path, model: torch.nn.Module, step: int) -> None:
    _save_tensors(path, _weights(model), {"format": "rnnstudio", "format_version": str(FORMAT_VERSION), "step": str(step)})


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(path: Path, model, optimizer, position: dict, hidden: list[torch.Tensor] | None) -> None:
    """Everything an exact resume needs, in one safetensors file (so it is self-consistent)."""
    tensors = {f"model.{k}": v for k, v in _weights(model).items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    for i, h in enumerate(hidden or []):
        tensors[f"hidden.{i}"] = h
    meta = {"position": position, "optimizer": opt_meta, "hidden": len(hidden or []), "format_version": FORMAT_VERSION}
    _save_tensors(path, tensors, {"format": "rnnstudio-train-state", "json": json.dumps(meta)})


@dataclass
class ModelWriter:
    """Writes one model's folder. The folder is created atomically on the first ``save``."""

    name: str
    path: Path
    config: dict
    vocab: Vocab
    created: bool = False

    @classmethod
    def create(cls, name: str, config: dict, vocab: Vocab, *, resume: bool) -> "ModelWriter":
        path = model_path(name)
        exists = path.exists()
        if exists and not resume:
            from .config import settings_error

            raise settings_error("a model named {model!r} already exists at {path}; use {resume} to continue it, "
                                 "or pick another {name}", model=name, path=path)
        _remove_leftovers(path)
        return cls(name, path, config, vocab, created=exists)

    def save(self, model, optimizer, position: dict, hidden, summary: dict, *, best: bool = False) -> None:
        step = position["step"]
        self.config["summary"] = {**self.config.get("summary", {}), **summary, "updated": _now()}
        with self._disk_errors():
            if not self.created:
                self._create_folder(model, optimizer, position, hidden, best)
                return
            save_train_state(self.path / STATE, model, optimizer, position, hidden)
            save_weights(self.path / WEIGHTS, model, step)
            if best:
                save_weights(self.path / BEST, model, step)
            atomic_write_json(self.path / CONFIG, self.config)

    def save_best(self, model, step: int, summary: dict) -> None:
        if not self.created:
            return  # the first full save writes best.safetensors too
        with self._disk_errors():
            save_weights(self.path / BEST, model, step)
            self.config["summary"] = {**self.config.get("summary", {}), **summary, "updated": _now()}
            atomic_write_json(self.path / CONFIG, self.config)

    @contextmanager
    def _disk_errors(self):
        """A failed write (disk full, read-only folder) is a user error; every file it touched is intact."""
        try:
            yield
        except OSError as exc:
            raise RNNStudioError(
                f"could not write the checkpoint to {self.path} ({exc.strerror or exc}); the previous "
                f"checkpoint is intact. Free some disk space or check the folder's permissions",
                source=f"model {self.name!r}") from None

    def _create_folder(self, model, optimizer, position, hidden, best) -> None:
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=parent))
        try:
            atomic_write_json(staging / VOCAB, self.vocab.to_json())
            save_train_state(staging / STATE, model, optimizer, position, hidden)
            save_weights(staging / WEIGHTS, model, position["step"])
            save_weights(staging / BEST, model, position["step"])
            self.config["summary"]["created"] = self.config["summary"]["updated"]
            atomic_write_json(staging / CONFIG, self.config)
            os.rename(staging, self.path)  # atomic: the folder appears complete, or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.created = True


def _remove_leftovers(path: Path) -> None:
    """Temp files and staging folders that a killed writer left behind (the caller holds the model's lock)."""
    prefix = f".{path.name}.new-"  # + mkdtemp's random suffix, which never has a dot
    leftovers = [p for p in path.parent.glob(prefix + "*") if "." not in p.name[len(prefix):]]
    if path.is_dir():
        leftovers += list(path.glob(".*.tmp"))
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- reading ----------------------------------------------------------------------------

def read_config(path: Path) -> dict:
    name = path.name
    cfg_file = path / CONFIG
    if not path.is_dir():
        raise RNNStudioError(f"no model named {name!r} (looked in {path.parent}); see `rnnstudio models`")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RNNStudioError(f"model {name!r}: {CONFIG} is missing; the folder {path} is not a complete model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RNNStudioError(f"model {name!r}: {CONFIG} is corrupt ({exc}); retrain or restore it") from None
    if not isinstance(config, dict) or "model" not in config:
        raise RNNStudioError(f"model {name!r}: {CONFIG} is not an RNN Studio model config")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RNNStudioError(
            f"model {name!r} was saved by a newer RNN Studio (format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade RNN Studio to open it"
        )
    return config


def read_vocab(path: Path) -> Vocab:
    try:
        return Vocab.from_json(json.loads((path / VOCAB).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise RNNStudioError(f"model {path.name!r}: {VOCAB} is missing; the model cannot decode without it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RNNStudioError(f"model {path.name!r}: {VOCAB} is corrupt ({exc})") from None


def read_tensors(path: Path, model_name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file: plain tensors only, so nothing in it can run code."""
    try:
        tensors = load_file(path)
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
    except FileNotFoundError:
        raise RNNStudioError(f"model {model_name!r}: {path.name} is missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RNNStudioError(
            f"model {model_name!r}: {path.name} is corrupt or not a safetensors file ({exc}); "
            f"retrain, or restore it from a backup"
        ) from None
    return tensors, metadata


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: RNNLanguageModel
    vocab: Vocab
    config: dict = field(repr=False)


def load_model(name_or_path, *, host=None, device: str | torch.device = "cpu", which: str = WEIGHTS) -> LoadedModel:
    """Rebuild a model from its folder alone: config + vocab + weights. Never unpickles anything."""
    from .plugins import default_host

    host = host or default_host()
    path = model_path(name_or_path)
    config = read_config(path)
    vocab = read_vocab(path)
    mcfg = ModelConfig.from_json(config["model"])
    if mcfg.vocab_size != len(vocab):
        raise RNNStudioError(f"model {path.name!r}: vocab.json has {len(vocab)} tokens but the model expects {mcfg.vocab_size}")
    try:
        cell_cls = host.cell(mcfg.cell)
    except RNNStudioError as exc:
        raise RNNStudioError(f"model {path.name!r} needs a cell plugin that is not loaded: {exc}") from None
    model = RNNLanguageModel(mcfg, cell_cls)
    tensors, _ = read_tensors(path / which, path.name)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RNNStudioError(f"model {path.name!r}: {which} does not match its config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return LoadedModel(path.name, path, model, vocab, config)


def load_train_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    tensors, metadata = read_tensors(path / STATE, path.name)
    if metadata.get("format") != "rnnstudio-train-state":
        raise RNNStudioError(f"model {path.name!r}: {STATE} is not an RNN Studio training state")
    try:
        meta = json.loads(metadata["json"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise RNNStudioError(f"model {path.name!r}: {STATE} has corrupt metadata ({exc})") from None
    version = meta.get("format_version", 0) if isinstance(meta, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RNNStudioError(
            f"model {path.name!r}: {STATE} was saved by a newer RNN Studio (format {version}; this one reads up "
            f"to {FORMAT_VERSION}); upgrade RNN Studio to resume it")
    return meta, tensors


def restore_train_state(meta: dict, tensors: dict, model, optimizer) -> list[torch.Tensor]:
    """Put weights, optimizer and RNG back; return the saved hidden state tensors."""
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return [tensors[f"hidden.{i}"] for i in range(meta.get("hidden", 0))]


@dataclass
class ModelInfo:
    name: str
    path: Path
    config: dict | None
    error: str | None = None

    def row(self) -> dict:
        if self.config is None:
            return {"name": self.name, "path": str(self.path), "error": self.error}
        m, d, s = self.config.get("model", {}), self.config.get("data", {}), self.config.get("summary", {})
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
            "date": s.get("updated"),
            "error": None,
        }


def list_models() -> list[ModelInfo]:
    """Every model folder; a broken one is listed with its error and never hides the others."""
    root = paths.models_dir()
    out = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            config = read_config(path)
            for required in (VOCAB, WEIGHTS):
                if not (path / required).is_file():
                    raise RNNStudioError(f"model {path.name!r}: {required} is missing")
            out.append(ModelInfo(path.name, path, config))
        except RNNStudioError as exc:
            out.append(ModelInfo(path.name, path, None, str(exc)))
    return out


# -- managing model folders (the GUI's models view) ------------------------------------

def _existing_idle_model(name: str) -> Path:
    path = paths.models_dir() / check_name(name)
    if not path.is_dir():
        raise RNNStudioError(f"no model named {name!r} (looked in {path.parent}); refresh the list")
    lock = ModelLock(name)
    owner = lock._owner() if lock.path.exists() else None
    if owner is not None and process_alive(owner):
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
    except (OSError, ValueError, TypeError):
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


# -- one trainer per model: a lock file -------------------------------------------------

class ModelLock:
    """``models/.NAME.lock`` holds the owner's pid; a lock whose process is gone is stale and cleared."""

    def __init__(self, name: str):
        self.path = paths.models_dir() / f".{check_name(name)}.lock"
        self.name = name
        self.held = False

    def acquire(self) -> "ModelLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and process_alive(owner):
                    who = "another machine" if owner == -1 else f"process {owner}"
                    raise RNNStudioError(
                        f"model {self.name!r} is already being trained by {who}; wait for it to finish, stop it, "
                        f"or pick another --name (if no training is running, delete {self.path})"
                    ) from None
                try:  # stale: its process is gone
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise RNNStudioError(f"cannot write to the models folder {self.path.parent} ({exc.strerror}); check its permissions and free space") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            self.held = True
            return self
        raise RNNStudioError(f"could not take the lock {self.path}; remove it if no training is running")

    def _owner(self) -> int | None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("host") not in (None, socket.gethostname()):
                return -1  # another machine's lock: assume it is alive
            return int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (-1 stands for another machine's: assumed alive)."""
    if pid == -1:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
