"""Runtime faults become recorded failures; corrupt files are set aside; nothing computed is lost."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from logitnorm_bench import hookimpl
from logitnorm_bench.cli import main
from logitnorm_bench.components import DatasetSource, Detector
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir

class NanDetector(Detector):
    def score_outputs(self, outputs, model):
        return torch.full((outputs.logits.shape[0],), float("nan"))


class WrongShapeDetector(Detector):
    def score_outputs(self, outputs, model):
        return outputs.logits[:, :2].reshape(-1)


class EmptySource(DatasetSource):
    input_shape = (1, 8, 8)

    def build(self, split, ctx):
        return TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))


class FaultyPlugin:
    @hookimpl
    def register_detectors(self, register):
        register("nan_scores", NanDetector)
        register("wrong_shape", WrongShapeDetector)

    @hookimpl
    def register_datasets(self, register):
        register("empty_ood", EmptySource)


@pytest.fixture
def faulty(plugin_env):
    get_plugins().add(FaultyPlugin(), name="faulty")
    yield


@pytest.fixture
def write(tiny_suite):
    """One loss (ce), seed 0, on the digits unless told otherwise."""

    def write_(tmp_path: Path, id_dataset="digits", detectors=("msp",), oods=("uniform_noise",), **options) -> Path:
        return tiny_suite(tmp_path / "suite.yaml", name="rel", crop_padding=0, ood_samples=200, id_val_samples=50,
                          id_dataset=[id_dataset], loss=["ce"], detector=list(detectors), ood_dataset=list(oods),
                          **options)

    return write_


def records(results: Path) -> dict[tuple, dict]:
    return {(r["detector"], r["ood_dataset"]): r for r in ResultsDir(results).records()}


def test_bad_detectors_and_empty_dataset_are_recorded_failures(write, tmp_path, faulty, capsys):
    suite = write(tmp_path, detectors=["msp", "nan_scores", "wrong_shape"], oods=["uniform_noise", "empty_ood"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results)]) == 1
    recs = records(results)
    assert recs[("msp", "uniform_noise")]["status"] == "ok"  # the others still produce numbers
    assert "non-finite" in recs[("nan_scores", "uniform_noise")]["error"]
    assert "scores for" in recs[("wrong_shape", "uniform_noise")]["error"]
    assert "no items" in recs[("msp", "empty_ood")]["error"]
    rows = list(csv.DictReader(open(results / "leaderboard.csv")))
    nan_row = next(r for r in rows if r["detector"] == "nan_scores" and r["ood_dataset"] == "uniform_noise")
    assert nan_row["fpr95"] == "" and nan_row["n_failed"] == "1"  # missing, never a number


def run_without_cifar(tmp_path: Path, write) -> tuple[int, Path, Path]:
    """``ood-bench run`` of a CIFAR-10 suite on an empty data root, downloads off."""
    suite = write(tmp_path, id_dataset="cifar10", oods=["svhn"], arch=["wrn40_2"], arch_params=[{}])
    data, results = tmp_path / "nodata", tmp_path / "r"
    code = main(["run", str(suite), "--results", str(results), "--data", str(data), "--no-download"])
    return code, data, results


def test_missing_data_is_bad_input_before_anything_runs(write, tmp_path, plugin_env, capsys):
    code, data, results = run_without_cifar(tmp_path, write)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ood-bench: error: cifar10") and str(data) in err[-1] and "Traceback" not in err
    assert "https://" in err[-1]  # and where to get it
    assert not list(ResultsDir(results).records())  # nothing ran


def test_missing_data_at_run_time_is_a_recorded_failure(write, tmp_path, plugin_env, monkeypatch):
    # Data that vanishes after the check (or a worker on another machine without it): a recorded failure.
    import logitnorm_bench.driver as driver

    monkeypatch.setattr(driver, "prepare_data", lambda *a, **k: None)
    code, data, results = run_without_cifar(tmp_path, write)
    assert code == 1
    (rec,) = ResultsDir(results).records()
    assert rec["status"] == "failed" and "cifar10" in rec["error"] and str(data) in rec["error"]


def test_at_chance_training_is_failed_not_a_number(write, tmp_path, plugin_env):
    suite = write(tmp_path)
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--set", "train.lr=1e-9",
                 "--set", "train.epochs=1"]) == 1
    (rec,) = ResultsDir(results).records()
    assert rec["status"] == "failed" and "chance" in rec["error"]
    assert rec["at_chance"] is True


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/ood-bench-evil-marker")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the planted pickle
def test_corrupt_or_malicious_weights_are_set_aside_and_never_unpickled(write, tmp_path, plugin_env):
    suite = write(tmp_path)
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results)]) == 0
    (run_dir,) = [p for p in (results / "runs").iterdir() if p.is_dir()]
    before = {k: v.clone() for k, v in torch.load(run_dir / "model.pt", weights_only=True).items()}
    MARKER.unlink(missing_ok=True)
    with open(run_dir / "model.pt", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    for rec in (results / "records").glob("*.json"):
        rec.unlink()
    assert main(["run", str(suite), "--results", str(results)]) == 0
    assert not MARKER.exists()  # the pickled payload was never executed
    assert (run_dir / "model.pt.corrupt").exists() and (run_dir / "checkpoint.pt.corrupt").exists()
    after = torch.load(run_dir / "model.pt", weights_only=True)
    for k in before:  # retrained from scratch, deterministically: the same weights
        assert torch.equal(before[k], after[k]), k
