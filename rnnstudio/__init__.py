"""RNN Studio: train recurrent language models on your own text. This module is the public plugin API."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Name -> the submodule that defines it. They load on first use, so `import rnnstudio` (and with it
# `rnnstudio --version`, `--help` and `models`) does not import torch; `from rnnstudio import Cell` still works.
_EXPORTS = {
    "Cell": "components",
    "Corpus": "components",
    "Metric": "components",
    "Observer": "observers",
    "Param": "params",
    "Tokenizer": "components",
    "RNNStudioError": "errors",
    "hookimpl": "hookspecs",
    "atomic_write": "fileio",
    "atomic_write_bytes": "fileio",
    "atomic_write_json": "fileio",
    "atomic_write_text": "fileio",
    "cache_dir": "paths",
    "config_dir": "paths",
    "data_dir": "paths",
    "check_text_encoding": "textfiles",
    "check_user_path": "textfiles",
    "read_text_chunks": "textfiles",
    "read_text_file": "textfiles",
    "text_files": "textfiles",
    "files_fingerprint": "corpus_cache",
    "packed_linear": "gemm",
    "matmul": "gemm",
    "dropout": "regularize",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnnstudio' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
