"""The plugin system: the five hooks, entry points, third-party and broken plugins, names, params.

Installed-distribution tests pip-install tiny distributions (the example plugin, a broken one) into
temporary ``--target`` folders, offline, and run ``ood-bench`` in a subprocess with that folder on
``PYTHONPATH`` so that ``importlib.metadata`` finds their entry points.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from logitnorm_bench import hookimpl, hookspecs
from logitnorm_bench.cli import main
from logitnorm_bench.components import Classifier, DataContext, DatasetSource, Detector, Loss, ModelOutputs
from logitnorm_bench.errors import ConfigError, DuplicateNameError, PluginError, UnknownNameError
from logitnorm_bench.params import resolve_params
from logitnorm_bench.plugins import KINDS, PluginLoadWarning, Plugins, get_plugins
from logitnorm_bench.reporting import ReportSection, Results, Section, Table
from ood_bench_paper import plugin as builtin_plugin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ood-bench-example-plugin"
EXAMPLE_MODULE = "ood_bench_example_plugin"
EXAMPLE_DIST = "ood-bench-example-plugin 0.1.0"
DOCS = ROOT / "docs" / "plugins.md"
BUILTIN_DIST = f"ood-bench {version('ood-bench')}"
BUILTIN_PLUGINS = {"paper_datasets", "paper_architectures", "paper_losses", "paper_detectors", "paper_report",
                   "core_datasets", "executors", "suites", "trackers", "pytorch_ood_detectors", "pytorch_ood_losses",
                   "pytorch_ood_datasets", "openood_datasets", "openood_architectures", "openood_suites",
                   "openood_report"}
PLUGIN_ENV = ("OOD_BENCH_PLUGINS", "OOD_BENCH_STRICT_PLUGINS")


# ------------------------------------------------------------------------------------------
# One in-process plugin per hook, each registering one component that meets its contract
# ------------------------------------------------------------------------------------------


class TinyData(DatasetSource):
    num_classes = 2
    input_shape = (1, 2, 2)
    mean, std = (0.5,), (0.25,)
    splits = ("train", "test")

    def __init__(self, size: int = 4):
        self.size = size

    def build(self, split, ctx):
        g = torch.Generator().manual_seed(ctx.seed)
        return TensorDataset(torch.rand(self.size, *self.input_shape, generator=g),
                             torch.arange(self.size) % self.num_classes)


class TinyNet(nn.Module):
    def __init__(self, num_classes, input_shape, width: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width))
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class TinyLoss(Loss):
    def forward(self, logits, targets):
        return nn.functional.cross_entropy(logits, targets)


class TinyDetector(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1)


class TinyExecutor:
    def run(self, payloads):
        for payload in payloads:
            yield {"run_id": payload["run"]["run_id"]}


class DatasetsPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("tiny_data", TinyData, description="tiny dataset")


class ArchitecturesPlugin:
    @hookimpl
    def register_architectures(self, register):
        register("tiny_net", TinyNet, description="tiny architecture")


class LossesPlugin:
    @hookimpl
    def register_losses(self, register):
        register("tiny_loss", TinyLoss, description="tiny loss")


class DetectorsPlugin:
    @hookimpl
    def register_detectors(self, register):
        register("tiny_detector", TinyDetector, description="tiny detector")


class ExecutorsPlugin:
    @hookimpl
    def register_executors(self, register):
        register("tiny_executor", TinyExecutor, description="tiny executor")


class SuitesPlugin:
    @hookimpl
    def register_suites(self, register):
        register("tiny_suite", lambda: Path(__file__), description="tiny suite")


class TinySection(ReportSection):
    title = "tiny"

    def tables(self, results):
        key = dict(id_dataset="tiny_data", arch="tiny_net", loss="tiny_loss", detector="tiny_detector",
                   ood_dataset="tiny_ood")
        if not results.find(**key):
            return []
        return [Table("tiny", "tiny table", [Section("tiny", ["FPR95"],
                                                     [("row", [results.cell("FPR95", metric="fpr95", **key)])])])]


class ReportsPlugin:
    @hookimpl
    def register_reports(self, register):
        register("tiny_report", TinySection, description="tiny report section")


class TinyTracker:
    def __init__(self, prefix: str = "tiny"):
        self.prefix, self.events = prefix, []

    def run_started(self, run):
        self.events.append(("started", run.run_id))

    def epoch_ended(self, run, epoch, metrics):
        self.events.append(("epoch", epoch, metrics["loss"]))


class TrackersPlugin:
    @hookimpl
    def register_trackers(self, register):
        register("tiny_tracker", TinyTracker, description="tiny tracker")


def _check_suite(entry):
    assert entry.factory() == Path(__file__)


def _check_report(entry):
    section = entry.factory()
    assert isinstance(section, ReportSection)
    empty = Results("unused", [])
    assert section.tables(empty) == [] and section.figures(empty, Path("unused")) == []  # nothing to show
    rec = {"cell_id": "c", "run_id": "r", "status": "ok", "id_dataset": "tiny_data", "arch": "tiny_net",
           "loss": "tiny_loss", "detector": "tiny_detector", "ood_dataset": "tiny_ood", "seed": 0,
           "metrics": {"fpr95": 0.25}}
    (table,) = section.tables(Results("unused", [rec]))
    assert [(c.column, c.ours.mean, c.ours.n_seeds) for _, _, c in table.cells()] == [("FPR95", 25.0, 1)]


def _check_tracker(entry):
    from logitnorm_bench.trackers import TrackedRun, Trackers

    plugins = Plugins(load_entry_points=False)
    plugins.add(TrackersPlugin(), name="tiny")
    run = TrackedRun("r1", "digits/mlp/ce/seed0", "s", {"train": {"epochs": 2}}, Path("."), "train")
    trackers = Trackers([(entry.name, {"prefix": "x"})], plugins, run)
    trackers.run_started()
    trackers.epoch_ended({"epoch": 1, "loss": 0.5, "note": "not a number"})
    trackers.run_finished("ok")  # a tracker without run_finished: nothing to call
    assert trackers.active[0][1].events == [("started", "r1"), ("epoch", 1, 0.5)]


def _check_dataset(entry):
    source = entry.factory(size=4)
    x, y = source.build("train", DataContext(root=Path("unused"), download=False))[3]
    assert x.shape == source.input_shape and 0 <= x.min() and x.max() <= 1 and y.item() == 1


def _check_architecture(entry):
    model = entry.factory(2, (1, 2, 2))
    x = torch.rand(5, 1, 2, 2)
    assert isinstance(model, Classifier)
    assert torch.equal(model(x), model.head(model.features(x))) and model(x).shape == (5, 2)


def _check_loss(entry):
    loss = entry.factory()
    assert loss(torch.randn(4, 2), torch.tensor([0, 1, 1, 0])).ndim == 0


def _check_detector(entry):
    scores = entry.factory().score_outputs(ModelOutputs(logits=torch.tensor([[3.0, 0.0], [0.1, 0.2]])), None)
    assert scores.tolist() == pytest.approx([3.0, 0.2])


def _check_executor(entry):
    payloads = [{"run": {"run_id": rid}} for rid in ("a", "b")]
    assert list(entry.factory().run(payloads)) == [{"run_id": "a"}, {"run_id": "b"}]


# hook name -> (plugin class, kind, component name, contract check).  Every hookspec must be here.
HOOK_CASES = {
    "register_datasets": (DatasetsPlugin, "datasets", "tiny_data", _check_dataset),
    "register_architectures": (ArchitecturesPlugin, "architectures", "tiny_net", _check_architecture),
    "register_losses": (LossesPlugin, "losses", "tiny_loss", _check_loss),
    "register_detectors": (DetectorsPlugin, "detectors", "tiny_detector", _check_detector),
    "register_executors": (ExecutorsPlugin, "executors", "tiny_executor", _check_executor),
    "register_suites": (SuitesPlugin, "suites", "tiny_suite", _check_suite),
    "register_reports": (ReportsPlugin, "reports", "tiny_report", _check_report),
    "register_trackers": (TrackersPlugin, "trackers", "tiny_tracker", _check_tracker),
}


def _hookspecs() -> dict:
    marker = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy's HookspecMarker sets
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, marker)}


@pytest.mark.parametrize("hook", sorted(HOOK_CASES))
def test_each_hook_registers_its_kind(hook):
    plugin_cls, kind, name, check = HOOK_CASES[hook]
    plugins = Plugins(load_entry_points=False)
    plugins.add(plugin_cls(), name="tiny")
    entry = plugins.registry(kind).get(name)
    assert (entry.plugin, entry.distribution) == ("tiny", "(in-process)")
    assert entry.description.startswith("tiny ")
    assert plugins.registry(kind).names() == [name]
    for other in set(KINDS) - {kind}:  # the hook of one kind fills only that registry
        assert plugins.registry(other).names() == []
    check(entry)
    assert plugins.versions() == {"tiny": "(in-process)"}


def test_every_hookspec_has_a_docstring_a_test_and_docs():
    specs = _hookspecs()
    assert set(specs) == set(HOOK_CASES), "a hook without a test in HOOK_CASES (or a stale case)"
    assert set(specs) == {f"register_{kind}" for kind in KINDS}
    docs = DOCS.read_text()
    for name, spec in specs.items():
        doc = inspect.getdoc(spec) or ""
        assert len(doc.splitlines()) >= 3, f"hookspec {name} needs a full docstring"
        assert list(inspect.signature(spec).parameters) == ["register"], name
        assert f"{name}(register)" in docs, f"hook {name} is not documented in {DOCS.name}"


def test_docs_show_the_example_in_full():
    docs = DOCS.read_text()
    for rel in ("pyproject.toml", f"{EXAMPLE_MODULE}.py", "tests/test_example_plugin.py"):
        text = (EXAMPLE / rel).read_text().strip()
        assert text in docs, f"docs/plugins.md does not show examples/ood-bench-example-plugin/{rel} as it is"
    for needle in ("OOD_BENCH_PLUGINS", "OOD_BENCH_STRICT_PLUGINS=1", "[project.entry-points.ood_bench]",
                   "detector: [msp, maxlogit]", "ood-bench list detectors", "Plugins(load_entry_points=False)",
                   "DuplicateNameError", "did you mean"):
        assert needle in docs, needle


# ------------------------------------------------------------------------------------------
# Built-ins through entry points; OOD_BENCH_PLUGINS
# ------------------------------------------------------------------------------------------

BUILTINS = {
    "datasets": {"cifar10", "cifar100", "svhn", "textures", "places365", "lsun_c", "lsun_r", "isun",
                 "gaussian_noise", "uniform_noise", "digits", "digits_0to4", "digits_5to9", "photo_patches"},
    "architectures": {"wrn40_2", "resnet34", "densenet_bc", "digits_mlp"},
    "losses": {"ce", "logitnorm", "logitpenalty", "godin"},
    "detectors": {"msp", "odin", "energy", "gradnorm", "godin"},
    "executors": {"local", "ray"},
    "suites": {"quick", "paper", "paper_official_tau", "tau_ablation"},
    "reports": {"logitnorm_paper"},
    "trackers": {"tensorboard", "mlflow"},
}


def test_builtins_are_found_through_entry_points(plugin_env):
    plugins = get_plugins()
    assert get_plugins() is plugins  # process-wide
    versions = plugins.versions()
    assert {name: versions.get(name) for name in BUILTIN_PLUGINS} == dict.fromkeys(BUILTIN_PLUGINS, BUILTIN_DIST)
    for kind, names in BUILTINS.items():
        registry = plugins.registry(kind)
        for name in names:
            entry = registry.get(name)
            assert entry.distribution == BUILTIN_DIST, (kind, name)
            assert entry.plugin in BUILTIN_PLUGINS
            assert entry.description
    assert plugins.registry("losses").get("logitnorm").plugin == "paper_losses"
    assert plugins.registry("detectors").get("energy").plugin == "paper_detectors"
    assert plugins.failures == []


def test_ood_bench_plugins_restricts_what_loads(plugin_env):
    plugin_env.setenv("OOD_BENCH_PLUGINS", "paper_losses")
    plugins = Plugins()
    assert plugins.versions() == {"paper_losses": BUILTIN_DIST}
    assert plugins.registry("detectors").names() == []
    assert plugins.registry("datasets").names() == []
    assert set(plugins.registry("losses").names()) >= BUILTINS["losses"]
    with pytest.raises(UnknownNameError, match=r"unknown detector 'msp'.*Known: \(none\)"):
        plugins.registry("detectors").get("msp")

    plugin_env.setenv("OOD_BENCH_PLUGINS", " paper_detectors , executors ")
    assert set(Plugins().versions()) == {"paper_detectors", "executors"}


@pytest.mark.parametrize("spelling", ["ood-bench", "ood_bench", "OOD.Bench"])
def test_ood_bench_plugins_selects_a_distribution_by_name(plugin_env, spelling):
    plugin_env.setenv("OOD_BENCH_PLUGINS", spelling)
    plugins = Plugins(strict=True)
    assert set(plugins.versions()) == BUILTIN_PLUGINS  # and no third-party plugin


def test_ood_bench_plugins_typo_warns_with_did_you_mean(plugin_env):
    plugin_env.setenv("OOD_BENCH_PLUGINS", "paper_losses,paper_detectros")
    with pytest.warns(PluginLoadWarning, match=r"OOD_BENCH_PLUGINS names 'paper_detectros'.*Did you mean "
                                               r"'paper_detectors'"):
        plugins = Plugins()
    assert set(plugins.versions()) == {"paper_losses"}
    plugin_env.setenv("OOD_BENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="paper_detectros"):
        Plugins()


def test_a_plugin_selection_that_excludes_the_builtins_says_so(plugin_env, tmp_path, capsys):
    plugin_env.setenv("OOD_BENCH_PLUGINS", "paper_losses")
    with pytest.raises(UnknownNameError) as info:
        Plugins().registry("datasets").get("cifar10")
    assert str(info.value) == ("unknown dataset 'cifar10'. Known: (none) (OOD_BENCH_PLUGINS=paper_losses excludes "
                               "the distribution ood-bench that provides 'cifar10')")
    suite = _write_suite(tmp_path / "s.yaml", id_dataset=["cifar10"], arch=["wrn40_2"], loss=["ce"],
                         detector=["msp"], ood_dataset=["svhn"], seed=[0])
    assert main(["plan", str(suite)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "unknown dataset 'cifar10'. Known: (none) (OOD_BENCH_PLUGINS=paper_losses excludes the distribution "
        "ood-bench that provides 'cifar10')")
    with pytest.raises(UnknownNameError, match=r"Known: ce, godin, logitnorm, logitpenalty$"):  # no hint needed
        Plugins().registry("losses").get("cee")


# ------------------------------------------------------------------------------------------
# Rules: duplicates, hook-name typos, failures inside register_*, did-you-mean
# ------------------------------------------------------------------------------------------


class FirstMsp:
    @hookimpl
    def register_detectors(self, register):
        register("my_msp", TinyDetector)


class SecondMsp:
    @hookimpl
    def register_detectors(self, register):
        register("my_msp", TinyDetector)


def test_duplicate_component_name_warns_names_both_and_both_stay_reachable(plugin_env):
    plugins = Plugins(load_entry_points=False)
    plugins.add(FirstMsp(), name="first_plugin", distribution="first-dist 1.0")
    plugins.add(SecondMsp(), name="second_plugin", distribution="second-dist 2.0")
    with pytest.warns(PluginLoadWarning) as record:
        detectors = plugins.registry("detectors")
    assert [str(w.message) for w in record] == [
        "detector 'my_msp' is registered twice: by plugin 'first_plugin' (first-dist 1.0) and by plugin "
        "'second_plugin' (second-dist 2.0); 'my_msp' means 'first-dist:my_msp', the other is 'second-dist:my_msp'"]
    assert detectors.names() == ["my_msp"]
    assert detectors.get("my_msp").plugin == "first_plugin"  # the bare name: the first loaded
    assert detectors.get("first-dist:my_msp").plugin == "first_plugin"
    assert detectors.get("second-dist:my_msp").plugin == "second_plugin"  # side by side
    assert detectors.get("Second_Dist:my_msp").plugin == "second_plugin"  # qualifiers compare like pip's names
    assert detectors.canonical("first-dist:my_msp") == "my_msp"
    assert detectors.canonical("second-dist:my_msp") == "second-dist:my_msp"
    assert [e.qualified_name for e in detectors.all_entries()] == ["first-dist:my_msp", "second-dist:my_msp"]
    # strict mode: an error naming both
    plugin_env.setenv("OOD_BENCH_STRICT_PLUGINS", "1")
    plugins = Plugins(load_entry_points=False)
    plugins.add(FirstMsp(), name="first_plugin", distribution="first-dist 1.0")
    plugins.add(SecondMsp(), name="second_plugin", distribution="second-dist 2.0")
    with pytest.raises(DuplicateNameError, match=r"^detector 'my_msp' is registered twice: by plugin "
                                                 r"'first_plugin' \(first-dist 1.0\) and by plugin 'second_plugin'"):
        plugins.registry("detectors")


def test_builtins_win_their_bare_names_whatever_the_order():
    class Shadow:
        @hookimpl
        def register_detectors(self, register):
            register("energy", TinyDetector)

    plugins = Plugins(load_entry_points=False, strict=False)
    plugins.add(Shadow(), name="shadow", distribution="shadow-dist 0.1")  # added (loaded) first, still loses
    plugins.add(builtin_plugin.detectors, name="paper_detectors", distribution=BUILTIN_DIST)
    with pytest.warns(PluginLoadWarning, match=r"^detector 'energy' is registered twice: by plugin "
                                               r"'paper_detectors' \(ood-bench .*\) and by plugin 'shadow'.*"
                                               r"'energy' means 'ood-bench:energy', the other is 'shadow-dist:energy'"):
        detectors = plugins.registry("detectors")
    assert detectors.get("energy").distribution == BUILTIN_DIST
    assert detectors.get("ood-bench:energy") is detectors.get("energy")
    assert detectors.get("shadow-dist:energy").factory is TinyDetector
    assert "msp" in detectors and "ood-bench:msp" in detectors and "nowhere:msp" not in detectors


def test_one_provider_registering_a_name_twice_keeps_the_first():
    class Twice:
        @hookimpl
        def register_detectors(self, register):
            register("again", TinyDetector, description="first")
            register("again", Detector, description="second")
            register("bad:name", TinyDetector)
            register("no_factory", 42)
            register("fine", TinyDetector)

    plugins = Plugins(load_entry_points=False, strict=False)
    plugins.add(Twice(), name="twice")
    with pytest.warns(PluginLoadWarning) as record:
        detectors = plugins.registry("detectors")
    messages = [str(w.message) for w in record]
    assert messages[0] == ("detector 'again' is registered twice by twice: by plugin 'twice' ((in-process)) and "
                           "by plugin 'twice' ((in-process)); the second is skipped")
    assert "registered detector 'bad:name' with a bad name" in messages[1]
    assert "registered detector 'no_factory' with a factory that is a int" in messages[2]
    assert len(messages) == 3
    assert detectors.names() == ["again", "fine"] and detectors.get("again").description == "first"


def test_hookimpl_name_typo_is_an_error_at_add():
    class Typo:
        @hookimpl
        def register_detector(self, register):  # missing "s": would silently do nothing
            register("never", TinyDetector)

    plugins = Plugins(load_entry_points=False)
    with pytest.raises(PluginError, match=r"plugin 'typo'.*register_detector"):
        plugins.add(Typo(), name="typo")
    assert plugins.pm.get_plugin("typo") is None and "typo" not in plugins.versions()
    assert plugins.registry("detectors").names() == []


def test_bad_hookimpl_arguments_are_a_plugin_error_and_register_nothing():
    class BadArgs:
        @hookimpl
        def register_losses(self, register):
            register("half_registered", TinyLoss)

        @hookimpl
        def register_detectors(self, reg):  # not the hookspec's argument name
            reg("never", TinyDetector)

    plugins = Plugins(load_entry_points=False)
    with pytest.raises(PluginError, match=r"plugin 'bad'.*register_detectors.*reg") as info:
        plugins.add(BadArgs(), name="bad")
    assert "\n" not in str(info.value)  # one line for the CLI
    assert plugins.registry("losses").names() == []  # no half-registered plugin left behind
    plugins.add(LossesPlugin(), name="bad")  # and the name is free again
    assert plugins.registry("losses").get("tiny_loss").plugin == "bad"


def test_plugin_name_clash_names_both():
    plugins = Plugins(load_entry_points=False)
    plugins.add(FirstMsp(), name="clash", distribution="first-dist 1.0")
    with pytest.raises(PluginError, match=r"'clash' \(second-dist 2.0\) is already taken .*first-dist 1.0"):
        plugins.add(SecondMsp(), name="clash", distribution="second-dist 2.0")
    assert plugins.registry("detectors").get("my_msp").distribution == "first-dist 1.0"


class RaisesInRegister:
    @hookimpl
    def register_detectors(self, register):
        raise RuntimeError("kaput")

    @hookimpl
    def register_losses(self, register):
        register("fine_loss", TinyLoss)


def test_plugin_raising_in_register_warns_and_others_still_work():
    plugins = Plugins(load_entry_points=False, strict=False)
    plugins.add(DetectorsPlugin(), name="good")
    plugins.add(RaisesInRegister(), name="raiser", distribution="raiser-dist 0.3")
    with pytest.warns(PluginLoadWarning) as record:
        detectors = plugins.registry("detectors")
    assert len(record) == 1
    assert str(record[0].message) == ("plugin 'raiser' (raiser-dist 0.3) failed in register_detectors: "
                                      "RuntimeError: kaput")
    assert detectors.names() == ["tiny_detector"]
    assert plugins.registry("losses").names() == ["fine_loss"]  # its other hooks still count
    assert plugins.failures == [str(record[0].message)]


def test_plugin_raising_in_register_is_an_error_when_strict(plugin_env):
    plugin_env.setenv("OOD_BENCH_STRICT_PLUGINS", "1")
    plugins = Plugins(load_entry_points=False)
    assert plugins.strict
    plugins.add(DetectorsPlugin(), name="good")
    plugins.add(RaisesInRegister(), name="raiser")
    with pytest.raises(PluginError, match=r"plugin 'raiser' \(\(in-process\)\) failed in register_detectors: "
                                          r"RuntimeError: kaput") as info:
        plugins.registry("detectors")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert plugins.registry("losses").names() == ["fine_loss"]


def test_unknown_name_suggests_close_matches(plugin_env):
    detectors = get_plugins().registry("detectors")
    with pytest.raises(UnknownNameError) as info:
        detectors.get("enrgy")
    message = str(info.value)
    assert "unknown detector 'enrgy'" in message and "Did you mean 'energy'" in message
    assert "Known: " + ", ".join(detectors.names()) in message
    assert isinstance(info.value, ConfigError)  # bad input: the CLI's one-line error, exit 2
    with pytest.raises(UnknownNameError, match="unknown component kind 'detector'; known: datasets"):
        get_plugins().registry("detector")


def _write_suite(path: Path, **matrix) -> Path:
    rows = "\n".join(f"      {k}: {json.dumps(v)}" for k, v in matrix.items())
    path.write_text(f"suite: plugin-test\nversion: 1\nexperiments:\n  e:\n    matrix:\n{rows}\n")
    return path


def test_unknown_loss_in_a_suite_fails_plan_with_one_line(plugin_env, tmp_path, capsys):
    suite = _write_suite(tmp_path / "typo_suite.yaml", id_dataset=["digits"], arch=["digits_mlp"],
                         loss=["ce", "logitnrom"], detector=["msp"], ood_dataset=["gaussian_noise"], seed=[0])
    assert main(["plan", str(suite)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("ood-bench: error: ")
    assert f"{suite}:experiments.e.matrix.loss:" in line
    assert "unknown loss 'logitnrom'" in line and "did you mean 'logitnorm'" in line.lower()


# ------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------


def test_resolve_params_fills_defaults_and_rejects_unknown(plugin_env):
    plugins = get_plugins()
    logitnorm = plugins.registry("losses").get("logitnorm")
    assert resolve_params(logitnorm, {}) == {"tau": 0.04}
    assert resolve_params(logitnorm, None) == resolve_params(logitnorm, {"tau": 0.04})
    assert resolve_params(logitnorm, {"tau": 0.1}) == {"tau": 0.1}
    with pytest.raises(ConfigError) as info:
        resolve_params(logitnorm, {"tua": 0.1}, file="s.yaml", key="experiments.e.matrix.loss_params")
    message = str(info.value)
    assert message.startswith("s.yaml:experiments.e.matrix.loss_params.tua: unknown parameter 'tua'"), message
    assert "did you mean 'tau'" in message and "\n" not in message
    # the harness's own arguments are never suite parameters
    assert resolve_params(plugins.registry("architectures").get("digits_mlp"), {}) == {"width": 128}
    with pytest.raises(ConfigError, match="unknown parameter 'num_classes'"):
        resolve_params(plugins.registry("architectures").get("digits_mlp"), {"num_classes": 3})


def test_resolve_params_of_a_plugin_component():
    class Needs:
        @hookimpl
        def register_detectors(self, register):
            def factory(threshold, *, temperature=2.0, weights=(1, 2)):
                return TinyDetector()
            register("needs", factory)

    plugins = Plugins(load_entry_points=False)
    plugins.add(Needs(), name="needs")
    entry = plugins.registry("detectors").get("needs")
    with pytest.raises(ConfigError, match="needs needs parameter"):
        resolve_params(entry, {})
    assert resolve_params(entry, {"threshold": 1}) == {"temperature": 2.0, "threshold": 1, "weights": [1, 2]}
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        resolve_params(entry, {"threshold": 1, "temprature": 1.0})


# ------------------------------------------------------------------------------------------
# The example plugin, in-process (its own tests) and installed (entry point)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.delitem(sys.modules, EXAMPLE_MODULE, raising=False)
    yield monkeypatch
    sys.modules.pop(EXAMPLE_MODULE, None)


def test_example_plugin_own_tests_pass(example_on_path):
    example_on_path.syspath_prepend(str(EXAMPLE))
    path = EXAMPLE / "tests" / "test_example_plugin.py"
    spec = importlib.util.spec_from_file_location("_example_plugin_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [f for name, f in vars(module).items() if name.startswith("test_") and callable(f)]
    assert len(tests) >= 3
    for test in tests:
        test()


def _pip_install(src: Path, work: Path) -> Path:
    """``pip install --target`` a copy of ``src`` (so no build/ or egg-info lands in the repo), offline."""
    build = work / "src"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
    target = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(target), str(build)]
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_NO_INPUT": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    if done.returncode != 0:
        pytest.fail(f"pip install {src.name} failed:\n{done.stdout}\n{done.stderr}")
    return target


def _ood_bench(args: list[str], *sites: Path, **env_vars: str) -> subprocess.CompletedProcess:
    """Run the installed console script in a fresh process that also sees ``sites``."""
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(env_vars)
    script = Path(sys.executable).with_name("ood-bench")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "logitnorm_bench.cli"]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    return _pip_install(EXAMPLE, tmp_path_factory.mktemp("example-plugin"))


BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ood-bench-broken-plugin"
version = "0.0.1"

[project.entry-points.ood_bench]
broken = "ood_bench_broken_plugin"

[tool.setuptools]
py-modules = ["ood_bench_broken_plugin"]
"""
BROKEN_ERROR = "RuntimeError: this plugin is broken on purpose"


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("broken-plugin-src")
    (src / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (src / "ood_bench_broken_plugin.py").write_text(
        "from logitnorm_bench import hookimpl\n\n"
        "raise RuntimeError('this plugin is broken on purpose')\n\n"
        "@hookimpl\ndef register_detectors(register):\n    register('never', object)\n")
    return _pip_install(src, tmp_path_factory.mktemp("broken-plugin"))


@pytest.fixture(scope="session")
def listing(example_site, broken_site) -> subprocess.CompletedProcess:
    """``ood-bench list`` with the example and the broken plugin both installed (one fresh process)."""
    return _ood_bench(["list"], example_site, broken_site)


def _rows(stdout: str, kind: str) -> dict[str, str]:
    """``ood-bench list`` output -> {name: the rest of the row} for one kind."""
    block = re.search(rf"^{kind}:\n((?:  .*\n?)*)", stdout, re.M)
    assert block, stdout
    return {line.split()[0]: line.split(None, 1)[1] for line in block.group(1).splitlines()}


@pytest.mark.slow  # pip-installs two distributions and starts ood-bench (torch): ~10-15 s on 2 cores
def test_example_plugin_is_discovered_through_its_entry_point(listing, example_site):
    assert listing.returncode == 0, listing.stderr
    assert (example_site / EXAMPLE_MODULE).with_suffix(".py").is_file()
    assert any(p.name.startswith("ood_bench_example_plugin-0.1.0.dist-info") for p in example_site.iterdir())
    detectors, losses = _rows(listing.stdout, "detectors"), _rows(listing.stdout, "losses")
    assert detectors["maxlogit"].startswith(EXAMPLE_DIST + "  Maximum logit")
    assert losses["label_smoothing_ce"].startswith(EXAMPLE_DIST)
    assert detectors["msp"].startswith(BUILTIN_DIST)


def test_example_plugin_resolves_in_a_suite(example_site, example_on_path, plugin_env, tmp_path, capsys):
    # The suite of docs/plugins.md, planned with the installed distribution found by importlib.metadata.
    suite_yaml = re.search(r"```yaml\n(suite: maxlogit\n.*?)```", DOCS.read_text(), re.S)
    assert suite_yaml, "docs/plugins.md lost its example suite"
    suite = tmp_path / "maxlogit.yaml"
    suite.write_text(suite_yaml.group(1))
    example_on_path.syspath_prepend(str(example_site))
    assert main(["plan", str(suite), "--format", "json"]) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    runs = {r["loss"]: r for r in plan["training_runs"]}
    assert set(runs) == {"ce", "logitnorm", "label_smoothing_ce"}
    assert runs["label_smoothing_ce"]["loss_params"] == {"smoothing": 0.2}
    assert sorted({c["detector"] for c in plan["evaluations"]}) == ["maxlogit", "msp"]
    assert len(plan["evaluations"]) == 3 * 2 * 2
    entry = get_plugins().registry("detectors").get("maxlogit")
    assert (entry.plugin, entry.distribution) == ("example", EXAMPLE_DIST)
    assert get_plugins().versions()["example"] == EXAMPLE_DIST
    assert Path(sys.modules[EXAMPLE_MODULE].__file__).parent == example_site  # the installed copy


@pytest.mark.slow  # shares the subprocess of the test above
def test_broken_plugin_warns_once_and_the_rest_works(listing):
    assert listing.returncode == 0, listing.stderr
    warnings = [line for line in listing.stderr.splitlines() if "PluginLoadWarning" in line]
    assert len(warnings) == 1, listing.stderr
    assert "plugin 'broken' from distribution ood-bench-broken-plugin 0.0.1 failed to load" in warnings[0]
    assert BROKEN_ERROR in warnings[0]
    assert "Traceback" not in listing.stderr
    for kind, names in BUILTINS.items():
        rows = _rows(listing.stdout, kind)
        assert names <= set(rows), kind
        assert all(rows[n].startswith(BUILTIN_DIST) for n in names)
    assert "maxlogit" in _rows(listing.stdout, "detectors")  # other third-party plugins too
    assert "never" not in listing.stdout


def test_broken_plugin_is_an_error_when_strict(broken_site):
    done = _ood_bench(["list"], broken_site, OOD_BENCH_STRICT_PLUGINS="1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "ood-bench: error: plugin 'broken' from distribution ood-bench-broken-plugin 0.0.1 failed to load: "
        + BROKEN_ERROR]


# ------------------------------------------------------------------------------------------
# Qualified names in suites; what a bare name means never silently changes a run's identity
# ------------------------------------------------------------------------------------------


def _maxlogit_from(dist: str):
    class MaxLogitPlugin:
        @hookimpl
        def register_detectors(self, register):
            register("maxlogit", TinyDetector, description=f"maxlogit of {dist}")

    return MaxLogitPlugin()


def _builtins_and(*dists: str) -> Plugins:
    """The built-ins (as their entry points register them) and one ``maxlogit`` plugin per distribution."""
    plugins = Plugins(load_entry_points=False, strict=False)
    for kind in ("datasets", "architectures", "losses", "detectors"):
        plugins.add(getattr(builtin_plugin, kind), name=f"paper_{kind}", distribution=BUILTIN_DIST)
    for dist in dists:
        plugins.add(_maxlogit_from(dist), name=dist.replace("-", "_"), distribution=f"{dist} 1.0")
    return plugins


def _cells(plugins: Plugins, detectors: list[str]):
    from logitnorm_bench.plan import make_plan
    from logitnorm_bench.suite import parse_suite

    matrix = {"id_dataset": ["digits"], "arch": ["digits_mlp"], "loss": ["ce"], "detector": detectors,
              "ood_dataset": ["uniform_noise"], "seed": [0]}
    plan = make_plan(parse_suite({"suite": "ids", "experiments": {"e": {"matrix": matrix}}}, "ids.yaml", [],
                                 plugins), plugins)
    return plan, {c.detector: c.cell_id for c in plan.cells}


def test_a_bare_name_that_changes_meaning_names_another_cell():
    from logitnorm_bench.plan import run_identity, stable_hash

    plan, alone_a = _cells(_builtins_and("a-plugin"), ["msp", "ood-bench:msp", "maxlogit"])
    assert set(alone_a) == {"msp", "maxlogit"}  # ood-bench:msp is msp: one cell, named the short way
    (run,) = plan.runs  # the built-ins hash as they always did: no provider added for them
    assert run.run_id == stable_hash(run_identity("digits", "digits_mlp", run.arch_params, "ce", {}, 0,
                                                  run.train, None, False))
    # a-plugin removed, b-plugin (another maxlogit) installed: the same suite names another cell
    _, alone_b = _cells(_builtins_and("b-plugin"), ["msp", "maxlogit"])
    assert alone_b["msp"] == alone_a["msp"] and alone_b["maxlogit"] != alone_a["maxlogit"]
    # both installed: 'maxlogit' means the first loaded; each is reachable, and hashes, as before
    with pytest.warns(PluginLoadWarning, match="'maxlogit' means 'a-plugin:maxlogit', the other is "
                                               "'b-plugin:maxlogit'"):
        _, both = _cells(_builtins_and("a-plugin", "b-plugin"),
                         ["maxlogit", "a-plugin:maxlogit", "b-plugin:maxlogit"])
    assert both == {"maxlogit": alone_a["maxlogit"], "b-plugin:maxlogit": alone_b["maxlogit"]}


def test_a_qualified_name_with_an_unknown_provider_is_bad_input():
    detectors = _builtins_and("a-plugin").registry("detectors")
    with pytest.raises(UnknownNameError, match=r"unknown detector 'a_plugin:maxlgit'\. Did you mean "
                                               r"'a-plugin:maxlogit'"):
        detectors.get("a_plugin:maxlgit")


# ------------------------------------------------------------------------------------------
# Installed distributions that clash or are broken: warnings, and the rest works
# ------------------------------------------------------------------------------------------


def _write_dist(site: Path, folder: str, name: str | None, entry_points: dict[str, str], module: str,
                source: str) -> None:
    """A distribution as an installer leaves it (``*.dist-info`` + module), without pip: pip refuses
    to build some of these (no name), and this is quicker."""
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + (f"Name: {name}\n" if name else "") + "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[ood_bench]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    (site / f"{module}.py").write_text("from logitnorm_bench import hookimpl\n\n\n@hookimpl\n"
                                       "def register_detectors(register):\n" + source)


@pytest.fixture(scope="session")
def clashing_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("clashing-plugins")
    _write_dist(site, "nameless-1.0.dist-info", None, {"nameless": "nameless_plugin"}, "nameless_plugin",
                "    register('never_nameless', 'nowhere:Nothing')\n")
    _write_dist(site, "aaa_clash_a-1.0.dist-info", "aaa-clash-a", {"paper_detectors": "clash_a"}, "clash_a",
                "    register('never_clash_a', 'nowhere:Nothing')\n")
    # Import strings: listing them needs no module that defines the components (nowhere does).
    _write_dist(site, "clash_b-1.0.dist-info", "clash-b", {"clash_b": "clash_b"}, "clash_b",
                "    register('msp', 'nowhere:Msp', description=\"clash-b's msp\")\n"
                "    register('maxlogit', 'nowhere:MaxLogit', description=\"clash-b's maxlogit\")\n")
    _write_dist(site, "clash_c-1.0.dist-info", "clash-c", {"clash_c": "clash_c"}, "clash_c",
                "    register('maxlogit', 'nowhere:MaxLogit', description=\"clash-c's maxlogit\")\n")
    return site


def test_clashing_and_nameless_distributions_warn_and_the_rest_works(clashing_site):
    done = _ood_bench(["list", "detectors"], clashing_site)
    assert done.returncode == 0, done.stderr
    warned = [line.split("PluginLoadWarning: ", 1)[1] for line in done.stderr.splitlines()
              if "PluginLoadWarning: " in line]
    assert warned == [
        f"the distribution at {clashing_site / 'nameless-1.0.dist-info'} declares plugin(s) nameless but its "
        "metadata has no name; skipped",
        f"plugin name 'paper_detectors' (aaa-clash-a 1.0) is already taken by the plugin from {BUILTIN_DIST}; "
        "the second is skipped",
        f"detector 'msp' is registered twice: by plugin 'paper_detectors' ({BUILTIN_DIST}) and by plugin "
        "'clash_b' (clash-b 1.0); 'msp' means 'ood-bench:msp', the other is 'clash-b:msp'",
        "detector 'maxlogit' is registered twice: by plugin 'clash_b' (clash-b 1.0) and by plugin 'clash_c' "
        "(clash-c 1.0); 'maxlogit' means 'clash-b:maxlogit', the other is 'clash-c:maxlogit'",
    ], done.stderr
    rows = _rows(done.stdout, "detectors")
    assert BUILTINS["detectors"] <= set(rows) and rows["msp"].startswith(BUILTIN_DIST)  # the built-ins' stay
    assert rows["clash-b:msp"] == "clash-b 1.0           clash-b's msp"
    assert rows["maxlogit"].startswith("clash-b 1.0") and rows["clash-c:maxlogit"].startswith("clash-c 1.0")
    assert "never" not in done.stdout


def test_clashing_distributions_are_an_error_when_strict(clashing_site):
    done = _ood_bench(["list", "detectors"], clashing_site, OOD_BENCH_STRICT_PLUGINS="1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"ood-bench: error: the distribution at {clashing_site / 'nameless-1.0.dist-info'} declares plugin(s) "
        "nameless but its metadata has no name; skipped"]


# ------------------------------------------------------------------------------------------
# Errors inside a plugin's components name the plugin and the line; the scores contract
# ------------------------------------------------------------------------------------------


class RaisingDetector(Detector):
    def score_outputs(self, outputs, model):
        raise RuntimeError("kaput in a detector")  # RAISED-IN-DETECTOR


class UnimplementedDetector(Detector):
    needs_features = False


class ListScores(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1).tolist()


class NumpyScores(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits.amax(dim=1).numpy()


class DictScores(Detector):
    def score_outputs(self, outputs, model):
        return {"scores": outputs.logits.amax(dim=1)}


class RaisingLoss(Loss):
    def forward(self, logits, targets):
        raise ValueError("kaput in a loss")  # RAISED-IN-LOSS


class FlakyPlugin:
    @hookimpl
    def register_detectors(self, register):
        for name, factory in (("raising", RaisingDetector), ("unimplemented", UnimplementedDetector),
                              ("as_list", ListScores), ("as_numpy", NumpyScores), ("as_dict", DictScores),
                              ("as_tensor", TinyDetector)):
            register(name, factory)

    @hookimpl
    def register_losses(self, register):
        register("raising_loss", RaisingLoss)


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1) if line.endswith(marker))


def test_errors_in_a_plugin_name_it_and_its_line_and_scores_may_be_lists(plugin_env, tiny_suite, tmp_path):
    from logitnorm_bench.records import ResultsDir

    get_plugins().add(FlakyPlugin(), name="flaky")
    suite = tiny_suite(tmp_path / "flaky.yaml", name="flaky", crop_padding=0, ood_samples=100, id_val_samples=50,
                       loss=["ce", "raising_loss"], ood_dataset=["uniform_noise"],
                       detector=["raising", "unimplemented", "as_list", "as_numpy", "as_dict", "as_tensor"])
    assert main(["run", str(suite), "--results", str(tmp_path / "r")]) == 1
    recs = {(r["loss"], r["detector"]): r for r in ResultsDir(tmp_path / "r").records()}
    assert recs[("ce", "raising")]["error"] == (
        "RuntimeError: kaput in a detector (in detector 'raising' of plugin 'flaky' ((in-process)), "
        f"at test_plugins.py:{_line_of('# RAISED-IN-DETECTOR')})")
    assert recs[("ce", "unimplemented")]["error"] == (
        "NotImplementedError: UnimplementedDetector does not implement score_outputs(outputs, model); a detector "
        "implements it, or sets needs_input_grad = True and implements score_inputs(model, x) (in detector "
        "'unimplemented' of plugin 'flaky' ((in-process)), defined at "
        f"test_plugins.py:{inspect.getsourcelines(UnimplementedDetector)[1]})")
    contract = "a detector returns a 1-D float tensor, one score per input, higher = more in-distribution"
    assert recs[("ce", "as_dict")]["error"].startswith(
        f"TypeError: DictScores.score_outputs returned a dict; {contract} (in detector 'as_dict' of plugin 'flaky'")
    for converted in ("as_list", "as_numpy"):  # a list or a numpy array is converted
        assert recs[("ce", converted)]["status"] == "ok", recs[("ce", converted)]["error"]
        assert recs[("ce", converted)]["metrics"] == recs[("ce", "as_tensor")]["metrics"]
    failed_run = [r for (loss, _), r in recs.items() if loss == "raising_loss"]
    assert len(failed_run) == 6 and {r["error"] for r in failed_run} == {
        "ValueError: kaput in a loss (in plugin 'flaky' ((in-process)), "
        f"at test_plugins.py:{_line_of('# RAISED-IN-LOSS')})"}


def test_scores_contract_is_checked_per_batch():
    from logitnorm_bench.evaluation import as_scores

    assert as_scores([1, 2.5], 2, "D.score_outputs").tolist() == [1.0, 2.5]
    assert as_scores(torch.ones(3, 1), 3, "D.score_outputs").shape == (3,)
    for bad, problem in ((None, "returned a NoneType"), ("ab", "returned a str"),
                         (torch.ones(2, 2), r"returned 4 scores for 2 inputs \(shape \(2, 2\)\)"),
                         ([[1, 2], [3]], "returned a list that is not numbers")):
        with pytest.raises((TypeError, ValueError), match=rf"^D\.score_outputs {problem}.*1-D float tensor, one "
                                                         r"score per input, higher = more in-distribution$"):
            as_scores(bad, 2, "D.score_outputs")


# ------------------------------------------------------------------------------------------
# Lazy registration: import strings; start-up imports no torch
# ------------------------------------------------------------------------------------------


def test_a_factory_may_be_an_import_string(tmp_path, monkeypatch):
    (tmp_path / "lazy_component_module.py").write_text(
        "class Thing:\n    def __init__(self, size: int = 3):\n        self.size = size\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_component_module", raising=False)

    class Lazy:
        @hookimpl
        def register_losses(self, register):
            register("lazy_thing", "lazy_component_module:Thing", description="imported when first needed")
            register("missing_thing", "no_such_module_here:Thing")
            register("not_a_target", "no_colon_in_it")

    plugins = Plugins(load_entry_points=False, strict=False)
    plugins.add(Lazy(), name="lazy")
    with pytest.warns(PluginLoadWarning, match=r"'not_a_target' with the factory 'no_colon_in_it', which is not "
                                               r"an import string 'package.module:attribute'; skipped"):
        losses = plugins.registry("losses")
    assert losses.names() == ["lazy_thing", "missing_thing"]
    assert losses.get("lazy_thing").description == "imported when first needed"
    assert "lazy_component_module" not in sys.modules  # registered and looked up: not imported
    assert resolve_params(losses.get("lazy_thing"), {}) == {"size": 3}  # its signature: imported now
    assert "lazy_component_module" in sys.modules
    assert losses.build("lazy_thing", size=5).size == 5
    with pytest.raises(PluginError, match=r"^loss 'missing_thing' of plugin 'lazy' \(\(in-process\)\): cannot "
                                          r"import its factory 'no_such_module_here:Thing': ModuleNotFoundError"):
        losses.build("missing_thing")
    monkeypatch.delitem(sys.modules, "lazy_component_module")


def test_every_builtin_import_string_resolves(plugin_env):
    for kind in ("datasets", "architectures", "losses", "detectors"):
        for entry in get_plugins().registry(kind).entries():
            assert isinstance(entry.target, str) and callable(entry.factory), (kind, entry.name)


# Peak RSS from /proc (VmHWM: this process image's own; getrusage's ru_maxrss would count the forking pytest).
STARTUP_PROBE = """\
import json, re, sys
from logitnorm_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "torchvision", "pytorch_ood", "numpy", "ood_bench_paper.detectors")
               if m in sys.modules)
try:
    rss_mb = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
except OSError:  # no /proc (not Linux)
    rss_mb = None
print(json.dumps({"code": code, "heavy": heavy, "rss_mb": rss_mb}), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["list"], ["--help"], ["run", "--help"], ["plan", "bad.yaml"]],
                         ids=["list", "help", "run-help", "yaml-error"])
def test_startup_imports_no_torch(args, tmp_path):
    (tmp_path / "bad.yaml").write_text("suite: bad\nexperiments: [unclosed\n")
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env["OOD_BENCH_PLUGINS"] = "ood-bench"  # the built-ins, whatever else is installed here
    done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    assert probe["code"] == (2 if args[0] == "plan" else 0), done.stderr
    assert probe["heavy"] == [], f"ood-bench {' '.join(args)} imported {probe['heavy']}"
    assert probe["rss_mb"] is None or probe["rss_mb"] < 150, probe  # ~20-25 MB; torch alone is ~800 MB
