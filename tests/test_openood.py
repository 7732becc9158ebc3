"""The OpenOOD v1.5 plugin (plugins/ood_bench_openood): suites, datasets, ResNet18_32x32, near/far
group averages in the leaderboard and overview, and the reference table."""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_fake_record
from logitnorm_bench.components import DataContext
from logitnorm_bench.errors import ConfigError, DataMissingError
from logitnorm_bench.leaderboard import build_rows
from logitnorm_bench.plan import make_plan
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.records import ResultsDir
from logitnorm_bench.reporting import Results
from logitnorm_bench.suite import load_suite, parse_suite


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


# ------------------------------------------------------------------------------------------
# Suites and the ood_group key
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bench, near", [("openood_cifar10", {"cifar100_ood", "tin_openood_c10"}),
                                         ("openood_cifar100", {"cifar10_ood", "tin_openood_c100"})])
def test_suites_plan_openoods_benchmark(plugins, bench, near):
    suite = load_suite(bench, plugins=plugins)
    plan = make_plan(suite, plugins)
    assert len(plan.runs) == 3 and {r.arch for r in plan.runs} == {"resnet18_32x32"}
    assert {r.id_dataset for r in plan.runs} == {bench}
    recipe = plan.runs[0].train
    assert (recipe["epochs"], recipe["batch_size"], recipe["lr"], recipe["nesterov"], recipe["schedule"],
            recipe["weight_decay"]) == (100, 128, 0.1, True, "cosine", 5e-4)
    groups = {}
    for c in plan.cells:
        groups.setdefault(c.ood_group, set()).add(c.ood_dataset)
    assert groups == {"near": near, "far": {"mnist_ood", "svhn", "textures", "places365"}}
    assert len(plan.cells) == 3 * 4 * 6


def test_ood_group_is_a_label_outside_the_cell_hash(plugins):
    doc = {"suite": "t", "defaults": {"train": {"epochs": 1}},
           "experiments": {"e": {"matrix": {"id_dataset": ["digits"], "arch": ["digits_mlp"], "loss": ["ce"],
                                            "detector": ["msp"], "ood_dataset": ["uniform_noise"], "seed": [0]}}}}
    plain = make_plan(parse_suite(copy.deepcopy(doc), "t.yaml", [], plugins), plugins)
    doc["experiments"]["e"]["matrix"]["ood_group"] = ["far"]
    labelled = make_plan(parse_suite(copy.deepcopy(doc), "t.yaml", [], plugins), plugins)
    assert plain.cells[0].cell_id == labelled.cells[0].cell_id
    assert (plain.cells[0].ood_group, labelled.cells[0].ood_group) == (None, "far")
    doc["experiments"]["e"]["matrix"]["ood_group"] = [{"near": 1}]
    with pytest.raises(ConfigError, match="ood_group"):
        parse_suite(copy.deepcopy(doc), "t.yaml", [], plugins)


# ------------------------------------------------------------------------------------------
# Leaderboard, overview, reference table
# ------------------------------------------------------------------------------------------

AUROC = {"cifar100_ood": 0.80, "tin_openood_c10": 0.90, "mnist_ood": 0.95, "svhn": 0.85}
GROUP = {"cifar100_ood": "near", "tin_openood_c10": "near", "mnist_ood": "far", "svhn": "far"}


def _record(ood, seed, detector="msp"):
    auroc = AUROC[ood] + 0.01 * seed
    return {"cell_id": f"oo-{ood}-{seed}-{detector}", "run_id": f"r{seed}", "status": "ok", "suite": "openood_cifar10",
            "id_dataset": "openood_cifar10", "arch": "resnet18_32x32", "loss": "ce", "detector": detector,
            "ood_dataset": ood, "ood_group": GROUP[ood], "seed": seed, "detector_params": {"temperature": 1.0},
            "metrics": {"fpr95": 1 - auroc, "auroc": auroc, "aupr_in": 0.9, "aupr_out": 0.8},
            "run_metrics": {"id_acc": 0.9}}


def _records():
    return [_record(o, s, d) for o in AUROC for s in (0, 1) for d in ("msp", "energy")]


def test_leaderboard_adds_an_average_row_per_group():
    rows = {(r["detector"], r["ood_dataset"]): r for r in build_rows(_records())}
    assert {o for _, o in rows} == set(AUROC) | {"average", "average:near", "average:far"}
    near, far, avg = rows["msp", "average:near"], rows["msp", "average:far"], rows["msp", "average"]
    assert near["auroc"] == pytest.approx(100 * (0.85 + 0.005)) and near["n_seeds"] == 2
    assert far["auroc"] == pytest.approx(100 * (0.90 + 0.005))
    assert avg["auroc"] == pytest.approx(100 * (0.875 + 0.005))
    assert near["auroc_std"] == pytest.approx(100 * 0.01 / 2 ** 0.5)


def test_records_without_a_group_get_no_group_rows():
    records = [dict(r, ood_group=None) for r in _records()]
    assert not [r for r in build_rows(records) if r["ood_dataset"].startswith("average:")]


def test_overview_and_reference_table_show_near_and_far(tmp_path):
    from logitnorm_bench.overview import Overview
    from ood_bench_openood.report import OpenOODReference

    results = ResultsDir(tmp_path)
    for rec in _records():
        write_fake_record(results, rec)
    loaded = Results.load(tmp_path)
    (table,) = Overview().tables(loaded)
    columns = table.sections[0].columns
    assert any("average:near" in c for c in columns) and any("average:far" in c for c in columns)
    (ref,) = OpenOODReference().tables(loaded)
    cells = {(label, c.column): c for _, label, c in ref.cells()}
    msp_near = cells["MSP (msp)", "Near-OOD AUROC"]
    assert msp_near.paper == 88.03 and msp_near.ours.mean == pytest.approx(85.5)
    assert cells["EBO (energy)", "Far-OOD AUROC"].paper == 91.21
    assert cells["KNN (knn)", "Near-OOD AUROC"].ours.mean is None  # not run here: shown as "—"
    assert ref.compares


def test_reference_data_cites_its_source_and_covers_both_benchmarks():
    from ood_bench_openood.report import reference

    ref = reference()
    assert "f969dfa" in ref["source"]
    assert set(ref["benchmarks"]) == {"openood_cifar10", "openood_cifar100", "openood_imagenet1k"}
    for bench in ref["benchmarks"].values():
        for entry in bench["detectors"].values():
            assert 0 < entry["near_auroc"][0] < 100 and 0 < entry["far_auroc"][0] < 100


def test_every_reference_row_names_a_registered_detector(plugins):
    """A row keyed by a name no detector has (e.g. `maxlogit` for `max_logit`) would never meet our number."""
    from ood_bench_openood.report import reference

    for name, bench in reference()["benchmarks"].items():
        for detector in bench["detectors"]:
            assert detector in plugins.detectors, f"{name}: {detector!r} is not a registered detector"


# ------------------------------------------------------------------------------------------
# Architecture
# ------------------------------------------------------------------------------------------

def test_resnet18_32x32_has_openoods_names_and_the_classifier_contract(plugins):
    from ood_bench_openood.architectures import resnet18_32x32

    torch.manual_seed(0)
    net = resnet18_32x32(10).eval()
    names = set(net.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight",
            "layer4.1.bn2.weight", "fc.weight", "fc.bias"} <= names
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # OpenOOD's ResNet18_32x32, 10 classes
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net(x), net.head(net.features(x))) and net.features(x).shape == (2, 512)
    net.head = torch.nn.Linear(512, 3)
    assert net(x).shape == (2, 3) and net.fc.out_features == 3
    with pytest.raises(ValueError, match="resnet18_32x32"):
        resnet18_32x32(10, (3, 4, 4))
    assert plugins.registry("architectures").canonical("resnet18_32x32") == "resnet18_32x32"


# ------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------

def _png(size=64, value=100) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


LIST = "tin/test/a.png -1\ntin/test/b.png -1\n\n"


def _openood_layout(root):
    base = root / "openood"
    (base / "benchmark_imglist" / "cifar10").mkdir(parents=True)
    (base / "benchmark_imglist" / "cifar10" / "test_tin.txt").write_text(LIST)
    (base / "images_classic" / "tin" / "test").mkdir(parents=True)
    for name in ("a", "b", "c_excluded"):
        (base / "images_classic" / "tin" / "test" / f"{name}.png").write_bytes(_png())


def test_tin_is_restricted_to_openoods_list(tmp_path):
    from ood_bench_openood.datasets import TinForCifar10

    _openood_layout(tmp_path)
    ds = TinForCifar10().build("test", DataContext(tmp_path, download=False))
    assert len(ds) == 2  # c_excluded is not in the list
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == -1 and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_missing_tin_is_one_line_naming_the_list(tmp_path):
    from ood_bench_openood.datasets import TinForCifar100

    with pytest.raises(DataMissingError) as err:
        TinForCifar100().build("test", DataContext(tmp_path, download=False))
    msg = str(err.value)
    assert "\n" not in msg and "cifar100/test_tin.txt" in msg and "downloading is off" in msg


def test_tin_downloads_list_and_images_with_checksums(tmp_path, serve, monkeypatch):
    import ood_bench_openood.datasets as oo

    folder, url = serve
    lists = _zip({"benchmark_imglist/cifar10/test_tin.txt": LIST.encode()})
    images = _zip({"tin/test/a.png": _png(), "tin/test/b.png": _png(value=200)})
    (folder / "lists.zip").write_bytes(lists)
    (folder / "tin.zip").write_bytes(images)
    monkeypatch.setattr(oo, "IMGLIST_URL", f"{url}/lists.zip")
    monkeypatch.setattr(oo, "TIN_URL", f"{url}/tin.zip")
    monkeypatch.setattr(oo, "IMGLIST_SHA256", hashlib.sha256(lists).hexdigest())
    monkeypatch.setattr(oo, "TIN_SHA256", "0" * 64)
    with pytest.raises(DataMissingError, match="ChecksumError"):
        oo.TinForCifar10().build("test", DataContext(tmp_path / "d", download=True))
    monkeypatch.setattr(oo, "TIN_SHA256", hashlib.sha256(images).hexdigest())
    ds = oo.TinForCifar10().build("test", DataContext(tmp_path / "d", download=True))
    assert len(ds) == 2 and ds[1][0].shape == (3, 32, 32)


def test_mnist_missing_is_one_line(tmp_path):
    from ood_bench_openood.datasets import MnistOod

    with pytest.raises(DataMissingError) as err:
        MnistOod().build("test", DataContext(tmp_path, download=False))
    assert "\n" not in str(err.value) and "mnist_ood" in str(err.value)


def test_mnist_reads_torchvisions_files_as_rgb_32(tmp_path):
    """A two-image MNIST test split in torchvision's raw format (its md5 check applies only to downloads)."""
    import struct

    from ood_bench_openood.datasets import MnistOod

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = bytes(range(256)) * 6 + bytes(2 * 784 - 256 * 6)
    for split in ("t10k", "train"):  # torchvision wants both splits on disk
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, 2, 28, 28) + pixels)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 2) + bytes([3, 7]))
    ds = MnistOod().build("test", DataContext(tmp_path, download=False))
    x, y = ds[1]
    assert len(ds) == 2 and x.shape == (3, 32, 32) and y == -1


def test_cifar_as_ood_relabels_and_reuses_the_paper_loader():
    from ood_bench_openood.datasets import Cifar10Ood, Cifar100Ood, OpenoodCifar10, Relabelled
    from ood_bench_paper.datasets import Cifar10, Cifar100

    base = [(torch.zeros(3, 32, 32), 4)]
    assert Relabelled(base)[0][1] == -1 and len(Relabelled(base)) == 1
    assert (Cifar10Ood.source, Cifar100Ood.source) == (Cifar10, Cifar100)
    assert Cifar10Ood().num_classes == 0 and OpenoodCifar10().mean == (0.4914, 0.4822, 0.4465)
    assert issubclass(OpenoodCifar10, Cifar10)


def test_a_run_records_the_group_and_the_leaderboard_averages_it(tiny_suite, tmp_path):
    """End to end on the bundled digits: ``ood_group`` reaches every record and the leaderboard CSV."""
    import csv

    from logitnorm_bench.cli import main

    suite = tiny_suite(tmp_path / "g.yaml", epochs=1, loss=["ce"], detector=["msp"],
                       ood_dataset=["photo_patches", "uniform_noise", "gaussian_noise"],
                       include=[{"ood_dataset": "photo_patches", "ood_group": "near"},
                                {"ood_dataset": "uniform_noise", "ood_group": "far"},
                                {"ood_dataset": "gaussian_noise", "ood_group": "far"}])
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    groups = {r["ood_dataset"]: r["ood_group"] for r in ResultsDir(results).records()}
    assert groups == {"photo_patches": "near", "uniform_noise": "far", "gaussian_noise": "far"}
    with open(results / "leaderboard.csv", newline="") as f:
        rows = {r["ood_dataset"]: r for r in csv.DictReader(f)}
    assert {"average", "average:near", "average:far"} <= set(rows)
    far = (float(rows["uniform_noise"]["auroc"]) + float(rows["gaussian_noise"]["auroc"])) / 2
    assert float(rows["average:far"]["auroc"]) == pytest.approx(far, abs=1e-3)
    assert rows["average:near"]["auroc"] == rows["photo_patches"]["auroc"]


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["openood_cifar10", "openood_cifar100"])
def test_the_suite_runs_in_smoke_mode(bench, tmp_path):
    """``ood-bench run openood_cifar10 --smoke`` end to end (one seed, one detector here, for time):
    ResNet18_32x32 trains on the stand-ins and every near/far cell is written."""
    from logitnorm_bench.cli import main

    sets = [f"experiments.{e}.matrix.{k}={v}" for e in ("near_ood", "far_ood")
            for k, v in (("seed", "[0]"), ("detector", "[msp]"))]
    args = ["run", bench, "--smoke", "--results", str(tmp_path / "r"), "--data", str(tmp_path / "d"),
            "--no-download", "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    records = list(ResultsDir(tmp_path / "r").records())
    assert len(records) == 6 and all(r["status"] == "ok" and r["smoke"] for r in records)
    rows = build_rows(records)
    assert {"average:near", "average:far"} <= {r["ood_dataset"] for r in rows}
