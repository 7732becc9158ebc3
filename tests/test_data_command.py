"""``ood-bench data SUITE`` (issue 13 item 6): status, size and source of every dataset a suite needs;
``--download`` fetches them all; ``run`` names every missing set at once."""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import ood_bench_paper.datasets as D
from logitnorm_bench import hookimpl
from logitnorm_bench.cli import main
from logitnorm_bench.components import DataContext, DatasetSource
from logitnorm_bench.errors import DataMissingError
from logitnorm_bench.plugins import get_plugins


def _row(out: str, name: str) -> list[str]:
    line = next((line for line in out.splitlines() if line.split()[:1] == [name]), None)
    assert line, out
    return re.split(r"\s{2,}", line.strip())


def test_the_quick_suite_needs_nothing_to_download(capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^dataset\s+splits\s+status\s+size\s+source$", out, re.M)
    assert _row(out, "digits") == ["digits", "test,train", "present", "0 B", "scikit-learn (bundled, no download)"]
    assert _row(out, "gaussian_noise")[2:] == ["present", "0 B", "generated (no download)"]
    assert out.rstrip().endswith("every dataset is ready")


@pytest.fixture
def paper_like(tiny_suite, tmp_path):
    return tiny_suite(tmp_path / "paper_like.yaml", id_dataset=["cifar10"], arch=["wrn40_2"], arch_params=[{}],
                      ood_dataset=["svhn", "isun", "textures", "gaussian_noise"])


def test_every_missing_dataset_with_its_size_and_source(paper_like, tmp_path, capsys):
    data = tmp_path / "empty"
    assert main(["data", str(paper_like), "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"suite tiny: 5 dataset(s) under {data}" in out
    assert _row(out, "cifar10") == ["cifar10", "test,train", "missing", "162.6 MiB to fetch",
                                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert _row(out, "svhn") == ["svhn", "test", "missing", "61.3 MiB to fetch", D.SVHN_URL]
    assert _row(out, "isun")[2:] == ["missing", "?", D.ISUN_URL]
    assert _row(out, "textures")[2:] == ["missing", "?", D.TEXTURES_URL]
    assert _row(out, "gaussian_noise")[2] == "present"
    assert out.splitlines()[0].startswith("suite tiny") and f"cifar10: nothing under {data}" in out
    assert out.rstrip().endswith(f"4 of 5 not ready (cifar10, isun, svhn, textures); fetch them with: "
                                 f"ood-bench data {paper_like} --download")


def test_partial_and_checksum_bad(paper_like, tmp_path, capsys, monkeypatch):
    data = tmp_path / "d"
    cifar = data / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "batches.meta"):
        (cifar / name).write_bytes(b"not the real file")
    for i in range(3):
        path = data / "iSUN" / "iSUN_patches" / f"{i}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    (data / "svhn").mkdir()
    (data / "svhn" / "test_32x32.mat").write_bytes(b"truncated")
    assert main(["data", str(paper_like), "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert _row(out, "cifar10")[2] == "checksum bad" and "cifar10: md5 mismatch: data_batch_1, data_batch_2" in out
    assert _row(out, "svhn")[2:4] == ["checksum bad", "9 B"]
    assert _row(out, "isun")[2] == "partial" and f"isun: 3 of 8925 images under {data / 'iSUN'}" in out

    import torchvision.datasets.utils

    monkeypatch.setattr(torchvision.datasets.utils, "check_integrity", lambda *a, **k: True)
    assert main(["data", str(paper_like), "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert _row(out, "cifar10")[2] == "partial" and "cifar10: 4 of 7 files missing" in out
    assert _row(out, "svhn")[2] == "present"


def _isun_archive(served: Path, src: Path, n: int) -> str:
    for i in range(n):
        path = src / "iSUN_patches" / f"{i}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(path)
    archive = served / "iSUN.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="iSUN")
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_fetches_what_is_missing_and_verifies_it(tiny_suite, tmp_path, serve, monkeypatch, capsys):
    served, url = serve
    md5 = _isun_archive(served, tmp_path / "src", 4)
    monkeypatch.setattr(D, "ISUN_URL", f"{url}/iSUN.tar.gz")
    monkeypatch.setattr(D.Isun, "url", f"{url}/iSUN.tar.gz")
    monkeypatch.setattr(D.Isun, "expected_images", 4)
    suite = tiny_suite(tmp_path / "s.yaml", ood_dataset=["isun", "uniform_noise"])
    data = tmp_path / "data"

    monkeypatch.setattr(D, "ISUN_MD5", "0" * 32)  # a corrupt download is refused and deleted
    assert main(["data", str(suite), "--data", str(data), "--download"]) == 1
    out, err = capsys.readouterr()
    assert "isun: downloading from" in err and "ChecksumError" in err and "md5 mismatch" in err
    assert _row(out.split("suite tiny")[-1], "isun")[2] == "missing"

    monkeypatch.setattr(D, "ISUN_MD5", md5)
    assert main(["data", str(suite), "--data", str(data), "--download"]) == 0
    out = capsys.readouterr().out
    before, after = out.split("suite tiny")[1:]
    assert _row(before, "isun")[2] == "missing" and _row(after, "isun")[2] == "present"
    assert after.rstrip().endswith("every dataset is ready")
    assert len(list((data / "iSUN").rglob("*.jpeg"))) == 4 and not list((data / "iSUN").glob("*.tar.gz"))


def test_run_names_every_missing_dataset_at_once_and_this_command(paper_like, tmp_path, capsys):
    data = tmp_path / "nodata"
    assert main(["run", str(paper_like), "--results", str(tmp_path / "r"), "--data", str(data),
                 "--no-download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("tiny: ")  # the plan's line, then the one error line
    line = err[-1]
    assert line.startswith("ood-bench: error: cifar10, isun, svhn, textures: 4 dataset(s) of 5 missing under ")
    for name in ("cifar10: could not load", "isun: no images under", "svhn: could not load", "textures: no images"):
        assert name in line
    assert f"`ood-bench data {paper_like}` lists the status of each" in line
    assert f"`ood-bench data {paper_like} --download` fetches them all" in line


class HalfThere(DatasetSource):
    """A third-party dataset that knows nothing of ``status``: its train split is on disk, test is not."""

    num_classes, input_shape, splits = 2, (1, 2, 2), ("train", "test")

    def build(self, split, ctx):
        if not (Path(ctx.root) / f"{split}.pt").exists():
            raise DataMissingError(f"half_there: no {split}.pt under {ctx.root}")
        return TensorDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))


class HalfTherePlugin:
    @hookimpl
    def register_datasets(self, register):
        register("half_there", HalfThere)


def test_a_third_party_dataset_works_unchanged_with_the_default_status(tiny_suite, tmp_path, capsys, plugin_env):
    ctx = DataContext(root=tmp_path)
    assert HalfThere().status(("train", "test"), ctx).state == "missing"
    (tmp_path / "train.pt").write_bytes(b"")
    status = HalfThere().status(("train", "test"), ctx)
    assert (status.state, status.size, status.source) == ("partial", None, None)
    assert status.detail == f"test: half_there: no test.pt under {tmp_path}"
    (tmp_path / "test.pt").write_bytes(b"")
    assert HalfThere().status(("train", "test"), ctx).state == "present"

    get_plugins().add(HalfTherePlugin(), name="half")
    suite = tiny_suite(tmp_path / "s.yaml", ood_dataset=["half_there"])
    assert main(["data", str(suite), "--data", str(tmp_path)]) == 0
    assert _row(capsys.readouterr().out, "half_there") == ["half_there", "test", "present", "?", "-"]
