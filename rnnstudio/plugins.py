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
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs, paths
from .components import Cell, Component, Corpus, Metric, Tokenizer
from .errors import RNNStudioError
from .observers import Observer

ENTRY_POINT_GROUP = "rnnstudio"
BUILTIN_MODULES = ("corpora", "cells", "metrics", "observers", "tokenizers")
CORE_PLUGINS = ("runs",)  # core modules with hookimpls (the run records), loaded before the built-ins
KINDS = {"corpus": Corpus, "cell": Cell, "metric": Metric, "observer": Observer, "tokenizer": Tokenizer}
_HOOK_FOR_KIND = {"corpus": "register_corpora", "cell": "register_cells", "metric": "register_metrics",
                  "observer": "register_observers", "tokenizer": "register_tokenizers"}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    cls: type
    source: str  # "builtin:cells", "entrypoint:rnnstudio-foo", "user:/path/to/file.py", "test:..."


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: where it came from, which distribution and version, which hooks it implements."""

    source: str
    distribution: str = ""  # "" for user files and test plugins
    version: str = ""
    hooks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``rnnstudio-foo 1.2 (entrypoint:foo)``, or the bare source when no distribution provides it."""
        if not self.distribution:
            return self.source
        return f"{self.distribution} {self.version} ({self.source})".replace("  ", " ")


@dataclass(frozen=True)
class Contest:
    """A component name that more than one plugin registered: ``winner`` keeps it, ``losers`` were rejected."""

    kind: str
    name: str
    winner: str
    losers: tuple[str, ...]


@dataclass(frozen=True)
class PageRegistration:
    title: str
    factory: Any  # factory(context) -> QWidget, called by the desktop app (see rnnstudio.gui.pages)
    source: str


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    error: str
    traceback: str = ""  # the full traceback, printed with --debug (or RNNSTUDIO_DEBUG=1)


def describe_failure(exc: BaseException) -> str:
    """``TypeName: message``; a plugin's ``sys.exit()`` reads as what it did, not as an empty SystemExit."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


class Outcome:
    """What ``contained`` saw: the failure's full traceback ("" when the code did not fail)."""

    traceback = ""


@contextlib.contextmanager
def contained(on_failure):
    """Run plugin code: any exception, and SystemExit, goes to ``on_failure(text)``; Ctrl+C still stops.

    What the code writes to stderr is held back and, if it fails, its last line joins the report
    (argparse run at import prints a usage block and exits 2). Yields an ``Outcome``.
    """
    held = io.StringIO()
    outcome = Outcome()
    try:
        with contextlib.redirect_stderr(held):
            yield outcome
    except (Exception, SystemExit) as exc:
        outcome.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
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
    info: dict[str, PluginInfo] = field(default_factory=dict)  # by source, for every plugin tried
    disabled: list[str] = field(default_factory=list)  # sources skipped by --disable / RNNSTUDIO_DISABLE
    unmatched_disable: list[str] = field(default_factory=list)  # disable names that matched no plugin
    contests: dict[tuple[str, str], Contest] = field(default_factory=dict)  # by (kind, name)

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

    def provenance(self, source: str) -> tuple[str, str] | None:
        """``(distribution, version)`` of a plugin, or None when no distribution provides it."""
        info = self.info.get(source)
        return (info.distribution, info.version) if info and info.distribution else None

    def provider(self, kind: str, name: str) -> dict:
        """What a saved model records about the plugin behind one of its components (config.json's providers)."""
        source = self.registry[kind][name].source
        found = self.provenance(source) or ("", "")
        return {"name": name, "source": source, "distribution": found[0], "version": found[1]}

    def label(self, source: str) -> str:
        """A plugin as messages name it: its distribution and version when it has them."""
        info = self.info.get(source)
        return info.label if info else source

    def contest_warning(self, kind: str, name: str) -> str | None:
        """One line for a requested component whose name more than one plugin registered, else None."""
        contest = self.contests.get((kind, name))
        if contest is None:
            return None
        others = ", ".join(self.label(s) for s in contest.losers)
        return (f"{kind} {name!r} is registered by more than one plugin: using {self.label(contest.winner)}; "
                f"rejected {others} (built-ins win, then installed packages by distribution name, then user "
                f"files by file name; --disable NAME picks another)")

    def _fail(self, source: str, error: str, outcome: Outcome | None = None) -> None:
        self.failures.append(PluginFailure(source, error, outcome.traceback if outcome else ""))

    # -- loading ------------------------------------------------------------
    def register_plugin(self, plugin: Any, source: str) -> None:
        """Register one plugin object (a module or an object with hookimpls) and run its hooks.

        Faults stay inside this plugin: an exception in a hook, or a bad component, is
        recorded in ``failures`` and the rest keeps working.
        """
        pm = pluggy.PluginManager("rnnstudio")
        pm.add_hookspecs(hookspecs)
        failed: list[str] = []
        with contained(failed.append) as outcome:  # a hookimpl with a misspelt name or wrong arguments
            pm.register(plugin, name=source)
            pm.check_pending()
        if failed:
            self._fail(source, failed[0], outcome)
            return
        self.plugins.append(source)
        hooks = tuple(h.name for h in pm.get_hookcallers(plugin) or ())
        known = self.info.get(source, PluginInfo(source))
        self.info[source] = PluginInfo(source, known.distribution, known.version, hooks)
        for kind, hook_name in _HOOK_FOR_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                register = self._make_register(kind, source)
                failed = []
                with contained(failed.append) as outcome:
                    impl.function(**{arg: register for arg in impl.argnames})
                if failed:
                    self._fail(source, f"{hook_name} raised {failed[0]}", outcome)
        for impl in pm.hook.register_pages.get_hookimpls():
            register = self._make_page_register(source)
            failed = []
            with contained(failed.append) as outcome:
                impl.function(**{arg: register for arg in impl.argnames})
            if failed:
                self._fail(source, f"register_pages raised {failed[0]}", outcome)

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
                contest = self.contests.get((kind, cls.name))
                losers = (contest.losers if contest else ()) + (source,)
                self.contests[(kind, cls.name)] = Contest(kind, cls.name, existing.source, losers)
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


def provider_hint(providers, kind: str) -> str:
    """``; it was saved with cell 'mgu' from rnnstudio-mgu 0.2: ...`` from a model's recorded providers, or ""."""
    info = providers.get(kind) if isinstance(providers, dict) else None
    if not isinstance(info, dict):
        return ""
    name, dist, version, source = (info.get(k) for k in ("name", "distribution", "version", "source"))
    if isinstance(dist, str) and dist and dist != "rnnstudio":
        at = f" {version}" if isinstance(version, str) and version else ""
        return (f"; it was saved with {kind} {name!r} from {dist}{at}: install that package "
                f"(pip install {dist}), then check `rnnstudio plugins`")
    if isinstance(source, str) and source.startswith("user:"):
        return f"; it was saved with {kind} {name!r} from the user plugin file {source[5:]}"
    return ""


def plugins_disabled() -> bool:
    return os.environ.get("RNNSTUDIO_NO_PLUGINS", "").strip().lower() not in ("", "0", "false", "no")


def debug_enabled() -> bool:
    """``RNNSTUDIO_DEBUG=1``: plugin errors come with their full traceback."""
    return os.environ.get("RNNSTUDIO_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def disabled_names(extra=()) -> list[str]:
    """The plugin names to skip: ``RNNSTUDIO_DISABLE=a,b`` plus ``extra`` (``--disable NAME``)."""
    names = [n.strip() for n in os.environ.get("RNNSTUDIO_DISABLE", "").split(",")]
    return [n for n in [*names, *extra] if n and n.strip()]


def plugin_names(source: str, distribution: str = "") -> set[str]:
    """The names ``--disable`` matches for a plugin: its entry-point name, its distribution's name, a user
    file's name with or without ``.py``, a built-in's module name; and the full source itself."""
    kind, _, rest = source.partition(":")
    names = {source, rest}
    if kind == "user":
        names |= {Path(rest).name, Path(rest).stem}
    if distribution:
        names |= {distribution, distribution.lower().replace("_", "-")}
    return names


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


def _distribution(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    try:
        return str(dist.metadata["Name"] or ""), str(dist.version or "")
    except Exception:  # noqa: BLE001 - broken metadata names no distribution
        return "", ""


def load_plugins(*, no_plugins: bool | None = None, user_dir: Path | None = None, extra: list | None = None,
                 disable=()) -> PluginHost:
    """Load, in order: the built-ins, installed ``rnnstudio`` entry points, then ``*.py`` in the user folder.

    The first registration of a component name wins, so the order is the conflict rule: built-ins,
    then entry points sorted by distribution name (then entry-point name), then user files by file name.
    ``no_plugins`` (or ``RNNSTUDIO_NO_PLUGINS=1``) loads the built-ins only. ``disable`` (with
    ``RNNSTUDIO_DISABLE=a,b``) names plugins to skip (see ``plugin_names``). ``extra`` is a
    list of ``(source, plugin)`` pairs registered last, for tests and embedding.
    """
    from . import __version__

    host = PluginHost()
    skip = set(disabled_names(disable))
    matched: set[str] = set()

    def skipped(source: str, distribution: str = "") -> bool:
        hit = plugin_names(source, distribution) & skip
        matched.update(hit)
        if hit:
            host.disabled.append(source)
        return bool(hit)

    for mod in CORE_PLUGINS:
        host.info[f"builtin:{mod}"] = PluginInfo(f"builtin:{mod}", "rnnstudio", __version__)
        host.register_plugin(importlib.import_module(f"rnnstudio.{mod}"), f"builtin:{mod}")
    for mod in BUILTIN_MODULES:
        source = f"builtin:{mod}"
        host.info[source] = PluginInfo(source, "rnnstudio", __version__)
        if skipped(source):
            continue
        failed: list[str] = []
        with contained(failed.append) as outcome:
            module = importlib.import_module(f"rnnstudio.builtin_plugins.{mod}")
        if failed:
            host._fail(source, failed[0], outcome)
            continue
        host.register_plugin(module, source)

    if no_plugins is None:
        no_plugins = plugins_disabled()
    if not no_plugins:
        found = [(*_distribution(ep), ep) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
        for dist, version, ep in sorted(found, key=lambda f: (f[0].lower(), f[2].name)):
            source = f"entrypoint:{ep.name}"
            host.info[source] = PluginInfo(source, dist, version)
            if skipped(source, dist):
                continue
            failed = []
            with contained(failed.append) as outcome:
                plugin = ep.load()
            if failed:
                host._fail(source, f"failed to import {ep.value}: {failed[0]}", outcome)
                continue
            host.register_plugin(plugin, source)

        folder = user_dir if user_dir is not None else paths.user_plugins_dir()
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                source = f"user:{path}"
                if skipped(source):
                    continue
                failed = []
                with contained(failed.append) as outcome:
                    try:
                        plugin = _load_user_plugin(path)
                    except _Refused as exc:
                        failed.append(f"refused: {exc}")
                if failed:
                    error = failed[0] if failed[0].startswith("refused: ") else f"failed to import: {failed[0]}"
                    host._fail(source, error, outcome)
                    continue
                host.register_plugin(plugin, source)

    for source, plugin in extra or []:
        if not skipped(source):
            host.register_plugin(plugin, source)
    host.unmatched_disable = sorted(skip - matched)
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
        out[PLURALS[kind]] = [
            {**reg.cls.describe(), "kind": kind, "source": reg.source, **_dist_fields(host, reg.source)}
            for reg in regs.values()
        ]
    out["pages"] = [{"title": p.title, "source": p.source} for p in host.pages]
    out["plugins"] = list(host.plugins)
    out["distributions"] = [
        {"source": i.source, "distribution": i.distribution, "version": i.version, "hooks": list(i.hooks)}
        for i in host.info.values() if i.source in host.plugins
    ]
    out["disabled"] = list(host.disabled)
    out["contested"] = [
        {"kind": c.kind, "name": c.name, "winner": c.winner, "rejected": list(c.losers)} for c in host.contests.values()
    ]
    out["failed"] = [{"plugin": f.plugin, "error": f.error} for f in host.failures]
    return out


PLURALS = {"corpus": "corpora", "cell": "cells", "metric": "metrics", "observer": "observers", "tokenizer": "tokenizers"}


def _dist_fields(host: PluginHost, source: str) -> dict:
    found = host.provenance(source)
    return {"distribution": found[0], "version": found[1]} if found else {"distribution": "", "version": ""}


__all__ = ["PluginHost", "Registration", "PluginFailure", "PluginInfo", "Contest", "load_plugins", "default_host",
           "Component"]
