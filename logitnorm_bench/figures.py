"""Helpers for a report section's figures: a matplotlib figure without global state, saving it as
a PNG beside the page, and pooling score histograms whose bins differ."""

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
