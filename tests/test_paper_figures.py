"""The paper's Figures 2 and 3 (plugins/ood_bench_paper/figures.py), drawn from the checkpoints of a tiny
suite's CE and LogitNorm runs on the bundled digits, against an independent re-computation: the weights
read from ``model.pt`` and the network evaluated in numpy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.distance import pdist
from ood_bench_paper.figures import (
    TSNE_PARAMS, figure2_data, figure3_data, figure_ood, model_figures, model_outputs, model_pairs,
)
from threadpoolctl import threadpool_limits

from conftest import write_fake_record
from logitnorm_bench.cli import main
from logitnorm_bench.components import DataContext
from logitnorm_bench.figures import RunModel
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.report import write_report
from logitnorm_bench.reporting import Results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tiny_suite, tmp_path_factory):
    """A CE and a LogitNorm run (digits, digits_mlp width 32, seed 0, 2 epochs) with their checkpoints,
    evaluated on photo_patches (monitored during training) with dataset params: 150 patches, not 500."""
    tmp = tmp_path_factory.mktemp("figs")
    suite = tiny_suite(tmp / "s.yaml", detector=["msp"], ood_dataset=["photo_patches"],
                       ood_dataset_params=[{"n": 150}])
    doc = yaml.safe_load(suite.read_text())
    doc["defaults"]["train"]["monitor_ood"] = "photo_patches"
    suite.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = tmp / "res"
    assert main(["-q", "run", str(suite), "--results", str(res), "--device", "cpu"]) == 0
    return res


@pytest.fixture(scope="module")
def computed(results):
    """What the figures plot, computed once: (the pair, the OOD set, model outputs, Figure 2's and 3's data)."""
    pairs = model_pairs(Results.load(results))
    assert list(pairs) == [("digits", "digits_mlp")]
    ce, ln = pairs["digits", "digits_mlp"]
    ood, ood_params = figure_ood(Results.load(results).records, (ce, ln))
    assert ood_params == {"n": 150}
    mo = model_outputs(RunModel.load(results, ce), RunModel.load(results, ln), ood, ood_params)
    return (ce, ln), ood, mo, figure2_data(mo), figure3_data(mo)


# ------------------------------------------------------------------------------------------
# The independent reference: the checkpoint's weights, the digits_mlp network in numpy
# ------------------------------------------------------------------------------------------

def reference(results, run: dict, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, logits) of digits_mlp from ``runs/<id>/model.pt`` in float64 numpy:
    normalise, [Linear -> BatchNorm (running statistics) -> ReLU] x 2, then the last Linear."""
    sd = {k: v.double().numpy() for k, v in
          torch.load(results / "runs" / run["run_id"] / "model.pt", weights_only=True).items()}
    h = ((x.double().numpy() - sd["mean"]) / sd["std"]).reshape(len(x), -1)
    linears = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith(".weight") and sd[k].ndim == 2})
    norms = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith(".running_mean")})
    assert len(linears) == 3 and len(norms) == 2, sorted(sd)
    for lin, bn in zip(linears, norms):
        h = h @ sd[f"{lin}.weight"].T + sd[f"{lin}.bias"]
        h = (h - sd[f"{bn}.running_mean"]) / np.sqrt(sd[f"{bn}.running_var"] + 1e-5) * sd[f"{bn}.weight"] \
            + sd[f"{bn}.bias"]
        h = np.maximum(h, 0.0)
    head = [k for k in linears if k not in linears[:2]][0]
    return h, h @ sd[f"{head}.weight"].T + sd[f"{head}.bias"]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def images(name: str, index, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Test images of a dataset at positions ``index``, straight from the dataset (digits' shape; the
    suite's 150 photo patches)."""
    entry = get_plugins().datasets.get(name)
    source = entry.factory(shape=(1, 8, 8), n=150) if name == "photo_patches" else entry.factory()
    ds = source.build("test", DataContext(root=".", download=False, seed=seed))
    items = [ds[int(i)] for i in index]
    return torch.stack([torch.as_tensor(x).float() for x, _ in items]), np.array([int(y) for _, y in items])


# ------------------------------------------------------------------------------------------
# Which runs and which data
# ------------------------------------------------------------------------------------------

def test_the_pair_and_the_ood_set(computed):
    (ce, ln), ood, mo, _, _ = computed
    assert (ce["loss"], ln["loss"]) == ("ce", "logitnorm") and ce["seed"] == ln["seed"] == 0
    assert ood == "photo_patches"  # evaluated on, and monitored during training
    n_test = len(get_plugins().datasets.get("digits").factory().build("test", DataContext(root=".")))
    assert len(mo["id_index"]) == min(n_test, 300) and len(set(mo["id_index"])) == len(mo["id_index"])
    assert len(mo["ood_index"]) == 100 and list(mo["ood_index"]) == sorted(mo["ood_index"])
    assert max(mo["ood_index"]) < 150 and max(mo["ood_index"]) > 100  # a sample of the suite's 150 patches


def run(loss, seed, *, run_id=None, smoke=False, tau=0.04, id_dataset="cifar10", arch="wrn40_2", train=None):
    return {"status": "trained", "history": [],
            "run": {"run_id": run_id or f"{loss}-{seed}-{tau}-{smoke}", "id_dataset": id_dataset, "arch": arch,
                    "arch_params": {}, "loss": loss, "loss_params": {"tau": tau} if loss == "logitnorm" else {},
                    "seed": seed, "smoke": smoke, "train": train or {"epochs": 200}}}


def test_model_pairs_prefers_checkpoints_real_runs_and_the_papers_tau(tmp_path):
    runs = [run("ce", 0), run("logitnorm", 0),  # no checkpoints
            run("ce", 1), run("logitnorm", 1), run("logitnorm", 1, tau=0.01),
            run("ce", 2, smoke=True), run("logitnorm", 2, smoke=True),
            run("logitnorm", 3),  # no CE partner
            run("ce", 4, id_dataset="digits", arch="digits_mlp"), run("logitnorm", 5, id_dataset="digits",
                                                                         arch="digits_mlp"),  # other seeds
            dict(run("ce", 1, run_id="failed"), status="failed")]
    for r in runs:
        if r["run"]["seed"] in (1, 2, 3):
            (tmp_path / "runs" / r["run"]["run_id"]).mkdir(parents=True, exist_ok=True)
            (tmp_path / "runs" / r["run"]["run_id"] / "model.pt").write_bytes(b"x")
    pairs = model_pairs(Results(tmp_path, [], runs))
    assert list(pairs) == [("cifar10", "wrn40_2")]  # digits: CE and LogitNorm of different seeds
    ce, ln = pairs["cifar10", "wrn40_2"]
    assert (ce["run_id"], ln["run_id"]) == ("ce-1-0.04-False", "logitnorm-1-0.04-False")
    # without checkpoints anywhere: real seed 0 over smoke seed 2
    for p in tmp_path.glob("runs/*/model.pt"):
        p.unlink()
    ce, ln = model_pairs(Results(tmp_path, [], runs))["cifar10", "wrn40_2"]
    assert (ce["run_id"], ln["run_id"]) == ("ce-0-0.04-False", "logitnorm-0-0.04-False")
    assert model_pairs(Results(tmp_path, [], [r for r in runs if r["run"]["loss"] == "ce"])) == {}


def test_figure_ood_follows_figure_4s_rule():
    runs = ({"run_id": "a", "train": {"monitor_ood": "textures"}}, {"run_id": "b", "train": {}})

    def rec(ood, run_id="a", status="ok", params=None):
        return {"run_id": run_id, "ood_dataset": ood, "status": status, "ood_dataset_params": params}

    assert figure_ood([rec("isun"), rec("svhn", "b"), rec("textures")], runs) == ("svhn", {})
    assert figure_ood([rec("isun"), rec("textures")], runs) == ("textures", {})  # monitored
    assert figure_ood([rec("isun"), rec("lsun_c"), rec("lsun_c", "b"), rec("svhn", "other")], runs) == ("lsun_c", {})
    assert figure_ood([rec("svhn", status="failed")], runs) == ("textures", {})  # no usable record: the monitored set
    assert figure_ood([], ({"run_id": "a"},)) is None
    # one set under several params: those of most records
    assert figure_ood([rec("folder", params={"root": "x"}), rec("folder", "b", params={"root": "y"}),
                       rec("folder", params={"root": "y"})], runs) == ("folder", {"root": "y"})


# ------------------------------------------------------------------------------------------
# Figure 2: the softmax bars are softmax(model(x)) of the chosen examples
# ------------------------------------------------------------------------------------------

def test_figure2_bars_are_the_softmax_of_each_network_on_the_chosen_images(results, computed):
    (ce, ln), ood, mo, fig2, _ = computed
    id_x, id_y = images("digits", [fig2["id_index"]])
    ood_x, ood_y = images(ood, [fig2["ood_index"]])
    assert np.array_equal(fig2["id_image"], id_x[0].numpy()) and fig2["id_label"] == id_y[0]
    assert np.array_equal(fig2["ood_image"], ood_x[0].numpy()) and ood_y[0] == -1
    for loss, r in (("ce", ce), ("logitnorm", ln)):
        for side, x in (("id", id_x), ("ood", ood_x)):
            want = softmax(reference(results, r, x)[1])[0]
            got = fig2["probs"][loss][side]
            assert got.shape == (10,) and abs(got.sum() - 1) < 1e-9
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # The ID example is the first of the sample both networks get right; the OOD one is the sample's first.
    all_x, all_y = images("digits", mo["id_index"])
    right = np.ones(len(all_y), bool)
    for r in (ce, ln):
        right &= reference(results, r, all_x)[1].argmax(axis=1) == all_y
    assert right.any() and fig2["id_index"] == mo["id_index"][np.argmax(right)]
    assert fig2["ood_index"] == mo["ood_index"][0]
    # the two networks differ: CE is more confident on its ID example than LogitNorm's bounded logits allow
    assert not np.allclose(fig2["probs"]["ce"]["id"], fig2["probs"]["logitnorm"]["id"])


# ------------------------------------------------------------------------------------------
# Figure 3: t-SNE of the penultimate features (and of the softmax outputs, the paper's)
# ------------------------------------------------------------------------------------------

def test_figure3_embeds_the_penultimate_features_and_the_softmax_outputs(results, computed):
    (ce, ln), ood, mo, _, fig3 = computed
    id_x, id_y = images("digits", mo["id_index"])
    ood_x, _ = images(ood, mo["ood_index"])
    assert np.array_equal(fig3["labels"], id_y) and fig3["n_ood"] == len(ood_x)
    x = torch.cat([id_x, ood_x])
    n = len(x)
    perplexity = min(TSNE_PARAMS["perplexity"], (n - 1) / 3)
    from sklearn.manifold import TSNE

    for loss, r in (("ce", ce), ("logitnorm", ln)):
        feats, logits = reference(results, r, x)
        np.testing.assert_allclose(fig3["inputs"]["features"][loss], feats, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(fig3["inputs"]["softmax"][loss], softmax(logits), atol=1e-5, rtol=0)
        mine = {}
        for space, points in (("features", feats), ("softmax", softmax(logits))):
            coords = fig3["coords"][space][loss]
            assert coords.shape == (n, 2)
            with threadpool_limits(1):
                # the coordinates are exactly the t-SNE of the inputs checked above ...
                assert np.array_equal(coords, TSNE(**dict(TSNE_PARAMS, perplexity=perplexity))
                                      .fit_transform(fig3["inputs"][space][loss]))
                # ... and, up to t-SNE's sensitivity to float32 vs float64 inputs, that of ours
                mine[space] = TSNE(**dict(TSNE_PARAMS, perplexity=perplexity)).fit_transform(points)
        for space, other in (("features", "softmax"), ("softmax", "features")):
            same = np.corrcoef(pdist(fig3["coords"][space][loss]), pdist(mine[space]))[0, 1]
            swapped = np.corrcoef(pdist(fig3["coords"][space][loss]), pdist(mine[other]))[0, 1]
            # measured: 0.97-0.9997 for the same space, 0.29-0.67 for the other one
            assert same > 0.9 and same - swapped > 0.2, (loss, space, same, swapped)


def test_figures_are_deterministic(results, computed):
    (ce, ln), ood, _, fig2, fig3 = computed
    mo = model_outputs(RunModel.load(results, ce), RunModel.load(results, ln), ood, {"n": 150})
    again2, again3 = figure2_data(mo), figure3_data(mo)  # the same images, drawn again
    for loss in ("ce", "logitnorm"):
        for side in ("id", "ood"):
            assert np.array_equal(again2["probs"][loss][side], fig2["probs"][loss][side])
        for space in ("softmax", "features"):
            assert np.array_equal(again3["coords"][space][loss], fig3["coords"][space][loss])
    assert (again2["id_index"], again2["ood_index"]) == (fig2["id_index"], fig2["ood_index"])


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------

def test_report_shows_figures_2_and_3(results, capsys):
    capsys.readouterr()
    assert main(["report", str(results)]) == 0
    page = results / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    for name in ("fig2_digits_digits_mlp.png", "fig3_digits_digits_mlp.png"):
        assert (results / "report" / name).read_bytes().startswith(PNG_MAGIC)
        assert f"<img src='{name}'" in text
    assert "<b>Figure 2</b>: Softmax outputs of one ID test image" in text
    assert "<b>Figure 3</b>: t-SNE (scikit-learn TSNE" in text and "penultimate-layer features" in text
    assert "LogitNorm (ICML 2022)" in text and "Table 1" not in text  # the figures only: digits is not CIFAR
    assert "class='skipped'" not in text
    # the overview's figures are still there
    assert (results / "report" / "scores_digits_digits_mlp_width_32.png").is_file()


def test_a_missing_checkpoint_leaves_the_figures_out_with_a_note(results, tmp_path):
    res = tmp_path / "res"
    shutil.copytree(results, res, ignore=shutil.ignore_patterns("report"))
    _, ln = model_pairs(Results.load(res))["digits", "digits_mlp"]
    (res / "runs" / ln["run_id"] / "model.pt").unlink()
    figs = model_figures(Results.load(res), tmp_path / "out")
    note = f"skipped for digits / digits_mlp: no checkpoint runs/{ln['run_id']}/model.pt"
    assert [(f.name, f.file, f.caption) for f in figs] == [("Figure 2", None, note), ("Figure 3", None, note)]
    # On a digits-only page the notes alone do not bring the paper's section: the report is as before.
    text = write_report(res, tmp_path / "page").read_text(encoding="utf-8")
    assert not list((tmp_path / "page").glob("fig*.png")) and "LogitNorm (ICML 2022)" not in text
    assert (tmp_path / "page" / "scores_digits_digits_mlp_width_32.png").is_file()
    # Beside paper results the section is there, and says why the two figures are missing.
    write_fake_record(ResultsDir(res), {
        "cell_id": "cifarcell", "run_id": "cifarrun", "status": "failed", "error": "boom", "smoke": False,
        "id_dataset": "cifar10", "arch": "wrn40_2", "arch_params": {}, "loss": "ce", "loss_params": {},
        "detector": "msp", "detector_params": {}, "ood_dataset": "svhn", "seed": 0})
    text = write_report(res, tmp_path / "page2").read_text(encoding="utf-8")
    assert f"<b>Figure 2</b>: {note}." in text and f"<b>Figure 3</b>: {note}." in text
    assert not list((tmp_path / "page2").glob("fig[23]*.png"))


def test_missing_ood_data_is_a_note_and_never_downloads(results, tmp_path, monkeypatch):
    res = tmp_path / "res"
    shutil.copytree(results, res, ignore=shutil.ignore_patterns("report"))
    ce, _ = model_pairs(Results.load(res))["digits", "digits_mlp"]
    rec = next(r for r in ResultsDir(res).records() if r["run_id"] == ce["run_id"])
    # the paper's OOD set, whose data is not under the data root
    write_fake_record(ResultsDir(res), dict(rec, cell_id="svhncell", ood_dataset="svhn", ood_dataset_params=None))
    monkeypatch.setenv("OOD_BENCH_DATA", str(tmp_path / "nodata"))
    figs = model_figures(Results.load(res), tmp_path / "out")
    assert [f.file for f in figs] == [None, None]
    assert all(f.caption.startswith("skipped for digits / digits_mlp: ") and "svhn" in f.caption.lower()
               for f in figs), figs[0].caption
    assert not (tmp_path / "nodata").exists() or not any((tmp_path / "nodata").rglob("*.mat"))


def test_an_unreadable_checkpoint_never_fails_the_report(results, tmp_path):
    res = tmp_path / "res"
    shutil.copytree(results, res, ignore=shutil.ignore_patterns("report"))
    ce, ln = model_pairs(Results.load(res))["digits", "digits_mlp"]
    (res / "runs" / ce["run_id"] / "model.pt").write_bytes(b"not a checkpoint")
    figs = model_figures(Results.load(res), tmp_path / "out")
    assert [f.file for f in figs] == [None, None] and all("skipped for digits / digits_mlp: " in f.caption
                                                            for f in figs)
    assert all("\n" not in f.caption for f in figs)
    assert (res / "runs" / ce["run_id"] / "model.pt").read_bytes() == b"not a checkpoint"  # left as it was
