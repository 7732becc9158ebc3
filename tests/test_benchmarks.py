"""The benchmark scripts' tiny modes run and print what docs/performance.md quotes.

Only the output format is checked, never the speed targets (shared CI machines make timings flaky).
Each script's ``main`` is imported and run in this process (one torch import for all of them), with
one thread so a busy machine's thread contention cannot stretch the tiny runs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
FLOAT = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tiny(name: str, capsys, *extra: str) -> tuple[int, str]:
    threads = torch.get_num_threads()
    try:
        code = _load(name).main(["--tiny", "--threads", "1", *extra])
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().out


def check_common(out: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith("# ")
    assert re.match(r"date \d{4}-\d{2}-\d{2} \| torch .* \| device .* \| torch threads 1 \| cpu cores \d+ \| "
                    rf"load average at start ({FLOAT} ){{2}}{FLOAT}", lines[1]), lines[1]
    assert "TINY" in lines[1]
    assert re.search(r"^\| .* \|$", out, re.M) and re.search(r"^\|-+\|", out, re.M), "no markdown table"
    assert re.search(rf"^load average at end ({FLOAT} ){{2}}{FLOAT}$", out, re.M)


def targets(out: str) -> dict[str, float]:
    found = {}
    for m in re.finditer(rf"^target (.+?): ({FLOAT})(?:x| GiB)? \(want (<=|>=) {FLOAT}.*\) -> (MET|MISSED)$",
                         out, re.M):
        found[m.group(1)] = float(m.group(2))
    return found


def table_rows(out: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first_cell):
            rows.append(cells)
    return rows


def test_eval_detectors_tiny(capsys):
    code, out = run_tiny("eval_detectors", capsys)
    assert code == 0
    check_common(out)
    t = targets(out)
    assert set(t) == {"harness / floor", "separately / harness"} and all(v > 0 for v in t.values())
    for row in ("plain forward", "pytorch-ood odin", "floor: one forward", "harness Evaluator.evaluate",
                "harness score_set gradnorm"):
        assert table_rows(out, row), row
    # the harness's scores are pytorch-ood's (sign flipped, gradnorm x K)
    for det in ("msp", "energy", "odin", "gradnorm"):
        (row,) = [r for r in table_rows(out, det) if len(r) == 2]
        assert float(row[1]) <= 1e-5, row


def test_gradnorm_tiny(capsys):
    code, out = run_tiny("gradnorm", capsys)
    assert code == 0
    check_common(out)
    t = targets(out)
    assert t["max relative difference vs the loop"] <= 1e-5
    assert t["max relative difference vs pytorch-ood x K"] <= 1e-5
    assert t["closed form speed-up vs the per-sample loop"] > 0
    assert table_rows(out, "OpenOOD per-sample backward loop")


def test_train_overhead_tiny(capsys):
    code, out = run_tiny("train_overhead", capsys)
    assert code == 0
    check_common(out)
    assert "harness / bare per epoch (median of rounds)" in targets(out)
    # the bare loop and the harness do the same computation (same draws, same ops)
    m = re.search(rf"max \|weight difference\| harness vs bare after the same steps: ({FLOAT})", out)
    assert m and float(m.group(1)) == 0.0


def test_memory_eval_tiny(capsys):
    code, out = run_tiny("memory_eval", capsys)
    assert code == 0
    check_common(out)
    assert 0 < targets(out)["peak RSS"] < 64
    assert table_rows(out, "cells evaluated")[0][1] == "8/8"


def test_gpu_train_tiny(capsys):
    code, out = run_tiny("gpu_train", capsys)
    assert code == 0
    check_common(out)
    rows = {r[0]: r for r in table_rows(out, "plain") + table_rows(out, "+")}
    assert set(rows) == {"plain", "+channels_last", "+bf16", "+gpu_data"}
    assert all(float(r[1]) > 0 for r in rows.values())  # images/s
    assert re.search(rf"^fast path \(last row\) vs plain: {FLOAT}x images/s$", out, re.M)


def test_fast_path_check_tiny(capsys):
    code, out = run_tiny("fast_path_check", capsys)
    check_common(out)
    assert re.search(r"^checks passed: (\d+)/\1$", out, re.M), out
    assert code == 0


@pytest.mark.parametrize("padding,hflip", [(4, True), (0, True), (3, False)])
def test_augment_equals_per_image_reference(padding, hflip):
    fpc = _load("fast_path_check")
    from logitnorm_bench.train import augment

    x = torch.rand(9, 3, 32, 32)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    got = augment(x, padding, hflip, gen)
    replay = torch.Generator()
    replay.set_state(state)
    assert torch.equal(got, fpc.reference_augment(x, padding, *fpc.draws(replay, 9, padding, hflip)))


@pytest.mark.slow
def test_thread_contention_tiny(capsys):
    code, out = run_tiny("thread_contention", capsys, "--busy", "1")
    assert code == 0
    check_common(out)
    assert set(targets(out)) == {"auto busy / auto idle", "auto idle / old default idle"}
    assert len(table_rows(out, "idle")) == 1 and len(table_rows(out, "1 busy")) == 1


def test_thread_sensitivity_tiny(capsys):
    code, out = run_tiny("thread_sensitivity", capsys)
    assert code == 0
    check_common(out)
    assert re.search(r"^cpu model .+$", out, re.M)
    for metric in ("fpr95", "auroc", "id_acc", "logit_norm_id"):
        assert table_rows(out, metric), metric
    rows = table_rows(out, "digits godin seed")  # GODIN's epsilon at 1 and at 2 threads
    assert len(rows) == 2 and all(r[1] in ("0.0", "0", "0.0025", "0.005", "0.01", "0.02", "0.04", "0.08") for r in rows)


def test_logitnorm_early_steps_tiny(capsys):
    code, out = run_tiny("logitnorm_early_steps", capsys)
    assert code == 0
    check_common(out)
    assert [r[1] for r in table_rows(out, "ce")] == ["1", "2", "3", "4"]
    assert [r[1] for r in table_rows(out, "logitnorm")] == ["1", "2", "3", "4"]


def test_readme_results_regenerates_the_section(tmp_path, capsys, tiny_suite):
    """Every number of the README's generated section comes from the records; --write replaces only it."""
    from logitnorm_bench.cli import main

    suite = tiny_suite(tmp_path / "quick.yaml", name="quick", epochs=1, arch_params=[{"width": 16}],
                       id_dataset=["digits", "digits_0to4"], loss=["ce", "logitnorm", "logitpenalty", "godin"],
                       detector=["msp", "odin", "energy", "gradnorm"],
                       ood_dataset=["photo_patches", "uniform_noise", "digits_5to9"], ood_samples=100)
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results)]) == 0
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## What the quick suite says\n\nold numbers\n\n## Metric conventions\n\nkept\n")
    rr = _load("readme_results")
    capsys.readouterr()
    assert rr.main([str(results), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith("## Metric conventions\n\nkept\n")
    assert re.search(r"made on \d{4}-\d{2}-\d{2} .* git commit `[0-9a-f]{12}`.* torch .* using \d+ torch thread\(s\), "
                     r"on CPU .+ \(\d+ trainings", text.replace("\n", " "))
    assert "| msp |" in text and "**Far OOD with MSP:**" in text and rr.END in text
    assert rr.main([str(results), "--write", str(readme)]) == 0 and readme.read_text() == text  # idempotent
