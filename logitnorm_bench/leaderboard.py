"""The leaderboard: one row per (id_dataset, arch, loss + params, detector + params, ood_dataset),
aggregated over seeds, plus an ``average`` row over the OOD sets of each group, and an ``average:<label>`` row over those
of each ``ood_group`` label the records carry (OpenOOD's near / far).  Always rebuilt
from the records; metrics in percent like the paper; mean and std in separate numeric columns.

The ``average`` row averages, per seed, the metrics over the group's OOD sets (the paper's
"Average" column), then takes mean and std over the seeds that have every OOD set.

Columns come from the metric catalogue (:data:`logitnorm_bench.metrics.METRICS`).  :func:`build_rows`
keeps parameters as mappings (tables and report read them as data); only :func:`to_csv` writes them
as canonical JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

from logitnorm_bench.metrics import METRICS
from logitnorm_bench.records import ResultsDir, atomic_write_bytes

KEY_COLUMNS = ("id_dataset", "arch", "loss", "loss_params", "detector", "detector_params", "ood_dataset")
GROUP_PREFIX = "average:"  #: a group's average row: ``average:near`` over the OOD sets labelled ``near``
#: Dataset params (a suite's ``id_dataset_params`` / ``ood_dataset_params``): every row has them (as
#: mappings), but the CSV has their columns only when some row sets one, so a leaderboard without
#: dataset params keeps the bytes it always had.
DATASET_PARAM_COLUMNS = ("id_dataset_params", "ood_dataset_params")
PARAM_COLUMNS = ("arch_params", "loss_params", "detector_params") + DATASET_PARAM_COLUMNS


def columns(rows: list[dict] | None = None) -> tuple[str, ...]:
    """The CSV's columns: keys, then mean and std of every catalogue metric, then bookkeeping (the
    dataset params' columns only when one of ``rows`` sets them)."""
    dataset = tuple(c for c in DATASET_PARAM_COLUMNS if any(r.get(c) for r in rows or ()))
    return (KEY_COLUMNS + ("n_seeds",) + tuple(c for m in METRICS for c in (m, f"{m}_std"))
            + ("arch_params",) + dataset + ("seeds", "n_failed", "smoke", "run_ids"))


def params_text(p: dict | None) -> str:
    """Canonical JSON of a parameter mapping: the CSV's cell, and a hashable key."""
    return json.dumps(p or {}, sort_keys=True, separators=(",", ":"))


def _group_key(rec: dict) -> tuple:
    return (rec["id_dataset"], params_text(rec.get("id_dataset_params")), rec["arch"],
            params_text(rec.get("arch_params")), rec["loss"], params_text(rec.get("loss_params")),
            rec["detector"], params_text(rec.get("detector_params")), bool(rec.get("smoke")))


def _ood_key(rec: dict) -> tuple[str, str]:
    """One OOD set: its name and its params (two image folders are two rows)."""
    return rec["ood_dataset"], params_text(rec.get("ood_dataset_params"))


def _value(rec: dict, name: str) -> float | None:
    m = METRICS[name]
    return m.display((rec.get(m.record_key) or {}).get(name))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def build_rows(records: list[dict]) -> list[dict]:
    groups: dict[tuple, dict[tuple, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    failed: dict[tuple, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
    for rec in records:
        if rec.get("split", "test") != "test":
            continue  # a selection's validation cells choose a value; they are not results
        key = _group_key(rec)
        if rec.get("status") != "ok":
            failed[key][_ood_key(rec)] += 1
            continue
        groups[key][_ood_key(rec)][rec["seed"]] = rec
    rows = []
    for key in sorted(set(groups) | set(failed)):
        id_ds, id_p, arch, arch_p, loss, loss_p, det, det_p, smoke = key
        base = {"id_dataset": id_ds, "id_dataset_params": json.loads(id_p), "arch": arch,
                "arch_params": json.loads(arch_p), "loss": loss, "loss_params": json.loads(loss_p),
                "detector": det, "detector_params": json.loads(det_p), "smoke": smoke, "ood_dataset_params": {}}
        per_ood = groups.get(key, {})
        for ood in sorted(set(per_ood) | set(failed.get(key, {}))):
            by_seed = per_ood.get(ood, {})
            row = dict(base, ood_dataset=ood[0], ood_dataset_params=json.loads(ood[1]), n_seeds=len(by_seed),
                       seeds=" ".join(map(str, sorted(by_seed))),
                       n_failed=failed.get(key, {}).get(ood, 0),
                       run_ids=" ".join(sorted({r["run_id"] for r in by_seed.values()})))
            for m in METRICS:
                vals = [v for r in by_seed.values() if (v := _value(r, m)) is not None]
                row[m], row[f"{m}_std"] = _mean_std(vals)
            rows.append(row)
        if len(per_ood) > 1:
            rows.append(_average_row(base, "average", per_ood, sorted(per_ood), sum(failed.get(key, {}).values())))
        by_group: dict[str, list[str]] = defaultdict(list)
        for ood in sorted(per_ood):
            labels = {r.get("ood_group") for r in per_ood[ood].values()} - {None}
            if len(labels) == 1:  # an OOD set labelled two ways (two suites disagree) joins no group
                by_group[labels.pop()].append(ood)
        for label, oods in sorted(by_group.items()):
            n_failed = sum(n for o, n in failed.get(key, {}).items() if o in oods)
            rows.append(_average_row(base, f"{GROUP_PREFIX}{label}", per_ood, oods, n_failed))
    return rows


def _average_row(base: dict, name: str, per_ood: dict, oods: list[str], n_failed: int) -> dict:
    """Per seed, the mean over ``oods`` of each metric; then mean and std over the seeds that have them all."""
    seeds = sorted(set.intersection(*(set(per_ood[o]) for o in oods)))
    row = dict(base, ood_dataset=name, n_seeds=len(seeds), seeds=" ".join(map(str, seeds)), n_failed=n_failed,
               run_ids=" ".join(sorted({per_ood[o][s]["run_id"] for o in oods for s in seeds})))
    for m in METRICS:
        per_seed = []
        for s in seeds:
            vals = [_value(per_ood[o][s], m) for o in oods]
            if all(v is not None for v in vals):
                per_seed.append(statistics.fmean(vals))
        row[m], row[f"{m}_std"] = _mean_std(per_seed)
    return row


def is_average(ood_dataset: str) -> bool:
    """The overall ``average`` row, or a group's ``average:<group>`` row."""
    return ood_dataset == "average" or ood_dataset.startswith(GROUP_PREFIX)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    cols = columns(rows)
    writer = csv.DictWriter(buf, fieldnames=list(cols), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: params_text(row.get(c)) if c in PARAM_COLUMNS else _fmt(row.get(c)) for c in cols})
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_leaderboard(results_root: str | Path) -> Path:
    results = ResultsDir(results_root)
    rows = build_rows(list(results.records()))
    path = Path(results_root) / "leaderboard.csv"
    atomic_write_bytes(path, to_csv(rows).encode())
    return path


def recompute_from_scores(results_root: str | Path, log=lambda message: None) -> tuple[int, int]:
    """Recompute every per-cell metric of the catalogue from the stored per-sample scores.

    A record whose stored metrics differ from the recomputed ones (a metric added to the catalogue,
    a metric function fixed) is rewritten.  Returns (records checked, records rewritten).
    Call it while holding the results folder's exclusive lock.
    """
    from logitnorm_bench.metrics import ood_metrics
    from logitnorm_bench.records import RecordError, atomic_write_json

    results = ResultsDir(results_root)
    checked = rewritten = 0
    for rec in results.records():
        if rec.get("status") != "ok" or not rec.get("scores"):
            continue
        try:
            id_scores, ood_draws = results.read_scores(rec)
        except (OSError, KeyError, ValueError, RecordError) as exc:
            log(f"warning: record {rec['cell_id']}.json: its scores cannot be read ({exc}); left as it is")
            continue
        per_draw = [ood_metrics(id_scores, s) for s in ood_draws]
        fresh = {k: sum(m[k] for m in per_draw) / len(per_draw) for k in per_draw[0]}
        checked += 1
        if fresh != rec["metrics"]:
            rec = dict(rec, metrics=fresh, **({"draws": per_draw} if len(per_draw) > 1 else {}))
            atomic_write_json(results.record_path(rec["cell_id"]), rec)
            rewritten += 1
    return checked, rewritten
