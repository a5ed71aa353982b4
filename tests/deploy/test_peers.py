"""The peer table (zoo.pretrained.peers): each peer is the same architecture as its zoo model,
and build_peer builds it with the class count asked, or says clearly why it cannot."""

from __future__ import annotations

import sys

import pytest
import timm
import torch
import torchvision

import zoo
from zoo.pretrained import peers
from zoo.pretrained.converters import source_key_order


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peers_implement_the_same_architecture(name):
    """Equal parameter counts (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        ours = _params(zoo.create(name))
        for spec in peers.PEERS[name]:
            try:
                theirs = _params(peers.build_peer(spec))
            except peers.PeerUnavailable as err:
                pytest.skip(str(err))
            if spec.exact:
                assert theirs == ours, f"{spec.label}: {theirs} params vs zoo {ours}"
            else:  # channel rounding differs slightly
                assert abs(theirs - ours) / ours < 0.01, spec.label


def test_every_peer_maps_a_registered_model():
    assert set(peers.PEERS) <= set(zoo.list_models())
    libraries = {s.library for specs in peers.PEERS.values() for s in specs}
    assert libraries == {"torchvision", "timm", "pytorchcv"}


def test_labels_name_library_and_model():
    assert [s.label for s in peers.PEERS["resnet18"]] == [
        "tv:resnet18",
        "timm:resnet18",
        "cv:resnet18",
    ]


@pytest.mark.parametrize(
    "spec", [peers.PeerSpec("torchvision", "resnet18"), peers.PeerSpec("timm", "resnet18")]
)
def test_build_peer_sets_the_class_count(spec):
    """The library's default head has 1000 outputs; num_classes changes only the head: the
    parameter count drops by (1000 - 10) x (512 + 1) for ResNet-18's 512-feature fc."""
    with torch.device("meta"):
        default = peers.build_peer(spec)
        ten = peers.build_peer(spec, num_classes=10)
    logits = ten(torch.zeros(1, 3, 64, 64, device="meta"))
    assert tuple(logits.shape) == (1, 10)
    assert _params(default) - _params(ten) == (1000 - 10) * (512 + 1)


def test_build_peer_equals_the_library_model():
    """Same module names and shapes as torchvision's own constructor."""
    with torch.device("meta"):
        ours = peers.build_peer(peers.PeerSpec("torchvision", "squeezenet1_1"), num_classes=7)
        ref = torchvision.models.squeezenet1_1(weights=None, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_missing_library_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorchcv", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "pytorchcv.model_provider", None)
    with pytest.raises(peers.PeerLibraryMissing, match="pip install pytorchcv"):
        peers.build_peer(peers.PeerSpec("pytorchcv", "resnet18"))


def test_unknown_model_or_library_is_unavailable():
    with pytest.raises(peers.PeerUnavailable, match="cannot build 'no_such_net'"):
        peers.build_peer(peers.PeerSpec("torchvision", "no_such_net"))
    with pytest.raises(peers.PeerUnavailable, match="unknown peer library"):
        peers.build_peer(peers.PeerSpec("keras", "resnet18"))


def test_converters_fall_back_to_file_order_without_pytorchcv(monkeypatch):
    """Without pytorchcv the converters keep a pytorchcv file's own (registration) order."""
    monkeypatch.setitem(sys.modules, "pytorchcv", None)
    monkeypatch.setitem(sys.modules, "pytorchcv.model_provider", None)
    state = {"b.weight": torch.zeros(1), "a.weight": torch.zeros(1)}
    # A class count no other test uses: the skeleton cache must not answer from a real build.
    assert source_key_order(state, "pytorchcv:resnet18", 17) == ["b.weight", "a.weight"]


def test_converters_read_the_peer_order_for_timm():
    """timm files are sorted by name; the order comes from timm's own model (stem conv
    first, classifier last), not from the file."""
    with torch.device("meta"):
        ref = timm.create_model("resnet18", pretrained=False, num_classes=5).state_dict()
    state = {k: ref[k] for k in sorted(ref)}
    order = source_key_order(state, "timm:resnet18", 5)
    assert order[0] == "conv1.weight" and order[-1] == "fc.bias"
    assert order == [k for k in ref if not k.endswith("num_batches_tracked")]
