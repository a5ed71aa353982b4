"""The authors' own ShuffleNet checkpoints (megvii-model/ShuffleNet-Series) load exactly.

``AuthorsV1`` / ``AuthorsV2`` below are an independent re-implementation of the authors'
released ``ShuffleNetV1`` / ``ShuffleNetV2`` (read from their network.py/blocks.py): their
module names (so their state-dict keys), their shuffle (``mid/g`` groups, after the depthwise
conv), their v2 split (``x[0::2]`` kept, ``x[1::2]`` transformed, no shuffle), no classifier
bias. The only liberty: adaptive average pooling instead of their ``AvgPool2d(7)``, the same
at 224 px and it lets the tests run on small images. Random weights and random BN statistics,
saved as they save (``{'state_dict': {'module.' + key: tensor}}``), loaded through
``zoo.create``: the logits must agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import zoo
from zoo.pretrained import StateDictMismatchError, WeightsError, manifests

V1_CHANNELS = {
    3: {0.5: (12, 120, 240, 480), 1.0: (24, 240, 480, 960), 1.5: (24, 360, 720, 1440),
        2.0: (48, 480, 960, 1920)},
    8: {0.5: (16, 192, 384, 768), 1.0: (24, 384, 768, 1536), 1.5: (24, 576, 1152, 2304),
        2.0: (48, 768, 1536, 3072)},
}  # fmt: skip
V2_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
V1_NAMES = {0.5: "_x0_5", 1.0: "", 1.5: "_x1_5", 2.0: "_x2_0"}
V2_NAMES = {0.5: "x0_5", 1.0: "x1_0", 1.5: "x1_5", 2.0: "x2_0"}
# g=8 below 2.0x: no channel permutation exists, the authors' shuffle order is needed.
NEEDS_ORDER = {(8, 0.5), (8, 1.0), (8, 1.5)}


# ----------------------------------------------------------------------------- the authors


class AuthorsV1Block(nn.Module):
    def __init__(self, inp, oup, group, first_group, mid, stride):
        super().__init__()
        self.stride, self.group = stride, group
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid, 1, 1, 0, groups=1 if first_group else group, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid, outputs, 1, 1, 0, groups=group, bias=False), nn.BatchNorm2d(outputs)
        )
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(3, 2, 1)

    def shuffle(self, x):
        n, c, h, w = x.shape  # (c/g, g) -> (g, c/g): channel i*g + j goes to j*(c/g) + i
        return x.reshape(n, c // self.group, self.group, h, w).permute(0, 2, 1, 3, 4).reshape(
            n, c, h, w
        )

    def forward(self, x):
        y = self.branch_main_1(x)
        if self.group > 1:
            y = self.shuffle(y)
        y = self.branch_main_2(y)
        if self.stride == 1:
            return torch.relu(y + x)
        return torch.cat([self.branch_proj(x), torch.relu(y)], 1)


class AuthorsV1(nn.Module):
    def __init__(self, group, width, n_class=1000):
        super().__init__()
        stem, *outs = V1_CHANNELS[group][width]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, inp = [], stem
        for stage, (out, repeats) in enumerate(zip(outs, (4, 8, 4), strict=True)):
            for i in range(repeats):
                first = stage == 0 and i == 0
                blocks.append(AuthorsV1Block(inp, out, group, first, out // 4, 2 if i == 0 else 1))
                inp = out
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Linear(outs[-1], n_class, bias=False))

    def forward(self, x):
        x = self.features(self.maxpool(self.first_conv(x)))
        return self.classifier(x.mean((2, 3)))


class AuthorsV2Block(nn.Module):
    def __init__(self, inp, oup, mid, stride):
        super().__init__()
        self.stride = stride
        outputs = oup - inp
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid, 1, 1, 0, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, outputs, 1, 1, 0, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        )  # fmt: skip
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, 2, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, inp, 1, 1, 0, bias=False), nn.BatchNorm2d(inp),
                nn.ReLU(inplace=True),
            )  # fmt: skip

    def forward(self, x):
        if self.stride == 1:
            return torch.cat([x[:, 0::2], self.branch_main(x[:, 1::2])], 1)
        return torch.cat([self.branch_proj(x), self.branch_main(x)], 1)


class AuthorsV2(nn.Module):
    def __init__(self, width, n_class=1000):
        super().__init__()
        stem, *outs, last = V2_CHANNELS[width]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, inp = [], stem
        for out, repeats in zip(outs, (4, 8, 4), strict=True):
            for i in range(repeats):
                if i == 0:
                    blocks.append(AuthorsV2Block(inp, out, out // 2, 2))
                else:
                    blocks.append(AuthorsV2Block(inp // 2, out, out // 2, 1))
                inp = out
        self.features = nn.Sequential(*blocks)
        self.conv_last = nn.Sequential(
            nn.Conv2d(inp, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Sequential(nn.Linear(last, n_class, bias=False))

    def forward(self, x):
        x = self.conv_last(self.features(self.maxpool(self.first_conv(x))))
        return self.classifier(x.mean((2, 3)))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics of a realistic scale (activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return model.eval()


def _save_authors_way(model: nn.Module, path: Path) -> Path:
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return path


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g) * 255  # their inputs are BGR in 0..255


def _assert_same_logits(ours: nn.Module, theirs: nn.Module, size: int = 64) -> None:
    x = _image(size=size)
    with torch.no_grad():
        want, got = theirs(x), ours.eval()(x)
    scale = want.abs().max().item()
    assert scale > 1e-2  # the random network is not degenerate
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, scale)


# ----------------------------------------------------------------------------- logits


@pytest.mark.parametrize("group", [3, 8])
@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_v1_authors_file_gives_authors_logits(tmp_path, group, width):
    theirs = _randomize(AuthorsV1(group, width), seed=int(10 * width) + group)
    path = _save_authors_way(theirs, tmp_path / "v1.pth.tar")
    arch = f"shufflenet_g{group}{V1_NAMES[width]}"
    kwargs = {"shuffle_order": "megvii"} if (group, width) in NEEDS_ORDER else {}
    ours = zoo.create(arch, pretrained=str(path), **kwargs)
    _assert_same_logits(ours, theirs)


def test_v1_permutation_needs_the_order_option_where_none_exists(tmp_path):
    theirs = _randomize(AuthorsV1(8, 1.0), seed=1)
    path = _save_authors_way(theirs, tmp_path / "v1.pth.tar")
    with pytest.raises(StateDictMismatchError, match="shuffle_order='megvii'"):
        zoo.create("shufflenet_g8", pretrained=str(path))


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_v2_authors_file_gives_authors_logits(tmp_path, width):
    theirs = _randomize(AuthorsV2(width), seed=int(10 * width))
    path = _save_authors_way(theirs, tmp_path / "v2.pth.tar")
    ours = zoo.create(f"shufflenet_v2_{V2_NAMES[width]}_megvii", pretrained=str(path))
    _assert_same_logits(ours, theirs)


def test_v2_authors_file_into_torchvision_layout_is_refused(tmp_path):
    path = _save_authors_way(_randomize(AuthorsV2(1.0), 0), tmp_path / "v2.pth.tar")
    with pytest.raises(StateDictMismatchError, match="shufflenet_v2_x1_0_megvii"):
        zoo.create("shufflenet_v2_x1_0", pretrained=str(path))


# ----------------------------------------------------------------------------- refusals


def test_unexpected_classifier_bias_is_refused_and_listed(tmp_path):
    theirs = _randomize(AuthorsV1(3, 1.0), 0)
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    state["module.classifier.0.bias"] = torch.zeros(1000)
    path = tmp_path / "with_bias.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(StateDictMismatchError, match=r"classifier\.0\.bias"):
        zoo.create("shufflenet_g3", pretrained=str(path))


def test_mismatching_keys_are_refused_and_listed(tmp_path):
    theirs = _randomize(AuthorsV1(3, 1.0), 0)
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    state["module.features.3.branch_main_1.9.weight"] = state.pop(
        "module.features.3.branch_main_1.0.weight"
    )
    path = tmp_path / "renamed.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(StateDictMismatchError) as err:
        zoo.create("shufflenet_g3", pretrained=str(path))
    assert "features.3.branch_main_1.0.weight" in str(err.value)  # missing
    assert "features.3.branch_main_1.9.weight" in str(err.value)  # unexpected


def test_wrong_width_is_refused_not_mapped_by_position(tmp_path):
    path = _save_authors_way(_randomize(AuthorsV1(3, 0.5), 0), tmp_path / "half.pth.tar")
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        zoo.create("shufflenet_g3", pretrained=str(path))


# ----------------------------------------------------------------------------- parameter counts


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "arch, kwargs, theirs, expected",
    [
        ("shufflenet_g3_x1_5", {"head_bias": False}, lambda: AuthorsV1(3, 1.5), 3441168),
        ("shufflenet_v2_x1_0_megvii", {}, lambda: AuthorsV2(1.0), 2278760),
        ("shufflenet_g8", {"head_bias": False, "shuffle_order": "megvii"},
         lambda: AuthorsV1(8, 1.0), None),
        ("shufflenet_v2_x2_0_megvii", {}, lambda: AuthorsV2(2.0), None),
        ("shufflenet_v2_x0_5_megvii", {}, lambda: AuthorsV2(0.5), None),
    ],
)  # fmt: skip
def test_params_equal_the_authors_models(arch, kwargs, theirs, expected):
    ours = _n_params(zoo.create(arch, **kwargs))
    assert ours == _n_params(theirs())
    if expected is not None:
        assert ours == expected


# ----------------------------------------------------------------------------- manifests


def _megvii_manifests():
    return [m for m in manifests.load_manifests().values() if m.tag == "megvii_in1k"]


def test_every_published_checkpoint_has_a_manifest():
    names = {m.name for m in _megvii_manifests()}
    v1 = {f"shufflenet_g{g}{V1_NAMES[w]}.megvii_in1k" for g in (3, 8) for w in V1_NAMES}
    v2 = {f"shufflenet_v2_{V2_NAMES[w]}_megvii.megvii_in1k" for w in V2_NAMES}
    assert names == v1 | v2
    for m in _megvii_manifests():
        assert m.converter == "megvii"
        assert m.files[0].manual and "1drv.ms" in m.files[0].manual
        p = m.preprocessing
        assert p["channel_order"] == "BGR" and p["value_range"] == [0.0, 255.0]
        assert p["mean"] == [0.0, 0.0, 0.0] and p["std"] == [1.0, 1.0, 1.0]
        assert p["resize_mode"] == "opencv" and p["resize_size"] == 256


def test_manual_download_missing_names_page_and_target(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        zoo.create("shufflenet_g3", pretrained="megvii_in1k")
    message = str(err.value)
    assert "1drv.ms" in message
    spec = manifests.get_manifest("shufflenet_g3", "megvii_in1k").files[0]
    target = tmp_path / "weights" / spec.file_name
    assert str(target) in message


@pytest.mark.parametrize(
    "arch, theirs",
    [
        ("shufflenet_g8", lambda: AuthorsV1(8, 1.0)),
        ("shufflenet_v2_x0_5_megvii", lambda: AuthorsV2(0.5)),
    ],
)  # fmt: skip
def test_manual_download_in_place_loads(tmp_path, monkeypatch, arch, theirs):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    spec = manifests.get_manifest(arch, "megvii_in1k").files[0]
    model = _randomize(theirs(), 3)
    (tmp_path / "weights").mkdir()
    _save_authors_way(model, tmp_path / "weights" / spec.file_name)
    ours = zoo.create(arch, pretrained="megvii_in1k")
    assert ours.pretrained_cfg["channel_order"] == "BGR"
    _assert_same_logits(ours, model)


# ----------------------------------------------------------------------------- preprocessing


def _reference_resize(img: np.ndarray, size: int) -> np.ndarray:
    """The authors' OpencvResize: shorter side to ``size``, the other int(x + 0.5); OpenCV's
    INTER_LINEAR (half-pixel centres, source clamped to the border, no antialiasing)."""
    h, w = img.shape[:2]
    if h < w:
        out_h, out_w = size, int(size / h * w + 0.5)
    else:
        out_h, out_w = int(size / w * h + 0.5), size

    def taps(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = taps(out_h, h)
    x0, x1, fx = taps(out_w, w)
    img = img.astype(np.float64)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _reference_eval(img: np.ndarray) -> np.ndarray:
    resized = _reference_resize(img, 256)
    h, w = resized.shape[:2]
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    crop = resized[top : top + 224, left : left + 224]
    return crop[:, :, ::-1].transpose(2, 0, 1)  # BGR, CHW, 0..255, no normalisation


@pytest.mark.parametrize("shape", [(300, 451), (517, 333), (256, 256), (180, 240)])
def test_preprocessing_equals_the_authors_rule(shape):
    rng = np.random.default_rng(sum(shape))
    base = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    # a smooth image with sharp edges: resampling mistakes show up as large differences
    img = np.asarray(Image.fromarray(base).resize(shape[::-1], Image.NEAREST))
    img = np.clip(img.astype(int) + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
    transform = zoo.pretrained.transforms("shufflenet_g3.megvii_in1k")
    got = transform(Image.fromarray(img)).numpy()
    want = _reference_eval(img)
    assert got.shape == want.shape == (3, 224, 224)
    assert np.abs(got - want).max() < 1.0


def test_manifest_preprocessing_is_readable_json():
    for m in _megvii_manifests():
        raw = json.loads(m.path.read_text())
        assert raw["preprocessing"]["interpolation"] == "bilinear"
