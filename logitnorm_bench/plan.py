"""A suite expands to a Plan: unique TrainingRuns and the EvaluationCells they serve.

A TrainingRun's id is a hash of everything that changes the trained weights (datasets, architecture
and resolved params, loss and resolved params, the hashed part of the recipe, seed, given weights),
so one training serves every detector, OOD set and experiment that uses it, across suites sharing
a results folder.  An EvaluationCell adds the detector, its params, the OOD set and the protocol.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from logitnorm_bench.params import resolve_params
from logitnorm_bench.suite import Suite, TrainRecipe, recipe_dict

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

    def identity(self) -> dict:
        return run_identity(self.id_dataset, self.arch, self.arch_params, self.loss, self.loss_params,
                            self.seed, self.train, self.weights, self.smoke)

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


@dataclass
class Plan:
    suite: str
    runs: list[TrainingRun]
    cells: list[EvaluationCell]

    def cells_of(self, run_id: str) -> list[EvaluationCell]:
        return [c for c in self.cells if c.run_id == run_id]

    def to_json(self) -> dict:
        return {"training_runs": [asdict(r) for r in self.runs],
                "evaluations": [asdict(c) for c in self.cells]}


def run_identity(id_dataset, arch, arch_params, loss, loss_params, seed, train, weights, smoke) -> dict:
    hashed_train = {k: v for k, v in train.items() if k not in TrainRecipe.NOT_HASHED}
    return {"id_dataset": id_dataset, "arch": arch, "arch_params": arch_params, "loss": loss,
            "loss_params": loss_params, "seed": seed, "weights": weights, "smoke": smoke,
            # Given weights are not trained: the recipe does not shape them.
            "train": None if weights else hashed_train}


def make_plan(suite: Suite, plugins, smoke: bool = False) -> Plan:
    runs: dict[str, TrainingRun] = {}
    cells: dict[str, EvaluationCell] = {}
    resolved: dict[tuple, dict] = {}

    def params(kind: str, name: str, given: dict) -> dict:
        key = (kind, name, json.dumps(given, sort_keys=True, default=str))
        if key not in resolved:
            resolved[key] = resolve_params(plugins.registry(kind).get(name), given)
        return resolved[key]

    for exp in suite.experiments:
        train = recipe_dict(exp.train)
        evaluation = {k: v for k, v in vars(exp.evaluation).items()}
        eval_hashed = {k: evaluation[k] for k in EVAL_HASHED}
        for c in exp.combos:
            arch_params = params("architectures", c.arch, c.arch_params)
            loss_params = params("losses", c.loss, c.loss_params)
            det_params = params("detectors", c.detector, c.detector_params)
            identity = run_identity(c.id_dataset, c.arch, arch_params, c.loss, loss_params, c.seed,
                                    train, c.weights, smoke)
            run_id = stable_hash(identity)
            run = runs.get(run_id)
            if run is None:
                run = runs[run_id] = TrainingRun(run_id, c.id_dataset, c.arch, arch_params, c.loss,
                                                 loss_params, c.seed, train, c.weights, smoke)
            if exp.name not in run.experiments:
                run.experiments.append(exp.name)
            cell_id = stable_hash({"run": run_id, "detector": c.detector, "detector_params": det_params,
                                   "ood_dataset": c.ood_dataset, "evaluation": eval_hashed})
            cell = cells.get(cell_id)
            if cell is None:
                cell = cells[cell_id] = EvaluationCell(cell_id, run_id, c.detector, det_params,
                                                       c.ood_dataset, evaluation)
            if exp.name not in cell.experiments:
                cell.experiments.append(exp.name)
    return Plan(suite.name, list(runs.values()), list(cells.values()))
