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


def tiny_suite_doc(*, name: str = "tiny", epochs: int = 2, crop_padding: int = 1, ood_samples: int = 300,
                   id_val_samples: int = 100, **matrix) -> dict:
    """A small suite on the bundled digits (seconds on a CPU); ``matrix`` keys override the defaults."""
    grid = {"id_dataset": ["digits"], "arch": ["digits_mlp"], "arch_params": [{"width": 32}],
            "loss": ["ce", "logitnorm"], "detector": ["msp", "energy"], "ood_dataset": ["uniform_noise"],
            "seed": [0]}
    grid.update(matrix)
    return {"suite": name, "version": 1,
            "defaults": {"train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "schedule": "cosine",
                                   "crop_padding": crop_padding, "hflip": False},
                         "evaluation": {"ood_samples": ood_samples, "batch_size": 512,
                                        "id_val_samples": id_val_samples}},
            "experiments": {"e": {"matrix": grid}}}


@pytest.fixture(scope="session")
def tiny_suite():
    """``tiny_suite(path, select=None, include=None, **tiny_suite_doc options)`` writes one and returns ``path``."""
    import yaml

    def write(path, *, select=None, include=None, **options):
        doc = tiny_suite_doc(**options)
        if select is not None:
            doc["experiments"]["e"]["select"] = select
        if include is not None:
            doc["experiments"]["e"]["include"] = include
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


def write_fake_record(results, record: dict) -> None:
    """Write a hand-made record (tables and report tests) as the harness would: it must be a valid record
    of the current schema, or the readers rightly leave it out."""
    from logitnorm_bench.records import RECORD_SCHEMA, Record, atomic_write_json

    record = {"schema": RECORD_SCHEMA, **record}
    Record.from_json(record, current_only=True)
    atomic_write_json(results.record_path(record["cell_id"]), record)
