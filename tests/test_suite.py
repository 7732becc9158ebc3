"""Suite loading, overrides and GitHub Actions matrix expansion (no plugins needed)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml

from logitnorm_bench.errors import ConfigError
from logitnorm_bench.suite import (MAX_EXTENDS_DEPTH, Combo, EvalProtocol, TrainRecipe, expand_grid, find_suite,
                                   load_suite, parse_override, parse_suite, read_yaml)

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "suites" / "quick.yaml"

BASE_MATRIX = {"id_dataset": ["digits"], "arch": ["digits_mlp"], "loss": ["ce", "logitnorm"],
               "detector": ["msp"], "ood_dataset": ["gaussian_noise"], "seed": [0, 1]}


def make_doc(**experiments) -> dict:
    return {"suite": "t", "defaults": {"train": {"epochs": 30, "lr": 0.05, "batch_size": 64}},
            "experiments": experiments or {"e1": {"matrix": copy.deepcopy(BASE_MATRIX)}}}


def as_tuples(combos: list[Combo]) -> list[tuple]:
    return [(c.loss, c.detector, c.ood_dataset, c.seed) for c in combos]


# ------------------------------------------------------------------------------------------
# expand_grid: GitHub Actions semantics, on the documented examples
# ------------------------------------------------------------------------------------------


def test_product_order_last_key_fastest():
    # docs: "the matrix above will create the jobs in the following order"
    got = expand_grid({"version": [10, 12, 14], "os": ["ubuntu-latest", "windows-latest"]})
    assert got == [{"version": v, "os": o} for v in (10, 12, 14) for o in ("ubuntu-latest", "windows-latest")]


def test_include_documented_fruit_animal_example():
    matrix = {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}
    include = [{"color": "green"},
               {"color": "pink", "animal": "cat"},
               {"fruit": "apple", "shape": "circle"},
               {"fruit": "banana"},
               {"fruit": "banana", "animal": "cat"}]
    assert expand_grid(matrix, include) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_include_documented_expand_example():
    # docs: an include that matches one combination adds its extra key there only.
    got = expand_grid({"os": ["windows-latest", "ubuntu-latest"], "node": [14, 16]},
                      [{"os": "windows-latest", "node": 16, "npm": 6}])
    assert got == [{"os": "windows-latest", "node": 14}, {"os": "windows-latest", "node": 16, "npm": 6},
                   {"os": "ubuntu-latest", "node": 14}, {"os": "ubuntu-latest", "node": 16}]


def test_include_that_fits_nowhere_adds_a_combination():
    got = expand_grid({"os": ["windows-latest", "ubuntu-latest"], "node": [14, 16]},
                      [{"os": "windows-latest", "node": 17}])
    assert len(got) == 5
    assert got[-1] == {"os": "windows-latest", "node": 17}


def test_include_never_overwrites_original_values_but_may_overwrite_added_ones():
    got = expand_grid({"a": [1, 2]}, [{"x": "first"}, {"x": "second", "a": 1}, {"a": 3, "x": "third"}])
    # {x: second, a: 1} overwrites the x added by the first include (allowed) on a=1 only;
    # {a: 3, ...} would overwrite an original value everywhere: a new combination.
    assert got == [{"a": 1, "x": "second"}, {"a": 2, "x": "first"}, {"a": 3, "x": "third"}]


def test_added_combinations_are_not_extended_by_later_includes():
    got = expand_grid({"a": [1]}, [{"a": 2}, {"a": 2, "b": 5}])
    assert got == [{"a": 1}, {"a": 2}, {"a": 2, "b": 5}]


def test_include_does_not_share_objects_between_combinations():
    got = expand_grid({"a": [1, 2]}, [{"p": {"t": 1}}])
    got[0]["p"]["t"] = 99
    assert got[1]["p"] == {"t": 1}


def test_exclude_documented_partial_match_example():
    matrix = {"os": ["macos-latest", "windows-latest"], "version": [12, 14, 16],
              "environment": ["staging", "production"]}
    exclude = [{"os": "macos-latest", "version": 12, "environment": "production"},
               {"os": "windows-latest", "version": 16}]
    got = expand_grid(matrix, exclude=exclude)
    assert len(got) == 12 - 1 - 2
    assert {"os": "macos-latest", "version": 12, "environment": "production"} not in got
    assert not [c for c in got if c["os"] == "windows-latest" and c["version"] == 16]
    assert {"os": "macos-latest", "version": 12, "environment": "staging"} in got


def test_include_can_add_back_an_excluded_combination():
    # "All include combinations are processed after exclude."
    got = expand_grid({"a": [1, 2], "b": [1, 2]}, include=[{"a": 1, "b": 1}], exclude=[{"a": 1}])
    assert got == [{"a": 2, "b": 1}, {"a": 2, "b": 2}, {"a": 1, "b": 1}]


# ------------------------------------------------------------------------------------------
# The same through a suite (real matrix keys)
# ------------------------------------------------------------------------------------------


def test_suite_include_adds_params_to_matching_combinations_only():
    exp = {"matrix": {**BASE_MATRIX, "detector": ["msp", "energy"]},
           "include": [{"loss": "logitnorm", "detector": "energy", "detector_params": {"temperature": 0.1}}]}
    suite = parse_suite(make_doc(e1=exp), "s.yaml")
    combos = suite.experiments[0].combos
    assert len(combos) == 2 * 2 * 2
    for c in combos:
        want = {"temperature": 0.1} if (c.loss, c.detector) == ("logitnorm", "energy") else {}
        assert c.detector_params == want


def test_suite_include_full_combination_and_exclude():
    exp = {"matrix": BASE_MATRIX,
           "exclude": [{"loss": "ce", "seed": 1}],
           "include": [{"id_dataset": "digits", "arch": "digits_mlp", "loss": "godin", "detector": "godin",
                        "ood_dataset": "uniform_noise", "seed": 3}]}
    combos = parse_suite(make_doc(e1=exp), "s.yaml").experiments[0].combos
    assert as_tuples(combos) == [("ce", "msp", "gaussian_noise", 0), ("logitnorm", "msp", "gaussian_noise", 0),
                                 ("logitnorm", "msp", "gaussian_noise", 1), ("godin", "godin", "uniform_noise", 3)]


def test_quick_suite_expands():
    suite = load_suite(QUICK)
    sizes = {e.name: len(e.combos) for e in suite.experiments}
    assert sizes == {"far_ood": 4 * 4 * 3 * 3, "near_ood": 4 * 4 * 3, "godin_score": 3 * 3 + 3}
    energy_ln = [c for c in suite.experiments[0].combos if (c.loss, c.detector) == ("logitnorm", "energy")]
    assert len(energy_ln) == 9 and all(c.detector_params == {"temperature": 0.1} for c in energy_ln)


# ------------------------------------------------------------------------------------------
# Defaults, per-experiment train, --set
# ------------------------------------------------------------------------------------------


def test_defaults_merged_with_experiment_train():
    doc = make_doc(a={"matrix": BASE_MATRIX, "train": {"epochs": 5, "fast": {"bf16": True}}},
                   b={"matrix": BASE_MATRIX})
    doc["defaults"]["train"]["fast"] = {"channels_last": True}
    doc["defaults"]["evaluation"] = {"ood_samples": 100}
    a, b = parse_suite(doc, "s.yaml").experiments
    assert (a.train.epochs, a.train.lr, a.train.batch_size) == (5, 0.05, 64)
    assert (a.train.fast.bf16, a.train.fast.channels_last) == (True, True)  # nested mappings merge
    assert (b.train.epochs, b.train.lr, b.train.fast.bf16, b.train.fast.channels_last) == (30, 0.05, False, True)
    assert b.train.momentum == TrainRecipe().momentum  # unset: the dataclass default
    assert a.evaluation.ood_samples == b.evaluation.ood_samples == 100
    assert a.evaluation.batch_size == EvalProtocol().batch_size


def test_set_train_reaches_every_experiment():
    doc = make_doc(a={"matrix": BASE_MATRIX, "train": {"epochs": 5}}, b={"matrix": BASE_MATRIX})
    suite = parse_suite(doc, "s.yaml", ["train.epochs=1", "evaluation.ood_samples=10", "train.lr=1e-3"])
    for exp in suite.experiments:
        assert exp.train.epochs == 1
        assert exp.train.lr == pytest.approx(1e-3)
        assert exp.evaluation.ood_samples == 10
    # The document itself is not modified.
    assert doc["experiments"]["a"]["train"] == {"epochs": 5}


def test_set_whole_section_as_mapping():
    suite = parse_suite(make_doc(), "s.yaml", ["train={epochs: 2, hflip: false}"])
    assert (suite.experiments[0].train.epochs, suite.experiments[0].train.hflip) == (2, False)
    assert suite.experiments[0].train.lr == 0.05


def test_set_path_override_of_the_matrix():
    suite = parse_suite(make_doc(), "s.yaml", ["experiments.e1.matrix.seed=[0]"])
    assert [c.seed for c in suite.experiments[0].combos] == [0, 0]
    suite = parse_suite(make_doc(), "s.yaml", ["experiments.e1.matrix.loss=[logitnorm]",
                                              "experiments.e1.matrix.seed=[4, 5, 6]"])
    assert as_tuples(suite.experiments[0].combos) == [("logitnorm", "msp", "gaussian_noise", s) for s in (4, 5, 6)]


def test_set_on_quick_suite():
    suite = load_suite(QUICK, ["train.epochs=1", "experiments.far_ood.matrix.seed=[0]"])
    assert all(e.train.epochs == 1 for e in suite.experiments)
    assert {c.seed for c in suite.experiments[0].combos} == {0}
    assert {c.seed for c in suite.experiments[1].combos} == {0, 1, 2}


@pytest.mark.parametrize("item,expected", [
    ("train.epochs=1", ("train.epochs", 1)),
    ("train.lr=5e-4", ("train.lr", 5e-4)),  # YAML 1.2 float, not the string '5e-4'
    (" train.hflip = false", ("train.hflip", False)),
    ("train.monitor_ood=", ("train.monitor_ood", None)),
    ("experiments.e1.matrix.seed=[0, 1]", ("experiments.e1.matrix.seed", [0, 1])),
    ("a.b=x=y", ("a.b", "x=y")),
])
def test_parse_override(item, expected):
    assert parse_override(item) == expected


def test_a_defaults_error_names_defaults():
    doc = make_doc()
    doc["defaults"]["train"]["epochs"] = 0
    with pytest.raises(ConfigError) as info:
        parse_suite(doc, "s.yaml")
    assert info.value.key == "defaults.train.epochs"
    # ... unless --set fixes it.
    assert parse_suite(doc, "s.yaml", ["train.epochs=2"]).experiments[0].train.epochs == 2


def test_an_experiment_error_names_the_experiment():
    doc = make_doc(a={"matrix": BASE_MATRIX}, b={"matrix": BASE_MATRIX, "train": {"epochs": "ten"}})
    with pytest.raises(ConfigError) as info:
        parse_suite(doc, "s.yaml")
    assert info.value.key == "experiments.b.train.epochs"
    assert str(info.value).startswith("s.yaml:experiments.b.train.epochs: got 'ten'")


# ------------------------------------------------------------------------------------------
# The YAML reader
# ------------------------------------------------------------------------------------------


def test_duplicate_keys_rejected_anywhere(tmp_path):
    text = textwrap.dedent("""\
        suite: t
        experiments:
          e1:
            matrix: {id_dataset: [digits], arch: [digits_mlp], loss: [ce], detector: [msp],
                     ood_dataset: [gaussian_noise], seed: [0],
                     seed: [1]}
        """)
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    msg = str(info.value)
    for piece in (str(path), "duplicate key 'seed'", "at line 6, column 14", "first given at line 5"):
        assert piece in msg
    # Plain PyYAML would have kept the last one silently:
    assert yaml.safe_load(text)["experiments"]["e1"]["matrix"]["seed"] == [1]


def test_merge_keys_may_be_overridden():
    doc = read_yaml("base: &b {epochs: 3, lr: 0.1}\ntrain: {<<: *b, epochs: 5}\n")
    assert doc["train"] == {"epochs": 5, "lr": 0.1}


def test_yaml_12_floats():
    doc = read_yaml("a: 5e-4\nb: 1.0e-3\nc: -2E+2\nd: 7\ne: e5\nf: 1.5\ng: 0x10\n")
    assert doc == {"a": 5e-4, "b": 1e-3, "c": -200.0, "d": 7, "e": "e5", "f": 1.5, "g": 16}
    assert isinstance(doc["a"], float) and isinstance(doc["d"], int)


def test_quick_suite_has_no_duplicate_keys_and_loads_the_same_as_pyyaml():
    assert read_yaml(QUICK.read_text()) == yaml.safe_load(QUICK.read_text())


def test_aliases_within_the_budget_are_fine():
    # Anchors that share a matrix list: legitimate, and far below the expansion budget.
    doc = read_yaml("seeds: &s [0, 1, 2]\na: {seed: *s}\nb: {seed: *s}\n")
    assert doc["a"]["seed"] == doc["b"]["seed"] == [0, 1, 2]


# ------------------------------------------------------------------------------------------
# Suites by name, and extends
# ------------------------------------------------------------------------------------------

SUITES = REPO / "suites"


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_suite_by_name_or_by_path():
    assert find_suite("quick").resolve() == QUICK.resolve()
    assert find_suite(QUICK) == QUICK
    assert load_suite("quick").experiments[0].combos == load_suite(QUICK).experiments[0].combos


def test_extends_merges_defaults_and_experiments(tmp_path):
    parent = make_doc(keep={"matrix": BASE_MATRIX},
                      change={"matrix": BASE_MATRIX, "train": {"epochs": 7, "lr": 0.2},
                              "include": [{"loss": "logitnorm", "loss_params": {"tau": 0.04}}]},
                      drop={"matrix": BASE_MATRIX})
    parent["defaults"]["evaluation"] = {"ood_samples": 100, "batch_size": 32}
    write(tmp_path / "parent.yaml", parent)
    child = {"suite": "child", "extends": "parent.yaml",
             "defaults": {"train": {"lr": 0.01}, "evaluation": {"ood_samples": 50}},
             "experiments": {
                 "change": {"matrix": {"seed": [5]}, "train": {"epochs": 9},
                            "include": [{"loss": "logitnorm", "loss_params": {"tau": 0.01}}]},
                 "drop": None,
                 "new": {"matrix": {**BASE_MATRIX, "loss": ["godin"]}}}}
    suite = load_suite(write(tmp_path / "child.yaml", child))
    assert suite.name == "child"
    exps = {e.name: e for e in suite.experiments}
    assert list(exps) == ["keep", "change", "new"]  # the parent's first, in order; then the child's
    keep, change, new = exps["keep"], exps["change"], exps["new"]
    # defaults: deep-merged, the child's values win
    assert (keep.train.epochs, keep.train.lr, keep.train.batch_size) == (30, 0.01, 64)
    assert (keep.evaluation.ood_samples, keep.evaluation.batch_size) == (50, 32)
    # a same-named experiment: matrix keys replaced, train merged, include appended (later wins)
    assert {c.seed for c in change.combos} == {5} and {c.loss for c in change.combos} == {"ce", "logitnorm"}
    assert (change.train.epochs, change.train.lr) == (9, 0.2)
    assert [c.loss_params for c in change.combos if c.loss == "logitnorm"] == [{"tau": 0.01}]
    assert {c.loss for c in new.combos} == {"godin"}


def test_inherit_defaults_only(tmp_path):
    write(tmp_path / "parent.yaml", make_doc(a={"matrix": BASE_MATRIX}))
    child = {"suite": "child", "extends": "parent.yaml", "inherit": ["defaults"],
             "experiments": {"b": {"matrix": BASE_MATRIX}}}
    suite = load_suite(write(tmp_path / "child.yaml", child))
    assert [e.name for e in suite.experiments] == ["b"] and suite.experiments[0].train.epochs == 30


def test_extends_a_registered_suite_from_a_dict():
    # The Python API: a document, no file; `extends: quick` is looked up in the registry.
    suite = parse_suite({"suite": "q1", "extends": "quick", "experiments": {"near_ood": None, "godin_score": None}},
                        "q1.yaml", ["train.epochs=1"])
    assert [e.name for e in suite.experiments] == ["far_ood"]
    assert suite.experiments[0].train.epochs == 1 and suite.experiments[0].train.weight_decay == 5e-3


def test_set_reaches_inherited_experiments():
    suite = load_suite("paper_official_tau", ["experiments.tables_3_8.matrix.seed=[0]"])
    assert {c.seed for e in suite.experiments if e.name == "tables_3_8" for c in e.combos} == {0}


def test_an_error_inside_a_parent_names_the_parent(tmp_path):
    bad = make_doc()
    bad["defaults"]["train"]["epochs"] = 0
    write(tmp_path / "base.yaml", bad)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "mid.yaml", {"suite": "mid", "extends": "../base.yaml"})
    child = write(tmp_path / "child.yaml", {"suite": "child", "extends": "sub/mid.yaml"})
    with pytest.raises(ConfigError) as info:
        load_suite(child)
    assert (Path(info.value.file).resolve(), info.value.key) == ((tmp_path / "base.yaml").resolve(),
                                                                 "defaults.train.epochs")
    (tmp_path / "base.yaml").write_text("suite: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML") as info:
        load_suite(child)
    assert Path(info.value.file).resolve() == (tmp_path / "base.yaml").resolve()


def test_an_extends_loop_names_every_file(tmp_path):
    for me, other in (("a", "b"), ("b", "c"), ("c", "a")):
        write(tmp_path / f"{me}.yaml", {"suite": me, "extends": f"{other}.yaml"})
    with pytest.raises(ConfigError, match=r"loops \(a.yaml -> b.yaml -> c.yaml -> a.yaml\)") as info:
        load_suite(tmp_path / "a.yaml")
    assert info.value.key == "extends"


def test_extends_depth_is_capped(tmp_path):
    write(tmp_path / "s0.yaml", make_doc())
    for i in range(1, MAX_EXTENDS_DEPTH + 2):
        write(tmp_path / f"s{i}.yaml", {"suite": f"s{i}", "extends": f"s{i - 1}.yaml"})
    assert load_suite(tmp_path / f"s{MAX_EXTENDS_DEPTH}.yaml").name == f"s{MAX_EXTENDS_DEPTH}"
    with pytest.raises(ConfigError, match=f"more than {MAX_EXTENDS_DEPTH} suites deep"):
        load_suite(tmp_path / f"s{MAX_EXTENDS_DEPTH + 1}.yaml")


def test_tau_ablation_inherits_the_paper_recipe_instead_of_copying_it():
    raw = read_yaml((SUITES / "tau_ablation.yaml").read_text())
    assert raw["extends"] == "paper.yaml" and raw["inherit"] == ["defaults"] and "defaults" not in raw
    paper, ablation = load_suite("paper"), load_suite("tau_ablation")
    assert [e.name for e in ablation.experiments] == ["figure_5"]
    assert ablation.experiments[0].train == paper.experiments[0].train
    assert ablation.experiments[0].evaluation == paper.experiments[0].evaluation


def test_every_bundled_suite_is_registered_and_loads():
    from logitnorm_bench.plugins import get_plugins

    plugins = get_plugins()
    files = sorted(p.stem for p in SUITES.glob("*.yaml"))
    assert [n for n in plugins.suites.names() if plugins.suites.get(n).plugin == "suites"] == files
    assert {"openood_cifar10", "openood_cifar100"} <= set(plugins.suites.names())  # the OpenOOD plugin's
    assert {"paper", "paper_official_tau", "quick", "tau_ablation"} <= set(files)
    for name in files:
        entry = plugins.suites.get(name)
        assert entry.description and entry.plugin == "suites"
        assert load_suite(name, [], plugins).name == name
