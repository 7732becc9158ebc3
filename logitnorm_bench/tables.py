"""The paper's Tables 1-9, laid out as in the paper, with our numbers beside the paper's.

Every table cell compares one key ``(id_dataset, arch, loss, detector, ood_dataset, metric)``:

* **ours**: mean +- std over seeds, taken from :func:`logitnorm_bench.leaderboard.build_rows`
  (the leaderboard's aggregation; nothing is re-aggregated here).  Metrics are in percent
  like the paper, except the logit L2 norms of Table 5 (raw).
* **paper**: the printed number from ``data/paper_tables.yaml`` for *that* table (so Table 2's
  CIFAR-100 LogitNorm MSP row shows Table 2's 58.35, Table 1's average shows 58.49).
* **diff**: ours - paper.

A cell that has not been run shows ``—`` (never 0).

Which records count
-------------------
* Only the paper's six OOD sets (``PAPER_OOD_SETS``) enter the paper tables, so an
  ``average`` cell is the mean over exactly those sets.  An average over fewer than six sets
  is not compared with the paper: it shows ``—`` with a note ``k/6 OOD sets``.
* ID-only metrics (ID accuracy, ECE, ECE with TS, logit norm on ID data) are per training
  run; they are read from any leaderboard row of the run (MSP rows preferred).  Table 5's
  OOD logit norm is read from the run's SVHN rows.

Parameter variants
------------------
The leaderboard keeps loss and detector parameters apart (``logitnorm`` with ``tau=0.04`` and
``tau=0.1`` are different rows).  When several variants of one cell exist, the one used is,
in order of preference: (1) real over smoke results, (2) the variant matching the paper's
parameters (``paper_params``: LogitNorm ``tau=0.04`` on CIFAR-10, LogitPenalty ``lam=0.05``,
ODIN ``T=1000, eps=0.0014``, energy ``T`` = 1 for CE, 0.1 for LogitNorm on CIFAR-10, 0.01 on
CIFAR-100, MSP and GradNorm ``T=1``), (3) the most seeds.  Parameters the paper does not fix
(e.g. tau on CIFAR-100) match anything.  When the variant used differs from the paper's
parameters, or several variants exist and the paper does not say which is right, the cell
shows the variant's parameters in braces, e.g. ``{tau=0.1}``.

Smoke results: if any cell uses a smoke record, every table heading says
``SMOKE — numbers mean nothing`` and the smoke cells are marked ``(smoke)``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from logitnorm_bench.leaderboard import build_rows, params_text
from logitnorm_bench.metrics import metrics_of
from logitnorm_bench.records import ResultsDir

OOD_METRICS = tuple(m.name for m in metrics_of("cell"))

PAPER_YAML = Path(__file__).resolve().parent / "data" / "paper_tables.yaml"
PAPER_ID_DATASETS = ("cifar10", "cifar100")
PAPER_OOD_SETS = ("textures", "svhn", "lsun_c", "lsun_r", "isun", "places365")
ID_ONLY_METRICS = ("id_acc", "ece", "ece_ts", "logit_norm_id")
SMOKE_BANNER = "SMOKE — numbers mean nothing"
MISSING = "—"

LABELS = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "textures": "Textures", "svhn": "SVHN", "lsun_c": "LSUN-C", "lsun_r": "LSUN-R", "isun": "iSUN",
    "places365": "Places365", "average": "Average",
    "wrn40_2": "WRN-40-2", "resnet34": "ResNet-34", "densenet_bc": "DenseNet-BC",
    "ce": "CE", "logitnorm": "LogitNorm", "logitpenalty": "LogitPenalty", "godin": "GODIN",
    "msp": "MSP", "odin": "ODIN", "energy": "Energy", "gradnorm": "GradNorm",
    "fpr95": "FPR95↓", "auroc": "AUROC↑", "aupr_in": "AUPR↑", "aupr_out": "AUPR-Out↑",
    "id_acc": "ID Acc", "ece": "ECE w/o TS", "ece_ts": "ECE w/ TS",
    "logit_norm_id": "L2 norm ID", "logit_norm_ood": "L2 norm OOD (SVHN)",
}

LSUN_NOTE = ("LSUN-C / LSUN-R: the official repository's issue #5 (hongxin001/logitnorm_ood) suspects "
             "that the two rows are swapped in the printed table; the printed values and labels are kept.")


def label(name) -> str:
    return LABELS.get(name, str(name))


# ------------------------------------------------------------------------------------------
# The paper's parameters
# ------------------------------------------------------------------------------------------

def paper_params(id_dataset: str, loss: str, detector: str | None) -> tuple[dict, dict]:
    """(loss params, detector params) the paper used for this cell; absent keys are unspecified."""
    loss_p: dict = {}
    if loss == "logitnorm" and id_dataset == "cifar10":
        loss_p = {"tau": 0.04}  # Sec. 4.1 "We set 0.04 for CIFAR-10 by default"
    elif loss == "logitpenalty":
        loss_p = {"lam": 0.05}  # Table 9 caption
    det_p: dict = {}
    if detector in ("msp", "gradnorm"):
        det_p = {"temperature": 1.0}
    elif detector == "odin":
        det_p = {"temperature": 1000.0, "epsilon": 0.0014}  # Sec. 4.3
    elif detector == "energy":
        if loss == "logitnorm":
            t = {"cifar10": 0.1, "cifar100": 0.01}.get(id_dataset)  # Sec. 4.3
            det_p = {"temperature": t} if t is not None else {}
        elif loss == "ce":
            det_p = {"temperature": 1.0}
    return loss_p, det_p


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def _matches(params: dict, spec: dict) -> bool:
    return all(k in params and _same(params[k], v) for k, v in spec.items())


# ------------------------------------------------------------------------------------------
# The paper's numbers
# ------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def paper_cells() -> dict[str, dict[tuple, float]]:
    """{table name: {(id_dataset, arch, loss, detector, ood_dataset, metric): value}}."""
    with PAPER_YAML.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    out: dict[str, dict[tuple, float]] = {}
    for name, t in doc["tables"].items():
        out[name] = {(c["id_dataset"], c["arch"], c["loss"], c["detector"], c["ood_dataset"], c["metric"]):
                     float(c["value"]) for c in t["cells"]}
    return out


# ------------------------------------------------------------------------------------------
# Our numbers
# ------------------------------------------------------------------------------------------

@dataclass
class Value:
    mean: float | None = None
    std: float | None = None
    n_seeds: int = 0
    smoke: bool = False
    variant: str = ""
    note: str = ""


class Ours:
    """Our aggregated numbers (leaderboard rows), looked up by paper key."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.rows_all = build_rows(records)
        # Paper ID datasets: only the paper's six OOD sets, so "average" means the same thing.
        paper_recs = [r for r in records if r.get("id_dataset") in PAPER_ID_DATASETS
                      and r.get("ood_dataset") in PAPER_OOD_SETS]
        self.rows_paper = build_rows(paper_recs)
        self.by_key: dict[tuple, list[dict]] = {}
        self.sets_of: dict[tuple, set] = {}
        for row in self.rows_paper:
            self.by_key.setdefault(self._key(row) + (row["ood_dataset"],), []).append(row)
            if row["ood_dataset"] != "average" and row["n_seeds"] > 0:
                self.sets_of.setdefault(self._variant(row), set()).add(row["ood_dataset"])
        self.by_run_key: dict[tuple, list[dict]] = {}
        for row in self.rows_all:
            self.by_run_key.setdefault((row["id_dataset"], row["arch"], row["loss"]), []).append(row)

    @staticmethod
    def _key(row) -> tuple:
        return (row["id_dataset"], row["arch"], row["loss"], row["detector"])

    @staticmethod
    def _variant(row) -> tuple:
        return (row["id_dataset"], row["arch"], params_text(row["arch_params"]), row["loss"],
                params_text(row["loss_params"]), row["detector"], params_text(row["detector_params"]), row["smoke"])

    def lookup(self, id_dataset, arch, loss, detector, ood_dataset, metric) -> Value:
        if metric in ID_ONLY_METRICS or metric == "logit_norm_ood":
            return self._run_metric(id_dataset, arch, loss, ood_dataset, metric)
        cands = [r for r in self.by_key.get((id_dataset, arch, loss, detector, ood_dataset), [])
                 if r["n_seeds"] > 0 and r.get(metric) is not None]
        failed = sum(r["n_failed"] for r in self.by_key.get((id_dataset, arch, loss, detector, ood_dataset), []))
        if ood_dataset == "average":
            # Compared with the paper only when the variant has all six OOD sets.
            n = len(PAPER_OOD_SETS)
            ks = [len(s) for v, s in self.sets_of.items()
                  if (v[0], v[1], v[3], v[5]) == (id_dataset, arch, loss, detector)]
            cands = [r for r in cands if len(self.sets_of.get(self._variant(r), ())) == n]
            if not cands and ks:
                k = max(ks)
                return Value(note=f"only {k}/{n} OOD sets" if k < n else f"no seed has all {n} OOD sets")
        if not cands:
            return Value(note=f"{failed} failed" if failed else "")
        spec_l, spec_d = paper_params(id_dataset, loss, detector)
        best = max(enumerate(cands), key=lambda ir: (
            not ir[1]["smoke"],
            _matches(ir[1]["loss_params"], spec_l)
            and _matches(ir[1]["detector_params"], spec_d),
            ir[1]["n_seeds"], -ir[0]))[1]
        return Value(best[metric], best[f"{metric}_std"], best["n_seeds"], bool(best["smoke"]),
                     _variant_label(best, cands, spec_l, spec_d))

    def _run_metric(self, id_dataset, arch, loss, ood_dataset, metric) -> Value:
        rows = [r for r in self.by_run_key.get((id_dataset, arch, loss), [])
                if r["n_seeds"] > 0 and r.get(metric) is not None]
        if metric == "logit_norm_ood":
            rows = [r for r in rows if r["ood_dataset"] == ood_dataset]
        else:
            rows = [r for r in rows if r["ood_dataset"] != "average"]
        if not rows:
            return Value()
        spec_l, _ = paper_params(id_dataset, loss, None)
        best = max(enumerate(rows), key=lambda ir: (
            not ir[1]["smoke"], _matches(ir[1]["loss_params"], spec_l),
            ir[1]["n_seeds"], ir[1]["detector"] == "msp", -ir[0]))[1]
        return Value(best[metric], best[f"{metric}_std"], best["n_seeds"], bool(best["smoke"]),
                     _variant_label(best, rows, spec_l, None))

    def other_datasets(self) -> list[str]:
        return sorted({r["id_dataset"] for r in self.rows_all} - set(PAPER_ID_DATASETS))


def _fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt_param(x) for x in v) + "]"
    return str(v)


def _variant_label(best: dict, cands: list[dict], spec_l: dict, spec_d: dict | None) -> str:
    """The parameters of the chosen variant worth showing: those that differ from the paper's
    choice, and those that vary among the variants where the paper does not fix them."""
    parts = []
    fields = [("arch_params", {}), ("loss_params", spec_l)]
    if spec_d is not None:
        fields.append(("detector_params", spec_d))
    for fld, spec in fields:
        mine = best[fld]
        others = [c[fld] for c in cands if c is not best]
        for k, v in sorted(mine.items()):
            conflict = k in spec and not _same(v, spec[k])
            varies = k not in spec and any(k in o and not _same(o[k], v) for o in others)
            if conflict or varies:
                parts.append(f"{k}={_fmt_param(v)}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------
# Table layouts
# ------------------------------------------------------------------------------------------

@dataclass
class Cell:
    key: tuple  # (id_dataset, arch, loss, detector, ood_dataset, metric)
    column: str
    ours: Value = field(default_factory=Value)
    paper: float | None = None

    @property
    def diff(self) -> float | None:
        if self.ours.mean is None or self.paper is None:
            return None
        return self.ours.mean - self.paper


@dataclass
class Section:
    heading: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]


@dataclass
class Table:
    name: str  # "table1"
    title: str
    sections: list[Section]
    notes: list[str] = field(default_factory=list)

    @property
    def number(self) -> str:
        return self.name.replace("table", "")

    def cells(self):
        for s in self.sections:
            for row_label, cells in s.rows:
                for c in cells:
                    yield s, row_label, c


def _cols(metrics, losses):
    return [(m, l) for m in metrics for l in losses]


def _ood_block(id_ds, arch, detectors, oods, losses=("ce", "logitnorm"), metrics=("fpr95", "auroc", "aupr_in"),
               row_label=None):
    cols = _cols(metrics, losses)
    rows = []
    for det in detectors:
        for ood in oods:
            name = row_label(det, ood) if row_label else label(ood)
            rows.append((name, [Cell((id_ds, arch, l, det, ood, m), f"{label(m)} {label(l)}") for m, l in cols]))
    return [f"{label(m)} {label(l)}" for m, l in cols], rows


def layouts() -> list[Table]:
    """Tables 1-9 as empty shells (keys and labels); filled by :func:`build_tables`."""
    tables = []
    # Table 1
    secs = []
    for id_ds in PAPER_ID_DATASETS:
        cols, rows = _ood_block(id_ds, "wrn40_2", ["msp"], PAPER_OOD_SETS + ("average",))
        secs.append(Section(f"{label(id_ds)} (ID), WRN-40-2, MSP score", cols, rows))
    tables.append(Table("table1", "OOD detection, CE vs LogitNorm, WRN-40-2, softmax confidence (MSP) score",
                        secs, [LSUN_NOTE]))
    # Table 2
    secs = []
    for id_ds in PAPER_ID_DATASETS:
        cols, rows = _ood_block(id_ds, "wrn40_2", ["msp", "odin", "energy", "gradnorm"], ["average"],
                                row_label=lambda d, o: label(d))
        secs.append(Section(f"{label(id_ds)} (ID), WRN-40-2, average over the six OOD sets", cols, rows))
    tables.append(Table("table2", "OOD detection with various scoring functions, CE vs LogitNorm, WRN-40-2",
                        secs, ["The paper's CIFAR-100 LogitNorm MSP row in Table 2 (58.35 / 85.75 / 96.44) "
                               "differs from Table 1's average row (58.49 / 85.73 / 96.42); each table shows "
                               "its own printed numbers."]))
    # Table 3
    cols = _cols(("id_acc", "fpr95", "auroc", "aupr_in"), ("ce", "logitnorm"))
    rows = []
    for arch in ("wrn40_2", "resnet34", "densenet_bc"):
        rows.append((label(arch), [Cell(("cifar10", arch, l, None if m == "id_acc" else "msp",
                                         None if m == "id_acc" else "average", m), f"{label(m)} {label(l)}")
                                   for m, l in cols]))
    tables.append(Table("table3", "OOD detection on CIFAR-10 with different architectures, CE vs LogitNorm, "
                                  "MSP score (OOD metrics averaged over the six OOD sets)",
                        [Section("CIFAR-10 (ID)", [f"{label(m)} {label(l)}" for m, l in cols], rows)],
                        ["DenseNet = DenseNet-BC (captions of Tables 3 and 8)."]))
    # Table 4
    cols = _cols(("ece", "ece_ts"), ("ce", "logitnorm"))
    rows = [(label(id_ds), [Cell((id_ds, "wrn40_2", l, None, None, m), f"{label(m)} {label(l)}") for m, l in cols])
            for id_ds in PAPER_ID_DATASETS]
    tables.append(Table("table4", "Expected calibration error (%), M = 15 bins, WRN-40-2, without / with "
                                  "temperature scaling (TS)",
                        [Section("ID test sets", [f"{label(m)} {label(l)}" for m, l in cols], rows)],
                        ["The large LogitNorm ECE without TS (66.95 / 70.45) is what the paper prints; its claim "
                         "is only about ECE after temperature scaling."]))
    # Table 5
    metrics5 = ("fpr95", "auroc", "aupr_in", "logit_norm_id", "logit_norm_ood")
    rows = []
    for loss in ("ce", "logitpenalty", "logitnorm"):
        cells = []
        for m in metrics5:
            det = "msp" if m in OOD_METRICS else None
            ood = {"logit_norm_id": None, "logit_norm_ood": "svhn"}.get(m, "average")
            cells.append(Cell(("cifar10", "wrn40_2", loss, det, ood, m), label(m)))
        rows.append((label(loss), cells))
    tables.append(Table("table5", "Different losses on CIFAR-10, WRN-40-2: OOD detection (MSP, average over six "
                                  "OOD sets) and average logit L2 norm on ID / OOD (SVHN) test data",
                        [Section("CIFAR-10 (ID)", [label(m) for m in metrics5], rows)],
                        ["L2 norms are raw norms of the logit vector, not percentages; OOD = SVHN.",
                         "The paper does not name LogitPenalty's OOD score; MSP is used (its CE and LogitNorm "
                         "rows equal the MSP averages of Tables 1-3)."]))
    # Table 6
    ood3 = ("fpr95", "auroc", "aupr_in")
    rows = [(label("godin") + " (GODIN score)",
             [Cell(("cifar10", "wrn40_2", "godin", "godin", "average", m), label(m)) for m in ood3]),
            (label("logitnorm") + " (MSP score)",
             [Cell(("cifar10", "wrn40_2", "logitnorm", "msp", "average", m), label(m)) for m in ood3])]
    tables.append(Table("table6", "GODIN vs LogitNorm on CIFAR-10, WRN-40-2 (average over six OOD sets)",
                        [Section("CIFAR-10 (ID)", [label(m) for m in ("fpr95", "auroc", "aupr_in")], rows)],
                        ["The paper's caption says the ODIN score is used for LogitNorm, but its LogitNorm row "
                         "(15.65 / 96.91 / 99.31) equals the MSP averages of Tables 1-3 and Sec. 5 says "
                         "\"LogitNorm with the MSP score\": the row is compared with our LogitNorm + MSP."]))
    # Table 7
    secs = []
    for id_ds in PAPER_ID_DATASETS:
        cols, rows = _ood_block(id_ds, "wrn40_2", ["odin", "energy", "gradnorm"], PAPER_OOD_SETS,
                                row_label=lambda d, o: f"{label(d)} · {label(o)}")
        secs.append(Section(f"{label(id_ds)} (ID), WRN-40-2", cols, rows))
    tables.append(Table("table7", "Per-OOD-set detail of Table 2: ODIN / Energy / GradNorm, CE vs LogitNorm, WRN-40-2",
                        secs, [LSUN_NOTE, "The paper's caption says softmax score; the rows are ODIN / Energy / "
                                          "GradNorm (per-set MSP detail is Table 1)."]))
    # Table 8
    secs = []
    for arch in ("resnet34", "densenet_bc"):
        cols, rows = _ood_block("cifar10", arch, ["msp"], PAPER_OOD_SETS)
        secs.append(Section(f"CIFAR-10 (ID), {label(arch)}, MSP score", cols, rows))
    tables.append(Table("table8", "Per-OOD-set detail of Table 3: ResNet-34 and DenseNet-BC, CE vs LogitNorm, "
                                  "MSP score",
                        secs, [LSUN_NOTE.replace("the printed table", "Table 1 (probably the same here)")]))
    # Table 9
    rows = []
    for loss, det in (("logitpenalty", "msp"), ("godin", "godin")):
        for ood in PAPER_OOD_SETS:
            rows.append((f"{label(loss)} · {label(ood)}",
                         [Cell(("cifar10", "wrn40_2", loss, det, ood, m), label(m)) for m in ood3]))
    tables.append(Table("table9", "Per-OOD-set detail of LogitPenalty (lambda = 0.05, MSP score) and GODIN "
                                  "(GODIN score), WRN-40-2 on CIFAR-10",
                        [Section("CIFAR-10 (ID)", [label(m) for m in ("fpr95", "auroc", "aupr_in")], rows)],
                        [LSUN_NOTE.replace("the printed table", "Table 1 (probably the same here)")]))
    return tables


def build_tables(records: list[dict]) -> tuple[list[Table], Ours]:
    ours = Ours(records)
    paper = paper_cells()
    tables = layouts()
    for t in tables:
        for _, _, c in t.cells():
            c.paper = paper.get(t.name, {}).get(c.key)
            c.ours = ours.lookup(*c.key)
    return tables, ours


def _load(results_dir) -> list[dict]:
    return list(ResultsDir(results_dir).records())


def any_smoke(tables: list[Table]) -> bool:
    return any(c.ours.smoke for t in tables for _, _, c in t.cells())


# ------------------------------------------------------------------------------------------
# "Other results": ID datasets the paper has no table for (e.g. the quick suite's digits)
# ------------------------------------------------------------------------------------------

def _params_label(loss: str, loss_p: str, det: str, det_p: str) -> str:
    def one(name, p):
        d = {k: v for k, v in json.loads(p).items() if v is not None}
        return f"{name}({', '.join(f'{k}={_fmt_param(v)}' for k, v in sorted(d.items()))})" if d else name
    return f"{one(loss, loss_p)} + {one(det, det_p)}"


def other_sections(ours: Ours) -> list[tuple[Section, list[bool]]]:
    """Per (ID dataset, arch) without a paper table: rows = loss + detector variants; columns =
    FPR95 per OOD set, then average FPR95 / AUROC / AUPR-In and ID accuracy."""
    out = []
    for id_ds in ours.other_datasets():
        rows_id = [r for r in ours.rows_all if r["id_dataset"] == id_ds]
        for arch in sorted({r["arch"] for r in rows_id}):
            rows_a = [r for r in rows_id if r["arch"] == arch]
            oods = sorted({r["ood_dataset"] for r in rows_a} - {"average"})
            cols = [f"FPR95↓ {o}" for o in oods]
            metrics = [("fpr95", o) for o in oods]
            if len(oods) > 1:
                cols += ["FPR95↓ average", "AUROC↑ average", "AUPR↑ average"]
                metrics += [("fpr95", "average"), ("auroc", "average"), ("aupr_in", "average")]
            else:
                cols += [f"AUROC↑ {oods[0]}", f"AUPR↑ {oods[0]}"]
                metrics += [("auroc", oods[0]), ("aupr_in", oods[0])]
            cols.append("ID Acc")
            groups: dict[tuple, dict[str, dict]] = {}
            for r in rows_a:
                g = (r["loss"], params_text(r["loss_params"]), r["detector"], params_text(r["detector_params"]),
                     params_text(r["arch_params"]), r["smoke"])
                groups.setdefault(g, {})[r["ood_dataset"]] = r
            rows, smoke_flags = [], []
            loss_order = {n: i for i, n in enumerate(("ce", "logitnorm", "logitpenalty", "godin"))}
            det_order = {n: i for i, n in enumerate(("msp", "odin", "energy", "gradnorm", "godin"))}
            for g in sorted(groups, key=lambda g: (loss_order.get(g[0], 99), g[0], g[1],
                                                   det_order.get(g[2], 99), g[2], g[3:])):
                by_ood = groups[g]
                cells = []
                for m, o in metrics:
                    r = by_ood.get(o)
                    v = Value(r[m], r[f"{m}_std"], r["n_seeds"], bool(r["smoke"])) if r and r.get(m) is not None \
                        and r["n_seeds"] > 0 else Value()
                    cells.append(Cell((id_ds, arch, g[0], g[2], o, m), f"{m} {o}", v))
                accs = [r for r in by_ood.values() if r["n_seeds"] > 0 and r["id_acc"] is not None
                        and r["ood_dataset"] != "average"]
                best = max(accs, key=lambda r: r["n_seeds"]) if accs else None
                cells.append(Cell((id_ds, arch, g[0], None, None, "id_acc"), "ID Acc",
                                  Value(best["id_acc"], best["id_acc_std"], best["n_seeds"], bool(best["smoke"]))
                                  if best else Value()))
                rows.append((_params_label(g[0], g[1], g[2], g[3]) + (" (smoke)" if g[5] else ""), cells))
                smoke_flags.append(bool(g[5]))
            out.append((Section(f"{id_ds} (ID), {arch}", cols, rows), smoke_flags))
    return out


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------

def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return MISSING
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def ours_text(v: Value) -> str:
    if v.mean is None:
        return MISSING + (f" ({v.note})" if v.note else "")
    s = f"{v.mean:.2f}±{v.std:.2f}" if v.n_seeds > 1 and v.std is not None else f"{v.mean:.2f}"
    s += f" [{v.n_seeds}]"
    if v.variant:
        s += f" {{{v.variant}}}"
    if v.smoke:
        s += " (smoke)"
    return s


def cell_text(c: Cell) -> str:
    s = f"{ours_text(c.ours)} · {_num(c.paper)}"
    if c.diff is not None:
        s += f" · {_num(c.diff, signed=True)}"
    return s


LEGEND = ("Each cell: ours mean±std [number of seeds] · paper · ours − paper. "
          "Metrics in percent (L2 norms raw). “—” = not run yet.")


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _heading(t: Table, smoke: bool) -> str:
    return f"Table {t.number}: {t.title}" + (f" — {SMOKE_BANNER}" if smoke else "")


def render_md(tables: list[Table], ours: Ours) -> str:
    smoke = any_smoke(tables)
    out = ["# LogitNorm (ICML 2022): our results vs the paper", ""]
    if smoke:
        out += [f"**{SMOKE_BANNER}**: some cells come from smoke runs (synthetic stand-in data, a few "
                "batches of training); they are marked (smoke).", ""]
    out += [LEGEND + " Parameter variants other than the paper's are shown in {braces}.", ""]
    for t in tables:
        out += [f"## {_heading(t, smoke)}", ""]
        for s in t.sections:
            out += [f"**{s.heading}**", ""]
            out.append("| | " + " | ".join(_md_escape(c) for c in s.columns) + " |")
            out.append("|---" * (len(s.columns) + 1) + "|")
            for row_label, cells in s.rows:
                out.append(f"| {_md_escape(row_label)} | " + " | ".join(_md_escape(cell_text(c)) for c in cells) + " |")
            out.append("")
        for n in t.notes:
            out += [f"Note: {n}", ""]
    others = other_sections(ours)
    if others:
        osmoke = any(f for _, flags in others for f in flags)
        out += ["## Other results (no counterpart in the paper)" + (f" — {SMOKE_BANNER}" if osmoke else ""), "",
                "Ours only: mean±std [number of seeds], percent; averages over the OOD sets of each row.", ""]
        for s, _ in others:
            out += [f"**{s.heading}**", ""]
            out.append("| | " + " | ".join(_md_escape(c) for c in s.columns) + " |")
            out.append("|---" * (len(s.columns) + 1) + "|")
            for row_label, cells in s.rows:
                out.append(f"| {_md_escape(row_label)} | "
                           + " | ".join(_md_escape(ours_text(c.ours)) for c in cells) + " |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


CSV_COLUMNS = ("table", "row", "column", "id_dataset", "arch", "loss", "detector", "ood_dataset", "metric",
               "ours_mean", "ours_std", "n_seeds", "paper", "diff", "smoke", "variant", "note")


def render_csv(tables: list[Table], ours: Ours) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()

    def f(v):
        return "" if v is None else f"{v:.4f}"

    def write(table, s, row_label, c):
        id_ds, arch, loss, det, ood, metric = c.key
        w.writerow({"table": table, "row": f"{s.heading} / {row_label}", "column": c.column,
                    "id_dataset": id_ds, "arch": arch, "loss": loss, "detector": det or "",
                    "ood_dataset": ood or "", "metric": metric,
                    "ours_mean": f(c.ours.mean), "ours_std": f(c.ours.std) if c.ours.mean is not None else "",
                    "n_seeds": c.ours.n_seeds, "paper": f(c.paper), "diff": f(c.diff),
                    "smoke": "true" if c.ours.smoke else "false", "variant": c.ours.variant, "note": c.ours.note})

    for t in tables:
        for s, row_label, c in t.cells():
            write(t.name, s, row_label, c)
    for s, _ in other_sections(ours):
        for row_label, cells in s.rows:
            for c in cells:
                write("other", s, row_label, c)
    return buf.getvalue()


def render_html(tables: list[Table], ours: Ours) -> str:
    """The tables as HTML fragments (for the report page): ours bold, paper and diff beneath."""
    e = html.escape
    smoke = any_smoke(tables)
    out = [f"<p class='legend'>{e(LEGEND)} Parameter variants other than the paper's are shown in "
           "{braces}. Diff colour: green = better than the paper, red = worse.</p>"]

    def td(c: Cell) -> str:
        v = c.ours
        cls = " class='smoke'" if v.smoke else ""
        ours_s = e(ours_text(v))
        diff = c.diff
        dcls = ""
        if diff is not None and c.key[5] in ("fpr95", "auroc", "aupr_in", "id_acc", "ece", "ece_ts"):
            better = diff < 0 if c.key[5] in ("fpr95", "ece", "ece_ts") else diff > 0
            dcls = "better" if better else "worse"
        sub = f"paper {_num(c.paper)}"
        if diff is not None:
            sub += f" · <span class='{dcls}'>Δ {_num(diff, True)}</span>"
        return f"<td{cls}><b>{ours_s}</b><br><span class='paper'>{sub}</span></td>"

    for t in tables:
        out.append(f"<h3 id='{t.name}'>{e(_heading(t, smoke))}</h3>")
        for s in t.sections:
            out.append(f"<table><caption>{e(s.heading)}</caption><tr><th></th>"
                       + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>")
            for row_label, cells in s.rows:
                out.append(f"<tr><th>{e(row_label)}</th>" + "".join(td(c) for c in cells) + "</tr>")
            out.append("</table>")
        for n in t.notes:
            out.append(f"<p class='note'>Note: {e(n)}</p>")
    others = other_sections(ours)
    if others:
        osmoke = any(f for _, flags in others for f in flags)
        out.append("<h3 id='other'>Other results (no counterpart in the paper)"
                   + (f" — {e(SMOKE_BANNER)}" if osmoke else "") + "</h3>")
        out.append("<p class='legend'>Ours only: mean±std [number of seeds], percent.</p>")
        for s, _ in others:
            out.append(f"<table><caption>{e(s.heading)}</caption><tr><th></th>"
                       + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>")
            for row_label, cells in s.rows:
                out.append(f"<tr><th>{e(row_label)}</th>" + "".join(
                    f"<td{' class=smoke' if c.ours.smoke else ''}>{e(ours_text(c.ours))}</td>" for c in cells)
                           + "</tr>")
            out.append("</table>")
    return "\n".join(out) + "\n"


def render_tables(results_dir, fmt: str = "md") -> str:
    """Tables 1-9 of the paper from the records in ``results_dir``: ``md``, ``csv`` or ``html``."""
    tables, ours = build_tables(_load(results_dir))
    if fmt == "md":
        return render_md(tables, ours)
    if fmt == "csv":
        return render_csv(tables, ours)
    if fmt == "html":
        return render_html(tables, ours)
    raise ValueError(f"unknown table format {fmt!r} (md, csv or html)")
