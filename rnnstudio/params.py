"""Declared parameters: how a plugin describes its options to the CLI and the GUI."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RNNStudioError

PARAM_TYPES = ("int", "float", "bool", "choice", "str", "path")
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


@dataclass(frozen=True)
class Param:
    """One option of a component: ``Param("hidden", "int", 64, min=1, help="...")``."""

    name: str
    type: str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = field(default_factory=tuple)

    def __post_init__(self):
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r}: type must be one of {PARAM_TYPES}, not {self.type!r}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs choices")
        object.__setattr__(self, "choices", tuple(self.choices))

    def parse(self, raw: str) -> Any:
        """Turn the text a user typed (``--corpus-opt KEY=VALUE``) into a checked value."""
        text = raw.strip()
        try:
            if self.type == "int":
                value: Any = int(text)
            elif self.type == "float":
                value = float(text)
            elif self.type == "bool":
                low = text.lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError
                value = low in _TRUE
            else:
                value = raw
        except ValueError:
            raise RNNStudioError(f"option {self.name}={raw!r} is not a valid {self.type}") from None
        return self.validate(value)

    def validate(self, value: Any) -> Any:
        """Check a value against the declared type, range and choices; return it normalised."""
        if value is None and self.default is None and self.type in ("str", "path"):
            return None
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise RNNStudioError(f"option {self.name} must be an integer, got {value!r}")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RNNStudioError(f"option {self.name} must be a number, got {value!r}")
            value = float(value)
            if math.isnan(value):  # NaN compares False with every bound, so it would pass them all
                raise RNNStudioError(f"option {self.name} must be a number, got nan")
        elif self.type == "bool":
            if not isinstance(value, bool):
                raise RNNStudioError(f"option {self.name} must be true or false, got {value!r}")
        elif self.type == "choice":
            if value not in self.choices:
                raise RNNStudioError(
                    f"option {self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}"
                )
        elif self.type == "path":
            value = str(Path(value).expanduser()) if value not in (None, "") else value
        elif self.type == "str":
            value = str(value)
        if self.type in ("int", "float"):
            if self.min is not None and value < self.min:
                raise RNNStudioError(f"option {self.name} must be >= {self.min}, got {value}")
            if self.max is not None and value > self.max:
                raise RNNStudioError(f"option {self.name} must be <= {self.max}, got {value}")
        return value

    def to_json(self) -> dict:
        out = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def resolve_options(params: tuple[Param, ...], given: dict[str, Any], owner: str) -> dict[str, Any]:
    """Defaults overlaid with ``given`` (raw strings are parsed); unknown keys are an error."""
    by_name = {p.name: p for p in params}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise RNNStudioError(f"{owner} has no option {', '.join(unknown)} (its options: {known})")
    out = {}
    for p in params:
        if p.name in given:
            raw = given[p.name]
            try:
                out[p.name] = p.parse(raw) if isinstance(raw, str) and p.type not in ("str", "path") else p.validate(raw)
            except RNNStudioError as exc:
                raise RNNStudioError(f"{owner}: {exc}") from None
        else:
            out[p.name] = p.default
    return out


def parse_key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``["path=a.txt", "encoding=latin-1"]`` -> dict; a pair without ``=`` is a user error."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RNNStudioError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out
