"""The packed 1-bit inference path gives the simulated float model's outputs on every
xnor_* model (float64, random BN statistics), and stores weights >= 25x smaller."""

import pytest
import torch

import zoo
from zoo.binary.packed import PackedBinaryConv2d, pack, packed_weight_bytes
from zoo.deploy import fuse_and_pack

XNOR = zoo.list_models("xnor_*")


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", XNOR)
def test_packed_model_equals_simulated(name):
    model = zoo.create(name, num_classes=10)
    _randomize_bn(model)
    model = model.eval().double()
    fast = fuse_and_pack(model)
    assert any(isinstance(m, PackedBinaryConv2d) for m in fast.modules())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        # measured: at most 2.4e-8 over every xnor_* model and 2 seeds (outputs ~0.1-0.8);
        # 1e-4 would let a wrong scale on one channel through
        assert (fast(x) - model(x)).abs().max().item() < 1e-7


def test_odd_layer_with_input_scale_and_stride():
    from zoo.binary.layers import BinaryConv2d

    conv = torch.nn.Conv2d(70, 33, 3, stride=2, padding=1, groups=1)
    layer = BinaryConv2d.from_float(conv, mode="xnor", input_scale=True).double().eval()
    x = torch.randn(3, 70, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(PackedBinaryConv2d(layer)(x), layer(x), atol=1e-9)


def test_packed_resnet18_weights_are_25x_smaller():
    fast = fuse_and_pack(zoo.create("xnor_resnet18").eval())
    packed, floats = packed_weight_bytes(fast)
    assert floats / packed >= 25


def test_pack_refuses_models_without_xnor_layers():
    for packer in (pack, fuse_and_pack):
        with pytest.raises(ValueError, match="no xnor layers"):
            packer(zoo.create("bwn_resnet18"))


@pytest.mark.parametrize("name", ["xnor_resnet18", "xnor_shufflenet_g3_x0_5"])
def test_fused_packing_folds_bn_and_negative_scales_flip_signs(name):
    """BNs after binary layers fold into the packed scales; a negative BN gamma must flip that
    channel's signs (the packed alpha is a magnitude) and still give the simulated outputs."""
    model = zoo.create(name, num_classes=10)
    _randomize_bn(model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data[::3] *= -1  # every third channel negative
    model = model.eval().double()
    plain, fused = pack(model), fuse_and_pack(model)
    n_bn = [sum(isinstance(m, torch.nn.BatchNorm2d) for m in f.modules()) for f in (plain, fused)]
    assert n_bn[1] < n_bn[0]
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        # measured: at most 1.7e-8 (plain) and 9e-9 (fused) over 2 seeds
        assert (plain(x) - ref).abs().max().item() < 1e-7
        assert (fused(x) - ref).abs().max().item() < 1e-7


def test_pack_refuses_layers_computing_with_float_weights():
    from zoo.binary.layers import set_binary_weights

    model = zoo.create("xnor_resnet18", num_classes=10).eval()
    set_binary_weights(model, False)  # step 1 of the two-step recipe
    with pytest.raises(ValueError, match="set_binary_weights"):
        pack(model)
    set_binary_weights(model, True)
    assert any(isinstance(m, PackedBinaryConv2d) for m in pack(model).modules())
