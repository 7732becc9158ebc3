"""The harness's conformance checks on the plugin's components (logitnorm_bench.testing)."""

from ood_bench_example_plugin import LabelSmoothingCE, MaxLogit

from logitnorm_bench.testing import check_detector, check_loss


def test_maxlogit_meets_the_detector_contract():
    report = check_detector(MaxLogit)  # shapes, finiteness, determinism, fit contract, higher = more ID
    assert report.auroc == 1.0  # the kit's obvious case: confident ID logits, flat OOD logits


def test_label_smoothing_meets_the_loss_contract():
    check_loss(LabelSmoothingCE)  # scalar mean, gradients, trains the kit's small classifier
    check_loss(LabelSmoothingCE, smoothing=0.3)  # and with the parameters a suite may give
