"""Counts checked against independent figures: torchvision and pytorchcv models built side
by side, the published exact figures, torchvision's own GFLOPS metadata, and fvcore."""

import warnings

import pytest
import torch
import torchvision

import zoo
from zoo.reproduce import complexity_rows

warnings.filterwarnings("ignore", category=UserWarning)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


TORCHVISION_TWINS = {
    "squeezenet1_0": "squeezenet1_0",
    "squeezenet1_1": "squeezenet1_1",
    "mobilenet_v2": "mobilenet_v2",
    "alexnet": "alexnet",
    "resnet18": "resnet18",
    "shufflenet_v2_x0_5": "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5": "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0": "shufflenet_v2_x2_0",
}

PYTORCHCV_TWINS = {
    "mobilenet_v1": "mobilenet_w1",
    "mobilenet_v1_x0_75": "mobilenet_w3d4",
    "mobilenet_v1_x0_5": "mobilenet_wd2",
    "mobilenet_v1_x0_25": "mobilenet_wd4",
    "shufflenet_g1": "shufflenet_g1_w1",
    "shufflenet_g2": "shufflenet_g2_w1",
    "shufflenet_g3": "shufflenet_g3_w1",
    "shufflenet_g4": "shufflenet_g4_w1",
    "shufflenet_g8": "shufflenet_g8_w1",
    "shufflenet_g3_x0_5": "shufflenet_g3_wd2",
    "shufflenet_g1_x0_5": "shufflenet_g1_wd2",
    "squeezenet1_0": "squeezenet_v1_0",
    "squeezenet1_1": "squeezenet_v1_1",
    "squeezenet1_0_bypass_simple": "squeezeresnet_v1_0",
}

# Exact parameter counts from the reference tables (paper / common ports / torchvision).
PUBLISHED_PARAMS = {
    "shufflenet_g1": 1531936,
    "shufflenet_g2": 1733848,
    "shufflenet_g3": 1865728,
    "shufflenet_g4": 1968344,
    "shufflenet_g8": 2434768,
    "shufflenet_g3_x0_5": 718324,
    "shufflenet_g1_x0_5": 534484,
    "shufflenet_v2_x0_5": 1366792,
    "shufflenet_v2_x1_0": 2278604,
    "shufflenet_v2_x1_5": 3503624,
    "shufflenet_v2_x2_0": 7393996,
    "mobilenet_v1": 4231976,
    "mobilenet_v1_x0_75": 2585560,
    "mobilenet_v1_x0_5": 1331592,
    "mobilenet_v1_x0_25": 470072,
    "mobilenet_v2": 3504872,
    "squeezenet1_0": 1248424,
    "squeezenet1_1": 1235496,
}


@pytest.mark.parametrize("ours, theirs", TORCHVISION_TWINS.items())
def test_params_equal_torchvision(ours, theirs):
    assert n_params(zoo.create(ours)) == n_params(torchvision.models.get_model(theirs))


@pytest.mark.parametrize("ours, theirs", PYTORCHCV_TWINS.items())
def test_params_equal_pytorchcv(ours, theirs):
    from pytorchcv.model_provider import get_model

    assert n_params(zoo.create(ours)) == n_params(get_model(theirs, pretrained=False))


@pytest.mark.parametrize("name, params", PUBLISHED_PARAMS.items())
def test_params_equal_published(name, params):
    assert zoo.count(name, fvcore=False).params == params


def test_shufflenet_quarter_width_matches_pytorchcv_with_its_stem():
    """pytorchcv scales the stem to 6 channels at 0.25x; with that stem the body matches."""
    from pytorchcv.model_provider import get_model

    from zoo.models.shufflenet_v1 import ShuffleNetV1

    ours = ShuffleNetV1(groups=3, width=0.25, stem_chs=6)
    assert n_params(ours) == n_params(get_model("shufflenet_g3_wd4")) == 305902


def test_megvii_shufflenet_1_5x_params_without_classifier_bias():
    # Megvii's 1.5x g3 checkpoint: 3,441,168 params with no classifier bias (1000 classes).
    assert zoo.count("shufflenet_g3_x1_5", fvcore=False).params - 1000 == 3441168


@pytest.mark.parametrize(
    "ours, weights",
    [
        ("squeezenet1_0", "SqueezeNet1_0_Weights"),
        ("squeezenet1_1", "SqueezeNet1_1_Weights"),
        ("mobilenet_v2", "MobileNet_V2_Weights"),
        ("shufflenet_v2_x0_5", "ShuffleNet_V2_X0_5_Weights"),
        ("shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights"),
        ("shufflenet_v2_x1_5", "ShuffleNet_V2_X1_5_Weights"),
        ("shufflenet_v2_x2_0", "ShuffleNet_V2_X2_0_Weights"),
        ("resnet18", "ResNet18_Weights"),
        ("alexnet", "AlexNet_Weights"),
    ],
)
def test_macs_match_torchvision_metadata(ours, weights):
    """torchvision's weights carry GFLOPS (= GMACs, rounded to 3 decimals) measured by itself."""
    meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
    assert zoo.count(ours, fvcore=False).macs / 1e9 == pytest.approx(meta["_ops"], abs=1.5e-3)


@pytest.mark.parametrize(
    "name",
    [
        "shufflenet_g3",
        "shufflenet_g8_x0_5",
        "mobilenet_v1_x0_5",
        "squeezenet1_0_bypass_complex",
        "shufflenet_v2_x1_0",
    ],
)
def test_paper_macs_equal_fvcore_conv_plus_linear(name):
    """An independent counter: fvcore's per-operator split, conv and linear only."""
    c = zoo.count(name)
    by_op = c.fvcore_by_operator
    assert c.macs == by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0)
    assert c.fvcore_macs > c.macs  # fvcore also counts BN/pooling


def test_published_complexity_within_tolerance():
    """Every published params/MACs/size figure is met, or is a documented known deviation."""
    rows = complexity_rows()
    assert len(rows) > 60
    unexplained = [(r.model, r.quantity, f"{r.diff:+.1%}") for r in rows if not r.ok and not r.note]
    assert unexplained == []
    exact_macs = [r for r in rows if r.quantity.startswith("macs") and not r.approx]
    assert len(exact_macs) >= 20
    assert all(abs(r.diff) <= 0.02 for r in exact_macs if not r.note)


@pytest.mark.parametrize("width, mmacs", [(1.0, 569), (0.75, 325), (0.5, 149), (0.25, 41)])
def test_mobilenet_v1_width_table(width, mmacs):
    name = {
        1.0: "mobilenet_v1",
        0.75: "mobilenet_v1_x0_75",
        0.5: "mobilenet_v1_x0_5",
        0.25: "mobilenet_v1_x0_25",
    }[width]
    assert zoo.count(name, fvcore=False).macs / 1e6 == pytest.approx(mmacs, rel=0.02)


@pytest.mark.parametrize("res, mmacs", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_mobilenet_v1_resolution_table(res, mmacs):
    assert zoo.count("mobilenet_v1", input_size=res, fvcore=False).macs / 1e6 == pytest.approx(
        mmacs, rel=0.02
    )


@pytest.mark.parametrize("groups, mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_table1(groups, mflops):
    assert zoo.count(f"shufflenet_g{groups}", fvcore=False).macs / 1e6 == pytest.approx(
        mflops, rel=0.02
    )


def test_count_fields_and_size():
    c = zoo.count("squeezenet1_0")
    assert c.size_mb == pytest.approx(1248424 * 4 / 2**20)
    assert "aten::max_pool2d" in c.fvcore_skipped
    assert c.input_size == (3, 224, 224)
    assert (
        zoo.count(zoo.create("squeezenet1_0"), input_size=(3, 224, 224), fvcore=False).macs
        == c.macs
    )
    with pytest.raises(ValueError, match="input_size"):
        zoo.count("squeezenet1_0", input_size=(1, 2, 3, 4))


def test_layer_macs_by_hand_on_a_tiny_net():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3, 2, 1, groups=4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    from zoo.counting import layer_macs

    found = layer_macs(net, (3, 8, 8))
    assert found == {"0": 8 * 8 * 8 * 3 * 9, "1": 8 * 4 * 4 * 2 * 9, "3": 128 * 10}
