"""Plugin loading (pluggy + entry points) and the component registries.

Entry points of the group ``ood_bench`` are loaded one by one, by us rather than by pluggy's
``load_setuptools_entrypoints``: that one lets an exception raised while importing one broken
plugin take the whole CLI down.  Here a broken plugin gives one warning naming its distribution
and the error, and everything else still works (``OOD_BENCH_STRICT_PLUGINS=1`` makes it an error).

``OOD_BENCH_PLUGINS=name1,name2`` loads only the entry points or distributions named (``ood-bench``
is the distribution of the built-ins); unset, every installed plugin loads.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from logitnorm_bench import hookspecs
from logitnorm_bench.errors import DuplicateNameError, PluginError, UnknownNameError

GROUP = "ood_bench"
KINDS = ("datasets", "architectures", "losses", "detectors", "executors", "suites", "reports", "trackers")
SINGULAR = {"datasets": "dataset", "architectures": "architecture", "losses": "loss", "detectors": "detector",
            "executors": "executor", "suites": "suite", "reports": "report section", "trackers": "tracker"}
STRICT_ENV = "OOD_BENCH_STRICT_PLUGINS"
SELECT_ENV = "OOD_BENCH_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or registered; the others still work."""


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    plugin: str  #: the plugin (entry point) that registered it
    distribution: str  #: the distribution providing it, with its version
    description: str = ""


class Registry:
    """Named factories of one kind.  Duplicates are errors; unknown names suggest close matches."""

    def __init__(self, kind: str):
        self.kind = kind
        self.noun = SINGULAR.get(kind, kind)  #: "loss" for "losses", in messages
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None:
            raise DuplicateNameError(
                f"{self.noun} '{entry.name}' is registered twice: by plugin '{old.plugin}' "
                f"({old.distribution}) and by plugin '{entry.plugin}' ({entry.distribution})"
            )
        self._entries[entry.name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.noun} '{name}'.{hint} Known: {', '.join(self.names()) or '(none)'}"

    def build(self, name: str, *args: Any, **params: Any) -> Any:
        return self.get(name).factory(*args, **params)


class Plugins:
    """The plugin manager and the registries (one per kind) filled from it."""

    def __init__(self, *, strict: bool | None = None, load_entry_points: bool = True):
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}  # plugin name -> "dist version"
        self.failures: list[str] = []
        if load_entry_points:
            self._load_entry_points()
        self.registries: dict[str, Registry] = {}

    # -- loading -------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        selected = _selection()  # normalised name -> as the user wrote it
        matched: set[str] = set()
        known: set[str] = set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            dist_label = f"{dist_name} {dist.version}" if dist is not None else "?"
            names = {_normalize(ep.name), _normalize(dist_name)}
            known |= {ep.name, dist_name} if dist is not None else {ep.name}
            if selected is not None:
                if not names & selected.keys():
                    continue
                matched |= names & selected.keys()
            try:
                module = ep.load()
                self.add(module, name=ep.name, distribution=dist_label)
            except PluginError as exc:  # from add(): its message names the plugin and distribution
                self._fail(str(exc), exc)
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(f"plugin '{ep.name}' from distribution {dist_label} failed to load: "
                           f"{type(exc).__name__}: {exc}", exc)
        for key in sorted((selected or {}).keys() - matched):  # a typo would silently load nothing
            name = selected[key]
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            self._fail(f"{SELECT_ENV} names '{name}', which is neither an installed plugin (entry point of "
                       f"the group '{GROUP}') nor a distribution providing one.{hint} "
                       f"Known: {', '.join(sorted(known)) or '(none)'}")

    def add(self, plugin: object, *, name: str, distribution: str = "(in-process)") -> None:
        """Register one plugin object (a module or an instance with hookimpls).

        Raises :class:`PluginError`, registering nothing, when the name is taken, the object is
        already registered, or a hookimpl matches no hookspec or takes arguments its hookspec lacks.
        """
        if self.pm.get_plugin(name) is not None:
            raise PluginError(f"plugin name '{name}' ({distribution}) is already taken by the plugin from "
                              f"{self.distributions.get(name, '(in-process)')}")
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
        self.registries = {}  # rebuilt lazily

    def _fail(self, message: str, exc: BaseException | None = None) -> None:
        self.failures.append(message)
        if self.strict:
            raise PluginError(message) from exc
        warnings.warn(message, PluginLoadWarning, stacklevel=3)

    # -- registries ----------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise UnknownNameError(f"unknown component kind '{kind}'; known: {', '.join(KINDS)}")
        if kind not in self.registries:
            self.registries[kind] = self._collect(kind)
        return self.registries[kind]

    def _collect(self, kind: str) -> Registry:
        reg = Registry(kind)
        hook = getattr(self.pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():  # registration order (pluggy *calls* them last-registered first)
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            dist = self.distributions.get(plugin_name, "(in-process)")

            def register(name: str, factory: Callable[..., Any], *, description: str = "",
                         _p: str = plugin_name, _d: str = dist) -> None:
                reg.add(Entry(name, factory, _p, _d, description))

            try:
                impl.function(register=register)
            except DuplicateNameError:
                raise
            except Exception as exc:
                self._fail(f"plugin '{plugin_name}' ({dist}) failed in register_{kind}: "
                           f"{type(exc).__name__}: {exc}", exc)
        return reg

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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _selection() -> dict[str, str] | None:
    raw = os.environ.get(SELECT_ENV)
    if raw is None or not raw.strip():
        return None
    return {_normalize(part): part.strip() for part in raw.split(",") if part.strip()}


def _normalize(name: str) -> str:
    """Names compare as PEP 503 compares distribution names: ``OOD_Bench``, ``ood.bench`` = ``ood-bench``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


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
