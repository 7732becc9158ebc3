"""The paper's Figures 1, 4 and 5, drawn from our results on the paper's ID datasets.

* ``fig4_<id>_<arch>.png``: Figure 4, the distribution of the MSP (softmax confidence) score
  on ID vs OOD test data, CE and LogitNorm side by side.  From the ``score_hist`` of MSP
  records; the OOD set shown is SVHN when present (the paper's running example), otherwise
  the OOD set monitored during training (Figure 1's), otherwise the one most often present;
  the seeds' histograms are pooled (re-binned onto one grid).
* ``fig1_<id>_<arch>.png``: Figure 1, the mean L2 norm of the logits of ID and OOD inputs per
  training epoch, CE vs LogitNorm, from ``runs/*/run.json`` histories (mean over seeds).
* ``fig5_<id>_<arch>.png``: Figure 5, the average FPR95 of LogitNorm + MSP against tau, when
  more than one tau was run.

A figure without data is skipped and the page says why; smoke results put "SMOKE" on a figure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from logitnorm_bench.figures import epoch_means, file_name, finish, new_figure, pooled_fraction, score_range
from logitnorm_bench.leaderboard import params_text
from logitnorm_bench.reporting import Figure, Results, params_label

from ood_bench_paper.tables import PAPER_ID_DATASETS, label, matches, paper_params, paper_rows

CE_COLOR, LN_COLOR = "#d62728", "#1f77b4"
ID_COLOR, OOD_COLOR = "#1f77b4", "#ff7f0e"
FIG4_BINS = 40


def _pick_variant(items: list, params_of, spec: dict):
    """Prefer real over smoke, then the paper's params, then the most items; returns the items
    of the chosen params variant."""
    groups: dict[str, list] = defaultdict(list)
    for it in items:
        groups[params_text(params_of(it))].append(it)
    best = max(sorted(groups), key=lambda k: (any(not _smoke(i) for i in groups[k]),
                                               matches(params_of(groups[k][0]), spec), len(groups[k])))
    return groups[best], params_of(groups[best][0])


def _smoke(item) -> bool:
    if "run" in item and isinstance(item["run"], dict):
        return bool(item["run"].get("smoke"))
    return bool(item.get("smoke"))


# ------------------------------------------------------------------------------------------
# Figure 4: MSP score histograms
# ------------------------------------------------------------------------------------------

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
        lo, hi = score_range([r["score_hist"] for lrecs, _ in chosen.values() for r in lrecs])
        if 0.0 <= lo and hi <= 1.0 + 1e-6:  # a softmax probability: the paper's [0, 1] axis
            lo, hi = 0.0, 1.0
        target = np.linspace(lo, hi, FIG4_BINS + 1)
        smoke = any(r.get("smoke") for lrecs, _ in chosen.values() for r in lrecs)
        fig = new_figure(10, 3.8)
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
                frac = pooled_fraction([r["score_hist"] for r in lrecs], side, target)
                ax.stairs(frac, target, fill=True, alpha=0.45, color=color, label=lab)
                ax.stairs(frac, target, color=color, linewidth=1.2)
            seeds = sorted({r["seed"] for r in lrecs})
            ptxt = f" ({params_label(lp)})" if lp else ""
            ax.set_title(f"{tag} {name}{ptxt}, {len(seeds)} seed(s) pooled", fontsize=10)
            ax.set_xlabel("softmax confidence (MSP score)")
            ax.set_ylabel("fraction of samples")
            ax.legend(fontsize=8, loc="upper center")
            ax.set_xlim(lo, hi)
        figs.append(finish(
            fig, out, file_name("fig4", id_ds, arch), "Figure 4",
            f"Figure 4: distribution of softmax confidence, {label(id_ds)} / {label(arch)}, OOD = {label(ood)}",
            f"Softmax confidence (MSP score) of ID vs OOD ({label(ood)}) test inputs, {label(id_ds)} / "
            f"{label(arch)}: (a) CE, (b) LogitNorm. Seeds pooled; each histogram normalised to sum 1.", smoke))
    return figs


# ------------------------------------------------------------------------------------------
# Figure 1: logit norm per epoch
# ------------------------------------------------------------------------------------------

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
        fig = new_figure(7, 4.2)
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
            name = ("CE" if loss == "ce" else "LogitNorm") + (f" ({params_label(lp)})" if lp else "")
            for key, style, what in (("logit_norm_id", "-", "ID"), ("logit_norm_ood", "--", "OOD")):
                ep, mean = epoch_means(lruns, key)
                if not ep:
                    continue
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
        figs.append(finish(
            fig, out, file_name("fig1", id_ds, arch), "Figure 1",
            f"Figure 1: logit norm during training, {label(id_ds)} / {label(arch)}, OOD = {ood_txt}",
            f"Mean L2 norm of the logits on fixed ID test images (solid) and OOD images ({ood_txt}; dashed) after "
            f"each training epoch, mean over seeds, {label(id_ds)} / {label(arch)}. These are the network's raw "
            "logits f; LogitNorm's loss sees f / (tau ||f||), whose norm is always 1/tau, so its raw norm is free "
            "to drift.", smoke))
    return figs or [Figure("Figure 1", None, "skipped: the run histories have no logit norms")]


# ------------------------------------------------------------------------------------------
# Figure 5: FPR95 against tau
# ------------------------------------------------------------------------------------------

def figure5(rows: list[dict], out: Path) -> list[Figure]:
    """From leaderboard rows over the paper's six OOD sets (:func:`paper_rows`)."""
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
        fig = new_figure(6, 4)
        ax = fig.subplots()
        ax.errorbar(xs, ys, yerr=es, marker="o", color=LN_COLOR, capsize=3, label="LogitNorm + MSP")
        ce = [r for r in rs if r["loss"] == "ce" and len(used) == 1 and r["ood_dataset"] in used]
        if ce:
            best = max(ce, key=lambda r: (not r["smoke"], matches(r["detector_params"], {"temperature": 1.0}),
                                          r["n_seeds"]))
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
        figs.append(finish(
            fig, out, file_name("fig5", id_ds, arch), "Figure 5",
            f"Figure 5: effect of tau, {label(id_ds)} / {label(arch)} ({oods})",
            f"FPR95 of LogitNorm + MSP against tau ({oods}), mean ± std over seeds, {label(id_ds)} / {label(arch)}.",
            smoke))
    return figs or [Figure("Figure 5", None, "skipped: no LogitNorm + MSP results with more than one tau")]


def paper_figures(results: Results, out: Path) -> list[Figure]:
    """Figures 1, 4 and 5 for the paper's ID datasets (skipped ones say why)."""
    records = [r for r in results.records if r.get("id_dataset") in PAPER_ID_DATASETS]
    runs = [r for r in results.runs if r["run"].get("id_dataset") in PAPER_ID_DATASETS]
    return figure1(runs, out) + figure4(records, out) + figure5(paper_rows(results), out)
