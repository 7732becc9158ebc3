"""Experiment trackers (issue 13 item 4): TensorBoard and MLflow read back, W&B offline, failures.

The built-in trackers need their extras (``pip install 'ood-bench[tensorboard,mlflow]'``); a test
whose package is absent is skipped and says which extra it needs.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from logitnorm_bench import hookimpl
from logitnorm_bench.cli import main
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.trackers import cell_metric_prefix

ROOT = Path(__file__).resolve().parent.parent
WANDB_EXAMPLE = ROOT / "examples" / "ood-bench-wandb"
EPOCHS = 3


def needs(module: str, extra: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs {module}: pip install '{extra}'")


@pytest.fixture
def suite(tiny_suite, tmp_path):
    """ce and logitnorm, 3 epochs, msp and energy on uniform noise; the suite asks for MLflow itself."""
    import yaml

    path = tiny_suite(tmp_path / "tracked.yaml", epochs=EPOCHS)
    doc = yaml.safe_load(path.read_text())
    doc["trackers"] = {"mlflow": {"experiment": "tracked-exp"}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _runs(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (results / "runs").glob("*/run.json")}


@needs("tensorboard", "ood-bench[tensorboard]")
@needs("mlflow", "ood-bench[mlflow]")
def test_tensorboard_and_mlflow_get_every_training_s_curves_records_and_config(suite, tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--tracker", "tensorboard"]) == 0
    assert "warning" not in capsys.readouterr().err
    runs = _runs(results)
    assert len(runs) == 2
    records = list(ResultsDir(results).records())

    # TensorBoard: one event folder per training run
    assert sorted(p.name for p in (results / "tensorboard").iterdir()) == sorted(runs)
    for run_id, info in runs.items():
        acc = EventAccumulator(str(results / "tensorboard" / run_id)).Reload()
        scalars = acc.Tags()["scalars"]
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == list(range(1, EPOCHS + 1))
        assert [e.value for e in loss] == pytest.approx([h["loss"] for h in info["history"]], rel=1e-6)
        assert {"train/train_acc", "train/lr", "train/seconds", "train/logit_norm_id", "run/id_acc"} <= set(scalars)
        for rec in (r for r in records if r["run_id"] == run_id):
            assert cell_metric_prefix(rec) == f"eval/{rec['detector']}_temperature1.0/{rec['ood_dataset']}"
            (event,) = acc.Scalars(f"{cell_metric_prefix(rec)}/fpr95")
            assert event.value == pytest.approx(rec["metrics"]["fpr95"]) and event.step == EPOCHS
        content = PluginAccumulator(str(results / "tensorboard" / run_id)).Reload().PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
        assert start["train.lr"].number_value == 0.05 and start["loss"].string_value == info["run"]["loss"]
        experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert "run/id_acc" in {m.name.tag for m in experiment.metric_infos}

    # MLflow: the suite's tracker, in the local store under the results folder
    client = MlflowClient(tracking_uri=(results / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tracked-exp")
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["ood_bench.run_id"] for r in found) == sorted(runs)
    for r in found:
        info = runs[r.data.tags["ood_bench.run_id"]]
        assert r.info.status == "FINISHED"
        assert r.info.run_name == {"ce": "digits/digits_mlp/ce/seed0",
                                   "logitnorm": "digits/digits_mlp/logitnorm(tau=0.04)/seed0"}[info["run"]["loss"]]
        history = client.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, EPOCHS + 1))
        assert r.data.params["train.lr"] == "0.05" and r.data.params["loss"] == info["run"]["loss"]
        assert 0 <= r.data.metrics["eval/msp_temperature1.0/uniform_noise/fpr95"] <= 1
        assert "run/id_acc" in r.data.metrics

    # A rerun that computes one cell again continues the same MLflow run and TensorBoard folder.
    first = sorted((results / "records").glob("*.json"))[0]
    first.unlink()
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--tracker", "tensorboard"]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 2
    assert sorted(p.name for p in (results / "tensorboard").iterdir()) == sorted(runs)


class Raiser:
    calls: list[str] = []

    def __init__(self, where: str = "run_started"):
        self.where = where

    def __getattr__(self, name):
        if name in ("run_started", "epoch_ended", "record_written", "run_finished"):
            def method(*args):
                Raiser.calls.append(name)
                if name == self.where:
                    raise RuntimeError(f"tracker down in {name}")
            return method
        raise AttributeError(name)


class RaisingTrackers:
    @hookimpl
    def register_trackers(self, register):
        register("raiser", Raiser, description="raises")
        register("broken_factory", lambda: 1 / 0, description="its factory raises")


def test_a_failing_tracker_is_logged_once_and_the_run_goes_on(tiny_suite, tmp_path, capsys, plugin_env, monkeypatch):
    from logitnorm_bench import trackers

    monkeypatch.setattr(trackers, "_WARNED", set())
    get_plugins().add(RaisingTrackers(), name="raising")
    suite = tiny_suite(tmp_path / "s.yaml", epochs=2)
    results = tmp_path / "r"
    Raiser.calls = []
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--tracker", "raiser",
                 "--tracker", "broken_factory", "--set", "trackers={raiser: {where: epoch_ended}}"]) == 0
    out, err = capsys.readouterr()
    assert "trained 2 run(s); 4 record(s) ok, 0 failed" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err  # once per tracker, not once per run or per epoch
    assert ("tracker raiser failed in epoch_ended: RuntimeError: tracker down in epoch_ended; it is off for the "
            "rest of this run, which goes on") in warnings[0] + warnings[1]
    assert "tracker broken_factory failed in its factory: ZeroDivisionError" in warnings[0] + warnings[1]
    # off for the rest of the run after its failure: started and one epoch, twice (one per run)
    assert Raiser.calls == ["run_started", "epoch_ended"] * 2
    log = next((results / "logs").glob("*.log")).read_text()
    assert log.count("tracker raiser failed in epoch_ended") == 2  # the second run's at DEBUG, in the file


def test_unknown_trackers_and_missing_packages_are_bad_input(tiny_suite, tmp_path, capsys, plugin_env):
    suite = tiny_suite(tmp_path / "s.yaml")
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--tracker", "tensorbord"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown tracker 'tensorbord'" in err and "Did you mean 'tensorboard'" in err

    class NeedsMissing:
        REQUIRES = (("ood_bench_no_such_module", "ood-bench[nothing]"),)

    class Plugin:
        @hookimpl
        def register_trackers(self, register):
            register("needs_missing", NeedsMissing)

    get_plugins().add(Plugin(), name="needs")
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--tracker", "needs_missing"]) == 2
    err = capsys.readouterr().err
    assert ("tracker needs_missing needs the ood_bench_no_such_module package, which is not installed; install it "
            "with: pip install 'ood-bench[nothing]'") in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "records").exists()  # before anything ran

    path = tmp_path / "bad.yaml"
    path.write_text(suite.read_text() + "trackers: tensorboard\n")
    assert main(["plan", str(path)]) == 2
    assert "bad.yaml:trackers: got 'tensorboard'; expected a list of tracker names" in capsys.readouterr().err


def _wandb_records(path: Path) -> list:
    """The records of a W&B ``.wandb`` file: a LevelDB-style log of protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data, pos, out, pending = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            out.append(record)
            pending = b""
        elif kind in (2, 3):  # first, middle
            pending += chunk
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@needs("wandb", "wandb (the example plugin examples/ood-bench-wandb)")
def test_the_wandb_example_plugin_offline(tiny_suite, tmp_path, capsys, plugin_env, monkeypatch):
    monkeypatch.syspath_prepend(str(WANDB_EXAMPLE))
    monkeypatch.delitem(sys.modules, "ood_bench_wandb", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    import ood_bench_wandb

    get_plugins().add(ood_bench_wandb, name="wandb")
    suite = tiny_suite(tmp_path / "s.yaml", epochs=EPOCHS)
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--tracker", "wandb",
                 "--set", "trackers.wandb.mode=offline"]) == 0
    assert "warning" not in capsys.readouterr().err
    runs = _runs(results)
    offline = sorted((results / "wandb" / "wandb").glob("offline-run-*"))
    assert sorted(p.name.rsplit("-", 1)[1] for p in offline) == sorted(runs)  # W&B run id = the harness's run id
    for folder in offline:
        info = runs[folder.name.rsplit("-", 1)[1]]
        records = _wandb_records(next(folder.glob("run-*.wandb")))
        history = [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in records
                   if r.WhichOneof("record_type") == "history"]
        assert [h["_step"] for h in history] == list(range(1, EPOCHS + 1))
        assert [h["train/loss"] for h in history] == pytest.approx([e["loss"] for e in info["history"]])
        summary = {_key(i): i.value_json for r in records if r.WhichOneof("record_type") == "summary"
                   for i in r.summary.update}
        assert 0 <= json.loads(summary["eval/msp_temperature1.0/uniform_noise/fpr95"]) <= 1
    sys.modules.pop("ood_bench_wandb", None)
