"""CLI edges (issue 12 items 8 and 21): one line for every error, help texts, what a run says at the end."""

from __future__ import annotations

import errno
import re

import pytest
import yaml

from logitnorm_bench import cli
from logitnorm_bench.cli import main


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ood-bench: error: ")
    return lines[0]


def test_help_is_plain_text_and_every_positional_argument_is_explained(capsys):
    parser = cli.build_parser(["run"])
    assert "``" not in parser.format_help()
    for action in parser._subparsers._group_actions[0].choices.values():  # every subcommand
        for a in action._actions:
            if not a.option_strings and a.dest != "help":
                assert a.help, f"{action.prog}: argument {a.dest} has no help text"


def test_a_name_with_a_newline_stays_one_line(tmp_path, capsys, tiny_suite):
    doc = yaml.safe_load(tiny_suite(tmp_path / "t.yaml").read_text())
    doc["experiments"]["e"]["matrix"]["detector"] = ["ms\np\x1b[31m"]
    path = tmp_path / "nl.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["plan", str(path)]) == 2
    line = _one_line(capsys)
    assert "ms\\np\\x1b[31m" in line


def test_a_run_ends_with_where_to_look_and_a_noop_rerun_says_so(tmp_path, capsys, tiny_suite):
    suite = tiny_suite(tmp_path / "t.yaml", epochs=1, loss=["ce"], detector=["msp"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"next: ood-bench tables {results}   ood-bench report {results}" in out
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "nothing left to do, every cell has its record" in out and "0 record(s) ok" not in out


def test_a_disk_that_fills_mid_run_is_one_line_and_keeps_what_was_written(tmp_path, capsys, tiny_suite,
                                                                           monkeypatch):
    import logitnorm_bench.records as records

    suite = tiny_suite(tmp_path / "t.yaml", epochs=1)
    results = tmp_path / "r"
    real, calls = records.atomic_write_bytes, {"n": 0}

    def filling(path, data):
        calls["n"] += 1
        if path.name.endswith(".json") and path.parent.name == "records" and calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(records, "atomic_write_bytes", filling)
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("ood-bench: error: ") == 1
    line = err.strip().splitlines()[-1]
    assert "No space left on device" in line and "finished records are kept" in line
    assert list((results / "records").glob("*.json"))  # what was written before stays


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_report_out_under_a_file_is_one_line(tmp_path, capsys, tiny_suite, debug):
    suite = tiny_suite(tmp_path / "t.yaml", epochs=1, loss=["ce"], detector=["msp"])
    results = tmp_path / "r"
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu"]) == 0
    capsys.readouterr()
    (tmp_path / "afile").write_text("")
    assert main(["report", str(results), "--out", str(tmp_path / "afile" / "report"), *debug]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^ood-bench: error: .*afile.*Not a directory", err, re.M), err
    assert ("Traceback" in err) == bool(debug)


@pytest.mark.parametrize("threads,expected", [(None, 1), ("2", 2)])
def test_threads_auto_gives_a_small_model_one_thread_and_is_recorded(tmp_path, tiny_suite, threads, expected):
    import torch

    from logitnorm_bench.records import ResultsDir

    suite = tiny_suite(tmp_path / "t.yaml", epochs=1, loss=["ce"], detector=["msp"])
    results = tmp_path / "r"
    before = torch.get_num_threads()
    extra = ["--threads", threads] if threads else []
    assert main(["run", str(suite), "--results", str(results), "--device", "cpu", *extra]) == 0
    (rec,) = ResultsDir(results).records()
    assert rec["provenance"]["torch_threads"] == expected
    assert torch.get_num_threads() == before  # the process's own count is restored


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_threads_is_one_line(value, tmp_path, tiny_suite, capsys):
    suite = tiny_suite(tmp_path / "t.yaml")
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--threads", value]) == 2
    assert "--threads" in _one_line(capsys)
