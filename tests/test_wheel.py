"""The wheel, installed as a user would (not editable), runs the bundled suites by name from any folder.

Slow (a build, a venv and a short run: about a minute).  The venv sees the system's packages (torch
and the rest are not reinstalled), and so perhaps another editable install of ood-bench: every check
runs the venv's own ``ood-bench`` and asserts that the code it imports is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# What the wheel is built from: the packaged folders and what pyproject.toml reads.
SOURCES = ("pyproject.toml", "README.md", "logitnorm_bench", "plugins", "suites")


def sh(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the built wheel, the venv holding it)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a clean copy: no stale build/ folder can slip old files into the wheel
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", src, cwd=root)
    (wheel,) = (root / "dist").glob("ood_bench-*.whl")
    venv = root / "venv"
    sh(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=root)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel, cwd=root)
    return wheel, venv


def test_the_wheel_holds_every_module_and_suite(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"logitnorm_bench/{p.relative_to(REPO / 'logitnorm_bench')}"
                for p in (REPO / "logitnorm_bench").rglob("*") if p.suffix in (".py", ".yaml")}
    expected |= {f"ood_bench_paper/{p.name}" for p in (REPO / "plugins" / "ood_bench_paper").glob("*.py")}
    expected |= {f"ood_bench_suites/{p.name}" for p in (REPO / "suites").iterdir() if p.suffix in (".py", ".yaml")}
    assert expected - names == set()
    assert {"ood_bench_suites/paper.yaml", "ood_bench_suites/quick.yaml"} <= names


def test_suites_run_by_name_from_an_empty_folder(installed, tmp_path):
    _, venv = installed
    work = tmp_path / "empty"
    work.mkdir()
    bench = venv / "bin" / "ood-bench"
    where = sh(venv / "bin" / "python", "-I", "-c",
               "import json, logitnorm_bench, ood_bench_suites; "
               "print(json.dumps([logitnorm_bench.__file__, ood_bench_suites.__file__]))", cwd=work)
    for module_file in json.loads(where.stdout):
        assert Path(module_file).resolve().is_relative_to(venv.resolve()), module_file  # the wheel's code

    listed = sh(bench, "list", "suites", cwd=work).stdout
    assert all(name in listed for name in ("paper", "paper_official_tau", "quick", "tau_ablation"))
    plan = sh(bench, "plan", "paper", cwd=work).stdout
    assert plan.startswith("suite paper: 50 unique training runs")
    plan = sh(bench, "plan", "tau_ablation", cwd=work).stdout  # extends: paper.yaml, inside the wheel
    assert plan.startswith("suite tau_ablation: 35 unique training runs")

    # The default suite, made short: 1 epoch, seed 0 only.
    short = ["--set", "train.epochs=1", "--set", "evaluation.ood_samples=100"]
    for exp in ("far_ood", "near_ood", "godin_score"):
        short += ["--set", f"experiments.{exp}.matrix.seed=[0]"]
    short += ["--set", "experiments.godin_score.include=[]"]
    out = sh(bench, "run", *short, "--device", "cpu", cwd=work).stdout
    assert out.startswith("quick: trained 8 run(s)") and " 0 failed" in out
    records = list((work / "results" / "records").glob("*.json"))
    assert records and all(json.loads(p.read_text())["status"] == "ok" for p in records)
    assert (work / "results" / "leaderboard.csv").is_file()
