"""Metrics, as fractions in [0, 1].  Scores are **higher = more in-distribution**; ID is the positive class.

* ``fpr95``: the false-positive rate on OOD at the first threshold where at least 95% of ID is kept
  (the paper's and the official code's FPR95; pytorch-ood's ``FPR95TPR`` takes OOD as positive, a
  different number, which is why this one is written here on top of scikit-learn's ``roc_curve``).
* ``auroc``: ``roc_auc_score``; ``aupr_in``: ``average_precision_score`` with ID positive;
  ``aupr_out``: the same with OOD positive and the scores negated.
* ``ece``: expected calibration error, equal-width bins on the max softmax probability.

The catalogue (:data:`METRICS`) declares each metric once: its name, label, direction, whether it
is shown in percent, its scope, and the function that computes it.  The evaluation, the leaderboard,
``select:``, the tables and the report all read it; a new metric column is one :func:`metric` call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _check_scores(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    s_id, s_ood = _as_numpy(id_scores), _as_numpy(ood_scores)
    if s_id.size == 0 or s_ood.size == 0:
        raise ValueError(f"ood_metrics needs ID and OOD scores (got {s_id.size} ID, {s_ood.size} OOD)")
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        raise ValueError("ood_metrics got non-finite scores (NaN or inf)")
    return s_id, s_ood


def _labelled(s_id: np.ndarray, s_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([np.ones_like(s_id), np.zeros_like(s_ood)]), np.concatenate([s_id, s_ood])


def fpr_at_tpr(s_id, s_ood, tpr_level: float = 0.95) -> float:
    """FPR on OOD at the first threshold that keeps at least ``tpr_level`` of ID (ID positive)."""
    labels, scores = _labelled(s_id, s_ood)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def fpr_at_tpr_ood_positive(s_id, s_ood, tpr_level: float = 0.95) -> float:
    """The other convention (OpenOOD, pytorch-ood's ``FPR95TPR``): OOD is the positive class, the
    threshold is the first that detects at least ``tpr_level`` of OOD, and the number is the fraction
    of ID images flagged as OOD there."""
    return fpr_at_tpr(-np.asarray(s_ood), -np.asarray(s_id), tpr_level)


def auroc(s_id, s_ood) -> float:
    return float(roc_auc_score(*_labelled(s_id, s_ood)))


def _fraction(value: float) -> float:
    """Average precision is a sum of products and can land a rounding error above 1 (e.g.
    1.0000000000000002 for a perfect separation of 20 ID and 24 OOD scores); a record holding that
    would be refused as invalid, so it is clipped to [0, 1]."""
    return min(1.0, max(0.0, float(value)))


def aupr_in(s_id, s_ood) -> float:
    return _fraction(average_precision_score(*_labelled(s_id, s_ood)))


def aupr_out(s_id, s_ood) -> float:
    labels, scores = _labelled(s_id, s_ood)
    return _fraction(average_precision_score(1 - labels, -scores))


def ood_metrics(id_scores, ood_scores) -> dict[str, float]:
    """Every per-cell metric of the catalogue (FPR95, AUROC, AUPR-In, AUPR-Out, ...) of scores where
    higher means more in-distribution."""
    s_id, s_ood = _check_scores(id_scores, ood_scores)
    return {m.name: float(m.compute(s_id, s_ood)) for m in METRICS.values() if m.scope == "cell"}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).double().mean())


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): bins (i/M, (i+1)/M] on the max probability."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    conf = conf.double()
    # i / M, correctly rounded (torch.linspace's 11/15 is one ulp high and misbins a confidence there).
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    total = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.double().mean() * (conf[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(total)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    One-dimensional and convex in log T on the searched range, so a bounded scalar search is
    exact enough and needs no learning rate (LBFGS on T, as often done, can step to T < 0).
    """
    from scipy.optimize import minimize_scalar

    z, y = logits.detach().double().cpu(), labels.cpu()

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))

    res = minimize_scalar(nll, bounds=(math.log(1e-3), math.log(1e3)), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def ece_temperature_scaled(logits: torch.Tensor, labels: torch.Tensor, seed: int = 0,
                           n_bins: int = 15) -> tuple[float, list[float]]:
    """ECE after temperature scaling, with T fitted on held-out ID test images only.

    The ID test set is split in two halves (seeded); T is fitted on one half and applied to the
    other, both ways, so every image is scored by a T that never saw it and all images count.
    This keeps Table 4 on the same trainings as Table 1 (which train on all 50k CIFAR images).
    Returns the ECE and the two fitted temperatures.
    """
    n = logits.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halves = (perm[: n // 2], perm[n // 2:])
    probs = torch.empty_like(logits, dtype=torch.float64)
    temps = []
    for fit_idx, apply_idx in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_idx], labels[fit_idx])
        temps.append(t)
        probs[apply_idx] = torch.softmax(logits[apply_idx].double() / t, dim=1)
    return ece(probs, labels, n_bins), temps


def mean_logit_norm(logits: torch.Tensor) -> float:
    """Mean L2 norm of the logit vectors (the paper's Table 5)."""
    return float(logits.double().norm(dim=1).mean())


# ------------------------------------------------------------------------------------------
# The catalogue
# ------------------------------------------------------------------------------------------

SCOPES = ("cell", "ood_set", "run")


@dataclass(frozen=True)
class Metric:
    """What every consumer needs to know about a metric, declared once.

    ``scope``: ``cell`` metrics are computed per detector x OOD set from the two score arrays
    (``compute(id_scores, ood_scores)``, numpy float64) and stored in a record's ``metrics``;
    ``run`` metrics describe the trained model on ID data (``compute(logits, labels, protocol)``)
    and ``ood_set`` metrics the model on one OOD set (``compute(ood_logits)``); both are stored in
    a record's ``run_metrics``.  ``percent``: shown x100 in the leaderboard and tables (the API
    returns fractions).
    """

    name: str
    label: str
    higher_is_better: bool
    percent: bool
    scope: str
    compute: Callable
    description: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def record_key(self) -> str:
        """Where a record keeps it: ``metrics`` (cell) or ``run_metrics`` (run, ood_set)."""
        return "metrics" if self.scope == "cell" else "run_metrics"

    def display(self, value: float | None) -> float | None:
        """The leaderboard's number: percent when the metric is a percentage."""
        if value is None:
            return None
        return 100.0 * value if self.percent else float(value)

    def better(self, a: float, b: float) -> bool:
        """Is ``a`` strictly better than ``b``?"""
        return a > b if self.higher_is_better else a < b


METRICS: dict[str, Metric] = {}


def metric(name: str, label: str, *, higher_is_better: bool, percent: bool, scope: str, compute: Callable,
           description: str = "") -> Metric:
    """Declare a metric.  Its order of declaration is its column order in the leaderboard."""
    if scope not in SCOPES:
        raise ValueError(f"metric {name}: scope {scope!r} is not one of {', '.join(SCOPES)}")
    if name in METRICS:
        raise ValueError(f"metric {name} is declared twice")
    m = METRICS[name] = Metric(name, label, higher_is_better, percent, scope, compute, description)
    return m


def metrics_of(*scopes: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS.values() if m.scope in scopes)


def _ece_ts(logits, labels, protocol) -> tuple[float, dict]:
    value, temps = ece_temperature_scaled(logits, labels, protocol["sample_seed"], protocol["calibration_bins"])
    return value, {"ts_temperatures": temps}


metric("fpr95", "FPR95", higher_is_better=False, percent=True, scope="cell", compute=fpr_at_tpr,
       description="FPR on OOD at the first threshold keeping >= 95% of ID (ID positive, the paper's)")
metric("fpr95_ood_positive", "FPR95 (OOD+)", higher_is_better=False, percent=True, scope="cell",
       compute=fpr_at_tpr_ood_positive,
       description="ID images flagged OOD at the first threshold detecting >= 95% of OOD (OOD positive: "
                   "OpenOOD's and pytorch-ood's FPR95)")
metric("auroc", "AUROC", higher_is_better=True, percent=True, scope="cell", compute=auroc,
       description="area under the ROC curve (roc_auc_score)")
metric("aupr_in", "AUPR", higher_is_better=True, percent=True, scope="cell", compute=aupr_in,
       description="average precision with ID positive")
metric("aupr_out", "AUPR-Out", higher_is_better=True, percent=True, scope="cell", compute=aupr_out,
       description="average precision with OOD positive and the scores negated")
metric("id_acc", "ID Acc", higher_is_better=True, percent=True, scope="run",
       compute=lambda logits, labels, protocol: accuracy(logits, labels),
       description="top-1 accuracy on the ID test set")
metric("ece", "ECE w/o TS", higher_is_better=False, percent=True, scope="run",
       compute=lambda logits, labels, protocol: ece(torch.softmax(logits.double(), dim=1), labels,
                                                    protocol["calibration_bins"]),
       description="expected calibration error, equal-width bins on the max softmax probability")
metric("ece_ts", "ECE w/ TS", higher_is_better=False, percent=True, scope="run", compute=_ece_ts,
       description="ECE after temperature scaling fitted on the other half of the ID test set")
metric("logit_norm_id", "L2 norm ID", higher_is_better=False, percent=False, scope="run",
       compute=lambda logits, labels, protocol: mean_logit_norm(logits),
       description="mean L2 norm of the logits on the ID test set")
metric("logit_norm_ood", "L2 norm OOD", higher_is_better=False, percent=False, scope="ood_set",
       compute=mean_logit_norm, description="mean L2 norm of the logits on the OOD set")
