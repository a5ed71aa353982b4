"""act_layer / norm_layer: names resolve to torch's classes, reach every activation of every
family (compared with swapping the modules by hand, the old arch_overrides way), and the XNOR
converter still removes the activations that feed binary layers."""

import pytest
import torch
from torch import nn

import zoo
from zoo.binary import binarize
from zoo.blocks import ConvBNAct, create_act, get_act_layer, get_norm_layer

FAMILY_MODELS = [
    "squeezenet1_1",
    "mobilenet_v1_x0_25",
    "mobilenet_v2",
    "shufflenet_g3_x0_25",
    "shufflenet_v2_x0_5",
    "alexnet",
    "resnet18",
]
TORCH_ACTS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def test_act_names_resolve_to_torch_classes():
    for name, cls in TORCH_ACTS.items():
        assert get_act_layer(name) is cls
        assert get_act_layer(name.upper()) is cls
        assert type(create_act(name)) is cls
    assert get_act_layer(nn.ReLU6) is nn.ReLU6 and get_act_layer(None) is None
    assert create_act("relu").inplace and not isinstance(create_act(None), nn.ReLU)
    for name in ("batchnorm", "bn"):
        assert get_norm_layer(name) is nn.BatchNorm2d


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown act_layer 'swishy'") as err:
        get_act_layer("swishy")
    for name in TORCH_ACTS:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="'batchnorm'.*'bn'"):
        get_norm_layer("layernorm")
    with pytest.raises(ValueError, match="relu6"):
        zoo.create("resnet18", act_layer="relu7")
    with pytest.raises(ValueError, match="no normalization"):
        zoo.create("alexnet", norm_layer="bn")


def _acts(model, kinds=(nn.ReLU, nn.ReLU6)):
    return [(n, type(m)) for n, m in model.named_modules() if isinstance(m, kinds)]


def _swap_by_hand(module, new):
    """The old way: replace every ReLU/ReLU6 module after the model is built."""
    for name, child in module.named_children():
        if type(child) in (nn.ReLU, nn.ReLU6):
            setattr(module, name, new(inplace=True))
        else:
            _swap_by_hand(child, new)
    return module


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_relu6_reaches_every_activation(name):
    default = zoo.create(name)
    relu6 = zoo.create(name, act_layer="relu6")
    default_acts = _acts(default)
    assert default_acts, "a family without activations?"
    assert _acts(relu6) == [(n, nn.ReLU6) for n, _ in default_acts]
    assert str(relu6) == str(_swap_by_hand(default, nn.ReLU6))
    # The defaults are unchanged: ReLU everywhere, ReLU6 in MobileNet v2 (the paper's).
    expected = nn.ReLU6 if name == "mobilenet_v2" else nn.ReLU
    assert {cls for _, cls in default_acts} == {expected}


@pytest.mark.parametrize("name", ["mobilenet_v1_x0_25", "squeezenet1_1"])
def test_string_and_class_give_equal_models(name):
    torch.manual_seed(0)
    by_name = zoo.create(name, act_layer="relu6", norm_layer="bn" if "mobile" in name else None)
    torch.manual_seed(0)
    by_class = zoo.create(name, act_layer=nn.ReLU6)
    assert str(by_name) == str(by_class)
    for (ka, va), (kb, vb) in zip(
        by_name.state_dict().items(), by_class.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(by_name.eval()(x), by_class.eval()(x))


def test_other_activations_and_norms_build_and_run():
    model = zoo.create("shufflenet_v2_x0_5", act_layer="hardswish", num_classes=3).eval()
    assert _acts(model, nn.Hardswish) and not _acts(model)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    gelu = zoo.create("resnet18", act_layer="gelu", norm_layer=nn.BatchNorm2d)
    assert _acts(gelu, nn.GELU) and not _acts(gelu)
    block = ConvBNAct(4, 8, norm_layer=lambda c: nn.GroupNorm(2, c), act_layer="silu")
    assert isinstance(block.bn, nn.GroupNorm) and isinstance(block.act, nn.SiLU)


@pytest.mark.parametrize("name", ["mobilenet_v1_x0_25", "shufflenet_g3_x0_25"])
def test_xnor_removes_the_same_activations_with_relu6(name):
    torch.manual_seed(0)
    plain = binarize(zoo.create(name), "xnor").binarize_info
    torch.manual_seed(0)
    relu6 = binarize(zoo.create(name, act_layer="relu6"), "xnor").binarize_info
    assert plain.removed_activations  # conv -> BN -> ReLU -> binary conv loses its ReLU
    assert relu6.removed_activations == plain.removed_activations
    assert relu6.binarized == plain.binarized
