"""The Python API: what the CLI does, as three calls.

* :func:`run` runs a suite into a results folder (``ood-bench run`` is a thin layer over it);
* :func:`evaluate` scores any ``nn.Module`` classifier with registered detectors and returns a
  DataFrame with the leaderboard's columns;
* :func:`load_results` reads every record of a results folder into a tidy DataFrame.

The DataFrame-returning calls need pandas (``pip install 'ood-bench[pandas]'``).
See docs/api.md for runnable examples.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from logitnorm_bench.errors import ConfigError

PANDAS_HINT = "install it with: pip install 'ood-bench[pandas]'"
_log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What :func:`run` did."""

    suite: str
    results: Path
    leaderboard: Path
    trained: int = 0  #: training runs trained (not reused) in this call
    records_ok: int = 0
    records_failed: int = 0
    runs_to_do: int = 0  #: training runs that had cells to compute when the call started
    seconds: float = 0.0
    smoke: bool = False
    counts: dict = field(default_factory=dict)
    summary: Any = None  #: a :class:`~logitnorm_bench.summary.RunSummary`: the table, failures, where things are
    log_file: Path | None = None  #: this call's log (DEBUG level)

    @property
    def ok(self) -> bool:
        return self.records_failed == 0

    def headline(self) -> str:
        """One line: what this call did."""
        if self.runs_to_do == 0:
            return f"{self.suite}: nothing left to do, every cell has its record; leaderboard: {self.leaderboard}"
        return (f"{self.suite}: trained {self.trained} run(s); {self.records_ok} record(s) ok, "
                f"{self.records_failed} failed in {self.seconds:.1f}s; leaderboard: {self.leaderboard}")


def _loading(loading: dict, stream_above_mb, loader_workers) -> dict:
    """The suite's ``defaults.loading`` with the options given (checked as the suite's keys are)."""
    import dataclasses

    from logitnorm_bench.suite import Loading

    given = {}
    if stream_above_mb is not None:
        if (isinstance(stream_above_mb, bool) or not isinstance(stream_above_mb, (int, float))
                or not (math.isfinite(stream_above_mb) and stream_above_mb >= 0)):
            raise ConfigError(f"--stream-above-mb {stream_above_mb!r}: expected a non-negative number of MiB")
        given["stream_above_mb"] = float(stream_above_mb)
    if loader_workers is not None:
        if isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or loader_workers < 0:
            raise ConfigError(f"--loader-workers {loader_workers!r}: expected a non-negative integer")
        given["loader_workers"] = loader_workers
    return dataclasses.asdict(Loading(**dict(loading, **given)))


def run(suite, results: str | Path | None = None, *, overrides: Iterable[str] = (), smoke: bool = False,
        data: str | Path | None = None, device: str = "auto", overwrite: str = "only-missing",
        executor: str = "local", executor_options: dict | None = None, download: bool = True,
        wait: float = 0, threads: int | None = None, trackers: Iterable = (), progress: str = "lines",
        log_file: bool = True, stream_above_mb: float | None = None,
        loader_workers: int | None = None) -> RunOutcome:
    """Run what is missing of ``suite`` (a bundled suite's name, a YAML path, a mapping with a suite
    file's content, or a loaded ``Suite``).

    ``threads``: torch threads per training run; None (auto) gives a small model one thread and a
    large one the cores this process or worker has (see ``worker.choose_threads``).
    ``stream_above_mb``, ``loader_workers``: override the suite's ``defaults.loading`` (streaming of
    large sets; the results are the same either way).
    ``trackers``: names, or ``(name, {option: value})`` pairs, added to the suite's own ``trackers``.
    ``progress``: ``lines`` (periodic lines through :mod:`logging`), ``bars`` (tqdm, on a terminal)
    or ``off``.  ``log_file``: write this call's log at DEBUG level to ``results/logs/``.  Progress
    and messages go through the ``logitnorm_bench`` loggers: configure :mod:`logging` (or call
    :func:`logitnorm_bench.logs.configure`) to see them.
    Records go to ``results/records/``, the leaderboard to ``results/leaderboard.csv`` (rebuilt even
    when the run is interrupted).  Bad input raises :class:`~logitnorm_bench.errors.ConfigError`
    before anything runs; a failed training or cell is recorded and counted, not raised.
    """
    import contextlib

    from logitnorm_bench import logs
    from logitnorm_bench import trackers as tracking
    from logitnorm_bench.devices import check_device_spec, resolve_device
    from logitnorm_bench.driver import OVERWRITE_MODES, default_data_root, run_plan
    from logitnorm_bench.leaderboard import write_leaderboard
    from logitnorm_bench.params import resolve_params
    from logitnorm_bench.plan import load_plan
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.progress import MODES
    from logitnorm_bench.records import ResultsLock
    from logitnorm_bench.summary import summarize

    suite_obj, plan = load_plan(suite, overrides=overrides, smoke=smoke)  # before plugins: bad files fail fast
    plan.loading = _loading(plan.loading, stream_above_mb, loader_workers)
    plugins = get_plugins()
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not (math.isfinite(wait) and wait >= 0):
        raise ConfigError(f"--wait {wait:g}: expected a non-negative, finite number of seconds")
    if overwrite not in OVERWRITE_MODES:
        raise ConfigError(f"overwrite {overwrite!r}: expected one of {', '.join(OVERWRITE_MODES)}")
    if progress not in MODES:
        raise ConfigError(f"progress {progress!r}: expected one of {', '.join(MODES)}")
    # A bad device is bad input before anything runs; workers elsewhere (Ray) check availability themselves.
    (resolve_device if executor == "local" else check_device_spec)(device)
    options = dict(executor_options or {})
    # Checked now (name, option names), built later: building an executor may start a cluster.
    resolve_params(plugins.executors.get(executor), options, key="--executor-option")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads {threads!r}: expected a positive integer or auto")
    extra = [(t, {}) if isinstance(t, str) else tuple(t) for t in trackers]
    tracker_specs = tracking.resolve([*suite_obj.trackers, *extra], plugins)
    results = Path(results) if results is not None else Path("results-smoke" if smoke else "results")
    _check_writable(results)
    if progress == "auto":
        from logitnorm_bench.progress import resolve_mode

        progress = resolve_mode(progress)
    t0 = time.perf_counter()
    with ResultsLock(results, wait=wait):
        with (logs.run_log(results) if log_file else contextlib.nullcontext()) as log_path:
            _log.debug("ood-bench %s: suite %s, results %s, executor %s %s, device %s, overwrite %s, trackers %s",
                       __import__("logitnorm_bench").__version__, suite_obj.name, results.resolve(), executor,
                       options, device, overwrite, tracker_specs)
            try:
                counts = run_plan(plan, results, Path(data) if data is not None else default_data_root(), device,
                                  overwrite, executor=executor, executor_options=options, download=download,
                                  threads=threads, trackers=tracker_specs, progress_mode=progress,
                                  suite_ref=suite if isinstance(suite, (str, Path)) else None)
            except BaseException as exc:
                _log.debug("stopped by %s: %s", type(exc).__name__, exc, exc_info=True)
                raise
            finally:
                board = write_leaderboard(results)  # also after an interrupt: nothing computed is lost
            summary = summarize(plan, results, leaderboard=board, log_file=log_path)
            outcome = RunOutcome(suite=suite_obj.name, results=results, leaderboard=board, trained=counts["trained"],
                                 records_ok=counts["records_ok"], records_failed=counts["records_failed"],
                                 runs_to_do=counts["runs"], seconds=counts.get("seconds", time.perf_counter() - t0),
                                 smoke=smoke, counts=counts, summary=summary, log_file=log_path)
            logs.file_only(_log, outcome.headline() + "\n" + summary.render())
    return outcome


def _check_writable(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--results {results}: not writable ({exc.strerror})") from None


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------


def evaluate(model, *, id_dataset: str, ood_datasets: Iterable[str], detectors: Iterable,
             data: str | Path | None = None, device: str = "cpu", evaluation: dict | None = None,
             features: Callable | None = None, head: Callable | None = None, normalize: bool = True,
             seed: int = 0, download: bool = True, smoke: bool = False, stream_above_mb: float | None = None,
             loader_workers: int | None = None):
    """Score ``model`` with registered detectors; a DataFrame, one row per detector x OOD set.

    ``model``: any classifier ``nn.Module`` taking images in [0, 1] normalised with the ID dataset's
    mean/std (``normalize=False``: taking them as they are).  If it has no ``features``/``head``
    (the harness's architecture contract), it is split at its last ``nn.Linear``, or at the
    ``features``/``head`` callables given.  ``detectors``: names, or ``(name, {param: value})``
    pairs.  ``evaluation``: the suite's evaluation protocol fields (``ood_samples``,
    ``sample_seed``, ``batch_size``, ...).  The columns are the leaderboard's (metrics in percent,
    plus an ``average`` row per detector over the OOD sets); on the same weights the numbers equal
    those ``ood-bench run`` records.  ``stream_above_mb``, ``loader_workers``: as for :func:`run`.
    """
    pd = _pandas("evaluate()")
    from torch import nn

    from logitnorm_bench.classifier import as_classifier
    from logitnorm_bench.components import DataContext, Normalized
    from logitnorm_bench.data_views import DataSources
    from logitnorm_bench.devices import resolve_device
    from logitnorm_bench.evaluation import Evaluator
    from logitnorm_bench.leaderboard import build_rows, columns
    from logitnorm_bench.params import resolve_params
    from logitnorm_bench.plan import EvaluationCell, TrainingRun, stable_hash
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import EvalProtocol, build_dataclass, check_evaluation
    from logitnorm_bench.worker import make_record

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    plugins = get_plugins()
    dev = resolve_device(device)
    protocol = build_dataclass(EvalProtocol, dict(evaluation or {}), "evaluate()", "evaluation")
    check_evaluation(protocol, "evaluate()", "evaluation")
    protocol = dict(vars(protocol))
    ood_datasets = list(ood_datasets)
    if not ood_datasets:
        raise ConfigError("ood_datasets: expected at least one OOD dataset name")
    for name in [id_dataset, *ood_datasets]:
        plugins.datasets.get(name)  # unknown names: one line with did-you-mean
    sources = DataSources(plugins, smoke)
    id_source = sources(id_dataset)
    net = as_classifier(model, features=features, head=head)
    wrapped = Normalized(net, id_source.mean, id_source.std) if normalize else net

    run = TrainingRun(run_id="evaluate", id_dataset=id_dataset, arch=type(model).__name__, arch_params={},
                      loss="(given model)", loss_params={}, seed=seed, train={}, smoke=smoke)
    cells = []
    for i, spec in enumerate(detectors):
        name, given = (spec, {}) if isinstance(spec, str) else spec
        params = resolve_params(plugins.detectors.get(name), given, key=f"detectors[{i}]")
        for ood in ood_datasets:
            cell_id = stable_hash({"detector": name, "params": params, "ood": ood, "protocol": protocol})
            cells.append(EvaluationCell(cell_id, run.run_id, name, params, ood, protocol))
    if not cells:
        raise ConfigError("detectors: expected at least one detector name")
    ctx = DataContext(root=Path(data) if data is not None else _default_data(), download=download, seed=seed)
    from logitnorm_bench.suite import Loading

    loading = Loading(**_loading({}, stream_above_mb, loader_workers))
    evaluator = Evaluator(wrapped, id_source, ctx, plugins, dev, protocol, source_for=sources, loading=loading)
    records = [make_record(run, cell, "", dev, plugins, {k: v for k, v in result.items() if k != "scores"},
                           0.0).to_json()
               for cell, result in evaluator.evaluate(cells)]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise RuntimeError("; ".join(f"{r['detector']} on {r['ood_dataset']}: {r['error']}" for r in failed))
    return pd.DataFrame(build_rows(records), columns=list(columns()))


def _default_data() -> Path:
    from logitnorm_bench.driver import default_data_root

    return default_data_root()


# ------------------------------------------------------------------------------------------
# load_results
# ------------------------------------------------------------------------------------------


def load_results(results: str | Path):
    """Every record of a results folder as a tidy DataFrame: one row per evaluation cell.

    Columns: the cell's keys (``id_dataset``, ``arch``, ``loss``, ``detector``, ``ood_dataset``,
    ``seed``, ``split``, ``status``, ``error``, ``smoke``, ``cell_id``, ``run_id``), each parameter
    as its own column (``loss_params.tau``, ``detector_params.temperature``, ...), every catalogue
    metric as a fraction (as recorded, not percent), and provenance as ``provenance.<key>``.
    """
    pd = _pandas("load_results()")
    from logitnorm_bench.metrics import METRICS
    from logitnorm_bench.records import ResultsDir

    root = Path(results)
    if not (root / "records").is_dir():
        raise ConfigError(f"{root}: not a results folder (no records/ in it)")
    rows = []
    for rec in ResultsDir(root).records():
        row = {k: rec.get(k) for k in ("cell_id", "run_id", "status", "error", "smoke", "suite", "id_dataset",
                                       "arch", "loss", "detector", "ood_dataset", "seed", "split", "weights")}
        for kind in ("arch_params", "loss_params", "detector_params"):
            for k, v in sorted((rec.get(kind) or {}).items()):
                row[f"{kind}.{k}"] = v
        for m in METRICS.values():
            row[m.name] = (rec.get(m.record_key) or {}).get(m.name)
        for k, v in sorted((rec.get("provenance") or {}).items()):
            if not isinstance(v, (dict, list)):
                row[f"provenance.{k}"] = v
        row["experiments"] = ",".join(rec.get("experiments") or [])
        row["created"] = rec.get("created")
        rows.append(row)
    return pd.DataFrame(rows)


def _pandas(what: str):
    try:
        import pandas
    except ImportError:
        raise ConfigError(f"{what} returns a pandas DataFrame, and pandas is not installed; {PANDAS_HINT}") from None
    return pandas
