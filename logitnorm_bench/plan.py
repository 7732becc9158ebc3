"""A suite expands to a Plan: unique TrainingRuns and the EvaluationCells they serve.

A TrainingRun's id is a hash of everything that changes the trained weights (datasets, architecture
and resolved params, loss and resolved params, the hashed part of the recipe, seed, given weights),
so one training serves every detector, OOD set and experiment that uses it, across suites sharing
a results folder.  An EvaluationCell adds the detector, its params, the OOD set and the protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from logitnorm_bench.suite import Combo, Suite, TrainRecipe, check_names, recipe_dict

EVAL_HASHED = ("ood_samples", "sample_seed", "id_val_samples", "calibration_bins")


def stable_hash(obj: Any, length: int = 16) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


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

    def label(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.loss_params.items())
        loss = f"{self.loss}({params})" if params else self.loss
        return f"{self.id_dataset}/{self.arch}/{loss}/seed{self.seed}"


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

    def to_payload(self) -> dict:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dict(payload, run=asdict(self.run), cells=[asdict(c) for c in self.cells])

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

    def cells_of(self, run_id: str) -> list[EvaluationCell]:
        return [c for c in self.cells if c.run_id == run_id]

    def to_json(self) -> dict:
        out = {"training_runs": [asdict(r) for r in self.runs], "evaluations": [asdict(c) for c in self.cells]}
        if self.selections:
            out["selections"] = [asdict(g) for g in self.selections]
        return out


#: Recipe fields added after the first release, with their defaults: hashed only when set, so the
#: runs (and selection groups) of recipes that leave them alone keep the ids they always had.
LATER_FIELDS = {"holdout": 0}


def stable_recipe(train: dict) -> dict:
    return {k: v for k, v in train.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def hashed_recipe(train: dict) -> dict:
    """The part of a recipe that shapes the weights."""
    return {k: v for k, v in stable_recipe(train).items() if k not in TrainRecipe.NOT_HASHED}


def run_identity(id_dataset, arch, arch_params, loss, loss_params, seed, train, weights, smoke) -> dict:
    hashed_train = hashed_recipe(train)
    return {"id_dataset": id_dataset, "arch": arch, "arch_params": arch_params, "loss": loss,
            "loss_params": loss_params, "seed": seed, "weights": weights, "smoke": smoke,
            # Given weights are not trained: the recipe does not shape them.
            "train": None if weights else hashed_train}


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
        identity = run_identity(c.id_dataset, c.arch, arch_params, c.loss, loss_params, c.seed,
                                train, c.weights, smoke)
        run_id = stable_hash(identity)
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = TrainingRun(run_id, c.id_dataset, c.arch, arch_params, c.loss,
                                             loss_params, c.seed, train, c.weights, smoke)
        if exp_name not in run.experiments:
            run.experiments.append(exp_name)
        eval_hashed = {k: evaluation[k] for k in EVAL_HASHED}
        ident = {"run": run_id, "detector": c.detector, "detector_params": det_params,
                 "ood_dataset": c.ood_dataset, "evaluation": eval_hashed}
        if split != "test":  # test cells keep the hash they always had
            ident["split"] = split
        cell_id = stable_hash(ident)
        cell = cells.get(cell_id) if keep else None
        if cell is None:
            cell = EvaluationCell(cell_id, run_id, c.detector, det_params, c.ood_dataset, evaluation,
                                  split=split)
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
            rest = {k: v for k, v in asdict(c).items() if k not in ("seed", "ood_dataset")}
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
                val_cell = add(dataclasses.replace(candidate, ood_dataset=sel.ood_dataset), exp.name, train,
                               evaluation, split="val")
                ids = group.validation.setdefault(vkey, [])
                if val_cell.cell_id not in ids:
                    ids.append(val_cell.cell_id)
                test_cell = add(candidate, exp.name, train, evaluation, keep=False)
                tests = group.test_cells.setdefault(vkey, [])
                if all(t.cell_id != test_cell.cell_id for t in tests):
                    tests.append(test_cell)
    return Plan(suite.name, list(runs.values()), list(cells.values()), list(groups.values()))
