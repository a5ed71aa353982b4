"""Loading into a model that differs from the checkpoint, local files, and offline use.

Reference values come from the source model itself (torchvision's ShuffleNet v2 x0.5): a
grey image through the 1-channel zoo model must give the logits the RGB source gives for
that image repeated three times; features must match when only the classifier differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.pretrained import (
    HashMismatchError,
    ManifestError,
    OfflineError,
    StateDictMismatchError,
    adapt_input_conv,
    manifests,
)

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
ARCH, TAG = "shufflenet_v2_x0_5", "tv_in1k"
TOL = 1e-4


def _random_source(seed: int = 0) -> nn.Module:
    """torchvision ShuffleNet v2 x0.5 with random weights and BN statistics."""
    g = torch.Generator().manual_seed(seed)
    model = torchvision.models.shufflenet_v2_x0_5()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5
                )
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def _torchvision_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


@pytest.fixture
def served(zoo_env, http_server):
    """The shipped shufflenet_v2_x0_5.tv_in1k manifest, its file served from 127.0.0.1."""
    _, wdir = zoo_env
    source = _random_source()
    data = _torchvision_bytes(source)
    manifest = json.loads((WEIGHTS / f"{ARCH}.{TAG}.json").read_text())
    name = manifest["files"][0]["url"].rsplit("/", 1)[1]
    http_server.add(name, data)
    manifest["files"] = [
        {
            "url": http_server.url("files", name),
            "sha256_prefix": hashlib.sha256(data).hexdigest()[:10],
        }
    ]
    (wdir / f"{ARCH}.{TAG}.json").write_text(json.dumps(manifest))
    manifests.clear_cache()
    return source, data, name, http_server


def _x(chans: int = 3) -> torch.Tensor:
    return torch.randn(2, chans, 160, 160, generator=torch.Generator().manual_seed(3))


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ----------------------------------------------------------------------------- head and stem


def test_num_classes_reinitialises_only_the_classifier(served, caplog):
    source, *_ = served
    pooled = {}
    source.fc.register_forward_hook(lambda m, inp, out: pooled.setdefault("x", inp[0]))
    x = _x()
    _run(source, x)
    with caplog.at_level(logging.INFO, logger="zoo.pretrained"):
        model = zoo.create(ARCH, pretrained=True, num_classes=10).eval()
    assert "1000 classes, model has 10" in caplog.text and "re-initialized" in caplog.text
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert (feats - pooled["x"]).abs().max().item() < TOL
    assert model.get_classifier().weight.shape == (10, 1024)
    assert _run(model, x).shape == (2, 10)


def test_in_chans_1_sums_the_first_conv(served, caplog):
    source, *_ = served
    gray = _x(1)
    with caplog.at_level(logging.INFO, logger="zoo.pretrained"):
        model = zoo.create(ARCH, pretrained=True, in_chans=1)
    assert "from 3 to 1 input channels" in caplog.text
    want = _run(source, gray.expand(-1, 3, -1, -1))
    assert (_run(model, gray) - want).abs().max().item() < TOL
    assert model.pretrained_cfg["input_size"][0] == 1
    assert len(model.pretrained_cfg["mean"]) == 1


def test_in_chans_6_repeats_and_scales(served, caplog):
    source, *_ = served
    x = _x()
    with caplog.at_level(logging.INFO, logger="zoo.pretrained"):
        model = zoo.create(ARCH, pretrained=True, in_chans=6)
    assert "from 3 to 6 input channels" in caplog.text
    want = _run(source, x)
    assert (_run(model, torch.cat([x, x], 1)) - want).abs().max().item() < TOL


def test_adapt_input_conv_rules():
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(adapt_input_conv(w, 3), w)
    assert torch.allclose(adapt_input_conv(w, 1), w[:, :1] + w[:, 1:2] + w[:, 2:])
    w4 = adapt_input_conv(w, 4)
    assert w4.shape == (4, 4, 3, 3)
    assert torch.allclose(w4[:, 3], w[:, 0] * 0.75) and torch.allclose(w4[:, :3], w * 0.75)
    with pytest.raises(ValueError, match="4-D"):
        adapt_input_conv(torch.randn(4, 3), 1)


# ----------------------------------------------------------------------------- local files


def test_local_zoo_checkpoint_round_trip(zoo_env, tmp_path):
    src = zoo.create("squeezenet1_1").eval()
    path = tmp_path / "mine.pth"
    torch.save(src.state_dict(), path)
    model = zoo.create("squeezenet1_1", pretrained=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    st = tmp_path / "mine.safetensors"
    save_file(src.state_dict(), str(st))
    model = zoo.create("squeezenet1_1", pretrained=st)
    x = torch.randn(1, 3, 96, 96)
    assert torch.equal(_run(model, x), _run(src, x))


def test_key_mismatch_lists_missing_and_unexpected(zoo_env, tmp_path):
    state = zoo.create("squeezenet1_1").state_dict()
    dropped = (
        "features.fire2.squeeze.weight"
        if "features.fire2.squeeze.weight" in state
        else next(k for k in state if k.endswith("squeeze.weight"))
    )
    state.pop(dropped)
    state["features.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(StateDictMismatchError) as info:
        zoo.create("squeezenet1_1", pretrained=str(path))
    msg = str(info.value)
    assert (
        f"missing keys (1): {dropped}" in msg
        and "unexpected keys (1): features.extra.weight" in msg
    )


def test_shape_mismatch_is_listed(zoo_env, tmp_path):
    path = tmp_path / "other_width.pth"
    torch.save(zoo.create("shufflenet_v2_x1_0").state_dict(), path)
    with pytest.raises(StateDictMismatchError, match=r"shape mismatches \(\d+\)"):
        zoo.create("shufflenet_v2_x0_5", pretrained=str(path))


def test_foreign_local_file_is_converted_by_position(zoo_env, tmp_path):
    source = _random_source()
    path = tmp_path / "my_finetuned_tv_shufflenet.pth"
    torch.save(source.state_dict(), path)
    model = zoo.create(ARCH, pretrained=str(path))
    x = _x()
    assert (_run(model, x) - _run(source, x)).abs().max().item() < TOL


def test_missing_local_file_and_bad_values(zoo_env):
    with pytest.raises(FileNotFoundError, match="no such file"):
        zoo.create(ARCH, pretrained="/nonexistent/weights.pth")
    with pytest.raises(ManifestError, match="no pretrained weights are registered"):
        zoo.create(ARCH, pretrained=True)  # zoo_env has an empty manifest folder
    with pytest.raises(TypeError, match="pretrained must be True"):
        from zoo.pretrained import load_pretrained

        load_pretrained(zoo.create(ARCH), ARCH, 3.5)


# ----------------------------------------------------------------------------- tags, offline


def test_tag_in_name_and_unknown_tag(served):
    source, *_ = served
    model = zoo.create(f"{ARCH}.{TAG}")
    assert (_run(model, _x()) - _run(source, _x())).abs().max().item() < TOL
    assert model.pretrained_cfg["tag"] == TAG and model.pretrained_cfg["source"] == "torchvision"
    with pytest.raises(ManifestError, match=f"available: {TAG}"):
        zoo.create(ARCH, pretrained="no_such_tag")


def test_offline_workflow(served, tmp_path):
    source, data, name, server = served
    server.stop()
    with pytest.raises(OfflineError) as info:
        zoo.create(ARCH, pretrained=True)
    msg = str(info.value)
    assert name in msg and "pretrained='/path/to/" in msg
    # option 1: pass the hand-downloaded file; it is matched to its manifest by name,
    # verified, and converted with the manifest's converter
    local = tmp_path / name
    local.write_bytes(data)
    model = zoo.create(ARCH, pretrained=str(local))
    assert (_run(model, _x()) - _run(source, _x())).abs().max().item() < TOL
    assert model.pretrained_cfg["weights"] == f"{ARCH}.{TAG}"
    tampered = tmp_path / "other" / name
    tampered.parent.mkdir()
    tampered.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(HashMismatchError):
        zoo.create(ARCH, pretrained=str(tampered))
    # option 2: copy it into the cache folder named in the message
    from zoo.pretrained import cache_dir

    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / name).write_bytes(data)
    model = zoo.create(ARCH, pretrained=True)
    assert (_run(model, _x()) - _run(source, _x())).abs().max().item() < TOL


def test_foreign_pytorchcv_shufflenet_v1_file_gets_its_layout_rule(zoo_env, tmp_path, caplog):
    """A renamed pytorchcv ShuffleNet v1 file (no manifest match) is still converted right."""
    pcv = pytest.importorskip("pytorchcv.model_provider")
    source = pcv.get_model("shufflenet_g3_wd2", pretrained=False)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5
                )
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    source.eval()
    path = tmp_path / "my_shufflenet.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="zoo.pretrained"):
        model = zoo.create("shufflenet_g3_x0_5", pretrained=str(path))
    assert "pytorchcv_shufflenet_v1" in caplog.text
    x = torch.randn(2, 3, 224, 224, generator=g)
    assert (_run(model, x) - _run(source, x)).abs().max().item() < TOL


def test_renamed_timm_file_is_matched_by_structure(shipped_manifests, tmp_path, caplog):
    """A fine-tuned timm MobileNet v1 (10 classes) saved as safetensors under another name:
    its keys identify timm's mobilenetv1_100, so the timm key order and the ReLU6 variant apply."""
    import timm

    source = timm.create_model("mobilenetv1_100", num_classes=10)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.bias.normal_(4.0, 1.0, generator=g)  # activations past 6: ReLU6 matters
                m.running_var.uniform_(0.5, 1.5, generator=g)
    source.eval()
    path = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with caplog.at_level(logging.INFO, logger="zoo.pretrained"):
        model = zoo.create("mobilenet_v1", pretrained=str(path), num_classes=10)
    assert "timm:mobilenetv1_100" in caplog.text
    assert model.default_cfg["model_kwargs"] == {"act_layer": "relu6"}  # built, not swapped
    x = torch.randn(2, 3, 128, 128, generator=g)
    assert (_run(model, x) - _run(source, x)).abs().max().item() < TOL
