"""Metrics, as fractions in [0, 1].  Scores are **higher = more in-distribution**; ID is the positive class.

* ``fpr95``: the false-positive rate on OOD at the first threshold where at least 95% of ID is kept
  (the paper's and the official code's FPR95; pytorch-ood's ``FPR95TPR`` takes OOD as positive, a
  different number, which is why this one is written here on top of scikit-learn's ``roc_curve``).
* ``auroc``: ``roc_auc_score``; ``aupr_in``: ``average_precision_score`` with ID positive;
  ``aupr_out``: the same with OOD positive and the scores negated.
* ``ece``: expected calibration error, equal-width bins on the max softmax probability.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

FPR95_CONVENTION = "FPR on OOD at the first threshold keeping >= 95% of ID (ID positive)"


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def ood_metrics(id_scores, ood_scores, tpr_level: float = 0.95) -> dict[str, float]:
    """FPR95, AUROC, AUPR-In and AUPR-Out of scores where higher means more in-distribution."""
    s_id, s_ood = _as_numpy(id_scores), _as_numpy(ood_scores)
    if s_id.size == 0 or s_ood.size == 0:
        raise ValueError(f"ood_metrics needs ID and OOD scores (got {s_id.size} ID, {s_ood.size} OOD)")
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        raise ValueError("ood_metrics got non-finite scores (NaN or inf)")
    labels = np.concatenate([np.ones_like(s_id), np.zeros_like(s_ood)])
    scores = np.concatenate([s_id, s_ood])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fpr_at = float(fpr[np.searchsorted(tpr, tpr_level, side="left")])
    return {
        "fpr95": fpr_at,
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr_in": float(average_precision_score(labels, scores)),
        "aupr_out": float(average_precision_score(1 - labels, -scores)),
    }


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
