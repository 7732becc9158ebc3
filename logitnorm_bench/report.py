"""The report: the paper's figures as PNG files and one HTML page with Tables 1-9.

``write_report(results_dir, out_dir=None)`` writes into ``out_dir`` (default
``RESULTS/report``):

* ``fig4_<id>_<arch>.png``: Figure 4, the distribution of the MSP (softmax confidence) score
  on ID vs OOD test data, CE and LogitNorm side by side.  From the ``score_hist`` of MSP
  records; the OOD set shown is SVHN when present (the paper's running example), otherwise
  the OOD set monitored during training (Figure 1's), otherwise the one most often present;
  the seeds' histograms are pooled (re-binned onto one grid).
* ``fig1_<id>_<arch>.png``: Figure 1, the mean L2 norm of the logits of ID and OOD inputs per
  training epoch, CE vs LogitNorm, from ``runs/*/run.json`` histories (mean over seeds).
* ``fig5_<id>_<arch>.png``: Figure 5, the average FPR95 of LogitNorm + MSP against tau, when
  more than one tau was run.
* ``tables.md``, ``tables.csv``: :func:`logitnorm_bench.tables.render_tables`.
* ``index.html``: self-contained page (images by relative path) with the figures and tables.

Any results folder works: a figure without data is skipped and the page says why.  Smoke
results put a banner on the page and "SMOKE" on the figures.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logitnorm_bench.records import ResultsDir, atomic_write_bytes
from logitnorm_bench.tables import (
    PAPER_ID_DATASETS, SMOKE_BANNER, _matches, any_smoke, build_tables, label, paper_params, render_csv,
    render_html, render_md,
)

CE_COLOR, LN_COLOR = "#d62728", "#1f77b4"
ID_COLOR, OOD_COLOR = "#1f77b4", "#ff7f0e"
FIG4_BINS = 40


@dataclass
class Figure:
    name: str  # "Figure 4"
    file: str | None  # relative path of the PNG, None when skipped
    caption: str
    smoke: bool = False


def _new_figure(w: float, h: float):
    # The object-oriented API with the Agg canvas: no global pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _finish(fig, out: Path, number: int, id_ds: str, arch: str, title: str, caption: str,
            smoke: bool) -> Figure:
    """Title (and smoke watermark), lay out, save as ``fig<N>_<id>_<arch>.png``; the page's Figure."""
    fig.suptitle(title, fontsize=10)
    if smoke:
        fig.text(0.5, 0.5, "SMOKE — numbers mean nothing", ha="center", va="center", fontsize=20,
                 color="red", alpha=0.25, rotation=20)
    fig.tight_layout()
    fname = f"fig{number}_{_safe(id_ds)}_{_safe(arch)}.png"
    _save(fig, out / fname)
    return Figure(f"Figure {number}", fname, caption, smoke)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def _pick_variant(items: list, params_of, spec: dict):
    """Prefer real over smoke, then the paper's params, then the most items; returns the items
    of the chosen params variant."""
    groups: dict[str, list] = defaultdict(list)
    for it in items:
        groups[json.dumps(params_of(it), sort_keys=True)].append(it)
    best = max(sorted(groups), key=lambda k: (any(not _smoke(i) for i in groups[k]),
                                               _matches(json.loads(k), spec), len(groups[k])))
    return groups[best], json.loads(best)


def _smoke(item) -> bool:
    if "run" in item and isinstance(item["run"], dict):
        return bool(item["run"].get("smoke"))
    return bool(item.get("smoke"))


def _params_text(p: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p.items()))


# ------------------------------------------------------------------------------------------
# Figure 4: MSP score histograms
# ------------------------------------------------------------------------------------------

def _rebin(edges, counts, target) -> np.ndarray:
    """Counts of a histogram moved onto ``target`` edges, assuming uniform density in each bin."""
    edges = np.asarray(edges, dtype=float)
    cdf = np.concatenate([[0.0], np.cumsum(np.asarray(counts, dtype=float))])
    return np.diff(np.interp(target, edges, cdf, left=0.0, right=cdf[-1]))


def figure4(records: list[dict], out: Path) -> list[Figure]:
    msp = [r for r in records if r.get("status") == "ok" and r.get("detector") == "msp"
           and isinstance(r.get("score_hist"), dict) and r["score_hist"].get("edges")]
    figs = []
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in msp:
        by_model[(r["id_dataset"], r["arch"])].append(r)
    if not by_model:
        return [Figure("Figure 4", None, "skipped: no MSP records with score histograms (score_hist)")]
    for (id_ds, arch), recs in sorted(by_model.items()):
        per_loss = {}
        for loss in ("ce", "logitnorm"):
            lrecs = [r for r in recs if r["loss"] == loss]
            if not lrecs:
                continue
            spec_l, spec_d = paper_params(id_ds, loss, "msp")
            lrecs, lp = _pick_variant(lrecs, lambda r: r.get("loss_params") or {}, spec_l)
            lrecs, _ = _pick_variant(lrecs, lambda r: r.get("detector_params") or {}, spec_d)
            if any(not r.get("smoke") for r in lrecs):
                lrecs = [r for r in lrecs if not r.get("smoke")]
            per_loss[loss] = (lrecs, lp)
        if not per_loss:
            continue
        oods = defaultdict(int)
        for lrecs, _ in per_loss.values():
            for o in {r["ood_dataset"] for r in lrecs}:
                oods[o] += 1
        # SVHN (the paper's running example), else the OOD set monitored during training (Figure 1's),
        # else the one most often present.
        monitored = {(r.get("train") or {}).get("monitor_ood") for lrecs, _ in per_loss.values() for r in lrecs}
        ood = "svhn" if "svhn" in oods else max(sorted(oods), key=lambda o: (oods[o], o in monitored))
        chosen = {loss: ([r for r in lrecs if r["ood_dataset"] == ood], lp) for loss, (lrecs, lp) in per_loss.items()}
        all_edges = [e for lrecs, _ in chosen.values() for r in lrecs for e in (r["score_hist"]["edges"][0],
                                                                               r["score_hist"]["edges"][-1])]
        lo, hi = min(all_edges), max(all_edges)
        if 0.0 <= lo and hi <= 1.0 + 1e-6:  # a softmax probability: the paper's [0, 1] axis
            lo, hi = 0.0, 1.0
        target = np.linspace(lo, hi, FIG4_BINS + 1)
        smoke = any(r.get("smoke") for lrecs, _ in chosen.values() for r in lrecs)
        fig = _new_figure(10, 3.8)
        axes = fig.subplots(1, 2, sharex=True)
        for ax, (tag, loss) in zip(axes, (("(a)", "ce"), ("(b)", "logitnorm"))):
            name = "Cross-entropy loss" if loss == "ce" else "LogitNorm loss"
            if loss not in chosen or not chosen[loss][0]:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set_title(f"{tag} {name}", fontsize=10)
                continue
            lrecs, lp = chosen[loss]
            for side, color, lab in (("id", ID_COLOR, f"ID ({label(id_ds)})"),
                                     ("ood", OOD_COLOR, f"OOD ({label(ood)})")):
                counts = sum(_rebin(r["score_hist"]["edges"], r["score_hist"][side], target) for r in lrecs)
                total = counts.sum()
                frac = counts / total if total > 0 else counts
                ax.stairs(frac, target, fill=True, alpha=0.45, color=color, label=lab)
                ax.stairs(frac, target, color=color, linewidth=1.2)
            seeds = sorted({r["seed"] for r in lrecs})
            ptxt = f" ({_params_text(lp)})" if lp else ""
            ax.set_title(f"{tag} {name}{ptxt}, {len(seeds)} seed(s) pooled", fontsize=10)
            ax.set_xlabel("softmax confidence (MSP score)")
            ax.set_ylabel("fraction of samples")
            ax.legend(fontsize=8, loc="upper center")
            ax.set_xlim(lo, hi)
        figs.append(_finish(
            fig, out, 4, id_ds, arch,
            f"Figure 4: distribution of softmax confidence, {label(id_ds)} / {label(arch)}, OOD = {label(ood)}",
            f"Softmax confidence (MSP score) of ID vs OOD ({label(ood)}) test inputs, {label(id_ds)} / "
            f"{label(arch)}: (a) CE, (b) LogitNorm. Seeds pooled; each histogram normalised to sum 1.", smoke))
    return figs


# ------------------------------------------------------------------------------------------
# Figure 1: logit norm per epoch
# ------------------------------------------------------------------------------------------

def _runs(results: ResultsDir) -> list[dict]:
    runs_dir = results.root / "runs"
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        info = results.read_run(d.name)
        if info and isinstance(info.get("run"), dict) and isinstance(info.get("history"), list):
            out.append(info)
    return out


def figure1(runs: list[dict], out: Path) -> list[Figure]:
    usable = [r for r in runs if r["run"].get("loss") in ("ce", "logitnorm")
              and any(isinstance(h, dict) and h.get("logit_norm_id") is not None for h in r["history"])]
    if not usable:
        return [Figure("Figure 1", None, "skipped: no CE or LogitNorm training run with a per-epoch logit norm "
                                         "history (runs/*/run.json)")]
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in usable:
        by_model[(r["run"]["id_dataset"], r["run"]["arch"])].append(r)
    figs = []
    for (id_ds, arch), runs_m in sorted(by_model.items()):
        fig = _new_figure(7, 4.2)
        ax = fig.subplots()
        smoke, ood_names, values = False, set(), []
        for loss, color in (("ce", CE_COLOR), ("logitnorm", LN_COLOR)):
            lruns = [r for r in runs_m if r["run"]["loss"] == loss]
            if not lruns:
                continue
            lruns, lp = _pick_variant(lruns, lambda r: r["run"].get("loss_params") or {},
                                      paper_params(id_ds, loss, None)[0])
            if any(not _smoke(r) for r in lruns):
                lruns = [r for r in lruns if not _smoke(r)]
            smoke |= any(_smoke(r) for r in lruns)
            for r in lruns:
                mood = (r["run"].get("train") or {}).get("monitor_ood")
                if mood:
                    ood_names.add(mood)
            name = ("CE" if loss == "ce" else "LogitNorm") + (f" ({_params_text(lp)})" if lp else "")
            for key, style, what in (("logit_norm_id", "-", "ID"), ("logit_norm_ood", "--", "OOD")):
                per_epoch: dict[int, list[float]] = defaultdict(list)
                for r in lruns:
                    for h in r["history"]:
                        if isinstance(h, dict) and h.get(key) is not None and h.get("epoch") is not None:
                            per_epoch[int(h["epoch"])].append(float(h[key]))
                if not per_epoch:
                    continue
                ep = sorted(per_epoch)
                mean = [statistics.fmean(per_epoch[e]) for e in ep]
                values += mean
                ax.plot(ep, mean, style, color=color, label=f"{name}, {what} [{len(lruns)} run(s)]")
        if not values:
            continue
        pos = [v for v in values if v > 0]
        if pos and max(pos) / min(pos) > 50:
            ax.set_yscale("log")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean L2 norm of the logits")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ood_txt = ", ".join(label(o) for o in sorted(ood_names)) or "none monitored"
        figs.append(_finish(
            fig, out, 1, id_ds, arch,
            f"Figure 1: logit norm during training, {label(id_ds)} / {label(arch)}, OOD = {ood_txt}",
            f"Mean L2 norm of the logits on fixed ID test images (solid) and OOD images ({ood_txt}; dashed) after "
            f"each training epoch, mean over seeds, {label(id_ds)} / {label(arch)}. These are the network's raw "
            "logits f; LogitNorm's loss sees f / (tau ||f||), whose norm is always 1/tau, so its raw norm is free "
            "to drift.", smoke))
    return figs or [Figure("Figure 1", None, "skipped: the run histories have no logit norms")]


# ------------------------------------------------------------------------------------------
# Figure 5: FPR95 against tau
# ------------------------------------------------------------------------------------------

def figure5(ours, out: Path) -> list[Figure]:
    # Leaderboard rows (build_rows); for the paper's ID datasets only the paper's six OOD sets.
    rows = [r for r in ours.rows_all if r["id_dataset"] not in PAPER_ID_DATASETS] + ours.rows_paper
    figs = []
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["detector"] == "msp" and r["n_seeds"] > 0 and r["fpr95"] is not None:
            by_model[(r["id_dataset"], r["arch"])].append(r)
    for (id_ds, arch), rs in sorted(by_model.items()):
        ln = [r for r in rs if r["loss"] == "logitnorm" and "tau" in r["loss_params"]]
        if not ln:
            continue
        # One MSP variant (the paper's T=1 preferred), real over smoke.
        ln, _ = _pick_variant(ln, lambda r: r["detector_params"],
                              paper_params(id_ds, "logitnorm", "msp")[1])
        if any(not r["smoke"] for r in ln):
            ln = [r for r in ln if not r["smoke"]]
        per_tau: dict[float, list[dict]] = defaultdict(list)
        for r in ln:
            per_tau[float(r["loss_params"]["tau"])].append(r)
        if len(per_tau) < 2:
            continue
        xs, ys, es, used = [], [], [], set()
        for tau in sorted(per_tau):
            cands = per_tau[tau]
            avg = [r for r in cands if r["ood_dataset"] == "average"]
            if not avg and len(cands) > 1:
                continue  # several OOD sets but no seed has all of them: no average to plot
            pick = max(avg or cands, key=lambda r: r["n_seeds"])
            used.add(pick["ood_dataset"])
            xs.append(tau)
            ys.append(pick["fpr95"])
            es.append(pick["fpr95_std"] or 0.0)
        if len(xs) < 2:
            continue
        ood_txt = {"average over OOD sets" if o == "average" else o for o in used}
        smoke = any(r["smoke"] for r in ln)
        fig = _new_figure(6, 4)
        ax = fig.subplots()
        ax.errorbar(xs, ys, yerr=es, marker="o", color=LN_COLOR, capsize=3, label="LogitNorm + MSP")
        ce = [r for r in rs if r["loss"] == "ce" and len(used) == 1 and r["ood_dataset"] in used]
        if ce:
            best = max(ce, key=lambda r: (not r["smoke"], _matches(r["detector_params"],
                                                                   {"temperature": 1.0}), r["n_seeds"]))
            ax.axhline(best["fpr95"], color=CE_COLOR, linestyle=":", label="CE + MSP")
        default = paper_params(id_ds, "logitnorm", None)[0].get("tau")
        if default is not None:
            ax.axvline(default, color="gray", linestyle="--", linewidth=0.8, label=f"paper's tau = {default:g}")
        if max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel("tau")
        ax.set_ylabel("FPR95 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        oods = ", ".join(sorted(ood_txt))
        figs.append(_finish(
            fig, out, 5, id_ds, arch, f"Figure 5: effect of tau, {label(id_ds)} / {label(arch)} ({oods})",
            f"FPR95 of LogitNorm + MSP against tau ({oods}), mean ± std over seeds, {label(id_ds)} / {label(arch)}.",
            smoke))
    return figs or [Figure("Figure 5", None, "skipped: no LogitNorm + MSP results with more than one tau")]


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.banner { background: #c62828; color: white; font-size: 1.6em; font-weight: bold; padding: 0.6em;
          text-align: center; margin-bottom: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.2em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.smoke { background: #fff0f0; }
.paper { color: #666; font-size: 0.9em; }
.better { color: #2e7d32; } .worse { color: #c62828; }
.note, .legend, .skipped { color: #555; font-size: 0.9em; max-width: 70em; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def write_report(results_dir, out_dir=None) -> Path:
    """Figures (PNG), tables (md, csv) and ``index.html`` for ``results_dir``; returns the page's path."""
    results = ResultsDir(results_dir)
    out = Path(out_dir) if out_dir is not None else results.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    records = list(results.records())
    tables, ours = build_tables(records)
    atomic_write_bytes(out / "tables.md", render_md(tables, ours).encode())
    atomic_write_bytes(out / "tables.csv", render_csv(tables, ours).encode())
    runs = _runs(results)

    figures: list[Figure] = []
    for make in (lambda: figure4(records, out), lambda: figure1(runs, out), lambda: figure5(ours, out)):
        figures += make()

    smoke = (any(r.get("smoke") for r in records) or any(_smoke(r) for r in runs)
             or any_smoke(tables) or any(f.smoke for f in figures))
    e = html.escape
    n_ok = sum(1 for r in records if r.get("status") == "ok")
    n_failed = sum(1 for r in records if r.get("status") != "ok")
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             "<title>ood-bench report: LogitNorm (ICML 2022)</title>", f"<style>{CSS}</style></head><body>"]
    if smoke:
        parts.append(f"<div class='banner'>{e(SMOKE_BANNER)}<br><small>these results come (at least partly) from "
                     "smoke runs: synthetic stand-in data and a few batches of training</small></div>")
    parts.append("<h1>LogitNorm (Wei et al., ICML 2022): our results vs the paper</h1>")
    parts.append(f"<p>Results folder: <code>{e(str(results.root.resolve()))}</code>; {n_ok} record(s) ok, "
                 f"{n_failed} failed; {len(runs)} training run(s). Tables also as "
                 "<a href='tables.md'>Markdown</a> and <a href='tables.csv'>CSV</a>.</p>")
    parts.append("<p>Contents: <a href='#figures'>Figures</a> · "
                 + " · ".join(f"<a href='#{t.name}'>Table {t.number}</a>" for t in tables) + "</p>")
    parts.append("<h2 id='figures'>Figures</h2>")
    for name in ("Figure 1", "Figure 4", "Figure 5"):
        for f in (f for f in figures if f.name == name):
            if f.file is None:
                parts.append(f"<p class='skipped'><b>{e(f.name)}</b>: {e(f.caption)}.</p>")
            else:
                parts.append(f"<figure><img src='{e(f.file)}' alt='{e(f.name)}'><figcaption><b>{e(f.name)}</b>"
                             f"{' (SMOKE)' if f.smoke else ''}: {e(f.caption)}</figcaption></figure>")
    parts.append("<h2 id='tables'>Tables</h2>")
    parts.append(render_html(tables, ours))
    parts.append("</body></html>")
    page = out / "index.html"
    atomic_write_bytes(page, "\n".join(parts).encode("utf-8"))
    return page
