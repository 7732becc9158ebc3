"""The built-in ``image_folder`` dataset: a user's own folder of PNGs, set up from a suite and run end to end."""

from __future__ import annotations

import os
import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from logitnorm_bench.cli import main
from logitnorm_bench.errors import ConfigError, DataMissingError
from logitnorm_bench.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolder
from logitnorm_bench.plan import load_plan
from logitnorm_bench.testing import check_dataset

# Each class is a colour plus noise, so that a tiny MLP learns it in a few epochs.
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200)}


def _png(path, rgb, seed, size=(12, 10), mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert(mode) if mode != "RGB" else img).save(path)
    return path


def make_classified(root, counts=None, classes=COLOURS):
    counts = counts or {"train": 24, "val": 6, "test": 10}
    seed = 0
    for split, n in counts.items():
        for name, rgb in classes.items():
            for i in range(n):
                seed += 1
                _png(root / split / name / f"{i:03d}.png", rgb, seed)
    return root


def make_flat(root, n=30, rgb=(40, 200, 40)):
    for i in range(n):  # at any depth
        _png(root / ("a" if i % 2 else "b/c") / f"{i}.png", rgb, 1000 + i)
    return root


# ------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------


def test_classified_layout_classes_labels_and_images(tmp_path):
    root = make_classified(tmp_path / "pets", {"train": 3, "test": 2})
    _png(root / "train" / "cat" / "deeper" / "x.png", (0, 0, 0), 99)  # any depth inside a class folder
    (root / "train" / "dog" / ".hidden.png").write_bytes(b"not an image")  # hidden: skipped
    (root / "train" / "dog" / "notes.txt").write_text("not an image")  # other extension: skipped
    src = ImageFolder(str(root), image_size=8)
    assert src.splits == ("train", "test") and src.classes == ["cat", "dog"] and src.num_classes == 2
    assert src.input_shape == (3, 8, 8)
    assert (src.mean, src.std) == (IMAGENET_MEAN, IMAGENET_STD)
    train = src.build("train")
    assert len(train) == 7
    assert [train[i][1] for i in range(len(train))] == [0, 0, 0, 0, 1, 1, 1]
    x, y = train[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    sizes = check_dataset(lambda: ImageFolder(str(root), image_size=8))
    assert sizes == {"train": 7, "test": 4}


def test_resize_policies_match_pil_by_hand(tmp_path):
    """resize_crop: shorter side to the size, then the central square (torchvision's Resize + CenterCrop);
    resize: straight to a square.  The reference is PIL's bilinear resize and the crop box by hand."""
    path = _png(tmp_path / "flat" / "wide.png", (120, 60, 30), 5, size=(30, 12))
    img = Image.open(path).convert("RGB")
    # resize_crop to 6: 30x12 -> 15x6, then columns (15 - 6) / 2 = 4.5 -> round(4.5) = 4 (torchvision rounds)
    small = img.resize((15, 6), Image.BILINEAR, reducing_gap=None)
    ref = torch.from_numpy(np.asarray(small.crop((4, 0, 10, 6)), dtype=np.float32) / 255).permute(2, 0, 1)
    got = ImageFolder(str(tmp_path / "flat"), image_size=6).build("test")[0][0]
    assert torch.allclose(got, ref, atol=1 / 255 + 1e-6)
    square = torch.from_numpy(np.asarray(img.resize((6, 6), Image.BILINEAR), dtype=np.float32) / 255).permute(2, 0, 1)
    got = ImageFolder(str(tmp_path / "flat"), image_size=6, resize="resize").build("test")[0][0]
    assert torch.allclose(got, square, atol=1 / 255 + 1e-6)


def test_grayscale_and_palette_images_read_as_rgb(tmp_path):
    root = tmp_path / "odd"
    _png(root / "gray.png", (90, 90, 90), 1, mode="L")
    _png(root / "pal.png", (90, 10, 200), 2, mode="P")
    ds = ImageFolder(str(root), image_size=4).build("test")
    for i in range(2):
        x, y = ds[i]
        assert x.shape == (3, 4, 4) and y == -1
    gray = ds[0][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L -> RGB copies the channel


def test_flat_folder_is_an_ood_set_of_every_image(tmp_path):
    root = make_flat(tmp_path / "ood", n=7)
    _png(root / "a" / "skip.jpg", (1, 2, 3), 3)
    src = ImageFolder(str(root), image_size=8, extensions=["png"])
    assert src.splits == ("test",) and src.num_classes == 0
    ds = src.build("test")
    assert len(ds) == 7 and {ds[i][1] for i in range(7)} == {-1}
    assert len(ImageFolder(str(root), extensions=[".PNG", "jpg"]).build("test")) == 8
    check_dataset(lambda: ImageFolder(str(root), image_size=8))


def test_split_folders_of_loose_images_are_an_ood_set_with_those_splits(tmp_path):
    for split in ("val", "test"):
        for i in range(4):
            _png(tmp_path / "ood" / split / f"{i}.png", (9, 9, 9), i)
    src = ImageFolder(str(tmp_path / "ood"))
    assert src.splits == ("val", "test") and src.num_classes == 0
    assert len(src.build("val")) == 4


@pytest.mark.parametrize("case, error, words", [
    ("missing", DataMissingError, ["does not exist"]),
    ("empty", DataMissingError, ["no images under"]),
    ("classes", ConfigError, ["class folders", "cat, dog", "cat, cow"]),
    ("unreadable", ConfigError, ["cannot read image", "broken.png"]),
    ("loose", ConfigError, ["loose.png", "beside the class folders"]),
])
def test_bad_folders_are_one_line_errors_naming_what(tmp_path, case, error, words):
    root = tmp_path / "data"
    if case == "empty":
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "readme.txt").write_text("no images")
    elif case == "classes":
        make_classified(root, {"train": 1})
        make_classified(root, {"test": 1}, classes={"cat": (1, 1, 1), "cow": (2, 2, 2)})
    elif case == "unreadable":
        make_flat(root, n=2)
        (root / "a" / "broken.png").write_bytes(b"\x89PNG but not really")
    elif case == "loose":
        make_classified(root, {"train": 1, "test": 1})
        _png(root / "train" / "loose.png", (0, 0, 0), 1)
    with pytest.raises(error) as info:
        ImageFolder(str(root)).build("train" if case in ("classes", "loose") else "test")
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert str(root) in message


# ------------------------------------------------------------------------------------------
# Suites: params checked at plan time, hashed into the identity
# ------------------------------------------------------------------------------------------


def folder_suite(path, id_root, ood_root, *, epochs=3, extra_ood=("gaussian_noise",), **id_params):
    doc = {
        "suite": "own_images", "version": 1,
        "defaults": {"train": {"epochs": epochs, "batch_size": 16, "lr": 0.05, "schedule": "cosine",
                               "crop_padding": 0, "hflip": False},
                     "evaluation": {"ood_samples": 20, "batch_size": 64, "id_val_samples": 10}},
        "experiments": {"e": {
            "matrix": {"id_dataset": ["image_folder"],
                       "id_dataset_params": [{"root": str(id_root), "image_size": 8, **id_params}],
                       "arch": ["digits_mlp"], "arch_params": [{"width": 16}], "loss": ["ce"],
                       "detector": ["msp", "energy"], "ood_dataset": ["image_folder", *extra_ood],
                       "seed": [0]},
            "include": [{"ood_dataset": "image_folder",
                         "ood_dataset_params": {"root": str(ood_root), "image_size": 8}}]}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_changed_root_changes_the_run_and_ood_params_only_the_cell(tmp_path):
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood")
    _, plan = load_plan(suite)
    (run,) = plan.runs
    assert run.id_dataset_params == {"root": str(tmp_path / "pets"), "image_size": 8}
    ood = {c.ood_dataset: c for c in plan.cells if c.detector == "msp"}
    assert ood["image_folder"].ood_dataset_params == {"root": str(tmp_path / "ood"), "image_size": 8}
    assert ood["gaussian_noise"].ood_dataset_params == {}
    _, other = load_plan(suite, overrides=[
        f"experiments.e.matrix.id_dataset_params=[{{root: {tmp_path / 'pets2'}, image_size: 8}}]"])
    assert other.runs[0].run_id != run.run_id
    _, moved = load_plan(suite, overrides=[
        f"experiments.e.include=[{{ood_dataset: image_folder, ood_dataset_params: {{root: {tmp_path / 'o2'}}}}}]"])
    assert moved.runs[0].run_id == run.run_id
    cells = {(c.ood_dataset, c.detector): c.cell_id for c in plan.cells}
    moved_cells = {(c.ood_dataset, c.detector): c.cell_id for c in moved.cells}
    assert moved_cells[("gaussian_noise", "msp")] == cells[("gaussian_noise", "msp")]
    assert moved_cells[("image_folder", "msp")] != cells[("image_folder", "msp")]


def test_a_default_given_again_is_the_same_run_and_cell(tmp_path):
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood")
    _, plan = load_plan(suite)
    _, same = load_plan(suite, overrides=[
        f"experiments.e.matrix.id_dataset_params=[{{root: {tmp_path / 'pets'}, image_size: 8, resize: resize_crop}}]",
        "experiments.e.matrix.ood_dataset=[image_folder, gaussian_noise]"])
    assert [r.run_id for r in same.runs] == [r.run_id for r in plan.runs]
    assert sorted(c.cell_id for c in same.cells) == sorted(c.cell_id for c in plan.cells)
    # gaussian_noise with its own default loc, as ood params: the cell it always was
    _, noise = load_plan(suite, overrides=["experiments.e.include=[{ood_dataset: gaussian_noise, "
                                           "ood_dataset_params: {loc: 0.5}}]",
                                           "experiments.e.matrix.ood_dataset=[gaussian_noise]"])
    assert sorted(c.cell_id for c in noise.cells) == sorted(c.cell_id for c in plan.cells
                                                            if c.ood_dataset == "gaussian_noise")
    _, shifted = load_plan(suite, overrides=["experiments.e.include=[{ood_dataset: gaussian_noise, "
                                             "ood_dataset_params: {loc: 0.3}}]",
                                             "experiments.e.matrix.ood_dataset=[gaussian_noise]"])
    assert not set(c.cell_id for c in shifted.cells) & set(c.cell_id for c in plan.cells)


@pytest.mark.parametrize("override, key, words", [
    ("experiments.e.matrix.id_dataset_params=[{root: /x, image_sise: 8}]", "experiments.e.matrix.id_dataset_params"
     ".image_sise", ["unknown parameter 'image_sise' of image_folder", "did you mean 'image_size'"]),
    ("experiments.e.matrix.id_dataset_params=[{root: /x, image_size: big}]",
     "experiments.e.matrix.id_dataset_params.image_size", ["got 'big'; expected an integer"]),
    ("experiments.e.matrix.id_dataset_params=[{root: /x, resize: stretch}]",
     "experiments.e.matrix.id_dataset_params", ["resize: got 'stretch'; expected one of resize_crop, resize"]),
    ("experiments.e.matrix.id_dataset_params=[{root: /x, std: [0.2, 0, 0.2]}]",
     "experiments.e.matrix.id_dataset_params", ["expected three numbers > 0"]),
    ("experiments.e.matrix.id_dataset_params=[{image_size: 8}]", "experiments.e.matrix.id_dataset_params",
     ["image_folder needs parameter(s) root"]),
    ("experiments.e.matrix.id_dataset_params=[[root]]", "experiments.e.matrix.id_dataset_params",
     ["expected a mapping of parameter to value"]),
    ("experiments.e.include=[{ood_dataset: gaussian_noise, ood_dataset_params: {loc: .nan}}]",
     "experiments.e.matrix.ood_dataset_params.loc", ["expected a finite number"]),
    ("experiments.e.include=[{ood_dataset: image_folder, ood_dataset_params: {root: /o}}, "
     "{ood_dataset: gaussian_noise, ood_dataset_params: {scale: [1]}}]",
     "experiments.e.matrix.ood_dataset_params.scale", ["expected a number", "of gaussian_noise, default 0.25"]),
])
def test_bad_dataset_params_exit_2_with_one_line(tmp_path, capsys, override, key, words):
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood")
    assert main(["plan", str(suite), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("ood-bench: error: ")
    assert f"{suite}:{key}:" in err and all(w in err for w in words), err


def test_same_dataset_as_id_and_ood_needs_other_params(tmp_path, capsys):
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "pets")
    assert main(["plan", str(suite)]) == 2
    assert "equal to id_dataset" in capsys.readouterr().err
    over = f"experiments.e.include=[{{ood_dataset: image_folder, ood_dataset_params: {{root: {tmp_path / 'pets'}, " \
           "image_size: 16}}]"
    assert main(["plan", str(suite), "--set", over]) == 0  # other params: another dataset


@pytest.mark.parametrize("override, key", [
    ("experiments.e.train.monitor_ood=image_folder", "experiments.e.train.monitor_ood"),
    ("experiments.e.select={param: loss_params.tau, values: [0.1], ood_dataset: image_folder}",
     "experiments.e.select.ood_dataset"),
    ("experiments.e.train.outliers={dataset: image_folder}", "experiments.e.train.outliers.dataset"),
])
def test_a_dataset_named_without_params_must_need_none(tmp_path, capsys, override, key):
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood")
    assert main(["plan", str(suite), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{suite}:{key}: image_folder needs parameter(s) root" in err, err


def test_the_example_suite_of_the_docs_plans(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    block = text[text.index("suite: my_pets"):]
    (tmp_path / "my_pets.yaml").write_text(block[:block.index("```")])
    _, plan = load_plan(tmp_path / "my_pets.yaml")
    assert (len(plan.runs), len(plan.cells)) == (2, 16)  # as the docs say
    roots = sorted({c.ood_dataset_params.get("root", "-") for c in plan.cells})
    assert roots == ["-", "/data/cars", "/data/flowers", "/data/not_pets"]


# ------------------------------------------------------------------------------------------
# End to end through the CLI
# ------------------------------------------------------------------------------------------


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("ood-bench: error:")]


def test_missing_root_is_named_by_data_and_run(tmp_path, capsys):
    make_classified(tmp_path / "pets", {"train": 2, "test": 2})
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "nowhere")
    assert main(["data", str(suite)]) != 0
    out = capsys.readouterr().out
    assert f"image_folder(image_size=8, root={tmp_path / 'pets'})" in out
    assert f"root {tmp_path / 'nowhere'} does not exist" in out
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"image_folder: root {tmp_path / 'nowhere'} does not exist" in err[0], err
    assert not (tmp_path / "r" / "records").exists() or not list((tmp_path / "r" / "records").glob("*.json"))


def test_unreadable_image_stops_the_run_before_training(tmp_path, capsys):
    make_classified(tmp_path / "pets", {"train": 2, "test": 2})
    (tmp_path / "pets" / "train" / "cat" / "bad.png").write_bytes(b"garbage")
    make_flat(tmp_path / "ood", n=3)
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood")
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "bad.png" in err[0], err
    assert not (tmp_path / "r" / "runs").exists() or not list((tmp_path / "r" / "runs").iterdir())


@pytest.mark.slow
def test_own_folders_run_end_to_end_through_the_cli(tmp_path, capsys):
    make_classified(tmp_path / "pets")
    make_flat(tmp_path / "ood")
    suite = folder_suite(tmp_path / "s.yaml", tmp_path / "pets", tmp_path / "ood", epochs=4)
    results = tmp_path / "results"
    assert main(["data", str(suite)]) == 0
    assert "every dataset is ready" in capsys.readouterr().out
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--threads", "1"]) == 0
    records = [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    pets = {"root": str(tmp_path / "pets"), "image_size": 8}
    assert all(r["id_dataset_params"] == pets for r in records)
    by_ood = {(r["ood_dataset"], r["detector"]): r for r in records}
    assert by_ood[("image_folder", "msp")]["ood_dataset_params"] == {"root": str(tmp_path / "ood"), "image_size": 8}
    assert "ood_dataset_params" not in by_ood[("gaussian_noise", "msp")]  # none set: none written
    # The colours are separable: the model learns them, and the green OOD folder is told apart.
    assert by_ood[("image_folder", "msp")]["run_metrics"]["id_acc"] > 0.9
    rows = list(csv.DictReader((results / "leaderboard.csv").open()))
    assert {"id_dataset_params", "ood_dataset_params"} <= set(rows[0])
    assert {json.loads(r["id_dataset_params"])["root"] for r in rows} == {str(tmp_path / "pets")}
    folder_rows = [r for r in rows if r["ood_dataset"] == "image_folder"]
    assert len(folder_rows) == 2 and all(json.loads(r["ood_dataset_params"])["root"] == str(tmp_path / "ood")
                                         for r in folder_rows)
    # A rerun finds everything done; another OOD root is a new cell, the training is reused.
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--threads", "1"]) == 0
    make_flat(tmp_path / "ood2", n=12, rgb=(200, 200, 40))
    over = f"experiments.e.include=[{{ood_dataset: image_folder, ood_dataset_params: {{root: {tmp_path / 'ood2'}, " \
           "image_size: 8}}]"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--threads", "1",
                 "--set", over]) == 0
    records = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert len(records) == 6 and len({r["run_id"] for r in records}) == 1
    rows = list(csv.DictReader((results / "leaderboard.csv").open()))
    roots = sorted(json.loads(r["ood_dataset_params"])["root"] for r in rows if r["ood_dataset"] == "image_folder")
    assert roots == sorted([str(tmp_path / "ood")] * 2 + [str(tmp_path / "ood2")] * 2)


def test_a_root_under_a_hidden_folder_keeps_its_classes_and_order(tmp_path):
    """Only names inside the root count as hidden: a root under ~/.cache is not an OOD-only folder.
    Files are listed in the order of their relative paths, depth included."""
    root = make_classified(tmp_path / ".cache" / "pets", {"train": 2, "test": 1})
    _png(root / "test" / "cat" / "a" / "z.png", (0, 0, 0), 7)
    (root / "test" / "cat" / ".skip").mkdir()
    _png(root / "test" / "cat" / ".skip" / "y.png", (0, 0, 0), 8)  # in a hidden folder: skipped
    src = ImageFolder(str(root), image_size=8)
    assert src.classes == ["cat", "dog"] and src.num_classes == 2
    test = src.build("test")
    rel = [os.path.relpath(f, root / "test") for f in test.files]
    assert rel == sorted(rel) and "cat/a/z.png" in rel and not any(".skip" in r for r in rel)
    assert all(isinstance(f, str) for f in test.files)  # plain strings: 200k Path objects cost 0.25 GiB
