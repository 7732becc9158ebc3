"""A suite expands to a Plan: unique TrainingRuns and the EvaluationCells they serve.

A TrainingRun's id is a hash of everything that changes the trained weights (datasets and their
params, architecture and resolved params, loss and resolved params, the hashed part of the recipe, seed, given weights),
so one training serves every detector, OOD set and experiment that uses it, across suites sharing
a results folder.  An EvaluationCell adds the detector, its params, the OOD set (and its params) and
the protocol.  Dataset params are hashed only when set (see :data:`LATER_WHEN_SET`).
A component from a plugin other than the built-ins is hashed with its distribution's name
(:func:`component_identity`), so a bare name that comes to mean another plugin's component never
reuses the old one's results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from logitnorm_bench.errors import ConfigError
from logitnorm_bench.suite import Combo, Suite, TrainRecipe, check_names, recipe_dict

EVAL_HASHED = ("ood_samples", "sample_seed", "id_val_samples", "calibration_bins")
# Protocol keys added later: hashed only when they differ from their default, so the cells of
# existing results folders keep their ids (and their records).
EVAL_HASHED_UNLESS_DEFAULT = {"fit_train_samples": 50000, "ood_draws": 1}


def stable_hash(obj: Any, length: int = 16) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]



def source_key(name: str, params: dict | None = None) -> tuple[str, str]:
    """What identifies one built source: the dataset's name and its params (canonical JSON)."""
    return name, json.dumps(params or {}, sort_keys=True, separators=(",", ":"))

@dataclass
class TrainingRun:
    run_id: str
    id_dataset: str
    arch: str
    arch_params: dict
    loss: str
    loss_params: dict
    seed: int
    train: dict
    weights: str | None = None
    smoke: bool = False
    experiments: list[str] = field(default_factory=list)
    id_dataset_params: dict = field(default_factory=dict)  #: what differs from the factory's defaults

    def label(self) -> str:
        def named(name: str, params: dict) -> str:
            text = ",".join(f"{k}={v}" for k, v in params.items())
            return f"{name}({text})" if text else name

        return (f"{named(self.id_dataset, self.id_dataset_params)}/{self.arch}/{named(self.loss, self.loss_params)}"
                f"/seed{self.seed}")


@dataclass
class EvaluationCell:
    cell_id: str
    run_id: str
    detector: str
    detector_params: dict
    ood_dataset: str
    evaluation: dict
    experiments: list[str] = field(default_factory=list)
    split: str = "test"  #: "val" for a selection's validation cells (ID val images vs the OOD set's val split)
    selection: dict | None = None  #: set on test cells reached through a selection: what was chosen, and why
    ood_group: str | None = None  #: the matrix's ``ood_group`` label (not part of the cell's hash)
    ood_dataset_params: dict = field(default_factory=dict)  #: what differs from the factory's defaults


#: Fields added later that are written out (plan JSON, payloads, run.json) only when set, so a run or
#: cell without them has the bytes it always had.
LATER_WHEN_SET = ("id_dataset_params", "ood_dataset_params")


def plain(obj) -> dict:
    """``asdict`` of a run or cell, less the :data:`LATER_WHEN_SET` fields left empty."""
    out = asdict(obj)
    for name in LATER_WHEN_SET:
        if name in out and not out[name]:
            del out[name]
    return out


@dataclass
class WorkItem:
    """One unit of work for an executor: train (or reuse) one run, then evaluate the given cells.

    Executors move it as :meth:`to_payload` (plain JSON-able data: it may cross a process or
    machine boundary); the worker turns it back with :meth:`from_payload`.
    """

    run: TrainingRun
    cells: list[EvaluationCell]
    results_root: str
    data_root: str
    device: str
    overwrite: str
    index: int = 1  #: position in this invocation's work, for progress lines
    total: int = 1
    download: bool = True
    suite_name: str = ""
    threads: int | None = None  #: torch threads for the run; None = auto (worker.choose_threads)
    trackers: list | None = None  #: ``[[name, options], ...]``: the trackers told about this run
    observe: dict | None = None  #: where its log records and progress go (logs.worker_logging)
    loading: dict | None = None  #: how its sets are read (suite.Loading fields); None = the defaults

    def to_payload(self) -> dict:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dict(payload, run=plain(self.run), cells=[plain(c) for c in self.cells])

    @classmethod
    def from_payload(cls, payload: dict) -> "WorkItem":
        return cls(**dict(payload, run=TrainingRun(**payload["run"]),
                          cells=[EvaluationCell(**c) for c in payload["cells"]]))


@dataclass
class SelectionGroup:
    """One choice of a parameter value (for a grid group, over its seeds), made after validation."""

    group_id: str
    param: str
    metric: str
    ood_dataset: str
    values: list
    validation: dict[str, list[str]]  #: value (JSON) -> validation cell ids (one per seed)
    test_cells: dict[str, list[EvaluationCell]]  #: value (JSON) -> the test cells if it is chosen
    experiments: list[str] = field(default_factory=list)


@dataclass
class Plan:
    suite: str
    runs: list[TrainingRun]
    cells: list[EvaluationCell]
    selections: list[SelectionGroup] = field(default_factory=list)
    loading: dict = field(default_factory=dict)  #: the suite's ``defaults.loading`` (not in any identity)

    def cells_of(self, run_id: str) -> list[EvaluationCell]:
        return [c for c in self.cells if c.run_id == run_id]

    def to_json(self) -> dict:
        out = {"training_runs": [plain(r) for r in self.runs], "evaluations": [plain(c) for c in self.cells]}
        if self.selections:
            out["selections"] = [dict(asdict(g), test_cells={v: [plain(c) for c in cs] for v, cs in g.test_cells.items()})
                                 for g in self.selections]
        return out


#: Recipe fields added after the first release, with their defaults: hashed only when set, so the
#: runs (and selection groups) of recipes that leave them alone keep the ids they always had.
LATER_FIELDS = {"holdout": 0}


def stable_recipe(train: dict) -> dict:
    return {k: v for k, v in train.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def hashed_recipe(train: dict) -> dict:
    """The part of a recipe that shapes the weights."""
    return {k: v for k, v in stable_recipe(train).items() if k not in TrainRecipe.NOT_HASHED}


def run_identity(id_dataset, arch, arch_params, loss, loss_params, seed, train, weights, smoke,
                 providers: dict | None = None, id_dataset_params: dict | None = None) -> dict:
    hashed_train = hashed_recipe(train)
    identity = {"id_dataset": id_dataset, "arch": arch, "arch_params": arch_params, "loss": loss,
                "loss_params": loss_params, "seed": seed, "weights": weights, "smoke": smoke,
                # Given weights are not trained: the recipe does not shape them.
                "train": None if weights else hashed_train}
    if providers:
        identity["providers"] = providers
    if id_dataset_params:  # hashed only when set: runs without keep their ids
        identity["id_dataset_params"] = id_dataset_params
    return identity

def component_identity(plugins, **components: tuple[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """What identifies the components ``key=(kind, name)`` in a hash: ``({key: bare name},
    {key: distribution})``, the distribution given only for a component that is not a built-in.

    A bare name that comes to mean another distribution's component (one installed or removed) thus
    names another run, never silently the old one; a component hashes the same whether the suite
    names it ``a-plugin:maxlogit`` or ``maxlogit``.  The built-ins (which always win their bare names)
    add nothing, so their hashes are as they always were.
    """
    names, providers = {}, {}
    for key, (kind, name) in components.items():
        entry = plugins.registry(kind).get(name)
        names[key] = entry.name
        if not entry.builtin:
            providers[key] = entry.provider_key
    return names, providers


def make_plan(suite: Suite, plugins, smoke: bool = False) -> Plan:
    """The plan of a suite: its params are resolved by :func:`~logitnorm_bench.suite.check_names`
    (done here if the suite was loaded without plugins), so the hashes cover the resolved values."""
    check_names(suite, plugins)
    runs: dict[str, TrainingRun] = {}
    cells: dict[str, EvaluationCell] = {}
    groups: dict[str, SelectionGroup] = {}

    def add(c: Combo, exp_name: str, train: dict, evaluation: dict, split: str = "test",
            keep: bool = True) -> EvaluationCell:
        """The run and cell of one combination (the cell is added to the plan when ``keep``)."""
        arch_params, loss_params, det_params = c.arch_params, c.loss_params, c.detector_params
        names, providers = component_identity(plugins, id_dataset=("datasets", c.id_dataset),
                                              arch=("architectures", c.arch), loss=("losses", c.loss))
        identity = run_identity(names["id_dataset"], names["arch"], arch_params, names["loss"], loss_params,
                                c.seed, train, c.weights, smoke, providers, c.id_dataset_params)
        run_id = stable_hash(identity)
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = TrainingRun(run_id, c.id_dataset, c.arch, arch_params, c.loss,
                                             loss_params, c.seed, train, c.weights, smoke,
                                             id_dataset_params=c.id_dataset_params)
        if exp_name not in run.experiments:
            run.experiments.append(exp_name)
        eval_hashed = {k: evaluation[k] for k in EVAL_HASHED}
        eval_hashed.update({k: evaluation[k] for k, default in EVAL_HASHED_UNLESS_DEFAULT.items()
                            if evaluation.get(k, default) != default})
        names, providers = component_identity(plugins, detector=("detectors", c.detector),
                                              ood_dataset=("datasets", c.ood_dataset))
        ident = {"run": run_id, "detector": names["detector"], "detector_params": det_params,
                 "ood_dataset": names["ood_dataset"], "evaluation": eval_hashed}
        if split != "test":  # test cells keep the hash they always had
            ident["split"] = split
        if providers:
            ident["providers"] = providers
        if c.ood_dataset_params:  # hashed only when set: cells without keep their ids
            ident["ood_dataset_params"] = c.ood_dataset_params
        cell_id = stable_hash(ident)
        cell = cells.get(cell_id) if keep else None
        if cell is None:
            cell = EvaluationCell(cell_id, run_id, c.detector, det_params, c.ood_dataset, evaluation,
                                  split=split, ood_group=c.ood_group, ood_dataset_params=c.ood_dataset_params)
            if keep:
                cells[cell_id] = cell
        if exp_name not in cell.experiments:
            cell.experiments.append(exp_name)
        return cell

    for exp in suite.experiments:
        train = recipe_dict(exp.train)
        evaluation = dict(vars(exp.evaluation))
        sel = exp.select
        for i, c in enumerate(exp.combos):
            if sel is None:
                add(c, exp.name, train, evaluation)
                continue
            # One group per combination less its seed, OOD set and the selected parameter.
            kind_key, _, pname = sel.param.partition(".")
            rest = {k: v for k, v in plain(c).items()
                    if k not in ("seed", "ood_dataset", "ood_group", "ood_dataset_params")}
            rest[kind_key] = {k: v for k, v in rest[kind_key].items() if k != pname}
            gid = stable_hash({"group": rest, "select": asdict(sel), "train": stable_recipe(train), "smoke": smoke,
                               "evaluation": {k: evaluation[k] for k in EVAL_HASHED}})
            group = groups.get(gid)
            if group is None:
                group = groups[gid] = SelectionGroup(gid, sel.param, sel.metric, sel.ood_dataset, sel.values,
                                                     {}, {})
            if exp.name not in group.experiments:
                group.experiments.append(exp.name)
            for value, candidate in zip(sel.values, exp.candidates[i]):
                vkey = json.dumps(value)
                val_cell = add(dataclasses.replace(candidate, ood_dataset=sel.ood_dataset, ood_dataset_params={}),
                               exp.name, train, evaluation, split="val")
                ids = group.validation.setdefault(vkey, [])
                if val_cell.cell_id not in ids:
                    ids.append(val_cell.cell_id)
                test_cell = add(candidate, exp.name, train, evaluation, keep=False)
                tests = group.test_cells.setdefault(vkey, [])
                if all(t.cell_id != test_cell.cell_id for t in tests):
                    tests.append(test_cell)
    return Plan(suite.name, list(runs.values()), list(cells.values()), list(groups.values()),
                loading=asdict(suite.loading))


def load_plan(suite, *, overrides: Iterable[str] = (), smoke: bool = False, plugins=None):
    """(suite, plan) for a suite name, path, mapping or ``Suite``; validated against the registries."""
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import Suite, check_names, load_suite, parse_suite

    if not isinstance(suite, (Suite, dict)):
        load_suite(suite, list(overrides))  # the file's own checks first: a bad one fails before plugins load
    plugins = plugins or get_plugins()
    if isinstance(suite, Suite):
        if overrides:
            raise ConfigError("overrides apply to a suite file, name or mapping, not to a loaded Suite")
        check_names(suite, plugins)
    elif isinstance(suite, dict):
        suite = parse_suite(suite, "(suite mapping)", list(overrides), plugins)
    else:
        suite = load_suite(suite, list(overrides), plugins)
    if smoke:
        from logitnorm_bench.smoke import smoke_suite

        suite = smoke_suite(suite)
    return suite, make_plan(suite, plugins, smoke=smoke)
