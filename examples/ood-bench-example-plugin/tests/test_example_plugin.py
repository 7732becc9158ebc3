"""Test the plugin against the harness, without installing it."""

import pytest
import torch
import torch.nn.functional as F

import ood_bench_example_plugin
from logitnorm_bench.components import ModelOutputs
from logitnorm_bench.errors import ConfigError, DuplicateNameError
from logitnorm_bench.params import resolve_params
from logitnorm_bench.plugins import Plugins


def example_plugins() -> Plugins:
    plugins = Plugins(load_entry_points=False)  # only what is added here, not what is installed
    plugins.add(ood_bench_example_plugin, name="example")
    return plugins


def test_registered():
    plugins = example_plugins()
    assert plugins.registry("detectors").get("maxlogit").plugin == "example"
    assert plugins.registry("losses").names() == ["label_smoothing_ce"]


def test_no_clash_with_the_builtins():
    from ood_bench_paper import plugin  # the objects the built-ins' entry points name

    plugins = Plugins(load_entry_points=False, strict=True)  # strict: a name clash raises, not warns
    plugins.add(ood_bench_example_plugin, name="example")
    plugins.add(plugin.detectors, name="paper_detectors", distribution="ood-bench 0.1.0")
    plugins.add(plugin.losses, name="paper_losses", distribution="ood-bench 0.1.0")
    try:
        plugins.registry("detectors")
        plugins.registry("losses")
    except DuplicateNameError as exc:
        pytest.fail(str(exc))


def test_maxlogit_is_higher_for_confident_logits():
    detector = example_plugins().registry("detectors").build("maxlogit")
    logits = torch.tensor([[8.0, 0.0, 0.0], [0.3, 0.2, 0.1]])
    scores = detector.score_outputs(ModelOutputs(logits=logits), model=None)
    assert scores.tolist() == pytest.approx([8.0, 0.3])


def test_label_smoothing_params():
    plugins = example_plugins()
    entry = plugins.registry("losses").get("label_smoothing_ce")
    assert resolve_params(entry, {}) == {"smoothing": 0.1}  # the defaults are filled in
    with pytest.raises(ConfigError, match="did you mean 'smoothing'"):
        resolve_params(entry, {"smothing": 0.2})
    with pytest.raises(ValueError, match="smoothing"):
        plugins.registry("losses").build("label_smoothing_ce", smoothing=1.5)
    loss = plugins.registry("losses").build("label_smoothing_ce", smoothing=0.0)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(loss(logits, targets), F.cross_entropy(logits, targets))
