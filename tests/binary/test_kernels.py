"""The 1-bit XNOR kernels give exactly the float conv / matmul of signs, on every backend.

The oracle everywhere is float64 ``F.conv2d(sign(F.pad(x)), sign(w))`` (or ``sign(x) @
sign(w).T``) with ``sign(v) = +1 for v >= 0, else -1``: binary dot products are integers, so
"equal" means bit-for-bit equal. Each C++ backend this CPU can run (``avx2`` and
``portable`` here; ``avx512`` only where the CPU has AVX-512 VPOPCNTDQ) and the pure-PyTorch
fallback are checked on hand-picked odd shapes and on random shapes (hypothesis).
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo.binary.kernels as K
from zoo.binary.kernels import reference as R
from zoo.binary.kernels.bench import bench_binary_conv, theoretical_speedup
from zoo.binary.kernels.prepared import PreparedXnorConv2d

BACKENDS = K.available_backends()  # builds the extension once (cached across runs)
CPP_BACKENDS = [b for b in BACKENDS if b != "torch"]


def oracle_conv(x, w, stride, pads, dilation, groups):
    """Float64 conv of +-1 signs, zero padding applied before the sign (pad reads +1)."""
    one = torch.ones((), dtype=torch.float64)
    xs = torch.where(F.pad(x.double(), pads) >= 0, one, -one)
    ws = torch.where(w.double() >= 0, one, -one)
    return F.conv2d(xs, ws, stride=stride, dilation=dilation, groups=groups)


def oracle_linear(x, w):
    one = torch.ones((), dtype=torch.float64)
    return torch.where(x.double() >= 0, one, -one) @ torch.where(w.double() >= 0, one, -one).T


def signed_input(shape, gen=None):
    """Random values with exact zeros and -0.0 mixed in (both must read as +1)."""
    x = torch.randn(shape, generator=gen)
    x[x.abs() < 0.25] = 0.0
    x[(x == 0) & (torch.rand(shape, generator=gen) < 0.5)] = -0.0
    return x


def run(backend, x, w, stride, pads, dilation, groups):
    packed = K.pack_conv_weight(w, groups)
    with K.use_backend(backend):
        return K.xnor_conv2d(x, packed, stride, pads, dilation)


# (N, C, O, H, W, kh, kw, stride, pads(l, r, t, b), dilation, groups)
ODD_SHAPES = [
    (1, 256, 256, 14, 14, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # the benchmark layer
    (2, 70, 30, 9, 7, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),  # C not a multiple of 64
    (3, 130, 12, 5, 8, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 2),  # 65 channels per group
    (1, 9, 6, 6, 6, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 3),  # 1x1 stride 2, 3 groups
    (2, 64, 64, 7, 7, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation 2, exactly 64
    (1, 1, 5, 4, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # a single input channel
    (1, 128, 40, 15, 11, 3, 5, (2, 1), (0, 1, 2, 0), (1, 1), 1),  # non-square, asymmetric
    (2, 96, 66, 4, 4, 2, 2, (1, 1), (0, 1, 0, 1), (1, 1), 3),  # even kernel, "same"-style
    (1, 24, 24, 12, 12, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 24),  # depthwise
    (2, 2 * 45, 2 * 100, 5, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),  # 100 out per group
    (1, 64, 33, 9, 9, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 33 outputs: 32 + 1
    (2, 64, 16, 11, 13, 3, 3, (1, 3), (1, 1, 1, 1), (1, 1), 1),  # width stride 3: gathers
    (2, 80, 16, 12, 19, 3, 3, (2, 2), (1, 2, 1, 1), (2, 2), 1),  # stride 2 with dilation 2
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_conv_exact_on_odd_shapes(backend, shape):
    n, c, o, h, w_, kh, kw, stride, pads, dilation, groups = shape
    x = signed_input((n, c, h, w_))
    w = torch.randn(o, c // groups, kh, kw)
    out = run(backend, x, w, stride, pads, dilation, groups)
    assert out.dtype == torch.int32
    assert torch.equal(out.double(), oracle_conv(x, w, stride, pads, dilation, groups))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", ODD_SHAPES[:4] + ODD_SHAPES[-3:], ids=lambda s: "x".join(
    map(str, s[:7])))  # fmt: skip
def test_affine_epilogue_equals_scaling_the_dots(backend, dtype, with_bias, shape):
    """The kernel's fused ``dots * scale + bias`` (what packed layers use) against the
    float64 oracle's dots scaled afterwards."""
    n, c, o, h, w_, kh, kw, stride, pads, dilation, groups = shape
    gen = torch.Generator().manual_seed(o)
    x = signed_input((n, c, h, w_), gen).to(dtype)
    w = torch.randn(o, c // groups, kh, kw, generator=gen)
    scale = torch.rand(o, generator=gen) * 2 - 1  # negative scales included
    bias = torch.randn(o, generator=gen) if with_bias else None
    packed = K.pack_conv_weight(w, groups)
    with K.use_backend(backend):
        out = K.xnor_conv2d(x, packed, stride, pads, dilation, scale=scale, bias=bias)
    ref = oracle_conv(x, w, stride, pads, dilation, groups) * scale.double().view(1, -1, 1, 1)
    if bias is not None:
        ref = ref + bias.double().view(1, -1, 1, 1)
    assert out.dtype == dtype
    assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-6)


def test_affine_epilogue_checks_its_sizes():
    packed = K.pack_conv_weight(torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="one per output channel"):
        K.xnor_conv2d(torch.randn(1, 8, 5, 5), packed, scale=torch.ones(3))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 130))
    og = draw(st.sampled_from([1, 2, 5, 8, 13, 31, 32, 47, 64, 100]))
    kh, kw = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 2, 3, 5]))
    stride = (draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2])))
    dilation = (draw(st.sampled_from([1, 1, 2])), 1)
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, (kh - 1) * dilation[0] + 1 - pads[2] - pads[3]), 9))
    w = draw(st.integers(max(1, kw - pads[0] - pads[1]), 9))
    n = draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, cg * groups, og * groups, h, w, kh, kw, stride, pads, dilation, groups, seed


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(case=conv_cases())
def test_conv_exact_on_random_shapes(backend, case):
    n, c, o, h, w_, kh, kw, stride, pads, dilation, groups, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = signed_input((n, c, h, w_), gen)
    w = torch.randn(o, c // groups, kh, kw, generator=gen)
    out = run(backend, x, w, stride, pads, dilation, groups)
    assert torch.equal(out.double(), oracle_conv(x, w, stride, pads, dilation, groups))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(n=st.integers(1, 5), i=st.integers(1, 300), o=st.integers(1, 70), seed=st.integers(0, 999))
def test_linear_exact(backend, n, i, o, seed):
    gen = torch.Generator().manual_seed(seed)
    x = signed_input((n, i), gen)
    w = torch.randn(o, i, generator=gen)
    with K.use_backend(backend):
        out = K.xnor_linear(x, K.pack_linear_weight(w))
    assert out.dtype == torch.int32 and out.shape == (n, o)
    assert torch.equal(out.double(), oracle_linear(x, w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_with_more_than_65535_inputs(backend):
    """Past 2**16 products per output the AVX2 table kernel's 16-bit sums would overflow;
    the XOR kernel takes over and stays exact."""
    x = signed_input((2, 70_001))
    w = torch.randn(40, 70_001)
    with K.use_backend(backend):
        out = K.xnor_linear(x, K.pack_linear_weight(w))
    assert torch.equal(out.double(), oracle_linear(x, w))


@pytest.mark.skipif("avx2" not in BACKENDS, reason="needs the AVX2 kernels")
@pytest.mark.parametrize(
    ("c", "o", "k", "kernel"),
    [(256, 256, 3, "table"), (64, 32, 3, "table"), (64, 31, 3, "xor"), (7300, 32, 3, "xor")],
)
def test_avx2_kernel_choice(c, o, k, kernel):
    """The table kernel runs from 32 output channels per group up to 65535 products per
    output, the XOR kernel elsewhere; both are exact (checked on these very shapes)."""
    x = signed_input((1, c, 4, 4))
    w = torch.randn(o, c, k, k)
    with K.use_backend("avx2"):
        out, prof = K.xnor_conv2d_profile(x, K.pack_conv_weight(w), 1, 1)
    assert prof["kernel"] == kernel
    assert torch.equal(out.double(), oracle_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_reads_plus_one(backend):
    """All-negative input, all-positive weight, 3x3 pad 1: a corner sees 4 real taps (-1 each)
    and 5 padded taps (+1 each), per channel; the centre sees 9 real taps."""
    c = 70
    x = -torch.rand(1, c, 5, 5) - 0.1
    out = run(backend, x, torch.ones(2, c, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert out[0, 0, 0, 0].item() == c * (5 - 4)
    assert out[0, 1, 0, 2].item() == c * (3 - 6)  # edge: 6 real taps, 3 padded
    assert out[0, 0, 2, 2].item() == -9 * c


@pytest.mark.parametrize("backend", BACKENDS)
def test_sign_convention_zero_negzero_nan(backend):
    """0.0 and -0.0 are +1 (x >= 0); NaN is -1 (not x >= 0), as in zoo.binary.quantizers.sign."""
    x = torch.tensor([0.0, -0.0, float("nan"), 2.0, -3.0]).view(1, 5, 1, 1)
    x = x.expand(1, 5, 3, 3).contiguous()
    w = torch.ones(1, 5, 1, 1)
    out = run(backend, x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert torch.equal(out, torch.full((1, 1, 3, 3), 1 + 1 - 1 + 1 - 1, dtype=torch.int32))


@pytest.mark.parametrize("backend", CPP_BACKENDS)
def test_cpp_activation_packing_matches_torch_packer(backend):
    """The fused sign+pack in C++ writes the documented layout [N, H, W, G, words]."""
    ext = K._extension()
    x = signed_input((2, 2 * 70, 5, 9))  # 9 wide: an AVX2 block of 8 pixels plus a tail
    x[0, 3, 1, 1] = float("nan")
    for dtype in (torch.float32, torch.float64):
        got = ext.pack_input(x.to(dtype), 2, K._CPP_CODES[backend])
        nhwc = x.permute(0, 2, 3, 1).reshape(2, 5, 9, 2, 70)
        assert torch.equal(got, R.pack_bits(nhwc))


def test_input_dtypes_and_layouts_agree():
    """float16/bfloat16/float64 and non-contiguous inputs give the float32 result."""
    x = signed_input((2, 33, 7, 6))
    w = torch.randn(10, 33, 3, 3)
    packed = K.pack_conv_weight(w)
    ref = K.xnor_conv2d(x, packed, 1, 1)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        assert torch.equal(K.xnor_conv2d(x.to(dtype), packed, 1, 1), ref)
    assert torch.equal(K.xnor_conv2d(x.to(memory_format=torch.channels_last), packed, 1, 1), ref)
    wide = signed_input((2, 33, 7, 12))
    assert torch.equal(
        K.xnor_conv2d(wide[..., ::2], packed, 1, 1),
        K.xnor_conv2d(wide[..., ::2].contiguous(), packed, 1, 1),
    )


@pytest.mark.skipif(not CPP_BACKENDS, reason="C++ extension not built here")
def test_thread_count_does_not_change_results():
    x = signed_input((2, 100, 9, 9))
    packed = K.pack_conv_weight(torch.randn(70, 100, 3, 3))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = K.xnor_conv2d(x, packed, 1, 1)
        torch.set_num_threads(2)
        two = K.xnor_conv2d(x, packed, 1, 1)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_packed_weight_memory_and_round_trip():
    w = torch.randn(256, 256, 3, 3)
    packed = K.pack_conv_weight(w)
    assert packed.float_nbytes == w.numel() * 4
    assert packed.nbytes * 25 <= packed.float_nbytes  # >= 25x smaller than float32
    assert torch.equal(packed.unpack(), torch.where(w >= 0, 1.0, -1.0))
    odd = torch.randn(12, 130 // 2, 5, 3)
    assert torch.equal(K.pack_conv_weight(odd, 2).unpack(), torch.where(odd >= 0, 1.0, -1.0))


def test_pack_bits_layout():
    """Channel c is bit c % 64 of word c // 64, 1 for negative; unused bits are 0."""
    t = torch.ones(1, 130)
    t[0, [0, 63, 64, 129]] = -1.0
    words = R.pack_bits(t)
    assert words.tolist() == [[1 - 2**63, 1, 2]]


def test_fallback_when_compilation_fails(monkeypatch):
    """A broken build warns once, then everything runs exactly on the torch path."""

    def broken():
        raise OSError("no C++ compiler found (simulated)")

    monkeypatch.setattr(K, "_STATE", K._State())
    monkeypatch.setattr(K, "_load_extension", broken)
    K._STATE.requested = "auto"
    x = signed_input((2, 20, 6, 6))
    w = torch.randn(8, 20, 3, 3)
    with pytest.warns(RuntimeWarning, match="pure-PyTorch path.*no C\\+\\+ compiler"):
        assert not K.is_compiled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert K.backend() == "torch" and K.available_backends() == ["torch"]
        out = K.xnor_conv2d(x, K.pack_conv_weight(w), 1, 1)
    assert torch.equal(out.double(), oracle_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1))
    assert "no C++ compiler" in K.extension_error()
    with pytest.raises(RuntimeError, match="not available"):
        K.set_backend("avx2")


@pytest.mark.skipif(not CPP_BACKENDS, reason="C++ extension not built here")
def test_cached_build_loads_without_a_compiler(monkeypatch):
    """Once built, later processes import the cached library: no ninja or c++ needed."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(K, "_STATE", K._State())
    K._STATE.requested = "auto"
    assert K.is_compiled() and K.available_backends() == BACKENDS


def test_env_switch_skips_the_build(monkeypatch):
    def must_not_build():
        raise AssertionError("built despite ZOO_NO_EXTENSION")

    monkeypatch.setattr(K, "_STATE", K._State())
    monkeypatch.setattr(K, "_load_extension", must_not_build)
    monkeypatch.setenv("ZOO_NO_EXTENSION", "1")
    K._STATE.requested = "auto"
    assert K.backend() == "torch"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
@pytest.mark.skipif(not CPP_BACKENDS, reason="C++ extension not built here")
def test_backend_detection_matches_cpu_flags():
    flags = set(re.findall(r"\w+", Path("/proc/cpuinfo").read_text().split("flags")[1]))
    assert ("avx512" in BACKENDS) == ({"avx512f", "avx512_vpopcntdq"} <= flags)
    assert ("avx2" in BACKENDS) == ({"avx2", "popcnt"} <= flags)
    assert "portable" in BACKENDS
    assert K.backend() == BACKENDS[0]  # auto picks the fastest


def test_bad_input_errors_name_the_fix():
    packed = K.pack_conv_weight(torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="8"):
        K.xnor_conv2d(torch.randn(1, 5, 6, 6), packed)
    with pytest.raises(TypeError, match=r"x\.float\(\)"):
        K.xnor_conv2d(torch.ones(1, 8, 6, 6, dtype=torch.int64), packed)
    with pytest.raises(TypeError, match="pack_conv_weight"):
        K.xnor_conv2d(torch.randn(1, 8, 6, 6), torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        K.xnor_conv2d(torch.randn(1, 8, 2, 2), packed)
    with pytest.raises(ValueError, match="explicit"):
        K.xnor_conv2d(torch.randn(1, 8, 6, 6), packed, padding="same")
    with pytest.raises(ValueError, match="groups"):
        K.xnor_conv2d(torch.randn(1, 8, 6, 6), packed, groups=2)
    with pytest.raises(ValueError, match="unknown backend"):
        K.set_backend("cuda")


def test_theoretical_speedup_matches_the_paper():
    """XNOR-Net (Rastegari et al. 2016): c=256, 3x3 gives 62.27x."""
    assert theoretical_speedup(256, 9) == pytest.approx(62.27, abs=0.005)


def test_bench_smoke():
    r = bench_binary_conv(c=16, hw=6, k=3, repeats=2, warmup=1, threads=1)
    assert r["threads"] == 1 and r["float_ms"] > 0 and r["xnor_ms"] > 0
    assert r["weight_memory_ratio"] > 1
    products = 16 * 16 * 9 * 36  # one image: outputs x products per output
    assert r["xnor_gbinops"] == pytest.approx(products / (r["xnor_ms"] * 1e6))
    if CPP_BACKENDS:  # the register-only peaks come from the C++ extension
        assert r["peak_gbinops"] > 0 and r["peak_gmacs"] > 0
        assert r["speedup_ceiling"] == pytest.approx(r["peak_gbinops"] / r["float_gmacs"])


@pytest.mark.skipif(not CPP_BACKENDS, reason="the C++ extension is not built")
def test_peak_rate_refuses_unknown_backends():
    with pytest.raises(RuntimeError, match="unknown backend"):
        K._extension().peak_rate(False, 7, 0.001)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler on this machine")
@pytest.mark.skipif(
    os.environ.get("ZOO_NO_EXTENSION", "") not in ("", "0"), reason="ZOO_NO_EXTENSION is set"
)
def test_extension_builds_where_a_compiler_exists():
    """The fallback keeps zoo usable without a compiler; with one, a build error must fail
    the suite instead of quietly skipping every C++ test."""
    assert CPP_BACKENDS, f"the XNOR extension did not build: {K._STATE.error}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_conv_equals_xnor_conv2d(backend, channels_last):
    """The per-call path of packed layers gives xnor_conv2d's output, and its errors."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(12, 10, 3, 3, generator=gen)
    packed = K.pack_conv_weight(w, groups=2)
    scale, bias = torch.rand(12, generator=gen), torch.randn(12, generator=gen)
    x = torch.randn(2, 20, 9, 7, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with K.use_backend(backend):
        fn = PreparedXnorConv2d(packed, (2, 1), (1, 0, 2, 1), 1, scale=scale, bias=bias)
        expected = K.xnor_conv2d(x.contiguous(), packed, (2, 1), (1, 0, 2, 1), 1, 2, scale, bias)
        assert torch.equal(fn(x), expected)
        with pytest.raises(ValueError, match="input has 10 channels"):
            fn(x[:, :10])
        with pytest.raises(ValueError, match="smaller than the kernel"):
            fn(x[:, :, :0, :0])


@pytest.mark.parametrize("backend", CPP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_input_is_packed_where_it_lies(backend, dtype):
    """A channels_last input (packed without an NCHW copy) gives the NCHW input's result,
    for several words per group, a part word and NaN / -0.0 among the values."""
    x = signed_input((2, 2 * 75, 6, 5)).to(dtype)
    x[0, 3, 1, 1], x[1, 140, 2, 3], x[0, 70, 0, 0] = float("nan"), -0.0, 0.0
    w = torch.randn(8, 75, 3, 3)
    packed = K.pack_conv_weight(w, groups=2)
    with K.use_backend(backend):
        nchw = K.xnor_conv2d(x, packed, 1, 1)
        nhwc = K.xnor_conv2d(x.contiguous(memory_format=torch.channels_last), packed, 1, 1)
    assert torch.equal(nhwc, nchw)
    assert torch.equal(nchw, run("torch", x, w, (1, 1), (1, 1, 1, 1), (1, 1), 2))


@pytest.mark.parametrize("backend", CPP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hw", [(1, (6, 5)), (3, (3, 4))])  # blocks spanning images too
def test_channels_last_affine_output_keeps_the_layout(backend, dtype, n, hw):
    """Float outputs of a channels_last input are channels_last, with the NCHW values
    (the AVX-512 path writes whole tiles transposed in registers); 13 output channels leave
    a part tile of 5, 2 groups of 75 inputs a part word."""
    gen = torch.Generator().manual_seed(5)
    x = signed_input((n, 150, *hw)).to(dtype)
    w = torch.randn(26, 75, 3, 3, generator=gen)
    scale, bias = torch.rand(26, generator=gen), torch.randn(26, generator=gen)
    packed = K.pack_conv_weight(w, groups=2)
    with K.use_backend(backend):
        nchw = K.xnor_conv2d(x, packed, 1, 1, scale=scale, bias=bias)
        cl = x.contiguous(memory_format=torch.channels_last)
        nhwc = K.xnor_conv2d(cl, packed, 1, 1, scale=scale, bias=bias)
        dots = K.xnor_conv2d(cl, packed, 1, 1)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and dots.is_contiguous()
    assert torch.equal(nhwc, nchw)
    assert torch.equal(
        nchw,
        (dots.to(dtype) * scale.to(dtype).view(1, -1, 1, 1)) + bias.to(dtype).view(1, -1, 1, 1),
    )
