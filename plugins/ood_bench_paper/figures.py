"""The paper's Figures 1 to 5, drawn from our results.

Figures 1, 4 and 5 come from the records and run histories of the paper's ID datasets; Figures 2
and 3 from the trained networks themselves (``runs/<run_id>/model.pt``) of any ID dataset with a
CE run and a LogitNorm run of the same architecture and seed:

* ``fig4_<id>_<arch>.png``: Figure 4, the distribution of the MSP (softmax confidence) score
  on ID vs OOD test data, CE and LogitNorm side by side.  From the ``score_hist`` of MSP
  records; the OOD set shown is SVHN when present (the paper's running example), otherwise
  the OOD set monitored during training (Figure 1's), otherwise the one most often present;
  the seeds' histograms are pooled (re-binned onto one grid).
* ``fig1_<id>_<arch>.png``: Figure 1, the mean L2 norm of the logits of ID and OOD inputs per
  training epoch, CE vs LogitNorm, from ``runs/*/run.json`` histories (mean over seeds).
* ``fig5_<id>_<arch>.png``: Figure 5, the average FPR95 of LogitNorm + MSP against tau, when
  more than one tau was run.
* ``fig2_<id>_<arch>.png``: Figure 2, the softmax outputs of two examples, one ID test image and
  one OOD image, under the CE and the LogitNorm network (bars per class).
* ``fig3_<id>_<arch>.png``: Figure 3, t-SNE (scikit-learn's ``TSNE``, :data:`TSNE_PARAMS`) of a
  seeded sample of ID test images (coloured by class) and OOD images (brown), CE vs LogitNorm: of
  the softmax outputs, as the paper's Figure 3 does, and of the penultimate-layer features.

Figures 2 and 3 use one CE/LogitNorm pair per ID dataset and architecture (:func:`model_pairs`) and
the OOD set of Figure 4's rule (:func:`figure_ood`); the images are the run's own data (smoke
stand-ins for a smoke run), read from the data root (``$OOD_BENCH_DATA`` or ``./data``, never
downloaded).  A pair whose checkpoint or data is missing gets a one-line note instead.

A figure without data is skipped and the page says why; smoke results put "SMOKE" on a figure.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from logitnorm_bench.figures import (
    RunModel, epoch_means, file_name, finish, new_figure, pooled_fraction, score_range,
)
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


# ------------------------------------------------------------------------------------------
# Figures 2 and 3: the networks themselves, from their checkpoints
# ------------------------------------------------------------------------------------------

FIGURE_SEED = 0  #: the seed of the ID and OOD images sampled for Figures 2 and 3
TSNE_ID_SAMPLES = 300  #: ID test images in Figure 3 (a seeded sample; all when the split is smaller)
TSNE_OOD_SAMPLES = 100  #: OOD images in Figure 3
#: scikit-learn's TSNE (its defaults, spelled out), with PCA initialisation and a fixed random_state;
#: the perplexity is capped below the point count.  Run on one thread (:func:`tsne`).
TSNE_PARAMS = {"n_components": 2, "perplexity": 30.0, "init": "pca", "method": "barnes_hut", "random_state": 0}
SPACES = {"softmax": "softmax outputs", "features": "penultimate-layer features"}
OOD_BROWN = "#8c564b"  # the paper's colour for OOD points; left out of the class colours


def _has_checkpoint(root: Path, run: dict) -> bool:
    return bool(run.get("run_id")) and (root / "runs" / str(run["run_id"]) / "model.pt").is_file()


def model_pairs(results: Results) -> dict[tuple[str, str], tuple[dict, dict]]:
    """``{(id_dataset, arch): (ce run, logitnorm run)}``: the two trained runs Figures 2 and 3 compare,
    of the same ID dataset and architecture (and their parameters), seed, and smoke or not.

    Of several such pairs: both checkpoints present first, then real over smoke, the paper's tau,
    the same training recipe, the lowest seed; ties go to the first run ids.
    """
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: {"ce": [], "logitnorm": []})
    for info in results.runs:
        run = info["run"]
        if (info.get("status") != "trained" or run.get("loss") not in ("ce", "logitnorm")
                or any(run.get(k) is None for k in ("id_dataset", "arch", "seed"))):
            continue
        key = (run["id_dataset"], run["arch"], params_text(run.get("id_dataset_params") or {}),
               params_text(run.get("arch_params") or {}), run["seed"], bool(run.get("smoke")))
        groups[key][run["loss"]].append(run)
    candidates: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for key, by_loss in groups.items():
        candidates[key[:2]] += [(ce, ln) for ce in by_loss["ce"] for ln in by_loss["logitnorm"]]

    def rank(pair, id_ds):
        ce, ln = pair
        return (_has_checkpoint(results.root, ce) and _has_checkpoint(results.root, ln), not ce.get("smoke"),
                matches(ln.get("loss_params") or {}, paper_params(id_ds, "logitnorm", None)[0]),
                params_text(ce.get("train") or {}) == params_text(ln.get("train") or {}), -ce["seed"])

    return {model: max(sorted(pairs, key=lambda p: (str(p[0].get("run_id")), str(p[1].get("run_id")))),
                       key=lambda p: rank(p, model[0]))
            for model, pairs in sorted(candidates.items()) if pairs}


def figure_ood(records, runs: tuple[dict, ...]) -> tuple[str, dict] | None:
    """The OOD set the figures show for these runs, as ``(name, dataset params)``, by Figure 4's rule:
    SVHN (the paper's), else the set monitored during training, else the one these runs were
    evaluated on most; the monitored set when they have no records.  Of one set evaluated with
    several params, the params of most records."""
    ids = {r.get("run_id") for r in runs}
    used = [(r["ood_dataset"], params_text(r.get("ood_dataset_params") or {})) for r in records
            if r.get("run_id") in ids and r.get("status") == "ok" and r.get("split", "test") == "test"
            and r.get("ood_dataset")]
    counts = Counter(name for name, _ in used)
    monitored = sorted({m for r in runs if (m := (r.get("train") or {}).get("monitor_ood"))})
    name = next((o for o in ("svhn", *monitored) if o in counts), None)
    if name is None and counts:
        name = max(sorted(counts), key=lambda o: counts[o])
    if name is None:  # no records: the monitored set, which takes no params
        return (monitored[0], {}) if monitored else None
    variants = Counter(p for o, p in used if o == name)
    return name, json.loads(max(sorted(variants), key=lambda p: variants[p]))


def model_outputs(ce: RunModel, ln: RunModel, ood: str, ood_params: dict | None = None) -> dict:
    """Both networks on the same images: a seeded sample of the ID test split (:data:`TSNE_ID_SAMPLES`)
    and of the OOD set's test split (:data:`TSNE_OOD_SAMPLES`), both in dataset order.

    Returns ``id_x``, ``id_y``, ``id_index`` (positions in the ID test split), ``ood_x``,
    ``ood_index``, and ``outputs[loss][side]`` (``ModelOutputs``: logits and penultimate features).
    """
    import torch
    from torch.utils.data import Subset

    from logitnorm_bench.evaluation import forward_pass, sample_indices
    from logitnorm_bench.train import materialize

    def sample(name: str, params: dict | None, k: int):
        ds = ce.sources(name, params or None).build("test", ce.ctx)
        idx = sample_indices(len(ds), k, FIGURE_SEED)
        x, y = materialize(Subset(ds, idx.tolist()))
        return x, y, idx.numpy()

    id_x, id_y, id_index = sample(ce.run["id_dataset"], ce.run.get("id_dataset_params"), TSNE_ID_SAMPLES)
    ood_x, _, ood_index = sample(ood, ood_params, TSNE_OOD_SAMPLES)
    if tuple(ood_x.shape[1:]) != tuple(id_x.shape[1:]):
        raise ValueError(f"the images of {ood} are {tuple(ood_x.shape[1:])}, the ID dataset's {tuple(id_x.shape[1:])}")
    cpu = torch.device("cpu")
    outputs = {loss: {side: forward_pass(m.model, x, 256, cpu, True) for side, x in (("id", id_x), ("ood", ood_x))}
               for loss, m in (("ce", ce), ("logitnorm", ln))}
    return {"id_x": id_x, "id_y": id_y.numpy(), "id_index": id_index, "ood_x": ood_x, "ood_index": ood_index,
            "outputs": outputs}


def _softmax(logits) -> np.ndarray:
    import torch

    return torch.softmax(logits.double(), dim=1).numpy()


def figure2_data(mo: dict) -> dict:
    """What Figure 2 plots: the softmax outputs of both networks on two images.

    The ID example is the first image of the ID sample that both networks classify correctly (the
    first image when there is none); the OOD example is the first image of the OOD sample.
    ``id_index``/``ood_index`` are their positions in the datasets' test splits.
    """
    out = mo["outputs"]
    right = np.ones(len(mo["id_y"]), dtype=bool)
    for loss in ("ce", "logitnorm"):
        right &= out[loss]["id"].logits.argmax(dim=1).numpy() == mo["id_y"]
    pos = int(np.argmax(right)) if right.any() else 0
    return {"id_index": int(mo["id_index"][pos]), "id_label": int(mo["id_y"][pos]),
            "ood_index": int(mo["ood_index"][0]), "id_image": mo["id_x"][pos].numpy(),
            "ood_image": mo["ood_x"][0].numpy(),
            "probs": {loss: {"id": _softmax(out[loss]["id"].logits[pos:pos + 1])[0],
                             "ood": _softmax(out[loss]["ood"].logits[:1])[0]} for loss in ("ce", "logitnorm")}}


def tsne_params(n_points: int) -> dict:
    """:data:`TSNE_PARAMS` for ``n_points`` points: the perplexity capped below the point count."""
    return dict(TSNE_PARAMS, perplexity=min(TSNE_PARAMS["perplexity"], (n_points - 1) / 3))


def tsne(points: np.ndarray) -> np.ndarray:
    """2-D t-SNE of ``points`` with :func:`tsne_params`."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    params = tsne_params(len(points))
    # One thread: Barnes-Hut's OpenMP sums then have one order (the same coordinates on any machine),
    # and 400 points take 3 s instead of 27 s on a busy 2-core machine.
    with threadpool_limits(1):
        return TSNE(**params).fit_transform(points)


def figure3_data(mo: dict) -> dict:
    """What Figure 3 plots: ``inputs[space][loss]`` (the ID sample's rows, then the OOD sample's; float64)
    and their t-SNE ``coords[space][loss]``, for space ``softmax`` (the paper's) and ``features``."""
    out = mo["outputs"]
    inputs: dict[str, dict[str, np.ndarray]] = {space: {} for space in SPACES}
    for loss in ("ce", "logitnorm"):
        inputs["softmax"][loss] = np.concatenate([_softmax(out[loss][s].logits) for s in ("id", "ood")])
        inputs["features"][loss] = np.concatenate([out[loss][s].features.double().numpy() for s in ("id", "ood")])
    return {"labels": mo["id_y"], "n_ood": len(mo["ood_index"]), "inputs": inputs,
            "coords": {space: {loss: tsne(x) for loss, x in by_loss.items()} for space, by_loss in inputs.items()}}


def _loss_title(tag: str, loss: str, run: dict) -> str:
    name = "Cross-entropy loss" if loss == "ce" else "LogitNorm loss"
    lp = run.get("loss_params") or {}
    return f"{tag} {name}" + (f" ({params_label(lp)})" if lp else "")


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image (C, H, W) scaled to [0, 1] for imshow: grey for one channel."""
    lo, hi = float(image.min()), float(image.max())
    img = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return (img[0], "gray") if img.shape[0] == 1 else (np.transpose(img[:3], (1, 2, 0)), None)


def draw_figure2(data: dict, runs: dict[str, dict], ood: str, out: Path) -> Figure:
    run = runs["ce"]
    id_ds, arch = run["id_dataset"], run["arch"]
    fig = new_figure(12, 3.8)
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 3, 3])
    for i, (side, text) in enumerate((("id", f"ID: {label(id_ds)} test #{data['id_index']}\n"
                                                f"(class {data['id_label']})"),
                                      ("ood", f"OOD: {label(ood)} test #{data['ood_index']}"))):
        ax = fig.add_subplot(grid[0, i])
        img, cmap = _display(data[f"{side}_image"])
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(text, fontsize=8, color=ID_COLOR if side == "id" else OOD_COLOR)
    k = len(data["probs"]["ce"]["id"])
    xs, width = np.arange(k), 0.4
    for j, (tag, loss) in enumerate((("(a)", "ce"), ("(b)", "logitnorm"))):
        ax = fig.add_subplot(grid[0, 2 + j])
        for off, side, color, what in ((-width / 2, "id", ID_COLOR, "ID"), (width / 2, "ood", OOD_COLOR, "OOD")):
            p = data["probs"][loss][side]
            ax.bar(xs + off, p, width, color=color, label=f"{what} example: max {p.max():.2f}")
        ax.axhline(1 / k, color="gray", linestyle=":", linewidth=0.8, label=f"uniform (1/{k})")
        ax.set_ylim(0, 1.05)
        if k <= 20:
            ax.set_xticks(xs)
        ax.set_xlabel("class")
        ax.set_ylabel("softmax probability")
        ax.set_title(_loss_title(tag, loss, runs[loss]), fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    msp = {loss: (data["probs"][loss]["id"].max(), data["probs"][loss]["ood"].max()) for loss in ("ce", "logitnorm")}
    return finish(
        fig, out, file_name("fig2", id_ds, arch), "Figure 2",
        f"Figure 2: softmax outputs of two examples, {label(id_ds)} / {label(arch)}, seed {run['seed']}",
        f"Softmax outputs of one ID test image (the first of the figure's seeded sample that both networks "
        f"classify correctly: {label(id_ds)} test image #{data['id_index']}) and one OOD image (the first of the "
        f"sample: {label(ood)} test image #{data['ood_index']}) under the (a) CE and (b) LogitNorm networks, "
        f"{label(id_ds)} / {label(arch)}, seed {run['seed']}. Softmax confidence, ID and OOD: CE "
        f"{msp['ce'][0]:.2f} and {msp['ce'][1]:.2f}, LogitNorm {msp['logitnorm'][0]:.2f} and "
        f"{msp['logitnorm'][1]:.2f} (the paper, CIFAR-10 / WRN-40-2: 1.0 and 1.0, 0.66 and 0.14).",
        bool(run.get("smoke")))


def _class_colors(k: int) -> list:
    from matplotlib import colormaps

    if k <= 10:  # tab10 without its brown, which marks OOD points as in the paper; black instead
        tab = list(colormaps["tab10"].colors)
        return (tab[:5] + tab[6:] + [(0.0, 0.0, 0.0)])[:k]
    return [colormaps["hsv"](i / k) for i in range(k)]


def draw_figure3(data: dict, runs: dict[str, dict], ood: str, out: Path) -> Figure:
    run = runs["ce"]
    id_ds, arch = run["id_dataset"], run["arch"]
    labels, n_ood = data["labels"], data["n_ood"]
    n_id = len(labels)
    k = int(labels.max()) + 1 if n_id else 0
    colors = _class_colors(k)
    fig = new_figure(11, 9.2)
    axes = fig.subplots(2, 2)
    for row, space in enumerate(SPACES):
        for col, (tag, loss) in enumerate((("(a)", "ce"), ("(b)", "logitnorm"))):
            ax = axes[row][col]
            xy = data["coords"][space][loss]
            for c in range(k):
                pts = xy[:n_id][labels == c]
                ax.scatter(pts[:, 0], pts[:, 1], s=7, color=colors[c], label=f"class {c}" if k <= 10 else None)
            ax.scatter(xy[n_id:, 0], xy[n_id:, 1], s=7, color=OOD_BROWN, label=f"OOD ({label(ood)})")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_loss_title(tag, loss, runs[loss])}: {SPACES[space]}", fontsize=9)
            if col == 1 and row == 0:  # beside the panels, not over the points
                ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    perp = tsne_params(n_id + n_ood)["perplexity"]
    return finish(
        fig, out, file_name("fig3", id_ds, arch), "Figure 3",
        f"Figure 3: t-SNE, {label(id_ds)} / {label(arch)}, OOD = {label(ood)}, seed {run['seed']}",
        f"t-SNE (scikit-learn TSNE: Barnes-Hut, PCA init, perplexity {perp:g}, random_state "
        f"{TSNE_PARAMS['random_state']}) of {n_id} ID test images of {label(id_ds)} (a seeded sample; colour = "
        f"class) and {n_ood} OOD images of {label(ood)} (brown), under the (a) CE and (b) LogitNorm networks, "
        f"{label(arch)}, seed {run['seed']}. Top: the softmax outputs, what the paper's Figure 3 embeds; "
        "bottom: the penultimate-layer features. Each panel is its own embedding.",
        bool(run.get("smoke")))


def model_figures(results: Results, out: Path) -> list[Figure]:
    """Figures 2 and 3 for every ID dataset and architecture with a CE/LogitNorm pair
    (:func:`model_pairs`); a pair whose checkpoint, OOD set or data is missing gets one note per figure."""
    fig2, fig3 = [], []
    for (id_ds, arch), (ce, ln) in model_pairs(results).items():
        where = f"{label(id_ds)} / {label(arch)}"
        try:
            chosen = figure_ood(results.records, (ce, ln))
            if chosen is None:
                raise ValueError("no OOD set: these runs have no records and monitored none")
            ood, ood_params = chosen
            mo = model_outputs(RunModel.load(results.root, ce), RunModel.load(results.root, ln), ood, ood_params)
            runs = {"ce": ce, "logitnorm": ln}
            fig2.append(draw_figure2(figure2_data(mo), runs, ood, out))
            fig3.append(draw_figure3(figure3_data(mo), runs, ood, out))
        except Exception as exc:  # a figure is never worth a failed report
            why = " ".join(str(exc).split()) or type(exc).__name__
            if len(fig2) == len(fig3):  # Figure 2 was not drawn either
                fig2.append(Figure("Figure 2", None, f"skipped for {where}: {why}"))
            fig3.append(Figure("Figure 3", None, f"skipped for {where}: {why}"))
    return fig2 + fig3


def paper_figures(results: Results, out: Path, model_figs: list[Figure] | None = None) -> list[Figure]:
    """Figures 1, 4 and 5 for the paper's ID datasets (skipped ones say why), with Figures 2 and 3
    (``model_figs``, else :func:`model_figures`) after Figure 1."""
    records = [r for r in results.records if r.get("id_dataset") in PAPER_ID_DATASETS]
    runs = [r for r in results.runs if r["run"].get("id_dataset") in PAPER_ID_DATASETS]
    if model_figs is None:
        model_figs = model_figures(results, out)
    return figure1(runs, out) + model_figs + figure4(records, out) + figure5(paper_rows(results), out)
