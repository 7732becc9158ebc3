"""End-to-end runner behaviour on the bundled digits: records, leaderboard, resumption, failures."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from logitnorm_bench.cli import main
from logitnorm_bench.leaderboard import columns
from logitnorm_bench.records import ResultsDir, atomic_write_json

@pytest.fixture
def write_suite(tiny_suite):
    """The runner tests' suite: 2 losses x 2 detectors x 2 OOD sets, seed 0."""

    def write(folder: Path, epochs: int = 3, name: str = "tiny.yaml", **options) -> Path:
        options.setdefault("ood_dataset", ["photo_patches", "uniform_noise"])
        return tiny_suite(folder / name, epochs=epochs, **options)

    return write


def run_cli(*args: str) -> int:
    return main([*args])


def test_run_writes_records_and_leaderboard_then_rerun_trains_nothing(write_suite, tmp_path, capsys):
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    assert run_cli("run", str(suite), "--results", str(results), "--device", "cpu") == 0
    records = list(ResultsDir(results).records())
    assert len(records) == 2 * 2 * 2
    assert all(r["status"] == "ok" for r in records)
    rec = records[0]
    for key in ("harness_version", "git_commit", "config_hash", "plugins", "device"):
        assert key in rec["provenance"]
    assert 0 <= rec["metrics"]["fpr95"] <= 1 and rec["run_metrics"]["id_acc"] > 0.5
    with open(results / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert set(columns()) <= set(rows[0])
    assert {r["ood_dataset"] for r in rows} == {"photo_patches", "uniform_noise", "average"}
    assert len(rows) == 2 * 2 * 3
    import pandas as pd

    frame = pd.read_csv(results / "leaderboard.csv")
    assert frame["fpr95"].dtype.kind == "f" and frame["fpr95"].between(0, 100).all()
    out = capsys.readouterr().out
    assert "trained 2 run(s)" in out

    t0 = time.perf_counter()
    assert run_cli("run", str(suite), "--results", str(results), "--device", "cpu") == 0
    assert "nothing left to do, every cell has its record" in capsys.readouterr().out  # issue 12 item 21
    assert time.perf_counter() - t0 < 10


def test_only_missing_redoes_a_deleted_record_and_never_mode(write_suite, tmp_path, capsys):
    suite = write_suite(tmp_path, epochs=1)
    results = tmp_path / "r"
    assert run_cli("run", str(suite), "--results", str(results)) == 0
    paths = sorted((results / "records").glob("*.json"))
    paths[0].unlink()
    paths[1].write_text("{ half a rec")  # a corrupt record counts as missing
    capsys.readouterr()
    assert run_cli("run", str(suite), "--results", str(results)) == 0
    assert "trained 0 run(s); 2 record(s) ok" in capsys.readouterr().out
    assert json.loads(paths[1].read_text())["status"] == "ok"


def test_failed_training_is_recorded_and_grid_goes_on(write_suite, tmp_path, capsys):
    # lr so large that the loss overflows: a recorded failure, exit code 1, other runs fine.
    suite = write_suite(tmp_path, epochs=2, loss=["ce"], include=[
        {"id_dataset": "digits", "arch": "digits_mlp", "loss": "ce", "detector": "msp",
         "ood_dataset": "uniform_noise", "seed": 1}])
    results = tmp_path / "r"
    code = run_cli("run", str(suite), "--results", str(results), "--set", "train.lr=1e30")
    assert code == 1
    recs = list(ResultsDir(results).records())
    assert recs and all(r["status"] == "failed" for r in recs)
    assert any("Diverged" in r["error"] or "chance" in r["error"] for r in recs)
    rows = list(csv.DictReader(open(results / "leaderboard.csv")))
    assert all(r["n_seeds"] == "0" for r in rows)  # failed cells never become numbers


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})

    class Boom(Exception):
        pass

    def boom(*a, **k):
        raise Boom

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Boom):
        atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_resumed_training_equals_uninterrupted(tmp_path):
    from logitnorm_bench.components import DataContext
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import TrainRecipe, recipe_dict
    from logitnorm_bench.train import build_model, materialize, train

    plugins = get_plugins()
    source = plugins.datasets.build("digits")
    x, y = materialize(source.build("train", DataContext(root=tmp_path)))
    recipe = recipe_dict(TrainRecipe(epochs=4, batch_size=64, lr=0.05, milestones=[2], crop_padding=1,
                                     hflip=True))

    def fresh():
        loss = plugins.losses.build("logitnorm")
        return build_model(plugins, "digits_mlp", {"width": 32}, loss, source, 3), loss

    model, loss = fresh()
    full = train(model, loss, x, y, recipe, 3, torch.device("cpu"))

    class Stop(Exception):
        pass

    class StopAfterTwo:  # train()'s events: raise once epoch 3 ends, before its checkpoint is saved
        def started(self, start_epoch, epochs):
            pass

        def batch(self, done, total):
            pass

        def epoch(self, entry, epochs):
            if entry["epoch"] == 3:
                raise Stop

    ckpt = tmp_path / "ckpt.pt"
    model2, loss2 = fresh()
    with pytest.raises(Stop):
        train(model2, loss2, x, y, recipe, 3, torch.device("cpu"), checkpoint=ckpt, events=StopAfterTwo())
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    model3, loss3 = fresh()
    torch.manual_seed(12345)  # the global RNG is restored from the checkpoint, whatever it was
    resumed = train(model3, loss3, x, y, recipe, 3, torch.device("cpu"), checkpoint=ckpt)
    assert resumed.resumed_from == 2
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_identical_leaderboard(write_suite, tmp_path):
    """Kill ``ood-bench run`` with SIGKILL at random moments, rerun, compare with an uninterrupted run."""
    suite = write_suite(tmp_path, epochs=8)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    cmd = [sys.executable, "-m", "logitnorm_bench.cli", "run", str(suite), "--device", "cpu", "--results"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run(cmd + [str(clean)], check=True, env=env, capture_output=True)
    rng = random.Random(0)

    def in_training():
        return any(killed.glob("runs/*/checkpoint.pt")) and not any(killed.glob("runs/*/model.pt"))

    def in_evaluation():
        return any(killed.glob("records/*.json"))

    kills = []
    # Kill once mid-training, once mid-evaluation (records being written), once at a random moment.
    for name, ready in (("training", in_training), ("evaluation", in_evaluation), ("random", None)):
        proc = subprocess.Popen(cmd + [str(killed), "--wait", "30"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        if ready is None:
            time.sleep(rng.uniform(1.0, 4.0))
        else:
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(name)
        proc.wait()
    final = subprocess.run(cmd + [str(killed), "--wait", "30"], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert "training" in kills and "evaluation" in kills, kills
    assert (killed / "leaderboard.csv").read_text() == (clean / "leaderboard.csv").read_text()
    # Nothing left behind: the final run removed what the kills' interrupted writes left.
    assert not list(killed.rglob("*.tmp")) and not list(killed.rglob("*.invalid"))
    for rec in (killed / "records").glob("*.json"):
        json.loads(rec.read_text())
    print(f"killed during: {kills}; leaderboards identical")


def test_second_run_on_same_results_refuses(write_suite, tmp_path, capsys):
    from logitnorm_bench.records import ResultsLock

    suite = write_suite(tmp_path, epochs=1)
    results = tmp_path / "r"
    with ResultsLock(results):
        assert run_cli("run", str(suite), "--results", str(results)) == 2
    err = capsys.readouterr().err
    assert "in use by another ood-bench run" in err and err.count("\n") == 1


def test_selection_chooses_on_validation_data_and_records_the_evidence(tmp_path, capsys, tiny_suite):
    suite = tiny_suite(tmp_path / "sel.yaml", name="sel", crop_padding=0, ood_samples=200, loss=["logitnorm"],
                       detector=["msp"], ood_dataset=["photo_patches"], seed=[0, 1],
                       select={"param": "loss_params.tau", "values": [0.02, 0.5], "ood_dataset": "gaussian_noise",
                               "metric": "auroc"})
    results = tmp_path / "r"
    assert run_cli("run", str(suite), "--results", str(results)) == 0
    recs = list(ResultsDir(results).records())
    val = [r for r in recs if r["split"] == "val"]
    test = [r for r in recs if r["split"] == "test"]
    assert len(val) == 4 and {r["ood_dataset"] for r in val} == {"gaussian_noise"}
    assert len(test) == 2 and {r["ood_dataset"] for r in test} == {"photo_patches"}
    sel = test[0]["selection"]
    means = {float(k): v["mean"] for k, v in sel["candidates"].items()}
    # The chosen value is the arg-max of the validation AUROC, recomputed from the val records.
    by_tau = {}
    for r in val:
        by_tau.setdefault(r["loss_params"]["tau"], []).append(r["metrics"]["auroc"])
    recomputed = {t: sum(v) / len(v) for t, v in by_tau.items()}
    assert means == pytest.approx(recomputed)
    assert sel["chosen"] == max(recomputed, key=recomputed.get)
    assert all(r["loss_params"]["tau"] == sel["chosen"] for r in test)
    rows = list(csv.DictReader(open(results / "leaderboard.csv")))
    assert {r["ood_dataset"] for r in rows} == {"photo_patches"}  # validation cells are not results


def test_given_weights_are_scored_without_training(write_suite, tmp_path, capsys):
    suite = write_suite(tmp_path, epochs=2)
    results = tmp_path / "r"
    assert run_cli("run", str(suite), "--results", str(results), "--set", "experiments.e.matrix.loss=[ce]") == 0
    (run_dir,) = [p for p in (results / "runs").iterdir() if p.is_dir()]
    state = torch.load(run_dir / "model.pt", weights_only=True)
    # A plain checkpoint of the architecture, as a user would have it (no normalisation wrapper).
    ckpt = tmp_path / "given.pt"
    torch.save({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}, ckpt)
    given = write_suite(tmp_path, epochs=2, name="given.yaml", weights=[str(ckpt)])
    out = tmp_path / "g"
    assert run_cli("run", str(given), "--results", str(out), "--set", "experiments.e.matrix.loss=[ce]") == 0
    assert "trained 0 run(s)" in capsys.readouterr().out
    ref = {(r["detector"], r["ood_dataset"]): r["metrics"] for r in ResultsDir(results).records()}
    got = {(r["detector"], r["ood_dataset"]): r["metrics"] for r in ResultsDir(out).records()}
    assert set(got) == set(ref)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], rel=1e-6), k


def test_godin_chooses_epsilon_on_held_out_images_and_records_where_they_came_from(tmp_path, tiny_suite,
                                                                                    monkeypatch):
    """Issue 12 item 14: CIFAR has no val split.  With ``train.holdout`` the training never sees the
    held-out images and GODIN's epsilon is chosen on them; without, on training images; either
    way the record's ``detector_fit.id_val`` says which."""
    import logitnorm_bench.worker as worker
    from logitnorm_bench.data_views import HOLDOUT_SEED
    from logitnorm_bench.evaluation import sample_indices
    from logitnorm_bench.smoke import SIZES

    trained_on = []
    real_train = worker.train

    def spy(model, loss_fn, train_x, *args, **kwargs):
        trained_on.append(train_x.x.clone())  # the in-memory ImageSet's images
        return real_train(model, loss_fn, train_x, *args, **kwargs)

    monkeypatch.setattr(worker, "train", spy)
    fits = {}
    for holdout in (0, 20):
        suite = tiny_suite(tmp_path / f"h{holdout}.yaml", name="h", epochs=1, id_dataset=["cifar10"],
                           arch_params=[{"width": 16}], loss=["godin"], detector=["godin"])
        results = tmp_path / f"r{holdout}"
        assert run_cli("run", str(suite), "--smoke", "--results", str(results),
                       "--set", f"train.holdout={holdout}") == 0
        (rec,) = ResultsDir(results).records()
        assert rec["train"]["holdout"] == holdout
        fits[holdout] = rec["detector_fit"]
    # smoke mode samples 32 ID validation images: 32 of the training images, or all 20 held out
    assert fits[0]["id_val"] == {"split": "train", "images": 32, "seen_in_training": True}
    assert fits[20]["id_val"] == {"split": "holdout", "images": 20, "seen_in_training": False}
    # the held-out images (a fixed sample of the smoke stand-in's training split) were never trained on
    everything, held_in = trained_on
    held = sample_indices(SIZES["train"], 20, HOLDOUT_SEED)
    assert held_in.shape[0] == SIZES["train"] - 20
    assert not (held_in[:, None] == everything[held][None]).flatten(2).all(2).any()


def test_digits_keep_their_own_val_split(tmp_path, tiny_suite):
    suite = tiny_suite(tmp_path / "d.yaml", name="d", epochs=1, arch_params=[{"width": 16}], loss=["godin"],
                       detector=["godin"], id_val_samples=16)
    assert run_cli("run", str(suite), "--results", str(tmp_path / "r")) == 0
    (rec,) = ResultsDir(tmp_path / "r").records()
    assert rec["detector_fit"]["id_val"] == {"split": "val", "images": 16, "seen_in_training": False}
