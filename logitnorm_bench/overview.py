"""The overview: the report section every results folder gets, whatever its suite.

* **Leaderboard**, one table per ID dataset, a block per architecture: one row per loss +
  detector variant, ranked by the catalogue's first OOD metric (FPR95) over the OOD sets, with
  that metric per OOD set and per group average (``average:near``, ``average:far``, when the suite
  labels its OOD sets with ``ood_group``) and every OOD metric on the average; then one row per trained model
  with the run metrics (accuracy, calibration, logit norms).
* **Score histograms** (``scores_<id>_<arch>.png``): ID vs OOD scores of every loss x detector
  variant, from the records' ``score_hist``, seeds pooled.
* **Training curves** (``training_<id>_<arch>.png``): training loss, accuracy and logit norms
  per epoch from ``runs/*/run.json``, mean over seeds.
* **Sweeps** (``sweep_<id>_<component>_<name>_<param>.png``): every parameter run with more
  than one value while everything else stays the same, against every metric it can affect.

Metric labels, directions and units come from the metric catalogue
(:data:`logitnorm_bench.metrics.METRICS`).  Real results hide smoke ones of the same model.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from logitnorm_bench.figures import epoch_means, file_name, finish, new_figure, pooled_fraction, score_range
from logitnorm_bench.leaderboard import GROUP_PREFIX, is_average, params_text
from logitnorm_bench.metrics import METRICS, Metric, metrics_of
from logitnorm_bench.reporting import (
    Cell, Figure, ReportSection, Results, Section, Table, Value, fmt_param, ood_label, row_value, variant_key, variant_name,
)

COMPONENTS = ("arch", "loss", "detector")
HIST_BINS = 30
ID_COLOR, OOD_COLOR = "#1f77b4", "#ff7f0e"
# Per-epoch history fields of a training run: panel title, then the fields drawn (solid, dashed).
CURVES = (("training loss", ("loss",)), ("training accuracy", ("train_acc",)),
          ("mean L2 norm of the logits", ("logit_norm_id", "logit_norm_ood")))


class Overview(ReportSection):
    title = "Overview of all results"

    @property
    def description(self) -> str:
        raw = ", ".join(m.label for m in METRICS.values() if not m.percent)
        return (f"Ours only: mean±std [number of seeds]. Loss + detector rows are ranked by "
                f"{_column(_headline())} (on the average over OOD sets, or the only set), best first. Metrics in "
                f"percent, except {raw} (raw). ↑/↓: higher/lower is better.")

    def tables(self, results: Results) -> list[Table]:
        ids = sorted({r["id_dataset"] for r in results.rows})
        return [_leaderboard(id_ds, [r for r in results.rows if r["id_dataset"] == id_ds]) for id_ds in ids]

    def figures(self, results: Results, out_dir: Path) -> list[Figure]:
        return (_score_figures(results.records, out_dir) + _training_figures(results.runs, out_dir)
                + _sweep_figures(results.rows, out_dir))


def _headline() -> Metric:
    """The metric that ranks the leaderboard: the catalogue's first OOD metric."""
    return metrics_of("cell")[0]


def _column(m: Metric, where: str = "") -> str:
    return f"{m.label}{m.arrow}" + (f" {where}" if where else "")


def _model_key(item: dict) -> tuple:
    """(id_dataset, arch, arch params) of a leaderboard row, record or run's ``run``."""
    return item["id_dataset"], item["arch"], params_text(item.get("arch_params"))


def _real_over_smoke(items: list, smoke_of) -> list:
    """The real items when there are any, else the smoke ones."""
    real = [it for it in items if not smoke_of(it)]
    return real or items


# ------------------------------------------------------------------------------------------
# The leaderboard
# ------------------------------------------------------------------------------------------

def _variants(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """Leaderboard rows by variant (every parameter, smoke or real): {variant: {ood_dataset: row}}."""
    out: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        out[variant_key(r)][ood_label(r)] = r
    return out


def _summary(by_ood: dict[str, dict]) -> dict | None:
    """The row that sums a variant up: its average over OOD sets, or its only OOD set."""
    if "average" in by_ood:
        return by_ood["average"]
    return next(iter(by_ood.values())) if len(by_ood) == 1 else None


def _leaderboard(id_ds: str, rows: list[dict]) -> Table:
    sections = []
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_model[_model_key(r)].append(r)
    for key in sorted(by_model):
        mrows = _real_over_smoke(by_model[key], lambda r: r["smoke"])
        sections += [_detection(id_ds, mrows), _models(id_ds, mrows)]
    return Table(f"leaderboard_{id_ds}", f"Leaderboard: {id_ds} (ID)", sections)


def _heading(id_ds: str, rows: list[dict], what: str) -> str:
    """``mnist (ID), mlp(width=128): <what>``: the rows' architecture with its parameters."""
    return f"{id_ds} (ID), {variant_name(rows[0]['arch'], rows[0]['arch_params'])}: {what}"


def _detection(id_ds: str, rows: list[dict]) -> Section:
    """One row per loss + detector variant: the headline metric per OOD set, every OOD metric on the summary."""
    arch = rows[0]["arch"]
    variants = _variants(rows)
    named = {o for by_ood in variants.values() for o in by_ood}
    groups = sorted(o for o in named if o.startswith(GROUP_PREFIX))  # average:near, average:far, ...
    oods = sorted(o for o in named if not is_average(o))
    at = "average" if len(oods) > 1 else oods[0]
    head = _headline()
    per_set = [(head, o) for o in oods + groups]
    columns = per_set + [(m, at) for m in metrics_of("cell") if (m, at) not in per_set]

    def rank(by_ood):
        s = _summary(by_ood)
        v = s.get(head.name) if s else None
        return (v is None, 0 if v is None else -v if head.higher_is_better else v, _row_label(by_ood))

    out = []
    for by_ood in sorted(variants.values(), key=rank):
        first = next(iter(by_ood.values()))
        cells = [Cell((id_ds, arch, first["loss"], first["detector"], o, m.name), _column(m, o),
                      row_value(by_ood[o], m.name) if o in by_ood else Value()) for m, o in columns]
        out.append((_row_label(by_ood), cells))
    return Section(_heading(id_ds, rows, "OOD detection"), [_column(m, o) for m, o in columns], out)


def _row_label(by_ood: dict[str, dict]) -> str:
    r = next(iter(by_ood.values()))
    text = f"{variant_name(r['loss'], r['loss_params'])} + {variant_name(r['detector'], r['detector_params'])}"
    return text + (" (smoke)" if r["smoke"] else "")


def _models(id_ds: str, rows: list[dict]) -> Section:
    """One row per trained model (loss variant): its run metrics and OOD-set metrics."""
    arch = rows[0]["arch"]
    trainings: dict[tuple, list[tuple[dict, bool]]] = defaultdict(list)  # loss variant -> (row, is summary)
    for by_ood in _variants(rows).values():
        s = _summary(by_ood)
        for r in by_ood.values():
            trainings[(r["loss"], params_text(r["loss_params"]), r["smoke"])].append((r, r is s))
    metrics = metrics_of("run", "ood_set")
    out = []
    for key in sorted(trainings):
        first = trainings[key][0][0]
        cells = []
        for m in metrics:
            # A run metric is the same in every row of the training; an OOD-set one is read on the summary.
            measured = [r for r, summary in trainings[key]
                        if (summary or m.scope == "run") and r["n_seeds"] > 0 and r.get(m.name) is not None]
            best = max(measured, key=lambda r: r["n_seeds"], default=None)
            at = ood_label(best) if best and m.scope == "ood_set" else None
            cells.append(Cell((id_ds, arch, first["loss"], None, at, m.name), _column(m),
                              row_value(best, m.name) if best else Value()))
        out.append((variant_name(first["loss"], first["loss_params"]) + (" (smoke)" if first["smoke"] else ""),
                     cells))
    return Section(_heading(id_ds, rows, "trained models"), [_column(m) for m in metrics], out)


# ------------------------------------------------------------------------------------------
# Score histograms
# ------------------------------------------------------------------------------------------

def _score_figures(records, out: Path) -> list[Figure]:
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and isinstance(r.get("score_hist"), dict) and r["score_hist"].get("edges"):
            by_model[_model_key(r)].append(r)
    figs = []
    for key in sorted(by_model):
        recs = _real_over_smoke(by_model[key], lambda r: r.get("smoke"))
        id_ds, arch = key[0], variant_name(recs[0]["arch"], recs[0].get("arch_params") or {})
        # The OOD set with the most records; ties go to the one monitored during training.
        counts = Counter(ood_label(r) for r in recs)
        monitored = {(r.get("train") or {}).get("monitor_ood") for r in recs}
        ood = max(sorted(counts), key=lambda o: (counts[o], o in monitored))
        panels: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in recs:
            if ood_label(r) == ood:
                loss = variant_name(r["loss"], r.get("loss_params") or {})
                panels[(loss, variant_name(r["detector"], r.get("detector_params") or {}))].append(r["score_hist"])
        losses = sorted({lo for lo, _ in panels})
        detectors = sorted({d for _, d in panels})
        fig = new_figure(2.4 * len(detectors) + 0.6, 1.9 * len(losses) + 0.9)
        axes = fig.subplots(len(losses), len(detectors), squeeze=False)
        legend_ax = None
        for (i, loss), (j, det) in ((a, b) for a in enumerate(losses) for b in enumerate(detectors)):
            ax = axes[i][j]
            if i == 0:
                ax.set_title(det.replace("(", "\n(", 1), fontsize=7)
            if j == 0:
                ax.set_ylabel(loss.replace("(", "\n(", 1), fontsize=7)
            hists = panels.get((loss, det))
            if not hists:
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            lo, hi = score_range(hists)
            target = np.linspace(lo, hi, HIST_BINS + 1)
            for side, color, what in (("id", ID_COLOR, f"ID ({id_ds})"), ("ood", OOD_COLOR, f"OOD ({ood})")):
                ax.stairs(pooled_fraction(hists, side, target), target, fill=True, alpha=0.45, color=color,
                          label=what)
            ax.tick_params(labelsize=6)
            legend_ax = legend_ax or ax
        legend_ax.legend(fontsize=6)
        smoke = any(r.get("smoke") for r in recs)
        figs.append(finish(
            fig, out, file_name("scores", id_ds, arch), "Score histograms",
            f"Detector scores, {id_ds} / {arch}: ID vs OOD ({ood})",
            f"Scores of ID test images vs OOD ({ood}) images, {id_ds} / {arch}: one panel per loss (rows) and "
            "detector (columns), higher = more in-distribution; seeds pooled, each histogram normalised to sum 1.",
            smoke))
    return figs


# ------------------------------------------------------------------------------------------
# Training curves
# ------------------------------------------------------------------------------------------

def _training_figures(runs, out: Path) -> list[Figure]:
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["run"].get("id_dataset") and r["run"].get("arch"):
            by_model[_model_key(r["run"])].append(r)
    figs = []
    for key in sorted(by_model):
        mruns = _real_over_smoke(by_model[key], lambda r: r["run"].get("smoke"))
        id_ds, arch = key[0], variant_name(mruns[0]["run"]["arch"], mruns[0]["run"].get("arch_params") or {})
        variants: dict[str, list[dict]] = defaultdict(list)
        for r in mruns:
            variants[variant_name(r["run"].get("loss", "?"), r["run"].get("loss_params") or {})].append(r)
        panels = [(title, fields) for title, fields in CURVES
                  if any(epoch_means(mruns, f)[0] for f in fields)]
        if not panels:
            continue
        fig = new_figure(4.2 * len(panels), 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        from matplotlib.ticker import MaxNLocator

        for ax, (title, fields) in zip(axes, panels):
            values = []
            for n, name in enumerate(sorted(variants)):
                for field, style in zip(fields, ("-", "--")):
                    epochs, means = epoch_means(variants[name], field)
                    values += means
                    ax.plot(epochs, means, style, color=f"C{n % 10}",
                            label=f"{name} [{len(variants[name])} run(s)]" if style == "-" else None)
            pos = [v for v in values if v > 0]
            if pos and max(pos) / min(pos) > 50:
                ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        monitored = sorted({(r["run"].get("train") or {}).get("monitor_ood") for r in mruns} - {None})
        norms = ", ".join(METRICS[f].label for f in CURVES[-1][1])
        ood_text = f" and on images of the OOD set monitored during training ({', '.join(monitored)}; dashed)"
        figs.append(finish(
            fig, out, file_name("training", id_ds, arch), "Training curves",
            f"Training curves, {id_ds} / {arch}",
            f"Per training epoch, mean over seeds, {id_ds} / {arch}: the loss and accuracy on the training batches, "
            f"and the mean L2 norm of the raw logits ({norms}) on fixed ID test images (solid)"
            f"{ood_text if monitored else ''}.", any(r["run"].get("smoke") for r in mruns)))
    return figs


# ------------------------------------------------------------------------------------------
# Sweeps: a parameter run with several values, against every metric
# ------------------------------------------------------------------------------------------

def _sweep_figures(rows, out: Path) -> list[Figure]:
    summaries = [s for by_ood in _variants(rows).values() if (s := _summary(by_ood)) and s["n_seeds"] > 0]
    figs = []
    for id_ds in sorted({s["id_dataset"] for s in summaries}):
        srows = _real_over_smoke([s for s in summaries if s["id_dataset"] == id_ds], lambda r: r["smoke"])
        for comp in COMPONENTS:
            for name in sorted({r[comp] for r in srows}):
                crows = [r for r in srows if r[comp] == name]
                for param in sorted({k for r in crows for k in r[f"{comp}_params"]}):
                    swept = [r for r in crows if param in r[f"{comp}_params"]]
                    if _is_sweep(swept, comp, param):
                        figs.append(_sweep_figure(id_ds, comp, name, param, swept, out))
    return figs


def _is_sweep(rows: list[dict], comp: str, param: str) -> bool:
    """Whether some setting of everything else was run with more than one value of the parameter
    (one value per setting, e.g. a temperature fixed per loss, is a choice, not a sweep)."""
    values: dict[tuple, set] = defaultdict(set)
    for r in rows:
        values[tuple(_rest_of(r, comp, param))].add(fmt_param(r[f"{comp}_params"][param]))
    return any(len(v) > 1 for v in values.values())


def _rest_of(row: dict, comp: str, param: str) -> list[str]:
    """Every component of the row with its parameters, but the swept one."""
    parts = []
    for c in COMPONENTS:
        params = {k: v for k, v in row[f"{c}_params"].items() if not (c == comp and k == param)}
        parts.append(variant_name(row[c], params))
    return parts


def _sweep_figure(id_ds: str, comp: str, name: str, param: str, rows: list[dict], out: Path) -> Figure:
    # A detector's parameter changes only the OOD metrics; a loss's or an architecture's changes every metric.
    scopes = ("cell",) if comp == "detector" else ("cell", "run", "ood_set")
    metrics = [m for m in metrics_of(*scopes) if any(r.get(m.name) is not None for r in rows)]
    values = {fmt_param(r[f"{comp}_params"][param]): r[f"{comp}_params"][param] for r in rows}
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values())
    order = sorted(values, key=lambda t: (values[t] if numeric else t))
    x_of = {t: (float(values[t]) if numeric else i) for i, t in enumerate(order)}
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        lines[tuple(_rest_of(r, comp, param))].append(r)
    # Name a line by the parts that tell it from the others (its loss and detector when alone).
    varying = [i for i in range(len(COMPONENTS)) if len({k[i] for k in lines}) > 1] or [1, 2]

    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = new_figure(4.0 * ncols, 3.2 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, m in zip(axes, metrics):
        for n, key in enumerate(sorted(lines)):
            pts = sorted((x_of[fmt_param(r[f"{comp}_params"][param])], r[m.name], r[f"{m.name}_std"] or 0.0)
                         for r in lines[key] if r.get(m.name) is not None)
            if pts:
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=f"C{n % 10}",
                            label=" + ".join(key[i] for i in varying))
        if numeric and min(x_of.values()) > 0 and max(x_of.values()) / min(x_of.values()) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(order)), order, fontsize=7)
        ax.set_title(_column(m), fontsize=9)
        ax.set_ylabel(m.label + (" (%)" if m.percent else ""))
        ax.set_xlabel(f"{name} {param}")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7)
    return finish(
        fig, out, file_name("sweep", id_ds, comp, name, param), f"Sweep of {name} {param}",
        f"{comp} {name}: {param} on {id_ds}",
        f"Every metric against the {comp} {name}'s parameter {param} ({', '.join(order)}), {id_ds} (ID), one line "
        "per setting of everything else; OOD metrics on the average over OOD sets (or the only set); mean ± std "
        "over seeds.", any(r["smoke"] for r in rows))
