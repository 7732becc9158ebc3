"""Checks of the transcription of the LogitNorm paper's Tables 1-9.

Data: ``plugins/ood_bench_paper/paper_tables.yaml`` (see its header for conventions).
Fast and offline; the cross-check against the paper's text is skipped when the text
file is not present.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "plugins" / "ood_bench_paper" / "paper_tables.yaml"
# The paper's text lies in shared/ beside the checkout (also in CI); the check is skipped without it.
PAPER_TXT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "logitnorm-icml2022.txt"

KEY_FIELDS = ("id_dataset", "arch", "loss", "detector", "ood_dataset", "metric")
REQUIRED = KEY_FIELDS + ("value",)
OPTIONAL = ("std",)

ID_DATASETS = {"cifar10", "cifar100"}
ARCHS = {"wrn40_2", "resnet34", "densenet_bc"}
LOSSES = {"ce", "logitnorm", "logitpenalty", "godin"}
DETECTORS = {"msp", "odin", "energy", "gradnorm", "godin"}
OOD_SETS = ("textures", "svhn", "lsun_c", "lsun_r", "isun", "places365")
OOD_DATASETS = set(OOD_SETS) | {"average"}
OOD_METRICS = {"fpr95", "auroc", "aupr_in"}
PERCENT_METRICS = OOD_METRICS | {"id_acc", "ece", "ece_ts"}
RAW_METRICS = {"logit_norm_id", "logit_norm_ood"}  # L2 norms, not percentages
ID_ONLY_METRICS = {"id_acc", "ece", "ece_ts", "logit_norm_id"}

# Cell counts computed from the paper's layout.
EXPECTED_COUNTS = {
    "table1": 2 * 7 * 3 * 2,  # 2 ID sets x (6 OOD sets + average) x 3 metrics x CE/LogitNorm
    "table2": 2 * 4 * 3 * 2,  # 2 ID sets x 4 scores x 3 metrics x 2 losses
    "table3": 3 * 4 * 2,  # 3 archs x (ID acc + 3 metrics) x 2 losses
    "table4": 2 * 2 * 2,  # 2 ID sets x (w/o TS, w/ TS) x 2 losses
    "table5": 3 * (3 + 2),  # 3 losses x (3 metrics + L2 norm ID/OOD)
    "table6": 2 * 3,  # GODIN, LogitNorm x 3 metrics
    "table7": 6 * 3 * 2 * 3 * 2,  # 6 OOD sets x 3 scores x 2 ID sets x 3 metrics x 2 losses
    "table8": 6 * 2 * 3 * 2,  # 6 OOD sets x 2 archs x 3 metrics x 2 losses
    "table9": 6 * 2 * 3,  # 6 OOD sets x (LogitPenalty, GODIN) x 3 metrics
}

# Rounding: per-set values and printed averages both have 2 decimals.
ROUNDING_TOL = 0.01 + 1e-9


@pytest.fixture(scope="module")
def doc():
    with DATA.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def tables(doc):
    return doc["tables"]


def key_of(cell):
    return tuple(cell[k] for k in KEY_FIELDS)


def find(tables, table, **kw):
    hits = [c for c in tables[table]["cells"] if all(c[k] == v for k, v in kw.items())]
    assert len(hits) == 1, f"{table} {kw}: {len(hits)} matches"
    return hits[0]["value"]


@pytest.fixture(scope="module")
def by_key(tables):
    out = defaultdict(list)
    for name, t in tables.items():
        for c in t["cells"]:
            out[key_of(c)].append((name, c["value"]))
    return out


def test_top_level(doc):
    assert set(doc["tables"]) == set(EXPECTED_COUNTS)
    for name, t in doc["tables"].items():
        assert isinstance(t.get("title"), str) and t["title"], name
        assert isinstance(t.get("duplicates"), str), name
        assert isinstance(t.get("cells"), list), name
    assert set(doc["percent_metrics"]) == PERCENT_METRICS
    assert set(doc["raw_metrics"]) == RAW_METRICS


def test_cells_have_required_keys_and_allowed_names(tables):
    for name, t in tables.items():
        for c in t["cells"]:
            assert set(REQUIRED) <= set(c) <= set(REQUIRED) | set(OPTIONAL), (name, c)
            assert c["id_dataset"] in ID_DATASETS, (name, c)
            assert c["arch"] in ARCHS, (name, c)
            assert c["loss"] in LOSSES, (name, c)
            assert c["metric"] in PERCENT_METRICS | RAW_METRICS, (name, c)
            if c["metric"] in ID_ONLY_METRICS:
                assert c["detector"] is None and c["ood_dataset"] is None, (name, c)
            elif c["metric"] == "logit_norm_ood":
                assert c["detector"] is None and c["ood_dataset"] == "svhn", (name, c)
            else:
                assert c["detector"] in DETECTORS, (name, c)
                assert c["ood_dataset"] in OOD_DATASETS, (name, c)
            if c["loss"] == "godin" or c["detector"] == "godin":
                assert c["loss"] == c["detector"] == "godin", (name, c)


def test_values_are_numbers_in_range(tables):
    for name, t in tables.items():
        for c in t["cells"]:
            v = c["value"]
            # The paper has no unreadable cell, so no null value is expected.
            assert isinstance(v, (int, float)) and not isinstance(v, bool), (name, c)
            assert math.isfinite(v), (name, c)
            if c["metric"] in PERCENT_METRICS:
                assert 0.0 <= v <= 100.0, (name, c)
            else:
                assert v >= 0.0, (name, c)
            if "std" in c:
                assert isinstance(c["std"], (int, float)) and c["std"] >= 0, (name, c)


def test_counts_per_table(tables):
    counts = {name: len(t["cells"]) for name, t in tables.items()}
    assert counts == EXPECTED_COUNTS
    assert sum(counts.values()) == 509


def test_no_duplicate_key_within_a_table(tables):
    for name, t in tables.items():
        keys = [key_of(c) for c in t["cells"]]
        assert len(keys) == len(set(keys)), name


def test_full_grids(tables):
    """Per-set tables cover every OOD set for each configuration exactly once."""
    for name in ("table1", "table7", "table8", "table9"):
        groups = defaultdict(set)
        for c in tables[name]["cells"]:
            if c["ood_dataset"] != "average":
                groups[(c["id_dataset"], c["arch"], c["loss"], c["detector"], c["metric"])].add(
                    c["ood_dataset"]
                )
        assert groups, name
        for g, sets in groups.items():
            assert sets == set(OOD_SETS), (name, g)


def test_spot_checks(tables):
    t1 = dict(id_dataset="cifar10", arch="wrn40_2", detector="msp")
    # Introduction / Sec. 4.2: "reduces the FPR95 from 50.33% to 8.03%" (CIFAR-10 vs SVHN);
    # abstract: "reducing the average FPR95 by up to 42.30%" = 50.33 - 8.03.
    ce_svhn = find(tables, "table1", **t1, loss="ce", ood_dataset="svhn", metric="fpr95")
    ln_svhn = find(tables, "table1", **t1, loss="logitnorm", ood_dataset="svhn", metric="fpr95")
    assert ce_svhn == 50.33 and ln_svhn == 8.03
    assert round(ce_svhn - ln_svhn, 2) == 42.30
    assert find(tables, "table1", **t1, loss="ce", ood_dataset="textures", metric="fpr95") == 64.13
    assert find(tables, "table1", **t1, loss="logitnorm", ood_dataset="lsun_c", metric="fpr95") == 2.37
    assert find(tables, "table1", **t1, loss="logitnorm", ood_dataset="lsun_r", metric="fpr95") == 10.93
    # "reduces the FPR95 by 33.87%" (average, MSP)
    ce_avg = find(tables, "table1", **t1, loss="ce", ood_dataset="average", metric="fpr95")
    ln_avg = find(tables, "table1", **t1, loss="logitnorm", ood_dataset="average", metric="fpr95")
    assert (ce_avg, ln_avg) == (49.52, 15.65) and round(ce_avg - ln_avg, 2) == 33.87
    assert (
        find(tables, "table1", id_dataset="cifar100", arch="wrn40_2", detector="msp",
             loss="ce", ood_dataset="places365", metric="aupr_in")
        == 93.74
    )
    # Table 2: ODIN "from 40.32% to 12.95%"
    t2 = dict(id_dataset="cifar10", arch="wrn40_2", detector="odin", ood_dataset="average", metric="fpr95")
    assert find(tables, "table2", **t2, loss="ce") == 40.32
    assert find(tables, "table2", **t2, loss="logitnorm") == 12.95
    assert find(tables, "table2", id_dataset="cifar100", arch="wrn40_2", detector="gradnorm",
                ood_dataset="average", metric="auroc", loss="ce") == 52.84
    # Table 3: DenseNet "from 50.41% to 18.57%"; ResNet-34 accuracy 95.01 / 95.14
    t3 = dict(id_dataset="cifar10", arch="densenet_bc", detector="msp", ood_dataset="average", metric="fpr95")
    assert find(tables, "table3", **t3, loss="ce") == 50.41
    assert find(tables, "table3", **t3, loss="logitnorm") == 18.57
    acc = dict(id_dataset="cifar10", arch="resnet34", detector=None, ood_dataset=None, metric="id_acc")
    assert find(tables, "table3", **acc, loss="ce") == 95.01
    assert find(tables, "table3", **acc, loss="logitnorm") == 95.14
    # Table 4: ECE
    e = dict(arch="wrn40_2", detector=None, ood_dataset=None)
    assert find(tables, "table4", **e, id_dataset="cifar10", loss="ce", metric="ece") == 3.20
    assert find(tables, "table4", **e, id_dataset="cifar10", loss="logitnorm", metric="ece") == 66.95
    assert find(tables, "table4", **e, id_dataset="cifar100", loss="logitnorm", metric="ece_ts") == 1.67
    # Table 5: L2 norms
    n = dict(id_dataset="cifar10", arch="wrn40_2", detector=None)
    assert find(tables, "table5", **n, loss="ce", ood_dataset=None, metric="logit_norm_id") == 12.80
    assert find(tables, "table5", **n, loss="ce", ood_dataset="svhn", metric="logit_norm_ood") == 10.91
    assert find(tables, "table5", **n, loss="logitnorm", ood_dataset="svhn", metric="logit_norm_ood") == 0.49
    assert find(tables, "table5", id_dataset="cifar10", arch="wrn40_2", detector="msp", loss="logitpenalty",
                ood_dataset="average", metric="fpr95") == 57.62
    # Table 6: GODIN
    assert find(tables, "table6", id_dataset="cifar10", arch="wrn40_2", detector="godin", loss="godin",
                ood_dataset="average", metric="fpr95") == 25.24
    # Table 7: values printed with one decimal
    assert find(tables, "table7", id_dataset="cifar100", arch="wrn40_2", detector="gradnorm", loss="ce",
                ood_dataset="svhn", metric="fpr95") == 97.7
    # Table 8 / 9
    assert find(tables, "table8", id_dataset="cifar10", arch="resnet34", detector="msp", loss="logitnorm",
                ood_dataset="lsun_c", metric="fpr95") == 0.51
    assert find(tables, "table9", id_dataset="cifar10", arch="wrn40_2", detector="godin", loss="godin",
                ood_dataset="places365", metric="fpr95") == 35.51


def _value_mismatches(doc):
    return [k for k in doc["known_inconsistencies"] if k["kind"] == "value_mismatch"]


def test_duplicates_agree_except_known(doc, by_key):
    known = {tuple(k["key"][f] for f in KEY_FIELDS): k for k in _value_mismatches(doc)}
    disagreements = {}
    for key, occ in by_key.items():
        if len(occ) > 1 and len({v for _, v in occ}) > 1:
            disagreements[key] = dict(occ)
    assert set(disagreements) == set(known), (
        "unlisted disagreements: " + repr({k: v for k, v in disagreements.items() if k not in known})
        + "; listed but not disagreeing: " + repr([k for k in known if k not in disagreements])
    )
    for key, entry in known.items():
        assert disagreements[key] == entry["values"], key


def test_expected_duplicates_exist(by_key):
    key = ("cifar10", "wrn40_2", "logitnorm", "msp", "average", "fpr95")
    assert sorted(t for t, _ in by_key[key]) == ["table1", "table2", "table3", "table5", "table6"]
    key = ("cifar100", "wrn40_2", "ce", "msp", "average", "auroc")
    assert sorted(t for t, _ in by_key[key]) == ["table1", "table2"]


def test_printed_averages_vs_per_set_means(doc, tables, by_key):
    per_set = defaultdict(dict)  # (id, arch, loss, det, metric) -> {ood: (table, value)}
    for name, t in tables.items():
        for c in t["cells"]:
            if c["ood_dataset"] in OOD_SETS and c["metric"] in OOD_METRICS:
                g = (c["id_dataset"], c["arch"], c["loss"], c["detector"], c["metric"])
                assert c["ood_dataset"] not in per_set[g], ("per-set value in two tables", g)
                per_set[g][c["ood_dataset"]] = (name, c["value"])
    listed = {
        (d["table"], d["id_dataset"], d["arch"], d["loss"], d["detector"], d["metric"]): d
        for d in doc["average_deviations"]
    }
    found, compared = {}, 0
    for g, sets in per_set.items():
        assert set(sets) == set(OOD_SETS), g
        detail = {t for t, _ in sets.values()}
        assert len(detail) == 1, g
        (detail_table,) = detail
        mean = sum(v for _, v in sets.values()) / 6
        printed = by_key.get((g[0], g[1], g[2], g[3], "average", g[4]), [])
        assert printed, ("no printed average for", g)
        for table, value in printed:
            compared += 1
            if abs(mean - value) > ROUNDING_TOL:
                found[(table, *g)] = (detail_table, value, mean)
    assert len(per_set) == 66
    assert set(found) == set(listed), (
        "unlisted deviations: " + repr({k: v for k, v in found.items() if k not in listed})
        + "; listed but within rounding: " + repr([k for k in listed if k not in found])
    )
    for k, (detail_table, value, mean) in found.items():
        d = listed[k]
        assert d["detail_table"] == detail_table, k
        assert d["printed"] == value, k
        assert abs(d["mean"] - mean) < 5e-4, (k, d["mean"], mean)
    assert compared > len(found)


_NUM = re.compile(r"\d+\.\d+")


def _paper_table_numbers(lines, n):
    start = next(i for i, l in enumerate(lines) if l.startswith(f"Table {n}."))
    i = start + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    nums = []
    while i < len(lines) and lines[i].strip():
        for field in lines[i].split("\t"):
            for tok in field.split("/"):
                tok = tok.strip()
                if _NUM.fullmatch(tok):
                    nums.append(float(tok))
        i += 1
    return nums


@pytest.mark.skipif(not PAPER_TXT.exists(), reason="paper text not available")
def test_every_value_is_in_the_paper_table(tables):
    """Each table's values are exactly the multiset of numbers printed in that table."""
    lines = PAPER_TXT.read_text(encoding="utf-8").split("\n")
    for n in range(1, 10):
        printed = sorted(_paper_table_numbers(lines, n))
        ours = sorted(c["value"] for c in tables[f"table{n}"]["cells"] if c["value"] is not None)
        assert printed == ours, f"table{n}"
