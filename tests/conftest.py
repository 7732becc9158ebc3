"""Shared fixtures."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch


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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-tensor tests.

    One thread is faster and much steadier than two on a busy 2-core machine, where OpenMP's
    barriers can make small ops 10-100x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(tmp_path):
    """Serve a fresh folder on 127.0.0.1 (loopback only); returns (folder, base_url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
