"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def plugin_env(monkeypatch):
    """A clean plugin environment; returns ``monkeypatch`` for setting the plugin env vars.

    ``OOD_BENCH_PLUGINS`` and ``OOD_BENCH_STRICT_PLUGINS`` start unset, and the process-wide plugin
    manager (``get_plugins()``) is reset before and after the test, so what a test sets up (env vars,
    ``sys.path``) takes effect and nothing leaks into the next test.
    """
    from logitnorm_bench import plugins

    monkeypatch.delenv(plugins.SELECT_ENV, raising=False)
    monkeypatch.delenv(plugins.STRICT_ENV, raising=False)
    plugins.reset_plugins()
    yield monkeypatch
    plugins.reset_plugins()
