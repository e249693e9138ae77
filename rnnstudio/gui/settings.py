"""The app's remembered settings: one JSON file in the per-user config folder, written atomically."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import RNNStudioError
from ..fileio import atomic_write_json
from ..paths import config_dir
from ..textfiles import read_text_file

FILENAME = "gui-settings.json"


def settings_path() -> Path:
    return config_dir() / FILENAME


def load_settings(path: Path | None = None) -> tuple[dict, str | None]:
    """The saved settings and a warning (or None). A missing file gives {}; a corrupt one is ignored."""
    path = path or settings_path()
    try:
        data = json.loads(read_text_file(path))  # a regular file only: a FIFO here would block the app's start
    except FileNotFoundError:
        return {}, None
    except RNNStudioError as exc:
        if not path.exists() and not path.is_symlink():
            return {}, None
        message = f"ignored the settings file: {exc}; the defaults are used"
        warnings.warn(message, stacklevel=2)
        return {}, message
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON; RecursionError: [[[[...
        message = f"ignored the corrupt settings file {path} ({exc}); the defaults are used and it is rewritten on exit"
        warnings.warn(message, stacklevel=2)
        return {}, message
    if not isinstance(data, dict):
        message = f"ignored the settings file {path}: it does not hold a JSON object"
        warnings.warn(message, stacklevel=2)
        return {}, message
    return data, None


def save_settings(data: dict, path: Path | None = None) -> None:
    atomic_write_json(path or settings_path(), data)
