"""Watching a long run (issue 13): one logging path, live progress, the end-of-run summary."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from logitnorm_bench import hookimpl, logs
from logitnorm_bench.cli import main
from logitnorm_bench.components import Detector
from logitnorm_bench.plugins import get_plugins
from logitnorm_bench.progress import Monitor, RunReporter, fmt_time

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def suite(tiny_suite, tmp_path):
    """Two trainings (ce, logitnorm) of 6 epochs, 2 detectors x 2 OOD sets each."""
    return tiny_suite(tmp_path / "watch.yaml", epochs=6, ood_dataset=["uniform_noise", "photo_patches"])


def _log_file(results: Path) -> Path:
    files = sorted((results / "logs").glob("*.log"))
    assert len(files) == 1, files
    return files[0]


def test_piped_output_is_periodic_lines_and_the_log_file_has_every_epoch(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OOD_BENCH_PROGRESS_INTERVAL", "3600")  # no line is due by the clock: first and last only
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    # stderr (not a terminal): the first and the last epoch of each run, never one line per epoch
    for label in ("1/2 digits/digits_mlp/ce/seed0", "2/2 digits/digits_mlp/logitnorm(tau=0.04)/seed0"):
        lines = [line for line in err.splitlines() if line.startswith(f"[{label}] epoch ")]
        assert [line.split()[3] for line in lines] == ["1/6", "6/6"], err
        assert all(re.search(r"loss \d\.\d{4} acc \d\.\d{3} lr [\d.e-]+ .*\| suite: \d/2 run\(s\), \d/8 cell\(s\), "
                             r"ETA \d+m\d\ds", line) for line in lines), lines
        assert f"[{label}] done: ID accuracy " in err
    assert "suite: 2/2 run(s), 8/8 cell(s), ETA 0m00s" in err
    assert "\r" not in err and "%|" not in err  # no bars in a pipe
    # the log file: every epoch at DEBUG, tagged with its run, and the records
    text = _log_file(results).read_text()
    for epoch in range(1, 7):
        assert re.search(rf"DEBUG .* logitnorm_bench\.progress \[1/2 digits/digits_mlp/ce/seed0\] epoch {epoch}/6 "
                         r"loss \S+ acc \S+ lr \S+ \(\S+s/epoch, ETA \S+\)", text), epoch
    assert len(re.findall(r"DEBUG .* record [0-9a-f]{16}: (msp|energy) on (uniform_noise|photo_patches) \(test\): "
                          r"fpr95", text)) == 8
    assert "to do: 2 run(s), 8 cell(s)" in text and "trained 2 run(s); 8 record(s) ok" in text
    # the summary on stdout: the table, where things are
    assert "digits: mean over 2 OOD set(s) and 1 seed(s)" in out
    assert re.search(r"^  loss\s+detector\s+FPR95\s+AUROC\s+ID acc$", out, re.M)
    assert len(re.findall(r"^  (ce|logitnorm)\s+(msp|energy)\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d$", out, re.M)) == 4
    assert f"leaderboard: {results / 'leaderboard.csv'}" in out
    assert f"report:      ood-bench report {results}" in out
    assert f"log:         {_log_file(results).resolve()}" in out
    assert "failed cells" not in out


def test_verbose_shows_every_epoch_and_quiet_only_the_summary(suite, tmp_path, capsys):
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "-v",
                 "--set", "experiments.e.matrix.loss=[ce]"]) == 0
    err = capsys.readouterr().err
    assert all(f"[1/1 digits/digits_mlp/ce/seed0] epoch {e}/6 loss" in err for e in range(1, 7))
    assert re.search(r"record [0-9a-f]{16}: msp on uniform_noise \(test\)", err)

    assert main(["-q", "run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # nothing but warnings and errors, and there are none
    assert "trained 1 run(s); 4 record(s) ok, 0 failed" in out and "FPR95" in out and "log:" in out
    assert len(list((results / "logs").glob("*.log"))) == 2  # one per invocation, quiet or not
    assert "epoch 6/6" in sorted((results / "logs").glob("*.log"))[-1].read_text()  # the file has it all


class NanScores(Detector):
    def score_outputs(self, outputs, model):
        return torch.full((outputs.logits.shape[0],), float("nan"))


class NanDetectorPlugin:
    @hookimpl
    def register_detectors(self, register):
        register("nan_scores", NanScores)


def test_the_summary_groups_failed_cells_by_error_with_an_example_record(tiny_suite, tmp_path, capsys, plugin_env):
    get_plugins().add(NanDetectorPlugin(), name="nan")
    suite = tiny_suite(tmp_path / "s.yaml", epochs=2, loss=["ce"], detector=["msp", "nan_scores"],
                       ood_dataset=["uniform_noise", "photo_patches"])
    results = tmp_path / "r"
    assert main(["-q", "run", str(suite), "--results", str(results), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert "failed cells: 2 (of 4), by error:" in out
    m = re.search(r"^ +2 x (ValueError: detector returned \d+ non-finite scores.*)\n +e\.g\. (\S+)$", out, re.M)
    assert m, out
    example = json.loads(Path(m.group(2)).read_text())
    assert example["status"] == "failed" and example["error"] == m.group(1)
    assert re.search(r"^  ce\s+msp\s+\d", out, re.M) and "nan_scores" not in out.split("failed cells")[0]


def test_the_monitor_eta_comes_from_measured_epoch_times():
    m = Monitor([("a", "1/3 a", 10, 2, "k"), ("b", "2/3 b", 10, 2, "k"), ("c", "3/3 c", 0, 2, "k")],
                mode="off", jobs=1)
    assert m.eta() is None  # nothing measured yet
    m.handle({"e": "start", "run_id": "a", "tag": "1/3 a", "mode": "train", "epochs": 10})
    for epoch in (1, 2):
        m.handle({"e": "epoch", "run_id": "a", "epoch": epoch, "epochs": 10, "loss": 1, "acc": 0.5, "lr": 0.1,
                  "seconds": 3.0})
    assert m.eta() == pytest.approx((8 + 10) * 3.0)  # 8 epochs of a, 10 of b; c has given weights
    m.handle({"e": "record", "run_id": "a", "ok": True})
    assert (m.runs_done, m.cells_done, m.cells_total) == (0, 1, 6)
    m.summary({"run_id": "a", "records_ok": 2, "records_failed": 0})
    assert (m.runs_done, m.cells_done) == (1, 2) and m.eta() == pytest.approx(10 * 3.0)
    assert fmt_time(90061) == "1d01h" and fmt_time(3725) == "1h02m" and fmt_time(65) == "1m05s"


def test_lines_are_throttled_per_run(caplog):
    m = Monitor([("a", "1/1 a", 100, 1, "k")], mode="lines", interval=3600)
    reporter = RunReporter("1/1 a", "a", m.handle)
    reporter.started("train", 100)
    with caplog.at_level(logging.INFO, logger="logitnorm_bench.progress"):
        for epoch in range(1, 101):
            for b in range(1, 50):
                reporter.batch(b, 50)
            reporter.epoch({"epoch": epoch, "loss": 0.1, "train_acc": 0.9, "lr": 0.1, "seconds": 0.01}, 100)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "progress_line", False)]
    assert [line.split()[1] for line in lines] == ["1/100", "100/100"], lines
    assert all(getattr(r, "run", "") == "1/1 a" for r in caplog.records if r.name == "logitnorm_bench.progress"
               and r.levelno == logging.INFO)


def test_a_worker_process_logs_and_reports_through_the_channel(tmp_path):
    """What a --jobs worker or a Ray task does: its records reach this process's handlers, tagged."""
    events: list[dict] = []
    channel = logs.Channel(events.append)
    handler = logging.Handler()
    got: list[logging.LogRecord] = []
    handler.emit = got.append
    logger = logging.getLogger("logitnorm_bench")
    before = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        code = textwrap.dedent(f"""
            import logging
            from logitnorm_bench import logs
            observe = {{"channel": {channel.address!r}}}
            with logs.worker_logging(observe) as sink, logs.run_context("3/7 digits/mlp/ce/seed0"):
                logging.getLogger("logitnorm_bench.worker").debug("epoch %d done", 4)
                logging.getLogger("logitnorm_bench.worker").warning("careful")
                sink({{"e": "epoch", "run_id": "r3", "epoch": 4}})
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        deadline = time.monotonic() + 10
        while (len(got) < 2 or not events) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        channel.close()
        logger.removeHandler(handler)
        logger.setLevel(before)
    assert [(r.levelname, r.getMessage(), r.run) for r in got] == [
        ("DEBUG", "epoch 4 done", "3/7 digits/mlp/ce/seed0"), ("WARNING", "careful", "3/7 digits/mlp/ce/seed0")]
    assert got[0].process != os.getpid()
    assert events == [{"e": "epoch", "run_id": "r3", "epoch": 4}]
    assert not Path(channel.folder).exists()


def test_a_worker_that_cannot_reach_the_channel_logs_to_its_own_stderr_and_the_log_file(tmp_path):
    log_file = tmp_path / "inv.log"
    code = textwrap.dedent(f"""
        import logging
        from logitnorm_bench import logs
        observe = {{"channel": "/nonexistent/socket", "log_file": {str(log_file)!r}, "console_level": 20}}
        with logs.worker_logging(observe) as sink, logs.run_context("1/1 x"):
            assert sink is None
            logging.getLogger("logitnorm_bench.worker").info("on another node")
            logging.getLogger("logitnorm_bench.worker").debug("only in the file")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "[1/1 x] on another node\n"
    text = log_file.read_text()
    assert "[1/1 x] on another node" in text and "[1/1 x] only in the file" in text


@pytest.mark.slow  # two spawned worker processes (torch each): ~20 s on 2 busy cores
def test_jobs_workers_log_through_the_same_path(suite, tmp_path, capsys):
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "[1/2 digits/digits_mlp/ce/seed0] done: ID accuracy" in err
    assert "[2/2 digits/digits_mlp/logitnorm(tau=0.04)/seed0] done: ID accuracy" in err
    text = _log_file(results).read_text()
    pids = {int(m.group(1)) for m in re.finditer(r"DEBUG\s+(\d+) logitnorm_bench\.progress \[\d/2 [^]]+\] epoch 6/6",
                                                 text)}
    assert len(pids) == 2 and os.getpid() not in pids  # each epoch line came from its worker, through the channel


@pytest.mark.slow  # a pty and a fresh process: ~10 s
def test_a_terminal_shows_progress_bars(suite, tmp_path):
    """``ood-bench run`` on a terminal: tqdm bars for the suite and each run, log lines above them."""
    import fcntl
    import termios

    results = tmp_path / "r"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("TERM",)}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-m", "logitnorm_bench.cli", "run", str(suite), "--results", str(results),
                             "--device", "cpu", "--set", "train.epochs=20"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen[-3000:]
    assert re.search(r"suite +\d+%\|.*\| \d/2 runs \[\d\d:\d\d\], \d+/8 cells, ETA ", screen), screen[-3000:]
    assert re.search(r"\[\d/2 digits/digits_mlp/\S+/seed0\] train \S* *\d+/20, loss \d\.\d{4} acc \d\.\d{3} lr ", screen)
    assert re.search(r"\[\d/2 digits/digits_mlp/\S+/seed0\] eval \S* *\d/4, cells", screen)
    assert "\r" in screen and "done: ID accuracy" in screen  # bars redrawn in place; log lines above them
    assert "epoch 20/20 loss" not in screen  # the periodic lines are for pipes, not terminals
    assert "trained 2 run(s); 8 record(s) ok, 0 failed" in screen
