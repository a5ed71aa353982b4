"""Multi-process and interrupted training, run as real subprocesses of scripts/train.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from train_helpers import FAST, MODEL, REPO

from zoo.train import load_checkpoint
from zoo.train import run as run_mod

pytestmark = pytest.mark.data
TRAIN = str(REPO / "scripts" / "train.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(t: torch.Tensor) -> str:
    # Written independently of zoo's state_digest: dtype+shape header, then the raw bytes.
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(np.ascontiguousarray(t.cpu().numpy()).tobytes())
    return h.hexdigest()


def test_two_processes_end_with_identical_weights(fm_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        TRAIN,
        MODEL,
        "--data",
        str(fm_folder),
        "--train-subset",
        "256",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--rank-digest",
        "--output",
        str(out),
        *FAST,
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) on cpu" in proc.stdout
    rank0 = json.loads((out / "rank0.digest.json").read_text())
    rank1 = json.loads((out / "rank1.digest.json").read_text())
    assert rank0 == rank1  # parameters and BatchNorm statistics, tensor by tensor
    ckpt = load_checkpoint(out / "last.pt")
    assert {k: _sha(v) for k, v in ckpt["state_dict"].items()} == rank0
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # Each rank trained on its own half: 4 steps x 32 images x 2 ranks.
    assert ckpt["metrics"]["train"]["count"] == 256
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(fm_folder, tmp_path):
    argv = [
        MODEL,
        "--data",
        str(fm_folder),
        "--train-subset",
        "128",
        "--epochs",
        "3",
        "--lr",
        "0.05",
        "--seed",
        "3",
        *FAST,
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *argv, "--output", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "last.pt").exists():
                proc.send_signal(signal.SIGKILL)  # no chance to clean up
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = load_checkpoint(out / "last.pt")["next_epoch"]
    assert 1 <= done < 3, "the run finished before it could be killed"

    resumed = subprocess.run(
        [sys.executable, TRAIN, *argv, "--output", str(out), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {out / 'last.pt'} after epoch {done}" in resumed.stdout
    assert f"epoch {done}/3" not in resumed.stdout  # finished epochs are not redone

    # Reference: the same run without interruption (in this process, also one thread).
    run_mod.train(run_mod.build_parser().parse_args([*argv, "--output", str(tmp_path / "ref")]))
    a = load_checkpoint(out / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "ref" / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
