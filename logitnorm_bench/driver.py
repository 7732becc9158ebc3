"""The driver: runs what is missing of a plan through an executor, in this process.

It holds the results folder's lock, checks that the data is there before anything runs, hands
:class:`~logitnorm_bench.plan.WorkItem` payloads to the executor, then resolves selections (the
values chosen on validation data) and runs their test cells.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from logitnorm_bench.components import DataContext
from logitnorm_bench.data_views import DataSources
from logitnorm_bench.errors import ConfigError
from logitnorm_bench.plan import EvaluationCell, Plan, TrainingRun, WorkItem
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.worker import cell_needs_work

OVERWRITE_MODES = ("only-missing", "always", "never")


def pending_work(plan: Plan, results: ResultsDir, overwrite: str) -> list[tuple[TrainingRun, list[EvaluationCell]]]:
    jobs = []
    for run in plan.runs:
        cells = [c for c in plan.cells_of(run.run_id) if cell_needs_work(results, c, overwrite)]
        if cells:
            jobs.append((run, cells))
    return jobs



def run_plan(plan: Plan, results_root: Path, data_root: Path, device: str, overwrite: str,
             executor: str = "local", executor_options: dict | None = None,
             download: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
             threads: int | None = None) -> dict:
    """Run what is missing of ``plan``, then of its selections; returns counts.  Caller holds the lock."""
    results = ResultsDir(results_root)
    removed = results.remove_temp_files()  # what a killed write left behind; we hold the lock
    if removed:
        log(f"removed {removed} temporary file(s) left by an interrupted run")
    jobs = pending_work(plan, results, overwrite)
    n_cells = sum(len(c) for _, c in jobs)
    log(f"{plan.suite}: {len(plan.runs)} training run(s), {len(plan.cells)} evaluation cell(s)"
        + (f", {len(plan.selections)} selection(s)" if plan.selections else "")
        + f"; to do: {len(jobs)} run(s), {n_cells} cell(s)")
    counts = {"runs": len(jobs), "trained": 0, "records_ok": 0, "records_failed": 0, "failed_runs": 0}
    plugins = get_plugins()
    if jobs:
        prepare_data(plan, jobs, data_root, download, log)
    exe = None
    t0 = time.perf_counter()
    for phase in ("plan", "selections"):
        if phase == "selections":
            if not plan.selections:
                break
            chosen = resolve_selections(plan, results, log)
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
                exe = plugins.executors.build(executor, **(executor_options or {}))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"--executor {executor}: {exc}") from None
        payloads = [WorkItem(run, cells, str(results_root), str(data_root), device, overwrite, index=i + 1,
                             total=len(jobs), download=download, suite_name=plan.suite,
                             threads=threads).to_payload()
                    for i, (run, cells) in enumerate(jobs)]
        for summary in exe.run(payloads):
            counts["trained"] += bool(summary.get("trained"))
            counts["records_ok"] += summary.get("records_ok", 0)
            counts["records_failed"] += summary.get("records_failed", 0)
            counts["failed_runs"] += bool(summary.get("error"))
    counts["seconds"] = time.perf_counter() - t0
    return counts


def prepare_data(plan: Plan, jobs: list, data_root: Path, download: bool, log: Callable[[str], None]) -> None:
    """Make sure every dataset the pending work needs is there (downloading it once) before any run.

    Missing data is then bad input (one line, exit 2) rather than one failed run after another, and
    parallel workers never download the same archive into the same folder at once.
    """
    if all(run.smoke for run, _ in jobs):
        return  # smoke runs use synthetic stand-ins
    needed: dict[str, set[str]] = {}
    for run, cells in jobs:
        needed.setdefault(run.id_dataset, set()).update({"test"} if run.weights else {"train", "test"})
        if run.train.get("monitor_ood"):
            needed.setdefault(run.train["monitor_ood"], set()).add("test")
        if (run.train.get("outliers") or {}).get("dataset") and not run.weights:
            needed.setdefault(run.train["outliers"]["dataset"], set()).add(run.train["outliers"]["split"])
        for c in cells:
            needed.setdefault(c.ood_dataset, set()).add(c.split)
    for g in plan.selections:
        needed.setdefault(g.ood_dataset, set()).add("val")
    sources = DataSources(get_plugins(), smoke=False)
    ctx = DataContext(root=Path(data_root), download=download)
    t0 = time.perf_counter()
    for name in sorted(needed):
        source = sources(name)
        for split in sorted(needed[name]):
            if split == "val" and "val" not in source.splits:
                continue  # a selection then uses a sample of the training images
            source.build(split, ctx)  # raises DataMissingError (bad input) with folder, URL and layout
    log(f"data ready under {data_root} ({len(needed)} dataset(s), {time.perf_counter() - t0:.1f}s)")


def resolve_selections(plan: Plan, results: ResultsDir, log: Callable[[str], None]) -> list[EvaluationCell]:
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
            log(f"selection of {g.param} ({', '.join(g.experiments)}): no validation result; skipped")
            continue
        sign = -1 if METRICS[g.metric].higher_is_better else 1
        best = min(evidence, key=lambda v: (sign * evidence[v]["mean"], list(g.validation).index(v)))
        info = {"param": g.param, "chosen": json.loads(best), "metric": g.metric,
                "validation_ood": g.ood_dataset, "candidates": {k: v for k, v in evidence.items()},
                "group_id": g.group_id}
        log(f"selection of {g.param} ({', '.join(g.experiments)}): {json.loads(best)} "
            f"({g.metric} {evidence[best]['mean']:.4f} on {g.ood_dataset} val)")
        for cell in g.test_cells[best]:
            out.append(EvaluationCell(**{**asdict(cell), "selection": info}))
    return out


def default_data_root() -> Path:
    return Path(os.environ.get("OOD_BENCH_DATA", "data"))
