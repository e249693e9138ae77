"""RNN Studio: train recurrent language models on your own text. This module is the public plugin API."""

from .components import Cell, Corpus, Metric
from .errors import RNNStudioError
from .fileio import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from .hookspecs import hookimpl
from .params import Param
from .paths import cache_dir, config_dir, data_dir

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "Corpus",
    "Metric",
    "Param",
    "RNNStudioError",
    "hookimpl",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_dir",
    "config_dir",
    "data_dir",
    "__version__",
]
