"""Plugin loading (pluggy + entry points) and the component registries.

Entry points of the group ``ood_bench`` are loaded one by one, by us rather than by pluggy's
``load_setuptools_entrypoints``: that one lets an exception raised while importing one broken
plugin take the whole CLI down.  Here a broken plugin -- one that fails to import or to register,
a distribution without a name, a plugin name or component name that is already taken -- gives one
warning naming what clashed and is skipped; everything else still works
(``OOD_BENCH_STRICT_PLUGINS=1`` makes it an error).

Every component has a qualified name, ``distribution:name`` (``ood-bench:maxlogit``), and a bare name
(``maxlogit``).  Two plugins may register one bare name: the bare name means the first in the load order
-- the built-ins (the ``ood-bench`` distribution) first, then the other distributions sorted by name
-- and the others stay reachable by their qualified names.

A factory may be registered as an import string, ``"package.module:attribute"``: it is imported when
the component is built or its signature is read, so loading the plugins (``ood-bench list``,
``--help``, a suite with a syntax error) imports no torch.

``OOD_BENCH_PLUGINS=name1,name2`` loads only the entry points or distributions named (``ood-bench``
is the distribution of the built-ins); unset, every installed plugin loads.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import traceback
import warnings
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pluggy

from logitnorm_bench import hookspecs
from logitnorm_bench.hookspecs import hookimpl
from logitnorm_bench.errors import DuplicateNameError, OodBenchError, PluginError, UnknownNameError

GROUP = "ood_bench"
KINDS = ("datasets", "architectures", "losses", "detectors", "executors", "suites", "reports", "trackers")
SINGULAR = {"datasets": "dataset", "architectures": "architecture", "losses": "loss", "detectors": "detector",
            "executors": "executor", "suites": "suite", "reports": "report section", "trackers": "tracker"}
STRICT_ENV = "OOD_BENCH_STRICT_PLUGINS"
SELECT_ENV = "OOD_BENCH_PLUGINS"
BUILTIN = "ood-bench"  #: the harness's own distribution: its components win bare-name clashes
IN_PROCESS = "(in-process)"
_HARNESS = Path(__file__).resolve().parent  # the harness's own code: never "in a plugin's package"


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or registered; the others still work."""


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str  #: the bare name
    target: Callable[..., Any] | str  #: the factory, or ``"module:attribute"`` imported on first use
    plugin: str  #: the plugin (entry point) that registered it
    distribution: str  #: the distribution providing it, with its version
    description: str = ""
    kind: str = ""  #: "detectors", ...
    provider: str = ""  #: the qualifier of its qualified name: its distribution's name (or its plugin's)

    @property
    def qualified_name(self) -> str:
        return f"{self.provider or self.plugin}:{self.name}"

    @property
    def provider_key(self) -> str:
        """The provider as names compare (``OOD_Bench`` = ``ood-bench``)."""
        return _normalize(self.provider or self.plugin)

    @property
    def builtin(self) -> bool:
        return self.provider_key == BUILTIN

    @cached_property
    def factory(self) -> Callable[..., Any]:
        """The factory; an import string is imported now (a failure is a :class:`PluginError`)."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginError(f"{self._label()}: cannot import its factory '{self.target}': "
                              f"{type(exc).__name__}: {exc}") from exc
        if not callable(obj):
            raise PluginError(f"{self._label()}: its factory '{self.target}' is a {type(obj).__name__}, "
                              f"not a callable")
        return obj

    def _label(self) -> str:
        return f"{SINGULAR.get(self.kind, 'component')} '{self.name}' of plugin '{self.plugin}' ({self.distribution})"


class Registry:
    """Named factories of one kind.

    Every entry is reachable by its qualified name (``provider:name``); a bare name means the first
    entry registered under it (see :meth:`Plugins._collect` for the order).  Unknown names suggest
    close matches.
    """

    def __init__(self, kind: str, hint: Callable[[str], str] | None = None):
        self.kind = kind
        self.noun = SINGULAR.get(kind, kind)  #: "loss" for "losses", in messages
        self._bare: dict[str, Entry] = {}  # bare name -> the entry it means
        self._qualified: dict[str, Entry] = {}  # normalised qualified name -> entry (every entry)
        self._hint = hint  # name -> why it may be missing (OOD_BENCH_PLUGINS), for unknown-name messages

    def add(self, entry: Entry) -> str | None:
        """Add ``entry``; returns the warning when its name clashes, ``None`` otherwise.

        The same qualified name twice: the second is skipped.  A bare name taken by another
        provider: the bare name keeps its meaning, the new entry is reachable by its qualified name.
        """
        key = _qualify_key(entry.qualified_name)
        same = self._qualified.get(key)
        if same is not None:
            return (f"{self.noun} '{entry.name}' is registered twice by {entry.provider}: by plugin "
                    f"'{same.plugin}' ({same.distribution}) and by plugin '{entry.plugin}' "
                    f"({entry.distribution}); the second is skipped")
        self._qualified[key] = entry
        old = self._bare.get(entry.name)
        if old is None:
            self._bare[entry.name] = entry
            return None
        return (f"{self.noun} '{entry.name}' is registered twice: by plugin '{old.plugin}' ({old.distribution}) "
                f"and by plugin '{entry.plugin}' ({entry.distribution}); '{entry.name}' means "
                f"'{old.qualified_name}', the other is '{entry.qualified_name}'")

    def _find(self, name: object) -> Entry | None:
        if not isinstance(name, str):
            return None
        entry = self._bare.get(name)
        if entry is None and ":" in name:
            entry = self._qualified.get(_qualify_key(name))
        return entry

    def __contains__(self, name: object) -> bool:
        return self._find(name) is not None

    def names(self) -> list[str]:
        """The bare names."""
        return sorted(self._bare)

    def entries(self) -> list[Entry]:
        """The entry each bare name means, sorted by name."""
        return [self._bare[n] for n in self.names()]

    def all_entries(self) -> list[Entry]:
        """Every entry: also those whose bare name means another (reachable by qualified name only)."""
        return sorted(self._qualified.values(), key=lambda e: (e.name, self._bare[e.name] is not e,
                                                               _normalize(e.provider)))

    def get(self, name: str) -> Entry:
        entry = self._find(name)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry

    def canonical(self, name: str) -> str:
        """The shortest name that means the same entry now: the bare name, or the qualified one when
        the bare name means another entry (``ood-bench:maxlogit`` -> ``maxlogit``)."""
        entry = self.get(name)
        return entry.name if self._bare.get(entry.name) is entry else entry.qualified_name

    def unknown_message(self, name: str) -> str:
        candidates = self.names() + ([e.qualified_name for e in self._qualified.values()] if ":" in str(name) else [])
        close = difflib.get_close_matches(str(name), candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        message = f"unknown {self.noun} '{name}'.{hint} Known: {', '.join(self.names()) or '(none)'}"
        why = self._hint(str(name)) if self._hint is not None else ""
        return f"{message} ({why})" if why else message

    def build(self, name: str, *args: Any, **params: Any) -> Any:
        return self.get(name).factory(*args, **params)


class Plugins:
    """The plugin manager and the registries (one per kind) filled from it."""

    def __init__(self, *, strict: bool | None = None, load_entry_points: bool = True):
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}  # plugin name -> "dist version"
        self.providers: dict[str, str] = {}  # plugin name -> the qualifier of its components' names
        self.failures: list[str] = []
        self.excluded: list[tuple[Any, str]] = []  # (entry point, distribution name) OOD_BENCH_PLUGINS left out
        self._order: dict[str, int] = {}  # plugin name -> position in the load order
        self.registries: dict[str, Registry] = {}
        if load_entry_points:
            self._load_entry_points()

    # -- loading -------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        selected = _selection()  # normalised name -> as the user wrote it
        matched: set[str] = set()
        known: set[str] = set()
        for ep, dist_name, dist_label in _installed_entry_points(self.fail):
            names = {_normalize(ep.name), _normalize(dist_name)}
            known |= {ep.name, dist_name}
            if selected is not None:
                if not names & selected.keys():
                    self.excluded.append((ep, dist_name))
                    continue
                matched |= names & selected.keys()
            try:
                module = ep.load()
                self.add(module, name=ep.name, distribution=dist_label, provider=dist_name)
            except PluginError as exc:  # from add(): its message names the plugin and distribution
                self.fail(str(exc), exc)
            except Exception as exc:  # a broken plugin must not take the others down
                self.fail(f"plugin '{ep.name}' from distribution {dist_label} failed to load: "
                           f"{type(exc).__name__}: {exc}", exc)
        for key in sorted((selected or {}).keys() - matched):  # a typo would silently load nothing
            name = selected[key]
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            self.fail(f"{SELECT_ENV} names '{name}', which is neither an installed plugin (entry point of "
                       f"the group '{GROUP}') nor a distribution providing one.{hint} "
                       f"Known: {', '.join(sorted(known)) or '(none)'}")

    def add(self, plugin: object, *, name: str, distribution: str = IN_PROCESS,
            provider: str | None = None) -> None:
        """Register one plugin object (a module or an instance with hookimpls).

        ``provider`` qualifies its components' names (``provider:name``); by default the
        distribution's name (``distribution`` less its version), or ``name`` for an in-process plugin.
        Raises :class:`PluginError`, registering nothing, when the name is taken, the object is
        already registered, or a hookimpl matches no hookspec or takes arguments its hookspec lacks.
        """
        if self.pm.get_plugin(name) is not None:
            raise PluginError(f"plugin name '{name}' ({distribution}) is already taken by the plugin from "
                              f"{self.distributions.get(name, IN_PROCESS)}; the second is skipped")
        if self.pm.is_registered(plugin):
            raise PluginError(f"plugin '{name}' ({distribution}) is already registered as plugin "
                              f"'{self.pm.get_name(plugin)}'")
        try:
            self.pm.register(plugin, name=name)
            # A hookimpl whose name matches no hookspec is a typo that would otherwise do nothing.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            # pluggy leaves a plugin that failed validation half-registered: take it out again.
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            message = " ".join(str(exc).split())  # one line (pluggy's messages span several)
            raise PluginError(f"plugin '{name}' ({distribution}): {message}") from None
        self.distributions[name] = distribution
        if provider is None:
            provider = name if distribution in (IN_PROCESS, "?", "") else distribution.rsplit(" ", 1)[0]
        self.providers[name] = provider
        self._order[name] = len(self._order)
        self.registries = {}  # rebuilt lazily

    def fail(self, message: str, exc: BaseException | None = None, error: type[PluginError] = PluginError) -> None:
        """A plugin's fault: one :class:`PluginLoadWarning` (strict mode: raise ``error``); the rest goes on."""
        self.failures.append(message)
        if self.strict:
            raise error(message) from exc
        warnings.warn(message, PluginLoadWarning, stacklevel=3)

    # -- registries ----------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise UnknownNameError(f"unknown component kind '{kind}'; known: {', '.join(KINDS)}")
        if kind not in self.registries:
            self.registries[kind] = self._collect(kind)
        return self.registries[kind]

    def _collect(self, kind: str) -> Registry:
        """Ask every plugin's ``register_<kind>``: built-ins first, then in load order.

        That order (not pluggy's call order, which ``tryfirst`` could change) decides what a bare
        name means when two plugins register it.
        """
        reg = Registry(kind, hint=lambda name: self._excluded_hint(kind, name))
        hook = getattr(self.pm.hook, f"register_{kind}")
        impls = sorted(hook.get_hookimpls(), key=lambda impl: self._rank(self.pm.get_name(impl.plugin)))
        for impl in impls:
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            dist = self.distributions.get(plugin_name, IN_PROCESS)
            provider = self.providers.get(plugin_name, plugin_name)

            def register(name: str, factory: Callable[..., Any] | str, *, description: str = "",
                         _p: str = plugin_name, _d: str = dist, _q: str = provider) -> None:
                problem = _registration_problem(name, factory)
                if problem:
                    self.fail(f"plugin '{_p}' ({_d}) registered {SINGULAR[kind]} {name!r} with {problem}; "
                               f"skipped")
                    return
                clash = reg.add(Entry(name, factory, _p, _d, description, kind, _q))
                if clash:
                    self.fail(clash, error=DuplicateNameError)

            try:
                impl.function(register=register)
            except PluginError as exc:
                if self.strict:  # raised by register() above: the strict mode's error
                    raise
                self.fail(f"plugin '{plugin_name}' ({dist}) failed in register_{kind}: {exc}", exc)
            except Exception as exc:
                self.fail(f"plugin '{plugin_name}' ({dist}) failed in register_{kind}: "
                           f"{type(exc).__name__}: {exc}", exc)
        return reg

    def _rank(self, plugin_name: str | None) -> tuple[int, int]:
        builtin = _normalize(self.providers.get(plugin_name or "", "")) == BUILTIN
        return (0 if builtin else 1, self._order.get(plugin_name or "", len(self._order)))

    def _excluded_hint(self, kind: str, name: str) -> str:
        """Why ``name`` may be unknown: ``OOD_BENCH_PLUGINS`` left out the plugin that provides it."""
        if not self.excluded:
            return ""
        setting = f"{SELECT_ENV}={os.environ.get(SELECT_ENV, '').strip()}"
        provider = name.partition(":")[0] if ":" in name else None
        for _ep, dist_name in self.excluded:
            if provider is not None and _normalize(provider) == _normalize(dist_name):
                return f"{setting} excludes the distribution {dist_name} that provides it"
        # The built-ins' entry points are light registration modules: safe and cheap to ask.
        for ep, dist_name in self.excluded:
            if _normalize(dist_name) != BUILTIN:
                continue
            probe = Plugins(load_entry_points=False, strict=False)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    probe.add(ep.load(), name=ep.name, provider=dist_name)
                    found = name in probe.registry(kind)
            except Exception:
                continue
            if found:
                return f"{setting} excludes the distribution {dist_name} that provides '{name}'"
        others = sorted({f"{ep.name} ({dist_name})" for ep, dist_name in self.excluded
                         if _normalize(dist_name) != BUILTIN})
        if others:
            return f"{setting} is set and excludes the plugin(s) {', '.join(others)}; one of them may provide it"
        return ""

    @property
    def datasets(self) -> Registry:
        return self.registry("datasets")

    @property
    def architectures(self) -> Registry:
        return self.registry("architectures")

    @property
    def losses(self) -> Registry:
        return self.registry("losses")

    @property
    def detectors(self) -> Registry:
        return self.registry("detectors")

    @property
    def executors(self) -> Registry:
        return self.registry("executors")

    @property
    def suites(self) -> Registry:
        return self.registry("suites")

    @property
    def reports(self) -> Registry:
        return self.registry("reports")

    @property
    def trackers(self) -> Registry:
        return self.registry("trackers")

    def versions(self) -> dict[str, str]:
        """Plugin name -> providing distribution and version (for provenance)."""
        return dict(sorted(self.distributions.items()))

    # -- errors raised inside plugins ----------------------------------------------------------
    def describe_error(self, exc: BaseException, entry: Entry | None = None) -> str:
        """One line: the error, the plugin whose code raised it and the file:line.

        The place is the innermost frame in a plugin's code (a module that registered components,
        or one that a registered factory lives in); failing that, where ``entry``'s factory is
        defined (an error raised for it by the harness's base classes); failing that, the innermost
        frame.  The harness's own errors (:class:`OodBenchError`) are returned as they are.
        """
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, OodBenchError):
            return text
        files = self._plugin_files(entry)
        frames = traceback.extract_tb(exc.__traceback__)
        for frame in reversed(frames):
            hit = files.get(os.path.realpath(frame.filename)) or _in_package(files, frame.filename)
            if hit is not None:
                plugin, dist, root = hit
                what = f"{entry._label()}, " if entry is not None and entry.plugin == plugin else \
                    f"plugin '{plugin}' ({dist}), " if plugin else f"{dist}, "
                return f"{text} (in {what}at {_short(frame.filename, root)}:{frame.lineno})"
        if entry is not None:
            where = _definition(entry)
            return f"{text} (in {entry._label()}{', defined at ' + where if where else ''})"
        if frames:
            return f"{text} (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
        return text

    def _plugin_files(self, entry: Entry | None) -> dict[str, tuple[str, str, str]]:
        """realpath of a plugin's source file -> (plugin, distribution, import root), without importing."""
        files: dict[str, tuple[str, str, str]] = {}

        def note(module_name: str | None, plugin: str, first: bool = False) -> None:
            module = sys.modules.get(module_name or "")
            path = getattr(module, "__file__", None)
            if not path:
                return
            key = os.path.realpath(path)
            if first or key not in files:
                depth = module_name.count(".") + (1 if Path(path).name == "__init__.py" else 0)
                files[key] = (plugin, self.distributions.get(plugin, IN_PROCESS),
                              str(Path(key).parents[depth]))

        for name, plugin in self.pm.list_name_plugin():
            note(plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__, name)
        for reg in self.registries.values():
            for e in reg.all_entries():
                note(_module_of(e.target), e.plugin)
        if entry is not None:
            note(_module_of(entry.target), entry.plugin, first=True)
        return files


def _module_of(target: Any) -> str | None:
    return target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", None)


def _in_package(files: dict[str, tuple[str, str, str]], filename: str) -> tuple[str, str, str] | None:
    """(no plugin, distribution, root) when ``filename`` is in the package of a plugin's module."""
    path = Path(os.path.realpath(filename))
    for key, (_, dist, root) in files.items():
        package = Path(key).parent
        if package not in (Path(root), _HARNESS) and package in path.parents:
            return "", dist, root
    return None


def _short(filename: str, root: str) -> str:
    try:
        return Path(os.path.realpath(filename)).relative_to(root).as_posix()
    except ValueError:
        return Path(filename).name


def _definition(entry: Entry) -> str:
    """``file:line`` where the entry's factory is defined, if it is imported and has source."""
    module = sys.modules.get(_module_of(entry.target) or "")
    if isinstance(entry.target, str) and module is None:
        return ""
    try:
        factory = entry.factory
        path, line = inspect.getsourcefile(factory), inspect.getsourcelines(factory)[1]
    except Exception:
        return ""
    return f"{Path(path).name}:{line}" if path else ""


def _registration_problem(name: Any, factory: Any) -> str:
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        return "a bad name (a non-empty string without ':' or surrounding spaces)"
    if isinstance(factory, str):
        module_name, sep, attr = factory.partition(":")
        if not sep or not module_name or not attr:
            return f"the factory {factory!r}, which is not an import string 'package.module:attribute'"
        return ""
    if not callable(factory):
        return f"a factory that is a {type(factory).__name__}: expected a callable or 'package.module:attribute'"
    return ""


def _installed_entry_points(fail: Callable[..., None]) -> list[tuple[Any, str, str]]:
    """(entry point, distribution name, "name version") of the group, in load order: the built-ins
    first, then by distribution name and entry-point name.

    A distribution on ``sys.path`` twice counts once (the first, as ``importlib.metadata`` does);
    one whose metadata has no name is skipped with a warning (it would have no qualified names).
    """
    found: list[tuple[Any, str, str]] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        try:
            eps = [ep for ep in dist.entry_points if ep.group == GROUP]
        except Exception:
            continue
        if not eps:
            continue
        where = str(getattr(dist, "_path", "") or "?")
        try:
            name = dist.metadata.get("Name")
            version = dist.metadata.get("Version") or "?"
        except Exception:
            name, version = None, "?"
        if not name or not str(name).strip():
            fail(f"the distribution at {where} declares plugin(s) {', '.join(sorted(ep.name for ep in eps))} "
                 f"but its metadata has no name; skipped")
            continue
        key = _normalize(name)
        if key in seen:
            continue
        seen.add(key)
        found += [(ep, str(name), f"{name} {version}") for ep in eps]
    return sorted(found, key=lambda f: (_normalize(f[1]) != BUILTIN, _normalize(f[1]), f[0].name))


def _qualify_key(qualified: str) -> str:
    provider, _, name = qualified.partition(":")
    return f"{_normalize(provider)}:{name}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _selection() -> dict[str, str] | None:
    raw = os.environ.get(SELECT_ENV)
    if raw is None or not raw.strip():
        return None
    return {_normalize(part): part.strip() for part in raw.split(",") if part.strip()}


def _normalize(name: str) -> str:
    """Names compare as PEP 503 compares distribution names: ``OOD_Bench``, ``ood.bench`` = ``ood-bench``."""
    return re.sub(r"[-_.]+", "-", str(name).strip()).lower()


_DEFAULT: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin manager, loaded on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Plugins()
    return _DEFAULT


def reset_plugins() -> None:
    """Forget the process-wide manager (tests; after installing a plugin)."""
    global _DEFAULT
    _DEFAULT = None


def lazy_plugin(kind: str, module: str, table: dict[str, tuple[str, str]]) -> object:
    """An entry point's light plugin object: its one hook, ``register_<kind>``, registers ``table``'s
    components (``name: (attribute of module, description)``) as ``"module:attribute"``, so loading
    the plugin imports nothing heavy (see docs/plugins.md, "Keeping start-up light")."""

    def register_all(self, register) -> None:
        for name, (attribute, description) in table.items():
            register(name, f"{module}:{attribute}", description=description)

    hook = f"register_{kind}"
    register_all.__name__ = register_all.__qualname__ = hook
    return type(f"Lazy{kind.title()}", (), {hook: hookimpl(register_all), "module": module, "table": table})()


def register_defined(register, table: dict[str, tuple[str, str]], namespace: dict) -> None:
    """Register ``table`` with the callables themselves, from the namespace of the module that
    defines them: for that module's own hookimpl, which runs only once the module is imported."""
    for name, (attribute, description) in table.items():
        register(name, namespace[attribute], description=description)
