"""Given weights from pytorch-ood's model zoo (issue 12 item 17): the entry's own preprocessing, a refusal
when the entry contradicts the cell, and the download path tested on a local fixture."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from pytorch_ood.model import registry
from pytorch_ood.model.registry import ImagePreprocessing, ModelEntry

from logitnorm_bench.cli import main
from logitnorm_bench.records import ResultsDir


def _suite(tmp_path, tiny_suite, **matrix):
    doc = yaml.safe_load(tiny_suite(tmp_path / "base.yaml", loss=["ce"], detector=["msp"]).read_text())
    doc["experiments"]["e"]["matrix"].update(matrix)
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("key,arch,loss,message", [
    ("wrn-40-2/cifar100/logitnorm/s0", "wrn40_2", "ce", "trained with loss 'logitnorm', but the cell says 'ce'"),
    ("wrn-40-2/cifar10/logitnorm/s0", "wrn40_2", "logitnorm",
     "trained with dataset 'cifar10', but the cell says 'cifar100'"),
    ("wrn-40-2/cifar100/crossentropy/s0", "resnet34", "ce",
     "trained with architecture 'wrn-40-2', but the cell says 'resnet34'"),
])
def test_a_zoo_entry_that_contradicts_the_cell_is_refused_at_plan_time(key, arch, loss, message, tmp_path, capsys,
                                                                      tiny_suite):
    assert key in registry.list_models()
    path = _suite(tmp_path, tiny_suite, id_dataset=["cifar100"], arch=[arch], arch_params=[{}], loss=[loss],
                  ood_dataset=["svhn"], weights=[f"pytorch-ood:{key}"])
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "experiments.e.matrix.weights" in err and err.count("\n") == 1


def test_a_matching_zoo_entry_plans_without_downloading(tmp_path, capsys, tiny_suite):
    path = _suite(tmp_path, tiny_suite, id_dataset=["cifar100"], arch=["wrn40_2"], loss=["logitnorm"],
                  arch_params=[{}], ood_dataset=["svhn"], weights=["pytorch-ood:wrn-40-2/cifar100/logitnorm/s0"])
    assert main(["plan", str(path)]) == 0


@pytest.fixture
def digits_zoo(tmp_path, tiny_suite, serve, monkeypatch):
    """A one-entry zoo for the bundled digits: weights of a trained digits_mlp served on loopback."""
    suite = tiny_suite(tmp_path / "base.yaml", loss=["ce"], detector=["msp"], epochs=2)
    results = tmp_path / "trained"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    (run_dir,) = [p for p in (results / "runs").iterdir() if p.is_dir()]
    state = torch.load(run_dir / "model.pt", weights_only=True)
    folder, url = serve
    ckpt = folder / "digits.pt"
    torch.save({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}, ckpt)
    entry = ModelEntry(key="digits-mlp/digits/crossentropy/s0", arch_class="x.Y", arch_kwargs={},
                       url=f"{url}/digits.pt", sha256=hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                       arch="digits-mlp", dataset="digits", loss="crossentropy", seed="s0",
                       preprocessing=ImagePreprocessing(mean=(0.25,), std=(0.5,), size=(8, 8)))
    real = registry.get_model_info
    monkeypatch.setattr(registry, "get_model_info", lambda k: entry if k == entry.key else real(k))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return suite, results, entry


def test_zoo_weights_are_downloaded_verified_and_use_the_entrys_preprocessing(tmp_path, digits_zoo, capsys):
    suite, trained, entry = digits_zoo
    zoo_suite = _suite(tmp_path, lambda p, **kw: suite, weights=[f"pytorch-ood:{entry.key}"])
    out = tmp_path / "zoo-results"
    assert main(["run", str(zoo_suite), "--results", str(out), "--device", "cpu"]) == 0
    assert "trained 0 run(s)" in capsys.readouterr().out
    (run_dir,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    applied = json.loads((run_dir / "run.json").read_text())["weights_applied"]
    assert applied["preprocessing"] == {"mean": [0.25], "std": [0.5]}
    # Not the digits' own statistics: the same weights score differently than when trained here.
    ours = {r["ood_dataset"]: r["metrics"]["auroc"] for r in ResultsDir(trained).records()}
    zoo = {r["ood_dataset"]: r["metrics"]["auroc"] for r in ResultsDir(out).records()}
    assert set(ours) == set(zoo) and ours != zoo


def test_a_cached_zoo_file_that_does_not_match_its_checksum_fails_the_cells(tmp_path, digits_zoo, capsys):
    suite, _, entry = digits_zoo
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / entry.file_name).write_bytes(b"not the weights")
    zoo_suite = _suite(tmp_path, lambda p, **kw: suite, weights=[f"pytorch-ood:{entry.key}"])
    out = tmp_path / "zoo-results"
    assert main(["run", str(zoo_suite), "--results", str(out), "--device", "cpu"]) == 1
    recs = list(ResultsDir(out).records())
    assert recs and all("does not match the zoo's SHA-256" in r["error"] for r in recs)
