"""Component parameters resolved against the factory's signature.

Filling in the factory's defaults makes a loss ``l`` and ``l`` with ``{tau: 0.04}`` (its default) the same
training run (one hash), and lets an unknown parameter fail before anything runs.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from logitnorm_bench.errors import ConfigError

# Arguments the harness passes itself, never from a suite.
HARNESS_ARGS = {"num_classes", "input_shape"}


def resolve_params(entry, params: dict | None, *, file: str | None = None, key: str | None = None) -> dict:
    params = dict(params or {})
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # builtins without a signature: take params as given
        return params
    accepted = {n: p for n, p in sig.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in HARNESS_ARGS}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    for name in params:
        if name not in accepted and not takes_any:
            close = difflib.get_close_matches(name, list(accepted), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown parameter '{name}' of {entry.name}{hint}; expected one of "
                              f"{', '.join(accepted) or '(none)'}", file=file, key=f"{key}.{name}" if key else name)
    resolved = {n: p.default for n, p in accepted.items() if p.default is not inspect.Parameter.empty}
    for name, value in params.items():
        default = resolved.get(name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # {temperature: 1} is {temperature: 1.0}: one hash, one run
        resolved[name] = value
    missing = [n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in resolved]
    if missing:
        raise ConfigError(f"{entry.name} needs parameter(s) {', '.join(missing)}", file=file, key=key)
    return _plain(resolved)


def _plain(value: Any) -> Any:
    """Tuples to lists and so on, so that the params hash the same way they are written to JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resolve_dataset_params(entry, params: dict | None, *, file: str | None = None, key: str | None = None) -> dict:
    """A dataset's params as checked and kept: only what differs from the factory's defaults.

    So ``{}`` (and a mapping that repeats a default) hashes as before dataset params existed, and every
    suite that sets none keeps its run and cell ids.  Given params are type-checked against the
    defaults and the source is built once with them (its ValueError / TypeError is a one-line error);
    the data itself is not read here (``ood-bench data`` and the run's data check do that).
    """
    given = dict(params or {})
    resolved = resolve_params(entry, given, file=file, key=key)
    defaults = _defaults(entry)
    for name in given:
        if name in defaults and name in resolved:
            _check_type(entry, name, resolved[name], defaults[name], file, f"{key}.{name}" if key else name)
    kept = {k: v for k, v in resolved.items() if k not in defaults or v != defaults[k]}
    if kept:
        try:
            entry.factory(**kept)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{entry.name} rejects {kept!r}: {exc}", file=file, key=key) from None
    return kept


def _defaults(entry) -> dict:
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        return {}
    return {n: _plain(p.default) for n, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and n not in HARNESS_ARGS}


def _check_type(entry, name: str, value: Any, default: Any, file: str | None, key: str) -> None:
    """``value`` has the kind of ``default`` (a default of None takes anything the factory accepts)."""
    if default is None:
        return
    expected = None
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, expected = isinstance(value, list), "a list"
    else:
        ok = True
    if not ok:
        raise ConfigError(f"got {value!r}; expected {expected} (parameter '{name}' of {entry.name}, "
                          f"default {default!r})", file=file, key=key)
