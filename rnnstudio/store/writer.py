"""Writing a model folder: safetensors weights and training state, JSON config and vocab, each file atomic."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..data import Vocab
from ..errors import RNNStudioError
from ..fileio import atomic_write, atomic_write_json
from .format import BEST, CONFIG, FORMAT_VERSION, STATE, TOKENIZER, VOCAB, WEIGHTS, describe_os_error, model_path


FILES = (VOCAB, TOKENIZER, STATE, WEIGHTS, BEST, CONFIG)  # a complete model folder


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _weights(model) -> dict[str, torch.Tensor]:
    """A module's weights, or a state dict as it is."""
    return dict(model) if isinstance(model, dict) else dict(model.state_dict())


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


def tokenizer_json(vocab: Vocab) -> dict:
    """tokenizer.json: what rebuilds the vocabulary's tokenizer, learnt state included."""
    tok = vocab.text_tokenizer
    return {"name": tok.name, "options": tok.options, "state": tok.state()}


@dataclass
class ModelWriter:
    """Writes one model's folder. The folder is created atomically on the first ``save``, and again, complete,
    if it disappears during training."""

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
            from ..config import settings_error  # flags in the CLI, the form's labels in the GUI

            raise settings_error("a model named {model!r} already exists at {path}; use {resume} to continue it, "
                                 "or pick another {name}", model=name, path=path)
        _remove_leftovers(path)
        return cls(name, path, config, vocab, created=exists)

    def save(self, model, optimizer, position: dict, hidden, summary: dict, *, best: bool = False) -> None:
        """One checkpoint; afterwards the folder is complete (recreated if it was deleted meanwhile), or this raises."""
        self.config["summary"] = {**self.config.get("summary", {}), **summary, "updated": _now()}
        with self._disk_errors():
            for _ in range(2):  # a second pass if the folder was deleted while this one wrote it
                if not self.created or not self.path.is_dir():
                    self._create_folder(model, optimizer, position, hidden)
                else:
                    self._write_files(model, optimizer, position, hidden, best)
                missing = [f for f in FILES if not (self.path / f).is_file()]
                if not missing:
                    return
                best = True
        raise RNNStudioError(
            f"the model folder {self.path} keeps changing while it is written ({', '.join(missing)} missing after "
            f"a checkpoint); stop whatever deletes it, then --resume", source=f"model {self.name!r}")

    def _write_files(self, model, optimizer, position: dict, hidden, best: bool) -> None:
        if not (self.path / VOCAB).is_file():
            atomic_write_json(self.path / VOCAB, self.vocab.to_json())
        if not (self.path / TOKENIZER).is_file():
            atomic_write_json(self.path / TOKENIZER, tokenizer_json(self.vocab))
        save_train_state(self.path / STATE, model, optimizer, position, hidden)
        save_weights(self.path / WEIGHTS, model, position["step"])
        if best or not (self.path / BEST).is_file():
            save_weights(self.path / BEST, model, position["step"])
        atomic_write_json(self.path / CONFIG, self.config)

    def save_best(self, model, step: int, summary: dict) -> None:
        if not self.created or not self.path.is_dir():
            return  # the next full save writes the whole folder, best.safetensors included
        with self._disk_errors():
            save_weights(self.path / BEST, model, step)
            self.config["summary"] = {**self.config.get("summary", {}), **summary, "updated": _now()}
            atomic_write_json(self.path / CONFIG, self.config)

    @contextmanager
    def _disk_errors(self):
        """A failed write (disk full, read-only folder) is a user error; every file it touched is intact."""
        try:
            yield
        except (OSError, SafetensorError) as exc:
            cause = exc if isinstance(exc, OSError) else _os_error_of(exc)
            what = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc).splitlines()[0]
            kept = "the previous checkpoint is intact" if self.created else "no model folder was created"
            raise RNNStudioError(
                f"could not write the checkpoint to {self.path} ({what}); {kept}; {describe_os_error(cause)}",
                source=f"model {self.name!r}") from None

    def _create_folder(self, model, optimizer, position, hidden) -> None:
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=parent))
        try:
            atomic_write_json(staging / VOCAB, self.vocab.to_json())
            atomic_write_json(staging / TOKENIZER, tokenizer_json(self.vocab))
            save_train_state(staging / STATE, model, optimizer, position, hidden)
            save_weights(staging / WEIGHTS, model, position["step"])
            save_weights(staging / BEST, model, position["step"])
            self.config["summary"].setdefault("created", self.config["summary"]["updated"])
            atomic_write_json(staging / CONFIG, self.config)
            os.rename(staging, self.path)  # atomic: the folder appears complete, or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.created = True


def _os_error_of(exc: SafetensorError) -> OSError:
    """safetensors reports an I/O failure as text ("... (os error 28)"): recover the errno."""
    text = str(exc)
    code = None
    if "(os error " in text:
        try:
            code = int(text.rsplit("(os error ", 1)[1].split(")", 1)[0])
        except ValueError:
            code = None
    return OSError(code, os.strerror(code) if code else text)


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
