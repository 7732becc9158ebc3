"""Dataset parameters as suite keys (``id_dataset_params``, ``ood_dataset_params``): checked against the
dataset factory at plan time, passed to it when the source is built, hashed into the identity only when given."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import tiny_suite_doc
from logitnorm_bench.plan import load_plan

# Computed on main before dataset parameters existed (commit 9720741): any drift in a run id, cell id
# or selection group id of a suite that sets no dataset parameter fails here.
PINNED = {
    "quick": (24, 204, "e93a4c818d9c6cd3ae431045ce40b06895bc621f17ef2a854fa76e107db1da89",
              "f075aef7a98261a07999fb42246e7e8ac6390b29d7c640c8fc2ddc88f366bbbb"),
    "paper": (50, 660, "f451c163c782d812d0cfa4ced2ca8e6efe7e53a2ff0fcb1be8e8f5e1619d119e",
              "9b3a1935205b78704857ee3b3cf1215adcb6f30142daa207ede6e2f01d77b915"),
}
SELECTION_PIN = ("8cfcf967d3c115719f679f76fddd66a2919e34cd2078a4c47773339add5f1724",
                 "2274338968c047e09ecf70a385e2b70246aaa3f75e26ba05f6877dc07a33ed59")


def _ids(plan) -> str:
    runs = sorted(r.run_id for r in plan.runs)
    cells = sorted(c.cell_id for c in plan.cells)
    groups = sorted(g.group_id for g in plan.selections)
    return json.dumps([runs, cells, groups])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_bundled_suites_keep_their_ids_and_plan_json(name):
    n_runs, n_cells, ids_sha, plan_sha = PINNED[name]
    _, plan = load_plan(name)
    assert (len(plan.runs), len(plan.cells)) == (n_runs, n_cells)
    assert _sha(_ids(plan)) == ids_sha
    # The plan's JSON (``ood-bench plan --json``) gains no empty dataset-params keys either.
    assert _sha(json.dumps(plan.to_json(), sort_keys=True)) == plan_sha


def test_a_selection_keeps_its_group_and_test_cell_ids():
    doc = tiny_suite_doc(ood_dataset=["uniform_noise", "photo_patches"])
    doc["experiments"]["e"]["select"] = {"param": "loss_params.tau", "values": [0.02, 0.5],
                                         "ood_dataset": "gaussian_noise"}
    doc["experiments"]["e"]["matrix"]["loss"] = ["logitnorm"]
    _, plan = load_plan(doc)
    tests = sorted(t.cell_id for g in plan.selections for ts in g.test_cells.values() for t in ts)
    ids = json.loads(_ids(plan)) + [tests]
    assert (len(plan.runs), len(plan.cells), len(plan.selections), len(tests)) == (2, 4, 2, 8)
    assert _sha(json.dumps(ids)) == SELECTION_PIN[0]
    assert _sha(json.dumps(plan.to_json(), sort_keys=True)) == SELECTION_PIN[1]
