"""binarize(): which layers become binary, weights carried over, activations fixed for XNOR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo.binary import BinaryConv2d, BinaryLinear, binarize, is_binary


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: one thread keeps these tests predictable (and deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _np_alpha_sign(w: torch.Tensor) -> torch.Tensor:
    a = w.detach().double().numpy()
    alpha = np.abs(a).reshape(a.shape[0], -1).mean(1).reshape(-1, *([1] * (a.ndim - 1)))
    return torch.from_numpy(alpha * np.where(a >= 0, 1.0, -1.0)).float()


def test_torchvision_resnet18_first_and_last_stay_float_weights_carried_over():
    float_model = torchvision.models.resnet18(num_classes=10).eval()
    model = binarize(float_model, "bwn")
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    binary = [n for n, m in model.named_modules() if is_binary(m)]
    convs = [n for n, m in float_model.named_modules() if isinstance(m, nn.Conv2d)]
    assert binary == convs[1:]  # every conv but the first, downsample 1x1 convs included
    # state_dict unchanged: same keys, same values; the float model is untouched
    sd, fsd = model.state_dict(), float_model.state_dict()
    assert list(sd) == list(fsd)
    assert all(torch.equal(sd[k], fsd[k]) for k in sd)
    assert not any(is_binary(m) for m in float_model.modules())
    assert model.binarize_info.kept_float == {"conv1": "first layer", "fc": "last layer"}


def test_bwn_model_equals_float_model_with_alpha_sign_weights():
    # independent route: put alpha * sign(W) (computed in NumPy) into the float model itself
    float_model = torchvision.models.resnet18(num_classes=10).eval()
    model = binarize(float_model, "bwn").eval()
    manual = torchvision.models.resnet18(num_classes=10).eval()
    manual.load_state_dict(float_model.state_dict())
    with torch.no_grad():
        for name, m in manual.named_modules():
            if isinstance(m, nn.Conv2d) and name != "conv1":
                m.weight.copy_(_np_alpha_sign(m.weight))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), manual(x), rtol=1e-4, atol=1e-4)


def test_zoo_model_uses_default_cfg_and_keeps_depthwise_float():
    model = binarize(zoo.create("mobilenet_v2", num_classes=10), "xnor")
    info = model.binarize_info
    assert info.kept_float["features.stem.conv"] == "first layer"
    assert info.kept_float["classifier"] == "last layer"
    dws = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(info.kept_float[n] == "depthwise" for n in dws)
    assert all(type(model.get_submodule(n)) is nn.Conv2d for n in dws)
    assert model.default_cfg["binary"] == "xnor"
    assert model.default_cfg["float_twin"] == "mobilenet_v2"


def test_binarize_depthwise_option():
    model = binarize(zoo.create("mobilenet_v1_x0_25", num_classes=10), "bwn",
                     binarize_depthwise=True)  # fmt: skip
    dws = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(isinstance(m, BinaryConv2d) for m in dws)


def test_shufflenet_v1_grouped_1x1_convs_are_binarized():
    model = binarize(zoo.create("shufflenet_g3", num_classes=10), "xnor")
    grouped = [m for m in model.modules()
               if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]  # fmt: skip
    assert grouped and all(isinstance(m, BinaryConv2d) and m.mode == "xnor" for m in grouped)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v2",
        "shufflenet_g3",
        "shufflenet_v2_x0_5",
        "squeezenet1_0_bypass_simple",
        "mobilenet_v1_x0_25",
    ],  # fmt: skip
)
def test_xnor_inputs_are_never_all_non_negative(name):
    # a ReLU feeding sign() would make every binary input +1; binarize must prevent it
    model = binarize(zoo.create(name, num_classes=10), "xnor").train()
    seen = []

    def check(mod, inp):
        x = inp[0] if mod.input_bn is None else mod.input_bn(inp[0])  # what sign() sees
        seen.append((x.min() < 0).item())

    for m in model.modules():
        if is_binary(m) and m.mode == "xnor":
            m.register_forward_pre_hook(check)
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))
    assert seen and all(seen)


def test_xnor_removes_exactly_the_relus_that_feed_binary_layers():
    float_model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),  # 0-2: feeds conv 4 via pool
        nn.MaxPool2d(2),  # 3
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),  # 4-6: feeds depthwise 7
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),  # 7-9: feeds 10
        nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),  # 10-12: feeds the float head
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    model = binarize(float_model, "xnor", example_input=torch.randn(1, 3, 16, 16))
    assert model.binarize_info.removed_activations == ["2", "9"]
    assert isinstance(model[2], nn.Identity) and isinstance(model[9], nn.Identity)
    assert isinstance(model[6], nn.ReLU) and isinstance(model[12], nn.ReLU)
    assert model.binarize_info.added_norms == []
    assert model.binarize_info.kept_float == {"0": "first layer", "15": "last layer",
                                              "7": "depthwise"}  # fmt: skip


def test_xnor_adds_input_bn_where_no_batchnorm_precedes():
    # AlexNet-like: conv -> ReLU -> pool -> conv, no BatchNorm anywhere
    float_model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, 4),
    )  # fmt: skip
    model = binarize(float_model, "xnor", example_input=torch.randn(1, 3, 16, 16))
    assert model.binarize_info.added_norms == ["3", "6"]
    assert isinstance(model[3].input_bn, nn.BatchNorm2d)
    assert isinstance(model[6].input_bn, nn.BatchNorm1d)
    assert model.binarize_info.removed_activations == []  # BN re-centres: ReLUs may stay
    never = binarize(float_model, "xnor", input_bn="never", example_input=torch.randn(1, 3, 16, 16))
    assert never.binarize_info.added_norms == []
    assert never.binarize_info.removed_activations == ["1", "4"]


def test_pretrained_like_weights_are_carried_over_to_zoo_variants():
    float_model = zoo.create("shufflenet_v2_x0_5", num_classes=10)
    with torch.no_grad():
        for p in float_model.parameters():
            p.add_(torch.randn_like(p))  # make weights distinct from a fresh init
    model = binarize(float_model, "bwn")
    fsd = float_model.state_dict()
    assert all(torch.equal(v, fsd[k]) for k, v in model.state_dict().items())


def test_keep_patterns_and_flags():
    model = binarize(torchvision.models.resnet18(), "bwn", keep=["layer4.*"], keep_last=False)
    assert isinstance(model.fc, BinaryLinear)
    assert type(model.layer4[0].conv1) is nn.Conv2d
    assert model.binarize_info.kept_float["layer4.0.conv1"] == "kept (keep=)"
    model = binarize(torchvision.models.resnet18(), "bwn", keep_first=False)
    assert isinstance(model.conv1, BinaryConv2d)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="'bwn' or 'xnor'"):
        binarize(nn.Linear(2, 2), "ternary")
    with pytest.raises(TypeError, match="nn.Module"):
        binarize("resnet18", "bwn")
    twice = binarize(torchvision.models.resnet18(), "bwn")
    with pytest.raises(ValueError, match="already binarized"):
        binarize(twice, "xnor")
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear"):
        binarize(nn.ReLU(), "bwn")
    bad = torchvision.models.resnet18()
    bad.default_cfg = {"first_conv": "nope", "classifier": "fc"}
    with pytest.raises(ValueError, match="names no Conv2d/Linear"):
        binarize(bad, "bwn")
