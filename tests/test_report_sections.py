"""Report sections are plugins: a table from another paper renders with no change to the core."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import doe_report
import pytest

from conftest import write_fake_record
from logitnorm_bench.cli import main
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.report import write_report
from logitnorm_bench.reporting import ReportSection, report_sections

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def record(cell_id: str, detector: str, seed: int, fpr95: float, ood: str = "uniform_noise") -> dict:
    return {"cell_id": cell_id, "run_id": f"run{seed}", "status": "ok", "smoke": False, "id_dataset": "digits",
            "arch": "digits_mlp", "arch_params": {"width": 128}, "loss": "ce", "loss_params": {},
            "detector": detector, "detector_params": {"temperature": 1.0}, "ood_dataset": ood, "seed": seed,
            "metrics": {"fpr95": fpr95, "auroc": 0.9, "aupr_in": 0.9, "aupr_out": 0.9}, "run_metrics": {}}


@pytest.fixture
def with_doe(plugin_env):
    """The process-wide plugins (the built-ins) plus the other paper's section, added in-process."""
    get_plugins().add(doe_report, name="doe_report")


@pytest.fixture
def digits(tmp_path):
    rd = ResultsDir(tmp_path)
    for seed, (msp, energy) in enumerate(((0.20, 0.14), (0.24, 0.18))):
        write_fake_record(rd, record(f"m{seed}", "msp", seed, msp))
        write_fake_record(rd, record(f"e{seed}", "energy", seed, energy))
    return tmp_path


def test_sections_come_from_the_registry_then_the_overview(with_doe):
    names = [name for name, _ in report_sections()]
    assert names == ["doe2024", "logitnorm_paper", "openood_v15", "overview"]
    assert all(isinstance(section, ReportSection) for _, section in report_sections())


def test_another_papers_table_renders_through_the_cli(with_doe, digits, capsys):
    assert main(["tables", str(digits)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Doe et al. (2024): our results vs the paper")
    assert "## Table 2: FPR95 of CE on digits vs uniform noise" in md
    assert "| msp | 22.00±2.83 [2] · 21.00 · +1.00 |" in md
    assert "| energy | 16.00±2.83 [2] · 15.00 · +1.00 |" in md
    assert "LogitNorm (ICML 2022)" not in md and "# Overview of all results" in md  # no CIFAR results
    assert main(["tables", str(digits), "--format", "csv"]) == 0
    rows = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["table"] == "doe_table2"]
    assert [(r["detector"], r["paper"], r["diff"]) for r in rows] == [("msp", "21.0000", "1.0000"),
                                                                     ("energy", "15.0000", "1.0000")]
    text = write_report(digits, digits / "out").read_text(encoding="utf-8")
    assert "<h2 id='doe2024'>Doe et al. (2024): our results vs the paper</h2>" in text
    assert "paper 21.00 · <span class='worse'>Δ +1.00</span>" in text  # FPR95: lower is better


def test_a_section_without_its_results_stays_off(with_doe, tmp_path, capsys):
    write_fake_record(ResultsDir(tmp_path), record("g", "msp", 0, 0.3, ood="gaussian_noise"))
    assert main(["tables", str(tmp_path)]) == 0
    assert "Doe et al." not in capsys.readouterr().out


def test_the_docs_show_the_plugin_as_it_is():
    assert Path(doe_report.__file__).read_text().strip() in DOCS.read_text()
