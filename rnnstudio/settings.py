"""The settings schema: one declaration per setting (``setting(...)`` metadata on a dataclass field) drives every surface.

From a config dataclass whose fields carry ``setting`` metadata this module derives the command-line options
(``add_arguments`` / ``from_args``), the reproducing command line (``to_argv``), the range and choice checks
(``check``), the words each interface uses for a setting (``label`` / ``flag``), and the options table of the docs
(``markdown_table``). The GUI builds its forms from the same metadata. Nothing here imports torch or Qt.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from .errors import RNNStudioError

GROUPS = ("data", "model", "training", "saving")


@dataclass(frozen=True)
class Setting:
    """What a user needs to know about one setting; everything else (type, default) comes from the field."""

    help: str
    group: str
    flag: str | None = None  # None: "--" + the field name with dashes
    label: str | None = None  # the GUI's words; None: the field name with spaces
    choices: tuple = ()
    min: float | None = None  # inclusive bounds ...
    max: float | None = None
    above: float | None = None  # ... and exclusive ones
    below: float | None = None
    metavar: str | None = None
    saved: bool = False  # part of the model: a resume keeps the saved value
    cli: bool = True  # False: set by the program (the distributed launcher, benchmarks), not by users
    gui: bool = True  # False: no widget in the Training form
    widget: str | None = None  # None: derived from the type (spin, float, check, combo, text, options)
    exclusive: str | None = None  # settings sharing this name are mutually exclusive on the command line
    many: bool = False  # the command line takes one or more values (each one is a separate run)
    choice_labels: tuple = ()  # the GUI's words for ``choices``, in the same order
    placeholder: str = ""  # the GUI's grey text in an empty field (what an empty entry means)


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **meta: Any):
    """A dataclass field with its ``Setting``: ``lr: float = setting(0.1, help="...", group="training")``."""
    return field(default=default, default_factory=default_factory, metadata={"setting": Setting(**meta)})


@dataclass(frozen=True)
class SettingInfo:
    name: str
    kind: str  # "int", "float", "str", "bool", "options"
    optional: bool  # None is allowed (it means "choose for me")
    default: Any
    meta: Setting

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.meta.label or self.name.replace("_", " ")

    @property
    def widget(self) -> str:
        if self.meta.widget:
            return self.meta.widget
        if self.meta.choices:
            return "combo"
        return {"int": "spin", "float": "float", "bool": "check", "options": "options"}.get(self.kind, "text")

    def word(self, interface: str) -> str:
        """How ``interface`` ("cli" or "gui") names this setting in a message."""
        return self.flag if interface == "cli" else f"“{self.label}”"


def _kind(annotation: Any) -> tuple[str, bool]:
    optional, base = False, annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None))
    origin = typing.get_origin(base) or base
    if origin is dict:
        return "options", optional
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(origin, "str"), optional


_SCHEMAS: dict[type, tuple[SettingInfo, ...]] = {}


def schema(cls: type) -> tuple[SettingInfo, ...]:
    """The settings of a config dataclass, in declaration order."""
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls)
        out = []
        for f in fields(cls):
            meta = f.metadata.get("setting")
            if meta is None:
                continue
            kind, optional = _kind(hints[f.name])
            default = f.default if f.default is not MISSING else f.default_factory()
            out.append(SettingInfo(f.name, kind, optional, default, meta))
        _SCHEMAS[cls] = tuple(out)
    return _SCHEMAS[cls]


def info(cls: type, name: str) -> SettingInfo:
    for s in schema(cls):
        if s.name == name:
            return s
    raise KeyError(name)


# -- messages in each interface's words ----------------------------------------------------

class SettingError(RNNStudioError):
    """A settings mistake whose message names settings as ``{field_name}``, rendered in each interface's words.

    ``str(exc)`` uses the command line's flags; the GUI calls ``exc.render("gui")`` for its own labels.
    """

    def __init__(self, template: str, *, config: type, source: str | None = None, **values: Any):
        self.template, self.config_cls, self.values = template, config, values
        super().__init__(self._text("cli"), source=source)

    def _text(self, interface: str) -> str:
        words = {s.name: s.word(interface) for s in schema(self.config_cls)}
        return self.template.format_map({**words, **self.values})

    def render(self, interface: str) -> str:
        text, source = self._text(interface), self.source
        return f"{source}: {text}" if source and not text.startswith(source) else text

    @property
    def fields(self) -> list[str]:
        return [s.name for s in schema(self.config_cls) if "{" + s.name + "}" in self.template]


def render_error(exc: BaseException, interface: str) -> str:
    """A user error as ``interface`` should word it (settings errors name that interface's fields)."""
    return exc.render(interface) if isinstance(exc, SettingError) else str(exc)


# -- checks -------------------------------------------------------------------------------

def _range_text(s: SettingInfo) -> str:
    m = s.meta
    bounds = ((">=", m.min), (">", m.above), ("<=", m.max), ("<", m.below))
    return " and ".join(f"{op} {v:,}" if isinstance(v, int) else f"{op} {v:g}" for op, v in bounds if v is not None)


def check(config: Any) -> None:
    """Types, choices and ranges of every setting of ``config``; NaN fails every range check."""
    cls = type(config)
    for s in schema(cls):
        value = getattr(config, s.name)
        if value is None and s.optional:
            continue
        if s.kind == "options":
            if not isinstance(value, dict):
                raise SettingError(f"{{{s.name}}} must be KEY=VALUE options, got {{got}}", config=cls, got=repr(value))
            continue
        if s.kind == "bool":
            ok = isinstance(value, bool)
        elif s.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif s.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise SettingError(f"{{{s.name}}} must be {_KIND_WORDS[s.kind]}, got {{got}}", config=cls, got=repr(value))
        if s.meta.choices and value not in s.meta.choices:
            raise SettingError(f"{{{s.name}}} must be one of {', '.join(map(str, s.meta.choices))}, got {{got}}",
                               config=cls, got=repr(value))
        if s.kind in ("int", "float"):
            m = s.meta
            inside = ((m.min is None or value >= m.min) and (m.max is None or value <= m.max)
                      and (m.above is None or value > m.above) and (m.below is None or value < m.below))
            if not inside or (s.kind == "float" and not math.isfinite(value)):
                bounds = _range_text(s)
                want = f"a finite number {bounds}" if s.kind == "float" else f"an integer {bounds}"
                raise SettingError(f"{{{s.name}}} must be {want.strip()}, got {{got}}", config=cls, got=value)


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


# -- the command line ---------------------------------------------------------------------

_METAVARS = {"int": "N", "float": "X"}


def _type_for(s: SettingInfo):
    return {"int": int, "float": float}.get(s.kind, str)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per user setting of ``cls``, grouped as the schema says; help texts come from the schema."""
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for s in schema(cls):
        if not s.meta.cli:
            continue
        group = groups.get(s.meta.group)
        if group is None:
            group = groups[s.meta.group] = parser.add_argument_group(s.meta.group)
        if s.meta.exclusive:
            target = exclusive.get(s.meta.exclusive)
            if target is None:
                target = exclusive[s.meta.exclusive] = group.add_mutually_exclusive_group()
        else:
            target = group
        help_ = s.meta.help.replace("%", "%%")
        if s.meta.many:
            target.add_argument(s.flag, dest=s.name, nargs="+", default=None, metavar=_METAVARS.get(s.kind, "TEXT"),
                                help=f"{help_} (default {s.default})")
        elif s.kind == "bool":
            target.add_argument(s.flag, dest=s.name, action="store_true", default=s.default, help=help_)
        elif s.kind == "options":
            target.add_argument(s.flag, dest=s.name, action="append", metavar=s.meta.metavar or "KEY=VALUE",
                                help=help_)
        else:
            default_text = "" if s.default is None else f" (default {s.default})"
            target.add_argument(s.flag, dest=s.name, type=_type_for(s), default=s.default,
                                choices=s.meta.choices or None,
                                metavar=s.meta.metavar or (None if s.meta.choices else _METAVARS.get(s.kind, "TEXT")),
                                help=help_ + default_text.replace("%", "%%"))


def from_args(cls: type, args: argparse.Namespace, **overrides: Any):
    """The config that the parsed command line asks for."""
    from .params import parse_key_values

    values: dict[str, Any] = {}
    for s in schema(cls):
        if not s.meta.cli or not hasattr(args, s.name):
            continue
        raw = getattr(args, s.name)
        if s.meta.many:
            raw = _many(s, raw)
        values[s.name] = parse_key_values(raw, s.flag) if s.kind == "options" else raw
    values.update(overrides)
    return cls(**values)


def _many(s: SettingInfo, raw: list[str] | None) -> list:
    """``--temperature 0.5 1.0`` or ``--temperature 0.5,1.0``: the values, parsed; the default when none is given."""
    out = []
    for part in (p.strip() for v in raw or () for p in str(v).split(",")):
        if part:
            try:
                out.append(_type_for(s)(part))
            except ValueError:
                raise SettingError(f"{{{s.name}}} expects {_KIND_WORDS[s.kind]} values, got {{got}}",
                                   config=_owner(s), got=repr(part)) from None
    return out or [s.default]


def _owner(s: SettingInfo) -> type:
    return next(cls for cls, settings in _SCHEMAS.items() if s in settings)


def expand(config: Any) -> list:
    """One config per value of each many-valued setting (``temperature=[0.5, 1.0]`` gives two)."""
    configs = [config]
    for s in schema(type(config)):
        if s.meta.many:
            configs = [replace(c, **{s.name: v}) for c in configs
                       for v in (getattr(c, s.name) if isinstance(getattr(c, s.name), list) else [getattr(c, s.name)])]
    return configs


def explicit(cls: type, args: argparse.Namespace) -> list[str]:
    """The settings whose command-line value differs from the default (what a user typed, near enough)."""
    out = []
    for s in schema(cls):
        if s.meta.cli and hasattr(args, s.name):
            value = getattr(args, s.name)
            if (s.kind == "options" and value) or (s.kind != "options" and value != s.default):
                out.append(s.name)
    return out


def option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_argv(config: Any) -> list[str]:
    """The options that reproduce ``config`` (settings at their default are left out)."""
    argv: list[str] = []
    for s in schema(type(config)):
        if not s.meta.cli:
            continue
        value = getattr(config, s.name)
        if s.meta.many:
            values = value if isinstance(value, list) else [value]
            if values != [s.default]:
                argv += [s.flag, *map(option_text, values)]
        elif s.kind == "options":
            argv += [part for key, v in value.items() if v is not None
                     for part in (s.flag, f"{key}={option_text(v)}")]
        elif s.kind == "bool":
            if value and value != s.default:
                argv.append(s.flag)
        elif value is not None and value != s.default:
            argv += [s.flag, option_text(value)]
    return argv


# -- the docs -----------------------------------------------------------------------------

def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(cls: type) -> str:
    """The options table of the docs, one row per command-line setting."""
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for s in schema(cls):
        if not s.meta.cli:
            continue
        if s.kind == "bool":
            option = f"`{s.flag}`"
        elif s.meta.choices:
            option = f"`{s.flag} {'|'.join(map(str, s.meta.choices))}`".replace("|", "\\|")
        else:
            metavar = s.meta.metavar or ("KEY=VALUE" if s.kind == "options" else _METAVARS.get(s.kind, "TEXT"))
            option = f"`{s.flag} {metavar}{' ...' if s.meta.many else ''}`"
        empty = s.default is None or s.default is False or s.default in ("", {})
        default = "—" if empty else f"`{option_text(s.default)}`"
        rows.append(f"| {option} | {default} | {_cell(s.meta.help)} |")
    return "\n".join(rows)


def replace_tables(text: str, tables: dict[str, type]) -> str:
    """``text`` with each ``<!-- options:NAME -->…<!-- /options:NAME -->`` block holding ``markdown_table(cls)``."""
    for name, cls in tables.items():
        start, end = f"<!-- options:{name} -->", f"<!-- /options:{name} -->"
        if start not in text or end not in text:
            raise ValueError(f"no {start} … {end} block")
        head, rest = text.split(start, 1)
        text = f"{head}{start}\n{markdown_table(cls)}\n{end}{rest.split(end, 1)[1]}"
    return text
