"""Smoke mode is a wiring check that can fail: its LogitNorm cells are not degenerate (issue 12 item 22)."""

from __future__ import annotations

from logitnorm_bench.cli import main
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.smoke import LR_FACTOR, SIZES


def test_smoke_logitnorm_on_wrn40_2_keeps_msp_scores_apart(tmp_path, tiny_suite):
    """At the paper's lr, 4 smoke steps blew WRN-40-2's raw logits up to ~1e6-1e7 (eval mode): every MSP
    score was exactly 1, AUROC exactly 50.00 and Figure 4's histogram one bar."""
    suite = tiny_suite(tmp_path / "s.yaml", name="s", id_dataset=["cifar10"], arch=["wrn40_2"], arch_params=[{}],
                       loss=["logitnorm"], loss_params=[{"tau": 0.04}], detector=["msp"], ood_dataset=["svhn"])
    doc = suite.read_text().replace("lr: 0.05", "lr: 0.1").replace("batch_size: 64", "batch_size: 128")
    suite.write_text(doc)  # the paper's recipe: smoke makes it 4 steps of 16 images at lr 0.1 * LR_FACTOR
    assert main(["run", str(suite), "--smoke", "--results", str(tmp_path / "r")]) == 0
    (rec,) = ResultsDir(tmp_path / "r").records()
    assert rec["train"]["lr"] == 0.1 * LR_FACTOR and rec["n_id"] == SIZES["test"]
    assert rec["run_metrics"]["logit_norm_id"] < 1e3, rec["run_metrics"]["logit_norm_id"]
    assert rec["metrics"]["auroc"] != 0.5
    assert sum(c > 0 for c in rec["score_hist"]["id"]) > 1  # Figure 4: more than one bar


def test_smoke_wires_ood_draws_with_two_different_samples(tmp_path, tiny_suite):
    """The paper's 10 draws become SMOKE_DRAWS (2) in smoke: each a different sample, averaged as usual."""
    import json

    import yaml

    from logitnorm_bench.smoke import SMOKE_DRAWS

    path = tiny_suite(tmp_path / "s.yaml", loss=["ce"], detector=["msp"], ood_dataset=["uniform_noise"])
    doc = yaml.safe_load(path.read_text())
    doc["defaults"]["evaluation"].update(ood_draws=10, ood_samples=2000)
    path.write_text(yaml.safe_dump(doc))
    results = tmp_path / "r"
    assert main(["-q", "run", str(path), "--smoke", "--results", str(results), "--device", "cpu"]) == 0
    (rec,) = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert len(rec["draws"]) == SMOKE_DRAWS == 2
    _, draws = ResultsDir(results).read_scores(rec)
    assert len(draws) == 2 and len(draws[0]) == len(draws[1]) < 24 and list(draws[0]) != list(draws[1])
