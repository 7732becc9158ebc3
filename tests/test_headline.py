"""The headline commands end to end (slow; CI runs them): the bundled quick suite and the paper smoke."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from logitnorm_bench.cli import DEFAULT_SUITE, main
from logitnorm_bench.records import ResultsDir

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_suite_trains_every_loss_well_above_chance(tmp_path, capsys):
    results = tmp_path / "quick"
    assert main(["run", "--results", str(results)]) == 0  # no suite: the bundled quick suite
    records = list(ResultsDir(results).records())
    assert len(records) == 204 and all(r["status"] == "ok" for r in records)
    assert all(r["suite"] == "quick" for r in records) and DEFAULT_SUITE == "quick"
    for r in records:  # chance is 10% (digits) or 20% (digits_0to4)
        assert r["run_metrics"]["id_acc"] > 0.9, (r["loss"], r["seed"], r["run_metrics"]["id_acc"])
    rows = list(csv.DictReader(open(results / "leaderboard.csv")))
    assert {r["loss"] for r in rows} == {"ce", "logitnorm", "logitpenalty", "godin"}
    assert {r["detector"] for r in rows} == {"msp", "odin", "energy", "gradnorm", "godin"}
    assert all(r["n_seeds"] == "3" for r in rows)
    capsys.readouterr()
    assert main(["run", "--results", str(results)]) == 0
    assert "nothing left to do, every cell has its record" in capsys.readouterr().out  # issue 12 item 21


def test_paper_smoke_fills_every_cell_of_tables_1_to_9(tmp_path, capsys):
    results = tmp_path / "smoke"
    assert main(["run", str(REPO / "suites" / "paper.yaml"), "--smoke", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "trained 50 run(s); 660 record(s) ok, 0 failed" in out and "SMOKE MODE" in out
    assert all(r["smoke"] for r in ResultsDir(results).records())
    assert main(["tables", str(results)]) == 0
    tables = capsys.readouterr().out
    for n in range(1, 10):
        assert f"## Table {n}:" in tables
    cells = [c.strip() for line in tables.splitlines() if line.startswith("| ") and "·" in line
             for c in line.split("|")[2:-1]]
    assert len(cells) > 400
    missing = [c for c in cells if c.startswith("—")]
    assert not missing, missing[:5]
    assert all("(smoke)" in c for c in cells)
    assert len(re.findall(r"SMOKE — numbers mean nothing", tables)) >= 9
    assert main(["report", str(results)]) == 0
    page = (results / "report" / "index.html").read_text()
    assert "SMOKE" in page and ".png" in page
