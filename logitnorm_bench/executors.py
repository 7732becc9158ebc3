"""Executors: what runs a plan's training runs.  Plugins too (hook ``register_executors``).

An executor is built with ``factory(**options)`` and has ``run(payloads) -> iterator of summaries``:
each payload is the keyword arguments of :func:`logitnorm_bench.worker.execute_run`, a unit that
trains one run and writes its records to the shared results folder itself.  Record format and
resumption therefore do not depend on the executor.

Two executors are built in:

``local``
    This machine: in this process (``jobs=1``) or in ``jobs`` spawned worker processes.
``ray``
    One Ray task per training run, on a local Ray instance or an existing cluster (needs
    ``pip install 'ood-bench[ray]'``).

Both retry a run whose worker process died (killed, out of memory, a node lost) up to
``max_retries`` times; since ``execute_run`` resumes from its checkpoint and skips the records that
exist, a retry continues the training rather than restarting it.  A run whose worker died on every
attempt gives a summary with ``error`` set and all its cells counted as failed (no records are
written for it, so the next ``ood-bench run`` tries it again); the other runs go on.  An exception
that escapes ``execute_run`` itself (bad input such as an unusable device, or a harness bug) stops
the grid: the runs not yet started are cancelled and the exception is raised in the driver.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from logitnorm_bench import hookimpl
from logitnorm_bench.errors import ConfigError

WorkFn = Callable[..., dict]
log = logging.getLogger(__name__)


def _execute_run(**payload) -> dict:
    from logitnorm_bench.worker import execute_run

    return execute_run(**payload)


_WORKER_DEVICE: str | None = None  # set in a pool worker given its own device (--devices)


def _call(payload: dict, fn: WorkFn | None = None) -> dict:
    if _WORKER_DEVICE is not None:
        payload = dict(payload, device=_WORKER_DEVICE)
    return (fn or _execute_run)(**payload)


def _tracked_call(payload: dict, fn: WorkFn | None, marker: str) -> dict:
    """In a pool worker: note which process took the run (for blaming a crash), then run it."""
    Path(marker).write_text(str(os.getpid()))
    return _call(payload, fn)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel sends this worker SIGTERM when its parent dies, even by SIGKILL, so no
    orphaned worker keeps training and writing into a results folder nobody holds the lock of."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup (_stop_pool) still applies
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int, devices: list[str] | None = None, counter=None, parent_pid: int = 0) -> None:
    global _WORKER_DEVICE
    import torch

    if parent_pid:
        _die_with_parent(parent_pid)

    torch.set_num_threads(threads)
    if devices and counter is not None:
        with counter.get_lock():  # worker k of the pool keeps devices[k % len(devices)]
            k = counter.value
            counter.value += 1
        _WORKER_DEVICE = devices[k % len(devices)]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _crash_summary(payload: dict, message: str) -> dict:
    """The summary of a run whose worker died on every attempt: all its cells count as failed."""
    run = payload.get("run") or {}
    cells = payload.get("cells") or []
    return {"run_id": run.get("run_id"), "trained": False, "records_ok": 0,
            "records_failed": len(cells) if isinstance(cells, list) else 0, "error": message}


def _log(message: str) -> None:
    log.warning(message)


def _label(payload: dict) -> str:
    run = payload.get("run") or {}
    return str(run.get("run_id") or f"payload {payload.get('index', '?')}")


def _absolute_paths(payload: dict) -> dict:
    """Workers may have another working directory (Ray's do): hand them absolute folders."""
    out = dict(payload)
    for key in ("results_root", "data_root"):
        if isinstance(out.get(key), (str, os.PathLike)):
            out[key] = os.path.abspath(os.fspath(out[key]))
    return out


class LocalExecutor:
    """Runs in this process (``jobs=1``) or in ``jobs`` worker processes, each given a device in turn.

    ``devices``: a list such as ``["cuda:0", "cuda:1"]``.  With ``jobs > 1`` worker process k uses
    ``devices[k % len(devices)]`` for every run it takes (``jobs == len(devices)``: one worker per
    GPU; ``jobs = 2 * len(devices)``: two per GPU), so a GPU never gets a second run while another
    idles.  With ``jobs == 1`` run i uses ``devices[i % len(devices)]``.  Empty: every run uses its
    ``--device``.

    With ``jobs > 1`` the workers are spawned (not forked: torch's thread pools do not survive a
    fork), each with ``cpus // jobs`` torch threads so that they do not oversubscribe the cores.  A
    worker that dies (killed, out of memory) breaks the process pool; the pool is rebuilt and the
    runs it had in hand are resubmitted.  A run whose own worker died is retried at most
    ``max_retries`` times; the runs that only went down with the pool are not charged a retry.

    ``fn``: what runs a payload (default :func:`logitnorm_bench.worker.execute_run`); it must be
    picklable by reference (a module-level function) when ``jobs > 1``.
    """

    def __init__(self, jobs: int = 1, devices: list[str] | None = None, max_retries: int = 2,
                 fn: WorkFn | None = None):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ConfigError(f"--jobs must be a positive integer, got {jobs!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.jobs, self.devices = jobs, list(devices or [])
        self.max_retries, self.fn = max_retries, fn

    def _check_devices(self) -> None:
        from logitnorm_bench.devices import resolve_device

        for d in self.devices:  # a bad --devices entry is bad input: say so before anything runs
            resolve_device(d, option="--devices")

    def run(self, payloads: Iterable[dict]) -> Iterator[dict]:
        payloads = list(payloads)
        self._check_devices()
        if self.jobs == 1:
            for i, p in enumerate(payloads):
                if self.devices:
                    p = dict(p, device=self.devices[i % len(self.devices)])
                yield _call(p, self.fn)
            return
        yield from self._run_pool(payloads)

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        workers = max(1, min(self.jobs, n))
        threads = max(1, _usable_cpus() // workers)
        counter = ctx.Value("i", 0) if self.devices else None
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(threads, self.devices or None, counter, os.getpid()))

    def _run_pool(self, payloads: list[dict]) -> Iterator[dict]:
        todo = list(range(len(payloads)))  # indices still to run, in plan order
        attempts = [0] * len(payloads)
        track = tempfile.mkdtemp(prefix="ood-bench-pool-")  # started-run markers: index -> worker pid
        try:
            while todo:
                pool = self._new_pool(len(todo))
                procs = pool._processes  # pid -> Process; kept by the pool after it breaks
                futures = {pool.submit(_tracked_call, payloads[i], self.fn, os.path.join(track, str(i))): i
                           for i in todo}
                todo, crashed, clean = [], [], False
                try:
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            i = futures[fut]
                            try:
                                summary = fut.result()
                            except BrokenProcessPool:
                                crashed.append(i)
                                continue
                            yield summary
                    clean = True
                finally:
                    if clean:
                        pool.shutdown(wait=True)
                    else:  # interrupted, closed early, or an exception escaped a worker: stop now
                        _stop_pool(pool)
                if not crashed:
                    continue
                # A dead worker breaks the whole pool: every run it had in hand or queued fails with
                # it.  Only runs that were running in a worker that died by itself (not the SIGTERM
                # the pool sends to the others) use up a retry.
                started = {}
                for i in crashed:
                    marker = Path(track, str(i))
                    if marker.exists():
                        try:
                            started[i] = int(marker.read_text() or -1)
                        except ValueError:
                            started[i] = -1
                        marker.unlink(missing_ok=True)
                died = {pid for pid, proc in list((procs or {}).items())
                        if proc.exitcode is not None and proc.exitcode != -signal.SIGTERM}
                culprits = {i for i, pid in started.items() if pid in died} or set(started)
                for i in crashed:
                    if i in culprits:
                        attempts[i] += 1
                    if attempts[i] > self.max_retries:
                        msg = (f"the worker process running {_label(payloads[i])} died "
                               f"{attempts[i]} time(s); giving up on this run")
                        _log(msg)
                        yield _crash_summary(payloads[i], f"WorkerCrashed: {msg}")
                    else:
                        todo.append(i)
                if todo:
                    _log(f"a worker process died; retrying {len(todo)} run(s) in a new pool "
                         f"(they resume from their checkpoints)")
        finally:
            shutil.rmtree(track, ignore_errors=True)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers at once (checkpoints are written atomically
    and the per-run locks die with their processes, so a rerun resumes cleanly)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


# ------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed ({exc}); install it with "
                          f"pip install 'ood-bench[ray]'") from None
    return ray


def _ray_task(fn: WorkFn | None, payload: dict, threads: int) -> dict:
    """The body of one Ray task (a plain function: Ray wraps it in ``ray.remote`` at run time)."""
    if threads:
        import torch

        torch.set_num_threads(threads)  # workers are reused between tasks: set it every time
    return _call(payload, fn)


class RayExecutor:
    """One Ray task per training run; summaries are yielded as the tasks finish.

    Options (``factory(**options)``):

    ``address``
        An existing cluster: ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:10001"``
        (``ray.init(address=...)``).  ``None``: use the Ray this process is already connected to,
        else the cluster named by ``$RAY_ADDRESS``, else start a local Ray instance for the run and
        stop it afterwards.  A cluster this executor did not start is never shut down; it only
        disconnects from it, and only if it connected.
    ``local_cpus``, ``local_gpus``
        Size of the local Ray instance it starts (default: everything on this machine).
    ``num_cpus``
        CPUs per task (default 1); inside a task torch uses ``max(1, int(num_cpus))`` threads.
    ``num_gpus``
        GPUs per task.  ``None`` (default): 1 when the payload's device is ``cuda``/``cuda:N``,
        or ``auto`` on a cluster that has GPUs; else 0.  A fraction (0.5) packs runs on a GPU.
        Ray sets ``CUDA_VISIBLE_DEVICES`` for the task, so the task's device becomes ``cuda``;
        a task without a GPU runs on ``cpu`` when the device was ``auto``.
    ``max_retries``
        How often a task whose worker died is run again (default 3); it resumes from its checkpoint.
    ``jobs``
        At most this many tasks in flight (default: no limit; Ray schedules by resources).
    ``devices``
        Not used: Ray assigns the GPUs (give ``--device cuda``).  A non-empty list is an error.
    ``resources``
        Custom Ray resources per task, e.g. ``{"big_gpu": 1}``.
    ``runtime_env``, ``init_options``
        Passed to ``ray.init`` (e.g. ``{"pip": [...]}`` or ``{"working_dir": ...}`` for nodes that
        lack the harness or its plugins).
    ``fn``
        What runs a payload (default :func:`logitnorm_bench.worker.execute_run`); tests use it.
    """

    #: (flag, option, help): ``ood-bench run`` flags this executor owns (see cli._add_executor_flags).
    CLI_OPTIONS = (("--ray-address", "address", "address of an existing Ray cluster"),)

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float | None = None,
                 max_retries: int = 3, jobs: int | None = None, devices: list[str] | None = None,
                 local_cpus: int | None = None, local_gpus: int | None = None,
                 resources: dict[str, float] | None = None, runtime_env: dict | None = None,
                 init_options: dict[str, Any] | None = None, fn: WorkFn | None = None):
        self.ray = _import_ray()
        if devices:
            raise ConfigError("--devices is for the local executor; Ray assigns GPUs to its tasks itself "
                              "(use --device cuda, or --device auto on a cluster with GPUs)")
        for name, value, lo in (("num_cpus", num_cpus, 0), ("num_gpus", num_gpus, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value < lo):
                raise ConfigError(f"ray executor: {name} must be a number >= {lo}, got {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise ConfigError(f"ray executor: max_retries must be an integer >= -1, got {max_retries!r}")
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise ConfigError(f"--jobs must be a positive integer, got {jobs!r}")
        self.address = address or None
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.max_retries, self.jobs = max_retries, jobs
        self.local_cpus, self.local_gpus = local_cpus, local_gpus
        self.resources = dict(resources or {})
        self.runtime_env, self.init_options = runtime_env, dict(init_options or {})
        self.fn = fn

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Connect (or start); True when this executor called ``ray.init`` and must shut down."""
        ray = self.ray
        if ray.is_initialized():
            if self.address:
                _log(f"Ray is already initialised in this process; ignoring address {self.address!r}")
            return False
        opts = dict(self.init_options)
        if self.runtime_env is not None:
            opts["runtime_env"] = self.runtime_env
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address and address != "local":
            opts["address"] = address
        else:  # a fresh local instance, just for this run
            opts.setdefault("include_dashboard", False)
            if self.local_cpus is not None:
                opts["num_cpus"] = self.local_cpus
            if self.local_gpus is not None:
                opts["num_gpus"] = self.local_gpus
            if address == "local":
                opts["address"] = "local"
        try:
            ray.init(**opts)
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc})") from None
        return True

    # -- placement -------------------------------------------------------------------------

    def _placement(self, device: str, cluster_gpus: float) -> tuple[float, str]:
        """(GPUs to ask for, the device the task uses) for a payload's ``device``."""
        device = str(device or "auto")
        wants_cuda = device.startswith("cuda")
        if self.num_gpus is not None:
            gpus = float(self.num_gpus)
        elif wants_cuda or (device == "auto" and cluster_gpus > 0):
            gpus = 1.0
        else:
            gpus = 0.0
        if gpus > 0 and (wants_cuda or device == "auto"):
            # Ray exposes the task's GPU(s) through CUDA_VISIBLE_DEVICES: index 0 is ours.
            device = "cuda"
        elif device == "auto":
            device = "cpu"  # never take a GPU that Ray did not assign to this task
        return gpus, device

    def _options(self, gpus: float) -> dict:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": gpus,
                                "max_retries": self.max_retries, "retry_exceptions": False}
        if self.resources:
            opts["resources"] = self.resources
        return opts

    # -- running ---------------------------------------------------------------------------

    def run(self, payloads: Iterable[dict]) -> Iterator[dict]:
        payloads = [_absolute_paths(p) for p in payloads]
        if not payloads:
            return
        ray = self.ray
        started = self._connect()
        remote = ray.remote(_ray_task)
        fn_ref = ray.put(self.fn) if self.fn is not None else None
        threads = max(1, int(self.num_cpus)) if self.num_cpus else 0
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        queue = list(payloads)
        in_flight: dict[Any, dict] = {}
        finished = False
        try:
            while queue or in_flight:
                while queue and (self.jobs is None or len(in_flight) < self.jobs):
                    p = queue.pop(0)
                    gpus, device = self._placement(p.get("device", "auto"), cluster_gpus)
                    p = dict(p, device=device)
                    ref = remote.options(**self._options(gpus)).remote(fn_ref, p, threads)
                    in_flight[ref] = p
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    p = in_flight.pop(ref)
                    yield self._result(ref, p)
            finished = True
        finally:
            if not finished:
                for ref in in_flight:  # interrupted or failed: do not leave tasks running
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - already finished or gone
                        pass
            if started:
                ray.shutdown()  # stops the local instance we started; only disconnects from a cluster

    def _result(self, ref, payload: dict) -> dict:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # an exception escaped the work function
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:  # worker or node died on every attempt, OOM, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            msg = (f"the Ray task running {_label(payload)} failed after {self.max_retries} "
                   f"retr{'y' if self.max_retries == 1 else 'ies'}: {type(exc).__name__}: {first}")
            _log(msg)
            return _crash_summary(payload, msg)


@hookimpl
def register_executors(register):
    register("local", LocalExecutor, description="this machine: sequential, or --jobs N worker processes")
    register("ray", RayExecutor,
             description="a Ray task per training run, local or on a cluster (--ray-address); "
                         "needs ood-bench[ray]")
