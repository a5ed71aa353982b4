"""Converters proven numerically, through the real download path.

For every shipped manifest: build the source model (torchvision, timm or pytorchcv) with
random weights and random BN statistics, save its state dict the way that source publishes
it (torchvision/pytorchcv: legacy ``torch.save`` pickles, pytorchcv zipped; timm:
safetensors behind a Hugging Face-style redirect), serve it from 127.0.0.1 under the
manifest's file name, and load it with ``zoo.create(arch, pretrained=tag)``. The zoo model
must give the source model's logits (max abs difference < 1e-4).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo.pretrained import StateDictMismatchError, manifests

TOL = 1e-4
WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED = sorted(  # the ImageNet sets published by others (zoo's own have no source model)
    p.stem
    for p in WEIGHTS.glob("*.json")
    if json.loads(p.read_text())["source"] in ("torchvision", "timm", "pytorchcv")
)
# Every shipped weight set is checked; these run only with -m slow: AlexNet's 250 MB files,
# the ResNet-18 tags that repeat resnet18.tv_in1k / a1_in1k's code path, and the timm
# MobileNet v1 set that test_activation_override_is_needed_and_logged already covers.
SLOW = {
    "alexnet.tv_in1k",
    "alexnet.ptcv_in1k",
    "mobilenet_v1.ra4_e3600_r224_in1k",
    *(f"resnet18.{t}" for t in ("a2_in1k", "a3_in1k", "gluon_in1k", "ptcv_in1k")),
    *(f"resnet18.{t}" for t in ("fb_ssl_yfcc100m_ft_in1k", "fb_swsl_ig1b_ft_in1k")),
}


def build_source(source_arch: str) -> nn.Module:
    """The publisher's own model class, randomly initialised."""
    lib, _, name = source_arch.partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None)
        if lib == "timm":
            import timm

            return timm.create_model(name, pretrained=False)
        pcv = pytest.importorskip("pytorchcv.model_provider")
        return pcv.get_model(name, pretrained=False)


def randomize(model: nn.Module, seed: int = 0, bn_shift: float = 0.0) -> nn.Module:
    """Random weights with unit-ish activations, random BN statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5
                )
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1 + bn_shift)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _publish(manifest: dict, model: nn.Module, server) -> dict:
    """Save ``model`` as the manifest's source publishes it; point the manifest at the server."""
    state = model.state_dict()
    spec = dict(manifest["files"][0])
    name = spec.get("file_name") or spec["url"].rsplit("/", 1)[1]
    if manifest["source"] == "timm":
        from safetensors.torch import save_file

        buf = server.root / name
        save_file({k: v.contiguous() for k, v in state.items()}, str(buf))
        spec["url"] = server.url("hf", name)
        return {**manifest, "files": [spec]}
    raw = io.BytesIO()
    torch.save(state, raw, _use_new_zipfile_serialization=False)  # legacy, like 2017-19 files
    data = raw.getvalue()
    if spec.get("archive") == "zip":
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr(spec["member"], data)
        server.add(f"{name}.zip", z.getvalue())
        spec.update(url=server.url("files", f"{name}.zip"), sha1=hashlib.sha1(data).hexdigest())
    else:
        server.add(name, data)
        spec.update(
            url=server.url("files", name), sha256_prefix=hashlib.sha256(data).hexdigest()[:10]
        )
    return {**manifest, "files": [spec]}


def _serve_shipped(name: str, wdir: Path, server, bn_shift: float = 0.0):
    manifest = json.loads((WEIGHTS / f"{name}.json").read_text())
    source = randomize(build_source(manifest["source_arch"]), bn_shift=bn_shift)
    served = _publish(manifest, source, server)
    (wdir / f"{name}.json").write_text(json.dumps(served))
    manifests.clear_cache()
    return manifest, source


def _logits(model: nn.Module, size: int = 224) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SHIPPED]
)
def test_converter_reproduces_source_logits(name, zoo_env, http_server):
    _, wdir = zoo_env
    manifest, source = _serve_shipped(name, wdir, http_server)
    size = manifest["preprocessing"].get("input_size", [3, 224, 224])[-1]
    arch, tag = name.split(".")
    model = zoo.create(arch, pretrained=tag, **manifest.get("model_kwargs", {})).eval()
    want, got = _logits(source, size), _logits(model, size)
    assert got.shape == want.shape == (2, 1000)
    assert want.abs().max() > 0.05  # the check is not vacuous
    assert (got - want).abs().max().item() < TOL
    assert model.pretrained_cfg["weights"] == name
    assert sum(http_server.hits.values()) >= 1


def test_activation_variant_is_needed_and_built(zoo_env, http_server):
    """timm's MobileNet v1 uses ReLU6: the manifest's model_kwargs build that variant; without
    it the logits differ."""
    _, wdir = zoo_env
    name = "mobilenet_v1.ra4_e3600_r224_in1k"
    _, source = _serve_shipped(name, wdir, http_server, bn_shift=4.0)  # push activations past 6
    model = zoo.create("mobilenet_v1", pretrained="ra4_e3600_r224_in1k").eval()
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.ReLU6 in kinds and torch.nn.ReLU not in kinds
    assert model.default_cfg["model_kwargs"] == {"act_layer": "relu6"}
    assert (_logits(model) - _logits(source)).abs().max().item() < TOL
    plain = zoo.create("mobilenet_v1").eval()
    plain.load_state_dict(model.state_dict())
    assert (_logits(plain) - _logits(source)).abs().max().item() > 1e-2


def test_pytorchcv_shufflenet_v1_needs_the_channel_reversal(zoo_env, http_server):
    """Mapping by position alone (no reversal) gives different logits: the rule matters."""
    _, wdir = zoo_env
    name = "shufflenet_g3_x0_5.ptcv_in1k"
    manifest, source = _serve_shipped(name, wdir, http_server)
    served = json.loads((wdir / f"{name}.json").read_text())
    served["converter"] = "pytorchcv"
    (wdir / f"{name}.json").write_text(json.dumps(served))
    manifests.clear_cache()
    wrong = zoo.create("shufflenet_g3_x0_5", pretrained="ptcv_in1k").eval()
    assert (_logits(wrong) - _logits(source)).abs().max().item() > 1e-2


def test_wrong_architecture_file_is_rejected(zoo_env, http_server):
    """A SqueezeNet 1.0 file behind the 1.1 manifest: clear error naming the tensors."""
    _, wdir = zoo_env
    manifest = json.loads((WEIGHTS / "squeezenet1_1.tv_in1k.json").read_text())
    served = _publish(manifest, randomize(build_source("torchvision:squeezenet1_0")), http_server)
    (wdir / "squeezenet1_1.tv_in1k.json").write_text(json.dumps(served))
    manifests.clear_cache()
    with pytest.raises(
        StateDictMismatchError, match="does not hold torchvision:squeezenet1_1: missing keys"
    ):
        zoo.create("squeezenet1_1", pretrained="tv_in1k")


def test_weights_for_a_variant_name_the_kwargs(zoo_env, http_server):
    """pytorchcv's 0.25x ShuffleNet v1 has a 6-channel stem; the zoo default is 12."""
    _, wdir = zoo_env
    name = "shufflenet_g3_x0_25.ptcv_in1k"
    _, source = _serve_shipped(name, wdir, http_server)
    assert zoo.pretrained.pretrained_model_kwargs("shufflenet_g3_x0_25", "ptcv_in1k") == {
        "stem_chs": 6
    }
    # zoo.create applies the weights' kwargs itself and builds the 6-channel variant ...
    model = zoo.create("shufflenet_g3_x0_25", pretrained="ptcv_in1k").eval()
    assert model.features.stem.conv.out_channels == 6
    assert (_logits(model) - _logits(source)).abs().max().item() < TOL
    # ... and a caller who forces another stem is told which variant the weights need.
    with pytest.raises(StateDictMismatchError) as e:
        zoo.create("shufflenet_g3_x0_25", pretrained="ptcv_in1k", stem_chs=12)
    assert "zoo.create('shufflenet_g3_x0_25', stem_chs=6, pretrained='ptcv_in1k')" in str(e.value)
