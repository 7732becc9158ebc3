"""Training-time outliers (``train.outliers``): Outlier Exposure's batches, the suite key, the run's identity,
and OE / energy-regularised training end to end on the bundled digits with the ``blobs`` outliers."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from logitnorm_bench.cli import main
from logitnorm_bench.components import Loss
from logitnorm_bench.errors import ConfigError
from logitnorm_bench.plan import make_plan
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.suite import TrainRecipe, parse_suite, recipe_dict
from logitnorm_bench.train import train

from conftest import tiny_suite_doc

pytestmark = pytest.mark.usefixtures("one_thread")


class Recording(Loss):
    """Cross-entropy on the ID part; records every batch it is given."""

    uses_outliers = True

    def __init__(self):
        super().__init__()
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, logits, targets):
        self.batches.append((logits.detach().clone(), targets.clone()))
        known = targets >= 0
        return nn.functional.cross_entropy(logits[known], targets[known])


class Spy(nn.Module):
    """A linear classifier on 1x2x2 images that keeps the inputs of every training forward pass."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.inputs: list[torch.Tensor] = []

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        if self.training:
            self.inputs.append(x.detach().clone())
        return self.head(self.features(x))


def _recipe(**over) -> dict:
    base = dict(epochs=2, batch_size=4, lr=0.1, schedule="constant", crop_padding=0, hflip=False,
                outliers={"dataset": "blobs", "split": "train", "samples": None, "ratio": 1.5})
    base.update(over)
    from logitnorm_bench.suite import build_dataclass
    return recipe_dict(build_dataclass(TrainRecipe, base, "t", "train"))


def _data(n_in=10, n_out=7):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n_in, 1, 2, 2, generator=g)
    y = torch.arange(n_in) % 3
    outliers = 10 + torch.arange(n_out, dtype=torch.float32).view(-1, 1, 1, 1).expand(n_out, 1, 2, 2).clone()
    return x, y, outliers  # outlier i is the constant image 10 + i: recognisable in a batch


def test_each_batch_is_the_id_batch_then_outliers_read_from_a_random_offset():
    x, y, outliers = _data()
    model, loss = Spy(), Recording()
    recipe = _recipe()
    res = train(model, loss, x, y, recipe, seed=0, device=torch.device("cpu"), outliers=outliers)
    n_out = round(1.5 * 4)  # 6 outliers per 4 ID images
    assert len(loss.batches) == 2 * 2  # 2 epochs of 10 // 4 = 2 batches (drop_last)
    offsets = []
    for step, ((logits, targets), inputs) in enumerate(zip(loss.batches, model.inputs)):
        assert targets.shape == (4 + n_out,) and logits.shape == (4 + n_out, 3)
        assert (targets[:4] >= 0).all() and (targets[4:] == -1).all()
        ids = inputs[4:, 0, 0, 0].long() - 10  # which outliers, in order
        b = step % 2
        offset = int(ids[0]) - b * n_out
        assert ids.tolist() == [(offset + b * n_out + i) % 7 for i in range(n_out)]  # consecutive, wrapping
        offsets.append(offset % 7)
        assert all(any(torch.equal(img, xi) for xi in x) for img in inputs[:4])  # then 4 ID images
    assert offsets[0] == offsets[1] and offsets[2] == offsets[3]  # one offset per epoch
    assert all(h["train_acc"] <= 1 for h in res.history)  # accuracy counts the ID images only


def test_without_outliers_training_is_what_it_was():
    """No outliers: the same random draws as before the feature existed (so every old run is reproduced)."""
    x, y, _ = _data()
    ref_model = Spy()
    state = {k: v.clone() for k, v in ref_model.state_dict().items()}
    recipe = _recipe()
    del recipe["outliers"]
    train(ref_model, Recording(), x, y, recipe, seed=0, device=torch.device("cpu"))
    # the same loop written out: one permutation per epoch from the seeded generator, nothing else drawn
    model = Spy()
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        perm = torch.randperm(10, generator=gen)
        for b in range(2):
            idx = perm[b * 4:(b + 1) * 4]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)


def test_a_loss_that_does_not_take_outliers_refuses_them():
    x, y, outliers = _data()
    from ood_bench_paper.losses import CrossEntropy

    with pytest.raises(ValueError, match="CrossEntropy does not take outliers"):
        train(Spy(), CrossEntropy(), x, y, _recipe(), 0, torch.device("cpu"), outliers=outliers)


def test_resuming_with_outliers_gives_the_uninterrupted_weights(tmp_path):
    """Interrupted after epoch 2 of 3 (a constant learning rate: a 2-epoch run is that interruption)."""
    x, y, outliers = _data()
    state = {k: v.clone() for k, v in Spy().state_dict().items()}
    models = []
    for epochs, ckpt in ((3, None), (2, tmp_path / "c.pt"), (3, tmp_path / "c.pt")):
        m = Spy()
        m.load_state_dict(state)
        res = train(m, Recording(), x, y, _recipe(epochs=epochs), 0, torch.device("cpu"), checkpoint=ckpt,
                    outliers=outliers)
        models.append(m)
    assert res.resumed_from == 2
    for p, q in zip(models[0].parameters(), models[2].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# The suite key and the run's identity
# ----------------------------------------------------------------------------------------------


def _doc(outliers=None, **matrix) -> dict:
    doc = tiny_suite_doc(**matrix)
    if outliers is not None:
        doc["defaults"]["train"]["outliers"] = outliers
    return doc


def test_runs_without_outliers_keep_their_ids():
    """The ids a tiny suite had before train.outliers existed (runs, cells, a selection's groups)."""
    doc = tiny_suite_doc(epochs=3, loss=["logitnorm"])
    doc["experiments"]["e"]["select"] = {"param": "loss_params.tau", "values": [0.1, 0.5],
                                       "ood_dataset": "gaussian_noise"}
    plan = make_plan(parse_suite(doc, "t.yaml", plugins=get_plugins()), get_plugins())
    assert sorted(r.run_id for r in plan.runs) == ["13e840ddb0cab411", "71b0ad053fdbf0b3"]
    assert sorted(c.cell_id for c in plan.cells) == ["02b7d9a8dd6cdc15", "4905029641917bd0", "6812e6955f5fb16c",
                                                      "81d474f486e0a6db"]
    assert [g.group_id for g in plan.selections] == ["52a3c2b7a4238d62", "f9beb900fa1f4540"]
    assert all("outliers" not in r.train for r in plan.runs)


def test_outliers_are_part_of_the_run_identity():
    plugins = get_plugins()
    ids = {}
    for key, spec in {"blobs": {"dataset": "blobs"}, "blobs_500": {"dataset": "blobs", "samples": 500},
                      "ratio_1": {"dataset": "blobs", "ratio": 1.0}}.items():
        plan = make_plan(parse_suite(_doc(spec, loss=["oe"]), "t.yaml", plugins=plugins), plugins)
        (run,) = plan.runs
        assert run.train["outliers"] == {"dataset": "blobs", "split": "train", "samples": None, "ratio": 2.0,
                                         **spec}
        ids[key] = run.run_id
    assert len(set(ids.values())) == 3


@pytest.mark.parametrize("outliers, key, message", [
    ({"dataset": "blobz"}, "train.outliers.dataset", "unknown dataset 'blobz'. Did you mean 'blobs'"),
    ({"dataset": "blobs", "split": "val"}, "train.outliers.split", "expected a split of blobs \\(train, test\\)"),
    ({"dataset": "blobs", "samples": 0}, "train.outliers.samples", "expected a positive integer or null"),
    ({"dataset": "blobs", "ratio": 0}, "train.outliers.ratio", "at least one outlier per batch"),
    ({"dataset": "blobs", "ratios": 1}, "train.outliers.ratios", "unknown key 'ratios' \\(did you mean 'ratio'"),
])
def test_bad_outliers_are_one_line_errors(outliers, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_suite(_doc(outliers, loss=["oe"]), "t.yaml", plugins=get_plugins())
    assert info.value.key.endswith(key)


def test_outliers_need_losses_that_take_them():
    with pytest.raises(ConfigError, match="loss 'ce' does not take outliers") as info:
        parse_suite(_doc({"dataset": "blobs"}, loss=["oe", "ce"]), "t.yaml", plugins=get_plugins())
    assert info.value.key == "experiments.e.train.outliers.dataset"


def test_set_adds_outliers_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(_doc(loss=["oe"])))
    assert main(["plan", str(path), "--format", "json", "--set", "train.outliers.dataset=blobs",
                 "--set", "train.outliers.samples=300"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["training_runs"]
    assert run["train"]["outliers"]["samples"] == 300


# ----------------------------------------------------------------------------------------------
# End to end: OE and energy-regularised training on the digits with blobs as outliers
# ----------------------------------------------------------------------------------------------


def test_outlier_exposure_and_energy_training_end_to_end(tmp_path, plugin_env):
    doc = _doc({"dataset": "blobs", "samples": 400, "ratio": 1.0}, epochs=3, loss=["oe", "energy_reg", "entropic"],
               detector=["msp", "energy"], ood_dataset=["uniform_noise"])
    doc["experiments"]["e"]["include"] = [{"loss": "energy_reg", "loss_params": {"margin_in": -8.0,
                                                                                  "margin_out": -2.0}}]
    path = tmp_path / "oe.yaml"
    path.write_text(yaml.safe_dump(doc))
    results = tmp_path / "r"
    assert main(["run", str(path), "--results", str(results), "--device", "cpu"]) == 0
    recs = list(ResultsDir(results).records())
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    assert all(r["train"]["outliers"]["dataset"] == "blobs" for r in recs)
    assert all(r["run_metrics"]["id_acc"] > 0.5 for r in recs)


def test_smoke_runs_outlier_training(tmp_path, plugin_env):
    path = tmp_path / "oe.yaml"
    path.write_text(yaml.safe_dump(_doc({"dataset": "blobs"}, loss=["objectosphere"], detector=["msp"])))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--smoke", "--device", "cpu"]) == 0
