"""The paper's components, registered by import string: the objects the ``ood-bench`` entry points name.

Loading this module imports neither torch nor the modules that define the components
(``ood_bench_paper.datasets``, ``.architectures``, ``.losses``, ``.detectors``): each factory is
registered as ``"module:attribute"`` and imported when a component is built or its parameters are
resolved.  So ``ood-bench list``, ``--help`` and a suite with a syntax error answer at once.

Each table is ``name: (attribute of the module, description)``; ``tests/test_plugins.py`` builds
every entry, so a renamed class cannot hide here.
"""

from __future__ import annotations

from logitnorm_bench.plugins import lazy_plugin, register_defined  # noqa: F401 - the heavy modules use it

DATASETS = {
    "cifar10": ("Cifar10", "CIFAR-10 (ID, 10 classes, 3x32x32), torchvision layout <root>/cifar-10-batches-py"),
    "cifar100": ("Cifar100", "CIFAR-100 (ID, 100 classes, 3x32x32), torchvision layout <root>/cifar-100-python"),
    "textures": ("Textures", "DTD textures (OOD), <root>/dtd/images, Resize 32 + CenterCrop 32"),
    "svhn": ("Svhn", "SVHN test split (OOD), <root>/svhn/test_32x32.mat"),
    "lsun_c": ("LsunCrop", "LSUN crop, ODIN's archive (OOD), <root>/LSUN_C"),
    "lsun_r": ("LsunResize", "LSUN resize, ODIN's archive (OOD), <root>/LSUN_resize"),
    "isun": ("Isun", "iSUN, ODIN's archive (OOD), <root>/iSUN"),
    "places365": ("Places365", "Places365 subset (OOD), <root>/places365/test_subset, Resize 32 + CenterCrop 32"),
    "gaussian_noise": ("GaussianNoise", "Gaussian noise N(0.5, 0.25^2) clipped (OOD; the paper's validation set)"),
    "uniform_noise": ("UniformNoise", "Uniform noise U[0,1] (OOD)"),
    "digits": ("Digits", "scikit-learn 8x8 digits (ID, 10 classes, 1x8x8), fixed train/val/test split"),
    "digits_0to4": ("DigitsLow", "scikit-learn digits 0-4 (ID, 5 classes, 1x8x8)"),
    "digits_5to9": ("DigitsHigh", "scikit-learn digits 5-9 of the test split (OOD for digits_0to4)"),
    "photo_patches": ("PhotoPatches", "random crops of scikit-learn's sample photos, resized (OOD for digits)"),
}

ARCHITECTURES = {
    "wrn40_2": ("wrn40_2", "WRN-40-2 (pytorch-ood's WideResNet, official parameter names); param dropout=0.3."),
    "resnet34": ("resnet34", "CIFAR ResNet-34 (torchvision, 3x3 stem, no max-pool)."),
    "densenet_bc": ("densenet_bc", "CIFAR DenseNet-BC-100-12 (torchvision, CIFAR stem); params depth=100, "
                                   "growth_rate=12."),
    "digits_mlp": ("digits_mlp", "Small BN MLP for the bundled 8x8 digits; param width=128."),
}

LOSSES = {
    "ce": ("CrossEntropy", "Softmax cross-entropy."),
    "logitnorm": ("LogitNormLoss", "LogitNorm (Wei et al., ICML 2022): CE on f / (tau * ||f||_2); param tau=0.04."),
    "logitpenalty": ("LogitPenalty", "Logit Penalty: CE + lam * mean ||f||_2 (LogitNorm paper, Table 5); "
                                     "param lam=0.05."),
    "godin": ("GodinLoss", "Generalized ODIN DeConf-C (Hsu et al., CVPR 2020): cosine h / sigmoid-BN g head, "
                           "CE on h/g."),
}

DETECTORS = {
    "msp": ("MSP", "Maximum softmax probability of f/T; param temperature=1."),
    "odin": ("ODIN", "ODIN: input perturbation + temperature; params temperature=1000, epsilon=0.0014."),
    "energy": ("Energy", "Negative energy T*logsumexp(f/T); param temperature=1."),
    "gradnorm": ("GradNorm", "GradNorm: L1 norm of the last layer's weight gradient of the uniform-target loss; "
                             "param temperature=1."),
    "godin": ("GODIN", "Generalized ODIN score max_i h_i(x~), eps chosen on ID validation data; params "
                       "epsilon=None, epsilons."),
}

REPORTS = {
    "logitnorm_paper": ("LogitNormPaper", "Wei et al. (ICML 2022): Tables 1-9 beside the paper's numbers; "
                                          "Figures 1-5."),
}


# The entry points (pyproject.toml): paper_datasets = "ood_bench_paper.plugin:datasets", ...
datasets = lazy_plugin("datasets", "ood_bench_paper.datasets", DATASETS)
architectures = lazy_plugin("architectures", "ood_bench_paper.architectures", ARCHITECTURES)
losses = lazy_plugin("losses", "ood_bench_paper.losses", LOSSES)
detectors = lazy_plugin("detectors", "ood_bench_paper.detectors", DETECTORS)
reports = lazy_plugin("reports", "ood_bench_paper.report", REPORTS)
