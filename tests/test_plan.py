"""Plans: deduplicated TrainingRuns, run ids, evaluation cells, and ``ood-bench plan``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from logitnorm_bench import cli
from logitnorm_bench.plan import make_plan, stable_hash
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.suite import load_suite, parse_suite

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "suites" / "quick.yaml"

MATRIX = {"id_dataset": ["digits"], "arch": ["digits_mlp"], "loss": ["ce"], "detector": ["msp"],
          "ood_dataset": ["gaussian_noise"], "seed": [0]}


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def plan_of(plugins, experiments: dict, train: dict | None = None, smoke: bool = False, overrides=()):
    doc = {"suite": "t", "defaults": {"train": dict(train or {"epochs": 3})}, "experiments": experiments}
    return make_plan(parse_suite(copy.deepcopy(doc), "t.yaml", list(overrides), plugins), plugins, smoke=smoke)


def one_run_id(plugins, train=None, smoke=False, **matrix_over) -> str:
    plan = plan_of(plugins, {"e": {"matrix": {**MATRIX, **matrix_over}}}, train=train, smoke=smoke)
    assert len(plan.runs) == 1
    return plan.runs[0].run_id


# ------------------------------------------------------------------------------------------
# Deduplication
# ------------------------------------------------------------------------------------------


def test_two_experiments_share_trainings(plugins):
    plan = plan_of(plugins, {
        "a": {"matrix": {**MATRIX, "loss": ["ce", "logitnorm"], "ood_dataset": ["gaussian_noise"]}},
        "b": {"matrix": {**MATRIX, "loss": ["logitnorm"], "detector": ["energy"],
                         "ood_dataset": ["uniform_noise", "photo_patches"]}},
    })
    assert len(plan.runs) == 2
    by_loss = {r.loss: r for r in plan.runs}
    assert by_loss["ce"].experiments == ["a"]
    assert by_loss["logitnorm"].experiments == ["a", "b"]
    assert len(plan.cells) == 2 + 2
    assert len(plan.cells_of(by_loss["logitnorm"].run_id)) == 3
    assert {c.run_id for c in plan.cells} == {r.run_id for r in plan.runs}


def test_identical_cells_in_two_experiments_are_one_cell(plugins):
    plan = plan_of(plugins, {"a": {"matrix": MATRIX}, "b": {"matrix": MATRIX}})
    assert len(plan.runs) == 1 and len(plan.cells) == 1
    assert plan.runs[0].experiments == ["a", "b"]
    assert plan.cells[0].experiments == ["a", "b"]


def test_quick_suite_godin_trainings_shared(plugins):
    plan = make_plan(load_suite(QUICK, [], plugins), plugins)
    assert len(plan.runs) == 24
    godin = [r for r in plan.runs if r.loss == "godin"]
    assert len(godin) == 6
    assert all(set(r.experiments) == {"godin_score", "far_ood" if r.id_dataset == "digits" else "near_ood"}
               for r in godin)


def test_tau_ablation_shares_the_paper_tau_004_trainings(plugins):
    paper = make_plan(load_suite("paper", [], plugins), plugins)
    ablation = make_plan(load_suite("tau_ablation", [], plugins), plugins)
    paper_ids = {r.run_id for r in paper.runs}
    shared = {r.run_id for r in ablation.runs if r.loss_params == {"tau": 0.04}}
    assert len(shared) == 5 and shared <= paper_ids  # the five seeds of Table 1's CIFAR-10 LogitNorm
    assert not {r.run_id for r in ablation.runs if r.loss_params != {"tau": 0.04}} & paper_ids
    assert len(ablation.runs) == 7 * 5


def test_paper_official_tau_changes_only_the_logitnorm_trainings(plugins):
    paper = make_plan(load_suite("paper", [], plugins), plugins)
    official = make_plan(load_suite("paper_official_tau", [], plugins), plugins)
    def split(plan):
        ln = {(r.id_dataset, r.arch, r.seed): r.loss_params["tau"] for r in plan.runs if r.loss == "logitnorm"}
        return {r.run_id for r in plan.runs if r.loss != "logitnorm"}, ln
    (paper_other, paper_ln), (official_other, official_ln) = split(paper), split(official)
    assert official_other == paper_other and len(official.runs) == len(paper.runs) == 50
    assert set(paper_ln.values()) == {0.04} and paper_ln.keys() == official_ln.keys()
    assert official_ln == {k: 0.0085 if k[0] == "cifar100" else 0.01 for k in paper_ln}
    assert len(official.cells) == len(paper.cells)


# ------------------------------------------------------------------------------------------
# Run identity
# ------------------------------------------------------------------------------------------


def test_resolved_default_params_give_the_same_run(plugins):
    bare = one_run_id(plugins, loss=["logitnorm"])
    explicit = one_run_id(plugins, loss=["logitnorm"], loss_params=[{"tau": 0.04}])
    assert bare == explicit
    plan = plan_of(plugins, {"e": {"matrix": {**MATRIX, "loss": ["logitnorm"]}}})
    assert plan.runs[0].loss_params == {"tau": 0.04}
    assert one_run_id(plugins, loss=["logitnorm"], loss_params=[{"tau": 0.1}]) != bare


def test_int_and_float_params_are_one_run_and_one_cell(plugins):
    assert one_run_id(plugins, loss=["logitnorm"], loss_params=[{"tau": 1}]) == \
        one_run_id(plugins, loss=["logitnorm"], loss_params=[{"tau": 1.0}])
    plan = plan_of(plugins, {"e": {"matrix": {**MATRIX, "detector": ["energy"],
                                              "detector_params": [{"temperature": 1}, {"temperature": 1.0}, {}]}}})
    assert len(plan.cells) == 1
    assert plan.cells[0].detector_params == {"temperature": 1.0}


def test_recipe_changes_the_run_but_bookkeeping_does_not(plugins):
    base = one_run_id(plugins, train={"epochs": 3})
    assert one_run_id(plugins, train={"epochs": 4}) != base
    assert one_run_id(plugins, train={"epochs": 3, "lr": 0.01}) != base
    assert one_run_id(plugins, train={"epochs": 3, "fast": {"bf16": True}}) != base
    assert one_run_id(plugins, train={"epochs": 3, "checkpoint_every": 7}) == base
    assert one_run_id(plugins, train={"epochs": 3, "monitor_samples": 17}) == base
    assert one_run_id(plugins, train={"epochs": 3, "monitor_ood": "uniform_noise"}) == base


def test_holdout_changes_the_run_and_unset_keeps_old_ids(plugins):
    """Issue 12 item 14: held-out images change what a run trains on, so they are in its identity;
    a recipe without one keeps the run id it had before the field existed (a pinned hash)."""
    base = one_run_id(plugins, train={"epochs": 3})
    assert one_run_id(plugins, train={"epochs": 3, "holdout": 0}) == base
    assert one_run_id(plugins, train={"epochs": 3, "holdout": 100}) != base
    assert base == "4c7be603394eb56d"  # the id before the field existed


def test_paper_suite_holds_out_only_for_godin(plugins):
    plan = make_plan(load_suite(REPO / "suites" / "paper.yaml", plugins=plugins), plugins)
    held = {(r.loss, r.train["holdout"]) for r in plan.runs}
    assert held == {("ce", 0), ("logitnorm", 0), ("logitpenalty", 0), ("godin", 1000)}


def test_other_identity_fields(plugins):
    base = one_run_id(plugins)
    assert one_run_id(plugins, seed=[1]) != base
    assert one_run_id(plugins, arch_params=[{"width": 64}]) != base
    assert one_run_id(plugins, arch_params=[{"width": 128}]) == base  # the default, resolved
    assert one_run_id(plugins, smoke=True) != base
    # The detector and the OOD set never change the training.
    assert one_run_id(plugins, detector=["energy"], ood_dataset=["uniform_noise"]) == base


def test_given_weights_ignore_the_recipe(plugins, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt.pt").write_bytes(b"")  # validation checks that a weights file exists
    a = one_run_id(plugins, train={"epochs": 3}, weights=["ckpt.pt"])
    b = one_run_id(plugins, train={"epochs": 9}, weights=["ckpt.pt"])
    assert a == b != one_run_id(plugins, train={"epochs": 3})


def test_eval_protocol_changes_cells_not_runs(plugins):
    a = plan_of(plugins, {"e": {"matrix": MATRIX}})
    b = plan_of(plugins, {"e": {"matrix": MATRIX, "evaluation": {"ood_samples": 500}}})
    c = plan_of(plugins, {"e": {"matrix": MATRIX, "evaluation": {"batch_size": 32}}})
    assert a.runs[0].run_id == b.runs[0].run_id == c.runs[0].run_id
    assert a.cells[0].cell_id != b.cells[0].cell_id
    assert a.cells[0].cell_id == c.cells[0].cell_id  # batch size does not change a score


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": {"x": 1, "y": 2}}) == stable_hash({"b": {"y": 2, "x": 1}, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash({})) == 16


# ------------------------------------------------------------------------------------------
# ood-bench plan
# ------------------------------------------------------------------------------------------


def test_cli_plan_json_quick(capsys):
    assert cli.main(["plan", str(QUICK), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert set(data) == {"training_runs", "evaluations"}
    runs, cells = data["training_runs"], data["evaluations"]
    assert len(runs) == 24
    assert len(cells) == 204
    assert len({r["run_id"] for r in runs}) == 24
    assert {c["run_id"] for c in cells} == {r["run_id"] for r in runs}
    assert {r["loss"] for r in runs} == {"ce", "logitnorm", "logitpenalty", "godin"}
    for r in runs:
        assert set(r) >= {"run_id", "id_dataset", "arch", "arch_params", "loss", "loss_params", "seed", "train",
                          "experiments"}
        assert r["train"]["epochs"] == 100
    assert err == ""


def test_cli_plan_set_reaches_every_run(capsys):
    assert cli.main(["plan", str(QUICK), "--format", "json", "--set", "train.epochs=1",
                     "--set", "experiments.far_ood.matrix.seed=[0]"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all(r["train"]["epochs"] == 1 for r in data["training_runs"])
    assert {r["seed"] for r in data["training_runs"] if r["id_dataset"] == "digits" and r["loss"] != "godin"} == {0}


def test_cli_plan_table(capsys):
    assert cli.main(["plan", str(QUICK)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "suite quick: 24 unique training runs, 204 evaluation cells"
    assert len(out.splitlines()) == 2 + 24
