"""Peers: the torchvision / timm / pytorchcv models that implement the same net as a zoo model.

One table (``PEERS``) and one builder (``build_peer``), shared by the converters (which read a
peer's key order to map its weights onto ours) and the benchmark (which times zoo models
against their peers).

    >>> from zoo.pretrained.peers import PEERS, build_peer
    >>> [s.label for s in PEERS["resnet18"]]
    ['tv:resnet18', 'timm:resnet18', 'cv:resnet18']

The peer libraries are imported only when a peer is built: torchvision and timm take about
two seconds to import and most users of the zoo never build a peer; pytorchcv is an optional
(dev) dependency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "LIBRARIES",
    "PEERS",
    "PeerLibraryMissing",
    "PeerSpec",
    "PeerUnavailable",
    "build_peer",
]

# Library -> the short prefix of a peer's label ("tv:resnet18").
LIBRARIES: dict[str, str] = {"torchvision": "tv", "timm": "timm", "pytorchcv": "cv"}


@dataclass(frozen=True)
class PeerSpec:
    """A peer implementation: library, its model name, and whether parameter counts match."""

    library: str  # "torchvision", "timm" or "pytorchcv"
    name: str
    exact: bool = True  # same parameter count as the zoo model (False: channel rounding differs)

    @property
    def label(self) -> str:
        """Short display name, e.g. ``tv:resnet18`` or ``cv:shufflenet_g3_w1``."""
        return f"{LIBRARIES[self.library]}:{self.name}"


def _tv(name: str) -> PeerSpec:
    return PeerSpec("torchvision", name)


def _timm(name: str) -> PeerSpec:
    return PeerSpec("timm", name)


def _cv(name: str, exact: bool = True) -> PeerSpec:
    return PeerSpec("pytorchcv", name, exact)


# Zoo model -> the peers that implement the same architecture. Checked by
# tests/deploy/test_peers.py: parameter counts are equal where ``exact``.
PEERS: dict[str, list[PeerSpec]] = {
    "alexnet": [_tv("alexnet"), _cv("alexnetb")],
    "resnet18": [_tv("resnet18"), _timm("resnet18"), _cv("resnet18")],
    "squeezenet1_0": [_tv("squeezenet1_0"), _cv("squeezenet_v1_0")],
    "squeezenet1_1": [_tv("squeezenet1_1"), _cv("squeezenet_v1_1")],
    "squeezenet1_0_bypass_simple": [_cv("squeezeresnet_v1_0")],
    "mobilenet_v1": [_timm("mobilenetv1_100"), _cv("mobilenet_w1")],
    "mobilenet_v1_x0_75": [_cv("mobilenet_w3d4")],
    "mobilenet_v1_x0_5": [_cv("mobilenet_wd2")],
    "mobilenet_v1_x0_25": [_cv("mobilenet_wd4")],
    "mobilenet_v2": [_tv("mobilenet_v2"), _timm("mobilenetv2_100")],
    **{f"shufflenet_g{g}": [_cv(f"shufflenet_g{g}_w1")] for g in (1, 2, 3, 4, 8)},
    "shufflenet_g1_x0_5": [_cv("shufflenet_g1_wd2")],
    "shufflenet_g3_x0_5": [_cv("shufflenet_g3_wd2")],
    "shufflenet_g1_x0_25": [_cv("shufflenet_g1_wd4", exact=False)],
    "shufflenet_g3_x0_25": [_cv("shufflenet_g3_wd4", exact=False)],
    "shufflenet_v2_x0_5": [_tv("shufflenet_v2_x0_5"), _cv("shufflenetv2_wd2")],
    "shufflenet_v2_x1_0": [_tv("shufflenet_v2_x1_0"), _cv("shufflenetv2_w1")],
    "shufflenet_v2_x1_5": [_tv("shufflenet_v2_x1_5")],
    "shufflenet_v2_x2_0": [_tv("shufflenet_v2_x2_0")],
}


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed or does not know the model."""


class PeerLibraryMissing(PeerUnavailable):
    """The peer's library is not installed (the model name was never checked)."""


def _torchvision(name: str, kwargs: dict) -> nn.Module:
    import torchvision  # heavy: imported only when a peer is built

    return torchvision.models.get_model(name, weights=None, **kwargs)


def _timm_model(name: str, kwargs: dict) -> nn.Module:
    import timm  # heavy: imported only when a peer is built

    return timm.create_model(name, pretrained=False, **kwargs)


def _pytorchcv(name: str, kwargs: dict) -> nn.Module:
    from pytorchcv.model_provider import get_model  # optional dev dependency

    return get_model(name, pretrained=False, **kwargs)


_BUILDERS: dict[str, Callable[[str, dict], nn.Module]] = {
    "torchvision": _torchvision,
    "timm": _timm_model,
    "pytorchcv": _pytorchcv,
}


def build_peer(spec: PeerSpec, num_classes: int | None = None) -> nn.Module:
    """The peer model with random weights (never downloads anything).

    ``num_classes`` sets the classifier size (the library's default, 1000, when None). Builds
    on the current default device, so ``with torch.device("meta"):`` gives a free skeleton.
    Raises ``PeerLibraryMissing`` when the library is not installed and ``PeerUnavailable``
    when it cannot build the model.
    """
    builder = _BUILDERS.get(spec.library)
    if builder is None:
        raise PeerUnavailable(f"unknown peer library {spec.library!r}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        return builder(spec.name, kwargs)
    except ImportError as err:
        raise PeerLibraryMissing(
            f"{spec.library} is not installed (pip install {spec.library})"
        ) from err
    except (ValueError, KeyError, RuntimeError) as err:
        raise PeerUnavailable(f"{spec.library} cannot build {spec.name!r}: {err}") from err
