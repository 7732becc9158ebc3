"""Helpers for a report section's figures: a matplotlib figure without global state, saving it as
a PNG beside the page, pooling score histograms whose bins differ, and a trained run's model
rebuilt from its checkpoint (:class:`RunModel`) for figures drawn from the network itself."""

from __future__ import annotations

import io
import re
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from logitnorm_bench.records import atomic_write_bytes
from logitnorm_bench.reporting import SMOKE_BANNER, Figure


def new_figure(w: float, h: float):
    # The object-oriented API with the Agg canvas: no global pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def file_name(*parts) -> str:
    """``scores_mnist_mlp_width_128.png`` from ``("scores", "mnist", "mlp(width=128)")``:
    runs of characters unsafe in a file name become one ``_``."""
    return "_".join(re.sub(r"[^A-Za-z0-9_-]+", "_", str(p)).strip("_") for p in parts) + ".png"


def finish(fig, out_dir: Path, file: str, name: str, title: str, caption: str, smoke: bool) -> Figure:
    """Title (and smoke watermark), lay out, save as ``out_dir/file``; returns the page's Figure."""
    fig.suptitle(title, fontsize=10)
    if smoke:
        fig.text(0.5, 0.5, SMOKE_BANNER, ha="center", va="center", fontsize=20, color="red", alpha=0.25,
                 rotation=20)
    fig.tight_layout()
    save(fig, Path(out_dir) / file)
    return Figure(name, file, caption, smoke)


def rebin(edges, counts, target) -> np.ndarray:
    """Counts of a histogram moved onto ``target`` edges, assuming uniform density in each bin."""
    edges = np.asarray(edges, dtype=float)
    cdf = np.concatenate([[0.0], np.cumsum(np.asarray(counts, dtype=float))])
    return np.diff(np.interp(target, edges, cdf, left=0.0, right=cdf[-1]))


def pooled_fraction(hists: list[dict], side: str, target) -> np.ndarray:
    """The ``side`` ("id" or "ood") counts of several ``score_hist`` records on ``target`` edges,
    summed and normalised to sum 1."""
    counts = sum(rebin(h["edges"], h[side], target) for h in hists)
    total = counts.sum()
    return counts / total if total > 0 else counts


def score_range(hists: list[dict]) -> tuple[float, float]:
    """The span of the histograms' edges."""
    return min(h["edges"][0] for h in hists), max(h["edges"][-1] for h in hists)


def epoch_means(runs: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The mean over runs of history field ``key`` per epoch (epochs where some run has it)."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for h in r["history"]:
            if isinstance(h, dict) and h.get(key) is not None and h.get("epoch") is not None:
                per_epoch[int(h["epoch"])].append(float(h[key]))
    epochs = sorted(per_epoch)
    return epochs, [statistics.fmean(per_epoch[e]) for e in epochs]


class RunModel:
    """A trained run's model, rebuilt from its results folder for a figure that needs the network
    itself (not only its records): ``model`` (eval mode, CPU), ``sources`` (the run's datasets:
    smoke stand-ins for a smoke run) and ``ctx`` (where they read their data; never downloads).

    ``load(root, run)``: ``run`` is the ``"run"`` part of ``runs/<run_id>/run.json``; the weights are
    ``runs/<run_id>/model.pt``, loaded with ``weights_only=True``, never renamed or written.
    Raises ``FileNotFoundError`` when the run has no ``model.pt``.
    """

    def __init__(self, run: dict, model, sources, ctx):
        self.run, self.model, self.sources, self.ctx = run, model, sources, ctx

    @classmethod
    def load(cls, root, run: dict, data_root=None) -> RunModel:
        import torch

        from logitnorm_bench.components import DataContext
        from logitnorm_bench.data_views import DataSources
        from logitnorm_bench.driver import default_data_root
        from logitnorm_bench.plugins import get_plugins
        from logitnorm_bench.records import ResultsDir
        from logitnorm_bench.train import build_model

        if not run.get("run_id"):
            raise FileNotFoundError("no checkpoint: the run.json names no run_id")
        path = ResultsDir(root).run_dir(run["run_id"]) / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint runs/{run['run_id']}/model.pt")
        plugins = get_plugins()
        sources = DataSources(plugins, bool(run.get("smoke")))
        id_source = sources(run["id_dataset"], run.get("id_dataset_params") or None)
        loss_fn = plugins.losses.build(run["loss"], **(run.get("loss_params") or {}))
        with torch.random.fork_rng(devices=[]):  # build_model seeds the initialisation: keep the caller's RNG
            model = build_model(plugins, run["arch"], run.get("arch_params") or {}, loss_fn, id_source,
                                int(run["seed"]))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        ctx = DataContext(root=Path(data_root) if data_root is not None else default_data_root(), download=False,
                          seed=int(run["seed"]))  # the worker's context: same seed, same noise images
        return cls(run, model.eval(), sources, ctx)
