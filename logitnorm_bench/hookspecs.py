"""Hook specifications: what a plugin can register.

Components (datasets, architectures, losses, detectors), and the harness's own extension points:
executors, bundled suites, report sections and experiment trackers.

Every hook is a register-callback (the style of llm and datasette): the harness calls
``register_<kind>(register)`` and the plugin calls ``register(name, factory, **info)`` once
per component, so one plugin module can provide many named things.  ``factory`` is a callable or
an import string ``"package.module:attribute"``, imported only when the component is built or its
parameters are resolved (so a plugin whose components need torch can be listed without it).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import pluggy

PROJECT = "ood_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    def __call__(self, name: str, factory: Callable[..., Any] | str, *, description: str = "") -> None: ...


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset sources.

    ``factory(**params)`` returns a :class:`logitnorm_bench.components.DatasetSource`: it knows its
    class count, input shape and normalisation, and builds a torch Dataset per split (downloading
    when allowed).  Images are float tensors in [0, 1], not normalised; OOD-only datasets use label -1.
    """


@hookspec
def register_architectures(register: Register) -> None:
    """Register architectures.

    ``factory(num_classes, input_shape, **params)`` returns an ``nn.Module`` whose ``forward(x)``
    gives logits and equals ``head(features(x))``: ``features`` returns penultimate features and
    ``head`` is the final layer (see :class:`logitnorm_bench.components.Classifier`).
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register training losses.

    ``factory(**params)`` returns a :class:`logitnorm_bench.components.Loss`: ``forward(logits,
    targets)`` gives the mean loss; ``prepare_model`` may add or replace the head (GODIN);
    ``no_weight_decay`` lists parameters trained without weight decay.
    """


@hookspec
def register_detectors(register: Register) -> None:
    """Register OOD detectors (scoring functions).

    ``factory(**params)`` returns a :class:`logitnorm_bench.components.Detector` whose scores are
    higher for more in-distribution inputs.  It scores the shared pass's outputs, or (when it
    needs input gradients) does its own pass; it may fit or tune on ID data.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors that run a plan's training runs (``local``, ``ray``, ...).

    ``factory(**options)`` returns an object with ``run(payloads) -> iterator of summaries``: each payload
    is the keyword arguments of :func:`logitnorm_bench.worker.execute_run`, which trains one run and writes
    its records to the shared results folder;
    see :mod:`logitnorm_bench.executors`.
    """


@hookspec
def register_suites(register: Register) -> None:
    """Register suite files under a name, so ``ood-bench run NAME`` finds them without a path.

    ``factory()`` returns the :class:`pathlib.Path` of the suite's YAML file (usually a file
    shipped inside the plugin's package).
    """


@hookspec
def register_reports(register: Register) -> None:
    """Register report sections: tables and figures built from a results folder.

    ``factory()`` returns a :class:`logitnorm_bench.reporting.ReportSection`: a ``title``,
    ``tables(results)`` (rendered by ``ood-bench tables`` and ``ood-bench report``) and
    ``figures(results, out_dir)`` (PNG files on the ``report`` page), where ``results`` is the
    shared read-only :class:`logitnorm_bench.reporting.Results` view of the folder (records,
    leaderboard rows, run histories).  A section returns nothing when the results it needs are
    absent, so it stays off the page.
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register experiment trackers (TensorBoard, MLflow, Weights & Biases, ...).

    ``factory(**options)`` returns a :class:`logitnorm_bench.components.Tracker`; it is called once
    per training run, in the process that runs it, and told the run's events (started with its
    config, each epoch's metrics, each record written, finished or failed).  Switched on by a
    suite's ``trackers`` or ``ood-bench run --tracker NAME``; a tracker that raises never fails a run.
    """
