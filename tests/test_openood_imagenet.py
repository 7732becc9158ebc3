"""OpenOOD v1.5's ImageNet-200 and ImageNet-1K benchmarks (issue 14 item 3): datasets read lazily from
OpenOOD's image lists in its own layout (a tiny fixture made here), torchvision's ResNets and the
``torchvision:<model>/<weights>`` form (a weights file written here into a temporary TORCH_HOME: no
network), the ImageNet-200 restriction of the 1K head, the suites and the reference table."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torchvision.models import ResNet18_Weights

from logitnorm_bench.cli import main
from logitnorm_bench.components import DataContext, Normalized
from logitnorm_bench.errors import ConfigError, DataMissingError
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.weights import load_given_weights
from ood_bench_openood import datasets as oo
from ood_bench_openood.architectures import tv_resnet18, tv_resnet50
from ood_bench_openood.imagenet_classes import INDEX_1K, WNIDS_1K, WNIDS_200, imagenet200_to_1k

TV18 = "torchvision:resnet18/IMAGENET1K_V1"


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


# ------------------------------------------------------------------------------------------
# Class lists
# ------------------------------------------------------------------------------------------

def test_class_lists_are_imagenets_index_order_and_imagenet_r_subset():
    assert len(WNIDS_1K) == len(set(WNIDS_1K)) == 1000 and list(WNIDS_1K) == sorted(WNIDS_1K)
    assert len(WNIDS_200) == len(set(WNIDS_200)) == 200 and list(WNIDS_200) == sorted(WNIDS_200)
    assert set(WNIDS_200) <= set(WNIDS_1K)
    # torchvision's category names at their 1K index: the order is the one its weights were trained on
    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for wnid, name in [("n01440764", "tench"), ("n02085620", "Chihuahua"), ("n04592741", "wing"),
                       ("n07753592", "banana"), ("n09472597", "volcano"), ("n15075141", "toilet tissue")]:
        assert names[INDEX_1K[wnid]] == name
    # the 200 -> 1K map, computed independently of the module's dict
    assert imagenet200_to_1k() == [WNIDS_1K.index(w) for w in WNIDS_200]


# ------------------------------------------------------------------------------------------
# A tiny OpenOOD data root
# ------------------------------------------------------------------------------------------

def _image(path, seed, size=(300, 260), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)
    return path


def _write_list(root, bench, name, lines):
    path = root / "openood" / "benchmark_imglist" / bench / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {label}\n" for p, label in lines))
    return path


def _id_lines(root, wnids, labels, split, n):
    lines = []
    for k in range(n):
        label = labels[k % len(labels)]
        wnid = wnids[label]
        rel = (f"imagenet_1k/train/{wnid}/{wnid}_{k}.JPEG" if split == "train"
               else f"imagenet_1k/val/{wnid}/ILSVRC2012_val_{split}{k:05d}.JPEG")
        _image(root / "openood" / "images_largescale" / rel, {"train": 0, "val": 100, "test": 200}[split] + k,
               fmt="JPEG")
        lines.append((rel, label))
    return lines


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """OpenOOD's layout: benchmark_imglist/<bench>/*.txt, images_largescale/<set>/..., images_classic/texture/..."""
    root = tmp_path_factory.mktemp("openood_data")
    for bench, wnids, labels in (("imagenet200", WNIDS_200, [0, 7, 199]), ("imagenet", WNIDS_1K, [0, 151, 999])):
        stem = "imagenet200" if bench == "imagenet200" else "imagenet"
        for split, n in (("train", 6), ("val", 3), ("test", 6)):
            _write_list(root, bench, f"{split}_{stem}.txt", _id_lines(root, wnids, labels, split, n))
        for ood, images, n in (("ssb_hard", "images_largescale", 3), ("ninco", "images_largescale", 3),
                               ("inaturalist", "images_largescale", 3), ("textures", "images_classic", 3),
                               ("openimage_o", "images_largescale", 3)):
            folder = "texture" if ood == "textures" else ood
            lines = []
            for k in range(n):
                rel = f"{folder}/{bench}_{k}.png"
                _image(root / "openood" / images / rel, 1000 + k, size=(180 + 40 * k, 240), fmt="PNG")
                lines.append((rel, -1))
            _write_list(root, bench, f"test_{ood}.txt", lines)
            if ood == "openimage_o":
                _write_list(root, bench, f"val_{ood}.txt", lines[:2])
    return root


def _reference_transform(path):
    """OpenOOD's Resize(256) + CenterCrop(224) done with PIL directly (torchvision's rounding)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(256 * long_ / short)
        size = (256, new_long) if w <= h else (new_long, 256)
        img = img.resize(size, Image.BILINEAR)
        left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
        arr = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_id_sets_read_openoods_lists_lazily_with_openoods_preprocessing(data_root, monkeypatch):
    ctx = DataContext(root=data_root, download=False)
    src = oo.OpenoodImagenet200()
    assert (src.num_classes, src.input_shape, src.splits) == (200, (3, 224, 224), ("train", "val", "test"))
    assert (src.mean, src.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened while building the dataset")

    monkeypatch.setattr(oo.Image, "open", no_open)
    ds = src.build("test", ctx)  # lazy: builds from the list without opening a single image
    monkeypatch.undo()
    assert len(ds) == 6
    x, y = ds[1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 7
    assert torch.allclose(x, _reference_transform(ds.files[1]), atol=1e-6)
    assert [ds[i][1] for i in range(6)] == [0, 7, 199, 0, 7, 199]
    one_k = oo.OpenoodImagenet1k().build("val", ctx)
    assert [one_k[i][1] for i in range(3)] == [0, 151, 999]


@pytest.mark.parametrize("name", ["openood_imagenet200", "openood_imagenet1k", "ninco_openood_in200",
                                  "openimage_o_openood_in1k", "textures_openood_in200"])
def test_the_imagenet_sets_pass_the_conformance_kit(data_root, plugins, name):
    from logitnorm_bench.testing import check_dataset

    sizes = check_dataset(plugins.datasets.get(name).factory, root=data_root, items=3)
    assert sizes == ({"train": 6, "val": 3, "test": 6} if name.startswith("openood_") else
                     {"test": 3, "val": 2} if name.startswith("openimage_o") else {"test": 3})


@pytest.mark.parametrize("name, group_set", [("ssb_hard_openood_in200", "ssb_hard"),
                                             ("textures_openood_in1k", "texture"),
                                             ("openimage_o_openood_in1k", "openimage_o")])
def test_ood_sets_are_label_minus_one_from_their_benchmarks_list(data_root, plugins, name, group_set):
    src = plugins.datasets.build(name)
    ds = src.build("test", DataContext(root=data_root, download=False))
    assert len(ds) == 3 and {ds[i][1] for i in range(3)} == {-1}
    assert all(f"/{group_set}/" in str(f) for f in ds.files)
    assert all(("imagenet200_" if name.endswith("in200") else "imagenet_") in f.name for f in ds.files)
    x, _ = ds[2]
    assert torch.allclose(x, _reference_transform(ds.files[2]), atol=1e-6)
    if name.startswith("openimage_o"):
        assert len(src.build("val", DataContext(root=data_root, download=False))) == 2


def test_missing_data_names_the_file_and_how_to_get_it(tmp_path, data_root):
    ctx = DataContext(root=tmp_path, download=True)
    with pytest.raises(DataMissingError) as err:
        oo.OpenoodImagenet200().build("train", ctx)
    msg = str(err.value)
    assert str(tmp_path / "openood" / "benchmark_imglist" / "imagenet200" / "train_imagenet200.txt") in msg
    assert oo.GDRIVE_IDS["benchmark_imglist"] in msg and oo.GDRIVE_IDS["imagenet_1k"] in msg
    assert "image-net.org" in msg and "no checksums" in msg and "--datasets imagenet-200" in msg
    assert "\n" not in msg
    # the list is there but an image is not
    _write_list(tmp_path, "imagenet", "test_ninco.txt", [("ninco/a.jpg", -1), ("ninco/b.jpg", -1)])
    with pytest.raises(DataMissingError, match=r"2 of the 2 images of test_ninco.txt missing, first .*ninco/a.jpg"
                                               r".*1Z82cmvIB0eghTehxOGP5VTdLt7OD3nk6"):
        oo.NincoIn1K().build("test", ctx)


def test_a_list_labelled_against_the_class_order_is_refused(tmp_path):
    wnid = WNIDS_200[3]
    rel = f"imagenet_1k/val/{wnid}/x.JPEG"
    _image(tmp_path / "openood" / "images_largescale" / rel, 0, fmt="JPEG")
    path = _write_list(tmp_path, "imagenet200", "test_imagenet200.txt", [(rel, 4)])
    with pytest.raises(ConfigError, match=rf"{path}: entry 1 .* has label 4; expected label 3"):
        oo.OpenoodImagenet200().build("test", DataContext(root=tmp_path, download=False))
    path.write_text(f"{rel}\n")
    with pytest.raises(ConfigError, match="expected '<image path> <integer label>'"):
        oo.OpenoodImagenet200().build("test", DataContext(root=tmp_path, download=False))


# ------------------------------------------------------------------------------------------
# torchvision's ResNets and the ImageNet-200 restriction
# ------------------------------------------------------------------------------------------

def test_tv_resnets_keep_torchvisions_names_and_the_classifier_contract():
    from logitnorm_bench.testing import check_architecture

    assert check_architecture(tv_resnet18, num_classes=10, input_shape=(3, 64, 64))["features"] == 512
    ours, theirs = tv_resnet50(1000).state_dict(), torchvision.models.resnet50().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_imagenet200_head_is_the_1k_heads_rows_of_its_classes():
    torch.manual_seed(0)
    full = torchvision.models.resnet18().eval()
    net = tv_resnet18(200, classes="imagenet200")
    net.load_state_dict(full.state_dict())
    net.eval()
    index = [WNIDS_1K.index(w) for w in WNIDS_200]
    assert torch.equal(net.head.weight, full.fc.weight[index]) and torch.equal(net.head.bias, full.fc.bias[index])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), full(x)[:, index], atol=1e-5)
    # its own (restricted) state dict loads back unchanged
    again = tv_resnet18(200, classes="imagenet200")
    again.load_state_dict(net.state_dict())
    assert torch.equal(again.head.weight, net.head.weight)
    with pytest.raises(ConfigError, match="keeps 200 classes, but the ID dataset has 1000"):
        tv_resnet18(1000, classes="imagenet200")
    with pytest.raises(ConfigError, match="expected null or one of imagenet200"):
        tv_resnet18(200, classes="imagenet100")


# ------------------------------------------------------------------------------------------
# torchvision:<model>/<weights>
# ------------------------------------------------------------------------------------------

def _install(tmp_path, monkeypatch, state):
    """``state`` as torchvision's resnet18 file in a temporary TORCH_HOME, with
    ResNet18_Weights.IMAGENET1K_V1's URL pointed at a name carrying its SHA-256 prefix (torch.hub's rule)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    scratch = tmp_path / "scratch.pth"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    url = f"http://127.0.0.1:9/models/resnet18-{digest[:8]}.pth"  # port 9: never reached when the file is cached
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", url)
    path = tmp_path / "torch_home" / "hub" / "checkpoints" / f"resnet18-{digest[:8]}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(path)
    return path


@pytest.fixture
def tv_file(tmp_path, monkeypatch):
    """A randomly initialised resnet18 state dict installed as torchvision's IMAGENET1K_V1 file."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    return _install(tmp_path, monkeypatch, state), state


def test_torchvision_weights_load_from_torch_home_and_equal_the_file(tv_file):
    path, state = tv_file
    model = Normalized(tv_resnet18(1000), (0.5,) * 3, (0.5,) * 3)
    applied = load_given_weights(model, TV18)
    assert applied["file"] == str(path)
    assert applied["preprocessing"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                        "resize": [256], "crop": [224]}
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    restricted = Normalized(tv_resnet18(200, classes="imagenet200"), (0.5,) * 3, (0.5,) * 3)
    load_given_weights(restricted, TV18)
    assert torch.equal(restricted.head.weight, state["fc.weight"][imagenet200_to_1k()])


def test_a_torchvision_file_that_does_not_match_its_name_is_refused(tv_file):
    path, _ = tv_file
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ConfigError, match="has SHA-256 .* but its name says it starts with"):
        load_given_weights(Normalized(tv_resnet18(1000), (0.5,) * 3, (0.5,) * 3), TV18)


def test_a_missing_torchvision_file_is_downloaded_or_said_where_to_put(tv_file, serve, monkeypatch):
    path, state = tv_file
    folder, base = serve
    path.rename(folder / path.name)
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{base}/{path.name}")
    # smoke: never downloads; the seeded random init stays and the result says so
    model = Normalized(tv_resnet18(1000), (0.5,) * 3, (0.5,) * 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    applied = load_given_weights(model, TV18, smoke=True)
    assert "random_init" in applied and not path.exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a real run downloads it once into torch's cache (loopback server here)
    load_given_weights(model, TV18)
    assert path.is_file() and torch.equal(model.net.conv1.weight, state["conv1.weight"])
    path.unlink()
    (folder / path.name).unlink()
    with pytest.raises(ConfigError, match=rf"download from .* failed .*; put the file at {path}"):
        load_given_weights(model, TV18)


def _suite(tmp_path, **matrix):
    grid = {"id_dataset": ["openood_imagenet1k"], "arch": ["tv_resnet18"], "loss": ["ce"], "detector": ["msp"],
            "ood_dataset": ["ninco_openood_in1k"], "seed": [0], "weights": [TV18]}
    grid.update(matrix)
    path = tmp_path / "tv.yaml"
    path.write_text(yaml.safe_dump({"suite": "tv", "version": 1, "experiments": {"e": {"matrix": grid}}}))
    return path


@pytest.mark.parametrize("matrix, message", [
    ({"arch": ["resnet18_32x32"]}, "are torchvision's resnet18, but the cell's arch 'resnet18_32x32' builds another "
                                   "network; expected an architecture that builds torchvision's resnet18 (tv_resnet18)"),
    ({"arch": ["tv_resnet50"]}, "but the cell's arch 'tv_resnet50' builds torchvision's resnet50"),
    ({"loss": ["logitnorm"]}, "were trained with cross-entropy, but the cell says loss 'logitnorm'"),
    ({"id_dataset": ["openood_imagenet200"]}, "have 1000 classes, but tv_resnet18 on openood_imagenet200 (200 "
                                              "classes) loads a head of 200"),
    ({"arch_params": [{"classes": "imagenet200"}]}, "keeps 200 classes, but the ID dataset has 1000"),
    ({"weights": ["torchvision:resnet18/DEFAULT"]}, "DEFAULT names another file whenever torchvision changes"),
    ({"weights": ["torchvision:resnet18/IMAGENET1K_V9"]}, "has no weights 'IMAGENET1K_V9'; expected one of IMAGENET1K_V1"),
    ({"weights": ["torchvision:resnet18"]}, "expected torchvision:<model>/<weights>"),
    ({"weights": ["torchvision:resnet1000/IMAGENET1K_V1"]}, "torchvision has no model 'resnet1000'"),
])
def test_torchvision_weights_that_contradict_the_cell_are_refused_at_plan_time(tmp_path, capsys, matrix, message):
    assert main(["plan", str(_suite(tmp_path, **matrix))]) == 2
    err = capsys.readouterr().err
    assert message in err and "experiments.e.matrix.weights" in err and err.count("\n") == 1


def test_matching_torchvision_weights_plan_without_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert main(["plan", str(_suite(tmp_path))]) == 0
    assert main(["plan", str(_suite(tmp_path, id_dataset=["openood_imagenet200"], ood_dataset=["ninco_openood_in200"],
                                    arch_params=[{"classes": "imagenet200"}]))]) == 0


# ------------------------------------------------------------------------------------------
# The suites, and a real run on the tiny fixture
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bench, short", [("openood_imagenet200", "in200"), ("openood_imagenet1k", "in1k")])
def test_suites_plan_openoods_imagenet_benchmarks_from_any_folder(bench, short, tmp_path, monkeypatch, capsys):
    from logitnorm_bench.plan import make_plan
    from logitnorm_bench.suite import load_suite

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # planning needs no weights file
    assert main(["plan", bench]) == 0 and bench in capsys.readouterr().out
    plugins = get_plugins()
    plan = make_plan(load_suite(bench, plugins=plugins), plugins)
    (run,) = plan.runs
    assert (run.arch, run.weights, run.id_dataset) == ("tv_resnet50", "torchvision:resnet50/IMAGENET1K_V1", bench)
    assert run.arch_params == ({"classes": "imagenet200"} if short == "in200" else {"classes": None})
    groups = {}
    for c in plan.cells:
        groups.setdefault(c.ood_group, set()).add(c.ood_dataset)
    assert groups == {"near": {f"ssb_hard_openood_{short}", f"ninco_openood_{short}"},
                      "far": {f"inaturalist_openood_{short}", f"textures_openood_{short}",
                              f"openimage_o_openood_{short}"}}
    assert {c.detector for c in plan.cells} == {"msp", "odin", "energy", "max_logit", "react", "knn", "vim"}
    assert plan.cells[0].evaluation["fit_train_samples"] == 10000 and plan.cells[0].evaluation["ood_samples"] is None


def _normalised_test_images(data_root):
    ds = oo.OpenoodImagenet200().build("test", DataContext(root=data_root, download=False))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor([ds[i][1] for i in range(len(ds))])


def test_a_run_on_the_tiny_fixture_scores_the_restricted_model_end_to_end(tmp_path, monkeypatch, data_root,
                                                                         one_thread):
    """ImageNet-200 from the fixture's lists, torchvision weights from TORCH_HOME restricted to the 200
    classes, msp and a fitted knn, near and far groups: every record ok, the group averages there."""
    # A random backbone whose 1K head fits the fixture's test images (least squares on their features,
    # written into the rows of their classes' 1K indices): a model that is not at chance on them.
    torch.manual_seed(1)
    full = torchvision.models.resnet18().eval()
    x, y = _normalised_test_images(data_root)
    index = torch.tensor(imagenet200_to_1k())
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(full.children())[:-1])(x).flatten(1)  # torchvision's, up to fc
        classes = sorted(set(y.tolist()))
        target = torch.nn.functional.one_hot(torch.tensor([classes.index(c) for c in y.tolist()])).float()
        w = torch.linalg.lstsq(feats, 10 * target).solution.T
        full.fc.weight.zero_()
        full.fc.bias.fill_(-5.0)
        full.fc.weight[index[classes]] = w
        full.fc.bias[index[classes]] = 0.0
    state = full.state_dict()
    path = _install(tmp_path, monkeypatch, state)
    suite = {"suite": "tiny_in200", "version": 1,
             "defaults": {"evaluation": {"ood_samples": None, "batch_size": 4, "fit_train_samples": 4,
                                         "id_val_samples": 3}},
             "experiments": {
                 "near": {"matrix": {"id_dataset": ["openood_imagenet200"], "arch": ["tv_resnet18"],
                                     "arch_params": [{"classes": "imagenet200"}], "loss": ["ce"], "weights": [TV18],
                                     "detector": ["msp", "knn"], "ood_dataset": ["ssb_hard_openood_in200"],
                                     "ood_group": ["near"], "seed": [0]},
                          "include": [{"detector": "knn", "detector_params": {"k": 2}}]},
                 "far": {"matrix": {"id_dataset": ["openood_imagenet200"], "arch": ["tv_resnet18"],
                                    "arch_params": [{"classes": "imagenet200"}], "loss": ["ce"], "weights": [TV18],
                                    "detector": ["msp"], "ood_dataset": ["textures_openood_in200"],
                                    "ood_group": ["far"], "seed": [0]}}}}
    file = tmp_path / "tiny_in200.yaml"
    file.write_text(yaml.safe_dump(suite))
    results = tmp_path / "res"
    assert main(["run", str(file), "--results", str(results), "--data", str(data_root), "--device", "cpu",
                 "--no-download"]) == 0
    records = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    (run_json,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*/run.json")]
    assert run_json["weights_applied"]["file"] == str(path)
    knn = next(r for r in records if r["detector"] == "knn")
    assert knn["detector_fit"]["fit_data"]["id_train_samples"] == 4
    assert knn["detector_fit"]["fit_data"]["id_train_total"] == 6
    board = (results / "leaderboard.csv").read_text()
    assert "average:near" in board and "average:far" in board
    # the ID accuracy is the 1K model's, restricted to the 200 classes, computed here independently
    with torch.no_grad():
        acc = (full(x)[:, index].argmax(1) == y).float().mean().item()
    assert acc > 0.5 and records[0]["run_metrics"]["id_acc"] == pytest.approx(acc)


def test_reference_table_has_imagenet1k_for_torchvisions_resnet50():
    from ood_bench_openood.report import reference

    ref = reference()["benchmarks"]
    assert "openood_imagenet200" not in ref  # OpenOOD publishes no number for the restricted ResNet-50
    in1k = ref["openood_imagenet1k"]
    assert in1k["arch"] == "tv_resnet50" and "ResNet50_torchvision_ckpt" in in1k["source"]
    assert in1k["detectors"]["msp"]["near_auroc"][0] == 76.02 and in1k["id_accuracy"][0] == 76.18
    assert set(in1k["detectors"]) <= set(get_plugins().detectors.names())


def test_reference_table_puts_openoods_imagenet1k_numbers_beside_ours(tmp_path):
    from conftest import write_fake_record
    from logitnorm_bench.records import ResultsDir
    from logitnorm_bench.reporting import Results
    from ood_bench_openood.report import OpenOODReference

    auroc = {"ssb_hard_openood_in1k": ("near", 0.70), "ninco_openood_in1k": ("near", 0.80),
             "inaturalist_openood_in1k": ("far", 0.90), "textures_openood_in1k": ("far", 0.86)}
    results = ResultsDir(tmp_path)
    for ood, (group, a) in auroc.items():
        write_fake_record(results, {
            "cell_id": f"in1k-{ood}", "run_id": "r0", "status": "ok", "suite": "openood_imagenet1k",
            "id_dataset": "openood_imagenet1k", "arch": "tv_resnet50", "arch_params": {"classes": None}, "loss": "ce",
            "detector": "msp", "ood_dataset": ood, "ood_group": group, "seed": 0, "detector_params": {"temperature": 1.0},
            "weights": "torchvision:resnet50/IMAGENET1K_V1",
            "metrics": {"fpr95": 1 - a, "auroc": a, "aupr_in": 0.9, "aupr_out": 0.8}, "run_metrics": {"id_acc": 0.76}})
    (table,) = OpenOODReference().tables(Results.load(tmp_path))
    cells = {(label, c.column): c for _, label, c in table.cells()}
    near, far = cells["MSP (msp)", "Near-OOD AUROC"], cells["MSP (msp)", "Far-OOD AUROC"]
    assert near.paper == 76.02 and near.ours.mean == pytest.approx(75.0)
    assert far.paper == 85.23 and far.ours.mean == pytest.approx(88.0)
    assert cells["MSP (msp)", "ID Acc"].ours.mean == pytest.approx(76.0)
    assert "tv_resnet50" in table.sections[0].heading and "ResNet50_torchvision_ckpt" in table.notes[0]


@pytest.mark.slow
def test_smoke_runs_the_imagenet200_suite_on_cpu_without_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no weights file: a random init, said so
    assert main(["run", "openood_imagenet200", "--smoke", "--device", "cpu", "--results", str(tmp_path / "r"),
                 "--set", "experiments.near_ood.matrix.detector=[msp,knn,vim]",
                 "--set", "experiments.far_ood.matrix.detector=[msp,vim]"]) == 0
    out = capsys.readouterr()
    assert "keeps its random init" in out.out + out.err
    board = (tmp_path / "r" / "leaderboard.csv").read_text()
    assert "average:near" in board and "average:far" in board
