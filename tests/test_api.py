"""The Python API: docs/api.md's examples run as they are, and the API's edges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import logitnorm_bench
from logitnorm_bench.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_docs_api_examples_run_in_order(tmp_path, monkeypatch, one_thread, plugin_env):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md[python block {i}]", "exec"), namespace)  # noqa: S102


def test_api_is_exported_lazily():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, logitnorm_bench; print('torch' in sys.modules); "
                          "print(callable(logitnorm_bench.run), callable(logitnorm_bench.evaluate), "
                          "callable(logitnorm_bench.load_results))"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"]


class NoLinearNet(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


class SoftmaxAfterLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).softmax(dim=1)


@pytest.mark.parametrize("model,message", [
    (NoLinearNet(), "has no nn.Linear"),
    (SoftmaxAfterLinear(), "not the output of its last nn.Linear"),
    ("not a model", "expected a torch.nn.Module"),
])
def test_evaluate_refuses_models_it_cannot_split(model, message, plugin_env, one_thread):
    with pytest.raises(ConfigError, match=message):
        logitnorm_bench.evaluate(model, id_dataset="digits", ood_datasets=["gaussian_noise"], detectors=["msp"],
                                 evaluation={"ood_samples": 20})


def test_evaluate_with_given_features_and_head_equals_the_split_at_the_last_linear(plugin_env, one_thread):
    torch.manual_seed(1)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    fc = nn.Linear(16, 10)
    model = nn.Sequential(body, fc)
    kw = dict(id_dataset="digits", ood_datasets=["gaussian_noise"], detectors=["msp", "gradnorm"],
              evaluation={"ood_samples": 50})
    split = logitnorm_bench.evaluate(model, **kw)
    given = logitnorm_bench.evaluate(model, features=body, head=fc, **kw)
    cols = ["fpr95", "auroc", "aupr_in", "id_acc"]
    assert split[cols].equals(given[cols])


@pytest.mark.parametrize("kwargs,message", [
    (dict(ood_datasets=[]), "at least one OOD dataset"),
    (dict(detectors=["maxlogitt"]), "unknown detector 'maxlogitt'"),
    (dict(detectors=[("energy", {"temp": 1})]), "unknown parameter 'temp'"),
    (dict(ood_datasets=["gausian_noise"]), "Did you mean 'gaussian_noise'"),
    (dict(evaluation={"ood_samples": 0}), "evaluation.ood_samples"),
    (dict(device="gpu7"), "expected auto, cpu, cuda"),
])
def test_evaluate_bad_input_is_one_config_error(kwargs, message, plugin_env):
    args = dict(id_dataset="digits", ood_datasets=["gaussian_noise"], detectors=["msp"]) | kwargs
    with pytest.raises(ConfigError, match=re.escape(message)):
        logitnorm_bench.evaluate(nn.Linear(64, 10), **args)


def test_load_results_needs_a_results_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a results folder"):
        logitnorm_bench.load_results(tmp_path)
