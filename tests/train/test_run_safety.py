"""Nothing lost: an output folder holding an earlier run, two runs into one folder (issue 13)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
from train_helpers import FAST

from zoo.train import load_checkpoint, save_checkpoint
from zoo.train import run as run_mod
from zoo.train.finetune import main as finetune_main
from zoo.train.rundir import LOCK_NAME, RunFolderError, acquire_lock, prepare_output


def _tiny_finetune(data, out, *extra):
    """One quick epoch of a pixel-linear model; returns the exit code."""
    return finetune_main(
        [
            "tiny_models:linear_net",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--train-subset",
            "32",
            "--output",
            str(out),
            *FAST,
            *extra,
        ]
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- used folders


@pytest.mark.data
def test_new_run_into_a_used_folder_is_refused_and_force_keeps_the_best(
    fm_split_folder, tmp_path, capsys
):
    out = tmp_path / "run"
    assert _tiny_finetune(fm_split_folder, out) == 0
    assert not (out / LOCK_NAME).exists()  # released at the end of the run
    before = {n: (out / n).read_bytes() for n in ("best.pt", "last.pt", "summary.csv")}
    capsys.readouterr()

    # The earlier run (best.pt, last.pt, summary.csv) is left exactly as it was.
    assert _tiny_finetune(fm_split_folder, out, "--seed", "3") == 2
    err = capsys.readouterr().err
    assert "holds an earlier run" in err and "--resume" in err and "--force" in err
    assert {n: (out / n).read_bytes() for n in before} == before

    # --force starts over; the earlier best model survives as best.prev.pt.
    assert _tiny_finetune(fm_split_folder, out, "--seed", "3", "--force") == 0
    assert (out / "best.prev.pt").read_bytes() == before["best.pt"]
    assert [r["epoch"] for r in _rows(out / "summary.csv")] == ["0"]
    assert (out / "last.pt").read_bytes() != before["last.pt"]
    assert "best.prev.pt" in capsys.readouterr().out


def _with_top1(src, dst, top1):
    save_checkpoint(dst, {**load_checkpoint(src), "best_top1": top1})


@pytest.mark.data
def test_force_never_replaces_a_better_earlier_best(trained_run, tmp_path):
    src = trained_run / "best.pt"
    out = tmp_path / "o"
    out.mkdir()
    _with_top1(src, out / "best.prev.pt", 80.0)  # an even earlier run, better
    _with_top1(src, out / "best.pt", 40.0)
    shutil.copy(trained_run / "summary.csv", out / "summary.csv")
    prepare_output(out, None, force=True)
    assert load_checkpoint(out / "best.prev.pt")["best_top1"] == 80.0
    assert not (out / "best.pt").exists() and not (out / "summary.csv").exists()

    _with_top1(src, out / "best.pt", 90.0)  # now the later one is better: it is kept
    prepare_output(out, None, force=True)
    assert load_checkpoint(out / "best.prev.pt")["best_top1"] == 90.0


@pytest.mark.data
def test_resume_of_the_folders_own_run_is_allowed(trained_run, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(trained_run, out)
    prepare_output(out, out / "last.pt", force=False)  # continuing it: no error
    with pytest.raises(RunFolderError, match="holds an earlier run"):
        prepare_output(out, trained_run / "last.pt", force=False)  # another run's last.pt
    with pytest.raises(RunFolderError, match="holds an earlier run"):
        prepare_output(out, None, force=False)
    (out / "last.pt").unlink()  # best.pt and summary.csv alone: nothing to resume, still a run
    with pytest.raises(RunFolderError, match=r"\(best.pt, summary.csv\); pass --force"):
        prepare_output(out, None, force=False)


# ----------------------------------------------------------------------------- the lock


def test_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path):
    out = tmp_path / "o"
    lock = acquire_lock(out)
    assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with pytest.raises(RunFolderError, match="in use by another run"):
        acquire_lock(out)
    lock.release()
    assert not out.exists()  # the lock made the folder and the run left it empty

    out.mkdir()
    (out / LOCK_NAME).write_text(f"{_dead_pid()} {os.uname().nodename}\n")
    lock = acquire_lock(out)  # a SIGKILLed run's lock is taken over
    assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert out.is_dir() and not (out / LOCK_NAME).exists()  # the folder was not ours


def test_train_into_a_folder_locked_by_a_live_run_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{live.pid} {os.uname().nodename}\n")
        args = run_mod.build_parser().parse_args(
            ["tiny_models:linear_net", "--data", str(tmp_path / "none"), "-o", str(out), *FAST]
        )
        assert run_mod.run_cli(args, "train") == 2
        err = capsys.readouterr().err
        assert f"process {live.pid}" in err and "in use by another run" in err
        assert (out / LOCK_NAME).read_text().split()[0] == str(live.pid)  # not stolen
    finally:
        live.kill()
        live.wait()


def test_output_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    args = run_mod.build_parser().parse_args(["tiny_models:linear_net", "--data", str(tmp_path)])
    args.output = str(target)  # from Python, past the parser's own check
    assert run_mod.run_cli(args, "train") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "x"
