"""The worker: one :class:`~logitnorm_bench.plan.WorkItem` = train (or resume, or reuse) one run, then
write the record of every cell it serves, each as soon as it exists.

:func:`execute_run` is what an executor calls with a work item's payload (a plain function of
picklable arguments, so the local process pool and Ray run the same code).  A failure inside it
(divergence, a plugin exception, missing data) becomes failed records holding the error, and the
grid goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import torch
from filelock import FileLock
from torch.utils.data import Subset

from logitnorm_bench import logs, progress
from logitnorm_bench.components import DataContext, TrackedRun
from logitnorm_bench.data_views import DataSources, ValidationSources, outlier_images
from logitnorm_bench.devices import resolve_device
from logitnorm_bench.errors import OodBenchError
from logitnorm_bench.evaluation import Evaluator, forward_pass, sample_indices
from logitnorm_bench.loading import image_set
from logitnorm_bench.plan import EvaluationCell, TrainingRun, WorkItem, plain
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import Record, ResultsDir, atomic_torch_save, load_state_or_set_aside, provenance
from logitnorm_bench.suite import Loading
from logitnorm_bench.trackers import Trackers
from logitnorm_bench.train import DivergedError, build_model, materialize, train
from logitnorm_bench.weights import load_given_weights

log = logging.getLogger(__name__)


def cell_needs_work(results: ResultsDir, cell: EvaluationCell, overwrite: str) -> bool:
    if overwrite == "always":
        return True
    rec = results.read_record(cell.cell_id, run_id=cell.run_id)
    if rec is None:
        return True
    # A failed cell is not a result: only-missing retries it, never leaves it.
    return overwrite == "only-missing" and rec.get("status") != "ok"


def execute_run(**payload) -> dict:
    """An executor's unit of work: ``payload`` is :meth:`WorkItem.to_payload`; returns a summary."""
    return execute(WorkItem.from_payload(payload))


# Below this many parameters a model gains nothing from intra-op threads, and loses much when other
# processes compete for the cores (a 10k-parameter MLP: 6.1 s with 1 thread vs 8.7 s with 2 idle; 20 s vs 80 s
# beside two busy processes), so ``threads: auto`` gives it one thread.
SMALL_MODEL_PARAMETERS = 1_000_000


def choose_threads(requested: int | None, model: torch.nn.Module) -> int:
    """The torch thread count for a run: ``requested``, or (auto) 1 for a small model, else the
    count this process was given (all usable cores, shared out among ``--jobs`` workers)."""
    if requested:
        return requested
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS:
        return 1
    return torch.get_num_threads()


def execute(item: WorkItem) -> dict:
    """Train one TrainingRun if needed, then evaluate its cells; returns a summary dict.

    The run uses :func:`choose_threads` torch threads (recorded in each record's provenance); the
    process's own count is restored afterwards.  Its log records are tagged with the run and reach
    the suite's console and log file (:func:`logitnorm_bench.logs.worker_logging`); its progress
    goes to the suite's monitor.
    """
    before = torch.get_num_threads()
    tag = f"{item.index}/{item.total} {item.run.label()}"
    try:
        with logs.worker_logging(item.observe) as channel, logs.run_context(tag):
            monitor = progress.current()
            sink = channel or (monitor.handle if monitor is not None else None)
            reporter = progress.RunReporter(tag, item.run.run_id, sink, interval=(item.observe or {}).get("interval"))
            return _execute(item, reporter)
    finally:
        torch.set_num_threads(before)


class _RunEvents:
    """What the training loop and the evaluation report, fanned out to the progress display and the
    trackers (``train(events=...)`` calls ``started``, ``epoch`` and ``batch``)."""

    def __init__(self, reporter: progress.RunReporter, trackers: Trackers, tracked: TrackedRun, cells: int,
                 key: str):
        self.reporter, self.trackers, self.tracked = reporter, trackers, tracked
        self.cells, self.key = cells, key
        self.batch = reporter.batch  # every training step: straight to the throttled reporter
        self._started = False

    def begin(self, mode: str, start_epoch: int = 0) -> None:
        if self._started:
            return
        self._started = True
        self.tracked.mode, self.tracked.start_epoch = mode, start_epoch
        epochs = int(self.tracked.config["train"].get("epochs", 0)) if mode == "train" else 0
        self.reporter.started(mode, epochs, start_epoch, self.cells, self.key)
        self.trackers.run_started()

    def started(self, start_epoch: int, epochs: int) -> None:  # from train(), after loading its checkpoint
        if start_epoch:
            log.info("resuming from the checkpoint of epoch %d/%d", start_epoch, epochs)
        self.begin("train", start_epoch)

    def epoch(self, entry: dict, epochs: int) -> None:
        self.reporter.epoch(entry, epochs)
        self.trackers.epoch_ended(entry)


def _execute(item: WorkItem, reporter: progress.RunReporter) -> dict:
    run, cells = item.run, item.cells
    results = ResultsDir(item.results_root)
    plugins = get_plugins()
    dev = resolve_device(item.device)
    ctx = DataContext(root=Path(item.data_root), download=item.download, seed=run.seed)
    loading = Loading(**(item.loading or {}))  # which sets are streamed: never changes a result
    summary = {"run_id": run.run_id, "trained": False, "records_ok": 0, "records_failed": 0, "error": None}
    run_dir = results.run_dir(run.run_id)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tracked = TrackedRun(run_id=run.run_id, label=run.label(), suite=item.suite_name, config=plain(run),
                         results=Path(item.results_root).resolve(), mode="train")
    events = _RunEvents(reporter, Trackers(item.trackers, plugins, tracked), tracked, len(cells),
                        f"{run.id_dataset}/{run.arch}")

    def write(cell: EvaluationCell, result: dict, train_seconds: float) -> None:
        if "scores" in result:  # the raw scores go to their own file, the record keeps a reference
            raw = result["scores"]
            result = dict(result, scores=results.write_scores(cell.cell_id, raw["id"], raw["ood"]))
        record = make_record(run, cell, item.suite_name, dev, plugins, result, train_seconds)
        results.write_record(record)
        ok = "error" not in result
        summary["records_ok" if ok else "records_failed"] += 1
        if ok:
            m = record.metrics or {}
            log.debug("record %s: %s on %s (%s): fpr95 %.4f auroc %.4f", record.cell_id, cell.detector,
                      cell.ood_dataset, cell.split, m.get("fpr95", float("nan")), m.get("auroc", float("nan")))
        else:
            log.debug("record %s: %s on %s (%s) failed: %s", record.cell_id, cell.detector, cell.ood_dataset,
                      cell.split, record.error)
        reporter.record(ok)
        events.trackers.record_written(record.to_json())

    with FileLock(str(run_dir.with_suffix(".lock"))):  # two workers never train the same run at once
        info = results.read_run(run.run_id) or {}
        base = {"run": plain(run), "provenance": provenance(plugins, dev)}
        t_train, id_test = 0.0, None
        try:
            sources = DataSources(plugins, run.smoke, holdout=0 if run.weights else run.train.get("holdout", 0))
            id_source = sources(run.id_dataset, run.id_dataset_params)
            loss_fn = plugins.losses.build(run.loss, **run.loss_params)
            model = build_model(plugins, run.arch, run.arch_params, loss_fn, id_source, run.seed)
            torch.set_num_threads(choose_threads(item.threads, model))
            base["provenance"] = provenance(plugins, dev)  # with the run's thread count
            model_path = run_dir / "model.pt"
            if run.weights:
                applied = load_given_weights(model, run.weights, smoke=run.smoke)
                info.update(base, status="given_weights", weights=run.weights, weights_applied=applied)
                results.write_run(run.run_id, info)
                events.begin("weights")
            elif (item.overwrite != "always" and info.get("status") == "trained"
                  and (state := load_state_or_set_aside(model_path)) is not None):
                model.load_state_dict(state)
                log.info("trained weights found; not training again")
                events.begin("reuse")
            else:
                if item.overwrite == "always":
                    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
                log.debug("loading training data")

                def images(ds):  # in memory, or streamed when large (logitnorm_bench.loading)
                    return image_set(ds, id_source.input_shape, loading, dev)

                train_set = images(id_source.build("train", ctx))
                outliers = outlier_images(sources, run.train, ctx, load=images)  # None unless train.outliers
                id_test = images(id_source.build("test", ctx))  # the monitor's and, later, the evaluation's
                monitor = LogitMagnitudeMonitor(id_test, sources, run, ctx, dev)
                info.update(base, status="training", started=_now())
                results.write_run(run.run_id, info)
                res = train(model, loss_fn, train_set, None, run.train, run.seed, dev,
                            checkpoint=run_dir / "checkpoint.pt", monitor=monitor, events=events,
                            outliers=outliers)
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
            log.error("FAILED: %s", err)
            log.debug("the traceback", exc_info=exc)
            events.begin("train")
            for c in cells:
                write(c, {"error": err}, t_train)
            summary["error"] = err
            reporter.finished("failed", err)
            events.trackers.run_finished("failed", err)
            return summary

        log.debug("evaluating %d cell(s)", len(cells))
        reporter.evaluating(0, len(cells))
        evaluator = None
        done = 0
        for split in ("test", "val"):
            split_cells = [c for c in cells if c.split == split]
            if not split_cells:
                continue
            if split == "val":  # a selection's validation: ID val images vs the OOD set's val split
                source_for = ValidationSources(sources, split_cells[0].evaluation)
                eval_id_source = source_for(run.id_dataset, run.id_dataset_params)
            else:
                source_for, eval_id_source = sources, id_source
            evaluator = Evaluator(model, eval_id_source, ctx, plugins, dev, split_cells[0].evaluation,
                                  id_test=id_test if split == "test" else None, source_for=source_for,
                                  cache_dir=run_dir, loading=loading)
            try:
                for cell, result in evaluator.evaluate(split_cells):
                    write(cell, flag_chance(result, run), t_train)
                    done += 1
                    reporter.evaluating(done, len(cells))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the ID pass itself failed: every remaining cell fails
                err = describe_error(exc)
                log.error("evaluation FAILED: %s", err)
                log.debug("the traceback", exc_info=exc)
                for c in split_cells:
                    if cell_needs_work(results, c, "only-missing"):
                        write(c, {"error": err}, t_train)
                summary["error"] = err
        m = evaluator.run_metrics if evaluator is not None else {}
        if m:
            log.info("done: ID accuracy %.2f%%, %d record(s) ok, %d failed", 100 * m["id_acc"], summary["records_ok"],
                     summary["records_failed"])
        status = "failed" if summary["error"] else "ok"
        reporter.finished(status, summary["error"], m.get("id_acc"))
        events.trackers.run_finished(status, summary["error"])
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
        ood_dataset=cell.ood_dataset, ood_group=cell.ood_group, seed=run.seed, weights=run.weights,
        split=cell.split, selection=cell.selection, train=run.train, evaluation=cell.evaluation,
        provenance=dict(provenance(plugins, dev), config_hash=run.run_id, cell_hash=cell.cell_id),
        train_seconds=train_seconds, created=_now(), id_dataset_params=run.id_dataset_params or None,
        ood_dataset_params=cell.ood_dataset_params or None, **outcome)


def describe_error(exc: BaseException) -> str:
    """One line: the error, and where it was raised when it is not one of the harness's own: the
    plugin and the file:line of its code (:meth:`~logitnorm_bench.plugins.Plugins.describe_error`)."""
    if isinstance(exc, (OodBenchError, DivergedError)):
        return f"{type(exc).__name__}: {exc}"
    return get_plugins().describe_error(exc)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LogitMagnitudeMonitor:
    """Per-epoch mean logit norm on fixed ID test images and an OOD set (``train.monitor_ood``)."""

    def __init__(self, id_test, sources, run: TrainingRun, ctx, dev):
        self.dev, self.sets = dev, {}
        k = run.train.get("monitor_samples", 256)
        self.sets["logit_norm_id"] = id_test.take(sample_indices(len(id_test), k, 0))  # an ImageSet
        try:
            ood_name = run.train.get("monitor_ood")
            if ood_name:
                ds = sources(ood_name).build("test", ctx)
                idx = sample_indices(len(ds), k, 0)
                self.sets["logit_norm_ood"], _ = materialize(Subset(ds, idx.tolist()))
        except Exception as exc:  # the curve is a nicety: never fail a training for it
            log.warning("logit-norm monitor disabled: %s", exc)

    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        out = {name: float(forward_pass(model, x, 256, self.dev, False).logits.norm(dim=1).mean())
               for name, x in self.sets.items()}
        model.train(was_training)
        return out
