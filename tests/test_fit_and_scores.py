"""Issue 11: fitted detectors get the ID training outputs (once per model, cached), features only when
declared; every cell keeps its per-sample scores; metrics in both FPR95 conventions; OOD draws."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from pytorch_ood.metrics.functional import fpr_at_tpr as pytorch_ood_fpr_at_tpr

from logitnorm_bench import hookimpl
from logitnorm_bench.cli import main
from logitnorm_bench.components import Detector
from logitnorm_bench.metrics import fpr_at_tpr_ood_positive
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir, atomic_write_json

SEEN: dict[str, list] = {}


class Mahalanobis(Detector):
    """A plugin author's Mahalanobis detector (Lee et al. 2018, no input preprocessing): class means and a
    shared covariance of the penultimate features of the ID *training* set."""

    needs_fit = True
    needs_features = True

    def fit(self, data):
        f, y = data.id_train.features.double(), data.id_train.labels
        classes = y.unique()
        self.means = torch.stack([f[y == c].mean(0) for c in classes])
        centred = f - self.means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / len(f) + 1e-6 * torch.eye(f.shape[1], dtype=f.dtype)
        self.precision = torch.linalg.inv(cov)
        SEEN.setdefault("fit", []).append((data.id_train.labels.shape[0], data.id_train.total))
        return {"classes": len(classes)}

    def score_outputs(self, outputs, model):
        d = outputs.features.double().cpu()[:, None, :] - self.means[None]
        maha = torch.einsum("bkd,de,bke->bk", d, self.precision, d)
        return -maha.min(dim=1).values


class PeeksAtFeatures(Detector):
    """Did not declare needs_features: must never get them, from the shared pass or in fit."""

    needs_fit = True

    def fit(self, data):
        SEEN.setdefault("peek_fit", []).append((data.id_train.features, data.id_val_outputs.features))
        return {}

    def score_outputs(self, outputs, model):
        SEEN.setdefault("peek", []).append(outputs.features)
        return outputs.logits.max(dim=1).values


class FitPlugin:
    @hookimpl
    def register_detectors(self, register):
        register("test_mahalanobis", Mahalanobis, description="test plugin: Mahalanobis on ID train features")
        register("test_peek", PeeksAtFeatures, description="test plugin: no features declared")


@pytest.fixture
def fit_plugin(plugin_env):
    SEEN.clear()
    get_plugins().add(FitPlugin(), name="fit-test-plugin")
    yield
    SEEN.clear()


def _rows(results) -> list[dict]:
    with open(results / "leaderboard.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_plugin_mahalanobis_is_fitted_on_the_id_training_set_and_beats_msp(tmp_path, tiny_suite, fit_plugin,
                                                                             capsys):
    suite = tiny_suite(tmp_path / "t.yaml", epochs=3, loss=["ce"], detector=["msp", "test_mahalanobis", "test_peek"],
                       ood_dataset=["photo_patches", "uniform_noise"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    # Fitted on every training image of the digits' train split, not on 126 validation images.
    ((n, total),) = set(SEEN["fit"])
    assert n == total > 1000
    recs = {(r["detector"], r["ood_dataset"]): r for r in ResultsDir(results).records()}
    facts = recs[("test_mahalanobis", "uniform_noise")]["detector_fit"]["fit_data"]
    assert facts == {"id_train_samples": n, "id_train_total": total, "id_val_samples": 100}
    avg = {r["detector"]: float(r["auroc"]) for r in _rows(results) if r["ood_dataset"] == "average"}
    assert avg["test_mahalanobis"] >= avg["msp"], avg
    # Features were computed for Mahalanobis; the other detector never saw them.
    assert SEEN["peek"] and all(f is None for f in SEEN["peek"])
    assert all(a is None and b is None for a, b in SEEN["peek_fit"])


def test_id_training_outputs_are_computed_once_per_model_and_cached_with_the_run(tmp_path, tiny_suite, fit_plugin,
                                                                                  monkeypatch):
    import logitnorm_bench.evaluation as evaluation

    suite = tiny_suite(tmp_path / "t.yaml", epochs=2, loss=["ce"], detector=["test_mahalanobis", "test_peek"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    (cache,) = results.glob("runs/*/fit-outputs-*.pt")
    first = {r["cell_id"]: r["metrics"] for r in ResultsDir(results).records()}
    # A rerun that must evaluate again reads the training outputs back instead of a new pass over them.
    for p in (results / "records").glob("*.json"):
        p.unlink()
    calls = []
    real = evaluation.forward_pass
    monkeypatch.setattr(evaluation, "forward_pass", lambda m, x, *a, **k: calls.append(len(x)) or real(m, x, *a, **k))
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    assert len(SEEN["fit"]) == 2 and SEEN["fit"][0] == SEEN["fit"][1]
    train_size = SEEN["fit"][0][0]
    assert train_size not in calls, calls  # no pass over the training images the second time
    assert {r["cell_id"]: r["metrics"] for r in ResultsDir(results).records()} == first
    assert list(results.glob("runs/*/fit-outputs-*.pt")) == [cache]


def test_every_cell_keeps_its_scores_and_both_fpr95_conventions_recompute_from_them(tmp_path, tiny_suite, capsys):
    suite = tiny_suite(tmp_path / "t.yaml", epochs=2)
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    rd = ResultsDir(results)
    recs = list(rd.records())
    assert recs and all(r["scores"]["file"] == f"{r['cell_id']}.scores.npz" for r in recs)
    for r in recs:
        s_id, (s_ood,) = rd.read_scores(r)
        assert s_id.dtype == np.float32 and len(s_id) == r["n_id"] and len(s_ood) == r["n_ood"]
        # ID positive (the paper's) and OOD positive (pytorch-ood's FPR95TPR on outlier scores = -score).
        scores = torch.tensor(np.concatenate([s_id, s_ood]), dtype=torch.float64)
        labels = torch.tensor([0] * len(s_id) + [-1] * len(s_ood))
        assert r["metrics"]["fpr95_ood_positive"] == pytest.approx(float(pytorch_ood_fpr_at_tpr(-scores, labels)),
                                                                   abs=1e-12)
        ref = pytorch_ood_fpr_at_tpr(scores, torch.where(labels == 0, -1, 0))  # ID as the "positive" class
        assert r["metrics"]["fpr95"] == pytest.approx(float(ref), abs=1e-12)
    # The leaderboard shows both, side by side, in percent.
    row = _rows(results)[0]
    assert list(row)[7:12] == ["n_seeds", "fpr95", "fpr95_std", "fpr95_ood_positive", "fpr95_ood_positive_std"]


def test_leaderboard_recompute_restores_metrics_from_the_stored_scores(tmp_path, tiny_suite, capsys):
    suite = tiny_suite(tmp_path / "t.yaml", epochs=2, loss=["ce"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    board = (results / "leaderboard.csv").read_bytes()
    path = next((results / "records").glob("*.json"))
    rec = json.loads(path.read_text())
    rec["metrics"]["fpr95"] = 0.123  # a record that parses and is plausible, but wrong
    atomic_write_json(path, rec)
    assert main(["leaderboard", str(results)]) == 0
    assert (results / "leaderboard.csv").read_bytes() != board
    capsys.readouterr()
    assert main(["leaderboard", str(results), "--recompute"]) == 0
    assert "1 changed" in capsys.readouterr().err
    assert (results / "leaderboard.csv").read_bytes() == board
    # A scores file that does not match its record's checksum is not used.
    (results / "records" / rec["scores"]["file"]).write_bytes(b"junk")
    assert main(["leaderboard", str(results), "--recompute"]) == 0
    assert "cannot be read" in capsys.readouterr().err


def test_ood_draws_average_independent_samples_and_keep_every_draw(tmp_path, tiny_suite):
    path = tiny_suite(tmp_path / "t.yaml", epochs=2, loss=["ce"], detector=["msp"], ood_samples=100)
    doc = yaml.safe_load(path.read_text())
    doc["defaults"]["evaluation"]["ood_draws"] = 3
    path.write_text(yaml.safe_dump(doc))
    results = tmp_path / "r"
    assert main(["run", str(path), "--results", str(results), "--device", "cpu"]) == 0
    (rec,) = ResultsDir(results).records()
    assert len(rec["draws"]) == 3 and len({d["auroc"] for d in rec["draws"]}) == 3  # different samples
    for k, v in rec["metrics"].items():
        assert v == pytest.approx(sum(d[k] for d in rec["draws"]) / 3, abs=1e-12)
    _, draws = ResultsDir(results).read_scores(rec)
    assert len(draws) == 3 and not np.array_equal(draws[0], draws[1])


@pytest.mark.parametrize("seed", range(5))
def test_ood_positive_fpr95_equals_pytorch_ood_with_ties(seed):
    rng = np.random.default_rng(seed)
    s_id = rng.integers(0, 8, 300).astype(float)  # heavy ties
    s_ood = rng.integers(-3, 5, 200).astype(float)
    scores = torch.tensor(np.concatenate([s_id, s_ood]))
    labels = torch.tensor([0] * 300 + [-1] * 200)
    assert fpr_at_tpr_ood_positive(s_id, s_ood) == pytest.approx(float(pytorch_ood_fpr_at_tpr(-scores, labels)))
