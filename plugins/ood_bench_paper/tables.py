"""The paper's Tables 1-9, laid out as in the paper, with our numbers beside the paper's.

Every table cell compares one key ``(id_dataset, arch, loss, detector, ood_dataset, metric)``:

* **ours**: mean +- std over seeds, taken from :func:`logitnorm_bench.leaderboard.build_rows`
  (the leaderboard's aggregation; nothing is re-aggregated here).  Metrics are in percent
  like the paper, except the logit L2 norms of Table 5 (raw).
* **paper**: the printed number from ``paper_tables.yaml`` for *that* table (so Table 2's
  CIFAR-100 LogitNorm MSP row shows Table 2's 58.35, Table 1's average shows 58.49).
* **diff**: ours - paper.

A cell that has not been run shows ``—`` (never 0).

Which records count
-------------------
* Only the paper's six OOD sets (``PAPER_OOD_SETS``) enter the paper tables, so an
  ``average`` cell is the mean over exactly those sets.  An average over fewer than six sets
  is not compared with the paper: it shows ``—`` with a note ``k/6 OOD sets``.
* Run metrics (ID accuracy, ECE, ECE with TS, logit norm on ID data) are per training run;
  they are read from any leaderboard row of the run (MSP rows preferred).  Table 5's OOD logit
  norm is read from the run's SVHN rows.

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
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import yaml

from logitnorm_bench.leaderboard import build_rows
from logitnorm_bench.metrics import METRICS, metrics_of
from logitnorm_bench.reporting import (
    Cell, Results, Section, Table, Value, ood_label, row_value, same, variant_key, variant_label,
)

PAPER_YAML = Path(__file__).resolve().parent / "paper_tables.yaml"
PAPER_ID_DATASETS = ("cifar10", "cifar100")
PAPER_OOD_SETS = ("textures", "svhn", "lsun_c", "lsun_r", "isun", "places365")
OOD_METRICS = tuple(m.name for m in metrics_of("cell"))

LABELS = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "textures": "Textures", "svhn": "SVHN", "lsun_c": "LSUN-C", "lsun_r": "LSUN-R", "isun": "iSUN",
    "places365": "Places365", "average": "Average",
    "wrn40_2": "WRN-40-2", "resnet34": "ResNet-34", "densenet_bc": "DenseNet-BC",
    "ce": "CE", "logitnorm": "LogitNorm", "logitpenalty": "LogitPenalty", "godin": "GODIN",
    "msp": "MSP", "odin": "ODIN", "energy": "Energy", "gradnorm": "GradNorm",
    # The catalogue's labels, with the paper's arrows on the OOD metrics; the OOD logit norm is SVHN's.
    **{m.name: m.label + (m.arrow if m.scope == "cell" else "") for m in METRICS.values()},
    "logit_norm_ood": METRICS["logit_norm_ood"].label + " (SVHN)",
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


def matches(params: dict, spec: dict) -> bool:
    return all(k in params and same(params[k], v) for k, v in spec.items())


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

def paper_rows(results: Results) -> list[dict]:
    """Leaderboard rows of the paper's ID datasets over only the paper's six OOD sets, so that
    "average" means what the paper's average means."""
    return build_rows([r for r in results.records if r.get("id_dataset") in PAPER_ID_DATASETS
                       and r.get("ood_dataset") in PAPER_OOD_SETS])


class Ours:
    """Our aggregated numbers (leaderboard rows), looked up by paper key."""

    def __init__(self, results: Results):
        self.by_key: dict[tuple, list[dict]] = {}
        self.sets_of: dict[tuple, set] = {}
        for row in paper_rows(results):
            self.by_key.setdefault(self._key(row) + (ood_label(row),), []).append(row)
            if row["ood_dataset"] != "average" and row["n_seeds"] > 0:
                self.sets_of.setdefault(variant_key(row), set()).add(ood_label(row))
        self.by_run_key: dict[tuple, list[dict]] = {}
        for row in results.rows:
            self.by_run_key.setdefault((row["id_dataset"], row["arch"], row["loss"]), []).append(row)

    @staticmethod
    def _key(row) -> tuple:
        return (row["id_dataset"], row["arch"], row["loss"], row["detector"])

    def lookup(self, id_dataset, arch, loss, detector, ood_dataset, metric) -> Value:
        if METRICS[metric].scope != "cell":
            return self._run_metric(id_dataset, arch, loss, ood_dataset, metric)
        cands = [r for r in self.by_key.get((id_dataset, arch, loss, detector, ood_dataset), [])
                 if r["n_seeds"] > 0 and r.get(metric) is not None]
        failed = sum(r["n_failed"] for r in self.by_key.get((id_dataset, arch, loss, detector, ood_dataset), []))
        if ood_dataset == "average":
            # Compared with the paper only when the variant has all six OOD sets.
            n = len(PAPER_OOD_SETS)
            ks = [len(s) for v, s in self.sets_of.items()
                  if (v[0], v[1], v[3], v[5]) == (id_dataset, arch, loss, detector)]
            cands = [r for r in cands if len(self.sets_of.get(variant_key(r), ())) == n]
            if not cands and ks:
                k = max(ks)
                return Value(note=f"only {k}/{n} OOD sets" if k < n else f"no seed has all {n} OOD sets")
        if not cands:
            return Value(note=f"{failed} failed" if failed else "")
        spec_l, spec_d = paper_params(id_dataset, loss, detector)
        best = max(enumerate(cands), key=lambda ir: (
            not ir[1]["smoke"],
            matches(ir[1]["loss_params"], spec_l)
            and matches(ir[1]["detector_params"], spec_d),
            ir[1]["n_seeds"], -ir[0]))[1]
        expected = {"arch_params": {}, "loss_params": spec_l, "detector_params": spec_d}
        return dataclasses.replace(row_value(best, metric), variant=variant_label(best, cands, expected))

    def _run_metric(self, id_dataset, arch, loss, ood_dataset, metric) -> Value:
        rows = [r for r in self.by_run_key.get((id_dataset, arch, loss), [])
                if r["n_seeds"] > 0 and r.get(metric) is not None]
        if METRICS[metric].scope == "ood_set":
            rows = [r for r in rows if ood_label(r) == ood_dataset]  # the paper's set, not one with params
        else:
            rows = [r for r in rows if r["ood_dataset"] != "average"]
        if not rows:
            return Value()
        spec_l, _ = paper_params(id_dataset, loss, None)
        best = max(enumerate(rows), key=lambda ir: (
            not ir[1]["smoke"], matches(ir[1]["loss_params"], spec_l),
            ir[1]["n_seeds"], ir[1]["detector"] == "msp", -ir[0]))[1]
        expected = {"arch_params": {}, "loss_params": spec_l}  # any detector's row holds the run's metrics
        return dataclasses.replace(row_value(best, metric), variant=variant_label(best, rows, expected))


# ------------------------------------------------------------------------------------------
# Table layouts
# ------------------------------------------------------------------------------------------

def _table(number: int, title: str, sections: list[Section], notes: list[str]) -> Table:
    return Table(f"table{number}", f"Table {number}: {title}", sections, notes, label=f"Table {number}")


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
    tables.append(_table(1, "OOD detection, CE vs LogitNorm, WRN-40-2, softmax confidence (MSP) score",
                        secs, [LSUN_NOTE]))
    # Table 2
    secs = []
    for id_ds in PAPER_ID_DATASETS:
        cols, rows = _ood_block(id_ds, "wrn40_2", ["msp", "odin", "energy", "gradnorm"], ["average"],
                                row_label=lambda d, o: label(d))
        secs.append(Section(f"{label(id_ds)} (ID), WRN-40-2, average over the six OOD sets", cols, rows))
    tables.append(_table(2, "OOD detection with various scoring functions, CE vs LogitNorm, WRN-40-2",
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
    tables.append(_table(3, "OOD detection on CIFAR-10 with different architectures, CE vs LogitNorm, "
                                  "MSP score (OOD metrics averaged over the six OOD sets)",
                        [Section("CIFAR-10 (ID)", [f"{label(m)} {label(l)}" for m, l in cols], rows)],
                        ["DenseNet = DenseNet-BC (captions of Tables 3 and 8)."]))
    # Table 4
    cols = _cols(("ece", "ece_ts"), ("ce", "logitnorm"))
    rows = [(label(id_ds), [Cell((id_ds, "wrn40_2", l, None, None, m), f"{label(m)} {label(l)}") for m, l in cols])
            for id_ds in PAPER_ID_DATASETS]
    tables.append(_table(4, "Expected calibration error (%), M = 15 bins, WRN-40-2, without / with "
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
    tables.append(_table(5, "Different losses on CIFAR-10, WRN-40-2: OOD detection (MSP, average over six "
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
    tables.append(_table(6, "GODIN vs LogitNorm on CIFAR-10, WRN-40-2 (average over six OOD sets)",
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
    tables.append(_table(7, "Per-OOD-set detail of Table 2: ODIN / Energy / GradNorm, CE vs LogitNorm, WRN-40-2",
                        secs, [LSUN_NOTE, "The paper's caption says softmax score; the rows are ODIN / Energy / "
                                          "GradNorm (per-set MSP detail is Table 1)."]))
    # Table 8
    secs = []
    for arch in ("resnet34", "densenet_bc"):
        cols, rows = _ood_block("cifar10", arch, ["msp"], PAPER_OOD_SETS)
        secs.append(Section(f"CIFAR-10 (ID), {label(arch)}, MSP score", cols, rows))
    tables.append(_table(8, "Per-OOD-set detail of Table 3: ResNet-34 and DenseNet-BC, CE vs LogitNorm, "
                                  "MSP score",
                        secs, [LSUN_NOTE.replace("the printed table", "Table 1 (probably the same here)")]))
    # Table 9
    rows = []
    for loss, det in (("logitpenalty", "msp"), ("godin", "godin")):
        for ood in PAPER_OOD_SETS:
            rows.append((f"{label(loss)} · {label(ood)}",
                         [Cell(("cifar10", "wrn40_2", loss, det, ood, m), label(m)) for m in ood3]))
    tables.append(_table(9, "Per-OOD-set detail of LogitPenalty (lambda = 0.05, MSP score) and GODIN "
                                  "(GODIN score), WRN-40-2 on CIFAR-10",
                        [Section("CIFAR-10 (ID)", [label(m) for m in ("fpr95", "auroc", "aupr_in")], rows)],
                        [LSUN_NOTE.replace("the printed table", "Table 1 (probably the same here)")]))
    return tables


def build_tables(results: Results) -> list[Table]:
    """Tables 1-9 with our numbers and the paper's."""
    ours = Ours(results)
    paper = paper_cells()
    tables = layouts()
    for t in tables:
        for _, _, c in t.cells():
            c.paper = paper.get(t.name, {}).get(c.key)
            c.ours = ours.lookup(*c.key)
    return tables
