"""The timm model API on every family and binary twin, checked against forward hooks on the
full model, measured strides, torch's own pooling and an un-checkpointed backward pass."""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
import zoo.models._base as base
from zoo.binary import binarize
from zoo.models.features import FeatureInfo, build_features

# One small variant per family (every family is covered).
FAMILY_MODELS = [
    "squeezenet1_1",
    "mobilenet_v1_x0_25",
    "mobilenet_v2",
    "shufflenet_g3_x0_25",
    "shufflenet_v2_x0_5",
    "alexnet",
    "resnet18",
]
# Unpadded convs / ceil-mode pools: feature sides are only close to input / reduction.
VALID_PADDING = {"squeezenet1_1", "alexnet"}
SIDE = 64


@functools.cache
def _built(name, mode):
    torch.manual_seed(0)
    model = zoo.create(name)
    if mode:
        model = binarize(model, mode)
    return model.eval()


def _model(name, mode=None):
    """A fresh copy (tests may change it) of a model built once per session."""
    return copy.deepcopy(_built(name, mode))


def _hooked(model, x):
    """Outputs of every feature_info module during a plain forward of the full model."""
    captured = {}
    hooks = [
        model.get_submodule(f["module"]).register_forward_hook(
            lambda _m, _i, out, key=f["module"]: captured.__setitem__(key, out.detach().clone())
        )
        for f in model.feature_info
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [captured[f["module"]] for f in model.feature_info]


@pytest.mark.parametrize("mode", [None, "bwn", "xnor"])
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_features_only_equals_hooks_on_the_full_model(name, mode):
    model = _model(name, mode)
    x = torch.randn(2, 3, SIDE, SIDE)
    expected = _hooked(model, x)
    feats = build_features(model)
    with torch.no_grad():
        got = feats(x)
    assert len(got) == len(expected) == len(model.feature_info)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6)
    # The head is dropped; the body is kept under the model's own names.
    assert not any(k.startswith(("classifier", "pre_logits")) for k in feats.state_dict())
    assert set(feats.state_dict()) <= set(model.state_dict())
    assert feats.feature_info.channels() == [t.shape[1] for t in got]


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_out_indices_pick_levels_and_cut_the_body(name):
    model = _model(name)
    x = torch.randn(1, 3, SIDE, SIDE)
    expected = _hooked(model, x)
    n = len(model.feature_info)
    feats = build_features(model, out_indices=(0, -2))
    with torch.no_grad():
        got = feats(x)
    assert [t.shape for t in got] == [expected[0].shape, expected[n - 2].shape]
    assert torch.allclose(got[1], expected[n - 2], atol=1e-6)
    assert feats.feature_info.module_name() == [
        model.feature_info[0]["module"],
        model.feature_info[n - 2]["module"],
    ]
    # Stages past the deepest level asked for are gone.
    last_kept = model.feature_info[n - 2]["module"].split(".")[1]
    assert list(feats.features._modules)[-1] == last_kept
    with pytest.raises(ValueError, match="out of range"):
        build_features(model, out_indices=(n,))


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_strides_match_feature_info(name):
    model = _model(name)
    side = 128
    with torch.no_grad():
        maps = build_features(model)(torch.randn(1, 3, side, side))
    for info, fmap in zip(model.feature_info, maps, strict=True):
        assert fmap.shape[1] == info["num_chs"], info
        measured = side / fmap.shape[-1]
        if name in VALID_PADDING:  # nearest power of two to the measured stride
            assert 2 ** round(math.log2(measured)) == info["reduction"], (info, fmap.shape)
        else:
            assert measured == info["reduction"], (info, fmap.shape)
    reductions = [f["reduction"] for f in model.feature_info]
    assert reductions == sorted(set(reductions))


def test_feature_info_object_accessors():
    levels = [
        {"num_chs": 8, "reduction": 2, "module": "features.a"},
        {"num_chs": 16, "reduction": 4, "module": "features.b"},
        {"num_chs": 32, "reduction": 8, "module": "features.c"},
    ]
    info = FeatureInfo(levels, (0, 2))
    assert info.channels() == [8, 32]
    assert info.reduction() == [2, 8]
    assert info.module_name() == ["features.a", "features.c"]
    assert info.channels(1) == 16 and info.reduction([1, 2]) == [4, 8]
    assert info.get_dicts(keys=("num_chs",)) == [{"num_chs": 8}, {"num_chs": 32}]
    assert len(info) == 3 and info[1]["module"] == "features.b"


@pytest.mark.parametrize("mode", [None, "xnor"])
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_forward_intermediates_equals_hooks(name, mode):
    model = _model(name, mode)
    x = torch.randn(1, 3, SIDE, SIDE)
    expected = _hooked(model, x)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
        for g, e in zip(inter, expected, strict=True):
            assert torch.allclose(g, e, atol=1e-6)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in only] == [t.shape for t in expected[-2:]]
        assert torch.allclose(only[-1], expected[-1], atol=1e-6)
        early, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.allclose(early, expected[0]) and torch.allclose(first[0], expected[0])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", ["mobilenet_v1_x0_25", "shufflenet_v2_x0_5"])
def test_grad_checkpointing_gives_the_same_gradients(name, monkeypatch):
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=5).train()
    x = torch.randn(2, 3, SIDE, SIDE)

    def grads():
        model.zero_grad()
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    calls = []
    real = base.checkpoint
    monkeypatch.setattr(base, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert len(calls) == len(list(model.features.children()))
    assert plain.keys() == checkpointed.keys()
    for key, grad in plain.items():
        assert torch.allclose(grad, checkpointed[key], atol=1e-5, rtol=1e-4), key
    calls.clear()
    with torch.no_grad():
        model.eval()(x)
    assert not calls  # only while training


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_reset_classifier_zero_gives_pooled_features(name):
    model = _model(name)
    x = torch.randn(2, 3, SIDE, SIDE)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        if name == "alexnet":  # its fully connected layers are the pre-logits, on 6x6 pooling
            expected = model.pre_logits(torch.flatten(F.adaptive_avg_pool2d(feats, 6), 1))
        else:
            expected = torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1)
        assert torch.allclose(out, expected, atol=1e-5)
        model.reset_classifier(0, global_pool="max")
        if name != "alexnet":
            expected = torch.flatten(F.adaptive_max_pool2d(feats, 1), 1)
            assert torch.allclose(model(x), expected, atol=1e-5)
            model.reset_classifier(0, global_pool="")
            assert torch.allclose(model(x), torch.flatten(feats, 1), atol=1e-6)
        model.reset_classifier(4, global_pool="avg")
        assert model(x).shape == (2, 4)


def test_global_pool_argument_and_its_errors():
    x = torch.randn(1, 3, SIDE, SIDE)
    model = zoo.create("resnet18", global_pool="max").eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = torch.flatten(F.adaptive_max_pool2d(feats, 1), 1)
        assert torch.allclose(model.forward_head(feats, pre_logits=True), pooled)
    with pytest.raises(ValueError, match="num_classes=0"):
        model.reset_classifier(10, global_pool="")
    with pytest.raises(ValueError, match="'avg', 'max', ''"):
        zoo.create("resnet18", global_pool="median")
    with pytest.raises(ValueError, match=">= 0"):
        model.reset_classifier(-1)
    with pytest.raises(ValueError, match="need global_pool"):
        zoo.create("alexnet").reset_classifier(0, global_pool="")
