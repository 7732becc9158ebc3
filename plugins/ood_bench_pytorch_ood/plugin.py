"""pytorch-ood's components, registered by import string: the objects the ``pytorch_ood`` entry points name.

Loading this module imports neither torch nor pytorch-ood: each factory is registered as
``"module:attribute"`` and imported when a component is built or its parameters are resolved, so
``ood-bench list`` and ``--help`` stay light (docs/performance.md).  The heavy modules register the same
tables with the callables themselves (``register_defined``), for in-process use.
"""

from __future__ import annotations

from logitnorm_bench.plugins import lazy_plugin

DETECTORS = {
    'max_logit': ('MaxLogit', 'pytorch-ood MaxLogit: max_i f_i.'),
    'entropy': ('Entropy', 'pytorch-ood Entropy: minus the softmax entropy.'),
    'gen': ('GEN', 'pytorch-ood GEN: minus the generalized entropy; params gamma=0.1, M=None (all classes).'),
    'weighted_ebo': ('WeightedEBO', 'pytorch-ood WeightedEBO: weighted energy; param weights=None (all ones).'),
    'klmatching': ('KLMatching', 'pytorch-ood KLMatching: minus the KL to the closest typical posterior (fitted on ID validation outputs).'),
    'openmax': ('OpenMax', 'pytorch-ood OpenMax: minus P(unknown); params tailsize=25, alpha=10, euclid_weight=1.'),
    'temperature': ('TemperatureScaling', 'pytorch-ood TemperatureScaling: max softmax(f/T), T fitted on ID validation outputs.'),
    'mahalanobis': ('Mahalanobis', 'pytorch-ood Mahalanobis: minus the distance to the closest class mean (ID training features).'),
    'rmd': ('RMD', 'pytorch-ood RMD: minus the relative Mahalanobis distance.'),
    'gmm': ('GMM', 'pytorch-ood GMM: class-conditional Gaussian log-likelihood; param reg=1e-6.'),
    'vim': ('ViM', 'pytorch-ood ViM: energy minus the scaled residual norm; param d=64.'),
    'knn': ('KNN', 'pytorch-ood KNN: minus the k-th nearest neighbour distance; params k=50, normalize=true.'),
    'she': ('SHE', "pytorch-ood SHE: simplified Hopfield energy with the predicted class's stored pattern."),
    'dice': ('DICE', 'pytorch-ood DICE: energy of the sparsified head; param p=0.9.'),
    'fdbd': ('FDBD', 'pytorch-ood fDBD: feature distance to the decision boundaries.'),
    'nci': ('NCI', 'pytorch-ood NCI: cosine of the centred features with the class weight; param alpha=0.'),
    'nnguide': ('NNGuide', 'pytorch-ood NNGuide: energy times nearest-neighbour guidance; param k=10.'),
    'pnml': ('PNML', 'pytorch-ood PNML: minus the pNML regret; param eps=1e-12.'),
    'nac': ('NAC', 'pytorch-ood NACUE on the penultimate layer; params m_bins=50, alpha=100, o_star=50.'),
    'lts': ('LTS', 'pytorch-ood LTS: energy of the scaled logits; param p=0.05.'),
    'react': ('ReAct', 'pytorch-ood ReAct: energy of clipped features; params percentile=0.9, threshold=None.'),
    'vra': ('VRA', 'pytorch-ood VRA: energy of per-dimension clipped features; params lower_percentile=0.01, upper_percentile=0.99.'),
    'ash': ('ASH', 'pytorch-ood ASH on the penultimate features; params variant=ash-s, percentile=0.65.'),
    'scale': ('SCALE', 'pytorch-ood SCALE on the penultimate features; param percentile=0.65.'),
    'mcd': ('MCD', 'pytorch-ood MCD: Monte-Carlo dropout; params samples=30, mode=var, batch_norm=true, seed=0.'),
    'mahalanobis_odin': ('MahalanobisODIN', 'pytorch-ood MahalanobisODIN: Mahalanobis after an input perturbation; param eps=0.002.'),
    'grad_uncertainty': ('GradUncertainty', 'pytorch-ood GradUncertainty: minus the per-sample parameter gradient norm; param params=None (regex of parameter names; all).'),
}

LOSSES = {
    'oe': ('OutlierExposure', 'pytorch-ood OutlierExposureLoss (learns from train.outliers); param alpha=0.5.'),
    'energy_reg': ('EnergyRegularized', 'pytorch-ood EnergyRegularizedLoss (learns from train.outliers); params alpha=0.1, margin_in=-25, margin_out=-7.'),
    'entropic': ('EntropicOpenSet', 'pytorch-ood EntropicOpenSetLoss (learns from train.outliers).'),
    'objectosphere': ('Objectosphere', 'pytorch-ood ObjectosphereLoss on the penultimate features (learns from train.outliers); params alpha=1, xi=1.'),
    'cac': ('CAC', 'pytorch-ood CACLoss on the logits; params magnitude=1, alpha=1.'),
}

DATASETS = {
    "blobs": ("Blobs", "Outlier Exposure's synthetic blobs (OOD; training outliers), 1x8x8 for the digits; params "
                       "n=10000, shape, seed."),
}

# The entry points (pyproject.toml): pytorch_ood_detectors = "ood_bench_pytorch_ood.plugin:detectors", ...
detectors = lazy_plugin("detectors", "ood_bench_pytorch_ood.detectors", DETECTORS)
losses = lazy_plugin("losses", "ood_bench_pytorch_ood.losses", LOSSES)
datasets = lazy_plugin("datasets", "ood_bench_pytorch_ood.datasets", DATASETS)
