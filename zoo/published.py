"""Every figure the zoo quotes from a paper or a reference implementation, with its source.

One table, keyed by model name: model files read their ``ModelCfg.published`` from it, the
binary twins their XNOR-Net figures, and the paper-table reproduction the figures a paper
prints for *another* paper's network (:data:`QUOTED`). A leaf: imports nothing of the zoo.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Figure",
    "PUBLISHED",
    "QUOTED",
    "published",
    "published_source",
    "quoted",
]


class Figure(NamedTuple):
    """A published value and where it is printed."""

    value: float
    source: str


def _figs(**figures: tuple[float, str]) -> dict[str, Figure]:
    return {key: Figure(*pair) for key, pair in figures.items()}


# ----------------------------------------------------------------------------- SqueezeNet

_TV_SQ = "torchvision SqueezeNet1_0_Weights / SqueezeNet1_1_Weights meta"
_SQ = {
    "squeezenet1_0": _figs(
        params=(1248424, "paper Table 1 / " + _TV_SQ),
        macs=(819e6, _TV_SQ + " (0.819 GMACs)"),
        top1=(57.5, "paper Table 2"),
        top5=(80.3, "paper Table 2"),
        size_mb=(4.8, "paper Table 2"),
    ),
    "squeezenet1_1": _figs(
        params=(1235496, _TV_SQ),
        macs=(349e6, _TV_SQ + " (0.349 GMACs)"),
        top1=(58.178, _TV_SQ),
        top5=(80.624, _TV_SQ),
    ),
    "squeezenet1_0_bypass_simple": _figs(
        params=(1248424, "same as vanilla: identity shortcuts add no weights"),
        top1=(60.4, "paper Table 3"),
        top5=(82.5, "paper Table 3"),
        size_mb=(4.8, "paper Table 3"),
    ),
    "squeezenet1_0_bypass_complex": _figs(
        top1=(58.8, "paper Table 3"),
        top5=(82.0, "paper Table 3"),
        size_mb=(7.7, "paper Table 3"),
    ),
}

# ----------------------------------------------------------------------------- MobileNet v1

_V1_PORT = "pytorchcv mobilenet_w* (exact)"
_V1_RES = "paper Table 7 (resolution)"


def _mobilenet_v1(params: int, macs: float, top1: float, params_m: float, **res: float):
    figs = _figs(
        params=(params, _V1_PORT),
        macs=(macs, "paper Table 6"),
        top1=(top1, "paper Table 6"),
        params_paper=(params_m, "paper Table 6 (rounded)"),
    )
    figs.update({key.replace("_at", "@"): Figure(v, _V1_RES) for key, v in res.items()})
    return figs


_V1 = {
    "mobilenet_v1": _mobilenet_v1(
        4231976, 569e6, 70.6, 4.2e6,
        macs_at224=569e6, top1_at224=70.6, macs_at192=418e6, top1_at192=69.1,
        macs_at160=290e6, top1_at160=67.2, macs_at128=186e6, top1_at128=64.4,
    ),
    "mobilenet_v1_x0_75": _mobilenet_v1(2585560, 325e6, 68.4, 2.6e6),
    "mobilenet_v1_x0_5": _mobilenet_v1(
        1331592, 149e6, 63.7, 1.3e6, macs_at160=76e6, top1_at160=60.2
    ),
    "mobilenet_v1_x0_25": _mobilenet_v1(470072, 41e6, 50.6, 0.5e6),
}  # fmt: skip

# ----------------------------------------------------------------------------- MobileNet v2

_TV_V2 = "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 meta"
_V2 = {
    "mobilenet_v2": _figs(
        params=(3504872, _TV_V2),
        macs=(300e6, "paper Table 4 (300M)"),
        top1=(71.878, _TV_V2),
        top1_paper=(72.0, "paper Table 4"),
        params_paper=(3.4e6, "paper Table 4"),
    ),
}

# ----------------------------------------------------------------------------- ShuffleNet v1

# Table 1 complexity (1x), Table 2 top-1 error by width and groups, Table 5 larger widths,
# the pytorchcv port's exact parameter counts and Megvii's re-trained checkpoints.
SHUFFLENET_V1_TABLES = {
    "table1_mflops": {1: 143, 2: 140, 3: 137, 4: 133, 8: 137},
    "table2_err": {
        1.0: {1: 33.6, 2: 32.7, 3: 32.6, 4: 32.8, 8: 32.4},
        0.5: {1: 45.1, 2: 44.4, 3: 43.2, 4: 41.6, 8: 42.3},
        0.25: {1: 57.1, 2: 56.8, 3: 55.0, 4: 54.2, 8: 52.7},
    },
    "table2_mflops": {0.5: 38, 0.25: 13},
    "table5": {(2.0, 3): (524, 26.3), (1.5, 3): (292, 28.5)},
    "port_params": {
        (1.0, 1): 1531936,
        (1.0, 2): 1733848,
        (1.0, 3): 1865728,
        (1.0, 4): 1968344,
        (1.0, 8): 2434768,
    },
    # Megvii ShuffleNet-Series ShuffleNetV1/README.md: (MFLOPs, top-1 error) of each
    # checkpoint they publish (their g=8 models use the paper's g=8 widths).
    "megvii": {
        (1.0, 3): (138, 32.2),
        (1.0, 8): (138, 32.0),
        (2.0, 3): (524.1, 25.9),
        (2.0, 8): (522, 27.1),
        (1.5, 3): (292.4, 28.4),
        (1.5, 8): (290, 29.0),
        (0.5, 3): (38, 42.7),
        (0.5, 8): (40, 41.2),
    },
}
SHUFFLENET_V1_WIDTHS = {0.25: "x0_25", 0.5: "x0_5", 1.0: "", 1.5: "x1_5", 2.0: "x2_0"}
SHUFFLENET_V1_GROUPS = (1, 2, 3, 4, 8)


def _shufflenet_v1(groups: int, width: float) -> dict[str, Figure]:
    t = SHUFFLENET_V1_TABLES
    figs: dict[str, Figure] = {}
    if width == 1.0:
        figs["macs"] = Figure(t["table1_mflops"][groups] * 1e6, "paper Table 1")
    elif width in t["table2_mflops"]:
        figs["macs"] = Figure(t["table2_mflops"][width] * 1e6, "paper Table 2 (approx.)")
    if width in t["table2_err"]:
        figs["top1"] = Figure(100 - t["table2_err"][width][groups], "paper Table 2")
    if (width, groups) in t["table5"]:
        macs, err = t["table5"][(width, groups)]
        figs["macs"] = Figure(macs * 1e6, "paper Table 5")
        figs["top1"] = Figure(100 - err, "paper Table 5")
    if (width, groups) in t["port_params"]:
        figs["params"] = Figure(t["port_params"][(width, groups)], "pytorchcv port (exact)")
    if (width, groups) in t["megvii"]:
        macs, err = t["megvii"][(width, groups)]
        figs["macs_megvii"] = Figure(macs * 1e6, "Megvii ShuffleNet-Series")
        figs["top1_megvii"] = Figure(100 - err, "Megvii checkpoint")
    return figs


_V1_SHUFFLE = {
    f"shufflenet_g{g}" + (f"_{suffix}" if suffix else ""): _shufflenet_v1(g, width)
    for width, suffix in SHUFFLENET_V1_WIDTHS.items()
    for g in SHUFFLENET_V1_GROUPS
}

# ----------------------------------------------------------------------------- ShuffleNet v2

_TV_SV2 = "torchvision ShuffleNet_V2_*_Weights meta"


def _shufflenet_v2(macs: float, params: int, err: float, tv_top1: float, params_m: float):
    return _figs(
        macs=(macs, "ShuffleNet v2 paper"),
        params=(params, _TV_SV2),
        top1=(100 - err, "ShuffleNet v2 paper"),
        top1_torchvision=(tv_top1, _TV_SV2),
        params_paper=(params_m, "paper (rounded)"),
    )


_V2_SHUFFLE = {
    "shufflenet_v2_x0_5": _shufflenet_v2(41e6, 1366792, 39.7, 60.552, 1.4e6),
    "shufflenet_v2_x1_0": _shufflenet_v2(146e6, 2278604, 30.6, 69.362, 2.3e6),
    "shufflenet_v2_x1_5": _shufflenet_v2(299e6, 3503624, 27.4, 72.996, 3.5e6),
    "shufflenet_v2_x2_0": _shufflenet_v2(591e6, 7393996, 25.1, 76.230, 7.4e6),
}

# The authors' released layout (``*_megvii`` variants): their README's FLOPs (the paper's
# complexity, 146/299/591M, belongs to this architecture) and top-1 error.
_MEGVII_README = "Megvii ShuffleNet-Series ShuffleNetV2/README.md"


def _shufflenet_v2_megvii(macs: float, params_m: float, err: float):
    return _figs(
        macs=(macs, _MEGVII_README),
        params_paper=(params_m, _MEGVII_README + " (rounded)"),
        top1=(100 - err, _MEGVII_README),
    )


_V2_SHUFFLE_MEGVII = {
    "shufflenet_v2_x0_5_megvii": _shufflenet_v2_megvii(41e6, 1.4e6, 38.9),
    "shufflenet_v2_x1_0_megvii": _shufflenet_v2_megvii(146e6, 2.3e6, 30.6),
    "shufflenet_v2_x1_5_megvii": _shufflenet_v2_megvii(299e6, 3.5e6, 27.4),
    "shufflenet_v2_x2_0_megvii": _shufflenet_v2_megvii(591e6, 7.4e6, 25.0),
}

# ----------------------------------------------------------------------------- AlexNet, ResNet

_TV_ALEX = "torchvision AlexNet_Weights.IMAGENET1K_V1 meta"
_TV_R18 = "torchvision ResNet18_Weights.IMAGENET1K_V1 meta"
_CLASSIC = {
    "alexnet": _figs(
        params=(61100840, _TV_ALEX),
        macs=(720e6, "ShuffleNet v1 paper Table 6 / classic table"),
        top1=(56.6, "XNOR-Net paper (full precision)"),
        top5=(80.2, "XNOR-Net paper"),
        top1_torchvision=(56.522, _TV_ALEX),
        size_mb=(240, "SqueezeNet paper Table 2"),
    ),
    "resnet18": _figs(
        params=(11689512, _TV_R18),
        macs=(1.8e9, "classic-network table (1.8G)"),
        top1=(69.3, "XNOR-Net paper (full precision)"),
        top5=(89.2, "XNOR-Net paper"),
        top1_torchvision=(69.758, _TV_R18),
        params_survey=(5.6e6, "widely copied survey table (disagrees with the model)"),
    ),
}

# ----------------------------------------------------------------------------- binary twins

_XNOR_ALEX = "Rastegari et al. 2016, Table 1 (AlexNet, ImageNet top-1/top-5 %)"
_XNOR_R18 = "Rastegari et al. 2016, Table 2 (ResNet-18, ImageNet top-1/top-5 %)"
_BINARY = {
    "bwn_alexnet": _figs(top1=(56.8, _XNOR_ALEX), top5=(79.4, _XNOR_ALEX)),
    "xnor_alexnet": _figs(top1=(44.2, _XNOR_ALEX), top5=(69.2, _XNOR_ALEX)),
    "bwn_resnet18": _figs(top1=(60.8, _XNOR_R18), top5=(83.0, _XNOR_R18)),
    "xnor_resnet18": _figs(top1=(51.2, _XNOR_R18), top5=(73.2, _XNOR_R18)),
}

PUBLISHED: dict[str, dict[str, Figure]] = {
    **_SQ, **_V1, **_V2, **_V1_SHUFFLE, **_V2_SHUFFLE, **_V2_SHUFFLE_MEGVII, **_CLASSIC, **_BINARY,
}  # fmt: skip

# ----------------------------------------------------------------------------- quoted figures

# What one paper's table prints for another paper's network, where that differs from the
# network's own figures above (model name -> {where quoted: {figure: value}}). ``vgg16`` and
# ``googlenet`` are not in the zoo.
QUOTED: dict[str, dict[str, dict[str, float]]] = {
    "alexnet": {
        "SqueezeNet paper Table 2": {"top1": 57.2, "top5": 80.3},
        "MobileNet v1 paper Table 9": {"macs": 720e6, "top1": 57.2, "params": 60e6},
        "ShuffleNet v1 paper Table 6": {"macs": 720e6, "top1": 100 - 42.8},
        "XNOR-Net paper Table 1": {"top1": 56.6, "top5": 80.2},
        "classic-network table": {"params": 61e6, "macs": 0.72e9},
    },
    "squeezenet1_0": {
        "MobileNet v1 paper Table 9": {"macs": 1700e6, "top1": 57.5, "params": 1.25e6},
        "ShuffleNet v1 paper Table 6": {"macs": 833e6, "top1": 100 - 42.5},
    },
    "mobilenet_v1_x0_5": {
        "MobileNet v1 paper Table 9": {"macs": 76e6, "top1": 60.2, "params": 1.32e6},
    },
    "shufflenet_g8": {"ShuffleNet v1 paper Table 6": {"macs": 140e6, "top1": 100 - 32.4}},
    "shufflenet_g4_x0_5": {"ShuffleNet v1 paper Table 6": {"macs": 38e6, "top1": 100 - 41.6}},
    "resnet18": {
        "classic-network table": {"params": 11.7e6, "macs": 1.8e9},
        "survey table": {"params": 5.6e6, "macs": 1.8e9},
    },
    "vgg16": {
        "ShuffleNet v1 paper Table 6": {"macs": 15300e6, "top1": 100 - 28.5},
        "classic-network table": {"params": 138e6, "macs": 15.5e9},
    },
    "googlenet": {"classic-network table": {"params": 6.8e6, "macs": 1.55e9}},
}


def published(name: str) -> dict[str, float]:
    """The published figures of ``name`` (empty when none), e.g. ``{"top1": 67.4, ...}``."""
    return {key: fig.value for key, fig in PUBLISHED.get(name, {}).items()}


def published_source(name: str) -> dict[str, str]:
    """Where each of :func:`published`'s figures comes from."""
    return {key: fig.source for key, fig in PUBLISHED.get(name, {}).items()}


def quoted(name: str, where: str) -> dict[str, float]:
    """The figures ``where`` (a paper's table) prints for ``name``; KeyError if none."""
    return dict(QUOTED[name][where])
