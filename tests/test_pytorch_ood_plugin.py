"""The pytorch-ood plugin (plugins/ood_bench_pytorch_ood): every registered detector equals pytorch-ood
called directly on the same model and data (sign flipped), through the harness's own evaluation path
(shared pass, FitData); every registered loss equals pytorch-ood's; the outlier set and its names."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from pytorch_ood import detector as pd
from pytorch_ood import loss as pl
from torch import nn
from torch.utils.data import DataLoader

from ood_bench_pytorch_ood import plugin as plugin_objects
from logitnorm_bench.components import DataContext, Normalized
from logitnorm_bench.evaluation import Evaluator
from logitnorm_bench.plan import EvaluationCell
from logitnorm_bench.plugins import Plugins
from logitnorm_bench.suite import EvalProtocol
from logitnorm_bench.train import materialize
from ood_bench_paper import datasets as paper_datasets
from ood_bench_paper import detectors as paper_detectors
from ood_bench_paper import losses as paper_losses
from ood_bench_paper.architectures import _BodyHead
from ood_bench_pytorch_ood.detectors import DETECTORS
from ood_bench_pytorch_ood.losses import LOSSES

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

BATCH = 128  # the evaluation batch size: several batches per set


def plugins() -> Plugins:
    p = Plugins(load_entry_points=False)
    p.add(paper_datasets, name="paper_datasets")
    for kind in ("detectors", "losses", "datasets"):
        p.add(getattr(plugin_objects, kind), name=f"pytorch_ood_{kind}")
    return p


# ----------------------------------------------------------------------------------------------
# One trained model (BatchNorm and dropout), the digits, and the harness's scores of every detector
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    torch.set_num_threads(1)
    reg = plugins()
    source = reg.datasets.build("digits")
    ctx = DataContext(root=tmp_path_factory.mktemp("data"), download=False)
    train_set, val_set = source.build("train", ctx), source.build("val", ctx)
    x, y = materialize(train_set)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU())
    model = Normalized(_BodyHead(body, nn.Linear(32, 10)), source.mean, source.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(12):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    ood_source = reg.datasets.build("photo_patches", n=200, shape=(1, 8, 8))
    protocol = dataclasses.asdict(EvalProtocol(ood_samples=None, batch_size=BATCH))
    evaluator = Evaluator(model, source, ctx, reg, torch.device("cpu"), protocol, source_for=lambda name, params=None: ood_source)
    cells = [EvaluationCell(name, "run", name, {}, "photo_patches", protocol) for name in DETECTORS]
    results = {c.detector: r for c, r in evaluator.evaluate(cells)}
    assert evaluator.run_metrics["id_acc"] > 0.9
    id_x, _ = materialize(source.build("test", ctx))
    ood_x, _ = materialize(ood_source.build("test", ctx))
    loaders = {split: DataLoader(ds, batch_size=BATCH, shuffle=False) for split, ds in
               (("train", train_set), ("val", val_set))}
    return model, loaders, id_x, ood_x, results


def _fitted(det, loader):
    det.to("cpu")  # what pytorch-ood's fit does when no device is set, without its warning
    return det.fit(loader)


def _pooled_maps(model):
    """pytorch-ood's documented way to give feature-map detectors pooled features: (B, D, 1, 1) maps."""
    return (lambda x: model.features(x)[:, :, None, None]), (lambda maps: model.head(maps.flatten(1)))


#: name -> pytorch-ood called directly, as its docs show: (model, {"train": loader, "val": loader}) -> detector
DIRECT = {
    "max_logit": lambda m, ld: pd.MaxLogit(m),
    "entropy": lambda m, ld: pd.Entropy(m),
    "gen": lambda m, ld: pd.GEN(m),
    "weighted_ebo": lambda m, ld: pd.WeightedEBO(m, torch.ones(10)),
    "klmatching": lambda m, ld: _fitted(pd.KLMatching(m), ld["val"]),
    "openmax": lambda m, ld: _fitted(pd.OpenMax(m), ld["train"]),
    "temperature": lambda m, ld: _fitted(pd.TemperatureScaling(m), ld["val"]),
    "mahalanobis": lambda m, ld: _fitted(pd.Mahalanobis(m.features), ld["train"]),
    "rmd": lambda m, ld: _fitted(pd.RMD(m.features), ld["train"]),
    "gmm": lambda m, ld: _fitted(pd.GMM(m.features), ld["train"]),
    "vim": lambda m, ld: _fitted(pd.ViM(m.features, d=64, w=m.head.weight, b=m.head.bias), ld["train"]),
    "knn": lambda m, ld: _fitted(pd.KNN(m.features), ld["train"]),
    "she": lambda m, ld: _fitted(pd.SHE(m.features, m.head), ld["train"]),
    "dice": lambda m, ld: _fitted(pd.DICE(m.features, w=m.head.weight, b=m.head.bias, p=0.9), ld["train"]),
    "fdbd": lambda m, ld: _fitted(pd.fDBD(m.features, m.head), ld["train"]),
    "nci": lambda m, ld: _fitted(pd.NCI(m.features, m.head), ld["train"]),
    "nnguide": lambda m, ld: _fitted(pd.NNGuide(m.features, m.head), ld["train"]),
    "pnml": lambda m, ld: _fitted(pd.PNML(m.features, m.head), ld["train"]),
    # the whole model, with its penultimate layer (the body) as NAC's one layer
    "nac": lambda m, ld: pd.NACUE(m, layers=[m.net.body]).fit(ld["train"]),
    "lts": lambda m, ld: pd.LTS(m.features, m.head),
    "react": lambda m, ld: _fitted(pd.ReAct(m.features, m.head), ld["train"]),
    "vra": lambda m, ld: _fitted(pd.VRA(m.features, m.head), ld["train"]),
    "ash": lambda m, ld: pd.ASH(*_pooled_maps(m)),
    "scale": lambda m, ld: pd.SCALE(*_pooled_maps(m)),
    "mcd": lambda m, ld: pd.MCD(m),
    "mahalanobis_odin": lambda m, ld: _fitted(pd.MahalanobisODIN(m.features), ld["train"]),
    "grad_uncertainty": lambda m, ld: pd.GradUncertainty(m),
}


def _direct_scores(det, x: torch.Tensor, seeded: bool) -> torch.Tensor:
    chunks = []
    for i in range(0, x.shape[0], BATCH):  # the harness's batches (MCD's dropout draws are per batch)
        if seeded:
            torch.manual_seed(0)
        chunks.append(det.predict(x[i:i + BATCH]).detach().double().reshape(-1))
    return torch.cat(chunks)


def test_every_registered_detector_has_a_direct_reference():
    assert set(DIRECT) == set(DETECTORS)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_equals_pytorch_ood_called_directly(bench, name):
    model, loaders, id_x, ood_x, results = bench
    result = results[name]
    assert "error" not in result, result.get("error")
    det = DIRECT[name](model, loaders)
    model.eval()
    for ours, x in ((result["scores"]["id"], id_x), (result["scores"]["ood"][0], ood_x)):
        theirs = -_direct_scores(det, x, seeded=name == "mcd")
        assert model.training is False
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-5 * max(scale, 1e-6))
    assert result["metrics"]["auroc"] > 0.75  # a trained digits model against photo crops: a real separation


def test_fitted_detectors_fit_on_the_shared_outputs_only(bench):
    """No detector runs the model over the training set: their fits record what FitData held."""
    *_, results = bench
    for name, (cls, _) in DETECTORS.items():
        fit = results[name]["detector_fit"]
        if cls.needs_fit:
            assert fit["fit_on"] == cls.fit_on and fit["fit_data"]["id_train_samples"] == 1131, name
        else:
            assert fit == {}, name


def test_one_pass_per_set_for_every_detector_of_the_grid(bench, tmp_path):
    """All detectors that score from the shared pass: the model sees each image once (training, validation,
    ID test and OOD images), however many detectors are fitted and scored."""
    model, loaders, id_x, ood_x, _ = bench
    reg = plugins()
    source = reg.datasets.build("digits")
    ood_source = reg.datasets.build("photo_patches", n=200, shape=(1, 8, 8))
    protocol = dataclasses.asdict(EvalProtocol(ood_samples=None, batch_size=BATCH))
    seen = []
    hook = model.net.body.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        evaluator = Evaluator(model, source, DataContext(root=tmp_path, download=False), reg, torch.device("cpu"),
                              protocol, source_for=lambda name, params=None: ood_source)
        shared = [n for n, (cls, _) in DETECTORS.items() if not cls.needs_input_grad]
        cells = [EvaluationCell(n, "run", n, {}, "photo_patches", protocol) for n in shared]
        assert all("error" not in r for _, r in evaluator.evaluate(cells))
    finally:
        hook.remove()
    n_train, n_val = (len(loader.dataset) for loader in loaders.values())
    assert sum(seen) == n_train + n_val + len(id_x) + len(ood_x)


def test_klmatching_and_temperature_fit_on_held_out_data_the_rest_on_training_data():
    on_val = {name for name, (cls, _) in DETECTORS.items() if cls.needs_fit and cls.fit_on == "id_val_outputs"}
    assert on_val == {"klmatching", "temperature"}


def test_names_do_not_clash_with_the_paper_plugin():
    reg = plugins()
    reg.add(paper_detectors, name="paper_detectors")
    reg.add(paper_losses, name="paper_losses")
    detectors, losses = reg.registry("detectors"), reg.registry("losses")
    assert {"msp", "odin", "energy", "gradnorm", "godin"} <= set(detectors.names())
    assert {"ce", "logitnorm", "logitpenalty", "godin"} <= set(losses.names())
    assert {detectors.get(n).plugin for n in ("msp", "odin", "energy", "gradnorm")} == {"paper_detectors"}
    assert "maxlogit" not in detectors  # the example plugin's name (docs/plugins.md)


@pytest.mark.parametrize("name, params", [
    ("ash", {"variant": "ash-x"}), ("ash", {"percentile": 65}), ("dice", {"p": -0.1}), ("knn", {"k": 0}),
    ("vim", {"d": 0}), ("gen", {"gamma": 0}), ("mcd", {"mode": "max"}), ("vra", {"lower_percentile": 0.9,
                                                                                "upper_percentile": 0.1}),
    ("grad_uncertainty", {"params": "("}), ("weighted_ebo", {"weights": [0, -1]}), ("openmax", {"alpha": 0}),
])
def test_bad_parameters_are_value_errors(name, params):
    with pytest.raises(ValueError, match=name.split("_")[0]):
        plugins().registry("detectors").build(name, **params)


def test_linear_head_detectors_name_the_head_they_cannot_use():
    from logitnorm_bench.components import FitData, FitOutputs
    from ood_bench_paper.godin import GodinHead

    model = Normalized(_BodyHead(nn.Flatten(), GodinHead(64, 3)), (0.5,), (0.5,)).eval()
    data = FitData(model, torch.device("cpu"), id_train=FitOutputs(torch.randn(6, 3), torch.arange(6) % 3,
                                                                   torch.rand(6, 64), 6))
    for name in ("vim", "dice", "fdbd", "nci"):
        with pytest.raises(ValueError, match=f"{name} needs the model's head to be an nn.Linear.*GodinHead"):
            plugins().registry("detectors").build(name).fit(data)


def test_detectors_leave_the_model_as_they_found_it(bench):
    """MCD switches to train mode and Mahalanobis+ODIN calls backward(): mode and .grad are restored."""
    model, _, id_x, _, _ = bench
    for name in ("mcd", "mahalanobis_odin", "grad_uncertainty"):
        det = plugins().registry("detectors").build(name)
        if det.needs_fit:
            det.pood = DIRECT[name](model, {"train": DataLoader(list(zip(id_x, torch.arange(len(id_x)) % 10)),
                                                                 batch_size=64)})
        model.eval()
        grads = [p.grad for p in model.parameters()]
        det.score_inputs(model, id_x[:8])
        assert not model.training and all(not m.training for m in model.modules()), name
        assert all(p.grad is g for p, g in zip(model.parameters(), grads)), name


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def _logits_and_targets(k=5, n_in=6, n_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_in + n_out, k, generator=g) * 3
    targets = torch.cat([torch.randint(k, (n_in,), generator=g), torch.full((n_out,), -1)])
    return logits, targets


DIRECT_LOSSES = {
    "oe": (dict(alpha=0.3), lambda: pl.OutlierExposureLoss(alpha=0.3)),
    "energy_reg": (dict(alpha=0.2, margin_in=-5.0, margin_out=-1.0),
                   lambda: pl.EnergyRegularizedLoss(alpha=0.2, margin_in=-5.0, margin_out=-1.0)),
    "entropic": ({}, pl.EntropicOpenSetLoss),
}


@pytest.mark.parametrize("name", sorted(DIRECT_LOSSES))
@pytest.mark.parametrize("n_out", [0, 4])
def test_logit_losses_equal_pytorch_ood(name, n_out):
    params, direct = DIRECT_LOSSES[name]
    loss = plugins().registry("losses").build(name, **params)
    logits, targets = _logits_and_targets(n_out=n_out)
    assert loss.uses_outliers
    torch.testing.assert_close(loss(logits, targets), direct()(logits, targets), rtol=0, atol=0)


def test_objectosphere_gets_the_penultimate_features_of_the_same_pass():
    torch.manual_seed(0)
    model = Normalized(_BodyHead(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU()), nn.Linear(8, 3)),
                       (0.5,), (0.5,))
    loss = plugins().registry("losses").build("objectosphere", alpha=0.5, xi=2.0)
    assert loss.prepare_model(model, 3) is model and loss.prepare_model(model, 3) is model  # hooked once
    x = torch.rand(7, 1, 4, 4)
    targets = torch.tensor([0, 1, 2, 0, -1, -1, -1])
    with torch.no_grad():  # (no gradients: the hook leaves this pass alone)
        phi = model.features(x)
        expected = pl.ObjectosphereLoss(alpha=0.5, xi=2.0)(model.head(phi), phi, targets)
    value = loss(model(x), targets)
    torch.testing.assert_close(value, expected)
    value.backward()  # the features are the graph's, so the feature term trains the body
    assert model.net.body[1].weight.grad is not None
    with torch.no_grad():
        model(x)  # the evaluation's passes capture nothing
    with pytest.raises(RuntimeError, match="no penultimate features"):
        loss(torch.randn(7, 3), targets)


def test_cac_equals_pytorch_ood_on_the_logits():
    loss = plugins().registry("losses").build("cac", magnitude=3.0, alpha=0.5)
    with pytest.raises(RuntimeError, match="prepare_model"):
        loss(torch.randn(4, 5), torch.arange(4))
    model = nn.Linear(2, 5)
    assert loss.prepare_model(model, 5) is model
    logits, targets = _logits_and_targets(n_out=0)
    ref = pl.CACLoss(n_classes=5, magnitude=3.0, alpha=0.5)
    torch.testing.assert_close(loss(logits, targets), ref(ref.distance(logits), targets), rtol=0, atol=0)
    assert not loss.uses_outliers
    # The closest anchor is the largest logit: CAC's prediction is the model's argmax.
    d = ref.distance(logits)
    assert torch.equal(d.argmin(dim=1), logits.argmax(dim=1))


def test_losses_registered_are_the_documented_ones():
    assert set(LOSSES) == {"oe", "energy_reg", "entropic", "objectosphere", "cac"}
    assert {n for n, (cls, _) in LOSSES.items() if cls.uses_outliers} == {"oe", "energy_reg", "entropic",
                                                                          "objectosphere"}


@pytest.mark.parametrize("name, params", [("oe", {"alpha": -1}), ("energy_reg", {"margin_in": 0.0, "margin_out": -1.0}),
                                          ("objectosphere", {"xi": -1}), ("cac", {"magnitude": 0})])
def test_bad_loss_parameters_are_value_errors(name, params):
    with pytest.raises(ValueError, match=name):
        plugins().registry("losses").build(name, **params)


# ----------------------------------------------------------------------------------------------
# blobs
# ----------------------------------------------------------------------------------------------


def test_blobs_are_smooth_thresholded_shapes_a_function_of_seed_split_and_index(tmp_path):
    from ood_bench_pytorch_ood.datasets import THRESHOLD, Blobs, blur

    ctx = DataContext(root=tmp_path, download=False, seed=3)
    big = Blobs(n=50).build("train", ctx)
    x = torch.stack([big[i][0] for i in range(50)])
    assert x.shape == (50, 3, 32, 32) and {big[i][1] for i in range(50)} == {-1}
    on = x > 0
    assert torch.all(x[on] >= THRESHOLD - 1e-6) and 0.1 < on.float().mean() < 0.6  # blobs, not noise
    assert torch.equal(big[7][0], Blobs(n=50).build("train", ctx)[7][0])
    assert not torch.equal(big[7][0], Blobs(n=50).build("test", ctx)[7][0])
    small = Blobs(n=5, shape=(1, 8, 8)).build("train", ctx)[0][0]
    assert small.shape == (1, 8, 8) and 0 <= float(small.min()) and float(small.max()) <= 1
    # the blur is a normalised Gaussian: it keeps constants
    torch.testing.assert_close(blur(torch.full((2, 9, 9), 0.3)), torch.full((2, 9, 9), 0.3))
    with pytest.raises(ValueError, match="no split 'val'"):
        Blobs().build("val", ctx)


def test_plugin_registers_through_its_entry_point(plugin_env):
    from logitnorm_bench.plugins import get_plugins

    reg = get_plugins()
    assert reg.registry("detectors").get("mahalanobis").plugin == "pytorch_ood_detectors"
    assert reg.registry("losses").get("oe").plugin == "pytorch_ood_losses"
    assert reg.registry("datasets").get("blobs").plugin == "pytorch_ood_datasets"
    assert reg.failures == []


def test_detector_factories_take_only_suite_parameters():
    """Every constructor argument is a plain value with a default: suites set them, ood-bench hashes them."""
    import inspect

    from logitnorm_bench.params import resolve_params

    reg = plugins().registry("detectors")
    for name in DETECTORS:
        params = resolve_params(reg.get(name), {})
        assert all(isinstance(v, (int, float, str, bool, type(None), list)) for v in params.values()), name
        assert all(p.default is not inspect.Parameter.empty
                   for p in inspect.signature(DETECTORS[name][0]).parameters.values()), name




@pytest.mark.slow
def test_benchmark_tiny_mode_runs_and_the_two_sides_agree(capsys):
    """benchmarks/pytorch_ood_detectors.py: its tiny mode prints the table, the ratio, and equal scores."""
    import importlib.util
    import re
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("bench_pytorch_ood", bench_dir / "pytorch_ood_detectors.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        threads = torch.get_num_threads()
        assert module.main(["--tiny", "--threads", "1"]) == 0
        torch.set_num_threads(threads)
    finally:
        sys.path.remove(str(bench_dir))
    out = capsys.readouterr().out
    assert re.search(r"\| harness: Evaluator.evaluate, all detectors +\| [\d.]+ +\|", out)
    rows = [line for line in out.splitlines() if line.startswith("| pytorch-ood")]
    assert len(rows) == len(DETECTORS) + 1  # one per detector, and their sum
    assert sum(line.startswith("| pytorch-ood, all detectors one by one (sum)") for line in rows) == 1
    assert re.search(r"ratio pytorch-ood one by one / harness: [\d.]+x", out)
    worst = float(re.search(r"relative to the largest score: (\S+)", out).group(1))
    assert worst < 1e-4


def test_weighted_ebo_stays_finite_where_pytorch_ood_overflows():
    """pytorch-ood's log(sum(w e^f)) is inf for logits above ~88; ours is the same value as a log-sum-exp."""
    from logitnorm_bench.components import ModelOutputs
    from logitnorm_bench.plugins import get_plugins

    det = get_plugins().detectors.build("weighted_ebo", weights=[1.0, 0.0, 2.0])
    logits = torch.tensor([[200.0, 5.0, 199.0], [1.0, 2.0, 3.0], [-50.0, 300.0, -40.0]])
    ours = det.score_outputs(ModelOutputs(logits, None), None).double()
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    reference = torch.stack([torch.log((w * torch.exp(row.double() - row.max())).sum()) + row.max()
                             for row in logits])  # float64, shifted: exact
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, reference, rtol=1e-6)  # higher = more ID: log sum w e^f itself
    raw = pd.WeightedEBO(None, torch.tensor([1.0, 0.0, 2.0])).predict_logits(logits)
    assert torch.isinf(raw[0]) and torch.isclose(-raw[1].double(), ours[1], rtol=1e-6)  # finite row: equal
