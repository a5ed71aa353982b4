"""Registry behaviour a timm user relies on: names, wildcards, errors, metadata."""

import pytest
import torch

import zoo
from zoo.registry import UnknownModelError

FAMILIES = {
    "squeezenet",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
    "alexnet",
    "resnet",
}


def test_every_requested_name_is_registered():
    names = set(zoo.list_models())
    expected = {
        "squeezenet1_0",
        "squeezenet1_1",
        "squeezenet1_0_bypass_simple",
        "squeezenet1_0_bypass_complex",
        "mobilenet_v1",
        "mobilenet_v1_x0_75",
        "mobilenet_v1_x0_5",
        "mobilenet_v1_x0_25",
        "mobilenet_v2",
        "alexnet",
        "resnet18",
    }
    expected |= {f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")}
    for g in (1, 2, 3, 4, 8):
        expected |= {f"shufflenet_g{g}"} | {
            f"shufflenet_g{g}_x{w}" for w in ("0_25", "0_5", "1_5", "2_0")
        }
    assert expected <= names
    assert FAMILIES <= set(zoo.list_families())


def test_shufflenet_g3_is_v1_1x_3_groups():
    model = zoo.create("shufflenet_g3")
    assert model.groups == 3
    assert model.features.stage2[0].expand.conv.groups == 3
    assert [
        s[-1].expand.conv.out_channels
        for s in (model.features.stage2, model.features.stage3, model.features.stage4)
    ] == [240, 480, 960]
    assert zoo.model_info("shufflenet_g3")["family"] == "shufflenet_v1"


def test_list_models_wildcards_and_lists():
    assert zoo.list_models("mobilenet_v1*") == [
        "mobilenet_v1",
        "mobilenet_v1_x0_5",
        "mobilenet_v1_x0_25",
        "mobilenet_v1_x0_75",
    ]
    assert set(zoo.list_models(["alexnet", "resnet*"])) == {"alexnet", "resnet18"}
    assert zoo.list_models("no_such_*") == []
    assert len(zoo.list_models("shufflenet_g?")) == 5


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="shufflenet_g3") as err:
        zoo.create("shufflenet_g33")
    assert "Did you mean" in str(err.value)
    with pytest.raises(UnknownModelError, match="mobilenet_v2"):
        zoo.model_info("mobilenetv2")


@pytest.mark.parametrize(
    "bad, exc",
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("10", TypeError), (True, TypeError)],
)
def test_bad_num_classes_and_in_chans(bad, exc):
    if bad != 0:  # num_classes=0 is timm's pooled-features model (tests/test_factory.py)
        with pytest.raises(exc, match="num_classes"):
            zoo.create("shufflenet_v2_x0_5", num_classes=bad)
    with pytest.raises(exc, match="in_chans"):
        zoo.create("shufflenet_v2_x0_5", in_chans=bad)


def test_model_info_and_default_cfg():
    info = zoo.model_info("mobilenet_v1_x0_25")
    assert info["family"] == "mobilenet_v1"
    assert "MobileNets" in info["paper"]
    assert info["published"]["top1"] == 50.6
    assert info["input_size"] == (3, 224, 224)
    model = zoo.create("mobilenet_v1_x0_25", num_classes=5, in_chans=1)
    cfg = model.default_cfg
    assert cfg["input_size"] == (1, 224, 224) and cfg["num_classes"] == 5
    for key in ("mean", "std", "crop_pct", "first_conv", "classifier"):
        assert key in cfg
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d)
    assert modules[cfg["first_conv"]].in_channels == 1
    assert modules[cfg["classifier"]] is model.get_classifier()


def test_first_conv_and_classifier_names_resolve_for_every_model():
    for name in zoo.list_models():
        model = zoo.create(name)
        modules = dict(model.named_modules())
        assert isinstance(modules[model.default_cfg["first_conv"]], torch.nn.Conv2d), name
        assert modules[model.default_cfg["classifier"]] is model.get_classifier(), name


def test_register_model_rejects_duplicates():
    from zoo.registry import ModelCfg, register_model

    with pytest.raises(ValueError, match="already registered"):

        @register_model(ModelCfg(family="x", paper="-"))
        def resnet18(**kwargs):  # noqa: F811
            return None
