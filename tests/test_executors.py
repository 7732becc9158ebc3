"""Executors: ``local`` (sequential and ``--jobs N``) and ``ray`` give the same records; dead workers
are retried; a grid begun with one executor is finished by another.

CPU training is deterministic for a given number of torch threads, but not across thread counts
(a reduction split over two threads rounds differently in the last bits): every run here uses one
thread, so the leaderboards can be compared as text.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from logitnorm_bench import executors
from logitnorm_bench.cli import main
from logitnorm_bench.errors import ConfigError
from logitnorm_bench.executors import LocalExecutor
from logitnorm_bench.records import ResultsDir

N_RUNS, N_CELLS = 4, 8


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_suite) -> Path:
    path = tiny_suite(tmp_path_factory.mktemp("suite") / "tiny.yaml", seed=[0, 1])
    return path


@pytest.fixture
def one_thread():
    """The in-process (``--jobs 1``) runs use one torch thread, like every worker below."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(suite: Path, results: Path, *extra: str) -> int:
    return main(["run", str(suite), "--results", str(results), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory) -> str:
    """The leaderboard of the tiny suite under the sequential local executor, one thread."""
    results = tmp_path_factory.mktemp("reference")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli(suite, results) == 0
    finally:
        torch.set_num_threads(before)
    assert len(list(ResultsDir(results).records())) == N_CELLS
    return (results / "leaderboard.csv").read_text()


# ------------------------------------------------------------------------------------------
# Work functions for the crash tests: module level, so a spawned worker can import them.
# ------------------------------------------------------------------------------------------


def crash_once(marker: str, value: int, **_) -> dict:
    """Kills its worker process on the first attempt (no exception, no cleanup), then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("attempt 1\n")
        os._exit(1)
    with open(path, "a") as fh:
        fh.write("attempt 2\n")
    return {"run_id": f"r{value}", "trained": True, "records_ok": 1, "records_failed": 0, "error": None,
            "value": value, "pid": os.getpid()}


def always_crash(**_) -> dict:
    os._exit(1)


def crash_if_zero(value: int, **_) -> dict:
    if value == 0:
        time.sleep(0.5)  # run 1 is running too when the pool breaks
        os._exit(1)
    time.sleep(2)
    return echo(value)


def echo(value: int, **_) -> dict:
    return {"run_id": f"r{value}", "value": value, "records_ok": 1, "records_failed": 0, "error": None}


def sleepy(value: int, marker_dir: str, **_) -> dict:
    Path(marker_dir, f"started-{value}").write_text("")
    time.sleep(value)
    return {"run_id": f"r{value}", "value": value, "records_ok": 1, "records_failed": 0, "error": None}


def where(value: int, device: str, **_) -> dict:
    time.sleep(0.5)  # long enough for both workers to take runs
    return {"run_id": f"r{value}", "value": value, "device": device, "pid": os.getpid(),
            "records_ok": 1, "records_failed": 0, "error": None}


def raise_config_error(**_) -> dict:
    raise ConfigError("--device cuda:7: CUDA is not available on this machine")


def _payload(i: int, **kw) -> dict:
    return dict(run={"run_id": f"r{i}"}, cells=[{"cell_id": f"c{i}a"}, {"cell_id": f"c{i}b"}], value=i, **kw)


# ------------------------------------------------------------------------------------------
# local
# ------------------------------------------------------------------------------------------


def test_executors_are_registered_and_listed(capsys):
    assert main(["list", "executors"]) == 0
    out = capsys.readouterr().out
    assert "local" in out and "ray" in out and "ood-bench[ray]" in out


def test_local_rejects_bad_jobs():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="--jobs must be a positive integer"):
            LocalExecutor(jobs=bad)


def test_local_sequential_runs_in_order_with_devices_in_turn():
    exe = LocalExecutor(jobs=1, devices=["cpu"], fn=lambda **p: p)
    out = list(exe.run([{"value": i, "device": "auto"} for i in range(3)]))
    assert [(o["value"], o["device"]) for o in out] == [(0, "cpu"), (1, "cpu"), (2, "cpu")]


def test_local_pool_gives_each_worker_its_own_device():
    """Devices go to workers, not to runs: a GPU never gets a second run while another idles."""
    out = list(LocalExecutor(jobs=2, devices=["cpu", "meta"], fn=where).run(
        [_payload(i, device="auto") for i in range(6)]))
    assert sorted(o["value"] for o in out) == list(range(6))
    by_pid: dict[int, set] = {}
    for o in out:
        by_pid.setdefault(o["pid"], set()).add(o["device"])
    assert all(len(devs) == 1 for devs in by_pid.values())  # each worker keeps its device
    if len(by_pid) == 2:
        assert set().union(*by_pid.values()) == {"cpu", "meta"}


def test_local_bad_devices_entry_is_bad_input_before_anything_runs():
    with pytest.raises(ConfigError, match="gpu7"):
        list(LocalExecutor(jobs=2, devices=["cpu", "gpu7"], fn=echo).run([_payload(0)]))


@pytest.mark.slow
def test_local_jobs_2_gives_the_same_leaderboard(suite, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "_usable_cpus", lambda: 2)  # 2 workers -> 1 torch thread each
    results = tmp_path / "j2"
    assert run_cli(suite, results, "--jobs", "2") == 0
    assert f"trained {N_RUNS} run(s); {N_CELLS} record(s) ok, 0 failed" in capsys.readouterr().out
    assert (results / "leaderboard.csv").read_text() == reference


def _payloads_of(suite: Path, results: Path, *overrides: str) -> list[dict]:
    """The payloads ``run_plan`` hands an executor (all runs of the suite, fresh results folder)."""
    from dataclasses import asdict

    from logitnorm_bench.plan import make_plan
    from logitnorm_bench.plugins import get_plugins
    from logitnorm_bench.suite import load_suite

    plugins = get_plugins()
    plan = make_plan(load_suite(str(suite), list(overrides), plugins), plugins)
    return [dict(run=asdict(run), cells=[asdict(c) for c in plan.cells_of(run.run_id)],
                 results_root=str(results), data_root=str(results / "data"), device="cpu",
                 overwrite="only-missing", index=i + 1, total=len(plan.runs), download=False,
                 suite_name=plan.suite) for i, run in enumerate(plan.runs)]


@pytest.mark.slow
def test_two_workers_never_train_the_same_run(suite, tmp_path):
    """The per-run file lock: the second worker waits, then finds the weights and only evaluates."""
    p = _payloads_of(suite, tmp_path / "res", "experiments.e.matrix.seed=[0]",
                     "experiments.e.matrix.loss=[ce]")[0]
    out = list(LocalExecutor(jobs=2).run([p, dict(p)]))
    assert sorted(o["trained"] for o in out) == [False, True]
    assert all(o["records_ok"] == 2 and o["error"] is None for o in out)
    assert len(list(ResultsDir(tmp_path / "res").records())) == 2


@pytest.mark.slow
def test_local_pool_retries_a_run_whose_worker_died(tmp_path, capsys):
    payloads = [_payload(0, marker=str(tmp_path / "m0")), _payload(1, marker=str(tmp_path / "m1"))]
    out = list(LocalExecutor(jobs=2, fn=crash_once).run(payloads))
    assert sorted(o["value"] for o in out) == [0, 1]
    assert all(o["error"] is None for o in out)
    for i in (0, 1):
        assert (tmp_path / f"m{i}").read_text() == "attempt 1\nattempt 2\n"
    assert "a worker process died; retrying" in capsys.readouterr().err


@pytest.mark.slow
def test_local_pool_gives_up_after_max_retries_and_goes_on(tmp_path, capsys):
    """Run 0 kills its worker every time; run 1, killed with the pool each time, is not blamed."""
    out = list(LocalExecutor(jobs=2, max_retries=1, fn=crash_if_zero).run([_payload(0), _payload(1)]))
    by_value = {o.get("value", int(o["run_id"][1:])): o for o in out}
    assert sorted(by_value) == [0, 1]
    assert by_value[1]["error"] is None and by_value[1]["records_ok"] == 1
    lost = by_value[0]
    assert lost["run_id"] == "r0" and lost["records_failed"] == 2 and lost["records_ok"] == 0
    assert "WorkerCrashed" in lost["error"] and "died 2 time(s)" in lost["error"]
    assert "giving up on this run" in capsys.readouterr().err


def test_local_pool_raises_an_escaped_exception_in_the_driver():
    with pytest.raises(ConfigError, match="cuda:7"):
        list(LocalExecutor(jobs=2, fn=raise_config_error).run([_payload(0)]))


def test_local_pool_closed_early_stops_its_workers_at_once(tmp_path):
    """Ctrl-C or an error in the driver: the queued runs are dropped and the running ones end now
    (they resume from their checkpoints next time), instead of the pool finishing the whole grid."""
    gen = LocalExecutor(jobs=2, fn=sleepy).run(
        [_payload(v, marker_dir=str(tmp_path)) for v in (0, 60, 60, 60, 60)])
    assert next(gen)["value"] == 0
    t0 = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t0 < 15
    assert len(list(tmp_path.glob("started-*"))) <= 3


# ------------------------------------------------------------------------------------------
# ray
# ------------------------------------------------------------------------------------------


def test_ray_missing_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ood-bench\[ray\]'"):
        executors.RayExecutor()


def test_ray_placement_asks_for_gpus_only_for_cuda_devices():
    pytest.importorskip("ray")
    exe = executors.RayExecutor()
    assert exe._placement("cpu", cluster_gpus=4) == (0.0, "cpu")
    assert exe._placement("auto", cluster_gpus=0) == (0.0, "cpu")
    assert exe._placement("auto", cluster_gpus=2) == (1.0, "cuda")
    assert exe._placement("cuda:1", cluster_gpus=2) == (1.0, "cuda")  # Ray's CUDA_VISIBLE_DEVICES
    assert executors.RayExecutor(num_gpus=0.5)._placement("cuda", cluster_gpus=1) == (0.5, "cuda")
    opts = executors.RayExecutor(num_cpus=2, max_retries=5)._options(1.0)
    assert opts == {"num_cpus": 2, "num_gpus": 1.0, "max_retries": 5, "retry_exceptions": False}
    with pytest.raises(ConfigError, match="--devices is for the local executor"):
        executors.RayExecutor(devices=["cuda:0"])


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for all the Ray tests (starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             # the crash tests' work functions live in this module: workers must import it
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(Path(__file__).parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_same_leaderboard_and_leaves_its_caller_s_ray_running(
        ray_session, suite, reference, tmp_path, capsys):
    results = tmp_path / "ray"
    assert run_cli(suite, results, "--executor", "ray") == 0
    assert f"trained {N_RUNS} run(s); {N_CELLS} record(s) ok, 0 failed" in capsys.readouterr().out
    assert (results / "leaderboard.csv").read_text() == reference
    assert ray_session.is_initialized()  # it did not start this Ray, so it did not stop it
    # The Ray tasks log through the suite's own path: their epoch lines, tagged, in the run's log file.
    log = next((results / "logs").glob("*.log")).read_text()
    pids = {int(p) for p in re.findall(r"DEBUG\s+(\d+) logitnorm_bench\.progress \[\d/\d [^]]+\] epoch", log)}
    assert pids and os.getpid() not in pids


@pytest.mark.slow
def test_ray_finishes_a_grid_begun_with_local(ray_session, suite, reference, tmp_path, capsys, one_thread):
    results = tmp_path / "mixed"
    assert run_cli(suite, results, "--set", "experiments.e.matrix.seed=[0]") == 0
    assert "trained 2 run(s); 4 record(s) ok" in capsys.readouterr().out
    before = {r["run_id"] for r in ResultsDir(results).records()}
    assert run_cli(suite, results, "--executor", "ray") == 0
    out = capsys.readouterr()
    assert "to do: 2 run(s), 4 cell(s)" in out.err
    assert "trained 2 run(s); 4 record(s) ok, 0 failed" in out.out
    records = list(ResultsDir(results).records())
    assert len(records) == N_CELLS and {r["seed"] for r in records} == {0, 1}
    assert {r["run_id"] for r in records if r["seed"] == 0} == before
    assert (results / "leaderboard.csv").read_text() == reference


@pytest.mark.slow
def test_ray_retries_a_task_whose_worker_died(ray_session, tmp_path):
    exe = executors.RayExecutor(fn=crash_once, max_retries=2)
    out = list(exe.run([_payload(0, marker=str(tmp_path / "m0"))]))
    assert len(out) == 1 and out[0]["value"] == 0 and out[0]["error"] is None
    assert (tmp_path / "m0").read_text() == "attempt 1\nattempt 2\n"


@pytest.mark.slow
def test_ray_gives_up_after_max_retries_and_raises_escaped_exceptions(ray_session, capsys):
    out = list(executors.RayExecutor(fn=always_crash, max_retries=0).run([_payload(0)]))
    assert len(out) == 1 and out[0]["run_id"] == "r0" and out[0]["records_failed"] == 2
    assert "failed after 0 retries" in out[0]["error"]
    with pytest.raises(ConfigError, match="cuda:7"):
        list(executors.RayExecutor(fn=raise_config_error).run([_payload(0)]))
    # jobs bounds the tasks in flight; results come back as they finish
    out = list(executors.RayExecutor(fn=echo, jobs=1).run([_payload(i) for i in range(3)]))
    assert sorted(o["value"] for o in out) == [0, 1, 2]
