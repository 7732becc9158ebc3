"""Runs a plan: trains what is missing, evaluates what is missing, writes a record per cell at once.

``execute_run`` is the unit of work an executor runs (a plain function of picklable arguments, so
the local process pool and Ray run the same code).  It trains (or resumes, or reuses) one
TrainingRun and writes the records of the cells it serves.  A failure inside it (divergence, a
plugin exception, missing data) becomes failed records with the error, and the grid goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout

from logitnorm_bench.components import DataContext
from logitnorm_bench.errors import ConfigError, OodBenchError
from logitnorm_bench.evaluate import Evaluator, forward_pass, sample_indices
from logitnorm_bench.plan import EvaluationCell, Plan, TrainingRun
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import (RECORD_SCHEMA, ResultsDir, atomic_torch_save, load_state_or_set_aside,
                                     provenance)
from logitnorm_bench.train import DivergedError, build_model, materialize, train

OVERWRITE_MODES = ("only-missing", "always", "never")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    return dev


def cell_needs_work(results: ResultsDir, cell: EvaluationCell, overwrite: str) -> bool:
    rec = results.read_record(cell.cell_id)
    if overwrite == "always":
        return True
    if rec is None:
        return True
    # A failed cell is not a result: only-missing retries it, never leaves it.
    return overwrite == "only-missing" and rec.get("status") != "ok"


def pending_work(plan: Plan, results: ResultsDir, overwrite: str) -> list[tuple[TrainingRun, list[EvaluationCell]]]:
    jobs = []
    for run in plan.runs:
        cells = [c for c in plan.cells_of(run.run_id) if cell_needs_work(results, c, overwrite)]
        if cells:
            jobs.append((run, cells))
    return jobs


class Progress:
    """One line per event on stderr, prefixed with the run's position and label."""

    def __init__(self, index: int, total: int, label: str, stream=None):
        self.prefix = f"[{index}/{total} {label}]"
        self.stream = stream or sys.stderr

    def __call__(self, message: str) -> None:
        print(f"{self.prefix} {message}", file=self.stream, flush=True)


def execute_run(run: dict, cells: list[dict], results_root: str, data_root: str, device: str,
                overwrite: str, index: int = 1, total: int = 1, download: bool = True,
                suite_name: str = "") -> dict:
    """Train one TrainingRun if needed, then evaluate its cells; returns a summary dict."""
    run_obj = TrainingRun(**run)
    cell_objs = [EvaluationCell(**c) for c in cells]
    results = ResultsDir(results_root)
    plugins = get_plugins()
    dev = resolve_device(device)
    progress = Progress(index, total, run_obj.label())
    ctx = DataContext(root=Path(data_root), download=download, seed=run_obj.seed)
    summary = {"run_id": run_obj.run_id, "trained": False, "records_ok": 0, "records_failed": 0,
               "error": None}
    run_dir = results.run_dir(run_obj.run_id)
    lock = FileLock(str(run_dir.with_suffix(".lock")))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock:  # two workers never train the same run at once
        info = results.read_run(run_obj.run_id) or {}
        base = {"run": asdict(run_obj), "provenance": provenance(plugins, dev)}
        t_train, id_test = 0.0, None
        try:
            sources = _Sources(plugins, run_obj.smoke)
            id_source = sources(run_obj.id_dataset)
            loss_fn = plugins.losses.build(run_obj.loss, **run_obj.loss_params)
            model = build_model(plugins, run_obj.arch, run_obj.arch_params, loss_fn, id_source, run_obj.seed)
            model_path = run_dir / "model.pt"
            if run_obj.weights:
                _load_given_weights(model, run_obj.weights)
                info.update(status="given_weights", weights=run_obj.weights)
            elif (overwrite != "always" and info.get("status") == "trained"
                  and (state := load_state_or_set_aside(model_path, progress)) is not None):
                model.load_state_dict(state)
                progress("trained weights found; not training again")
            else:
                if overwrite == "always":
                    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
                progress("loading training data")
                train_x, train_y = materialize(id_source.build("train", ctx))
                id_test = materialize(id_source.build("test", ctx))  # the monitor's and, later, the evaluation's
                monitor = _Monitor(id_test[0], sources, run_obj, ctx, dev)
                info.update(base, status="training", started=_now())
                results.write_run(run_obj.run_id, info)
                res = train(model, loss_fn, train_x, train_y, run_obj.train, run_obj.seed, dev,
                            checkpoint=run_dir / "checkpoint.pt", monitor=monitor, progress=progress)
                t_train = res.seconds
                model = res.model
                atomic_torch_save(model_path, {k: v.cpu() for k, v in model.state_dict().items()})
                info.update(status="trained", history=res.history, train_seconds=res.seconds,
                            resumed_from_epoch=res.resumed_from, finished=_now(), error=None)
                results.write_run(run_obj.run_id, info)
                summary["trained"] = True
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            err = _describe(exc)
            info.update(base, status="failed", error=err, finished=_now())
            results.write_run(run_obj.run_id, info)
            progress(f"FAILED: {err}")
            for c in cell_objs:
                results.write_record(_record(run_obj, c, suite_name, dev, plugins, {"error": err}, t_train))
                summary["records_failed"] += 1
            summary["error"] = err
            return summary

        progress(f"evaluating {len(cell_objs)} cell(s)")
        for split in ("test", "val"):
            split_cells = [c for c in cell_objs if c.split == split]
            if not split_cells:
                continue
            if split == "val":  # a selection's validation: ID val images vs the OOD set's val split
                source_for = _ValSources(sources, split_cells[0].evaluation)
                eval_id_source = source_for(run_obj.id_dataset)
            else:
                source_for, eval_id_source = sources, id_source
            evaluator = Evaluator(model, eval_id_source, ctx, plugins, dev, split_cells[0].evaluation,
                                  id_test=id_test if split == "test" else None, source_for=source_for)
            try:
                for cell, result in evaluator.evaluate(split_cells):
                    result = _flag_chance(result, run_obj)
                    results.write_record(_record(run_obj, cell, suite_name, dev, plugins, result, t_train))
                    summary["records_ok" if "error" not in result else "records_failed"] += 1
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the ID pass itself failed: every remaining cell fails
                err = _describe(exc)
                progress(f"evaluation FAILED: {err}")
                for c in split_cells:
                    if cell_needs_work(results, c, "only-missing"):
                        results.write_record(_record(run_obj, c, suite_name, dev, plugins, {"error": err},
                                                     t_train))
                        summary["records_failed"] += 1
                summary["error"] = err
        m = evaluator.run_metrics
        if m:
            progress(f"done: ID accuracy {100 * m['id_acc']:.2f}%, {summary['records_ok']} record(s) ok, "
                     f"{summary['records_failed']} failed")
    return summary


def _flag_chance(result: dict, run: TrainingRun) -> dict:
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


def _record(run: TrainingRun, cell: EvaluationCell, suite: str, dev, plugins, result: dict,
            train_seconds: float) -> dict:
    rec = {
        "schema": RECORD_SCHEMA,
        "cell_id": cell.cell_id,
        "run_id": run.run_id,
        "status": "failed" if "error" in result else "ok",
        "error": result.get("error"),
        "smoke": run.smoke,
        "suite": suite,
        "experiments": cell.experiments,
        "id_dataset": run.id_dataset, "arch": run.arch, "arch_params": run.arch_params,
        "loss": run.loss, "loss_params": run.loss_params,
        "detector": cell.detector, "detector_params": cell.detector_params,
        "ood_dataset": cell.ood_dataset, "seed": run.seed, "weights": run.weights,
        "split": cell.split, "selection": cell.selection,
        "train": run.train, "evaluation": cell.evaluation,
        "provenance": dict(provenance(plugins, dev), config_hash=run.run_id, cell_hash=cell.cell_id),
        "train_seconds": train_seconds,
        "created": _now(),
    }
    for key in ("metrics", "run_metrics", "detector_fit", "score_hist", "n_id", "n_ood", "eval_seconds",
                "at_chance"):
        if key in result:
            rec[key] = result[key]
    if run.smoke:
        rec["note"] = "SMOKE: synthetic stand-in data, a few batches of training; the numbers mean nothing"
    return rec


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (OodBenchError, DivergedError)):
        return f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_given_weights(model, weights: str) -> None:
    """Load a checkpoint file or a pytorch-ood model-zoo entry into the architecture.

    Never unpickles arbitrary objects: ``torch.load(weights_only=True)`` always.  (pytorch-ood's own
    ``load_model`` goes through ``torch.hub.load_state_dict_from_url``, which does not pass
    ``weights_only``; so we fetch its file ourselves, verify its SHA-256, and load it safely.)
    """
    zoo = "pytorch-ood:"
    if weights.startswith(zoo):
        path = _zoo_file(weights[len(zoo):])
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model.net if hasattr(model, "net") else model
    loader = getattr(target, "load_official_state_dict", None)
    if loader is not None:
        loader(state)
    else:
        target.load_state_dict(state)


class _Sources:
    """name -> DatasetSource, built once per run; smoke mode swaps in synthetic stand-ins."""

    def __init__(self, plugins, smoke: bool):
        self.plugins, self.smoke, self.cache = plugins, smoke, {}
        self.id_shape = None

    def __call__(self, name: str):
        if name not in self.cache:
            entry = self.plugins.datasets.get(name)
            kwargs = {}
            if self.id_shape is not None and _accepts(entry.factory, "shape"):
                kwargs["shape"] = self.id_shape  # noise / patch sets take the ID images' shape
            source = entry.factory(**kwargs)
            if self.smoke:
                from logitnorm_bench.smoke import SmokeSource

                source = SmokeSource(name, source)
            if self.id_shape is None:
                self.id_shape = tuple(source.input_shape)
            self.cache[name] = source
        return self.cache[name]


class _ValSources:
    """Sources whose "test" split is their validation data (for a selection's validation cells).

    ID: the dataset's ``val`` split, else a seeded sample of its training images (never test images);
    OOD: the set's ``val`` split (the noise sets draw other images there than in ``test``).
    """

    def __init__(self, sources: "_Sources", protocol: dict):
        self.sources, self.protocol, self.cache = sources, protocol, {}

    def __call__(self, name: str):
        if name not in self.cache:
            self.cache[name] = _ValView(self.sources(name), self.protocol)
        return self.cache[name]


class _ValView:
    def __init__(self, source, protocol: dict):
        self.source, self.protocol = source, protocol
        for attr in ("num_classes", "input_shape", "mean", "std"):
            setattr(self, attr, getattr(source, attr))
        self.splits = tuple(source.splits)

    def build(self, split: str, ctx):
        if split != "test":
            return self.source.build(split, ctx)
        if "val" in self.source.splits:
            return self.source.build("val", ctx)
        if not self.source.num_classes:
            raise ConfigError(f"this OOD dataset has no val split to select on (splits: {self.source.splits})")
        from torch.utils.data import Subset

        train = self.source.build("train", ctx)
        idx = sample_indices(len(train), self.protocol["id_val_samples"], self.protocol["sample_seed"] + 1)
        return Subset(train, idx.tolist())


def _accepts(factory, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


class _Monitor:
    """Per-epoch mean logit norm on fixed ID test images and an OOD set (the paper's Figure 1)."""

    def __init__(self, id_test_x, sources, run: TrainingRun, ctx, dev):
        self.dev, self.sets = dev, {}
        k = run.train.get("monitor_samples", 256)
        self.sets["logit_norm_id"] = id_test_x[sample_indices(len(id_test_x), k, 0)]
        try:
            ood_name = run.train.get("monitor_ood")
            if ood_name:
                ds = sources(ood_name).build("test", ctx)
                from torch.utils.data import Subset

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


# ------------------------------------------------------------------------------------------
# The whole suite
# ------------------------------------------------------------------------------------------


class ResultsLock:
    """One ``ood-bench run`` per results folder: a second one refuses with a clear message."""

    def __init__(self, root: Path, wait: float = 0):
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / ".ood-bench.lock"
        self.lock = FileLock(str(self.path))
        self.wait = wait

    def __enter__(self):
        try:
            self.lock.acquire(timeout=self.wait)
        except Timeout:
            raise ConfigError(f"results folder {self.path.parent} is in use by another ood-bench run "
                              f"(lock {self.path}); wait for it to finish or use another --results") from None
        return self

    def __exit__(self, *exc):
        self.lock.release()


def run_plan(plan: Plan, results_root: Path, data_root: Path, device: str, overwrite: str,
             executor: str = "local", executor_options: dict | None = None,
             download: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Run what is missing of ``plan``, then of its selections; returns counts.  Caller holds the lock."""
    results = ResultsDir(results_root)
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
        payloads = [dict(run=asdict(run), cells=[asdict(c) for c in cells], results_root=str(results_root),
                         data_root=str(data_root), device=device, overwrite=overwrite, index=i + 1,
                         total=len(jobs), download=download, suite_name=plan.suite)
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
        for c in cells:
            needed.setdefault(c.ood_dataset, set()).add(c.split)
    for g in plan.selections:
        needed.setdefault(g.ood_dataset, set()).add("val")
    sources = _Sources(get_plugins(), smoke=False)
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


def _zoo_file(identifier: str) -> Path:
    """Download (once) a pytorch-ood model-zoo checkpoint, verified against its SHA-256."""
    from pytorch_ood.model import registry

    from logitnorm_bench.download import download_url

    try:
        entry = registry.get_model_info(identifier)
    except ValueError as exc:
        raise ConfigError(f"weights 'pytorch-ood:{identifier}': {exc}") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    name = entry.file_name or Path(entry.url.split("?")[0]).name
    path = cache / name
    if not path.exists():
        try:
            download_url(entry.url, path, sha256=entry.sha256)
        except OSError as exc:
            raise ConfigError(f"weights 'pytorch-ood:{identifier}': download from {entry.url} failed "
                              f"({exc}); put the file at {path}") from None
    return path
