"""The compressed file: exact round trips, byte-exact size accounting, clear errors, and the
published SqueezeNet / AlexNet sizes."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import zoo
import zoo.compress as zc
from zoo.formats import zdc
from zoo.formats.zdc import MAGIC, decode_layer, encode_layer


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def _compressed_tiny(tmp_path, sparsity=0.6, bits=4):
    model = _tiny()
    model[1].running_mean.uniform_(-1, 1)
    zc.prune_magnitude(model, sparsity)
    zc.share_weights(model, bits)
    path = tmp_path / "tiny.zdc"
    report = zc.save(model, path, bits=bits, index_bits={"conv": 3, "linear": 2})
    return model, path, report


def test_round_trip_is_exact_and_size_matches_accounting(tmp_path):
    model, path, report = _compressed_tiny(tmp_path)
    assert os.path.getsize(path) == report.total_bytes
    back = zc.load(path, model=_tiny(seed=1))
    assert _states_equal(model, back)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model.eval()(x), back(x))


def test_accounting_matches_an_independent_count(tmp_path):
    model, _, report = _compressed_tiny(tmp_path)
    for row, g in zip(report.layers, (3, 2), strict=True):
        w = model.get_submodule(row.name).weight.detach().flatten().numpy()
        pos = np.flatnonzero(w)
        gaps = np.diff(np.concatenate([[-1], pos]))
        entries = int(np.ceil(gaps / (2**g - 1)).sum())  # fillers + one entry per weight
        assert row.nonzero == len(pos) and row.weights == w.size
        assert row.pq_bits == len(pos) * 4 + entries * g + 32 * len(np.unique(w[pos]))
    fp32 = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point()) * 4
    assert report.float_bytes == fp32


def test_dense_and_degenerate_layers():
    dense = torch.tensor([[0.5, -0.5], [0.5, 0.25]])
    layer = encode_layer("d", dense, "linear", bits=2, index_bits=4)
    assert layer.index_bits == 0 and layer.index_nbits == 0  # no zeros: no positions stored
    assert torch.equal(decode_layer(layer), dense)
    zeros = torch.zeros(3, 4)
    assert torch.equal(decode_layer(encode_layer("z", zeros, "linear", index_bits=4)), zeros)
    one = torch.zeros(1000)
    one[999] = 2.0  # one far weight: a long run of fillers before it
    layer = encode_layer("f", one.view(10, 100), "linear", index_bits=2)
    assert layer.fillers == math.ceil(1000 / 3) - 1
    assert torch.equal(decode_layer(layer).flatten(), one)


def test_refuses_unshared_weights_and_parametrized_models(tmp_path):
    model = _tiny()
    with pytest.raises(ValueError, match="share weights first"):
        zc.save(model, tmp_path / "x.zdc", bits=4)
    zc.prune_magnitude(model, 0.5, hold=True)
    with pytest.raises(RuntimeError, match="finalize"):
        zc.save(model, tmp_path / "x.zdc")
    assert not (tmp_path / "x.zdc").exists()


def test_truncated_corrupt_and_foreign_files(tmp_path):
    _, path, _ = _compressed_tiny(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.zdc"
    bad.write_bytes(data[:-10])
    with pytest.raises(zc.CompressedFileError, match="truncated"):
        zc.read(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(flipped))
    with pytest.raises(zc.CompressedFileError, match="CRC"):
        zc.read(bad)
    bad.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(zc.CompressedFileError, match="not a zoo compressed model"):
        zc.read(bad)
    newer = bytearray(data)
    newer[len(MAGIC)] = 99
    bad.write_bytes(bytes(newer))
    with pytest.raises(zc.CompressedFileError, match="version 99"):
        zc.read(bad)
    with pytest.raises(FileNotFoundError):
        zc.read(tmp_path / "missing.zdc")
    with pytest.raises(ValueError, match="does not fit"):
        zc.load(path, model=nn.Sequential(nn.Linear(2, 2)))


def test_zoo_model_reloads_by_name(tmp_path):
    model = zoo.create("mobilenet_v1_x0_25", num_classes=10, in_chans=1)
    report = zc.deep_compress(model, 0.7, {"conv": 5, "linear": 4}, tmp_path / "mb.zdc")
    back = zc.load(tmp_path / "mb.zdc")  # architecture, classes and channels from the header
    assert type(back) is type(model) and _states_equal(model, back)
    assert report.total_bytes == os.path.getsize(tmp_path / "mb.zdc")
    # conv/fc weights at 30 % density and 4-5 bits: well under a tenth of their float32 size
    assert report.layer_bytes < 0.1 * 4 * report.weights
    assert report.ratio == report.float_bytes / report.total_bytes


@pytest.mark.parametrize("bits,limit_mb", [(8, 0.66), (6, 0.47)])
def test_squeezenet_file_within_the_published_size(tmp_path, bits, limit_mb):
    # SqueezeNet paper Table 2: Deep Compression to 0.66 MB (8-bit) and 0.47 MB (6-bit), with
    # the paper's per-layer sparsity. Random He-init weights; sizes only, no accuracy claim.
    torch.manual_seed(0)
    model = zoo.create("squeezenet1_0")
    report = zc.deep_compress(model, "paper", bits, tmp_path / "sq.zdc")
    assert os.path.getsize(tmp_path / "sq.zdc") == report.total_bytes <= limit_mb * 1e6
    assert report.nonzero == pytest.approx(421_098 - 3_976, abs=10)  # paper count minus biases


@pytest.mark.slow
def test_alexnet_about_35x(tmp_path):
    # Deep Compression: AlexNet 240 MB -> 6.9 MB (35x), conv 8 bits, fc 5 bits, Table 4 rates
    torch.manual_seed(0)
    model = zoo.create("alexnet")
    report = zc.deep_compress(model, "paper", {"conv": 8, "linear": 5}, tmp_path / "a.zdc")
    assert 30 <= report.ratio <= 40
    back = zc.load(tmp_path / "a.zdc")
    assert _states_equal(model, back)


def test_formats_read_gives_meta_and_state_without_a_model(tmp_path):
    # what the resolver reads: the recorded architecture and head, and the exact tensors
    model = zoo.create("mobilenet_v1_x0_25", num_classes=7, in_chans=1)
    zc.deep_compress(model, 0.5, 5, tmp_path / "m.zdc")
    cm = zdc.read(tmp_path / "m.zdc")
    assert isinstance(cm, zc.CompressedModel)
    assert cm.meta["arch"] == "mobilenet_v1_x0_25"
    assert (cm.meta["num_classes"], cm.meta["in_chans"], cm.meta["kwargs"]) == (7, 1, {})
    state, own = cm.state_dict(), model.state_dict()
    assert state.keys() == own.keys()
    assert all(torch.equal(state[k], own[k]) for k in own)
    data, sizes = zdc.serialize(cm)
    assert data == (tmp_path / "m.zdc").read_bytes() and sum(sizes.values()) == len(data)
