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


# ------------------------------------------------------------------------------------------
# The leaderboard: no dataset params, no new bytes; with them, their own rows and columns
# ------------------------------------------------------------------------------------------


def _records(extra=None):
    """Hand-made records of a small grid (two losses, two detectors, three OOD sets in two groups, three
    seeds, one failed cell in 17), as the harness wrote them before dataset params existed."""
    out, i = [], 0
    for loss, lp in (("ce", {}), ("logitnorm", {"tau": 0.04})):
        for det in ("msp", "energy"):
            for ood, group in (("svhn", "far"), ("textures", "far"), ("cifar100_ood", "near")):
                for seed in (0, 1, 2):
                    i += 1
                    status = "failed" if i % 17 == 0 else "ok"
                    rec = {"cell_id": f"c{i}", "run_id": f"r{loss}{seed}", "status": status, "id_dataset": "cifar10",
                           "arch": "wrn40_2", "arch_params": {"dropout": 0.3}, "loss": loss, "loss_params": lp,
                           "detector": det, "detector_params": {"temperature": 1.0}, "ood_dataset": ood,
                           "ood_group": group, "seed": seed, "smoke": False}
                    if status == "ok":
                        v = (i * 37 % 100) / 100
                        rec["metrics"] = {"fpr95": v, "auroc": 1 - v / 2, "aupr_in": 0.9 - v / 5,
                                          "aupr_out": 0.8 - v / 7}
                        rec["run_metrics"] = {"id_acc": 0.9 + seed / 100, "ece": 0.01 * seed}
                    out.append(dict(rec, **(extra(rec) if extra else {})))
    return out


def test_a_leaderboard_without_dataset_params_keeps_its_bytes():
    from logitnorm_bench.leaderboard import build_rows, columns, to_csv

    text = to_csv(build_rows(_records()))
    # to_csv of these records on main (commit 9720741), before dataset params existed
    assert _sha(text) == "4b265b769bcc5910e594b54f10e33a730637b3f88935b54c936491e68ca05f38"
    assert "dataset_params" not in text.splitlines()[0] and text.splitlines()[0].split(",") == list(columns())


def test_dataset_params_get_their_rows_and_columns():
    import csv
    import io

    from logitnorm_bench.leaderboard import build_rows, columns, to_csv

    def folders(rec):  # textures read from two folders: two OOD sets; the ID set from one folder
        extra = {"id_dataset_params": {"root": "/pets"}}
        if rec["ood_dataset"] == "textures":
            extra["ood_dataset_params"] = {"root": f"/ood{rec['seed'] % 2}"}
        return extra

    rows = build_rows(_records(folders))
    plain_rows = build_rows(_records())
    assert all(r["id_dataset_params"] == {"root": "/pets"} for r in rows)
    textures = [r for r in rows if r["ood_dataset"] == "textures" and r["loss"] == "ce" and r["detector"] == "msp"]
    assert [(r["ood_dataset_params"], r["seeds"]) for r in textures] == [({"root": "/ood0"}, "0 2"),
                                                                        ({"root": "/ood1"}, "1")]
    assert len(rows) == len(plain_rows) + 4  # one more textures row for each of the 4 variants
    by_root = {r["ood_dataset_params"]["root"]: r for r in textures}
    fpr = {s: r["metrics"]["fpr95"] * 100 for r in _records(folders) if r["ood_dataset"] == "textures"
           and r["loss"] == "ce" and r["detector"] == "msp" and r["status"] == "ok" for s in [r["seed"]]}
    assert by_root["/ood0"]["fpr95"] == pytest.approx((fpr[0] + fpr[2]) / 2)  # each row its own records
    assert by_root["/ood1"]["fpr95"] == pytest.approx(fpr[1])
    cols = columns(rows)
    assert cols.index("id_dataset_params") == cols.index("arch_params") + 1
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert {r["id_dataset_params"] for r in table} == {'{"root":"/pets"}'}
    assert {r["ood_dataset_params"] for r in table if r["ood_dataset"] != "textures"} == {"{}"}


# ------------------------------------------------------------------------------------------
# Records, plan and data lookups
# ------------------------------------------------------------------------------------------


def test_records_carry_dataset_params_only_when_set():
    from logitnorm_bench.records import RECORD_SCHEMA, Record, RecordError

    base = dict(_records()[0], schema=RECORD_SCHEMA)
    assert "id_dataset_params" not in Record.from_json(base).to_json()
    rec = Record.from_json(dict(base, id_dataset_params={"root": "/x"}, ood_dataset_params={"root": "/y"}))
    assert rec.to_json()["id_dataset_params"] == {"root": "/x"} and rec.ood_dataset_params == {"root": "/y"}
    with pytest.raises(RecordError, match="ood_dataset_params"):
        Record.from_json(dict(base, ood_dataset_params=["root"]))


def test_params_are_kept_as_what_differs_from_the_defaults():
    from logitnorm_bench.errors import ConfigError
    from logitnorm_bench.params import resolve_dataset_params
    from logitnorm_bench.plugins import get_plugins

    noise = get_plugins().datasets.get("gaussian_noise")
    assert resolve_dataset_params(noise, {}) == {}
    assert resolve_dataset_params(noise, {"loc": 0.5, "n": 2000}) == {}
    assert resolve_dataset_params(noise, {"loc": 0.4, "n": 100}) == {"loc": 0.4, "n": 100}
    assert resolve_dataset_params(noise, {"scale": 1}) == {"scale": 1.0}  # an int where the default is a float
    with pytest.raises(ConfigError, match=r"s.yaml:k.n: got 1.5; expected an integer"):
        resolve_dataset_params(noise, {"n": 1.5}, file="s.yaml", key="k")
    with pytest.raises(ConfigError, match="expected true or false|expected an integer"):
        resolve_dataset_params(noise, {"n": True}, file="s.yaml", key="k")


def test_selection_validation_uses_its_own_ood_set_without_the_test_sets_params(tmp_path):
    doc = tiny_suite_doc(ood_dataset=["gaussian_noise"])
    doc["experiments"]["e"]["matrix"]["ood_dataset_params"] = [{"loc": 0.3}]
    doc["experiments"]["e"]["matrix"]["loss"] = ["logitnorm"]
    doc["experiments"]["e"]["select"] = {"param": "loss_params.tau", "values": [0.02, 0.5],
                                         "ood_dataset": "gaussian_noise"}
    _, plan = load_plan(doc)
    val = [c for c in plan.cells if c.split == "val"]
    assert val and all(c.ood_dataset_params == {} for c in val)
    tests = [t for g in plan.selections for ts in g.test_cells.values() for t in ts]
    assert tests and all(t.ood_dataset_params == {"loc": 0.3} for t in tests)
    # the groups are those of the same suite without the params: OOD params are not part of a group
    doc["experiments"]["e"]["matrix"].pop("ood_dataset_params")
    _, without = load_plan(doc)
    assert [g.group_id for g in plan.selections] == [g.group_id for g in without.selections]


def test_data_sources_build_one_source_per_name_and_params():
    from logitnorm_bench.data_views import DataSources
    from logitnorm_bench.plugins import get_plugins

    sources = DataSources(get_plugins(), smoke=False)
    digits = sources("digits")
    assert sources("digits") is digits
    a, b = sources("gaussian_noise"), sources("gaussian_noise", {"loc": 0.2})
    assert a is not b and sources("gaussian_noise", {"loc": 0.2}) is b and b.loc == 0.2
    assert tuple(b.input_shape) == tuple(digits.input_shape)  # the ID shape, as without params
    c = sources("gaussian_noise", {"shape": [3, 4, 4]})  # a shape given in the suite wins
    assert tuple(c.input_shape) == (3, 4, 4)


def test_needed_data_tells_two_parameterisations_apart(tmp_path):
    from logitnorm_bench.driver import needed_data

    doc = tiny_suite_doc(ood_dataset=["gaussian_noise"], loss=["ce"], detector=["msp"])
    doc["experiments"]["e"]["include"] = [{"ood_dataset": "gaussian_noise", "ood_dataset_params": {"loc": 0.3}},
                                          {"ood_dataset": "gaussian_noise", "detector": "energy",
                                           "ood_dataset_params": {"loc": 0.7}, "id_dataset": "digits",
                                           "arch": "digits_mlp", "loss": "ce", "seed": 0,
                                           "arch_params": {"width": 32}}]
    _, plan = load_plan(doc)
    needed = needed_data(plan)
    assert set(needed) == {("digits", "{}"), ("gaussian_noise", '{"loc":0.3}'), ("gaussian_noise", '{"loc":0.7}')}


def test_a_run_label_shows_its_id_dataset_params():
    from logitnorm_bench.plan import TrainingRun

    run = TrainingRun("r", "image_folder", "net", {}, "logitnorm", {"tau": 0.04}, 0, {},
                      id_dataset_params={"root": "/pets"})
    assert run.label() == "image_folder(root=/pets)/net/logitnorm(tau=0.04)/seed0"
    assert TrainingRun("r", "digits", "net", {}, "ce", {}, 1, {}).label() == "digits/net/ce/seed1"


def test_a_run_with_given_weights_needs_the_training_images_only_for_a_fitted_detector(tmp_path):
    """No training, but mahalanobis (needs_fit) fits on the ID training images: the data check must see them."""
    from logitnorm_bench.driver import needed_data

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"checked for existence at plan time only")
    for detectors, splits in ((["msp", "energy"], {"test"}), (["msp", "mahalanobis"], {"train", "test"})):
        doc = tiny_suite_doc(ood_dataset=["gaussian_noise"], loss=["ce"], detector=detectors,
                             weights=[str(weights)])
        _, plan = load_plan(doc)
        assert needed_data(plan)[("digits", "{}")] == splits, detectors


def test_the_overview_shows_two_folders_of_one_dataset_as_two_ood_sets():
    """Two OOD folders read through one dataset are two columns of the report's leaderboard, each its own number."""
    from logitnorm_bench.leaderboard import build_rows
    from logitnorm_bench.overview import _detection

    def folders(rec):
        return {"ood_dataset_params": {"root": f"/ood{rec['seed'] % 2}"}} if rec["ood_dataset"] == "textures" else {}

    rows = [r for r in build_rows(_records(folders)) if not r["smoke"]]
    section = _detection("cifar10", rows)
    fpr_cols = [c for c in section.columns if c.startswith("FPR95") and "textures" in c]
    assert len(fpr_cols) == 2 and any("/ood0" in c for c in fpr_cols) and any("/ood1" in c for c in fpr_cols)
    ce_msp = next(cells for label, cells in section.rows if label.startswith("ce + msp"))
    shown = {c.key[4]: c.ours.mean for c in ce_msp if c.key[5] == "fpr95" and "textures" in c.key[4]}
    expected = {r["ood_dataset_params"]["root"]: r["fpr95"] for r in rows
                if r["ood_dataset"] == "textures" and r["loss"] == "ce" and r["detector"] == "msp"}
    assert shown == {"textures(root=/ood0)": pytest.approx(expected["/ood0"]),
                     "textures(root=/ood1)": pytest.approx(expected["/ood1"])}
