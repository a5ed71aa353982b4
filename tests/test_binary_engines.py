"""Optional binary engines (LCE in .venv-lce, bnn-lab): skip rows when absent, and when present
their outputs against the float conv / matmul of signs computed here with torch."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.deploy import binary_engines
from zoo.deploy.binary_engines import bnn_lab_gemm, bnn_lab_rows, engine_rows, lce_rows


def _check_rows(rows: list[dict]) -> None:
    """Each row is timed ({engine, ms, note}) or skipped ({engine, skipped}), never both."""
    assert rows
    for r in rows:
        assert isinstance(r["engine"], str) and r["engine"]
        if "skipped" in r:
            assert "ms" not in r and isinstance(r["skipped"], str) and r["skipped"]
        else:
            assert r["ms"] > 0 and isinstance(r["note"], str)


def test_absent_lce_venv_gives_a_skip_row_with_the_install_hint(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-venv"
    monkeypatch.setenv(binary_engines.LCE_VENV_ENV, str(missing))
    monkeypatch.setitem(sys.modules, "bnn", None)  # bnn-lab absent too: nothing is timed
    rows = engine_rows(8, 4, 3, 1, 1, 2)
    _check_rows(rows)
    assert [r["engine"] for r in rows] == ["lce", "bnn-lab gemm"]
    assert all("skipped" in r for r in rows)
    assert "make lce" in rows[0]["skipped"] and str(missing) in rows[0]["skipped"]
    assert "pip install bnn-lab --no-deps" in rows[1]["skipped"]
    # The keyword argument overrides the environment variable the same way.
    monkeypatch.delenv(binary_engines.LCE_VENV_ENV)
    assert "make lce" in lce_rows(8, 4, 3, 1, 1, 2, venv=missing)[0]["skipped"]


@pytest.mark.parametrize(
    "script, expected",
    [
        ("echo boom >&2; exit 3", "LCE worker failed (exit 3: boom)"),
        ("echo not json", "LCE worker printed no result"),
        ("echo '{\"rows\": []}'", "LCE worker printed no result"),
    ],
)
def test_a_broken_lce_venv_gives_a_skip_row(tmp_path, script, expected):
    exe = tmp_path / "venv" / "bin" / "python"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    rows = lce_rows(8, 4, 3, 1, 1, 2, venv=tmp_path / "venv")
    _check_rows(rows)
    assert len(rows) == 1 and rows[0]["skipped"].startswith(expected)


def _sign(a: np.ndarray) -> torch.Tensor:
    """larq's ste_sign: +1 where a >= 0, -1 elsewhere, as float64."""
    return torch.where(torch.from_numpy(a) >= 0, 1.0, -1.0).double()


@pytest.mark.slow
def test_lce_binary_conv_equals_the_float_conv_of_signs(tmp_path):
    if binary_engines.lce_python() is None:
        pytest.skip("no .venv-lce (run `make lce`)")
    # 40 channels: a bit-packing word only partly used; batch 2: the whole batch in one invoke.
    rows = lce_rows(40, 7, 3, 2, 1, 3, dump=tmp_path)
    _check_rows(rows)
    assert all("ms" in r for r in rows), rows
    engines = {r["engine"] for r in rows}
    assert {"lce bconv", "lce bconv indirect", "lce bconv reference", "lce float conv"} <= engines
    x, kernel, y = (np.load(tmp_path / f"{n}.npy") for n in ("x", "kernel", "y"))
    assert x.shape == (2, 7, 7, 40) and kernel.shape == (3, 3, 40, 40) and y.shape == x.shape
    xs = _sign(x).permute(0, 3, 1, 2)  # NHWC -> NCHW
    ws = _sign(kernel).permute(3, 2, 0, 1)  # HWIO -> OIHW
    expected = F.conv2d(F.pad(xs, (1, 1, 1, 1), value=1.0), ws).permute(0, 2, 3, 1)
    assert torch.equal(torch.from_numpy(y).double(), expected)


@pytest.mark.parametrize("m, n, bits", [(49, 24, 2304), (5, 3, 100), (1, 1, 1)])
def test_bnn_lab_gemm_equals_the_popcount_formula(m, n, bits):
    gen = torch.Generator().manual_seed(m + bits)
    x = torch.randint(0, 2, (m, bits), generator=gen).float() * 2 - 1
    w = torch.randint(0, 2, (n, bits), generator=gen).float() * 2 - 1
    got = bnn_lab_gemm(x.numpy(), w.numpy())
    if got is None:
        pytest.skip("bnn-lab or its native kernel is missing (pip install bnn-lab --no-deps)")
    # K - 2 * popcount(x XOR w), with the bits set where the value is -1.
    hamming = ((x < 0)[:, None, :] ^ (w < 0)[None, :, :]).sum(-1)
    assert torch.equal(torch.from_numpy(got).double(), (bits - 2 * hamming).double())
    assert torch.equal(torch.from_numpy(got).double(), x.double() @ w.double().T)


def test_bnn_lab_rows_time_the_layer_gemm_or_skip():
    rows = bnn_lab_rows(16, 5, 3, 2, 1, 3)
    _check_rows(rows)
    assert len(rows) == 1 and rows[0]["engine"] == "bnn-lab gemm"
    if "ms" in rows[0]:
        assert "M=50 N=16 K=144" in rows[0]["note"]
