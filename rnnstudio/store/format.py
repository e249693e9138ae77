"""The model folder's file format: names, the safetensors header, and one schema for every JSON field read back.

Nothing here imports torch: ``rnnstudio models`` lists and checks folders with ``struct`` and ``json`` only.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any, Callable

from .. import paths
from ..errors import RNNStudioError

FORMAT_VERSION = 1
CONFIG, VOCAB = "config.json", "vocab.json"
TOKENIZER = "tokenizer.json"  # the tokenizer plugin's name, options and learnt state (absent in older models)
WEIGHTS, BEST, STATE = "weights.safetensors", "best.safetensors", "train_state.safetensors"
UNK = "<unk>"
MAX_JSON_BYTES = 256 * 2**20  # a word vocabulary of millions of tokens fits; a hostile file is refused unread
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RNNStudioError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (up to 100, not starting with '.')"
        )
    return name


def model_path(name_or_path: str | os.PathLike) -> Path:
    """A model name (looked up under the models folder) or a path to a model folder."""
    if "\x00" in os.fspath(name_or_path):
        raise RNNStudioError(f"invalid model name or path {os.fspath(name_or_path)!r}: it contains a NUL character")
    p = Path(name_or_path)
    if isinstance(name_or_path, Path) or os.sep in str(name_or_path) or p.is_dir() and (p / CONFIG).exists():
        return p
    return paths.models_dir() / check_name(str(name_or_path))


# -- reading files without surprises ------------------------------------------------------

def _open_regular(path: Path, model: str, what: str) -> int:
    """An fd for ``path`` if it is a regular file: a FIFO or a device never blocks or streams forever."""
    file = f"model {model!r}: {path.name}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RNNStudioError(f"{file} is missing{what}") from None
    except IsADirectoryError:
        raise RNNStudioError(f"{file} is a folder, not a file; remove it, or restore the file from a backup") from None
    except OSError as exc:
        raise RNNStudioError(f"model {model!r}: cannot read {path.name} ({exc.strerror or exc}); "
                             f"check the file's permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise RNNStudioError(f"{file} is {kind}; remove it, or restore the file from a backup")
    return fd


def _read_fd(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_json(path: Path, model: str, *, missing: str = "") -> Any:
    """A JSON file's value; any problem is a one-line RNNStudioError that names the model and the file."""
    fd = _open_regular(path, model, missing)
    corrupt = f"model {model!r}: {path.name} is corrupt"
    try:
        size = os.fstat(fd).st_size
        if size > MAX_JSON_BYTES:
            raise RNNStudioError(f"model {model!r}: {path.name} is {size:,} bytes, too big to be an RNN Studio file; "
                                 f"restore it from a backup")
        try:
            data = _read_fd(fd, size + 1)
        except OSError as exc:
            raise RNNStudioError(f"model {model!r}: cannot read {path.name} ({exc.strerror or exc}); "
                                 f"check the disk and the file's permissions") from None
    finally:
        os.close(fd)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RNNStudioError(f"{corrupt} (not UTF-8 text: {exc.reason} at byte {exc.start}); restore it from a "
                             f"backup, or retrain") from None
    except RecursionError:
        raise RNNStudioError(f"{corrupt} (nested too deeply); restore it from a backup, or retrain") from None
    except ValueError as exc:
        raise RNNStudioError(f"{corrupt} (not JSON: {exc}); restore it from a backup, or retrain") from None


def read_json_text(text, model: str, what: str) -> Any:
    """JSON held in a string (safetensors metadata); a bad one is a one-line RNNStudioError."""
    if not isinstance(text, str):
        raise RNNStudioError(f"model {model!r}: {what} is missing; restore the file from a backup")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RNNStudioError(f"model {model!r}: {what} is corrupt ({type(exc).__name__}); restore the file "
                             f"from a backup") from None


def read_header(path: Path, model: str) -> dict[str, dict]:
    """A safetensors file's header, checked against the file's size: ``{tensor: {dtype, shape, data_offsets}}``
    plus ``__metadata__``. Reads 8 bytes and the header only, so a truncated or hostile file costs nothing."""
    fd = _open_regular(path, model, "")
    bad = f"model {model!r}: {path.name} is corrupt or not a safetensors file"
    try:
        size = os.fstat(fd).st_size
        head = _read_fd(fd, 8)
        if len(head) < 8:
            raise RNNStudioError(f"{bad} ({size} bytes, shorter than a header); retrain, or restore it from a backup")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise RNNStudioError(f"{bad} (its header claims {n:,} bytes, the file has {size:,}: truncated?); "
                                 f"retrain, or restore it from a backup")
        raw = _read_fd(fd, n)
    except OSError as exc:
        raise RNNStudioError(f"model {model!r}: cannot read {path.name} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RNNStudioError(f"{bad} (unreadable header: {type(exc).__name__}); retrain, or restore it from a "
                             f"backup") from None
    if not isinstance(header, dict):
        raise RNNStudioError(f"{bad} (its header is not a JSON object)")
    data_size, end = size - 8 - n, 0
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise RNNStudioError(f"{bad} (its metadata is not a map of strings)")
            continue
        if not isinstance(entry, dict):
            raise RNNStudioError(f"{bad} (tensor {key!r} has no dtype, shape and offsets)")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES or not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise RNNStudioError(f"{bad} (tensor {key!r} has a malformed dtype, shape or data_offsets)")
        start, stop = offsets
        if not 0 <= start <= stop <= data_size:
            raise RNNStudioError(f"{bad} (tensor {key!r} lies past the end of the file: truncated?); retrain, or "
                                 f"restore it from a backup")
        if stop - start != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise RNNStudioError(f"{bad} (tensor {key!r}: its shape {shape} does not fit its {stop - start} bytes)")
        end = max(end, stop)
    if end != data_size:
        raise RNNStudioError(f"{bad} ({data_size:,} bytes of data, its tensors end at {end:,}: truncated or "
                             f"padded); retrain, or restore it from a backup")
    return header


def _int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def shapes(header: dict, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the tensors whose names start with ``prefix`` (the prefix removed)."""
    return {k[len(prefix):]: tuple(v["shape"]) for k, v in header.items()
            if k != "__metadata__" and k.startswith(prefix)}


# -- one schema for the JSON fields a model folder holds ------------------------------------

class Field:
    """One JSON field: its type(s), range and choices; ``check`` gives the problem in words, or None."""

    def __init__(self, kind: str, *, optional: bool = False, min: float | None = None, max: float | None = None,
                 below: float | None = None, choices: tuple = (), nonempty: bool = False):
        self.kind, self.optional, self.choices, self.nonempty = kind, optional, choices, nonempty
        self.min, self.max, self.below = min, max, below

    def check(self, value) -> str | None:
        if value is None:
            return None if self.optional else "is missing or null"
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str),
              "dict": lambda v: isinstance(v, dict),
              "list": lambda v: isinstance(v, list)}[self.kind](value)
        if not ok:
            return f"must be {_WORDS[self.kind]}, got {_short(value)}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {_short(value)}"
        if self.nonempty and not value:
            return "must not be empty"
        if self.kind in ("int", "number") and (self.min, self.max, self.below) != (None, None, None):
            if isinstance(value, float) and math.isnan(value):
                return f"must be {_range(self)}, got NaN"  # NaN fails every range
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max) \
                    or (self.below is not None and value >= self.below):
                return f"must be {_range(self)}, got {_short(value)}"
        return None


_WORDS = {"int": "an integer", "number": "a number", "str": "text", "dict": "a JSON object", "list": "a list"}


def _range(f: Field) -> str:
    parts = [f">= {f.min:g}" if f.min is not None else "", f"<= {f.max:g}" if f.max is not None else "",
             f"< {f.below:g}" if f.below is not None else ""]
    return " and ".join(p for p in parts if p)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _model_fields() -> dict[str, Field]:
    """The architecture's fields, with the limits TrainConfig declares for the same settings."""
    from ..config import TrainConfig
    from ..settings import info

    def like(name: str, **extra) -> Field:
        m = info(TrainConfig, name).meta
        kind = "number" if info(TrainConfig, name).kind == "float" else info(TrainConfig, name).kind
        return Field(kind, min=m.min, max=m.max, below=m.below, choices=tuple(m.choices), **extra)

    return {"cell": Field("str", nonempty=True), "vocab_size": Field("int", min=2, max=2**31 - 1),
            "hidden_size": like("hidden_size"), "num_layers": like("num_layers"), "dropout": like("dropout"),
            "encoding": like("encoding"), "embed_size": like("embed_size", optional=True),
            "cell_options": Field("dict", optional=True)}


SCHEMA: dict[str, dict[str, Field]] = {
    "config": {"format_version": Field("int", optional=True, min=0), "name": Field("str", optional=True),
               "model": Field("dict"), "data": Field("dict"), "train": Field("dict", optional=True),
               "summary": Field("dict", optional=True)},
    "data": {"corpus": Field("str", optional=True), "corpus_options": Field("dict", optional=True),
             "tokenizer": Field("str", optional=True, nonempty=True),
             "preprocess": Field("str", optional=True), "min_freq": Field("int", optional=True, min=0),
             "max_tokens": Field("int", optional=True, min=0),
             "val_fraction": Field("number", optional=True, min=0, below=1),
             "sample_prefix": Field("str", optional=True), "source": Field("str", optional=True)},
    "summary": {"parameters": Field("int", optional=True, min=0), "step": Field("int", optional=True, min=0),
                "epoch": Field("int", optional=True, min=0),
                "val_perplexity": Field("number", optional=True), "train_perplexity": Field("number", optional=True),
                "tokens_per_s": Field("number", optional=True), "device": Field("str", optional=True),
                "updated": Field("str", optional=True), "created": Field("str", optional=True),
                "best_step": Field("int", optional=True, min=0), "best_val_perplexity": Field("number", optional=True)},
    "vocab": {"tokens": Field("list"), "tokenizer": Field("str", optional=True, nonempty=True)},
    "tokenizer": {"name": Field("str", nonempty=True), "options": Field("dict"), "state": Field("dict")},
    "train_state": {"format_version": Field("int", optional=True, min=0), "position": Field("dict"),
                    "optimizer": Field("dict"), "hidden": Field("int", optional=True, min=0, max=64)},
    "position": {"step": Field("int", min=0), "epoch": Field("int", min=0), "batch": Field("int", min=0),
                 "best_val": Field("number", optional=True), "first_loss": Field("number", optional=True)},
    "optimizer": {"param_groups": Field("list"), "scalars": Field("dict", optional=True)},
}


def check_fields(data: dict, section: str, fail: Callable[[str], RNNStudioError], prefix: str = "") -> None:
    """Raise ``fail("field X must be ...")`` for the first field of ``data`` that breaks ``SCHEMA[section]``."""
    fields = _model_fields() if section == "model" else SCHEMA[section]
    for name, spec in fields.items():
        problem = spec.check(data.get(name))
        if problem:
            raise fail(f"field {prefix}{name} {problem}")


def _newer(model: str, what: str, version, action: str) -> RNNStudioError:
    return RNNStudioError(f"model {model!r}: {what} was saved by a newer RNN Studio (format {version}; this one "
                          f"reads up to {FORMAT_VERSION}); upgrade RNN Studio to {action} it")


def _check_version(data: dict, fail, newer) -> None:
    """The format version first: a newer file is "upgrade", whatever else it holds."""
    problem = Field("int", optional=True, min=0).check(data.get("format_version"))
    if problem:
        raise fail(f"field format_version {problem}")
    if (data.get("format_version") or 0) > FORMAT_VERSION:
        raise newer(data["format_version"])


def check_config(config, model: str) -> dict:
    """config.json against the schema: every field by name, then the train settings against TrainConfig's."""
    def fail(text: str) -> RNNStudioError:
        return RNNStudioError(f"model {model!r}: {CONFIG} {text}; fix the file or restore it from a backup")

    if not isinstance(config, dict) or "model" not in config:
        raise RNNStudioError(f"model {model!r}: {CONFIG} is not an RNN Studio model config (no \"model\" section)")
    _check_version(config, fail, lambda v: _newer(model, CONFIG, v, "open"))
    check_fields(config, "config", fail)
    check_fields(config["model"], "model", fail, "model.")
    for section in ("data", "summary"):
        if isinstance(config.get(section), dict):
            check_fields(config[section], section, fail, section + ".")
    if isinstance(config.get("train"), dict):
        _check_train(config["train"], fail)
    return config


def _check_train(train: dict, fail: Callable[[str], RNNStudioError]) -> None:
    from ..config import TrainConfig
    from ..settings import SettingError, check, schema

    known = {s.name for s in schema(TrainConfig)}
    try:
        check(TrainConfig.from_json({k: v for k, v in train.items() if k in known}))
    except SettingError as exc:
        names = {s.name: f"train.{s.name}" for s in schema(TrainConfig)}
        raise fail("field " + exc.template.format_map({**names, **exc.values})) from None


def check_vocab(data, model: str, vocab_size: int | None = None) -> dict:
    """vocab.json: ``{"tokens": ["<unk>", ...], "tokenizer": "char"}``, each token text and listed once."""
    def fail(text: str) -> RNNStudioError:
        return RNNStudioError(f"model {model!r}: {VOCAB} {text}; restore it from a backup, or retrain")

    if not isinstance(data, dict):
        raise fail(f"must be a JSON object, got {type(data).__name__}")
    check_fields(data, "vocab", fail)
    tokens = data["tokens"]
    bad = next((i for i, t in enumerate(tokens) if not isinstance(t, str)), None)
    if bad is not None:
        raise fail(f"field tokens[{bad}] must be text, got {_short(tokens[bad])}")
    if not tokens or tokens[0] != UNK:
        raise fail(f"field tokens must start with {UNK!r}")
    if len(set(tokens)) != len(tokens):
        raise fail("field tokens lists a token twice")
    if vocab_size is not None and len(tokens) != vocab_size:
        raise RNNStudioError(f"model {model!r}: {VOCAB} has {len(tokens)} tokens but the model expects {vocab_size}")
    return data


def check_tokenizer(data, model: str) -> dict:
    """tokenizer.json: ``{"name": "bpe", "options": {...}, "state": {...}}`` (the state is the plugin's own)."""
    def fail(text: str) -> RNNStudioError:
        return RNNStudioError(f"model {model!r}: {TOKENIZER} {text}; restore it from a backup, or retrain")

    if not isinstance(data, dict):
        raise fail(f"must be a JSON object, got {type(data).__name__}")
    check_fields(data, "tokenizer", fail)
    return data


def check_train_meta(meta, model: str) -> dict:
    """train_state.safetensors' JSON metadata: the data position, the optimizer's settings, the hidden count."""
    def fail(text: str) -> RNNStudioError:
        return RNNStudioError(f"model {model!r}: {STATE} metadata {text}; resume is not possible, but generate "
                              f"still works from {WEIGHTS} (or train a new model)")

    if not isinstance(meta, dict):
        raise fail(f"must be a JSON object, got {type(meta).__name__}")
    _check_version(meta, fail, lambda v: _newer(model, STATE, v, "resume"))
    check_fields(meta, "train_state", fail)
    check_fields(meta["position"], "position", fail, "position.")
    check_fields(meta["optimizer"], "optimizer", fail, "optimizer.")
    if not all(isinstance(g, dict) for g in meta["optimizer"]["param_groups"]):
        raise fail("field optimizer.param_groups must be a list of JSON objects")
    return meta


def expected_shapes(model_cfg: dict) -> dict[str, tuple[int, ...]]:
    """The shapes that every model of this config has, whatever its cell: the output head and the embedding."""
    v, h = model_cfg["vocab_size"], model_cfg["hidden_size"]
    out = {"head.weight": (v, h), "head.bias": (v,)}
    if model_cfg.get("encoding") == "embedding":
        out["embedding.weight"] = (v, model_cfg.get("embed_size") or h)
    return out


def check_header_shapes(found: dict[str, tuple], expected: dict[str, tuple], model: str, file: str) -> None:
    """Every tensor the config implies is in the file with its shape (before anything is allocated)."""
    for key, shape in expected.items():
        if key not in found:
            raise RNNStudioError(f"model {model!r}: {file} does not match its config (it has no tensor {key!r}); "
                                 f"restore the weights or the config from a backup")
        if tuple(found[key]) != tuple(shape):
            raise RNNStudioError(f"model {model!r}: {file} does not match its config ({key} is {tuple(found[key])} "
                                 f"in the file, the config implies {tuple(shape)}); restore the weights or the "
                                 f"config from a backup")


def describe_os_error(exc: OSError) -> str:
    """What to do about a failed write, by its cause (not every OSError is a full disk)."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full; free some disk space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the folder's permissions (or a read-only disk)"
    if code in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY):
        return "a file of the model is a folder (or the other way round); remove it"
    return "check the disk and the folder's permissions"
