"""Experiment trackers: plugins told what each training run does (hook ``register_trackers``).

A tracker is switched on from the suite (``trackers: [tensorboard, mlflow]``, or a mapping of
name to options) or the command line (``ood-bench run --tracker tensorboard --tracker mlflow``).
Its factory is called once per training run in the process that runs it, and gets the events of
:class:`logitnorm_bench.components.Tracker`.  Two are built in:

``tensorboard``
    Event files under ``RESULTS/tensorboard/<run_id>/`` (``log_dir`` to put them elsewhere): the
    per-epoch scalars (``train/loss``, ``train/train_acc``, ``train/lr``, ...), each record's metrics
    (``eval/<detector>/<ood set>/fpr95``, ...) and the run's configuration as hparams.  Needs
    ``pip install 'ood-bench[tensorboard]'``; view with ``tensorboard --logdir RESULTS/tensorboard``.
``mlflow``
    One MLflow run per training run (a rerun or a resumed training continues it), in the local
    store ``file:RESULTS/mlruns`` unless ``tracking_uri`` names another; experiment = the suite's
    name (``experiment`` to choose).  Params = the configuration, metrics = the per-epoch curves
    (step = epoch) and the records' metrics.  Needs ``pip install 'ood-bench[mlflow]'``.

A tracker that raises is logged once (per process) and left out for the rest of that run; the run
goes on.  ``examples/ood-bench-wandb`` is Weights & Biases as a third-party tracker plugin.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from logitnorm_bench import hookimpl
from logitnorm_bench.errors import ConfigError

log = logging.getLogger(__name__)

_WARNED: set[str] = set()  #: trackers whose failure this process has already reported


@dataclass
class TrackedRun:
    """The training run a tracker follows."""

    run_id: str  #: the harness's run id (the hash of everything that shapes the weights)
    label: str  #: ``id_dataset/arch/loss/seedN``
    suite: str
    config: dict  #: the run: id_dataset, arch, arch_params, loss, loss_params, seed, train (the recipe), weights
    results: Path  #: the results folder (absolute)
    mode: str  #: ``train`` (trains or resumes now), ``reuse`` (trained weights found) or ``weights`` (given)
    start_epoch: int = 0  #: the epoch it resumes after (0: from the start)


class Tracker:
    """An experiment tracker (TensorBoard, MLflow, Weights & Biases, ...): told what a run does.

    ``factory(**options)`` is called once per training run, in the process that runs it (a worker
    with ``--jobs`` or Ray), and the methods below are called in this order; each is optional.  A
    tracker that raises is logged once and left out for the rest of that run: it never fails a run.
    """

    def run_started(self, run: TrackedRun) -> None:
        """Before training (or, for trained or given weights, before the evaluation)."""

    def epoch_ended(self, run: TrackedRun, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch: ``loss``, ``train_acc``, ``lr``, ``seconds`` and the logit-norm curve."""

    def record_written(self, run: TrackedRun, record: dict) -> None:
        """After each evaluation cell's record is written (its JSON form: ``status``, ``metrics``,
        ``run_metrics``, ``detector``, ``ood_dataset``, ``split``, ...)."""

    def run_finished(self, run: TrackedRun, status: str, error: str | None = None) -> None:
        """At the end: ``status`` is ``ok`` or ``failed`` (then ``error`` says why)."""


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; lists and None as text (for hparams/params)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def cell_metric_prefix(record: dict) -> str:
    """``eval/<detector>[_<params>]/<ood set>`` (``val/...`` for a selection's validation cell)."""
    params = "_".join(f"{k}{v}" for k, v in sorted((record.get("detector_params") or {}).items()))
    detector = f"{record['detector']}_{params}" if params else record["detector"]
    split = "val" if record.get("split") == "val" else "eval"
    return _safe_key(f"{split}/{detector}/{record['ood_dataset']}")


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def _numbers(metrics: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# ------------------------------------------------------------------------------------------
# Switching trackers on: names and options, checked before anything runs
# ------------------------------------------------------------------------------------------


def parse_specs(value: Any, where: str = "trackers", file: str | None = None) -> list[tuple[str, dict]]:
    """A suite's ``trackers`` (a list of names or ``{name: options}``, or a mapping of name to
    options or null) as ``[(name, options)]``."""
    if value is None:
        return []
    items: Iterable
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                items.append((item, {}))
            elif isinstance(item, dict) and len(item) == 1:
                items.append(next(iter(item.items())))
            else:
                raise ConfigError(f"got {item!r}; expected a tracker name or {{name: {{option: value}}}}",
                                  file=file, key=f"{where}[{i}]")
    else:
        raise ConfigError(f"got {value!r}; expected a list of tracker names or a mapping of name to options",
                          file=file, key=where)
    out = []
    for name, options in items:
        if not isinstance(name, str):
            raise ConfigError(f"got {name!r}; expected a tracker name", file=file, key=where)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"got {options!r}; expected a mapping of option to value", file=file,
                              key=f"{where}.{name}")
        out.append((name, dict(options)))
    return out


def resolve(specs: Iterable[tuple[str, dict]], plugins) -> list[tuple[str, dict]]:
    """Known names, known options, installed packages: one line of bad input otherwise."""
    from logitnorm_bench.params import resolve_params

    merged: dict[str, dict] = {}
    for name, options in specs:  # the same name again (the command line after the suite) adds options
        merged[name] = {**merged.get(name, {}), **options}
    out = []
    for name, options in merged.items():
        entry = plugins.trackers.get(name)
        params = resolve_params(entry, options, key=f"trackers.{name}")
        for module, extra in getattr(entry.factory, "REQUIRES", ()):
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"tracker {name} needs the {module} package, which is not installed; "
                                  f"install it with: pip install '{extra}'")
        out.append((name, params))
    return out


# ------------------------------------------------------------------------------------------
# Running them: one set per training run, in the worker
# ------------------------------------------------------------------------------------------


class Trackers:
    """The trackers of one training run; every call is guarded (a failure is logged once and that
    tracker is left out for the rest of the run)."""

    def __init__(self, specs: Iterable, plugins, run: TrackedRun):
        self.run = run
        self.active: list[tuple[str, Any]] = []
        for name, options in specs or ():
            try:
                self.active.append((name, plugins.trackers.build(name, **(options or {}))))
            except Exception as exc:  # noqa: BLE001 - a tracker never fails a run
                self._failed(name, "its factory", exc)

    def __bool__(self) -> bool:
        return bool(self.active)

    def _failed(self, name: str, where: str, exc: BaseException) -> None:
        message = (f"tracker {name} failed in {where}: {type(exc).__name__}: {exc}; it is off for the rest of "
                   "this run, which goes on")
        if name in _WARNED:
            log.debug(message, exc_info=True)
        else:
            _WARNED.add(name)
            log.warning(message)
            log.debug("tracker %s: the traceback", name, exc_info=exc)

    def _call(self, method: str, *args) -> None:
        for item in list(self.active):
            name, tracker = item
            fn = getattr(tracker, method, None)
            if fn is None:
                continue
            try:
                fn(self.run, *args)
            except Exception as exc:  # noqa: BLE001
                self.active.remove(item)
                self._failed(name, method, exc)

    def run_started(self) -> None:
        self._call("run_started")

    def epoch_ended(self, entry: dict) -> None:
        self._call("epoch_ended", int(entry["epoch"]), _numbers({k: v for k, v in entry.items() if k != "epoch"}))

    def record_written(self, record: dict) -> None:
        self._call("record_written", record)

    def run_finished(self, status: str, error: str | None = None) -> None:
        self._call("run_finished", status, error)


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------


class TensorBoardTracker(Tracker):
    """Event files per training run: per-epoch scalars, record metrics, the configuration as hparams."""

    REQUIRES = (("tensorboard", "ood-bench[tensorboard]"),)

    def __init__(self, log_dir: str | None = None, flush_secs: int = 30):
        self.log_dir, self.flush_secs = log_dir, int(flush_secs)
        self.writer = None
        self.final: dict[str, float] = {}
        self.step = 0

    def run_started(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(self.log_dir) if self.log_dir else Path(run.results) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(folder / run.run_id), flush_secs=self.flush_secs)
        self.step = run.start_epoch if run.mode == "train" else int((run.config.get("train") or {}).get("epochs", 0))
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=1, default=str) + "\n```", 0)

    def epoch_ended(self, run: TrackedRun, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, epoch)
        self.step = epoch

    def record_written(self, run: TrackedRun, record: dict) -> None:
        if record.get("status") != "ok":
            return
        prefix = cell_metric_prefix(record)
        for key, value in _numbers(record.get("metrics")).items():
            self.writer.add_scalar(f"{prefix}/{key}", value, self.step)
            self.final[f"{prefix}/{key}"] = value
        for key, value in _numbers(record.get("run_metrics")).items():
            if not key.startswith("logit_norm_ood") and f"run/{key}" not in self.final:
                self.writer.add_scalar(f"run/{key}", value, self.step)
                self.final[f"run/{key}"] = value

    def run_finished(self, run: TrackedRun, status: str, error: str | None = None) -> None:
        from torch.utils.tensorboard.summary import hparams

        if self.writer is None:
            return
        try:
            hp = {k: v for k, v in flatten(run.config).items() if k != "experiments"}
            metrics = dict(self.final) or {"run/failed": 1.0 if status == "failed" else 0.0}
            # In this run's own folder (SummaryWriter.add_hparams would open a subfolder per call).
            for summary in hparams(hp, metrics):
                self.writer.file_writer.add_summary(summary)
            if error:
                self.writer.add_text("error", error, self.step)
        finally:
            self.writer.close()
            self.writer = None


# ------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------


class MLflowTracker(Tracker):
    """One MLflow run per training run, continued by reruns and resumed trainings."""

    REQUIRES = (("mlflow", "ood-bench[mlflow]"),)
    TAG = "ood_bench.run_id"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = None
        self.mlflow_run_id: str | None = None
        self.step = 0

    def run_started(self, run: TrackedRun) -> None:
        uri = self.tracking_uri or Path(run.results, "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this switch; a local store in
            # the results folder needs no database package and no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=uri)
        name = self.experiment or run.suite or "ood-bench"
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name)
            except Exception:  # noqa: BLE001 - created by another worker meanwhile
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        found = client.search_runs([experiment_id], f"tags.`{self.TAG}` = '{run.run_id}'", max_results=1)
        if found:
            self.mlflow_run_id = found[0].info.run_id
            client.update_run(self.mlflow_run_id, status="RUNNING")
        else:
            created = client.create_run(experiment_id, run_name=run.label,
                                        tags={self.TAG: run.run_id, "ood_bench.suite": run.suite})
            self.mlflow_run_id = created.info.run_id
            from mlflow.entities import Param

            params = [Param(_safe_key(k), str(v)[:6000]) for k, v in flatten(run.config).items()
                      if k != "experiments"]
            for i in range(0, len(params), 100):
                client.log_batch(self.mlflow_run_id, params=params[i:i + 100])
        self.step = run.start_epoch if run.mode == "train" else int((run.config.get("train") or {}).get("epochs", 0))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_safe_key(k), v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.mlflow_run_id, metrics=batch[i:i + 500])

    def epoch_ended(self, run: TrackedRun, epoch: int, metrics: dict[str, float]) -> None:
        self._log(metrics, epoch)
        self.step = epoch

    def record_written(self, run: TrackedRun, record: dict) -> None:
        if record.get("status") != "ok":
            return
        prefix = cell_metric_prefix(record)
        metrics = {f"{prefix}/{k}": v for k, v in _numbers(record.get("metrics")).items()}
        metrics.update({f"run/{k}": v for k, v in _numbers(record.get("run_metrics")).items()})
        self._log(metrics, self.step)

    def run_finished(self, run: TrackedRun, status: str, error: str | None = None) -> None:
        if self.client is None or self.mlflow_run_id is None:
            return
        if error:
            self.client.set_tag(self.mlflow_run_id, "ood_bench.error", error[:5000])
        self.client.set_terminated(self.mlflow_run_id, "FAILED" if status == "failed" else "FINISHED")


@hookimpl
def register_trackers(register):
    register("tensorboard", TensorBoardTracker,
             description="TensorBoard event files under RESULTS/tensorboard; needs ood-bench[tensorboard]")
    register("mlflow", MLflowTracker,
             description="an MLflow run per training (local store RESULTS/mlruns); needs ood-bench[mlflow]")
