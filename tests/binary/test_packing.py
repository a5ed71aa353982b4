"""1-bit checkpoints: packing layout, bit-exact round trip, file size against float."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file

import zoo
import zoo.binary.variants  # noqa: F401
from zoo import load_binary
from zoo.binary import binarize, pack_signs, read_metadata, save_binary, unpack_signs
from zoo.binary.summary import summary
from zoo.pretrained import StateDictMismatchError, WeightsError


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: one thread keeps these tests predictable (and deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pack_layout_by_hand():
    w = torch.tensor([0.3, -1.0, 0.0, 2.0, -0.1, -5.0, -0.2, 1.0, 0.5])
    # bit i of byte j is element 8j+i, 1 for w >= 0: elements 0, 2, 3, 7 -> 1+4+8+128 = 141;
    # element 8 -> byte 1 = 1
    packed = pack_signs(w)
    assert packed.dtype == torch.uint8 and packed.tolist() == [141, 1]
    assert unpack_signs(packed, (9,)).tolist() == [1, -1, 1, 1, -1, -1, -1, 1, 1]


def test_pack_matches_numpy_on_random_shapes():
    w = torch.randn(7, 3, 3, 5)
    bits = np.packbits((w.numpy() >= 0).reshape(-1), bitorder="little")
    assert np.array_equal(pack_signs(w).numpy(), bits)
    assert torch.equal(unpack_signs(pack_signs(w), w.shape), torch.where(w >= 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="does not match the model"):
        unpack_signs(pack_signs(w), (7, 3, 3, 6))


def _trained(model: torch.nn.Module, size: int = 32) -> torch.nn.Module:
    """Two optimizer steps so weights, biases and BN statistics all move away from init."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(4, 3, size, size)), torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("mode,input_scale", [("bwn", False), ("xnor", False), ("xnor", True)])
def test_round_trip_is_bit_exact(tmp_path, mode, input_scale):
    model = _trained(binarize(torchvision.models.resnet18(num_classes=4), mode,
                              input_scale=input_scale))  # fmt: skip
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        before = model(x)
    path = save_binary(model, tmp_path / "m.safetensors")
    fresh = binarize(torchvision.models.resnet18(num_classes=4), mode, input_scale=input_scale)
    loaded = load_binary(path, fresh).eval()
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    # binary layers hold exactly alpha * sign of the saved weights
    for (n, m), (_, m2) in zip(model.named_modules(), loaded.named_modules(), strict=True):
        if hasattr(m, "weight_signs"):
            assert torch.equal(m.weight_signs(), m2.weight_signs()), n
            assert torch.equal(m.weight_scale(), m2.weight_scale()), n


def test_load_by_recorded_name_and_into_float_model(tmp_path):
    model = _trained(zoo.create("xnor_shufflenet_g3_x0_5", num_classes=4))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    path = save_binary(model, tmp_path / "g3.safetensors")
    meta = read_metadata(path)
    assert meta["architecture"] == "xnor_shufflenet_g3_x0_5" and meta["num_classes"] == 4
    with torch.no_grad():
        assert torch.equal(load_binary(path).eval()(x), before)
        # a float model is binarized with the recorded options before loading
        floaty = zoo.create("shufflenet_g3_x0_5", num_classes=4)
        assert torch.equal(load_binary(path, floaty).eval()(x), before)


def test_model_with_input_bn_round_trips(tmp_path):
    model = _trained(zoo.create("xnor_squeezenet1_1", num_classes=4), size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    path = save_binary(model, tmp_path / "sq.safetensors")
    with torch.no_grad():
        assert torch.equal(load_binary(path).eval()(x), before)


def test_file_is_safetensors_with_packed_uint8(tmp_path):
    model = binarize(torchvision.models.resnet18(num_classes=4), "xnor")
    path = save_binary(model, tmp_path / "r.safetensors")
    tensors = load_file(str(path))
    signs = tensors["layer1.0.conv1.weight.signs"]
    assert signs.dtype == torch.uint8 and signs.numel() == 64 * 64 * 9 // 8
    assert tensors["layer1.0.conv1.weight.alpha"].shape == (64,)
    assert "layer1.0.conv1.weight" not in tensors and "conv1.weight" in tensors
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # no temp file left


def _float_ckpt_bytes(tmp_path, num_classes: int) -> int:
    path = tmp_path / f"float{num_classes}.pth"
    torch.save(zoo.create("resnet18", num_classes=num_classes).state_dict(), path)
    return os.path.getsize(path)


def test_xnor_resnet18_file_size(tmp_path):
    # 10 classes (a small float classifier, as in the Fashion-MNIST run): >= 25x smaller.
    model = zoo.create("xnor_resnet18", num_classes=10)
    binary = os.path.getsize(save_binary(model, tmp_path / "x10.safetensors"))
    ratio10 = _float_ckpt_bytes(tmp_path, 10) / binary
    assert ratio10 >= 25, ratio10
    # the file holds what the summary counts, plus a small header
    assert 0 <= binary - summary(model).memory_bytes < 64_000

    # 1000 classes: the float 512x1000 classifier alone is 2.05 MB, so the file cannot be 25x
    # smaller than the 46.8 MB float checkpoint; it is 13x, the bound the summary predicts.
    model = zoo.create("xnor_resnet18")
    binary = os.path.getsize(save_binary(model, tmp_path / "x1000.safetensors"))
    ratio1000 = _float_ckpt_bytes(tmp_path, 1000) / binary
    assert 12.5 <= ratio1000 <= 13.5, ratio1000
    classifier_bytes = 4 * (512 * 1000 + 1000)
    assert binary > classifier_bytes > _float_ckpt_bytes(tmp_path, 1000) / 25


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="binarize it first"):
        save_binary(torchvision.models.resnet18(), tmp_path / "f.safetensors")
    path = save_binary(binarize(torchvision.models.resnet18(), "bwn"), tmp_path / "b.safetensors")
    with pytest.raises(WeightsError, match="names no architecture"):
        load_binary(path)  # a torchvision model has no registered name
    with pytest.raises(StateDictMismatchError, match="differ"):
        load_binary(path, binarize(torchvision.models.resnet18(), "bwn", keep_last=False))
    with pytest.raises(StateDictMismatchError, match="has bwn"):
        load_binary(path, binarize(torchvision.models.resnet18(), "xnor"))
    other = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(other))
    with pytest.raises(WeightsError, match="not a zoo 1-bit checkpoint"):
        load_binary(other, binarize(torchvision.models.resnet18(), "bwn"))
