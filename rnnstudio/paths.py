"""Per-user folders (platformdirs): models, user plugins, downloads cache and settings."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .errors import RNNStudioError

APP = "rnnstudio"


def _home() -> Path | None:
    # RNNSTUDIO_HOME puts every folder under one root: handy for tests and portable installs.
    home = os.environ.get("RNNSTUDIO_HOME")
    if not home:
        return None
    path = Path(home).expanduser()
    if path.exists() and not path.is_dir():
        raise RNNStudioError(f"RNNSTUDIO_HOME={home} is not a folder (it is a file); point it at a folder "
                             f"(created if missing) or unset it")
    return path


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP, appauthor=False))


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP, appauthor=False))


def models_dir() -> Path:
    return data_dir() / "models"


def user_plugins_dir() -> Path:
    return data_dir() / "plugins"


def runs_dir() -> Path:
    return data_dir() / "runs"
