"""Tests of ``ood-bench report`` (logitnorm_bench/report.py) on the paper's results: its Figures 1, 4, 5
(plugins/ood_bench_paper/figures.py), the overview's figures beside them, and the HTML page."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ood_bench_paper.tables import PAPER_OOD_SETS

from conftest import write_fake_record
from logitnorm_bench.figures import rebin
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.report import write_report
from logitnorm_bench.reporting import SMOKE_BANNER

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_counter = [0]


def record(*, loss="ce", detector="msp", ood="svhn", seed=0, tau=0.04, fpr95=0.5, smoke=False, hist=True,
           id_dataset="cifar10", arch="wrn40_2", status="ok") -> dict:
    _counter[0] += 1
    rec = {"cell_id": f"rep{_counter[0]:06d}", "run_id": f"run-{loss}-{tau}-{seed}", "status": status,
           "smoke": smoke, "id_dataset": id_dataset, "arch": arch, "arch_params": {}, "loss": loss,
           "loss_params": {"tau": tau} if loss == "logitnorm" else {}, "detector": detector,
           "detector_params": {"temperature": 1.0}, "ood_dataset": ood, "seed": seed,
           "train": {"monitor_ood": "svhn"}}
    if status != "ok":
        return dict(rec, error="boom")
    rec["metrics"] = {"fpr95": fpr95, "auroc": 0.9, "aupr_in": 0.95, "aupr_out": 0.9}
    rec["run_metrics"] = {"id_acc": 0.94, "ece": 0.03, "ece_ts": 0.01, "logit_norm_id": 12.0, "logit_norm_ood": 9.0}
    if hist:
        lo = 0.1 + 0.01 * seed  # different edges per seed: the figure re-bins them
        edges = np.linspace(lo, 1.0, 31).tolist()
        ident = [0] * 25 + [1, 2, 5, 20, 100]
        ood_c = ([30, 20, 10] + [2] * 27) if loss == "logitnorm" else ([0] * 20 + [5] * 10)
        rec["score_hist"] = {"edges": edges, "id": ident, "ood": ood_c}
    return rec


def run_info(loss: str, seed: int, tau: float = 0.04, smoke: bool = False, epochs: int = 5) -> dict:
    grow = 3.0 if loss == "ce" else 0.2
    return {"status": "trained",
            "run": {"id_dataset": "cifar10", "arch": "wrn40_2", "loss": loss,
                    "loss_params": {"tau": tau} if loss == "logitnorm" else {}, "seed": seed, "smoke": smoke,
                    "train": {"monitor_ood": "svhn"}},
            "history": [{"epoch": e, "loss": 1.0 / e, "train_acc": 0.5, "lr": 0.1, "seconds": 1.0,
                         "logit_norm_id": 1.0 + grow * e, "logit_norm_ood": 0.5 + grow * e / 2}
                        for e in range(1, epochs + 1)]}


@pytest.fixture
def full(tmp_path):
    rd = ResultsDir(tmp_path / "res")
    for seed in (0, 1):
        for loss, tau, f in (("ce", 0.04, 0.45), ("logitnorm", 0.04, 0.12), ("logitnorm", 0.01, 0.2),
                             ("logitnorm", 0.1, 0.3)):
            for ood in PAPER_OOD_SETS:
                write_fake_record(rd, record(loss=loss, tau=tau, ood=ood, seed=seed, fpr95=f + 0.01 * seed))
            rd.write_run(f"run-{loss}-{tau}-{seed}", run_info(loss, seed, tau))
    return tmp_path / "res"


def test_report_writes_page_and_figures(full, tmp_path):
    page = write_report(full, tmp_path / "out")
    assert page == tmp_path / "out" / "index.html" and page.is_file()
    text = page.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["fig1_cifar10_wrn40_2.png", "fig4_cifar10_wrn40_2.png", "fig5_cifar10_wrn40_2.png",
                    "scores_cifar10_wrn40_2.png", "sweep_cifar10_loss_logitnorm_tau.png",
                    "training_cifar10_wrn40_2.png"]
    for name in pngs:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"src='{name}'" in text  # relative path
    assert not re.search(r"src='/", text)
    # the tables as HTML, with the paper's numbers
    assert text.count("<table>") >= 9 and "paper 50.33" in text and "paper 8.03" in text
    assert "Table 9" in text and "<b>Figure 1</b>: skipped" not in text
    assert SMOKE_BANNER not in text
    assert (tmp_path / "out" / "tables.md").read_text().startswith("# LogitNorm")
    assert (tmp_path / "out" / "tables.csv").read_text().startswith("table,row,column")


def test_default_out_dir_and_cli(full, capsys):
    from logitnorm_bench.cli import main

    assert main(["report", str(full)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(full / "report" / "index.html")
    assert (full / "report" / "fig4_cifar10_wrn40_2.png").is_file()


def test_empty_results_folder(tmp_path):
    page = write_report(tmp_path, None)
    text = page.read_text(encoding="utf-8")
    assert page.parent == tmp_path / "report"
    assert not list(page.parent.glob("*.png"))
    # No section has results to show: no figure, no table, and the page says so.
    assert "<table>" not in text and "class='skipped'" not in text and "Nothing to show" in text


def test_paper_results_not_run_yet_show_as_missing(tmp_path):
    write_fake_record(ResultsDir(tmp_path), record(status="failed"))
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    for fig in ("Figure 1", "Figure 4", "Figure 5"):
        assert f"<b>{fig}</b>: skipped" in text
    assert "<table>" in text and "— ·" not in text  # html cells, ours missing shown as —
    assert "<b>—</b>" in text and "paper 50.33" in text


def test_missing_pieces_do_not_crash(tmp_path):
    rd = ResultsDir(tmp_path)
    write_fake_record(rd, record(loss="ce", hist=False))  # no score_hist
    write_fake_record(rd, record(loss="logitnorm", status="failed"))
    write_fake_record(rd, record(loss="logitnorm", detector="energy"))  # histograms of a non-MSP score
    rd.write_run("broken", {"status": "failed", "run": {"loss": "ce"}})  # no history
    (tmp_path / "runs" / "corrupt").mkdir()
    (tmp_path / "runs" / "corrupt" / "run.json").write_text("{not json")
    rd.write_run("nonorm", {"status": "trained", "run": {"id_dataset": "cifar10", "arch": "wrn40_2", "loss": "ce"},
                            "history": [{"epoch": 1, "loss": 2.0}]})
    page = write_report(tmp_path, tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    assert not list((tmp_path / "out").glob("fig*.png"))  # no paper figure; the overview draws what it can
    assert text.count("<p class='skipped'>") == 3


def test_only_one_loss_still_draws(tmp_path):
    rd = ResultsDir(tmp_path)
    write_fake_record(rd, record(loss="logitnorm", ood="svhn"))
    rd.write_run("ln", run_info("logitnorm", 0))
    write_report(tmp_path, tmp_path / "out")
    assert (tmp_path / "out" / "fig4_cifar10_wrn40_2.png").is_file()
    assert (tmp_path / "out" / "fig1_cifar10_wrn40_2.png").is_file()
    assert not (tmp_path / "out" / "fig5_cifar10_wrn40_2.png").exists()  # one tau only


def test_smoke_banner(tmp_path):
    rd = ResultsDir(tmp_path)
    for loss in ("ce", "logitnorm"):
        write_fake_record(rd, record(loss=loss, smoke=True))
        rd.write_run(f"s-{loss}", run_info(loss, 0, smoke=True))
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    assert "class='banner'" in text and SMOKE_BANNER in text
    assert "(SMOKE)" in text and "(smoke)" in text


def test_rebin_keeps_mass():
    edges = np.linspace(0.2, 0.8, 7)
    counts = [1, 2, 3, 4, 5, 6]
    out = rebin(edges, counts, np.linspace(0, 1, 41))
    assert out.sum() == pytest.approx(21)
    assert out[:8].sum() == 0 and out[32:].sum() == 0
