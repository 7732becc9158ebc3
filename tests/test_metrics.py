"""Metrics against independent references (scikit-learn, brute-force loops, grid searches)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from logitnorm_bench.metrics import (accuracy, ece, ece_temperature_scaled, fit_temperature, mean_logit_norm,
                                     ood_metrics)

# ------------------------------------------------------------------------------------------
# Independent references
# ------------------------------------------------------------------------------------------


def brute_fpr95(s_id, s_ood, level=0.95) -> float:
    """The paper's FPR95, from its definition: ID positive, higher score = more ID.

    Over every unique threshold t, from the largest down, "keep" a sample when its score >= t:
    TPR(t) = mean(id >= t), FPR(t) = mean(ood >= t); FPR95 is FPR at the first (largest) t whose
    TPR reaches the level.  Ties are handled by the ``>=``: every sample tied at t is kept or
    dropped together, as a threshold cannot split them.
    """
    s_id, s_ood = np.asarray(s_id, float), np.asarray(s_ood, float)
    for t in np.unique(np.concatenate([s_id, s_ood]))[::-1]:
        tpr = np.sum(s_id >= t) / s_id.size
        if tpr >= level:
            return float(np.sum(s_ood >= t) / s_ood.size)
    raise AssertionError("unreachable: the lowest threshold keeps all of ID")


def brute_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == labels).astype(float)
    total = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        sel = (conf > lo) & (conf <= hi)
        if sel.sum():
            total += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return total


def sk_reference(s_id, s_ood) -> dict:
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    s = np.r_[s_id, s_ood]
    return {"auroc": roc_auc_score(y, s), "aupr_in": average_precision_score(y, s),
            "aupr_out": average_precision_score(1 - y, -s)}


def check_against_references(s_id, s_ood) -> dict:
    got = ood_metrics(s_id, s_ood)
    ref = sk_reference(s_id, s_ood)
    for k in ("auroc", "aupr_in", "aupr_out"):
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
    assert got["fpr95"] == pytest.approx(brute_fpr95(s_id, s_ood), abs=1e-12)
    for v in got.values():
        assert isinstance(v, float) and 0.0 <= v <= 1.0
    return got


# ------------------------------------------------------------------------------------------
# ood_metrics
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_ood_metrics_random(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(20, 400, size=2)
    s_id = rng.normal(1.0, 1.0, n_id)
    s_ood = rng.normal(0.0, 1.5, n_ood)
    check_against_references(s_id, s_ood)


@pytest.mark.parametrize("seed", range(6))
def test_ood_metrics_many_ties(seed):
    # Integer-rounded scores: many thresholds hold several ID and OOD samples at once.
    rng = np.random.default_rng(100 + seed)
    s_id = np.round(rng.normal(2.0, 2.0, 300))
    s_ood = np.round(rng.normal(0.0, 2.0, 250))
    check_against_references(s_id, s_ood)


def test_fpr95_ties_straddling_the_level():
    # 100 ID scores: 94 at 2, 6 at 1 (so TPR jumps 0.94 -> 1.0 at t=1); OOD half at 1, half at 0.
    # No threshold can keep exactly 95% of ID: the first that keeps >= 95% is t=1, which also keeps
    # every OOD sample tied at 1.  An interpolated or "closest TPR" FPR95 would be different.
    s_id = np.r_[np.full(94, 2.0), np.full(6, 1.0)]
    s_ood = np.r_[np.full(50, 1.0), np.full(50, 0.0)]
    got = check_against_references(s_id, s_ood)
    assert got["fpr95"] == pytest.approx(0.5)


def test_fpr95_exactly_at_the_level():
    # 95 of 100 ID above every OOD: the threshold keeping exactly 95% keeps no OOD (TPR == 0.95
    # counts as reaching the level, even in floating point: 95 / 100 == 0.95).
    s_id = np.r_[np.linspace(10, 20, 95), np.linspace(-5, -1, 5)]
    s_ood = np.linspace(0, 5, 40)
    got = check_against_references(s_id, s_ood)
    assert got["fpr95"] == 0.0
    # One more ID sample below the OOD: now 95% needs a threshold under some OOD.
    s_id2 = np.r_[np.linspace(10, 20, 94), np.linspace(-5, -1, 6)]
    got2 = check_against_references(s_id2, s_ood)
    assert got2["fpr95"] > 0


@pytest.mark.parametrize("n_id", [20, 40, 60, 100, 140, 1000])
def test_fpr95_level_reached_exactly_many_sizes(n_id):
    # Sizes where 0.95 * n_id is an integer: the level is hit exactly by the cumulative TPR.
    rng = np.random.default_rng(n_id)
    s_id = rng.permutation(n_id).astype(float) + 0.5
    s_ood = rng.uniform(0, n_id, 77)
    check_against_references(s_id, s_ood)


def test_ood_metrics_constant_scores():
    got = check_against_references(np.full(50, 3.0), np.full(70, 3.0))
    assert got["auroc"] == 0.5
    assert got["fpr95"] == 1.0


def test_ood_metrics_perfectly_separated():
    got = check_against_references(np.linspace(1, 2, 50), np.linspace(-2, 0.5, 80))
    assert got["auroc"] == 1.0
    assert got["fpr95"] == 0.0
    assert got["aupr_in"] == pytest.approx(1.0)
    assert got["aupr_out"] == pytest.approx(1.0)


@pytest.mark.parametrize("n_id", [20, 21, 47])
def test_aupr_of_a_perfect_separation_is_at_most_one(n_id):
    """sklearn's average precision gives 1.0000000000000002 for 20, 21 or 47 ID scores above 24 OOD
    ones; a record holding that is refused as invalid (it happened in the paper smoke), so it is clipped."""
    got = ood_metrics(np.linspace(1, 2, n_id), np.linspace(-1, 0, 24))
    assert got["aupr_in"] == 1.0
    assert got["aupr_out"] == pytest.approx(1.0, abs=1e-12) and got["aupr_out"] <= 1.0


def test_ood_metrics_reversed():
    got = check_against_references(np.linspace(-2, 0.5, 50), np.linspace(1, 2, 80))
    assert got["auroc"] == 0.0
    assert got["fpr95"] == 1.0


def test_fpr95_convention_differs_from_closest_recall_code():
    # The official code (Hendrycks' fpr_and_fdr_at_recall) takes the threshold whose TPR is
    # *closest* to 95%, the lowest such threshold on a tie; ours takes the highest threshold whose
    # TPR reaches 95% (FPR95_CONVENTION).  Both have TPR exactly 0.95 here, but the lowest one
    # also keeps the OOD sample lying between the 19th and 20th ID scores.
    s_id = np.arange(1.0, 21.0)  # TPR 19/20 = 0.95 at every threshold in (1, 2]
    s_ood = np.array([1.5, -3.0])
    assert ood_metrics(s_id, s_ood)["fpr95"] == brute_fpr95(s_id, s_ood) == 0.0
    thresholds = np.unique(np.r_[s_id, s_ood])  # ascending
    tpr = np.array([np.mean(s_id >= t) for t in thresholds])
    start = np.flatnonzero(tpr == 1.0)[-1]  # that code scans upwards from the last TPR = 1
    closest = thresholds[start:][int(np.argmin(np.abs(tpr[start:] - 0.95)))]
    assert np.mean(s_ood >= closest) == 0.5


def official_fpr95(s_id, s_ood, level=0.95) -> float:
    """The official code's FPR95, restated: ``fpr_and_fdr_at_recall`` of hongxin001/logitnorm_ood
    (``common/display_results.py``, from Hendrycks' Outlier Exposure), called as its test.py calls it
    (ID positive, higher = more ID).  It takes the threshold whose TPR is closest to ``level``,
    scanning from the lowest threshold up, so on a tie the lowest threshold wins."""
    scores = np.r_[s_id, s_ood]
    is_id = np.r_[np.ones(len(s_id), bool), np.zeros(len(s_ood), bool)]
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, is_id = scores[order], is_id[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # thresholds, descending
    tps = np.cumsum(is_id)[last_of_each]
    fps = 1 + last_of_each - tps
    full = tps.searchsorted(tps[-1])  # the highest threshold with TPR 1
    recall = np.r_[(tps / tps[-1])[full::-1], 1]
    fps = np.r_[fps[full::-1], 0]
    return float(fps[np.argmin(np.abs(recall - level))] / len(s_ood))


@pytest.mark.parametrize("seed", range(5))
def test_official_fpr95_at_exactly_95_percent_adds_the_ood_between_two_id_scores(seed):
    # The paper's protocol: 10,000 ID images, so TPR reaches exactly 95% (at the 9,500th ID score).
    # The official code then takes the lowest threshold of that TPR, ours the highest: the official
    # value is larger by the OOD samples lying strictly between the 9,500th and 9,501st ID scores.
    rng = np.random.default_rng(seed)
    s_id, s_ood = rng.normal(2.0, 1.0, 10_000), rng.normal(0.0, 2.5, 2_000)
    ours, official = ood_metrics(s_id, s_ood)["fpr95"], official_fpr95(s_id, s_ood)
    kth, next_id = np.sort(s_id)[::-1][[9_499, 9_500]]
    assert official - ours == pytest.approx(np.mean((s_ood > next_id) & (s_ood < kth)), abs=1e-12)
    assert 0 <= official - ours <= 0.01


def test_official_fpr95_can_be_lower_when_a_tie_straddles_95_percent():
    # Nine ID scores tied at 0 with five OOD ones: TPR jumps from 0.91 to 1.0.  Ours takes the first
    # threshold reaching 95% (TPR 1.0, which keeps the five OOD scores at 0); the official code takes
    # the closest TPR, 0.91, which keeps none.
    s_ood = np.r_[np.full(5, 0.0), np.full(5, -1.0)]
    s_id = np.r_[np.arange(10.0, 101.0), np.zeros(9)]
    assert ood_metrics(s_id, s_ood)["fpr95"] == 0.5 and official_fpr95(s_id, s_ood) == 0.0
    s_id = np.r_[np.arange(10.0, 99.0), np.zeros(11)]  # 0.89 -> 1.0: now 1.0 is the closer, for both
    assert ood_metrics(s_id, s_ood)["fpr95"] == official_fpr95(s_id, s_ood) == 0.5


def test_ood_metrics_is_id_positive_not_ood_positive():
    # pytorch-ood's FPR95TPR takes OOD as positive: a different number on asymmetric data.
    rng = np.random.default_rng(7)
    s_id, s_ood = rng.normal(2, 0.5, 500), rng.normal(0, 2.0, 500)
    got = ood_metrics(s_id, s_ood)
    ood_positive = brute_fpr95(-s_ood, -s_id)
    assert got["fpr95"] == pytest.approx(brute_fpr95(s_id, s_ood))
    assert abs(got["fpr95"] - ood_positive) > 0.05


def test_ood_metrics_accepts_tensors_and_any_shape():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(1, 1, 64), rng.normal(0, 1, 32)
    ref = ood_metrics(s_id, s_ood)
    got = ood_metrics(torch.tensor(s_id, dtype=torch.float64).reshape(8, 8), torch.tensor(s_ood).reshape(32, 1))
    assert got == pytest.approx(ref)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["id", "ood"])
def test_ood_metrics_non_finite_raises(bad, where):
    s_id, s_ood = np.linspace(0, 1, 10), np.linspace(-1, 0, 10)
    (s_id if where == "id" else s_ood)[3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        ood_metrics(s_id, s_ood)


@pytest.mark.parametrize("s_id,s_ood", [([], [1.0, 2.0]), ([1.0, 2.0], []), ([], [])])
def test_ood_metrics_empty_raises(s_id, s_ood):
    with pytest.raises(ValueError):
        ood_metrics(s_id, s_ood)


# ------------------------------------------------------------------------------------------
# ECE
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_classes", [2, 10])
def test_ece_random_matches_brute_force(seed, n_classes):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(400, n_classes, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, n_classes, (400,), generator=g)
    probs = torch.softmax(logits, dim=1)
    assert ece(probs, labels) == pytest.approx(brute_ece(probs.numpy(), labels.numpy()), abs=1e-12)
    assert ece(probs, labels, n_bins=7) == pytest.approx(brute_ece(probs.numpy(), labels.numpy(), 7), abs=1e-12)


def test_ece_one_class():
    probs = torch.ones(20, 1, dtype=torch.float64)
    labels = torch.zeros(20, dtype=torch.long)
    assert ece(probs, labels) == 0.0 == brute_ece(probs.numpy(), labels.numpy())


def test_ece_all_correct_and_all_wrong():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(300, 5, generator=g, dtype=torch.float64) * 2, dim=1)
    pred = probs.argmax(1)
    conf = probs.max(1).values
    # All correct: each bin's gap is 1 - mean confidence, so ECE = 1 - mean confidence.
    assert ece(probs, pred) == pytest.approx(brute_ece(probs.numpy(), pred.numpy()), abs=1e-12)
    assert ece(probs, pred) == pytest.approx(float(1 - conf.mean()), abs=1e-12)
    # All wrong: ECE = mean confidence.
    wrong = (pred + 1) % 5
    assert ece(probs, wrong) == pytest.approx(brute_ece(probs.numpy(), wrong.numpy()), abs=1e-12)
    assert ece(probs, wrong) == pytest.approx(float(conf.mean()), abs=1e-12)


def test_ece_confidences_on_bin_edges():
    # Confidences exactly k/M belong to bin (k-1)/M..k/M; a hair above belongs to the next bin.
    # 0.7333333333333334 is the double just above 11/15: it must not fall into (10/15, 11/15].
    m = 15
    rows, labels = [], []
    for c, right in [(11 / m, True), (0.7333333333333334, True), (0.7, False), (12 / m, False),
                     (0.6, True), (0.8, False), (1.0, True), (1 / 3 + 1e-12, True)]:
        rows.append([c, 1 - c] if c >= 0.5 else [c, c, 1 - 2 * c])
        labels.append(0 if right else 1)
    width = max(len(r) for r in rows)
    probs = torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)
    labels = torch.tensor(labels)
    assert ece(probs, labels) == pytest.approx(brute_ece(probs.numpy(), labels.numpy()), abs=1e-12)
    # The separation matters: the second and third samples in one bin would give another number.
    two = probs[[1, 2]], labels[[1, 2]]
    assert ece(*two) == pytest.approx(0.5 * (1 - 0.7333333333333334) + 0.5 * 0.7, abs=1e-12)


# ------------------------------------------------------------------------------------------
# Temperature scaling
# ------------------------------------------------------------------------------------------


def _grid_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    z = logits.double().numpy()
    y = labels.numpy()

    def nll(t):
        a = z / t
        a = a - a.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(a).sum(axis=1)) - a[np.arange(len(y)), y]))

    coarse = np.exp(np.linspace(math.log(1e-2), math.log(1e2), 801))
    best = coarse[int(np.argmin([nll(t) for t in coarse]))]
    fine = np.linspace(best * 0.97, best * 1.03, 601)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def _overconfident(n=800, c=10, seed=0, scale=8.0):
    """Logits whose argmax is right ~60% of the time but whose softmax says ~100%."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    logits[torch.arange(n), labels] += 1.5
    return logits * scale, labels


@pytest.mark.parametrize("scale,seed", [(8.0, 0), (0.3, 1), (1.0, 2)])
def test_fit_temperature_matches_grid_search(scale, seed):
    logits, labels = _overconfident(n=600, seed=seed, scale=scale)
    t = fit_temperature(logits, labels)
    assert t > 0
    assert t == pytest.approx(_grid_temperature(logits, labels), rel=0.01)


def test_ece_temperature_scaled_two_halves_and_lower_than_raw():
    logits, labels = _overconfident()
    raw = ece(torch.softmax(logits, dim=1), labels)
    scaled, temps = ece_temperature_scaled(logits, labels, seed=0)
    assert len(temps) == 2
    assert all(t > 1 for t in temps)  # overconfident: the fitted T softens
    assert raw > 0.2
    assert scaled < raw / 2
    # Each half's T is the one fitted on the other half's images (seeded split).
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    first, second = perm[: len(perm) // 2], perm[len(perm) // 2:]
    assert temps[0] == pytest.approx(fit_temperature(logits[first], labels[first]))
    assert temps[1] == pytest.approx(fit_temperature(logits[second], labels[second]))
    # Deterministic per seed.
    assert ece_temperature_scaled(logits, labels, seed=0) == (scaled, temps)


# ------------------------------------------------------------------------------------------
# Small ones
# ------------------------------------------------------------------------------------------


def test_mean_logit_norm_matches_numpy():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(37, 10)) * rng.uniform(0.1, 10, size=(37, 1))
    ref = float(np.mean(np.sqrt((z ** 2).sum(axis=1))))
    assert mean_logit_norm(torch.tensor(z)) == pytest.approx(ref, rel=1e-12)
    assert mean_logit_norm(torch.tensor(z, dtype=torch.float32)) == pytest.approx(ref, rel=1e-5)


def test_accuracy():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0], [5.0, 4.0]])
    assert accuracy(logits, torch.tensor([1, 0, 0, 1])) == 0.5
    assert accuracy(logits, torch.tensor([1, 0, 1, 0])) == 1.0
    assert accuracy(logits, torch.tensor([0, 1, 0, 1])) == 0.0
    rng = np.random.default_rng(9)
    z, y = rng.normal(size=(200, 7)), rng.integers(0, 7, 200)
    assert accuracy(torch.tensor(z), torch.tensor(y)) == pytest.approx(float(np.mean(z.argmax(1) == y)))
