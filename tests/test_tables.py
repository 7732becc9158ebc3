"""Tests of ``ood-bench tables`` (logitnorm_bench/tables.py) and the paper's Tables 1-9
(plugins/ood_bench_paper/tables.py) on synthetic records with the paper's names."""

from __future__ import annotations

import csv
import io
import pytest
import yaml
from ood_bench_paper.tables import PAPER_OOD_SETS, PAPER_YAML, paper_params

from conftest import write_fake_record
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.reporting import SMOKE_BANNER
from logitnorm_bench.tables import CSV_COLUMNS, NO_TABLES, render_tables

_counter = [0]


def make_record(*, loss="ce", detector="msp", ood="svhn", seed=0, id_dataset="cifar10", arch="wrn40_2",
                loss_params=None, detector_params=None, fpr95=0.5, auroc=0.9, aupr_in=0.95, status="ok",
                smoke=False, id_acc=0.94, ece=0.03, ece_ts=0.01, norm_id=12.0, norm_ood=10.0, **extra) -> dict:
    _counter[0] += 1
    if loss_params is None:
        loss_params = {"logitnorm": {"tau": 0.04}, "logitpenalty": {"lam": 0.05}}.get(loss, {})
    if detector_params is None:
        detector_params = {"odin": {"temperature": 1000.0, "epsilon": 0.0014}}.get(detector, {"temperature": 1.0})
    rec = {
        "cell_id": f"cell{_counter[0]:06d}", "run_id": f"run-{id_dataset}-{arch}-{loss}-{seed}",
        "status": status, "error": None if status == "ok" else "boom", "smoke": smoke,
        "id_dataset": id_dataset, "arch": arch, "arch_params": {}, "loss": loss, "loss_params": loss_params,
        "detector": detector, "detector_params": detector_params, "ood_dataset": ood, "seed": seed,
    }
    if status == "ok":
        rec["metrics"] = {"fpr95": fpr95, "auroc": auroc, "aupr_in": aupr_in, "aupr_out": 0.9}
        rec["run_metrics"] = {"id_acc": id_acc, "ece": ece, "ece_ts": ece_ts, "logit_norm_id": norm_id,
                              "logit_norm_ood": norm_ood}
    rec.update(extra)
    return rec


def write(root, recs) -> ResultsDir:
    rd = ResultsDir(root)
    for r in recs:
        write_fake_record(rd, r)
    return rd


def csv_rows(root) -> list[dict]:
    return list(csv.DictReader(io.StringIO(render_tables(root, fmt="csv"))))


def find(rows, table, **key) -> dict:
    hits = [r for r in rows if r["table"] == table and all(r[k] == v for k, v in key.items())]
    assert len(hits) == 1, f"{table} {key}: {len(hits)} rows"
    return hits[0]


def table_md(md: str, n: int) -> str:
    start = md.index(f"## Table {n}:")
    end = md.find("\n## ", start + 1)
    return md[start:end if end >= 0 else None]


@pytest.fixture
def msp_results(tmp_path):
    """CIFAR-10 WRN-40-2 CE and LogitNorm, MSP, all six OOD sets, seeds 0 and 1."""
    recs = []
    for seed in (0, 1):
        for loss, base in (("ce", 0.40), ("logitnorm", 0.10)):
            for i, ood in enumerate(PAPER_OOD_SETS):
                recs.append(make_record(loss=loss, ood=ood, seed=seed, fpr95=base + 0.01 * i + 0.02 * seed))
    write(tmp_path, recs)
    return tmp_path


def test_ours_paper_and_diff(msp_results):
    rows = csv_rows(msp_results)
    ce = find(rows, "table1", id_dataset="cifar10", loss="ce", detector="msp", ood_dataset="svhn", metric="fpr95")
    ln = find(rows, "table1", id_dataset="cifar10", loss="logitnorm", detector="msp", ood_dataset="svhn",
              metric="fpr95")
    assert float(ce["paper"]) == 50.33 and float(ln["paper"]) == 8.03
    # svhn is the 2nd set (i = 1): seeds give 41 and 43 (CE), 11 and 13 (LogitNorm) percent
    assert float(ce["ours_mean"]) == pytest.approx(42.0) and float(ln["ours_mean"]) == pytest.approx(12.0)
    assert float(ce["ours_std"]) == pytest.approx(1.41421, abs=1e-3)
    assert ce["n_seeds"] == "2" and ce["smoke"] == "false" and ce["variant"] == ""
    assert float(ce["diff"]) == pytest.approx(42.0 - 50.33, abs=1e-3)
    assert float(ln["diff"]) == pytest.approx(12.0 - 8.03, abs=1e-3)
    # the average over the six sets: 40 + 2.5 + 1 = 43.5 for CE
    avg = find(rows, "table1", id_dataset="cifar10", loss="ce", detector="msp", ood_dataset="average", metric="fpr95")
    assert float(avg["ours_mean"]) == pytest.approx(43.5) and float(avg["paper"]) == 49.52

    md = render_tables(msp_results, fmt="md")
    t1 = table_md(md, 1)
    svhn = next(line for line in t1.splitlines() if line.startswith("| SVHN |"))
    assert "42.00±1.41 [2] · 50.33 · -8.33" in svhn
    assert "12.00±1.41 [2] · 8.03 · +3.97" in svhn
    # CIFAR-100 was not run: "—" with the paper's number, never a 0
    assert "| — · 79.09 |" in t1
    c100 = find(rows, "table1", id_dataset="cifar100", loss="ce", detector="msp", ood_dataset="svhn", metric="fpr95")
    assert c100["ours_mean"] == "" and c100["diff"] == "" and c100["n_seeds"] == "0"
    assert "issue #5" in t1 and "LSUN-C" in t1
    assert "issue #5" in table_md(md, 7)
    assert SMOKE_BANNER not in md


def test_every_paper_cell_is_laid_out_with_its_yaml_value(tmp_path):
    write(tmp_path, [make_record(status="failed")])  # a CIFAR-10 record, so the paper's section shows
    doc = yaml.safe_load(PAPER_YAML.read_text(encoding="utf-8"))
    rows = [r for r in csv_rows(tmp_path) if r["table"].startswith("table")]
    assert all(r["paper"] != "" for r in rows), "a layout cell without a paper number"
    assert all(r["ours_mean"] == "" for r in rows)
    assert len(rows) == sum(len(t["cells"]) for t in doc["tables"].values())
    for name, t in doc["tables"].items():
        for c in t["cells"]:
            hit = find(rows, name, id_dataset=c["id_dataset"], arch=c["arch"], loss=c["loss"],
                       detector=c["detector"] or "", ood_dataset=c["ood_dataset"] or "", metric=c["metric"])
            assert float(hit["paper"]) == pytest.approx(float(c["value"]), abs=1e-9)


def test_spot_cells_of_other_tables(tmp_path):
    write(tmp_path, [make_record(status="failed")])
    rows = csv_rows(tmp_path)
    # Table 2 prints its own CIFAR-100 LogitNorm MSP average, unlike Table 1
    assert float(find(rows, "table2", id_dataset="cifar100", loss="logitnorm", detector="msp",
                      metric="fpr95")["paper"]) == 58.35
    assert float(find(rows, "table1", id_dataset="cifar100", loss="logitnorm", detector="msp",
                      ood_dataset="average", metric="fpr95")["paper"]) == 58.49
    # Table 6: LogitNorm is compared with MSP (the yaml's note), GODIN with its own score
    t6 = [r for r in rows if r["table"] == "table6" and r["metric"] == "fpr95"]
    assert {(r["loss"], r["detector"], float(r["paper"])) for r in t6} == {("godin", "godin", 25.24),
                                                                           ("logitnorm", "msp", 15.65)}
    assert float(find(rows, "table4", id_dataset="cifar100", loss="logitnorm", metric="ece_ts")["paper"]) == 1.67
    assert float(find(rows, "table5", loss="logitpenalty", metric="logit_norm_ood")["paper"]) == 1.74
    assert float(find(rows, "table3", arch="densenet_bc", loss="ce", metric="id_acc")["paper"]) == 94.55


def test_run_metrics_tables_3_4_5(tmp_path):
    recs = []
    for loss, acc, norm_id in (("ce", 0.95, 12.5), ("logitpenalty", 0.93, 1.9), ("logitnorm", 0.944, 1.5)):
        for ood in PAPER_OOD_SETS:
            recs.append(make_record(loss=loss, ood=ood, id_acc=acc, norm_id=norm_id,
                                    norm_ood=0.5 if ood == "svhn" else 99.0))
    write(tmp_path, recs)
    rows = csv_rows(tmp_path)
    acc = find(rows, "table3", arch="wrn40_2", loss="ce", metric="id_acc")
    assert float(acc["ours_mean"]) == pytest.approx(95.0) and float(acc["paper"]) == 94.75
    assert float(find(rows, "table4", id_dataset="cifar10", loss="ce", metric="ece")["ours_mean"]) == pytest.approx(3.0)
    norm = find(rows, "table5", loss="logitpenalty", metric="logit_norm_id")
    assert float(norm["ours_mean"]) == pytest.approx(1.9)  # raw norm, not percent
    assert float(find(rows, "table5", loss="logitnorm", metric="logit_norm_ood")["ours_mean"]) == pytest.approx(0.5)
    assert float(find(rows, "table5", loss="logitpenalty", metric="fpr95")["ours_mean"]) == pytest.approx(50.0)
    # CIFAR-100 ECE was not run
    assert find(rows, "table4", id_dataset="cifar100", loss="ce", metric="ece")["ours_mean"] == ""


def test_smoke_marks_every_table_and_cell(tmp_path):
    write(tmp_path, [make_record(loss="ce", ood=o, smoke=True) for o in PAPER_OOD_SETS])
    md = render_tables(tmp_path, fmt="md")
    for n in range(1, 10):
        heading = next(line for line in table_md(md, n).splitlines() if line.startswith("## Table"))
        assert SMOKE_BANNER in heading
    assert "50.00 [1] (smoke) · 50.33" in table_md(md, 1)
    rows = csv_rows(tmp_path)
    assert find(rows, "table1", id_dataset="cifar10", loss="ce", ood_dataset="svhn", metric="fpr95")["smoke"] == "true"


def test_real_results_beat_smoke_ones(tmp_path):
    write(tmp_path, [make_record(loss="ce", ood="svhn", smoke=True, fpr95=0.9),
                     make_record(loss="ce", ood="svhn", fpr95=0.3)])
    rows = csv_rows(tmp_path)
    cell = find(rows, "table1", id_dataset="cifar10", loss="ce", ood_dataset="svhn", metric="fpr95")
    assert float(cell["ours_mean"]) == pytest.approx(30.0) and cell["smoke"] == "false"
    assert SMOKE_BANNER not in render_tables(tmp_path, fmt="md")


def test_paper_params_preferred_else_variant_shown(tmp_path):
    write(tmp_path, [make_record(loss="logitnorm", ood="svhn", loss_params={"tau": 0.04}, fpr95=0.1),
                     make_record(loss="logitnorm", ood="svhn", loss_params={"tau": 0.1}, fpr95=0.3, seed=1),
                     make_record(loss="logitnorm", ood="svhn", loss_params={"tau": 0.1}, fpr95=0.3, seed=2),
                     make_record(loss="logitnorm", ood="isun", loss_params={"tau": 0.1}, fpr95=0.2),
                     make_record(loss="logitnorm", detector="energy", ood="svhn", detector_params={"temperature": 1.0},
                                 fpr95=0.6),
                     make_record(loss="logitnorm", detector="energy", ood="svhn", detector_params={"temperature": 0.1},
                                 fpr95=0.2)])
    rows = csv_rows(tmp_path)
    svhn = find(rows, "table1", id_dataset="cifar10", loss="logitnorm", ood_dataset="svhn", metric="fpr95")
    assert float(svhn["ours_mean"]) == pytest.approx(10.0) and svhn["variant"] == ""  # tau 0.04 despite fewer seeds
    isun = find(rows, "table1", id_dataset="cifar10", loss="logitnorm", ood_dataset="isun", metric="fpr95")
    assert float(isun["ours_mean"]) == pytest.approx(20.0) and isun["variant"] == "tau=0.1"
    assert "{tau=0.1}" in table_md(render_tables(tmp_path, fmt="md"), 1)
    energy = find(rows, "table7", id_dataset="cifar10", loss="logitnorm", detector="energy", ood_dataset="svhn",
                  metric="fpr95")
    assert float(energy["ours_mean"]) == pytest.approx(20.0) and energy["variant"] == ""
    assert paper_params("cifar100", "logitnorm", "energy") == ({}, {"temperature": 0.01})


def test_partial_average_and_failed_cells_are_missing(tmp_path):
    write(tmp_path, [make_record(loss="ce", ood=o) for o in ("svhn", "isun", "textures")]
          + [make_record(loss="logitnorm", ood="svhn", status="failed")])
    rows = csv_rows(tmp_path)
    avg = find(rows, "table1", id_dataset="cifar10", loss="ce", ood_dataset="average", metric="fpr95")
    assert avg["ours_mean"] == "" and avg["note"] == "only 3/6 OOD sets"
    failed = find(rows, "table1", id_dataset="cifar10", loss="logitnorm", ood_dataset="svhn", metric="fpr95")
    assert failed["ours_mean"] == "" and "failed" in failed["note"]
    md = table_md(render_tables(tmp_path, fmt="md"), 1)
    assert "— (only 3/6 OOD sets) · 49.52" in md and "— (1 failed) · 8.03" in md


def test_csv_parses(msp_results):
    pd = pytest.importorskip("pandas")
    text = render_tables(msp_results, fmt="csv")
    df = pd.read_csv(io.StringIO(text))
    assert tuple(df.columns) == CSV_COLUMNS
    for col in ("table", "row", "column", "ours_mean", "ours_std", "n_seeds", "paper", "diff", "smoke"):
        assert col in df.columns
    paper = df[df["table"].str.startswith("table")]
    ok = paper[paper["ours_mean"].notna()]
    # CE + LogitNorm, CIFAR-10 WRN-40-2 MSP: Table 1 (7 rows x 3 metrics), Table 2 MSP row, Table 3
    # WRN-40-2 (+ ID acc), Table 4 CIFAR-10 (ECE x 2), Table 5 (+ 2 logit norms), Table 6 LogitNorm
    assert len(ok) == 2 * 7 * 3 + 2 * 3 + 2 * 4 + 2 * 2 + 2 * 5 + 3
    assert ((ok["diff"] - (ok["ours_mean"] - ok["paper"])).abs() < 1e-3).all()
    assert set(df["table"]) >= {f"table{i}" for i in range(1, 10)}


def test_empty_folder_and_other_datasets(tmp_path):
    # No results: no section has anything to show (the paper's tables need CIFAR results).
    assert render_tables(tmp_path, fmt="md") == NO_TABLES + "\n"
    assert csv_rows(tmp_path) == []
    write(tmp_path, [make_record(id_dataset="digits", arch="digits_mlp", ood=o, loss=loss)
                     for o in ("noise", "photos") for loss in ("ce", "logitnorm")])
    md = render_tables(tmp_path, fmt="md")
    # The overview's leaderboard, and no empty paper tables beside it.
    assert "Leaderboard: digits (ID)" in md and "digits (ID), digits_mlp" in md
    assert "logitnorm(tau=0.04) + msp(temperature=1)" in md
    assert "## Table" not in md and "LogitNorm (ICML 2022)" not in md
    assert {r["table"] for r in csv_rows(tmp_path)} == {"leaderboard_digits"}
    # Beside CIFAR results the paper's nine tables come first, then the leaderboard of every ID dataset.
    write(tmp_path, [make_record(ood="svhn")])
    md = render_tables(tmp_path, fmt="md")
    assert md.startswith("# LogitNorm (ICML 2022)") and md.count("## Table") == 9
    assert md.index("## Table 9") < md.index("Leaderboard: cifar10 (ID)") < md.index("Leaderboard: digits (ID)")
    with pytest.raises(ValueError):
        render_tables(tmp_path, fmt="xml")


def test_cli_tables(msp_results, capsys):
    from logitnorm_bench.cli import main

    assert main(["tables", str(msp_results)]) == 0
    assert "## Table 1:" in capsys.readouterr().out
    assert main(["tables", str(msp_results), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("table,row,column")
