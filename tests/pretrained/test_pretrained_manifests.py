"""The shipped manifests agree with their sources, and the manifest schema is enforced.

Facts are checked against independent records installed here: torchvision's weight enums
(URL, hash prefix, metrics, params), pytorchcv's model_metainfos.csv (file name, sha1,
release, top-5 error, params) and timm's pretrained cfgs (HF hub id, legacy URL,
preprocessing).
"""

from __future__ import annotations

import importlib.resources
import re
import warnings
from pathlib import Path

import pytest

import zoo
from zoo.pretrained import list_tags
from zoo.pretrained.hub import ManifestError
from zoo.pretrained.manifests import get_manifest, load_manifests, weights_dir


def _by_source(manifests, source):
    return [m for m in manifests.values() if m.source == source]


EXTERNAL = ("torchvision", "timm", "pytorchcv")


def test_every_manifest_names_a_registered_arch_and_known_converter(shipped_manifests):
    registered = set(zoo.list_models())
    assert all(m.arch in registered for m in shipped_manifests.values())
    imagenet = [m for m in shipped_manifests.values() if m.source in EXTERNAL]
    assert len(imagenet) == 36
    for m in imagenet:
        assert m.preprocessing["input_size"][0] == 3 and m.metrics["dataset"] == "imagenet-1k-val"
        assert m.license and m.paper and m.metrics.get("top1") and m.metrics.get("top5")
        assert 0 < m.metrics["top5"] - m.metrics["top1"] < 30


def test_issue_coverage(shipped_manifests):
    """SqueezeNet 1.0/1.1, MobileNet v1 widths, MobileNet v2, ShuffleNet v1 groups and widths,
    ShuffleNet v2 widths all have weights."""
    archs = {m.arch for m in shipped_manifests.values()}
    wanted = {"squeezenet1_0", "squeezenet1_1", "mobilenet_v2"}
    wanted |= {f"mobilenet_v1{s}" for s in ("", "_x0_75", "_x0_5", "_x0_25")}
    wanted |= {f"shufflenet_g{g}" for g in (1, 2, 3, 4, 8)}
    wanted |= {f"shufflenet_g{g}_x{w}" for g in (1, 3) for w in ("0_5", "0_25")}
    wanted |= {f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")}
    assert wanted <= archs


def test_one_default_per_arch_listed_first(shipped_manifests):
    for arch in {m.arch for m in shipped_manifests.values()}:
        tags = list_tags(arch)
        defaults = [t for t in tags if get_manifest(arch, t).default]
        assert defaults == [tags[0]], arch
    assert list_tags("shufflenet_v2_x1_0")[0] == "tv_in1k"
    assert list_tags("mobilenet_v2")[0] == "tv2_in1k"  # torchvision's DEFAULT
    assert list_tags("alexnet_that_does_not_exist") == []


def test_list_models_and_model_info_show_tags(shipped_manifests):
    names = zoo.list_models("shufflenet_v2*", pretrained=True)
    widths = ("x0_5", "x1_0", "x1_5", "x2_0")
    assert [n for n in names if n.endswith(".tv_in1k")] == [
        f"shufflenet_v2_{w}.tv_in1k" for w in widths
    ]
    # The authors' checkpoints belong to their own layout's variants (issue 15).
    assert [n for n in names if n.endswith(".megvii_in1k")] == [
        f"shufflenet_v2_{w}_megvii.megvii_in1k" for w in widths
    ]
    assert "shufflenet_v2_x1_0.fashion_mnist" in names  # the zoo's own weights
    assert "mobilenet_v2.ra_in1k" in zoo.list_models(pretrained=True)
    # The default first, published weights before the zoo's own.
    assert zoo.model_info("shufflenet_v2_x1_0")["pretrained_tags"] == ["tv_in1k", "fashion_mnist"]
    assert zoo.model_info("mobilenet_v2")["pretrained_tags"] == ["tv2_in1k", "ra_in1k", "tv_in1k"]


def test_torchvision_manifests_match_torchvision(shipped_manifests):
    import torchvision

    tv = _by_source(shipped_manifests, "torchvision")
    assert len(tv) == 10
    for m in tv:
        fn = m.source_arch.split(":")[1]
        enum = torchvision.models.get_model_weights(fn)
        weights = {w.url: w for w in enum}
        (spec,) = m.files
        assert spec.url in weights, m.name
        w = weights[spec.url]
        metrics = w.meta["_metrics"]["ImageNet-1K"]
        assert m.metrics["top1"] == metrics["acc@1"] and m.metrics["top5"] == metrics["acc@5"]
        assert m.num_params == w.meta["num_params"]
        assert spec.size_mb == w.meta["_file_size"]
        # the hash prefix is the one in the file name (torch.hub's convention)
        assert re.search(r"-([a-f0-9]+)\.", spec.file_name).group(1) == spec.sha256_prefix
        resize = w.transforms.keywords.get("resize_size", 256)
        assert m.preprocessing["resize_size"] == resize and m.preprocessing["crop_size"] == 224
        assert (w is enum.DEFAULT) == m.default or m.arch == "mobilenet_v2"
    assert get_manifest("mobilenet_v2", "tv2_in1k").files[0].url == str(
        torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    )


def test_pytorchcv_manifests_match_pytorchcv_metainfo(shipped_manifests):
    pytest.importorskip("pytorchcv")
    from pytorchcv.models.common.model_store import get_model_metainfo_dict

    table = get_model_metainfo_dict()
    pcv = _by_source(shipped_manifests, "pytorchcv")
    assert len(pcv) == 18
    for m in pcv:
        name = m.source_arch.split(":")[1]
        params, err, sha1, release = table[name]
        (spec,) = m.files
        expected = f"{name}-{err}-{sha1[:8]}.pth"
        assert spec.file_name == expected and spec.member == expected and spec.sha1 == sha1
        assert spec.url == (
            f"https://github.com/osmr/imgclsmob/releases/download/{release}/{expected}.zip"
        )
        assert m.num_params == params
        # the file name carries the top-5 error in hundredths of a percent
        assert round(100 - m.metrics["top5"], 2) == int(err) / 100


def test_timm_manifests_match_timm_cfgs(shipped_manifests):
    import timm

    tm = _by_source(shipped_manifests, "timm")
    assert len(tm) == 8
    for m in tm:
        cfg = timm.models.get_pretrained_cfg(f"{m.source_arch.split(':')[1]}.{m.tag}")
        hf = m.files[0]
        assert hf.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        assert hf.hf_etag and hf.format == "safetensors"
        if len(m.files) > 1:
            assert m.files[1].url == cfg.url
            assert re.search(r"-([a-f0-9]{8})\.pth$", cfg.url).group(1) == m.files[1].sha256_prefix
        p = m.preprocessing
        assert tuple(p["mean"]) == tuple(cfg.mean) and tuple(p["std"]) == tuple(cfg.std)
        assert p["interpolation"] == cfg.interpolation
        size, crop = (
            (cfg.test_input_size, cfg.test_crop_pct or cfg.crop_pct)
            if m.metrics["img_size"] != cfg.input_size[-1]
            else (cfg.input_size, cfg.crop_pct)
        )
        assert tuple(p["input_size"]) == tuple(size) and p["crop_pct"] == crop


def test_cache_file_names_are_unique(shipped_manifests):
    names = [(f.file_name, f.url) for m in shipped_manifests.values() for f in m.files if f.url]
    assert len({n for n, _ in names}) == len(names)


# ----------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"url": "http://x/y.pth"}, "needs sha256"),
        ({"url": "http://x/y.pth", "sha256_prefix": "XYZ123"}, "not a valid lowercase hex"),
        ({"file": "a/b.pt"}, "needs its full sha256"),
        ({"url": "http://x/y.pth", "sha256_prefix": "abcdef", "converter": "magic"}, "converter"),
        ({"url": "http://x/y.pth", "sha256_prefix": "abcdef", "colour": 1}, "unknown field"),
        (
            {"url": "http://x/y.pth", "sha1_prefix": "abcdef", "preprocessing": {"mean": [0.5]}},
            "mean/std need 3",
        ),
        ({"files": []}, "'files' is empty"),
    ],
)
def test_malformed_manifest_is_a_clear_error(zoo_env, write_manifest, bad, message):
    _, wdir = zoo_env
    write_manifest(wdir, {"arch": "toy", "tag": "t", **bad})
    with pytest.raises(ManifestError, match=message):
        load_manifests()


def test_unknown_tag_and_arch_without_weights(zoo_env, write_manifest):
    _, wdir = zoo_env
    write_manifest(wdir, {"arch": "toy", "tag": "t", "url": "http://x/y.pth", "sha1": "a" * 40})
    with pytest.raises(ManifestError, match="available: t"):
        get_manifest("toy", "nope")
    with pytest.raises(ManifestError, match="no pretrained weights are registered for 'other'"):
        get_manifest("other")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list_tags("toy") == ["t"]


def test_weights_dir_is_the_package_data_and_the_env_overrides_it(
    shipped_manifests, monkeypatch, tmp_path
):
    """Without ``ZOO_WEIGHTS_DIR`` the manifests come from package ``zoo._weights``, found by
    importlib (an editable install maps it to the repo's ``weights/``), not from a guess."""
    package = importlib.resources.files("zoo._weights")
    assert isinstance(package, Path) and weights_dir() == package
    assert (package / "shufflenet_g3.fashion_mnist.json").is_file()
    repo_zoo = Path(__file__).resolve().parents[2] / "zoo"
    if Path(zoo.__file__).resolve().parent == repo_zoo:  # running against this checkout
        assert weights_dir().resolve() == repo_zoo.parent / "weights"
    assert "shufflenet_g3.fashion_mnist" in shipped_manifests
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir() == tmp_path.resolve()
    assert load_manifests(weights_dir()) == {}
