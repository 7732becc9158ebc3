"""Streaming (``logitnorm_bench/loading.py``): a streamed set gives bitwise the in-memory results.

The reference is today's in-memory path (``materialize`` + tensor indexing); the streamed path is
forced with ``stream_above_mb: 0``.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch.utils.data import Dataset, Subset, TensorDataset

from logitnorm_bench.cli import main
from logitnorm_bench.loading import InMemory, Streamed, image_set, streams, tensor_mib
from logitnorm_bench.suite import Loading
from conftest import tiny_suite_doc

SHAPE = (1, 8, 8)


class Items(Dataset):
    """Not a TensorDataset: images as uint8 (converted on reading), labels as Python ints."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def test_the_threshold_is_the_float32_tensor_size_and_zero_streams_every_set():
    assert tensor_mib(1000, (3, 32, 32)) == 1000 * 3 * 32 * 32 * 4 / 2 ** 20
    size = tensor_mib(100, SHAPE)
    assert not streams(100, SHAPE, Loading(stream_above_mb=size))  # at the threshold: in memory
    assert streams(101, SHAPE, Loading(stream_above_mb=size))
    assert streams(1, SHAPE, Loading(stream_above_mb=0))
    assert not streams(10 ** 6, SHAPE, Loading())  # 244 MiB < the 1 GiB default
    assert isinstance(image_set(Items(100), SHAPE, Loading(stream_above_mb=size)), InMemory)
    assert isinstance(image_set(Items(101), SHAPE, Loading(stream_above_mb=size)), Streamed)
    with pytest.raises(ValueError, match="no items"):
        image_set(Items(0), SHAPE, Loading(stream_above_mb=0))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_set_reads_exactly_what_the_in_memory_set_holds(workers):
    ds = Subset(Items(300), list(range(7, 290)))
    mem = image_set(ds, SHAPE, Loading(stream_above_mb=1e9))
    st = image_set(ds, SHAPE, Loading(stream_above_mb=0, loader_workers=workers))
    assert isinstance(mem, InMemory) and isinstance(st, Streamed) and len(st) == len(mem) == 283
    for (xa, ya), (xb, yb) in zip(mem.batches(64), st.batches(64), strict=True):
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(st.labels(), mem.labels())
    perm = torch.randperm(283, generator=torch.Generator().manual_seed(1))
    index_batches = [perm[i:i + 50] for i in range(0, 283, 50)]
    for _ in range(2):  # twice: the persistent workers serve the second pass too
        for (xa, ya), (xb, yb) in zip(mem.fetch(index_batches), st.fetch(index_batches), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(st.take(perm[:9]), mem.take(perm[:9]))
    a, b = mem.dataset(), st.dataset()
    assert len(a) == len(b) and all(torch.equal(p, q) and p.dtype == q.dtype for i in (0, 5, 282)
                                    for p, q in zip(a[i], b[i]))
    st.close()


def test_torch_global_random_state_advances_as_with_materialize():
    # materialize iterates one DataLoader (one draw from the global generator; none for a TensorDataset).
    for ds in (Items(50), TensorDataset(torch.rand(50, *SHAPE), torch.zeros(50, dtype=torch.long))):
        states = []
        for threshold in (1e9, 0):
            torch.manual_seed(5)
            s = image_set(ds, SHAPE, Loading(stream_above_mb=threshold, loader_workers=0))
            list(s.batches(16))
            list(s.fetch([torch.arange(10)]))
            states.append(torch.get_rng_state())
        assert torch.equal(*states)
    ds = TensorDataset(torch.rand(50, *SHAPE), torch.zeros(50, dtype=torch.long))
    torch.manual_seed(5)
    image_set(ds, SHAPE, Loading(stream_above_mb=0))
    untouched = torch.get_rng_state()
    torch.manual_seed(5)
    assert torch.equal(untouched, torch.get_rng_state())


@pytest.mark.parametrize("outliers", [False, True])
def test_training_from_a_streamed_set_gives_the_same_weights_and_history(tmp_path, outliers):
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import Outliers, TrainRecipe, recipe_dict
    from logitnorm_bench.train import build_model, materialize, train

    plugins = get_plugins()
    source = plugins.datasets.build("digits")
    ctx = DataContext(root=tmp_path)
    ds = source.build("train", ctx)
    x, y = materialize(ds)
    noise = Subset(plugins.datasets.build("uniform_noise", n=300, shape=SHAPE).build("test", ctx), list(range(300)))
    out_x = materialize(noise)[0] if outliers else None
    recipe = recipe_dict(TrainRecipe(epochs=3, batch_size=100, lr=0.05, milestones=[2], crop_padding=2, hflip=True,
                                     drop_last=False,
                                     outliers=Outliers(dataset="uniform_noise", ratio=0.5) if outliers else Outliers()))
    loss_name = "oe" if outliers else "logitnorm"

    def fit(data, labels, out):
        loss = plugins.losses.build(loss_name)
        model = build_model(plugins, "digits_mlp", {"width": 32}, loss, source, 3)
        res = train(model, loss, data, labels, recipe, 3, torch.device("cpu"), outliers=out)
        return res.model.state_dict(), [{k: v for k, v in e.items() if k != "seconds"} for e in res.history]

    ref_state, ref_hist = fit(x, y, out_x)
    streamed = Loading(stream_above_mb=0, loader_workers=2)
    state, hist = fit(image_set(ds, SHAPE, streamed), None,
                      image_set(noise, SHAPE, streamed) if outliers else None)
    assert hist == ref_hist and len(hist) == 3
    assert ref_state.keys() == state.keys() and all(torch.equal(ref_state[k], state[k]) for k in state)


VOLATILE = {"created", "train_seconds", "eval_seconds", "seconds", "started", "finished", "provenance"}


def _stable(obj):
    """A record or run.json less what differs between any two runs (times, provenance)."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _contents(results):
    files = {}
    for p in sorted(results.rglob("*")):
        rel = str(p.relative_to(results))
        if p.suffix == ".json" and ("records" in rel or p.name == "run.json"):
            files[rel] = _stable(json.loads(p.read_text()))
        elif p.name.endswith(".scores.npz") or p.name == "leaderboard.csv":
            files[rel] = p.read_bytes()
    return files


def test_a_suite_streamed_gives_byte_identical_records_scores_and_leaderboard(tmp_path, monkeypatch):
    made = []
    real_init = Streamed.__init__
    monkeypatch.setattr(Streamed, "__init__", lambda self, ds, *a, **k: made.append(len(ds)) or real_init(self, ds, *a, **k))
    doc = tiny_suite_doc(epochs=2, crop_padding=1, ood_samples=200, id_val_samples=60, loss=["logitnorm"],
                         detector=["msp", "odin", "gradnorm", "mahalanobis", "knn"],
                         ood_dataset=["uniform_noise", "gaussian_noise"])
    doc["defaults"]["train"].update(hflip=True, monitor_ood="gaussian_noise", monitor_samples=50)
    doc["defaults"]["evaluation"].update(ood_draws=2, batch_size=128, fit_train_samples=700)
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(doc, sort_keys=False))
    common = ["run", str(suite), "--device", "cpu", "--progress", "off"]
    assert main([*common, "--results", str(tmp_path / "mem")]) == 0
    assert not made
    assert main([*common, "--results", str(tmp_path / "st"), "--stream-above-mb", "0", "--loader-workers", "2"]) == 0
    # train, ID test, ID val, ID train sample, 2 OOD sets x 2 draws
    assert sorted(made) == sorted([1131, 540, 60, 700] + [200] * 4), made
    mem, st = _contents(tmp_path / "mem"), _contents(tmp_path / "st")
    assert sum(k.endswith(".scores.npz") for k in mem) == 10 and "leaderboard.csv" in mem
    assert mem.keys() == st.keys()
    for key in mem:
        assert mem[key] == st[key], key
    run_json = next(v for k, v in mem.items() if k.endswith("run.json"))
    assert len(run_json["history"]) == 2 and "logit_norm_ood" in run_json["history"][0]


def test_a_users_png_folder_trained_and_evaluated_streamed_gives_the_same_results(tmp_path):
    """The case streaming is for: image_folder PNGs decoded in loader workers, for training and evaluation."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("test", 50)):
        for i in range(n):  # 3 classes told apart by their brightness, so the training is not at chance
            k = i % 3
            folder = tmp_path / "pets" / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(rng.normal(40 + 80 * k, 30, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    doc = tiny_suite_doc(epochs=2, ood_samples=40, id_val_samples=30, id_dataset=["image_folder"],
                         id_dataset_params=[{"root": str(tmp_path / "pets"), "image_size": 8}], loss=["ce"],
                         detector=["msp", "odin", "knn"], ood_dataset=["uniform_noise"])
    doc["defaults"]["train"].update(batch_size=32, hflip=True)
    suite = tmp_path / "pets.yaml"
    suite.write_text(yaml.safe_dump(doc, sort_keys=False))
    common = ["run", str(suite), "--device", "cpu", "--progress", "off"]
    assert main([*common, "--results", str(tmp_path / "mem")]) == 0
    assert main([*common, "--results", str(tmp_path / "st"), "--stream-above-mb", "0"]) == 0
    mem, st = _contents(tmp_path / "mem"), _contents(tmp_path / "st")
    assert sum(k.endswith(".scores.npz") for k in mem) == 3 and mem.keys() == st.keys()
    for key in mem:
        assert mem[key] == st[key], key


def test_the_streamed_evaluation_never_loads_a_whole_set(tmp_path, monkeypatch):
    """With streaming, only the bounded samples (none in evaluation) go through materialize."""
    import logitnorm_bench.train as train_module
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.evaluation import Evaluator
    from logitnorm_bench.plan import EvaluationCell
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import EvalProtocol
    from logitnorm_bench.train import build_model

    plugins = get_plugins()
    source = plugins.datasets.build("digits")
    noise = plugins.datasets.build("uniform_noise", n=200, shape=SHAPE)
    loss = plugins.losses.build("ce")
    model = build_model(plugins, "digits_mlp", {"width": 16}, loss, source, 0)
    protocol = dict(vars(EvalProtocol(ood_samples=150, batch_size=64, id_val_samples=40)))
    cells = [EvaluationCell(d, "r", d, {}, "uniform_noise", protocol) for d in ("msp", "odin", "knn")]
    ctx = DataContext(root=tmp_path, download=False)

    def evaluate(threshold):
        ev = Evaluator(model, source, ctx, plugins, torch.device("cpu"), protocol, source_for=lambda _n, _p=None: noise,
                       loading=Loading(stream_above_mb=threshold, loader_workers=0))
        return {c.detector: r for c, r in ev.evaluate(cells)}

    ref = evaluate(1e9)

    def refuse(*a, **k):
        raise AssertionError("materialize called while streaming")

    monkeypatch.setattr(train_module, "materialize", refuse)
    got = evaluate(0)
    for det in ref:
        assert "error" not in got[det], got[det]
        assert torch.equal(got[det]["scores"]["id"], ref[det]["scores"]["id"])
        assert all(torch.equal(a, b) for a, b in zip(got[det]["scores"]["ood"], ref[det]["scores"]["ood"]))
        assert got[det]["metrics"] == ref[det]["metrics"] and got[det]["n_id"] == ref[det]["n_id"]


def test_the_setting_is_checked_and_is_in_no_identity(tmp_path, capsys):
    from logitnorm_bench.plan import load_plan

    doc = tiny_suite_doc()
    plans = []
    for loading in ({}, {"stream_above_mb": 0, "loader_workers": 0}):
        doc["defaults"]["loading"] = loading
        _, plan = load_plan(dict(doc))
        plans.append(plan)
    assert plans[1].loading == {"stream_above_mb": 0.0, "loader_workers": 0}
    assert plans[0].loading == {"stream_above_mb": 1024.0, "loader_workers": 2}
    assert [r.run_id for r in plans[0].runs] == [r.run_id for r in plans[1].runs]
    assert [c.cell_id for c in plans[0].cells] == [c.cell_id for c in plans[1].cells]

    bad = tmp_path / "bad.yaml"
    doc["defaults"]["loading"] = {"stream_above_mb": -1}
    bad.write_text(yaml.safe_dump(doc))
    assert main(["run", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("bad.yaml:defaults.loading.stream_above_mb: got -1.0; expected a non-negative number "
                            "of MiB"), err
    doc["defaults"]["loading"] = {"workers": 2}
    bad.write_text(yaml.safe_dump(doc))
    assert main(["run", str(bad), "--results", str(tmp_path / "r")]) == 2
    assert "defaults.loading" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    doc["defaults"]["loading"] = {}
    good.write_text(yaml.safe_dump(doc))
    assert main(["run", str(good), "--results", str(tmp_path / "r"), "--loader-workers", "-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--loader-workers -1: expected a non-negative integer")


def test_api_evaluate_streamed_equals_in_memory(plugin_env):
    import logitnorm_bench
    from logitnorm_bench.errors import ConfigError

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    kw = dict(id_dataset="digits", ood_datasets=["gaussian_noise"], detectors=["msp", "odin", "gradnorm"],
              evaluation={"ood_samples": 50})
    ref = logitnorm_bench.evaluate(model, **kw)
    streamed = logitnorm_bench.evaluate(model, stream_above_mb=0, loader_workers=0, **kw)
    assert ref.equals(streamed)
    with pytest.raises(ConfigError, match="--stream-above-mb -2: expected a non-negative number of MiB"):
        logitnorm_bench.evaluate(model, stream_above_mb=-2, **kw)


# --- the benchmarks' tiny modes (output shape only, never the numbers) ----------------------------


def test_stream_speed_tiny(tmp_path, capsys):
    from test_benchmarks import check_common, run_tiny, table_rows, targets

    code, out = run_tiny("stream_speed", capsys, "--cache", str(tmp_path))
    assert code == 0, out
    check_common(out)
    assert set(targets(out)) == {"streaming / in-memory evaluation time",
                                 "streaming / in-memory training time per epoch"}
    assert all(v > 0 for v in targets(out).values())
    for row in ("evaluation:", "training: epoch 2", "training: epoch 1"):
        (cells,) = table_rows(out, row)
        assert len(cells) == 4 and all(float(c) > 0 for c in cells[1:]), cells
    assert table_rows(out, "scores bitwise equal") == [["scores bitwise equal", "yes"]]
    assert table_rows(out, "weights bitwise equal") == [["weights bitwise equal after training", "yes"]]
    assert len(list((tmp_path / "cifar-96-48" / "train").glob("class*/*.png"))) == 96


@pytest.mark.slow  # three fresh Python processes
def test_stream_memory_tiny(tmp_path, capsys):
    from test_benchmarks import check_common, run_tiny, table_rows, targets

    code, out = run_tiny("stream_memory", capsys, "--cache", str(tmp_path))
    assert code == 0, out
    check_common(out)
    t = targets(out)
    assert set(t) == {"streamed peak RSS 80 / 40 images", "streamed peak RSS at 80 images"}, t
    assert all(v > 0 for v in t.values())
    (small,), (large,) = table_rows(out, "40"), table_rows(out, "80")
    assert all(float(c) > 0 for c in small[1:]), small
    assert large[-2:] == ["not run", "not run"] and all(float(c) > 0 for c in large[1:5]), large


def test_a_streamed_pass_hands_free_memory_back_every_few_batches(monkeypatch):
    """Without it the heap's free pages stayed with the process and a 200k-image evaluation peaked at
    2.76 GiB instead of 1.0 (benchmarks/stream_memory.py); with it, every TRIM_EVERY_BATCHES batches."""
    from torch.utils.data import TensorDataset

    from logitnorm_bench import loading

    calls = []
    monkeypatch.setattr(loading, "release_free_memory", lambda: calls.append(1))
    n_batches = 3 * loading.TRIM_EVERY_BATCHES + 1
    ds = TensorDataset(torch.zeros(n_batches * 2, 1, 2, 2), torch.zeros(n_batches * 2, dtype=torch.long))
    streamed = loading.Streamed(ds, workers=0)
    assert sum(1 for _ in streamed.batches(2)) == n_batches
    assert len(calls) == 3 + 1  # every TRIM_EVERY_BATCHES, and once at the end of the pass
    calls.clear()
    assert sum(1 for _ in streamed.fetch([torch.arange(2)] * n_batches)) == n_batches
    assert len(calls) == 3 + 1
