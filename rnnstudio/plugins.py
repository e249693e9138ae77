"""The plugin host: loads built-in, installed and user plugins and keeps the component registries."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
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
from .observers import Observer

ENTRY_POINT_GROUP = "rnnstudio"
BUILTIN_MODULES = ("corpora", "cells", "metrics", "observers")
CORE_PLUGINS = ("runs",)  # core modules with hookimpls (the run records), loaded before the built-ins
KINDS = {"corpus": Corpus, "cell": Cell, "metric": Metric, "observer": Observer}
_HOOK_FOR_KIND = {"corpus": "register_corpora", "cell": "register_cells", "metric": "register_metrics",
                  "observer": "register_observers"}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    cls: type
    source: str  # "builtin:cells", "entrypoint:rnnstudio-foo", "user:/path/to/file.py", "test:..."


@dataclass(frozen=True)
class PageRegistration:
    title: str
    factory: Any  # factory(context) -> QWidget, called by the desktop app (see rnnstudio.gui.pages)
    source: str


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    error: str


def describe_failure(exc: BaseException) -> str:
    """``TypeName: message``; a plugin's ``sys.exit()`` reads as what it did, not as an empty SystemExit."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def contained(on_failure):
    """Run plugin code: any exception, and SystemExit, goes to ``on_failure(text)``; Ctrl+C still stops.

    What the code writes to stderr is held back and, if it fails, its last line joins the report
    (argparse run at import prints a usage block and exits 2).
    """
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except (Exception, SystemExit) as exc:
        last = held.getvalue().strip().splitlines()[-1:]
        on_failure(describe_failure(exc) + (f" (it printed: {last[0].strip()[:200]})" if last else ""))
    else:
        if held.getvalue():
            sys.stderr.write(held.getvalue())


@dataclass
class PluginHost:
    """Holds what the plugins registered. Build one with ``load_plugins()``."""

    registry: dict[str, dict[str, Registration]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    pages: list[PageRegistration] = field(default_factory=list)  # the desktop app's extra tabs

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
        failed: list[str] = []
        with contained(failed.append):  # a hookimpl with a misspelt name or wrong arguments
            pm.register(plugin, name=source)
            pm.check_pending()
        if failed:
            self.failures.append(PluginFailure(source, failed[0]))
            return
        self.plugins.append(source)
        for kind, hook_name in _HOOK_FOR_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                register = self._make_register(kind, source)
                with contained(lambda text: self.failures.append(PluginFailure(source, f"{hook_name} raised {text}"))):
                    impl.function(**{arg: register for arg in impl.argnames})
        for impl in pm.hook.register_pages.get_hookimpls():
            register = self._make_page_register(source)
            with contained(lambda text: self.failures.append(PluginFailure(source, f"register_pages raised {text}"))):
                impl.function(**{arg: register for arg in impl.argnames})

    def _make_page_register(self, source: str):
        def register(title: str, factory) -> None:
            if not isinstance(title, str) or not title.strip():
                self.failures.append(PluginFailure(source, f"register_pages: a page needs a title, got {title!r}"))
            elif not callable(factory):
                self.failures.append(PluginFailure(source, f"register_pages: page {title!r} needs a factory "
                                                           f"function, got {factory!r}"))
            else:
                self.pages.append(PageRegistration(title.strip(), factory, source))

        return register

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


def unsafe_reason(path: Path, st: os.stat_result | None = None) -> str | None:
    """Why a user plugin file must not run (world-writable, or owned by someone else), or None."""
    if os.name != "posix":
        return None
    st = st or path.stat()
    if st.st_mode & stat.S_IWOTH:
        return f"{path} is world-writable; run `chmod o-w {path}` if you trust it"
    if st.st_uid != os.getuid():
        return f"{path} is owned by another user (uid {st.st_uid}); refusing to run it"
    return None


def _load_user_plugin(path: Path) -> Any:
    """Run the checked source file itself: no ``__pycache__`` lookup, no bytecode written.

    The import system would run a cached ``.pyc`` whose header matches the source, and that file
    passed no owner or permission check; so the source is read from the open file that was checked.
    """
    module_name = f"rnnstudio_user_plugin_{path.stem}"
    with open(path, "rb") as f:
        reason = unsafe_reason(path, os.fstat(f.fileno()))
        if reason:
            raise _Refused(reason)
        source = f.read()
    code = compile(source, str(path), "exec", dont_inherit=True)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(module_name, loader=None, origin=str(path)))
    module.__file__ = str(path)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


class _Refused(Exception):
    """A user plugin file that failed the owner or permission check."""


def load_plugins(*, no_plugins: bool | None = None, user_dir: Path | None = None, extra: list | None = None) -> PluginHost:
    """Load, in order: the built-ins, installed ``rnnstudio`` entry points, then ``*.py`` in the user folder.

    ``no_plugins`` (or ``RNNSTUDIO_NO_PLUGINS=1``) loads the built-ins only. ``extra`` is a
    list of ``(source, plugin)`` pairs registered last, for tests and embedding.
    """
    host = PluginHost()
    for mod in CORE_PLUGINS:
        host.register_plugin(importlib.import_module(f"rnnstudio.{mod}"), f"builtin:{mod}")
    for mod in BUILTIN_MODULES:
        source = f"builtin:{mod}"
        failed: list[str] = []
        with contained(failed.append):
            module = importlib.import_module(f"rnnstudio.builtin_plugins.{mod}")
        if failed:
            host.failures.append(PluginFailure(source, failed[0]))
            continue
        host.register_plugin(module, source)

    if no_plugins is None:
        no_plugins = plugins_disabled()
    if not no_plugins:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            source = f"entrypoint:{ep.name}"
            failed = []
            with contained(failed.append):
                plugin = ep.load()
            if failed:
                host.failures.append(PluginFailure(source, f"failed to import {ep.value}: {failed[0]}"))
                continue
            host.register_plugin(plugin, source)

        folder = user_dir if user_dir is not None else paths.user_plugins_dir()
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                source = f"user:{path}"
                failed = []
                with contained(failed.append):
                    try:
                        plugin = _load_user_plugin(path)
                    except _Refused as exc:
                        failed.append(f"refused: {exc}")
                if failed:
                    error = failed[0] if failed[0].startswith("refused: ") else f"failed to import: {failed[0]}"
                    host.failures.append(PluginFailure(source, error))
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
        out[{"corpus": "corpora", "cell": "cells", "metric": "metrics", "observer": "observers"}[kind]] = [
            {**reg.cls.describe(), "kind": kind, "source": reg.source} for reg in regs.values()
        ]
    out["pages"] = [{"title": p.title, "source": p.source} for p in host.pages]
    out["plugins"] = list(host.plugins)
    out["failed"] = [{"plugin": f.plugin, "error": f.error} for f in host.failures]
    return out


__all__ = ["PluginHost", "Registration", "PluginFailure", "load_plugins", "default_host", "Component"]
