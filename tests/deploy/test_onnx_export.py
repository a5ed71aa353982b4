"""ONNX export: onnxruntime reproduces PyTorch (max abs diff < 1e-4) for one model of each
family, float and fused; binary models keep their sign ops; failures are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.deploy import export as export_module
from zoo.deploy.export import ExportError, export_onnx, fixed_size_pools, main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ATOL = 1e-4

# One model per family at a small input (AlexNet's 6x6 adaptive pool needs 224 in ONNX).
FAMILIES = [
    ("squeezenet1_0_bypass_complex", 64),
    ("mobilenet_v1_x0_25", 64),
    ("mobilenet_v2", 64),
    ("shufflenet_g3_x0_5", 64),
    ("shufflenet_v2_x0_5", 64),
    ("resnet18", 64),
    pytest.param("alexnet", 224, marks=pytest.mark.slow),  # 240 MB file
]


def _ort(path, x: torch.Tensor) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("fused", [False, True], ids=["float", "fused"])
@pytest.mark.parametrize("name,size", FAMILIES)
def test_onnxruntime_matches_pytorch(name, size, fused, tmp_path, randomize_norms):
    model = randomize_norms(zoo.create(name, num_classes=10)).eval()
    path = tmp_path / f"{name}.onnx"
    res = export_onnx(model, path, fuse=fused, input_size=size, check=False)
    assert path.exists() and res.size_bytes == path.stat().st_size
    x = torch.randn(3, 3, size, size)  # batch 3: the batch dimension is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    got = _ort(path, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < ATOL
    if fused:  # BN folded into the convs: no BatchNormalization node left
        assert "BatchNormalization" not in _ops(path)


def test_builtin_check_reports_the_difference(tmp_path):
    res = export_onnx("shufflenet_v2_x0_5", tmp_path / "m.onnx", input_size=64, num_classes=7)
    assert res.max_abs_diff is not None and res.max_abs_diff < ATOL
    assert res.input_shape == (1, 3, 64, 64)
    assert "Conv" in res.op_types


@pytest.mark.parametrize("fused", [False, True], ids=["binary", "fused"])
@pytest.mark.parametrize("mode", ["bwn", "xnor"])
@pytest.mark.parametrize("name,size", [("shufflenet_v2_x0_5", 32), ("squeezenet1_1", 64)])
def test_binary_models_export_with_sign_ops(
    name, size, mode, fused, tmp_path, randomize_norms, sign_safe_input
):
    from zoo.binary import binarize

    model = randomize_norms(binarize(zoo.create(name, num_classes=10), mode)).eval()
    path = tmp_path / "b.onnx"
    export_onnx(model, path, input_size=size, check=False, fuse=fused)
    ops = _ops(path)
    if mode == "xnor" or not fused:  # sign(x) = where(x >= 0, 1, -1), on inputs or weights
        assert {"Where", "GreaterOrEqual"} <= ops
    if fused:  # weights binarized once at fuse time: no per-call weight binarization
        assert "ReduceMean" not in ops
        # Only the BNs in front of sign() (XNOR AlexNet/SqueezeNet's input_bn) remain.
        n_input_bn = sum(n.endswith("input_bn") for n, _ in model.named_modules())
        nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert nodes.count("BatchNormalization") == n_input_bn
    x = sign_safe_input(model, (2, 3, size, size))
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(_ort(path, x) - expected).max() < ATOL


def test_registered_xnor_twin_exports(tmp_path, randomize_norms, sign_safe_input):
    names = zoo.list_models("xnor_*")
    if not names:
        pytest.skip("no xnor_* models registered yet (zoo.binary.variants)")
    name = "xnor_resnet18" if "xnor_resnet18" in names else names[0]
    model = randomize_norms(zoo.create(name, num_classes=10)).eval()
    size = max(64, getattr(model, "min_input_size", 32))
    export_onnx(model, tmp_path / "x.onnx", input_size=size, check=False)
    x = sign_safe_input(model, (2, 3, size, size))
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(_ort(tmp_path / "x.onnx", x) - expected).max() < ATOL


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning"
)
def test_sign_of_zero_is_plus_one_in_onnx(tmp_path):
    """Padded borders and exact zeros must binarize to +1 in onnxruntime as in the paper."""
    from zoo.binary import BinaryConv2d

    torch.manual_seed(0)
    layer = BinaryConv2d(4, 5, 3, padding=1, bias=False, mode="xnor").eval()
    x = torch.randn(1, 4, 6, 6)
    x[:, :, 2:4, :] = 0.0  # exact zeros inside the image too
    path = tmp_path / "sign.onnx"
    torch.onnx.export(layer, (x,), str(path), dynamo=False, opset_version=17)
    # Reference written out by hand: pad with 0, sign with 0 -> +1, alpha * sign(W).
    xs = torch.where(F.pad(x, [1, 1, 1, 1]) >= 0, 1.0, -1.0)
    w = layer.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = F.conv2d(xs, alpha * torch.where(w >= 0, 1.0, -1.0))
    assert np.abs(_ort(path, x) - expected.numpy()).max() < 1e-5


def test_xnor_check_falls_back_to_a_small_sign_safe_input(tmp_path, monkeypatch, randomize_norms):
    """When the full-size file differs (sign flips), the same export is checked small."""
    from zoo.binary import binarize

    model = randomize_norms(binarize(zoo.create("shufflenet_v2_x0_5", num_classes=10), "xnor"))
    real_compare = export_module._compare
    calls = []

    def first_call_fails(module, path, shape, tries=8):
        calls.append(shape)
        diff, x = real_compare(module, path, shape, tries)
        return (1.0 if len(calls) == 1 else diff), x

    monkeypatch.setattr(export_module, "_compare", first_call_fails)
    res = export_onnx(model.eval(), tmp_path / "x.onnx", input_size=96)
    assert calls[0] == (2, 3, 96, 96) and calls[1] == (2, 3, 32, 32)
    assert res.max_abs_diff < ATOL
    assert "re-exported at 32x32 matches" in res.check_note
    # A float model gets no second chance.
    with pytest.raises(ExportError, match="differ by 1"):
        calls.clear()
        export_onnx("mobilenet_v1_x0_25", tmp_path / "f.onnx", input_size=64)
    assert not (tmp_path / "f.onnx").exists()


class _AdaptiveHead(nn.Module):
    def __init__(self, grid: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.gpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.pool(self.conv(x))
        return torch.cat([y.flatten(1), self.gpool(y).flatten(1)], 1)


@pytest.mark.parametrize("grid,side,kind", [(3, 6, nn.AvgPool2d), (6, 6, nn.Identity)])
def test_fixed_size_pools_rewrite_adaptive_pools(grid, side, kind):
    model = _AdaptiveHead(grid).eval()
    fixed = fixed_size_pools(model, (1, 3, side, side))
    assert isinstance(fixed.pool, kind) and isinstance(fixed.gpool, nn.AdaptiveAvgPool2d)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)  # the original is not changed
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert torch.allclose(fixed(x), model(x), atol=1e-6)
    # 4x4 -> 3x3 has no fixed-window equivalent: left alone (export then says why).
    assert fixed_size_pools(model, (1, 3, 4, 4)) is model


class _Unexportable(nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).abs()  # complex ops have no TorchScript-ONNX symbolic


def test_unsupported_exports_raise_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="multiple of the grid"):
        export_onnx("alexnet", tmp_path / "a.onnx", input_size=96)
    assert not list(tmp_path.iterdir()), "no file (or temp file) is left behind"
    with pytest.raises(ExportError, match="unknown model"):
        export_onnx("shufflenet_g5", tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="smaller than"):
        export_onnx("squeezenet1_1", tmp_path / "a.onnx", input_size=32)
    with pytest.raises(ExportError, match=r"\.onnx"):
        export_onnx("squeezenet1_1", tmp_path / "a.bin", input_size=64)
    with pytest.raises(ExportError, match="cannot export"):
        export_onnx(_Unexportable(), tmp_path / "f.onnx", input_size=8)
    compiled = torch.compile(nn.Conv2d(3, 3, 1))
    with pytest.raises(ExportError, match="torch.compile"):
        export_onnx(compiled, tmp_path / "c.onnx", input_size=8)
    assert not list(tmp_path.iterdir())


def test_cli_exports_and_reports(tmp_path, capsys):
    out = tmp_path / "sub" / "m.onnx"
    rc = main(["mobilenet_v1_x0_25", "--onnx", str(out), "--fuse", "--input-size", "64"])
    assert rc == 0 and out.exists()
    assert "max abs diff" in capsys.readouterr().out
    rc = main(["alexnet", "--onnx", str(tmp_path / "a.onnx"), "--input-size", "96"])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.startswith("zoo export: error: cannot export alexnet")
    assert "Traceback" not in captured.err + captured.out


def test_zoo_cli_delegates_export(tmp_path):
    from zoo.cli import main as zoo_main

    out = tmp_path / "s.onnx"
    assert zoo_main(["export", "squeezenet1_1", "--onnx", str(out), "--input-size", "64"]) == 0
    assert out.exists()


def test_packed_model_is_refused_with_the_fix():
    packed = zoo.binary.pack(zoo.create("xnor_resnet18", num_classes=10).eval())
    with pytest.raises(ExportError, match="export the unpacked xnor model"):
        export_onnx(packed, "unused.onnx")
