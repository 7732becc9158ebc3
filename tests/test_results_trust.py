"""Results that cannot lie (issue 12, items 1-5): only a cell's own, valid record counts; readers and
writers of a results folder take its lock; a killed write leaves nothing behind; SIGTERM is Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logitnorm_bench.cli import main
from logitnorm_bench.records import ResultsLock, atomic_write_json


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_suite):
    """A finished tiny run (2 losses x 2 detectors x 1 OOD set) and its leaderboard, made once."""
    folder = tmp_path_factory.mktemp("finished")
    suite = tiny_suite(folder / "tiny.yaml", epochs=2)
    results = folder / "results"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    return suite, results, (results / "leaderboard.csv").read_bytes()


@pytest.fixture
def copy_of(finished, tmp_path):
    import shutil

    suite, results, board = finished
    target = tmp_path / "results"
    shutil.copytree(results, target)
    return suite, target, board


def _records(results: Path) -> list[Path]:
    return sorted((results / "records").glob("*.json"))


def _rerun(suite, results, capsys) -> tuple[int, str]:
    code = main(["run", str(suite), "--results", str(results), "--device", "cpu"])
    return code, capsys.readouterr().err


# -- item 1: another cell's record -------------------------------------------------------------

def test_a_record_filed_under_another_cell_is_set_aside_and_recomputed(copy_of, capsys):
    suite, results, board = copy_of
    a, b = _records(results)[:2]
    b.write_bytes(a.read_bytes())  # b's file now holds a's record: before the fix, b counted as done
    code, err = _rerun(suite, results, capsys)
    assert code == 0
    assert f"record {b.name} holds the record of another cell" in err
    assert (results / "records" / (b.name + ".invalid")).exists()
    assert json.loads(b.read_text())["cell_id"] == b.stem  # recomputed
    assert (results / "leaderboard.csv").read_bytes() == board


def test_a_record_of_another_training_run_is_set_aside(copy_of, capsys):
    suite, results, board = copy_of
    path = _records(results)[0]
    rec = json.loads(path.read_text())
    rec["run_id"] = "0" * 16  # parses, right cell id, but not made by the plan's training run
    atomic_write_json(path, rec)
    code, err = _rerun(suite, results, capsys)
    assert code == 0 and "was made by another training run" in err
    assert (results / "leaderboard.csv").read_bytes() == board


# -- item 2: records that parse but lie --------------------------------------------------------

LIES = {
    "wrong-fields": lambda rec: {"cell_id": rec["cell_id"], "schema": 1, "colour": "red"},
    "older-schema": lambda rec: dict(rec, schema=0),
    "newer-schema": lambda rec: dict(rec, schema=99),
    "no-schema": lambda rec: {k: v for k, v in rec.items() if k != "schema"},
    "metric-a-string": lambda rec: dict(rec, metrics=dict(rec["metrics"], fpr95="low")),
    "metric-nan": lambda rec: dict(rec, metrics=dict(rec["metrics"], auroc=float("nan"))),
    "percent-out-of-range": lambda rec: dict(rec, metrics=dict(rec["metrics"], fpr95=7.0)),
    "ok-without-metrics": lambda rec: {k: v for k, v in rec.items() if k != "metrics"},
    "status-unknown": lambda rec: dict(rec, status="great"),
    "a-list": lambda rec: [rec],
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_record_that_parses_but_lies_never_breaks_a_command_and_is_recomputed(lie, copy_of, capsys):
    suite, results, board = copy_of
    path = _records(results)[0]
    path.write_text(json.dumps(LIES[lie](json.loads(path.read_text()))))
    # Readers leave it out with one warning, no traceback.
    for args in (["leaderboard", str(results)], ["tables", str(results)]):
        assert main(args) == 0, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"record {path.name}" in err
    # A run sets it aside and computes the cell again: the leaderboard is whole again.
    code, err = _rerun(suite, results, capsys)
    assert code == 0 and f"record {path.name}" in err and "computing that cell again" in err
    assert (results / "leaderboard.csv").read_bytes() == board


# -- item 3: locks -----------------------------------------------------------------------------

def test_leaderboard_refuses_while_a_run_holds_the_folder_and_waits_with_wait(copy_of, capsys):
    _, results, board = copy_of
    (results / "leaderboard.csv").write_text("stale")
    with ResultsLock(results):
        assert main(["leaderboard", str(results)]) == 2
    err = capsys.readouterr().err
    assert "in use by another ood-bench run" in err and "--wait" in err and err.count("\n") == 1
    assert (results / "leaderboard.csv").read_text() == "stale"  # untouched while the run held it
    assert main(["leaderboard", str(results), "--wait", "5"]) == 0
    assert (results / "leaderboard.csv").read_bytes() == board


def test_shared_readers_coexist_and_exclude_a_writer(tmp_path):
    with ResultsLock(tmp_path, shared=True), ResultsLock(tmp_path, shared=True):
        with pytest.raises(Exception, match="in use by another ood-bench run"):
            with ResultsLock(tmp_path):
                pass


def test_leaderboard_on_a_folder_without_records_is_an_error_not_an_empty_file(tmp_path, capsys):
    (tmp_path / "leaderboard.csv").write_text("a full leaderboard\n")
    assert main(["leaderboard", str(tmp_path)]) == 2
    assert "no records/ in it" in capsys.readouterr().err
    assert (tmp_path / "leaderboard.csv").read_text() == "a full leaderboard\n"


def test_a_symlinked_lock_file_is_one_line_not_a_traceback(tmp_path, capsys, tiny_suite):
    results = tmp_path / "r"
    results.mkdir()
    (results / ".ood-bench.lock").symlink_to(tmp_path / "elsewhere")
    suite = tiny_suite(tmp_path / "t.yaml")
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and err.count("\n") == 1
    assert not (tmp_path / "elsewhere").exists()


# -- item 4: temporary files and permissions ----------------------------------------------------

def test_a_killed_writes_temp_files_are_removed_by_the_next_run(copy_of, capsys):
    suite, results, board = copy_of
    run_dir = next(p for p in (results / "runs").iterdir() if p.is_dir())
    leftovers = [results / "records" / ".abc.json.x1y2z3.tmp", run_dir / ".checkpoint.pt.q9w8e7.tmp",
                 results / ".leaderboard.csv.r5t6y7.tmp"]
    for p in leftovers:
        p.write_bytes(b"\0" * 4096)
    code, err = _rerun(suite, results, capsys)
    assert code == 0 and "removed 3 temporary file(s)" in err
    assert not any(p.exists() for p in leftovers)
    assert not list(results.rglob("*.tmp"))


def test_files_are_created_with_the_umask_not_0600(finished):
    _, results, _ = finished
    mask = os.umask(0o022)
    os.umask(mask)
    for path in [*_records(results)[:2], results / "leaderboard.csv", *results.glob("runs/*/model.pt")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# -- item 5: SIGTERM ---------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_long_run(tmp_path, tiny_suite, *extra) -> tuple[subprocess.Popen, Path]:
    suite = tiny_suite(tmp_path / "long.yaml", epochs=400, loss=["ce", "logitnorm"], seed=[0, 1])
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "logitnorm_bench.cli", "run", str(suite), "--results",
                             str(results), "--device", "cpu", *extra], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((results / "runs").glob("*/checkpoint.pt")):  # training under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.2)
    return proc, results


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_is_handled_like_ctrl_c_and_workers_stop_with_the_parent(tmp_path, tiny_suite):
    proc, results = _start_long_run(tmp_path, tiny_suite, "--jobs", "2")
    workers = _children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); finished records are kept" in err and "Traceback" not in err
    assert (results / "leaderboard.csv").exists()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_sigkilled_parent(tmp_path, tiny_suite):
    proc, results = _start_long_run(tmp_path, tiny_suite, "--jobs", "2")
    workers = _children(proc.pid)
    assert workers
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "an orphaned worker kept running"
