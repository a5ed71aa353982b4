"""Every registered model runs forward and backward, with changed classes and channels,
and keeps the timm-style methods working."""

import pytest
import torch

import zoo
from zoo.registry import get_cfg

ALL = [n for n in zoo.list_models() if not get_cfg(n).binary]  # binary: tests/binary


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_changed_classes_and_channels(name):
    model = zoo.create(name, num_classes=7, in_chans=1)
    x = torch.randn(2, 1, 64, 64)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_features_head_and_classifier_reset(name):
    model = zoo.create(name).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.dim() == 4 and feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.dim() == 2
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
        assert model.default_cfg["num_classes"] == 3


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 64, 64), "4-D NCHW"),
        ((1, 1, 64, 64), "3 input channels"),
        ((1, 4, 64, 64), "in_chans=4"),
        ((1, 3, 8, 8), "smaller than"),
    ],
)
def test_bad_input_shape_errors(shape, match):
    model = zoo.create("shufflenet_g3")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_wrong_input_dtype_names_the_fix():
    model = zoo.create("shufflenet_g3")
    with pytest.raises(TypeError, match=r"x.to\(torch.float32\) or model.to\(torch.float64\)"):
        model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(TypeError, match="convert the images to float"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="must be an int"):
        model.reset_classifier(2.5)


@pytest.mark.parametrize("res", [128, 160, 192, 224])
def test_mobilenet_v1_any_resolution(res):
    model = zoo.create("mobilenet_v1_x0_25").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, res, res)).shape == (1, 1000)
        assert model.forward_features(torch.randn(1, 3, res, res)).shape[-1] == res // 32


def test_channel_shuffle_matches_explicit_permutation():
    from zoo.blocks import channel_shuffle

    x = torch.arange(12.0).view(1, 12, 1, 1)
    # groups=3 of 4 channels each: take the first channel of each group, then the second...
    expected = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert channel_shuffle(x, 3).flatten().tolist() == expected
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(torch.zeros(1, 10, 1, 1), 3)


def test_fire_bypass_variants():
    from zoo.blocks import Fire

    plain, simple = Fire(128, 16, 64, 64), Fire(128, 16, 64, 64, bypass="simple")
    simple.load_state_dict(plain.state_dict())
    x = torch.randn(1, 128, 8, 8)
    assert torch.allclose(simple(x), plain(x) + x)
    with pytest.raises(ValueError, match="in == out"):
        Fire(96, 16, 64, 64, bypass="simple")
    complex_ = Fire(96, 16, 64, 64, bypass="complex")
    assert isinstance(complex_.bypass, torch.nn.Conv2d)


def test_published_table_is_a_leaf_and_feeds_the_cfgs():
    import ast
    from pathlib import Path

    import zoo.published as published

    tree = ast.parse(Path(published.__file__).read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m == "zoo" or m.startswith("zoo.")]
    # The XNOR-Net paper's Table 1 (AlexNet) and every float model's cfg come from the table.
    assert published.published("xnor_alexnet") == {"top1": 44.2, "top5": 69.2}
    for name in ALL:
        assert get_cfg(name).published == published.published(name), name
        assert get_cfg(name).published_source == published.published_source(name), name
