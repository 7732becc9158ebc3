"""The worker: one :class:`~logitnorm_bench.plan.WorkItem` = train (or resume, or reuse) one run, then
write the record of every cell it serves, each as soon as it exists.

:func:`execute_run` is what an executor calls with a work item's payload (a plain function of
picklable arguments, so the local process pool and Ray run the same code).  A failure inside it
(divergence, a plugin exception, missing data) becomes failed records holding the error, and the
grid goes on.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock
from torch.utils.data import Subset

from logitnorm_bench.components import DataContext
from logitnorm_bench.data_views import DataSources, ValidationSources
from logitnorm_bench.devices import resolve_device
from logitnorm_bench.errors import OodBenchError
from logitnorm_bench.evaluation import Evaluator, forward_pass, sample_indices
from logitnorm_bench.plan import EvaluationCell, TrainingRun, WorkItem
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import Record, ResultsDir, atomic_torch_save, load_state_or_set_aside, provenance
from logitnorm_bench.train import DivergedError, build_model, materialize, train
from logitnorm_bench.weights import load_given_weights


def cell_needs_work(results: ResultsDir, cell: EvaluationCell, overwrite: str) -> bool:
    if overwrite == "always":
        return True
    rec = results.read_record(cell.cell_id, run_id=cell.run_id)
    if rec is None:
        return True
    # A failed cell is not a result: only-missing retries it, never leaves it.
    return overwrite == "only-missing" and rec.get("status") != "ok"


class Progress:
    """One line per event on stderr, prefixed with the run's position and label."""

    def __init__(self, index: int, total: int, label: str, stream=None):
        self.prefix = f"[{index}/{total} {label}]"
        self.stream = stream or sys.stderr

    def __call__(self, message: str) -> None:
        print(f"{self.prefix} {message}", file=self.stream, flush=True)


def execute_run(**payload) -> dict:
    """An executor's unit of work: ``payload`` is :meth:`WorkItem.to_payload`; returns a summary."""
    return execute(WorkItem.from_payload(payload))


def execute(item: WorkItem) -> dict:
    """Train one TrainingRun if needed, then evaluate its cells; returns a summary dict."""
    run, cells = item.run, item.cells
    results = ResultsDir(item.results_root)
    plugins = get_plugins()
    dev = resolve_device(item.device)
    progress = Progress(item.index, item.total, run.label())
    ctx = DataContext(root=Path(item.data_root), download=item.download, seed=run.seed)
    summary = {"run_id": run.run_id, "trained": False, "records_ok": 0, "records_failed": 0, "error": None}
    run_dir = results.run_dir(run.run_id)
    run_dir.parent.mkdir(parents=True, exist_ok=True)

    def write(cell: EvaluationCell, result: dict, train_seconds: float) -> None:
        results.write_record(make_record(run, cell, item.suite_name, dev, plugins, result, train_seconds))
        summary["records_ok" if "error" not in result else "records_failed"] += 1

    with FileLock(str(run_dir.with_suffix(".lock"))):  # two workers never train the same run at once
        info = results.read_run(run.run_id) or {}
        base = {"run": asdict(run), "provenance": provenance(plugins, dev)}
        t_train, id_test = 0.0, None
        try:
            sources = DataSources(plugins, run.smoke, holdout=0 if run.weights else run.train.get("holdout", 0))
            id_source = sources(run.id_dataset)
            loss_fn = plugins.losses.build(run.loss, **run.loss_params)
            model = build_model(plugins, run.arch, run.arch_params, loss_fn, id_source, run.seed)
            model_path = run_dir / "model.pt"
            if run.weights:
                applied = load_given_weights(model, run.weights)
                info.update(base, status="given_weights", weights=run.weights, weights_applied=applied)
                results.write_run(run.run_id, info)
            elif (item.overwrite != "always" and info.get("status") == "trained"
                  and (state := load_state_or_set_aside(model_path, progress)) is not None):
                model.load_state_dict(state)
                progress("trained weights found; not training again")
            else:
                if item.overwrite == "always":
                    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
                progress("loading training data")
                train_x, train_y = materialize(id_source.build("train", ctx))
                id_test = materialize(id_source.build("test", ctx))  # the monitor's and, later, the evaluation's
                monitor = LogitNormMonitor(id_test[0], sources, run, ctx, dev)
                info.update(base, status="training", started=_now())
                results.write_run(run.run_id, info)
                res = train(model, loss_fn, train_x, train_y, run.train, run.seed, dev,
                            checkpoint=run_dir / "checkpoint.pt", monitor=monitor, progress=progress)
                t_train = res.seconds
                model = res.model
                atomic_torch_save(model_path, {k: v.cpu() for k, v in model.state_dict().items()})
                info.update(status="trained", history=res.history, train_seconds=res.seconds,
                            resumed_from_epoch=res.resumed_from, finished=_now(), error=None)
                results.write_run(run.run_id, info)
                summary["trained"] = True
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            err = describe_error(exc)
            info.update(base, status="failed", error=err, finished=_now())
            results.write_run(run.run_id, info)
            progress(f"FAILED: {err}")
            for c in cells:
                write(c, {"error": err}, t_train)
            summary["error"] = err
            return summary

        progress(f"evaluating {len(cells)} cell(s)")
        evaluator = None
        for split in ("test", "val"):
            split_cells = [c for c in cells if c.split == split]
            if not split_cells:
                continue
            if split == "val":  # a selection's validation: ID val images vs the OOD set's val split
                source_for = ValidationSources(sources, split_cells[0].evaluation)
                eval_id_source = source_for(run.id_dataset)
            else:
                source_for, eval_id_source = sources, id_source
            evaluator = Evaluator(model, eval_id_source, ctx, plugins, dev, split_cells[0].evaluation,
                                  id_test=id_test if split == "test" else None, source_for=source_for)
            try:
                for cell, result in evaluator.evaluate(split_cells):
                    write(cell, flag_chance(result, run), t_train)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the ID pass itself failed: every remaining cell fails
                err = describe_error(exc)
                progress(f"evaluation FAILED: {err}")
                for c in split_cells:
                    if cell_needs_work(results, c, "only-missing"):
                        write(c, {"error": err}, t_train)
                summary["error"] = err
        m = evaluator.run_metrics if evaluator is not None else {}
        if m:
            progress(f"done: ID accuracy {100 * m['id_acc']:.2f}%, {summary['records_ok']} record(s) ok, "
                     f"{summary['records_failed']} failed")
    return summary


def flag_chance(result: dict, run: TrainingRun) -> dict:
    """ID accuracy at chance means a failed training: never let it become a leaderboard number."""
    rm = result.get("run_metrics")
    if not rm or "error" in result:
        return result
    at_chance = rm["id_acc"] <= 1.5 * rm["chance_acc"]
    result["at_chance"] = at_chance
    if at_chance and not run.smoke:
        result = dict(result, error=f"ID accuracy {100 * rm['id_acc']:.1f}% is at chance "
                                    f"({100 * rm['chance_acc']:.1f}%): the training failed")
    return result


def make_record(run: TrainingRun, cell: EvaluationCell, suite: str, dev, plugins, result: dict,
                train_seconds: float) -> Record:
    outcome = {k: result[k] for k in Record.OPTIONAL if k in result}
    if run.smoke:
        outcome["note"] = "SMOKE: synthetic stand-in data, a few batches of training; the numbers mean nothing"
    return Record(
        cell_id=cell.cell_id, run_id=run.run_id, status="failed" if "error" in result else "ok",
        error=result.get("error"), smoke=run.smoke, suite=suite, experiments=cell.experiments,
        id_dataset=run.id_dataset, arch=run.arch, arch_params=run.arch_params,
        loss=run.loss, loss_params=run.loss_params,
        detector=cell.detector, detector_params=cell.detector_params,
        ood_dataset=cell.ood_dataset, seed=run.seed, weights=run.weights,
        split=cell.split, selection=cell.selection, train=run.train, evaluation=cell.evaluation,
        provenance=dict(provenance(plugins, dev), config_hash=run.run_id, cell_hash=cell.cell_id),
        train_seconds=train_seconds, created=_now(), **outcome)


def describe_error(exc: BaseException) -> str:
    """One line: the error, and where it was raised when it is not one of the harness's own."""
    if isinstance(exc, (OodBenchError, DivergedError)):
        return f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LogitNormMonitor:
    """Per-epoch mean logit norm on fixed ID test images and an OOD set (``train.monitor_ood``)."""

    def __init__(self, id_test_x, sources, run: TrainingRun, ctx, dev):
        self.dev, self.sets = dev, {}
        k = run.train.get("monitor_samples", 256)
        self.sets["logit_norm_id"] = id_test_x[sample_indices(len(id_test_x), k, 0)]
        try:
            ood_name = run.train.get("monitor_ood")
            if ood_name:
                ds = sources(ood_name).build("test", ctx)
                idx = sample_indices(len(ds), k, 0)
                self.sets["logit_norm_ood"], _ = materialize(Subset(ds, idx.tolist()))
        except Exception as exc:  # the curve is a nicety: never fail a training for it
            print(f"warning: logit-norm monitor disabled: {exc}", file=sys.stderr)

    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        out = {name: float(forward_pass(model, x, 256, self.dev, False).logits.norm(dim=1).mean())
               for name, x in self.sets.items()}
        model.train(was_training)
        return out
