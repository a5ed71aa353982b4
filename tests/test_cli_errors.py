"""Every CLI error is one line on stderr with a non-zero exit and no traceback (issue 13).

Bad values of each numeric and path option of every subcommand are run through
``zoo.cli.main`` in-process: the option types reject them at parse time, so no model is built.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoo
from zoo import cli, cli_errors
from zoo.cli_errors import (
    device_option,
    image_size,
    non_negative_float,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    pretrained_option,
    probability,
    run_command,
)
from zoo.deploy import export as export_cli
from zoo.list_figures import MEASURED
from zoo.train import validate as validate_cli

ROOT = Path(__file__).resolve().parents[1]

TRAIN = ["mobilenet_v1_x0_25", "--data", "{DIR}", "--epochs", "1", "-o", "{DIR}/out"]
VALIDATE = ["mobilenet_v1_x0_25", "--data", "{DIR}"]
EXPORT = ["mobilenet_v1_x0_25", "--onnx", "{DIR}/m.onnx"]
BENCH = ["--out", "", "--plot", ""]

# (subcommand and valid arguments, option, bad values)
BAD_OPTIONS = [
    (["info", "squeezenet1_1"], "--input-size", ["0", "-1", "60000", "big"]),
    (["summary", "squeezenet1_1"], "--input-size", ["0", "-3", "5000"]),
    (["dataset", "fashion-mnist", "{DIR}/ds"], "--limit-per-class", ["0", "-1", "x"]),
    (["reproduce", "--plot", "{DIR}/p.png"], "--out", ["{DIR}", "{FILE}/t.md"]),
    (["train", *TRAIN], "--epochs", ["0", "-1", "1.5"]),
    (["train", *TRAIN], "--img-size", ["0", "-1", "60000"]),
    (["train", *TRAIN], "--batch-size", ["0", "-4"]),
    (["train", *TRAIN], "--workers", ["-1"]),
    (["train", *TRAIN], "--lr", ["0", "-0.1", "nan", "inf"]),
    (["train", *TRAIN], "--label-smoothing", ["2", "-0.1"]),
    (["train", *TRAIN], "--momentum", ["5", "-1"]),
    (["train", *TRAIN], "--weight-decay", ["-1"]),
    (["train", *TRAIN], "--hflip", ["1.5"]),
    (["train", *TRAIN], "--val-fraction", ["0", "1", "2"]),
    (["train", *TRAIN], "--kd-temperature", ["0", "-2"]),
    (["train", *TRAIN], "--kd-alpha", ["2", "-1"]),
    (["train", *TRAIN], "--warmup-epochs", ["-1"]),
    (["train", *TRAIN], "--grad-clip", ["-1"]),
    (["train", *TRAIN], "--train-subset", ["-5"]),
    (["train", *TRAIN], "--device", ["tpu", "cuda:x"]),
    (["train", *TRAIN], "-o", ["{FILE}", "{FILE}/sub"]),
    (["finetune", *TRAIN], "--freeze-epochs", ["-1"]),
    (["finetune", *TRAIN], "--epochs", ["0"]),
    (["finetune", *TRAIN], "--device", ["tpu"]),
    (["validate", *VALIDATE], "--img-size", ["0", "70000"]),
    (["validate", *VALIDATE], "--batch-size", ["0"]),
    (["validate", *VALIDATE], "--workers", ["-1"]),
    (["validate", *VALIDATE], "--num-classes", ["0"]),
    (["validate", *VALIDATE], "--device", ["tpu"]),
    (["validate", *VALIDATE], "--results-file", ["{DIR}", "{FILE}/r.csv"]),
    (["predict", "{DIR}/best.pt", "{DIR}/a.png"], "--batch-size", ["0", "-1"]),
    (["predict", "{DIR}/best.pt", "{DIR}/a.png"], "--topk", ["0"]),
    (["predict", "{DIR}/best.pt", "{DIR}/a.png"], "--device", ["tpu"]),
    (["export", *EXPORT], "--atol", ["-1", "nan"]),
    (["export", *EXPORT], "--input-size", ["0", "60000"]),
    (["export", *EXPORT], "--batch-size", ["0"]),
    (["export", *EXPORT], "--opset", ["3"]),
    (["export", *EXPORT], "--num-classes", ["0"]),
    (["export", *EXPORT], "--onnx", ["{DIR}", "{FILE}/m.onnx"]),
    (["compress", "mobilenet_v1_x0_25"], "--bits", ["0", "33"]),
    (["compress", "mobilenet_v1_x0_25"], "--sparsity", ["2", "-0.5"]),
    (["compress", "mobilenet_v1_x0_25"], "--out", ["{DIR}"]),
    (["benchmark", *BENCH], "--repeats", ["0"]),
    (["benchmark", *BENCH], "--threads", ["0"]),
    (["benchmark", *BENCH], "--input-size", ["0"]),
    (["benchmark", *BENCH], "--min-run-ms", ["-5", "0"]),
    (["benchmark", *BENCH], "--batch-sizes", ["0"]),
    (["publish", "{DIR}/last.pt", "--tag", "x"], "--weights-dir", ["{FILE}"]),
]
CASES = [
    pytest.param(base, opt, value, id=f"{base[0]}{opt}={value}")
    for base, opt, values in BAD_OPTIONS
    for value in values
]


def _fill(argv: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "file.txt").write_text("not a folder")
    subs = {"{DIR}": str(tmp_path), "{FILE}": str(tmp_path / "file.txt")}
    out = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def _one_line_error(capsys, code: int, prog: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.mark.parametrize("base,option,value", CASES)
def test_bad_option_value_is_one_line_and_exit_2(base, option, value, tmp_path, capsys):
    argv = _fill([*base, option, value], tmp_path)
    code = cli.main(argv)
    line = _one_line_error(capsys, code, f"zoo {base[0]}")
    assert code == 2
    assert option.lstrip("-") in line or "argument" in line, line


def test_cuda_without_a_gpu_is_refused_at_parse_time(monkeypatch):
    monkeypatch.setattr(cli_errors.torch.cuda, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError, match="no.*GPU|none is visible"):
        device_option("cuda")
    assert device_option("cpu") == "cpu" and device_option("AUTO") == "auto"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["info", "squeezenet9"], "Did you mean"),
        (["predict", "{DIR}/none.pt", "{DIR}/a.png"], "none.pt"),
        (["publish", "{DIR}/none.pt", "--tag", "x", "--weights-dir", "{DIR}/w"], "none.pt"),
        (["dataset", "fashion-mnist", "{DIR}/o", "--root", "{DIR}/nothing"], "nothing"),
        (["compress", "inspect", "{DIR}/missing.zdc"], "missing.zdc"),
    ],
)
def test_missing_inputs_are_one_line(argv, needle, tmp_path, capsys):
    code = cli.main(_fill(argv, tmp_path))
    line = _one_line_error(capsys, code, f"zoo {argv[0]}")
    assert needle in line and code == 2


@pytest.mark.parametrize(
    "err,code,needle",
    [
        (OSError(errno.EROFS, "Read-only file system", "/ro/x.onnx"), 1, "read-only"),
        (OSError(errno.ENOSPC, "No space left on device", "/full/x"), 1, "no space"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 1, "permission"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), 2, "not a folder"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/d"), 2, "is a folder"),
        (FileNotFoundError(errno.ENOENT, "No such file", "/none.pt"), 2, "no such file"),
        (ValueError("bad value, pass --x 3"), 2, "pass --x 3"),
        (zoo.WeightsError("weights not cached; unset ZOO_OFFLINE"), 1, "unset ZOO_OFFLINE"),
    ],
)
def test_user_errors_become_one_line_with_the_fix(err, code, needle, capsys):
    def fail(argv):
        raise err

    assert run_command("zoo x", fail, []) == code
    line = _one_line_error(capsys, code, "zoo x")
    assert needle in line
    if getattr(err, "filename", None):
        assert err.filename in line


def test_zoo_home_that_is_a_file_names_zoo_home(monkeypatch, capsys, tmp_path):
    home = tmp_path / "home"
    home.write_text("")
    monkeypatch.setenv("ZOO_HOME", str(home))

    def fail(argv):
        (home / "hub").mkdir(parents=True)

    assert run_command("zoo x", fail, []) == 2
    assert f"ZOO_HOME={home}" in _one_line_error(capsys, 2, "zoo x")


def test_a_bug_keeps_its_traceback_and_says_how_to_report(capsys):
    def bug(argv):
        return {}["missing"]

    assert run_command("zoo x", bug, []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "please report" in err.splitlines()[-1] and cli_errors.REPORT_URL in err


def test_interrupt_is_one_line_and_exit_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_command("zoo train", interrupted, []) == 130
    err = capsys.readouterr().err
    assert err.strip() == "zoo train: interrupted"


def test_option_types_against_hand_ranges():
    assert positive_int("3") == 3 and image_size("4096") == 4096 and probability("1") == 1.0
    assert positive_float("1e-3") == 1e-3 and non_negative_float("0") == 0.0
    for parse, bad in [
        (positive_int, "0"),
        (image_size, "4097"),
        (probability, "1.01"),
        (positive_float, "0"),
        (positive_float, "inf"),
        (non_negative_float, "-1e-9"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_pretrained_option_is_one_rule_for_every_command(tmp_path):
    assert [pretrained_option(t) for t in ("true", "True", "yes", "1")] == [True] * 4
    assert [pretrained_option(t) for t in ("false", "none", "0")] == [None] * 3
    assert pretrained_option("tv_in1k") == "tv_in1k"
    assert pretrained_option(str(tmp_path / "w.pth")) == str(tmp_path / "w.pth")
    export_args = export_cli.build_parser().parse_args(
        ["alexnet", "--onnx", str(tmp_path / "a.onnx"), "--pretrained", "true"]
    )
    validate_args = validate_cli.build_parser().parse_args(
        ["alexnet", "--data", str(tmp_path), "--pretrained", "true"]
    )
    assert export_args.pretrained is True and validate_args.pretrained is True


def test_output_paths(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    assert output_dir(str(tmp_path / "new" / "dir")) == str(tmp_path / "new" / "dir")
    assert output_file(str(tmp_path / "x.csv")) == str(tmp_path / "x.csv")
    for parse, bad in [(output_dir, f), (output_dir, f / "sub"), (output_file, tmp_path)]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(bad))


def test_help_describes_every_command_with_examples(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("list", "info", "train", "finetune", "validate", "predict", "export"):
        assert f"\n    {command} " in out, command
    assert "examples:" in out and "zoo train " in out
    assert cli.__doc__.splitlines()[0] not in out  # the user's help, not the module docstring


def test_version_and_python_m_zoo():
    run = subprocess.run(
        [sys.executable, "-m", "zoo", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0 and run.stdout.strip() == f"zoo {zoo.__version__}", run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "zoo", "info", "alexnet", "--input-size", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_list_needs_no_counting(monkeypatch, capsys):
    """The default listing reads the measured table: zoo.count is never called."""

    def no_count(*a, **k):
        raise AssertionError("zoo list counted a model")

    monkeypatch.setattr(zoo, "count", no_count)
    start = time.perf_counter()
    assert cli.main(["list"]) == 0
    assert time.perf_counter() - start < 5
    out = capsys.readouterr().out
    assert "squeezenet1_1" in out and "1,235,496" in out  # torchvision's squeezenet1_1 params


def test_list_counts_models_missing_from_the_table(monkeypatch, capsys):
    monkeypatch.setattr(cli, "MEASURED", {})
    assert cli.main(["list", "squeezenet1_1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1,235,496" in out and "349.2M" in out  # torchvision's params; 349.15M MACs at 224


def test_measured_table_covers_every_model_and_matches_zoo_count():
    # Weight sets added since the table was written are counted by `zoo list` on the fly.
    missing = set(zoo.list_models("*")) - set(MEASURED)
    assert not missing, f"stale: run zoo.cli.write_figures_module('zoo/list_figures.py'): {missing}"
    for name in ("squeezenet1_1", "xnor_resnet18", "shufflenet_g3", "alexnet.tv_in1k"):
        c = zoo.count(name, fvcore=False)
        assert MEASURED[name] == (c.params, int(c.macs), tuple(c.input_size)), name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_forked_workers_ignore_ctrl_c_while_the_main_process_stops(capsys):
    """Ctrl-C reaches the whole process group: a DataLoader worker must not print its own
    KeyboardInterrupt traceback after the main process's one-line message."""

    def command(argv):
        pid = os.fork()
        if pid == 0:  # the worker: SIGINT must be ignored, so it reaches os._exit(0)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        raise KeyboardInterrupt

    # Python's own handler, as in a terminal (a background job starts with SIGINT ignored).
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run_command("zoo train", command, []) == 130
        assert capsys.readouterr().err.strip() == "zoo train: interrupted"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, original)
