"""Every dataset of ood_bench_paper.datasets against a tiny fake copy of its on-disk format (no network)."""

from __future__ import annotations

import functools
import hashlib
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from logitnorm_bench.components import DataContext, DatasetSource
from logitnorm_bench.errors import DataMissingError
from ood_bench_paper import datasets as D

EXPECTED_NAMES = {"cifar10", "cifar100", "textures", "svhn", "lsun_c", "lsun_r", "isun", "places365",
                  "gaussian_noise", "uniform_noise", "digits", "digits_0to4", "digits_5to9", "photo_patches"}


def build(name, root, split="test", download=False, ctx_seed=0, **params):
    source = dict(_registered())[name](**params)
    return source, source.build(split, DataContext(root=Path(root), download=download, seed=ctx_seed))


@functools.lru_cache(maxsize=1)
def _registered():
    found = []
    D.register_datasets(register=lambda name, factory, description="": found.append((name, factory, description)))
    return tuple((n, f) for n, f, _ in found)


def _check_images(ds, shape, label=None):
    x, y = ds[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    if label is not None:
        assert y == label


# --------------------------------------------------------------------------------------------


def test_registers_every_name_with_a_description():
    found = []
    D.register_datasets(register=lambda name, factory, description="": found.append((name, description)))
    assert {n for n, _ in found} == EXPECTED_NAMES and len(found) == len(EXPECTED_NAMES)
    assert all(desc for _, desc in found)
    for name, factory in _registered():
        source = factory()
        assert isinstance(source, DatasetSource), name
        assert "test" in source.splits and len(source.mean) == len(source.std) == source.input_shape[0]


def test_download_constants_match_pytorch_ood():
    import pytorch_ood.dataset.img as pood

    assert D.TEXTURES_URL == pood.Textures.url
    assert D.LSUN_C_URL == pood.LSUNCrop.url and D.LSUN_R_URL == pood.LSUNResize.url


def test_places365_source_is_torchvisions_with_its_md5():
    """Issue 12 item 18: Places365 comes from MIT's server (no gdown), with torchvision's pinned md5."""
    from urllib.parse import urljoin

    from torchvision.datasets import Places365

    archive, md5 = Places365._IMAGES_META[("val", True)]
    assert D.PLACES365_URL == urljoin(Places365._BASE_URL, archive) and D.PLACES365_MD5 == md5
    assert D.ISUN_MD5 == "be77b0f2c26fda898afac5f99645ee70"  # edadaltocg/detectors' pinned md5


# --------------------------------------------------------------------------------------------
# CIFAR and SVHN: torchvision's formats; torchvision checks each file's md5, so that is patched out


def _write_cifar(root: Path, folder: str, files: dict[str, tuple[int, str]], meta: tuple[str, str, int]):
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    for fname, (n, key) in files.items():
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(range(n))}
        (root / folder / fname).write_bytes(pickle.dumps(entry))
    meta_name, meta_key, k = meta
    (root / folder / meta_name).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(k)]}))


@pytest.fixture
def no_md5(monkeypatch):
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn):
        monkeypatch.setattr(module, "check_integrity", lambda *a, **k: True)


def test_cifar10(tmp_path, no_md5):
    files = {f"data_batch_{i}": (3, "labels") for i in range(1, 6)} | {"test_batch": (4, "labels")}
    _write_cifar(tmp_path, "cifar-10-batches-py", files, ("batches.meta", "label_names", 10))
    source, train = build("cifar10", tmp_path, "train")
    _, test = build("cifar10", tmp_path, "test")
    assert (source.num_classes, source.input_shape, source.splits) == (10, (3, 32, 32), ("train", "test"))
    assert source.mean == (0.492, 0.482, 0.446) and source.std == (0.247, 0.244, 0.262)
    assert len(train) == 15 and len(test) == 4
    _check_images(test, (3, 32, 32), label=0)
    assert test[3][1] == 3


def test_cifar100(tmp_path, no_md5):
    _write_cifar(tmp_path, "cifar-100-python", {"train": (5, "fine_labels"), "test": (2, "fine_labels")},
                 ("meta", "fine_label_names", 100))
    source, train = build("cifar100", tmp_path, "train")
    assert source.num_classes == 100 and len(train) == 5
    _check_images(train, (3, 32, 32), label=0)


def test_cifar_missing(tmp_path):
    with pytest.raises(DataMissingError) as err:
        build("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "cifar10" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and "data_batch_1" in msg


def test_svhn(tmp_path, no_md5):
    (tmp_path / "svhn").mkdir()
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.arange(1, 7).reshape(6, 1)})
    source, ds = build("svhn", tmp_path)
    assert source.num_classes == 0 and source.splits == ("test",) and len(ds) == 6
    _check_images(ds, (3, 32, 32), label=-1)
    assert torch.allclose(ds[2][0], torch.from_numpy(x[..., 2]).permute(2, 0, 1).float() / 255)


def test_svhn_missing(tmp_path):
    with pytest.raises(DataMissingError, match=r"svhn: .*svhn/test_32x32\.mat.*ufldl\.stanford\.edu"):
        build("svhn", tmp_path)


# --------------------------------------------------------------------------------------------
# Image folders


FOLDERS = {  # name -> (folder under the root, image size written, nesting like the real archive)
    "textures": ("dtd/images", (45, 60), "banded/banded_0001.jpg"),
    "lsun_c": ("LSUN_C", (32, 32), "LSUN/test/{i}.jpg"),
    "lsun_r": ("LSUN_resize", (32, 32), "LSUN_resize/{i}.jpg"),
    "isun": ("iSUN", (32, 32), "iSUN_patches/{i}.jpeg"),
    "places365": ("places365/test_subset", (64, 48), "a/abbey/{i}.png"),
}


def _write_images(folder: Path, pattern: str, size, n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / pattern.replace("banded_0001", f"banded_{i:04d}").format(i=i)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return folder


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_image_folder(tmp_path, name):
    folder, size, pattern = FOLDERS[name]
    _write_images(tmp_path / folder, pattern, size)
    (tmp_path / folder / "._junk.jpg").write_bytes(b"macOS resource fork")  # skipped
    (tmp_path / folder / "README.txt").write_text("not an image")  # skipped
    Image.new("L", size[::-1]).save(tmp_path / folder / "gray.png")  # grayscale becomes RGB
    source, ds = build(name, tmp_path)
    assert source.splits == ("test",) and source.num_classes == 0 and len(ds) == 4
    assert ds.files == sorted(ds.files, key=lambda p: p.relative_to(tmp_path / folder).as_posix())
    for i in range(len(ds)):
        _check_images(torch.utils.data.Subset(ds, [i]), (3, 32, 32), label=-1)
    batch, labels = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 32, 32) and labels.tolist() == [-1] * 4


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_image_folder_missing_without_download(tmp_path, name):
    with pytest.raises(DataMissingError) as err:
        build(name, tmp_path, download=False)
    msg = str(err.value)
    source = dict(_registered())[name]()
    assert "\n" not in msg and msg.startswith(f"{name}: ") and str(tmp_path / FOLDERS[name][0]) in msg
    assert source.url in msg and source.layout in msg and "downloading is off" in msg


def test_textures_resize_and_center_crop(tmp_path):
    # A 2-wide vertical stripe in the middle survives Resize(32) + CenterCrop(32) at the center columns.
    img = np.zeros((64, 96, 3), dtype=np.uint8)
    img[:, 46:50] = 255
    (tmp_path / "dtd/images/x").mkdir(parents=True)
    Image.fromarray(img).save(tmp_path / "dtd/images/x/a.png")
    x, _ = build("textures", tmp_path)[1][0]
    assert x.shape == (3, 32, 32) and x[:, :, 15:17].min() > 0.5 and x[:, :, :10].max() < 0.1


# --------------------------------------------------------------------------------------------
# Downloads through a loopback server




def _tar_gz(path: Path, src: Path, arcname: str, mode: str = "w:gz") -> str:
    with tarfile.open(path, mode) as tf:
        tf.add(src, arcname=arcname)
    return hashlib.md5(path.read_bytes()).hexdigest()


# name -> (module constant prefix, archive, tar mode, image pattern, the archive's top folder, image
# size, where the images land); the layouts of ODIN's iSUN.tar.gz and MIT's Places365 val_256.tar
DOWNLOADS = {
    "isun": ("ISUN", "iSUN.tar.gz", "w:gz", "iSUN_patches/{i}.jpeg", "iSUN", (32, 32), "iSUN/iSUN/iSUN_patches"),
    "places365": ("PLACES365", "val_256.tar", "w", "Places365_val_{i:08d}.jpg", "val_256", (64, 48),
                  "places365/test_subset/val_256"),
}


def _serve_archive(name, tmp_path, serve, monkeypatch, n, md5=None):
    prefix, archive, mode, pattern, top, size, _ = DOWNLOADS[name]
    served, url = serve
    _write_images(tmp_path / "src", pattern, size, n=n)
    real_md5 = _tar_gz(served / archive, tmp_path / "src", top, mode)
    monkeypatch.setattr(D, f"{prefix}_URL", f"{url}/{archive}")
    monkeypatch.setattr(D, f"{prefix}_MD5", md5 or real_md5)
    monkeypatch.setitem(sys.modules, "gdown", None)  # importing gdown fails: only declared dependencies
    return tmp_path / "data", archive


@pytest.mark.parametrize("name", sorted(DOWNLOADS))
def test_download_end_to_end(tmp_path, serve, monkeypatch, name):
    """iSUN and Places365 download, md5-verified, with the declared dependencies (Places365 needed
    gdown before issue 12 item 18)."""
    root, archive = _serve_archive(name, tmp_path, serve, monkeypatch, n=5)
    _, ds = build(name, root, download=True)
    assert len(ds) == 5 and all(f.parent == root / DOWNLOADS[name][6] for f in ds.files)
    _check_images(ds, (3, 32, 32), label=-1)
    assert not list(root.rglob(archive))  # archive removed after extraction
    assert len(build(name, root, download=False)[1]) == 5  # and found again without downloading


@pytest.mark.parametrize("name", sorted(DOWNLOADS))
def test_download_bad_checksum(tmp_path, serve, monkeypatch, name):
    root, _ = _serve_archive(name, tmp_path, serve, monkeypatch, n=2, md5="0" * 32)
    with pytest.raises(DataMissingError, match=f"{name}: .*download failed: ChecksumError: .*md5 mismatch") as err:
        build(name, root, download=True)
    assert "\n" not in str(err.value)
    assert not list(root.rglob("*.*"))  # neither archive nor images left behind


def test_download_failure_names_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "ISUN_URL", "http://127.0.0.1:9/iSUN.tar.gz")  # discard port: refused
    with pytest.raises(DataMissingError, match=r"isun: no images under .*download failed: URLError"):
        build("isun", tmp_path, download=True)


def test_textures_download_through_pytorch_ood(tmp_path, serve, monkeypatch):
    from pytorch_ood.dataset.img import Textures

    served, url = serve
    _write_images(tmp_path / "src", "banded/banded_0001.jpg", (40, 40), n=3)
    md5 = _tar_gz(served / "dtd.tar.gz", tmp_path / "src", "dtd/images")
    monkeypatch.setattr(Textures, "url", f"{url}/dtd.tar.gz")
    monkeypatch.setattr(Textures, "tgz_md5", md5)
    _, ds = build("textures", tmp_path / "data", download=True)
    assert len(ds) == 3
    _check_images(ds, (3, 32, 32), label=-1)


# --------------------------------------------------------------------------------------------
# Noise


@pytest.mark.parametrize("name", ["gaussian_noise", "uniform_noise"])
def test_noise_is_a_function_of_seed_and_index(tmp_path, name):
    source, ds = build(name, tmp_path, n=7, ctx_seed=0)
    assert len(ds) == 7 and source.input_shape == (3, 32, 32) and source.splits == ("test", "val")
    _check_images(ds, (3, 32, 32), label=-1)
    assert torch.equal(ds[3][0], ds[3][0])  # same image at every access
    assert torch.equal(ds[3][0], build(name, tmp_path, n=7, ctx_seed=0)[1][3][0])  # and across builds
    assert not torch.equal(ds[3][0], ds[4][0])
    assert not torch.equal(ds[3][0], build(name, tmp_path, n=7, ctx_seed=1)[1][3][0])  # ctx.seed matters
    assert not torch.equal(ds[3][0], build(name, tmp_path, "val", n=7, ctx_seed=0)[1][3][0])  # val != test
    pinned = build(name, tmp_path, n=7, ctx_seed=5, seed=0)[1]  # the seed param overrides ctx.seed
    assert torch.equal(pinned[3][0], ds[3][0])
    with pytest.raises(IndexError):
        ds[7]


def test_noise_shapes_and_distribution(tmp_path):
    source, ds = build("gaussian_noise", tmp_path, n=3, shape=[1, 8, 8])  # suites give lists
    assert source.input_shape == (1, 8, 8) and len(source.mean) == 1
    _check_images(ds, (1, 8, 8), label=-1)
    big = build("gaussian_noise", tmp_path, n=1, shape=(3, 64, 64))[1][0][0]
    assert abs(float(big.mean()) - 0.5) < 0.02 and 0.2 < float(big.std()) < 0.26  # N(0.5, 0.25^2), clipped
    uni = build("uniform_noise", tmp_path, n=1, shape=(3, 64, 64))[1][0][0]
    assert abs(float(uni.mean()) - 0.5) < 0.02
    with pytest.raises(ValueError):
        D.GaussianNoise(shape=(8, 8))
    with pytest.raises(ValueError, match="no split"):
        build("uniform_noise", tmp_path, "train")


# --------------------------------------------------------------------------------------------
# Bundled data


def test_digits_split_is_fixed_and_disjoint(tmp_path):
    idx = D.digits_splits()
    train, val, test = (set(idx[s].tolist()) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797 and len(test) == 540 and len(val) == 126
    source, ds = build("digits", tmp_path, "train", ctx_seed=123)  # ctx.seed does not move the split
    assert (source.num_classes, source.input_shape, source.splits) == (10, (1, 8, 8), ("train", "val", "test"))
    assert len(ds) == len(train)
    _check_images(ds, (1, 8, 8))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(source.mean[0] - float(images.mean())) < 1e-6 and abs(source.std[0] - float(images.std())) < 1e-6
    assert sorted({ds[i][1] for i in range(len(ds))}) == list(range(10))


def test_digits_0to4_and_5to9(tmp_path):
    low, low_test = build("digits_0to4", tmp_path, "test")
    assert low.num_classes == 5 and {low_test[i][1] for i in range(len(low_test))} == set(range(5))
    high, high_test = build("digits_5to9", tmp_path, "test")
    assert high.num_classes == 0 and high.splits == ("test",) and high.input_shape == (1, 8, 8)
    assert {high_test[i][1] for i in range(len(high_test))} == {-1}
    _, full_test = build("digits", tmp_path, "test")
    labels = [full_test[i][1] for i in range(len(full_test))]
    assert len(low_test) + len(high_test) == len(full_test) == 540
    assert len(high_test) == sum(y >= 5 for y in labels)
    # the OOD digits are exactly the test split's 5-9, in order
    high_images = torch.stack([full_test[i][0] for i, y in enumerate(labels) if y >= 5])
    assert torch.equal(high_images, torch.stack([high_test[i][0] for i in range(len(high_test))]))
    assert len(build("digits_0to4", tmp_path, "val")[1]) + len(build("digits_0to4", tmp_path, "train")[1]) < 1797


def test_photo_patches(tmp_path):
    source, ds = build("photo_patches", tmp_path, n=20, ctx_seed=0)
    assert len(ds) == 20 and source.input_shape == (1, 8, 8)
    _check_images(ds, (1, 8, 8), label=-1)
    assert torch.equal(ds[5][0], build("photo_patches", tmp_path, n=20, ctx_seed=0)[1][5][0])
    assert not torch.equal(ds[5][0], build("photo_patches", tmp_path, n=20, ctx_seed=1)[1][5][0])
    assert len({tuple(ds[i][0].flatten().tolist()) for i in range(20)}) == 20
    _, rgb = build("photo_patches", tmp_path, n=3, shape=(3, 32, 32))
    _check_images(rgb, (3, 32, 32), label=-1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        D.PhotoPatches(shape=(2, 8, 8))
