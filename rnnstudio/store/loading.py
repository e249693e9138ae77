"""Loading a model folder: every shape the config implies is checked against the safetensors header first,
so a hostile config allocates nothing and a mismatch is a one-line error. Nothing is ever unpickled."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..data import Vocab
from ..errors import RNNStudioError
from ..model import ModelConfig, RNNLanguageModel
from .catalogue import read_config, read_vocab_json
from .format import (BEST, STATE, TOKENIZER, VOCAB, WEIGHTS, check_header_shapes, check_tokenizer, check_train_meta,
                     expected_shapes, model_path, read_header, read_json, read_json_text, shapes)


def read_vocab(path: Path, vocab_size: int | None = None, *, host=None) -> Vocab:
    """The vocabulary with its tokenizer, rebuilt from tokenizer.json (models saved before it existed: the
    plugin named in vocab.json, with its default options)."""
    from ..plugins import default_host

    data = read_vocab_json(path, vocab_size)
    name = path.name
    saved = check_tokenizer(read_json(path / TOKENIZER, name), name) if (path / TOKENIZER).is_file() else None
    tokenizer_name = saved["name"] if saved else data.get("tokenizer") or "char"
    if saved and data.get("tokenizer") not in (None, tokenizer_name):
        raise RNNStudioError(f"model {name!r}: {VOCAB} names tokenizer {data.get('tokenizer')!r} but {TOKENIZER} "
                             f"names {tokenizer_name!r}; restore the files from a backup, or retrain")
    try:
        cls = (host or default_host()).get("tokenizer", tokenizer_name)
    except RNNStudioError as exc:
        from ..plugins import provider_hint

        try:
            providers = read_json(path / "config.json", name).get("providers")
        except (RNNStudioError, AttributeError):
            providers = None
        hint = provider_hint(providers, "tokenizer")
        raise RNNStudioError(f"model {name!r} needs a tokenizer plugin that is not loaded: {exc}{hint}") from None
    options = saved["options"] if saved else {}
    try:
        cls.resolve_options(options)
    except RNNStudioError as exc:
        raise RNNStudioError(f"model {name!r}: {TOKENIZER} field options: {exc}") from None
    tokenizer = cls(**options)
    if saved and saved["state"]:
        try:
            tokenizer.load_state(saved["state"])
        except ValueError as exc:
            raise RNNStudioError(f"model {name!r}: {TOKENIZER} holds no valid {tokenizer_name!r} state ({exc}); "
                                 f"restore it from a backup, or retrain") from None
    return Vocab(list(data["tokens"]), tokenizer)


def read_tensors(path: Path, model_name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file: plain tensors only, so nothing in it can run code. The header is checked first."""
    header = read_header(path, model_name)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RNNStudioError(
            f"model {model_name!r}: {path.name} is corrupt or not a safetensors file ({exc}); "
            f"retrain, or restore it from a backup"
        ) from None
    return tensors, dict(header.get("__metadata__") or {})


def _cell_class(host, mcfg: ModelConfig, name: str, config: dict | None = None):
    from ..plugins import provider_hint

    try:
        return host.cell(mcfg.cell)
    except RNNStudioError as exc:
        hint = provider_hint((config or {}).get("providers"), "cell")
        raise RNNStudioError(f"model {name!r} needs a cell plugin that is not loaded: {exc}{hint}") from None


def _cell_options(cell_cls, mcfg: ModelConfig, name: str) -> dict:
    try:
        return cell_cls.resolve_options(mcfg.cell_options)
    except RNNStudioError as exc:
        raise RNNStudioError(f"model {name!r}: config.json field model.cell_options: {exc}") from None


def _build(mcfg: ModelConfig, cell_cls, name: str) -> RNNLanguageModel:
    try:
        return RNNLanguageModel(mcfg, cell_cls)
    except RNNStudioError:
        raise
    except Exception as exc:  # the sizes matched the file, so the cell plugin itself failed
        raise RNNStudioError(f"the cell plugin could not build model {name!r} ({type(exc).__name__}: {exc})",
                             source=f"cell {mcfg.cell!r}") from None


def _meta_model(mcfg: ModelConfig, cell_cls) -> RNNLanguageModel | None:
    """The model built on the meta device (no memory), to read the shapes it expects; None if the cell can't."""
    try:
        with torch.device("meta"):
            return RNNLanguageModel(mcfg, cell_cls)
    except RNNStudioError:
        raise
    except Exception:
        return None  # a cell that cannot be built on "meta": the full load still compares every tensor


def _implied_numbers(mcfg: ModelConfig, cell_cls) -> int | None:
    """The model's weight count, extrapolated from 1, 2 and 3 layers on the meta device (building thousands of
    layers, even on "meta", takes seconds); None when the cell's size is not linear in its layers."""
    if mcfg.num_layers <= 3:
        return None
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. dropout with one layer
        for layers in (1, 2, 3):
            small = _meta_model(replace(mcfg, num_layers=layers), cell_cls)
            if small is None:
                return None
            counts.append(sum(t.numel() for t in small.state_dict().values()))
    per_layer = counts[1] - counts[0]
    if counts[2] - counts[1] != per_layer:
        return None
    return counts[0] + (mcfg.num_layers - 1) * per_layer


def check_weights_match(found: dict[str, tuple], mcfg: ModelConfig, cell_cls, name: str, file: str):
    """Every tensor of the model of ``mcfg`` is in ``found`` with its shape, checked before anything is allocated.
    Returns the meta-device model (or None)."""
    check_header_shapes(found, expected_shapes(mcfg.to_json()), name, file)
    implied, held = _implied_numbers(mcfg, cell_cls), sum(math.prod(s) for s in found.values())
    if implied is not None and implied != held:  # e.g. num_layers: 10000 over a 1-layer file, seen in milliseconds
        raise RNNStudioError(f"model {name!r}: {file} does not match its config ({mcfg.num_layers} layers of "
                             f"{mcfg.hidden_size} imply {implied:,} weights, the file holds {held:,}); restore the "
                             f"weights or the config from a backup")
    meta = _meta_model(mcfg, cell_cls)
    if meta is not None:
        wanted = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
        check_header_shapes(found, wanted, name, file)
        extra = sorted(set(found) - set(wanted))
        if extra:
            raise RNNStudioError(f"model {name!r}: {file} does not match its config (unexpected tensor "
                                 f"{extra[0]!r}); restore the weights or the config from a backup")
    return meta


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: RNNLanguageModel
    vocab: Vocab
    config: dict = field(repr=False)


def load_model(name_or_path, *, host=None, device: str | torch.device = "cpu", weights: str = "best",
               which: str | None = None) -> LoadedModel:
    """Rebuild a model from its folder alone: config + vocab + weights. Never unpickles anything.

    ``weights`` "best" reads best.safetensors (the best-by-validation weights; weights.safetensors when an
    older folder has none), "last" the last step's; ``which`` names the file outright.
    """
    from ..plugins import default_host

    host = host or default_host()
    path = model_path(name_or_path)
    if which is None:
        if weights not in ("best", "last"):
            raise RNNStudioError(f"weights must be best or last, not {weights!r}")
        which = BEST if weights == "best" and (path / BEST).is_file() else WEIGHTS
    config = read_config(path)
    vocab = read_vocab(path, config["model"]["vocab_size"], host=host)
    mcfg = ModelConfig.from_json(config["model"])
    cell_cls = _cell_class(host, mcfg, path.name, config)
    _cell_options(cell_cls, mcfg, path.name)  # checked, as training checks them
    check_weights_match(shapes(read_header(path / which, path.name)), mcfg, cell_cls, path.name, which)
    model = _build(mcfg, cell_cls, path.name)
    tensors, _ = read_tensors(path / which, path.name)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RNNStudioError(f"model {path.name!r}: {which} does not match its config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return LoadedModel(path.name, path, model, vocab, config)


def check_resume(path: Path, config: dict, host) -> None:
    """Before a resume builds anything: the saved training settings agree with the model section, and the
    training state's header holds the tensors (weights and hidden state) that this model needs."""
    name = path.name
    model_cfg, train = config["model"], config.get("train") or {}
    for key in ("cell", "hidden_size", "num_layers", "encoding", "dropout"):
        if key in train and train[key] != model_cfg.get(key):
            raise RNNStudioError(f"model {name!r}: config.json's train.{key} ({train[key]!r}) differs from "
                                 f"model.{key} ({model_cfg.get(key)!r}); fix the file or restore it from a backup")
    mcfg = ModelConfig.from_json(model_cfg)
    header = read_header(path / STATE, name)
    _train_meta(header, name)
    cell_cls = _cell_class(host, mcfg, name, config)
    _cell_options(cell_cls, mcfg, name)
    meta = check_weights_match(shapes(header, "model."), mcfg, cell_cls, name, STATE)
    hidden = shapes(header, "hidden.")
    if meta is None or not hidden:
        return
    batch = next(iter(hidden.values()))[1] if len(next(iter(hidden.values()))) > 1 else 1
    state = meta.cell.begin_state(batch, device="meta")
    wanted = [tuple(t.shape) for t in (state if isinstance(state, tuple) else (state,))]
    have = [hidden.get(str(i)) for i in range(len(hidden))]
    if have != wanted:
        raise RNNStudioError(f"model {name!r}: {STATE} holds a hidden state of shape {have}, the model's cell "
                             f"expects {wanted}; the file does not belong to this model (restore it from a backup, "
                             f"or train a new model)")


def load_train_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = _train_meta(read_header(path / STATE, path.name), path.name)
    tensors, _ = read_tensors(path / STATE, path.name)
    return meta, tensors


def _train_meta(header: dict, name: str) -> dict:
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != "rnnstudio-train-state":
        raise RNNStudioError(f"model {name!r}: {STATE} is not an RNN Studio training state")
    return check_train_meta(read_json_text(metadata.get("json"), name, f"{STATE} metadata"), name)


def restore_train_state(meta: dict, tensors: dict, model, optimizer) -> list[torch.Tensor]:
    """Put weights, optimizer and RNG back; return the saved hidden state tensors."""
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return [tensors[f"hidden.{i}"] for i in range(meta.get("hidden") or 0)]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in (meta.get("scalars") or {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
