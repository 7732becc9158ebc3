"""The end of a run: what the suite's records say, what failed and why, and where everything is.

* per ID dataset, one row per loss x detector: FPR95 and AUROC averaged over the OOD sets and seeds
  (percent), and the ID accuracy averaged over the seeds;
* the failed cells grouped by error message, each with one example record;
* the results folder, the leaderboard, the report command and the invocation's log file.

Only the suite's own cells count (a results folder may hold other suites' records too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from logitnorm_bench.records import ResultsDir

#: The table's metrics: (record section, name, heading).
COLUMNS = (("metrics", "fpr95", "FPR95"), ("metrics", "auroc", "AUROC"), ("run_metrics", "id_acc", "ID acc"))


def _label(name: str, params: dict | None) -> str:
    params = params or {}
    return f"{name}({','.join(f'{k}={v}' for k, v in sorted(params.items()))})" if params else name


def _short(label: str, labels: list[str]) -> str:
    """``maxlogit(temperature=1.0)`` as ``maxlogit`` when no other row of the table is another ``maxlogit``."""
    name = label.split("(", 1)[0]
    return name if len({x for x in labels if x.split("(", 1)[0] == name}) == 1 else label


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


@dataclass
class Failure:
    error: str
    count: int
    example: Path


@dataclass
class RunSummary:
    """What :func:`summarize` found; :meth:`render` is the text the CLI prints."""

    results: Path
    leaderboard: Path | None = None
    log_file: Path | None = None
    tables: dict[str, list[dict]] = field(default_factory=dict)  #: ID dataset -> rows
    oods: dict[str, set] = field(default_factory=dict)
    seeds: dict[str, set] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    n_ok: int = 0
    n_failed: int = 0

    def render(self) -> str:
        lines: list[str] = []
        for id_ds, rows in self.tables.items():
            lines.append(f"{id_ds}: mean over {len(self.oods[id_ds])} OOD set(s) and {len(self.seeds[id_ds])} "
                         "seed(s), percent (FPR95: lower is better)")
            wl = max(len("loss"), *(len(r["loss"]) for r in rows))
            wd = max(len("detector"), *(len(r["detector"]) for r in rows))
            heads = [h for _, _, h in COLUMNS]
            lines.append(f"  {'loss':<{wl}}  {'detector':<{wd}}  " + "  ".join(f"{h:>6}" for h in heads))
            for r in rows:
                cells = "  ".join(f"{r[h]:6.2f}" if r[h] is not None else f"{'-':>6}" for h in heads)
                lines.append(f"  {r['loss']:<{wl}}  {r['detector']:<{wd}}  {cells}")
        if self.failures:
            lines.append(f"failed cells: {self.n_failed} (of {self.n_ok + self.n_failed}), by error:")
            for f in self.failures:
                lines.append(f"  {f.count:>4} x {f.error}")
                lines.append(f"         e.g. {f.example}")
        lines.append(f"results:     {self.results}")
        if self.leaderboard is not None:
            lines.append(f"leaderboard: {self.leaderboard}")
        lines.append(f"report:      ood-bench report {self.results}  (writes {self.results / 'report' / 'index.html'})")
        if self.log_file is not None:
            lines.append(f"log:         {self.log_file}")
        return "\n".join(lines)


def summarize(plan, results_root: str | Path, *, leaderboard: Path | None = None,
              log_file: Path | None = None) -> RunSummary:
    """The summary of ``plan``'s records in ``results_root`` (read without setting anything aside)."""
    results = ResultsDir(results_root)
    wanted = {c.cell_id for c in plan.cells}
    for g in plan.selections:
        for cells in g.test_cells.values():
            wanted.update(c.cell_id for c in cells)
    summary = RunSummary(results=results.root, leaderboard=leaderboard, log_file=log_file)
    groups: dict[tuple, list[dict]] = {}
    errors: dict[str, list[dict]] = {}
    for rec in results.records(warn=lambda message: None):  # the run already warned about the bad ones
        if rec["cell_id"] not in wanted:
            continue
        if rec.get("status") != "ok":
            summary.n_failed += 1
            errors.setdefault(str(rec.get("error") or "(no error message)"), []).append(rec)
            continue
        summary.n_ok += 1
        if rec.get("split", "test") != "test":
            continue  # a selection's validation cells are not results
        key = (rec["id_dataset"], _label(rec["arch"], rec.get("arch_params")), _label(rec["loss"], rec.get("loss_params")),
               _label(rec["detector"], rec.get("detector_params")))
        groups.setdefault(key, []).append(rec)
        summary.oods.setdefault(rec["id_dataset"], set()).add(rec["ood_dataset"])
        summary.seeds.setdefault(rec["id_dataset"], set()).add(rec["seed"])
    archs: dict[str, set] = {}
    for id_ds, arch, _, _ in groups:
        archs.setdefault(id_ds, set()).add(arch)
    for (id_ds, arch, loss, detector), recs in sorted(groups.items()):
        loss, detector = (_short(loss, [k[2] for k in groups if k[0] == id_ds]),
                          _short(detector, [k[3] for k in groups if k[0] == id_ds]))
        row = {"loss": f"{arch} {loss}" if len(archs[id_ds]) > 1 else loss, "detector": detector}
        for section, name, head in COLUMNS:
            if section == "run_metrics":  # one value per training run (seed), not per cell
                per_run = {r["run_id"]: (r.get(section) or {}).get(name) for r in recs}
                value = _mean(list(per_run.values()))
            else:
                value = _mean([(r.get(section) or {}).get(name) for r in recs])
            row[head] = None if value is None else 100 * value
        summary.tables.setdefault(id_ds, []).append(row)
    for error, recs in sorted(errors.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        summary.failures.append(Failure(error, len(recs), results.record_path(recs[0]["cell_id"])))
    return summary
