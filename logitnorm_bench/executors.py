"""Executors: what runs a plan's training runs.  Plugins too (hook ``register_executors``).

An executor is built with ``factory(**options)`` and has ``run(payloads) -> iterator of summaries``:
each payload is the keyword arguments of :func:`logitnorm_bench.runner.execute_run`, a unit that
trains one run and writes its records to the shared results folder itself.  Record format and
resumption therefore do not depend on the executor.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Iterable, Iterator

from logitnorm_bench import hookimpl


def _call(payload: dict) -> dict:
    from logitnorm_bench.runner import execute_run

    return execute_run(**payload)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """Runs in this process (``jobs=1``) or in ``jobs`` worker processes, each given a device in turn.

    ``devices``: a list such as ``["cuda:0", "cuda:1"]``; job i uses ``devices[i % len(devices)]``
    (several workers on one GPU, or one per GPU).  Empty: every job uses the run's ``--device``.
    """

    def __init__(self, jobs: int = 1, devices: list[str] | None = None):
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        self.jobs, self.devices = jobs, list(devices or [])

    def _assign(self, payloads: list[dict]) -> list[dict]:
        if not self.devices:
            return payloads
        return [dict(p, device=self.devices[i % len(self.devices)]) for i, p in enumerate(payloads)]

    def run(self, payloads: Iterable[dict]) -> Iterator[dict]:
        payloads = self._assign(list(payloads))
        if self.jobs == 1:
            for p in payloads:
                yield _call(p)
            return
        # spawn, not fork: torch's thread pools do not survive a fork.
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.jobs)  # workers must not oversubscribe the cores
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_call, p) for p in payloads]
            for fut in as_completed(futures):
                yield fut.result()


@hookimpl
def register_executors(register):
    register("local", LocalExecutor, description="this machine: sequential, or --jobs N worker processes")
