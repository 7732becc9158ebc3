"""The overview (logitnorm_bench/overview.py): the report of any suite, here one shaped like the quick suite."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest

from conftest import write_fake_record
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.report import write_report
from logitnorm_bench.tables import render_tables

FAR_OOD = ("gaussian_noise", "photo_patches", "uniform_noise")
FPR95 = {"ce": 0.20, "logitnorm": 0.10}  # + 0.01 per OOD set and per seed; energy is 0.05 better
_counter = [0]


def record(*, loss="ce", tau=0.04, detector="msp", temperature=1.0, ood="gaussian_noise", seed=0,
           id_dataset="digits", smoke=False) -> dict:
    _counter[0] += 1
    loss_params = {"tau": tau} if loss == "logitnorm" else {}
    fpr95 = FPR95[loss] + 0.01 * (FAR_OOD.index(ood) if ood in FAR_OOD else 0) + 0.01 * seed \
        - (0.05 if detector == "energy" else 0.0) + (tau - 0.04 if loss == "logitnorm" else 0.0)
    lo = 0.5 + 0.1 * seed  # other edges per seed: the histograms are re-binned
    return {"cell_id": f"ov{_counter[0]:06d}", "run_id": f"{id_dataset}-{loss}-{tau}-{seed}", "status": "ok",
            "suite": "quick", "smoke": smoke, "id_dataset": id_dataset, "arch": "digits_mlp",
            "arch_params": {"width": 128}, "loss": loss, "loss_params": loss_params, "detector": detector,
            "detector_params": {"temperature": temperature}, "ood_dataset": ood, "seed": seed,
            "train": {"monitor_ood": "photo_patches"},
            "metrics": {"fpr95": fpr95, "auroc": 1 - fpr95 / 2, "aupr_in": 0.9, "aupr_out": 0.8},
            "run_metrics": {"id_acc": 0.99 - seed / 100, "ece": 0.03, "ece_ts": 0.01, "logit_norm_id": 7.0,
                            "logit_norm_ood": 5.0},
            "score_hist": {"edges": np.linspace(lo, lo + 10.0, 31).tolist(), "id": [0] * 20 + [3] * 10,
                           "ood": [3] * 10 + [0] * 20}}


def run(loss: str, seed: int, id_dataset="digits", tau=0.04, norms=True) -> dict:
    history = [{"epoch": e, "loss": 2.0 / e, "train_acc": 1 - 0.5 / e, "lr": 0.05, "seconds": 0.1}
               | ({"logit_norm_id": 1.0 + e, "logit_norm_ood": 0.5 + e} if norms else {}) for e in range(1, 6)]
    return {"status": "trained", "history": history,
            "run": {"id_dataset": id_dataset, "arch": "digits_mlp", "arch_params": {"width": 128}, "loss": loss,
                    "loss_params": {"tau": tau} if loss == "logitnorm" else {}, "seed": seed, "smoke": False,
                    "train": {"monitor_ood": "photo_patches"}}}


@pytest.fixture
def quick(tmp_path):
    """The quick suite's shape: digits against three far-OOD sets, digits_0to4 against digits_5to9,
    CE and LogitNorm, MSP and energy (T = 0.1 for LogitNorm only, as the quick suite chooses), 2 seeds."""
    rd = ResultsDir(tmp_path / "res")
    for seed in (0, 1):
        for loss in ("ce", "logitnorm"):
            for detector, t in (("msp", 1.0), ("energy", 0.1 if loss == "logitnorm" else 1.0)):
                for ood in FAR_OOD:
                    write_fake_record(rd, record(loss=loss, detector=detector, temperature=t, ood=ood, seed=seed))
                write_fake_record(rd, record(loss=loss, detector=detector, temperature=t, ood="digits_5to9", seed=seed,
                                       id_dataset="digits_0to4"))
            for id_dataset in ("digits", "digits_0to4"):
                rd.write_run(f"{id_dataset}-{loss}-{seed}", run(loss, seed, id_dataset))
    return tmp_path / "res"


def png_names(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_quick_style_results_give_a_page_about_that_suite(quick, tmp_path):
    page = write_report(quick, tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    assert "<title>ood-bench report: quick</title>" in text and "<h1>ood-bench report: quick</h1>" in text
    assert "Table 1" not in text and "LogitNorm (ICML 2022)" not in text and "class='paper'" not in text
    assert "Leaderboard: digits (ID)" in text and "Leaderboard: digits_0to4 (ID)" in text
    # Histograms and training curves per ID dataset; no sweep: energy's temperature is fixed per loss.
    assert png_names(tmp_path / "out") == [
        "scores_digits_0to4_digits_mlp_width_128.png", "scores_digits_digits_mlp_width_128.png",
        "training_digits_0to4_digits_mlp_width_128.png", "training_digits_digits_mlp_width_128.png"]
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert sorted(srcs) == png_names(tmp_path / "out")  # relative paths, every file on the page
    assert (tmp_path / "out" / "tables.md").read_text().startswith("# Overview of all results")


def test_leaderboard_columns_and_ranking_come_from_the_catalogue(quick):
    md = render_tables(quick)
    assert "Metrics in percent, except L2 norm ID, L2 norm OOD (raw)." in md
    digits = md[md.index("**digits (ID), digits_mlp(width=128): OOD detection**"):]
    header = digits.splitlines()[2]
    assert header == ("| | FPR95↓ gaussian_noise | FPR95↓ photo_patches | FPR95↓ uniform_noise | FPR95↓ average "
                      "| FPR95 (OOD+)↓ average | AUROC↑ average | AUPR↑ average | AUPR-Out↑ average |")
    rows = [line.split(" | ")[0][2:] for line in digits.splitlines()[4:8]]
    # Ranked by average FPR95, best (lowest) first: LogitNorm + energy 6.5, LogitNorm + MSP 11.5, ...
    assert rows == ["logitnorm(tau=0.04) + energy(temperature=0.1)", "logitnorm(tau=0.04) + msp(temperature=1)",
                    "ce + energy(temperature=1)", "ce + msp(temperature=1)"]
    assert "| logitnorm(tau=0.04) + energy(temperature=0.1) | 5.50±0.71 [2] | 6.50±0.71 [2] | 7.50±0.71 [2] " \
           "| 6.50±0.71 [2] |" in digits
    near = md[md.index("**digits_0to4 (ID), digits_mlp(width=128): OOD detection**"):]
    assert near.splitlines()[2] == "| | FPR95↓ digits_5to9 | FPR95 (OOD+)↓ digits_5to9 | AUROC↑ digits_5to9 | AUPR↑ digits_5to9 | AUPR-Out↑ digits_5to9 |"
    models = md[md.index("**digits (ID), digits_mlp(width=128): trained models**"):]
    assert models.splitlines()[2] == "| | ID Acc↑ | ECE w/o TS↓ | ECE w/ TS↓ | L2 norm ID↓ | L2 norm OOD↓ |"
    assert "| ce | 98.50±0.71 [2] | 3.00±0.00 [2] | 1.00±0.00 [2] | 7.00±0.00 [2] | 5.00±0.00 [2] |" in models
    rows = list(csv.DictReader(io.StringIO(render_tables(quick, fmt="csv"))))
    assert {r["table"] for r in rows} == {"leaderboard_digits", "leaderboard_digits_0to4"}
    assert all(r["paper"] == "" and r["diff"] == "" for r in rows)


def test_a_parameter_run_with_several_values_gets_a_sweep_figure(quick, tmp_path):
    rd = ResultsDir(quick)
    for seed in (0, 1):
        for ood in FAR_OOD:
            write_fake_record(rd, record(loss="logitnorm", tau=0.1, ood=ood, seed=seed))  # a second tau, MSP
            write_fake_record(rd, record(loss="logitnorm", detector="energy", temperature=1.0, ood=ood, seed=seed))
            for mode in ("a", "b"):  # a parameter that is not a number: one tick per value
                write_fake_record(rd, dict(record(ood=ood, seed=seed, id_dataset="digits_0to4"), loss_params={"mode": mode}))
    text = write_report(quick, tmp_path / "out").read_text(encoding="utf-8")
    sweeps = [n for n in png_names(tmp_path / "out") if n.startswith("sweep_")]
    assert sweeps == ["sweep_digits_0to4_loss_ce_mode.png", "sweep_digits_detector_energy_temperature.png",
                      "sweep_digits_loss_logitnorm_tau.png"]
    assert "<b>Sweep of logitnorm tau</b>" in text and "(0.04, 0.1)" in text
    assert "<b>Sweep of energy temperature</b>" in text and "(0.1, 1)" in text
    assert "<b>Sweep of ce mode</b>" in text and "(a, b)" in text


def test_histograms_and_curves_draw_what_there_is(tmp_path):
    rd = ResultsDir(tmp_path)
    write_fake_record(rd, record(ood="photo_patches"))
    write_fake_record(rd, record(ood="photo_patches", seed=1))  # the OOD set with the most histograms is drawn
    write_fake_record(rd, record(ood="gaussian_noise", seed=1))
    write_fake_record(rd, dict(record(ood="uniform_noise"), score_hist=None))  # no histogram
    write_fake_record(rd, record(ood="photo_patches", smoke=True, loss="logitnorm"))  # hidden by the real ones
    rd.write_run("ce", run("ce", 0, norms=False))  # loss and accuracy, no logit norms
    text = write_report(tmp_path, tmp_path / "out").read_text(encoding="utf-8")
    assert png_names(tmp_path / "out") == ["scores_digits_digits_mlp_width_128.png",
                                           "training_digits_digits_mlp_width_128.png"]
    assert "vs OOD (photo_patches) images" in text and "<b>Score histograms</b> (SMOKE)" not in text
    # No seed has every OOD set, so no average; the run metrics come from the OOD sets' rows.
    assert "<tr><th>ce</th><td>98.50±0.71 [2]</td>" in text
