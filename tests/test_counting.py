"""Counts checked against independent figures: torchvision and pytorchcv models built side
by side, the published exact figures, torchvision's own GFLOPS metadata, and fvcore."""

import warnings

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

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
    """torchvision's weights carry GFLOPS (= GMACs, rounded to 3 decimals) measured by itself:
    ours, rounded the same way, is the same number. Measured: every difference before
    rounding is within 4.8e-4 GMACs (largest shufflenet_v2_x0_5: 0.040476 vs 0.040), so the
    bound is the rounding itself (5e-4), not the 1.5e-3 that let a 0.1 % error through."""
    meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
    gmacs = zoo.count(ours, fvcore=False).macs / 1e9
    assert round(gmacs, 3) == pytest.approx(meta["_ops"], abs=1e-9)


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


# Exact (not "~N") MACs figures hold within 0.3 %, except these, each measured and explained
# (bound = measured |difference| rounded up, so a real counting error of ~0.1 % still shows):
WIDER_MACS_BOUNDS = {
    ("alexnet", "macs"): 0.009,  # -0.81 %: the classic table's 720M is rounded to 2 digits
    ("resnet18", "macs"): 0.008,  # +0.78 %: "1.8G", rounded to 0.1G (half a unit is 2.8 %)
    ("mobilenet_v1_x0_5", "macs"): 0.0035,  # +0.33 %: 149M, the paper's rounding
    ("mobilenet_v1_x0_5", "macs@160"): 0.0075,  # +0.69 %: 76M, the paper's rounding
    ("shufflenet_g2", "macs"): 0.0065,  # +0.60 %
    ("shufflenet_g3", "macs"): 0.0035,  # +0.34 %
    ("shufflenet_g3", "macs_megvii"): 0.0045,  # -0.39 %
    ("shufflenet_g4", "macs"): 0.0105,  # +1.01 %: paper Table 1 (pytorchcv's params match)
    ("shufflenet_g8", "macs"): 0.0105,  # +1.00 %: paper Table 1 (pytorchcv's params match)
    ("shufflenet_g3_x0_5", "macs_megvii"): 0.0115,  # -1.08 %: Megvii's rounded 38M
    ("shufflenet_g8_x0_5", "macs_megvii"): 0.0125,  # +1.17 %: Megvii's rounded 40M
    # ShuffleNet v2 paper counts ~1 % more than torchvision's own metadata, which we match
    # to the rounding (test_macs_match_torchvision_metadata): -1.28, -0.75, -1.08, -1.31 %
    ("shufflenet_v2_x0_5", "macs"): 0.0135,
    ("shufflenet_v2_x0_5_megvii", "macs"): 0.0135,  # -1.28 %, the same paper figure
    ("shufflenet_v2_x1_0", "macs"): 0.008,
    ("shufflenet_v2_x1_5", "macs"): 0.0115,
    ("shufflenet_v2_x2_0", "macs"): 0.0135,
}
EXACT_MACS_BOUND = 0.003  # measured: the other 16 exact MACs rows are within 0.26 %


def test_published_complexity_within_tolerance():
    """Every published params/MACs/size figure is met, or is a documented known deviation;
    exact params figures exactly, exact MACs figures within the bounds measured above."""
    rows = complexity_rows()
    assert len(rows) > 60
    unexplained = [(r.model, r.quantity, f"{r.diff:+.1%}") for r in rows if not r.ok and not r.note]
    assert unexplained == []
    exact_params = [r for r in rows if r.quantity == "params"]
    assert len(exact_params) >= 19 and all(r.measured == r.published for r in exact_params)
    exact_macs = [r for r in rows if r.quantity.startswith("macs") and not r.approx and not r.note]
    assert len(exact_macs) >= 30
    too_far = [
        (r.model, r.quantity, f"{r.diff:+.3%}")
        for r in exact_macs
        if abs(r.diff) > WIDER_MACS_BOUNDS.get((r.model, r.quantity), EXACT_MACS_BOUND)
    ]
    assert too_far == []
    # every wider bound is still needed (else it should be tightened back to 0.3 %)
    used = {(r.model, r.quantity) for r in exact_macs if abs(r.diff) > EXACT_MACS_BOUND}
    assert used == set(WIDER_MACS_BOUNDS)


@pytest.mark.parametrize(
    "spec",
    [
        "squeezenet1_1.fashion_mnist",
        "mobilenet_v1_x0_5.fashion_mnist",
        "xnor_shufflenet_v2_x1_0.fashion_mnist_kd",
    ],
)
def test_count_of_named_weights_is_at_their_input_size(spec, monkeypatch):
    """``zoo.count("arch.tag")`` counts the model the weights make (their 1-channel 64 px input,
    their 10-class head), checked with torch's own FlopCounterMode (conv + matmul FLOPs / 2);
    at 224 px the count would be ~12x larger."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    c = zoo.count(spec, fvcore=False)
    model = zoo.create(spec.split(".")[0], num_classes=10, in_chans=1).eval()
    with FlopCounterMode(display=False) as flops:
        model(torch.zeros(1, 1, 64, 64))
    assert c.macs == flops.get_total_flops() // 2
    assert c.params == sum(p.numel() for p in model.parameters())
    assert tuple(c.input_size) == (1, 64, 64)


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
