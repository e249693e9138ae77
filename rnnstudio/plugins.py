"""The plugin host: loads built-in, installed and user plugins and keeps the component registries."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs, paths
from .components import Cell, Component, Corpus, Metric
from .errors import RNNStudioError

ENTRY_POINT_GROUP = "rnnstudio"
BUILTIN_MODULES = ("corpora", "cells", "metrics")
KINDS = {"corpus": Corpus, "cell": Cell, "metric": Metric}
_HOOK_FOR_KIND = {"corpus": "register_corpora", "cell": "register_cells", "metric": "register_metrics"}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    cls: type
    source: str  # "builtin:cells", "entrypoint:rnnstudio-foo", "user:/path/to/file.py", "test:..."


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    error: str


@dataclass
class PluginHost:
    """Holds what the plugins registered. Build one with ``load_plugins()``."""

    registry: dict[str, dict[str, Registration]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    # -- lookup -------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return list(self.registry[kind])

    def get(self, kind: str, name: str) -> type:
        try:
            return self.registry[kind][name].cls
        except KeyError:
            known = list(self.registry[kind])
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RNNStudioError(
                f"unknown {kind} {name!r}.{hint} Available: {', '.join(known) or 'none'} "
                f"(see `rnnstudio plugins`)"
            ) from None

    def corpus(self, name: str) -> type[Corpus]:
        return self.get("corpus", name)

    def cell(self, name: str) -> type[Cell]:
        return self.get("cell", name)

    def metric(self, name: str) -> type[Metric]:
        return self.get("metric", name)

    def source_of(self, kind: str, name: str) -> str:
        return self.registry[kind][name].source

    # -- loading ------------------------------------------------------------
    def register_plugin(self, plugin: Any, source: str) -> None:
        """Register one plugin object (a module or an object with hookimpls) and run its hooks.

        Faults stay inside this plugin: an exception in a hook, or a bad component, is
        recorded in ``failures`` and the rest keeps working.
        """
        pm = pluggy.PluginManager("rnnstudio")
        pm.add_hookspecs(hookspecs)
        try:
            pm.register(plugin, name=source)
            pm.check_pending()
        except Exception as exc:  # a hookimpl with a misspelt name or wrong arguments
            self.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
            return
        self.plugins.append(source)
        for kind, hook_name in _HOOK_FOR_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                register = self._make_register(kind, source)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as exc:
                    self.failures.append(PluginFailure(source, f"{hook_name} raised {type(exc).__name__}: {exc}"))

    def _make_register(self, kind: str, source: str):
        base = KINDS[kind]

        def register(cls: type) -> None:
            try:
                _check_component(cls, base, kind)
            except ValueError as exc:
                self.failures.append(PluginFailure(source, str(exc)))
                return
            existing = self.registry[kind].get(cls.name)
            if existing is not None:
                self.failures.append(
                    PluginFailure(
                        source,
                        f"duplicate {kind} name {cls.name!r}: already registered by {existing.source}; "
                        f"the one from {source} was rejected",
                    )
                )
                return
            self.registry[kind][cls.name] = Registration(kind, cls.name, cls, source)

        return register


def _check_component(cls: Any, base: type, kind: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"register() for a {kind} needs a subclass of rnnstudio.{base.__name__}, got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name.strip():
        raise ValueError(f"{kind} class {cls.__name__} has no name")
    if not isinstance(cls.description, str) or not cls.description.strip():
        raise ValueError(f"{kind} {cls.name!r} has no one-line description")
    from .params import Param

    for p in cls.params:
        if not isinstance(p, Param):
            raise ValueError(f"{kind} {cls.name!r}: params must be rnnstudio.Param objects, got {p!r}")


def plugins_disabled() -> bool:
    return os.environ.get("RNNSTUDIO_NO_PLUGINS", "").strip().lower() not in ("", "0", "false", "no")


def unsafe_reason(path: Path) -> str | None:
    """Why a user plugin file must not run (world-writable, or owned by someone else), or None."""
    if os.name != "posix":
        return None
    st = path.stat()
    if st.st_mode & stat.S_IWOTH:
        return f"{path} is world-writable; run `chmod o-w {path}` if you trust it"
    if st.st_uid != os.getuid():
        return f"{path} is owned by another user (uid {st.st_uid}); refusing to run it"
    return None


def _load_user_plugin(path: Path) -> Any:
    module_name = f"rnnstudio_user_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_plugins(*, no_plugins: bool | None = None, user_dir: Path | None = None, extra: list | None = None) -> PluginHost:
    """Load, in order: the built-ins, installed ``rnnstudio`` entry points, then ``*.py`` in the user folder.

    ``no_plugins`` (or ``RNNSTUDIO_NO_PLUGINS=1``) loads the built-ins only. ``extra`` is a
    list of ``(source, plugin)`` pairs registered last, for tests and embedding.
    """
    host = PluginHost()
    for mod in BUILTIN_MODULES:
        source = f"builtin:{mod}"
        try:
            module = importlib.import_module(f"rnnstudio.builtin_plugins.{mod}")
        except Exception as exc:
            host.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
            continue
        host.register_plugin(module, source)

    if no_plugins is None:
        no_plugins = plugins_disabled()
    if not no_plugins:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            source = f"entrypoint:{ep.name}"
            try:
                plugin = ep.load()
            except Exception as exc:
                host.failures.append(PluginFailure(source, f"failed to import {ep.value}: {type(exc).__name__}: {exc}"))
                continue
            host.register_plugin(plugin, source)

        folder = user_dir if user_dir is not None else paths.user_plugins_dir()
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                source = f"user:{path}"
                try:
                    reason = unsafe_reason(path)
                    if reason:
                        host.failures.append(PluginFailure(source, f"refused: {reason}"))
                        continue
                    plugin = _load_user_plugin(path)
                except Exception as exc:
                    host.failures.append(PluginFailure(source, f"failed to import: {type(exc).__name__}: {exc}"))
                    continue
                host.register_plugin(plugin, source)

    for source, plugin in extra or []:
        host.register_plugin(plugin, source)
    return host


_default_host: PluginHost | None = None


def default_host() -> PluginHost:
    """The process-wide host, loaded on first use."""
    global _default_host
    if _default_host is None:
        _default_host = load_plugins()
    return _default_host


def set_default_host(host: PluginHost | None) -> None:
    global _default_host
    _default_host = host


def describe_all(host: PluginHost) -> dict:
    """What ``rnnstudio plugins --json`` prints."""
    out: dict[str, Any] = {}
    for kind, regs in host.registry.items():
        out[{"corpus": "corpora", "cell": "cells", "metric": "metrics"}[kind]] = [
            {**reg.cls.describe(), "kind": kind, "source": reg.source} for reg in regs.values()
        ]
    out["plugins"] = list(host.plugins)
    out["failed"] = [{"plugin": f.plugin, "error": f.error} for f in host.failures]
    return out


__all__ = ["PluginHost", "Registration", "PluginFailure", "load_plugins", "default_host", "Component"]
