"""The driver: runs what is missing of a plan through an executor, in this process.

It holds the results folder's lock, checks that the data is there before anything runs, hands
:class:`~logitnorm_bench.plan.WorkItem` payloads to the executor, then resolves selections (the
values chosen on validation data) and runs their test cells.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from logitnorm_bench import logs
from logitnorm_bench.components import DataContext
from logitnorm_bench.data_views import DataSources, source_key
from logitnorm_bench.reporting import variant_name
from logitnorm_bench.errors import ConfigError, DataMissingError
from logitnorm_bench.logs import Channel
from logitnorm_bench.plan import EvaluationCell, Plan, TrainingRun, WorkItem
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.progress import Monitor
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.worker import cell_needs_work

OVERWRITE_MODES = ("only-missing", "always", "never")
log = logging.getLogger(__name__)


def pending_work(plan: Plan, results: ResultsDir, overwrite: str) -> list[tuple[TrainingRun, list[EvaluationCell]]]:
    jobs = []
    for run in plan.runs:
        cells = [c for c in plan.cells_of(run.run_id) if cell_needs_work(results, c, overwrite)]
        if cells:
            jobs.append((run, cells))
    return jobs



def run_plan(plan: Plan, results_root: Path, data_root: Path, device: str, overwrite: str,
             executor: str = "local", executor_options: dict | None = None, download: bool = True,
             threads: int | None = None, trackers: list | None = None, progress_mode: str = "lines",
             suite_ref: str | None = None) -> dict:
    """Run what is missing of ``plan``, then of its selections; returns counts.  Caller holds the lock.

    ``trackers``: ``[(name, options)]`` told about every training run; ``progress_mode``: ``bars``,
    ``lines`` or ``off`` (see :mod:`logitnorm_bench.progress`); ``suite_ref``: how the user named
    the suite, for the missing-data message.
    """
    results = ResultsDir(results_root)
    removed = results.remove_temp_files()  # what a killed write left behind; we hold the lock
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)
    jobs = pending_work(plan, results, overwrite)
    n_cells = sum(len(c) for _, c in jobs)
    log.info(f"{plan.suite}: {len(plan.runs)} training run(s), {len(plan.cells)} evaluation cell(s)"
             + (f", {len(plan.selections)} selection(s)" if plan.selections else "")
             + f"; to do: {len(jobs)} run(s), {n_cells} cell(s)")
    counts = {"runs": len(jobs), "trained": 0, "records_ok": 0, "records_failed": 0, "failed_runs": 0}
    plugins = get_plugins()
    if jobs:
        prepare_data(plan, jobs, data_root, download, suite_ref)
    exe = None
    options = dict(executor_options or {})
    monitor = Monitor([], mode=progress_mode, jobs=options.get("jobs", 1 if executor == "local" else None))
    channel = Channel(monitor.handle) if Channel.available() else None
    observe = {"channel": channel.address if channel is not None else None, "interval": monitor.interval,
               "log_file": str(logs.log_files()[0]) if logs.log_files() else None,
               "console_level": logs.console_level() or logging.INFO}
    t0 = time.perf_counter()
    try:
        with monitor:
            for phase in ("plan", "selections"):
                if phase == "selections":
                    if not plan.selections:
                        break
                    chosen = resolve_selections(plan, results)
                    runs = {r.run_id: r for r in plan.runs}
                    by_run: dict[str, list[EvaluationCell]] = {}
                    for cell in chosen:
                        if cell_needs_work(results, cell, overwrite):
                            by_run.setdefault(cell.run_id, []).append(cell)
                    jobs = [(runs[rid], cells) for rid, cells in by_run.items()]
                if not jobs:
                    continue
                if exe is None:
                    try:
                        exe = plugins.executors.build(executor, **options)
                    except (TypeError, ValueError) as exc:
                        raise ConfigError(f"--executor {executor}: {exc}") from None
                items = [WorkItem(run, cells, str(results_root), str(data_root), device, overwrite, index=i + 1,
                                  total=len(jobs), download=download, suite_name=plan.suite, threads=threads,
                                  trackers=[list(t) for t in trackers or ()], observe=observe,
                                  loading=plan.loading)
                         for i, (run, cells) in enumerate(jobs)]
                monitor.add_runs((it.run.run_id, f"{it.index}/{it.total} {it.run.label()}",
                                  0 if it.run.weights else it.run.train.get("epochs", 0), len(it.cells),
                                  f"{it.run.id_dataset}/{it.run.arch}") for it in items)
                for summary in exe.run([it.to_payload() for it in items]):
                    counts["trained"] += bool(summary.get("trained"))
                    counts["records_ok"] += summary.get("records_ok", 0)
                    counts["records_failed"] += summary.get("records_failed", 0)
                    counts["failed_runs"] += bool(summary.get("error"))
                    monitor.summary(summary)
    finally:
        if channel is not None:
            channel.close()
    counts["seconds"] = time.perf_counter() - t0
    return counts


def needed_data(plan: Plan, jobs: list | None = None) -> dict[tuple[str, str], set[str]]:
    """(dataset name, its params as JSON: :func:`~logitnorm_bench.data_views.source_key`) -> the splits
    that ``jobs`` (default: every run of the plan) read.  One name with two sets of params (two image
    folders) is two datasets."""
    if jobs is None:
        jobs = [(run, plan.cells_of(run.run_id)) for run in plan.runs]
    needed: dict[tuple[str, str], set[str]] = {}
    for run, cells in jobs:
        # A model with given weights is not trained, but a fitted detector still reads the training images.
        reads_train = not run.weights or any(_needs_fit(c.detector, c.detector_params) for c in cells)
        needed.setdefault(source_key(run.id_dataset, run.id_dataset_params), set()).update(
            {"train", "test"} if reads_train else {"test"})
        if run.train.get("monitor_ood"):
            needed.setdefault(source_key(run.train["monitor_ood"]), set()).add("test")
        if (run.train.get("outliers") or {}).get("dataset") and not run.weights:
            needed.setdefault(source_key(run.train["outliers"]["dataset"]), set()).add(
                run.train["outliers"]["split"])
        for c in cells:
            needed.setdefault(source_key(c.ood_dataset, c.ood_dataset_params), set()).add(c.split)
    for g in plan.selections:
        needed.setdefault(source_key(g.ood_dataset), set()).add("val")
    return needed


def _needs_fit(detector: str, params: dict) -> bool:
    """Whether the detector declared ``needs_fit`` (it is built, as at plan time, to ask it)."""
    from logitnorm_bench.plugins import get_plugins

    try:
        return bool(getattr(get_plugins().detectors.build(detector, **params), "needs_fit", False))
    except Exception:  # noqa: BLE001 -- a detector that cannot be built fails its cells with its own error
        return False


def id_first(plan: Plan, needed: dict) -> list[tuple[str, str]]:
    """The keys of :func:`needed_data`, ID datasets first (their shape is what OOD sets built to measure
    take), then the others; each part sorted."""
    ids = sorted({source_key(r.id_dataset, r.id_dataset_params) for r in plan.runs} & set(needed))
    return ids + sorted(set(needed) - set(ids))


def data_command(suite_ref: str | None) -> str:
    return f"ood-bench data {suite_ref or 'SUITE'}"


def prepare_data(plan: Plan, jobs: list, data_root: Path, download: bool, suite_ref: str | None = None) -> None:
    """Make sure every dataset the pending work needs is there (downloading it once) before any run.

    Missing data is then bad input (one line naming every missing set, exit 2) rather than one
    failed run after another, and parallel workers never download the same archive into the same
    folder at once.
    """
    if all(run.smoke for run, _ in jobs):
        return  # smoke runs use synthetic stand-ins
    needed = needed_data(plan, jobs)
    sources = DataSources(get_plugins(), smoke=False)
    ctx = DataContext(root=Path(data_root), download=download)
    t0 = time.perf_counter()
    missing: list[tuple[str, str, str]] = []  # (dataset as shown, its name, the message)
    for key in id_first(plan, needed):
        name, params = key[0], json.loads(key[1])
        source = sources(name, params)
        for split in sorted(needed[key]):
            if split == "val" and "val" not in source.splits:
                continue  # a selection then uses a sample of the training images
            try:
                source.build(split, ctx)  # DataMissingError (bad input) with folder, URL and layout
            except DataMissingError as exc:
                missing.append((variant_name(name, params), name, str(exc)))
                break  # one message per dataset; go on with the others
    if missing:
        names = [label for label, _, _ in missing]
        details = "; ".join(m if m.startswith(f"{n}:") else f"{label}: {m}" for label, n, m in missing)
        cmd = data_command(suite_ref)
        raise DataMissingError(
            f"{', '.join(names)}: {len(missing)} dataset(s) of {len(needed)} missing under {data_root}. {details}. "
            f"`{cmd}` lists the status of each; `{cmd} --download` fetches them all before the run")
    log.info(f"data ready under {data_root} ({len(needed)} dataset(s), {time.perf_counter() - t0:.1f}s)")


def resolve_selections(plan: Plan, results: ResultsDir) -> list[EvaluationCell]:
    """Choose each selection's value from its validation records; the chosen value's test cells.

    The value with the best mean metric over the seeds whose validation succeeded wins (ties: the
    first listed).  Every test cell carries what was chosen and the evidence.
    """
    from logitnorm_bench.metrics import METRICS

    out = []
    for g in plan.selections:
        evidence = {}
        for vkey, cell_ids in g.validation.items():
            vals = [rec["metrics"][g.metric] for cid in cell_ids
                    if (rec := results.read_record(cid)) and rec.get("status") == "ok"]
            if vals:
                evidence[vkey] = {"mean": sum(vals) / len(vals), "n_seeds": len(vals)}
        if not evidence:
            log.warning(f"selection of {g.param} ({', '.join(g.experiments)}): no validation result; skipped")
            continue
        sign = -1 if METRICS[g.metric].higher_is_better else 1
        best = min(evidence, key=lambda v: (sign * evidence[v]["mean"], list(g.validation).index(v)))
        info = {"param": g.param, "chosen": json.loads(best), "metric": g.metric,
                "validation_ood": g.ood_dataset, "candidates": {k: v for k, v in evidence.items()},
                "group_id": g.group_id}
        log.info(f"selection of {g.param} ({', '.join(g.experiments)}): {json.loads(best)} "
                 f"({g.metric} {evidence[best]['mean']:.4f} on {g.ood_dataset} val)")
        for cell in g.test_cells[best]:
            out.append(EvaluationCell(**{**asdict(cell), "selection": info}))
    return out


def default_data_root() -> Path:
    return Path(os.environ.get("OOD_BENCH_DATA", "data"))
