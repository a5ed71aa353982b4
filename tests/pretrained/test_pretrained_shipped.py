"""Weight sets the zoo ships itself (``file`` entries): their head fixes the model's
``num_classes``/``in_chans`` unless the caller overrides it, and binary models ship as 1-bit
files (``zoo.save_binary``) that load through the same path, bit-exact.

References are the models that were saved, run on the same input.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo.pretrained import CorruptCheckpointError, load_state_dict

ARCH = "shufflenet_v2_x0_5"
BINARY_ARCH = "xnor_shufflenet_v2_x0_5"


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so a fresh init cannot pass for a loaded one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _ship(wdir: Path, write_manifest, arch: str, tag: str, src: Path, **extra) -> Path:
    """Copy ``src`` into the manifest folder and describe it as a shipped weight set."""
    dest = wdir / "fm" / src.name
    dest.parent.mkdir(exist_ok=True)
    dest.write_bytes(src.read_bytes())
    write_manifest(
        wdir,
        {
            "arch": arch,
            "tag": tag,
            "source": "zoo",
            "file": f"fm/{src.name}",
            "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
            "num_classes": 10,
            "in_chans": 1,
            "preprocessing": {
                "input_size": [1, 64, 64],
                "crop_pct": 1.0,
                "mean": [0.286],
                "std": [0.353],
            },  # fmt: skip
            **extra,
        },
    )
    return dest


@pytest.fixture
def shipped_float(zoo_env, write_manifest, tmp_path):
    _, wdir = zoo_env
    source = _randomized(zoo.create(ARCH, num_classes=10, in_chans=1))
    path = tmp_path / "float.pth"
    torch.save(source.state_dict(), path)
    _ship(wdir, write_manifest, ARCH, "toy", path)
    return source


def test_weights_decide_the_head_unless_told(shipped_float):
    x = torch.randn(2, 1, 64, 64)
    model = zoo.create(ARCH, pretrained="toy").eval()
    assert (model.num_classes, model.in_chans) == (10, 1)
    assert model.default_cfg["input_size"] == [1, 64, 64]
    with torch.no_grad():
        assert torch.allclose(model(x), shipped_float(x), atol=1e-5)
    same = zoo.create(f"{ARCH}.toy").eval()  # timm-style arch.tag name
    with torch.no_grad():
        assert torch.allclose(same(x), shipped_float(x), atol=1e-5)
    # Without weights the ImageNet defaults stay.
    assert zoo.create(ARCH).num_classes == 1000


def test_explicit_num_classes_gets_a_fresh_head_and_the_same_features(shipped_float):
    model = zoo.create(ARCH, pretrained="toy", num_classes=4).eval()
    assert model.get_classifier().out_features == 4
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            model.forward_features(x), shipped_float.forward_features(x), atol=1e-5
        )


def test_explicit_in_chans_adapts_the_first_conv(shipped_float):
    grey = torch.randn(2, 1, 64, 64)
    model = zoo.create(ARCH, pretrained="toy", in_chans=3).eval()
    assert model.in_chans == 3
    with torch.no_grad():
        # A grey image repeated over RGB sums back to the 1-channel weights.
        assert torch.allclose(model(grey.repeat(1, 3, 1, 1)), shipped_float(grey), atol=1e-4)


@pytest.fixture
def one_bit_file(tmp_path):
    torch.manual_seed(1)
    source = _randomized(zoo.create(BINARY_ARCH, num_classes=10, in_chans=1), seed=1)
    path = zoo.save_binary(source, tmp_path / "xnor.safetensors")
    return source, path


def test_one_bit_file_loads_bit_exact_as_a_tag(zoo_env, write_manifest, one_bit_file):
    source, path = one_bit_file
    _, wdir = zoo_env
    _ship(wdir, write_manifest, BINARY_ARCH, "toy", path, format="safetensors")
    model = zoo.create(BINARY_ARCH, pretrained="toy").eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    # The shipped file holds packed signs: a float copy of the same state is 6x larger here
    # (depthwise convs, BN, stem and classifier stay float in an XNOR ShuffleNet v2).
    float_bytes = sum(t.numel() * 4 for t in source.state_dict().values())
    assert path.stat().st_size * 4 < float_bytes


def test_one_bit_file_loads_as_a_local_path(one_bit_file):
    source, path = one_bit_file
    model = zoo.create(BINARY_ARCH, pretrained=str(path), num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_truncated_one_bit_file_is_refused(one_bit_file, tmp_path):
    _, path = one_bit_file
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        load_state_dict(bad)
