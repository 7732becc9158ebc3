"""A corpus of bad input: each one exits 2 with ONE line ``ood-bench: error: FILE:KEY: ...``, no traceback."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from logitnorm_bench import cli

MATRIX = {"id_dataset": ["digits"], "arch": ["digits_mlp"], "loss": ["ce"], "detector": ["msp"],
          "ood_dataset": ["gaussian_noise"], "seed": [0]}
GOOD = {"suite": "bad", "defaults": {"train": {"epochs": 1}}, "experiments": {"e1": {"matrix": MATRIX}}}


def doc(edit) -> str:
    """The good suite, edited by ``edit(d)`` (which changes d in place), as YAML text."""
    d = copy.deepcopy(GOOD)
    edit(d)
    return yaml.safe_dump(d, sort_keys=False)


def _matrix(key, value):
    def edit(d):
        d["experiments"]["e1"]["matrix"][key] = value
    return edit


def _train(key, value, where="e1"):
    def edit(d):
        if where == "defaults":
            d["defaults"]["train"][key] = value
        else:
            d["experiments"]["e1"]["train"] = {key: value}
    return edit


def _exp(key, value):
    def edit(d):
        d["experiments"]["e1"][key] = value
    return edit


def _top(key, value):
    def edit(d):
        d[key] = value
    return edit


def _drop(key):
    def edit(d):
        del d[key]
    return edit


GOOD_TEXT = doc(lambda d: None)

# A "billion laughs" in 700 bytes: ten levels of nine aliases each would expand to 9**10 strings.
ALIAS_BOMB = ("suite: bad\nversion: [&a0 [x, x, x, x, x, x, x, x, x], "
              + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)) + "]\n"
              + GOOD_TEXT.split("\n", 1)[1])

# (id, suite text, extra CLI args, substrings the error line must contain)
SUITE_CASES = [
    ("yaml-unclosed-bracket", "suite: bad\nexperiments:\n  e1:\n    matrix:\n      seed: [0, 1\n", [],
     ["malformed YAML", "line "]),
    ("yaml-tab-indent", "suite: bad\nexperiments:\n\te1:\n\t\tmatrix: {}\n", [], ["malformed YAML", "line 3", "'\\t'"]),
    ("yaml-duplicate-experiment",
     GOOD_TEXT + "  e1:\n    matrix: {seed: [5]}\n", [], ["duplicate key 'e1'", "line ", "first given at line"]),
    ("yaml-duplicate-train-key",
     "suite: bad\ndefaults:\n  train:\n    epochs: 1\n    lr: 0.1\n    epochs: 2\n" + GOOD_TEXT.split("\n", 4)[4],
     [], ["duplicate key 'epochs'", "line 6", "first given at line 4"]),
    ("top-level-list", "- suite\n- bad\n", [], ["got ['suite', 'bad']", "expected a mapping"]),
    ("top-level-empty", "", [], ["got None", "expected a mapping"]),
    ("missing-suite", doc(_drop("suite")), [], [":suite:", "got None", "suite's name"]),
    ("suite-name-not-string", doc(_top("suite", [1])), [], [":suite:", "got [1]"]),
    ("unknown-top-key", doc(lambda d: d.update(experiment=d.pop("experiments"))), [],
     [":experiment:", "unknown key 'experiment'", "did you mean 'experiments'"]),
    ("no-experiments", doc(_top("experiments", {})), [], [":experiments:", "got {}", "at least one"]),
    ("experiment-not-mapping", doc(lambda d: d["experiments"].update(e1=[1])), [],
     [":experiments.e1:", "got [1]", "expected a mapping"]),
    ("unknown-experiment-key", doc(_exp("matrx", {})), [], ["experiments.e1.matrx", "did you mean 'matrix'"]),
    ("unknown-defaults-key", doc(lambda d: d["defaults"].update(trian={})), [],
     ["defaults.trian", "did you mean 'train'"]),
    ("unknown-train-key", doc(_train("epoch", 3)), [], ["experiments.e1.train.epoch", "did you mean 'epochs'"]),
    ("unknown-train-key-defaults", doc(_train("momentun", 0.9, "defaults")), [],
     ["defaults.train.momentun", "did you mean 'momentum'"]),
    ("unknown-eval-key", doc(_exp("evaluation", {"ood_sample": 5})), [],
     ["experiments.e1.evaluation.ood_sample", "did you mean 'ood_samples'"]),
    ("epochs-string", doc(_train("epochs", "ten")), [], ["experiments.e1.train.epochs", "got 'ten'", "an integer"]),
    ("epochs-float", doc(_train("epochs", 1.5)), [], ["experiments.e1.train.epochs", "got 1.5", "an integer"]),
    ("epochs-bool", doc(_train("epochs", True)), [], ["experiments.e1.train.epochs", "got True", "an integer"]),
    ("epochs-zero", doc(_train("epochs", 0)), [], ["experiments.e1.train.epochs", "got 0", "positive integer"]),
    ("epochs-negative", doc(_train("epochs", -1, "defaults")), [],
     ["defaults.train.epochs", "got -1", "positive integer"]),
    ("batch-size-zero", doc(_train("batch_size", 0)), [], ["train.batch_size", "got 0", "positive integer"]),
    ("lr-negative", doc(_train("lr", -0.1)), [], ["train.lr", "got -0.1", "positive number"]),
    ("lr-not-number", doc(_train("lr", "fast")), [], ["train.lr", "got 'fast'", "a number"]),
    ("momentum-above-one", doc(_train("momentum", 1.5)), [], ["train.momentum", "got 1.5", "[0, 1)"]),
    ("schedule-unknown", doc(_train("schedule", "linear")), [], ["train.schedule", "'linear'", "multistep"]),
    ("milestones-bad", doc(_train("milestones", [80, "x"])), [], ["train.milestones", "'x'", "positive integer"]),
    ("fast-not-mapping", doc(_train("fast", [1])), [], ["train.fast", "got [1]", "mapping"]),
    ("monitor-ood-unknown", doc(_train("monitor_ood", "photo_patch", "defaults")), [],
     ["experiments.e1.train.monitor_ood", "'photo_patch'", "Did you mean 'photo_patches'"]),
    ("ood-samples-zero", doc(_exp("evaluation", {"ood_samples": 0})), [],
     ["experiments.e1.evaluation.ood_samples", "got 0", "positive integer"]),
    ("matrix-empty", doc(_exp("matrix", {})), [], ["experiments.e1.matrix:", "got {}", "non-empty mapping"]),
    ("matrix-missing", doc(lambda d: d["experiments"]["e1"].pop("matrix")), [],
     ["experiments.e1.matrix:", "got None", "non-empty mapping"]),
    ("matrix-value-not-list", doc(_matrix("seed", 0)), [], ["experiments.e1.matrix.seed", "got 0", "non-empty list"]),
    ("matrix-value-empty-list", doc(_matrix("loss", [])), [],
     ["experiments.e1.matrix.loss", "got []", "non-empty list"]),
    ("matrix-unknown-key", doc(_matrix("optimizer", ["sgd"])), [],
     ["experiments.e1.matrix.optimizer", "unknown key 'optimizer'"]),
    ("matrix-misspelt-key", doc(_matrix("detectors", ["msp"])), [],
     ["experiments.e1.matrix.detectors", "did you mean 'detector'"]),
    ("matrix-missing-required", doc(lambda d: d["experiments"]["e1"]["matrix"].pop("arch")), [],
     ["experiments.e1.matrix", "no 'arch'"]),
    ("unknown-id-dataset", doc(_matrix("id_dataset", ["digitz"])), [],
     ["experiments.e1.matrix.id_dataset", "'digitz'", "Did you mean 'digits'"]),
    ("unknown-ood-dataset", doc(_matrix("ood_dataset", ["svhnn"])), [],
     ["experiments.e1.matrix.ood_dataset", "'svhnn'", "Did you mean 'svhn'"]),
    ("unknown-arch", doc(_matrix("arch", ["digits_mpl"])), [],
     ["experiments.e1.matrix.arch", "'digits_mpl'", "Did you mean 'digits_mlp'"]),
    ("unknown-loss", doc(_matrix("loss", ["ce", "logitnrom"])), [],
     ["experiments.e1.matrix.loss", "'logitnrom'", "Did you mean 'logitnorm'"]),
    ("unknown-detector", doc(_matrix("detector", ["energyy"])), [],
     ["experiments.e1.matrix.detector", "'energyy'", "Did you mean 'energy'"]),
    ("component-name-not-string", doc(_matrix("loss", [3])), [], ["experiments.e1.matrix.loss", "got 3"]),
    ("unknown-loss-param", doc(lambda d: d["experiments"]["e1"]["matrix"].update(
        loss=["logitnorm"], loss_params=[{"taus": 0.04}])), [],
     ["experiments.e1.matrix.loss_params.taus", "unknown parameter 'taus'", "did you mean 'tau'"]),
    ("tau-zero", doc(lambda d: d["experiments"]["e1"]["matrix"].update(loss=["logitnorm"], loss_params=[{"tau": 0}])),
     [], ["experiments.e1.matrix.loss_params", "tau", "> 0", "got 0"]),
    ("tau-negative", doc(lambda d: d["experiments"]["e1"]["matrix"].update(
        loss=["logitnorm"], loss_params=[{"tau": -0.5}])), [], ["experiments.e1.matrix.loss_params", "-0.5"]),
    ("tau-string", doc(lambda d: d["experiments"]["e1"]["matrix"].update(
        loss=["logitnorm"], loss_params=[{"tau": "small"}])), [], ["experiments.e1.matrix.loss_params", "'small'"]),
    ("loss-params-not-mapping", doc(_matrix("loss_params", [0.04])), [],
     ["experiments.e1.matrix.loss_params", "got 0.04", "mapping"]),
    ("unknown-detector-param", doc(_matrix("detector_params", [{"temprature": 2}])), [],
     ["experiments.e1.matrix.detector_params.temprature", "did you mean 'temperature'"]),
    ("unknown-arch-param", doc(_matrix("arch_params", [{"widht": 2}])), [],
     ["experiments.e1.matrix.arch_params.widht", "did you mean 'width'"]),
    # The architecture is built (on the meta device) at plan time: values only its constructor or its
    # forward pass rejects fail before training (issue 12, item 6).
    ("arch-width-zero", doc(_matrix("arch_params", [{"width": 0}])), [],
     ["experiments.e1.matrix.arch_params", "digits_mlp with {'width': 0} cannot be built for digits", "width"]),
    ("arch-width-negative-among-good", doc(_matrix("arch_params", [{"width": 16}, {"width": -4}])), [],
     ["experiments.e1.matrix.arch_params", "{'width': -4}"]),
    ("arch-wrong-image-size", doc(_matrix("arch", ["wrn40_2"])), [],
     ["experiments.e1.matrix.arch:", "wrn40_2 cannot be built for digits", "1x8x8", "32x32"]),
    ("seed-float", doc(_matrix("seed", [0, 1.5])), [],
     ["experiments.e1.matrix.seed", "got 1.5", "non-negative integer"]),
    ("seed-string", doc(_matrix("seed", ["a"])), [], ["experiments.e1.matrix.seed", "got 'a'", "non-negative integer"]),
    ("seed-bool", doc(_matrix("seed", [True])), [], ["experiments.e1.matrix.seed", "got True", "non-negative integer"]),
    ("seed-negative", doc(_matrix("seed", [-1])), [], ["experiments.e1.matrix.seed", "got -1", "non-negative integer"]),
    ("ood-equals-id", doc(_matrix("ood_dataset", ["gaussian_noise", "digits"])), [],
     ["experiments.e1.matrix.ood_dataset", "'digits'", "different from the ID dataset"]),
    ("exclude-everything", doc(_exp("exclude", [{"loss": "ce"}])), [],
     ["experiments.e1.matrix", "no combination"]),
    ("exclude-not-list", doc(_exp("exclude", {"loss": "ce"})), [],
     ["experiments.e1.exclude", "list of mappings"]),
    ("exclude-key-not-in-matrix", doc(_exp("exclude", [{"weights": "x.pt"}])), [],
     ["experiments.e1.exclude[0].weights", "not a key of the matrix"]),
    ("include-unknown-key", doc(_exp("include", [{"loss": "ce", "colour": "red"}])), [],
     ["experiments.e1.include[0].colour", "unknown key 'colour'"]),
    ("include-incomplete-combination", doc(_exp("include", [{"loss": "logitnorm"}])), [],
     ["experiments.e1.matrix", "no 'id_dataset'"]),
    ("weights-not-string", doc(_matrix("weights", [3])), [], ["experiments.e1.matrix.weights", "got 3"]),
    # Non-finite numbers, out-of-range seeds, empty sizes (issue 12, item 6).
    ("lr-nan", doc(_train("lr", float("nan"))), [], ["experiments.e1.train.lr", "got nan", "a finite number"]),
    ("lr-nan-string", doc(_train("lr", "nan")), [], ["experiments.e1.train.lr", "got 'nan'", "a finite number"]),
    ("weight-decay-inf", doc(_train("weight_decay", float("inf"), "defaults")), [],
     ["defaults.train.weight_decay", "got inf", "a finite number"]),
    ("gamma-nan", doc(_train("gamma", float("nan"))), [], ["experiments.e1.train.gamma", "got nan", "finite"]),
    ("tau-nan", doc(lambda d: d["experiments"]["e1"]["matrix"].update(
        loss=["logitnorm"], loss_params=[{"tau": float("nan")}])), [],
     ["experiments.e1.matrix.loss_params.tau", "got nan", "a finite number"]),
    ("temperature-inf", doc(_matrix("detector_params", [{"temperature": float("inf")}])), [],
     ["experiments.e1.matrix.detector_params.temperature", "got inf", "a finite number"]),
    ("temperature-inf-in-include", doc(_exp("include", [{"detector": "msp", "detector_params": {"temperature": float("-inf")}}])),
     [], ["experiments.e1.matrix.detector_params.temperature", "got -inf", "a finite number"]),
    ("select-value-nan", doc(lambda d: d["experiments"]["e1"].update(
        select={"param": "loss_params.tau", "values": [0.04, float("nan")]})), [],
     ["experiments.e1.select.values", "got nan", "a finite number"]),
    ("seed-too-large", doc(_matrix("seed", [2 ** 32])), [],
     ["experiments.e1.matrix.seed", "got 4294967296", "below 2**32"]),
    ("sample-seed-negative", doc(_exp("evaluation", {"sample_seed": -1})), [],
     ["experiments.e1.evaluation.sample_seed", "got -1", "below 2**32"]),
    ("sample-seed-too-large", doc(_exp("evaluation", {"sample_seed": 2 ** 40})), [],
     ["experiments.e1.evaluation.sample_seed", "below 2**32"]),
    ("monitor-samples-zero", doc(_train("monitor_samples", 0)), [],
     ["experiments.e1.train.monitor_samples", "got 0", "positive integer"]),
    # Memory and time bombs fail fast (issue 12, item 7).
    ("yaml-alias-bomb", ALIAS_BOMB, [], ["YAML expands to more than", "aliases"]),
    ("yaml-recursive-alias", "suite: bad\nversion: &v [*v]\n", [], ["recursive alias", "line 2"]),
    ("yaml-deep-nesting", "suite: bad\nversion: " + "[" * 3000 + "]" * 3000 + "\n", [],
     ["nested more than 50 levels deep", "line 2"]),
    ("matrix-too-large", doc(lambda d: d["experiments"]["e1"]["matrix"].update(
        seed=list(range(1000)), arch_params=[{"width": w} for w in range(1, 1001)],
        loss_params=[{}] * 1000, detector_params=[{}] * 1000)), [],
     ["experiments.e1.matrix", "1,000,000,000,000 combinations", "at most 100,000"]),
    ("matrix-too-large-in-total", doc(lambda d: d["experiments"].update(
        {f"e{i}": {"matrix": {**MATRIX, "seed": list(range(30_000))}} for i in range(1, 5)})), [],
     ["experiments.e4.matrix", "at most 100,000"]),
    # extends (issue 10, item 5).
    ("extends-itself", "extends: my-suite.yaml\n" + GOOD_TEXT, [], [":extends:", "loops", "my-suite.yaml -> "]),
    ("extends-missing-file", "extends: base.yaml\n" + GOOD_TEXT, [], [":extends:", "base.yaml", "not found"]),
    ("extends-unknown-name", "extends: papr\n" + GOOD_TEXT, [], [":extends:", "unknown suite 'papr'",
                                                                 "Did you mean 'paper'"]),
    ("extends-not-string", "extends: [paper]\n" + GOOD_TEXT, [], [":extends:", "got ['paper']", "suite name or"]),
    ("inherit-without-extends", "inherit: [defaults]\n" + GOOD_TEXT, [], [":inherit:", "without extends"]),
    ("inherit-unknown-part", "extends: quick\ninherit: [recipe]\n" + GOOD_TEXT, [],
     [":inherit:", "got ['recipe']", "defaults, experiments"]),
    ("extends-drops-unknown-experiment", "extends: quick\nsuite: bad\nexperiments: {far: null}\n", [],
     [":experiments.far:", "null drops an inherited experiment", "far_ood"]),
    # --set on a good file: the file is named too.
    ("set-type-error", GOOD_TEXT, ["--set", "train.epochs=abc"],
     [":train.epochs: got 'abc'", "expected an integer", "from --set train.epochs='abc'"]),
    ("set-defaults-type-error", GOOD_TEXT, ["--set", "evaluation.ood_samples=[1]"],
     [":evaluation.ood_samples: got [1]", "from --set evaluation.ood_samples=[1]"]),
    ("set-section-mapping-bad", GOOD_TEXT, ["--set", "train={epochs: 0}"],
     [":train.epochs: got 0", "from --set train="]),
    ("set-section-scalar", GOOD_TEXT, ["--set", "train=3"], ["train", "--set train=3", "train.FIELD=VALUE"]),
    ("set-into-scalar", GOOD_TEXT, ["--set", "suite.name=x"], ["suite.name", "'suite' is not a mapping"]),
    ("set-matrix-bad-seed", GOOD_TEXT, ["--set", "experiments.e1.matrix.seed=[1.5]"],
     ["experiments.e1.matrix.seed", "got 1.5"]),
    ("set-new-experiment-incomplete", GOOD_TEXT, ["--set", "experiments.e2.matrix.seed=[0]"],
     ["experiments.e2.matrix", "no 'id_dataset'"]),
]

CLI_CASES = [
    # (id, args after the suite path, substrings); the suite file itself is good.
    ("set-without-equals", ["plan", "{suite}", "--set", "train.epochs"], ["--set 'train.epochs'", "KEY=VALUE"]),
    ("set-empty-key", ["plan", "{suite}", "--set", "=3"], ["--set '=3'", "dotted key"]),
    ("set-empty-part", ["plan", "{suite}", "--set", "train..epochs=3"], ["--set 'train..epochs=3'", "dotted key"]),
    ("set-bad-yaml", ["plan", "{suite}", "--set", "train.epochs=[1"], ["--set 'train.epochs=[1'", "not valid YAML"]),
    ("suite-not-found", ["plan", "{tmp}/nope.yaml"], ["suite file not found", "nope.yaml"]),
    ("suite-is-a-folder", ["plan", "{tmp}"], ["is a folder; expected a suite YAML file"]),
    ("run-suite-not-found", ["run", "{tmp}/nope.yaml"], ["suite file not found", "nope.yaml"]),
    ("run-device-cuda", ["run", "{suite}", "--device", "cuda:0", "--results", "{tmp}/res"],
     ["--device cuda:0", "CUDA is not available"]),
    ("run-device-garbage", ["run", "{suite}", "--device", "gpu7", "--results", "{tmp}/res"],
     ["--device 'gpu7'", "expected auto, cpu, cuda or cuda:N"]),
    ("run-results-under-a-file", ["run", "{suite}", "--device", "cpu", "--results", "{tmp}/afile/results"],
     ["--results", "afile/results", "not writable"]),
    ("run-results-is-a-file", ["run", "{suite}", "--device", "cpu", "--results", "{tmp}/afile"],
     ["--results", "afile", "not writable"]),
    ("run-ray-address-without-ray", ["run", "{suite}", "--device", "cpu", "--ray-address", "x:1",
                                     "--results", "{tmp}/res"], ["--ray-address needs --executor ray"]),
    ("suite-unknown-name", ["plan", "papr"], ["no file 'papr'", "unknown suite 'papr'", "Did you mean 'paper'",
                                             "Known: ", "quick"]),
    ("run-wait-nan", ["run", "{suite}", "--wait", "nan", "--results", "{tmp}/res"], ["--wait nan", "finite"]),
    ("run-wait-inf", ["run", "{suite}", "--wait", "inf", "--results", "{tmp}/res"], ["--wait inf", "finite"]),
    ("run-wait-negative", ["run", "{suite}", "--wait", "-1", "--results", "{tmp}/res"], ["--wait -1", "non-negative"]),
    ("run-bad-set", ["run", "{suite}", "--set", "train.lr=-1", "--results", "{tmp}/res"],
     [":train.lr: got -1", "positive number", "from --set train.lr=-1"]),
]


def test_suite_not_utf8(tmp_path, capsys):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"suite: x\n\xff\xfe\n")
    line = check_one_error_line(*run_cli(["plan", str(path)], capsys), ["not UTF-8", "0xff", "offset 9"])
    assert str(path) in line


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def check_one_error_line(code: int, out: str, err: str, expected: list[str]) -> str:
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("ood-bench: error: ")
    for piece in expected:
        assert piece in line, f"{piece!r} not in {line!r}"
    assert out == ""
    return line


@pytest.mark.parametrize("text,extra,expected", [c[1:] for c in SUITE_CASES], ids=[c[0] for c in SUITE_CASES])
def test_bad_suite(text, extra, expected, tmp_path, capsys):
    path = tmp_path / "my-suite.yaml"
    path.write_text(text)
    line = check_one_error_line(*run_cli(["plan", str(path), *extra], capsys), expected)
    assert f"ood-bench: error: {path}" in line  # the file comes first, then the key path


@pytest.mark.parametrize("args,expected", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_cli_argument(args, expected, tmp_path, capsys):
    suite = tmp_path / "good.yaml"
    suite.write_text(GOOD_TEXT)
    (tmp_path / "afile").write_text("a regular file\n")
    args = [a.format(suite=suite, tmp=tmp_path) for a in args]
    check_one_error_line(*run_cli(args, capsys), expected)
    assert not (tmp_path / "res").exists()  # nothing ran, no results folder


def test_corpus_is_large_enough():
    assert len(SUITE_CASES) + len(CLI_CASES) >= 25


def test_good_suite_is_good(tmp_path, capsys):
    """The corpus edits a suite that is itself valid (so each case fails for its own reason)."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_TEXT)
    code, out, err = run_cli(["plan", str(path)], capsys)
    assert code == 0 and err == ""
    assert "1 unique training runs, 1 evaluation cells" in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_and_keeps_exit_code_2(tmp_path, capsys, where):
    # Issue 12 item 8: --debug used to re-raise, turning bad input's exit 2 into 1; and it only
    # worked before the subcommand although the README showed `run ... --debug`.
    path = tmp_path / "my-suite.yaml"
    path.write_text(doc(_train("epochs", 0)))
    args = ["--debug", "plan", str(path)] if where == "before" else ["plan", str(path), "--debug"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("ood-bench: error: ") and "train.epochs" in err


def test_error_file_name_relative(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("rel.yaml").write_text(doc(_train("epochs", 0)))
    line = check_one_error_line(*run_cli(["plan", "rel.yaml"], capsys), ["epochs"])
    assert line.startswith("ood-bench: error: rel.yaml:experiments.e1.train.epochs: got 0")


BOMB_CASES = ("yaml-alias-bomb", "yaml-deep-nesting", "matrix-too-large")


@pytest.mark.parametrize("case", BOMB_CASES)
def test_bombs_fail_before_the_plugins_load(case, tmp_path):
    """A bomb is refused by the file's own checks, before any plugin imports torch: that is what keeps
    `ood-bench plan` on a 10**12-cell matrix at ~0.3 s and ~30 MB (docs/reliability.md)."""
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(next(c[1] for c in SUITE_CASES if c[0] == case))
    probe = ("import sys; from logitnorm_bench.cli import main; code = main(['plan', sys.argv[1]]); "
             "print(sorted(m for m in ('torch', 'ood_bench_paper') if m in sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and str(path) in done.stderr
