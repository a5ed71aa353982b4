"""The authors' own ShuffleNet checkpoints (megvii-model/ShuffleNet-Series) -> zoo keys.

Their files hold ``{'state_dict': {'module.' + key: tensor}}`` of their ``ShuffleNetV1`` /
``ShuffleNetV2`` (``first_conv``, ``features.<i>.branch_main...``, ``classifier.0``, no
classifier bias). Their layout differs from the zoo's in ways that change the function, so
keys are renamed *and* channels permuted where a permutation exists:

- v1: they shuffle after the depthwise conv with ``mid/g`` groups (the inverse of the paper's
  shuffle) where the zoo shuffles before it with ``g``. Per unit, a permutation ``pi`` of the
  compress outputs (within each group of the grouped conv) and the matching order of the
  depthwise channels and expand inputs makes the paper-order unit compute their function,
  whenever each expand group can still read its own channels. That holds for g = 3 at every
  width and g = 8 at 2.0x; elsewhere the model needs ``shuffle_order="megvii"`` (no permutation).
- v2: their units keep ``x[0::2]`` and never shuffle, and their first strided unit splits its
  output differently (24 + 92 channels at 1.0x): the ``shufflenet_v2_*_megvii`` variants
  (``layout="megvii"``) are their architecture, loaded by renaming keys only.
- no classifier bias: a model with one gets zeros (the same function); a file with one is not
  theirs and is refused.

A file whose keys do not match the authors' model for this width/groups is refused with the
missing and unexpected keys listed; nothing is ever mapped by position.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.blocks import ShuffleV1Unit, ShuffleV2Unit
from zoo.pretrained.errors import StateDictMismatchError

__all__ = [
    "is_megvii_state",
    "convert_megvii",
    "megvii_key_map",
    "v1_unit_permutation",
    "shuffle_index",
]

Tensors = dict[str, torch.Tensor]
_BN = ("weight", "bias", "running_mean", "running_var")
_V1_UNIT = {
    "compress": "branch_main_1.0",
    "compress_bn": "branch_main_1.1",
    "depthwise": "branch_main_1.3",
    "depthwise_bn": "branch_main_1.4",
    "expand": "branch_main_2.0",
    "expand_bn": "branch_main_2.1",
}
_V2_UNIT = {
    "branch1.0": "branch_proj.0",
    "branch1.0_bn": "branch_proj.1",
    "branch1.1": "branch_proj.2",
    "branch1.1_bn": "branch_proj.3",
    "branch2.0": "branch_main.0",
    "branch2.0_bn": "branch_main.1",
    "branch2.1": "branch_main.3",
    "branch2.1_bn": "branch_main.4",
    "branch2.2": "branch_main.5",
    "branch2.2_bn": "branch_main.6",
}


def is_megvii_state(state: Tensors) -> bool:
    """True for a state dict (``module.`` already stripped) with the authors' key names."""
    return "first_conv.0.weight" in state and any(
        k.startswith("features.0.branch_main") for k in state
    )


def _conv_bn_pairs(zoo_prefix: str, src_prefix: str, src_bn: str) -> dict[str, str]:
    pairs = {f"{zoo_prefix}.conv.weight": f"{src_prefix}.weight"}
    pairs.update({f"{zoo_prefix}.bn.{s}": f"{src_bn}.{s}" for s in _BN})
    return pairs


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, (ShuffleV1Unit, ShuffleV2Unit))
    ]


def megvii_key_map(model: nn.Module) -> dict[str, str]:
    """zoo key -> the authors' key, for every weight and BN statistic of ``model`` (the
    classifier bias excluded: the authors have none)."""
    keys = _conv_bn_pairs("features.stem", "first_conv.0", "first_conv.1")
    for i, (name, unit) in enumerate(_units(model)):
        table = _V1_UNIT if isinstance(unit, ShuffleV1Unit) else _V2_UNIT
        for zoo_part, src in table.items():
            if zoo_part.endswith("_bn"):
                continue
            if zoo_part.startswith("branch1") and unit.branch1 is None:
                continue
            src_bn = table[f"{zoo_part}_bn"]
            src, src_bn = f"features.{i}.{src}", f"features.{i}.{src_bn}"
            keys.update(_conv_bn_pairs(f"{name}.{zoo_part}", src, src_bn))
    if "features.head_conv.conv.weight" in model.state_dict():
        keys.update(_conv_bn_pairs("features.head_conv", "conv_last.0", "conv_last.1"))
    keys["classifier.weight"] = "classifier.0.weight"
    return keys


def _check_keys(state: Tensors, key_map: dict[str, str], model: nn.Module) -> None:
    """Refuse a file that is not the authors' model of this architecture, listing why."""
    have = {k for k in state if not k.endswith("num_batches_tracked")}
    want = set(key_map.values())
    missing = sorted(want - have)
    unexpected = sorted(have - want)
    own = model.state_dict()
    shapes = [
        f"{src} {tuple(state[src].shape)} (model {zoo_key} {tuple(own[zoo_key].shape)})"
        for zoo_key, src in key_map.items()
        if src in have and zoo_key != "classifier.weight" and zoo_key in own
        and state[src].shape != own[zoo_key].shape
        and zoo_key != "features.stem.conv.weight"
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"the checkpoint is not the authors' (Megvii) {type(model).__name__} of this width:"]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        hint = " (the authors' classifier has no bias)" if "classifier.0.bias" in unexpected else ""
        parts.append(f"unexpected keys ({len(unexpected)}){hint}: {', '.join(unexpected[:20])}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:10])}")
    parts.append("Check the model name (width, groups) against the file; nothing was loaded.")
    raise StateDictMismatchError("\n  ".join(parts))


# ----------------------------------------------------------------------------- v1 permutation


def shuffle_index(channels: int, groups: int) -> torch.Tensor:
    """``f`` with ``channel_shuffle(x, groups) == x[:, f]`` (the paper's / zoo's shuffle)."""
    per_group = channels // groups
    k = torch.arange(channels)
    return (k % groups) * per_group + k // groups


def v1_unit_permutation(
    mid: int, groups: int, grouped_compress: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(pi, rho)`` mapping the authors' v1 unit onto the paper's shuffle order, or None.

    ``pi[y]``: the authors' compress channel that zoo compress channel ``y`` computes (within
    its group when the compress is grouped). The zoo's depthwise channel ``k`` is then the
    authors' ``pi[f[k]]`` and its expand input ``k`` the authors' expand input ``rho[k] =
    f[pi[f[k]]]``, which must lie in the same expand group as ``k``.
    """
    per_group = mid // groups
    f = shuffle_index(mid, groups)
    f_inv = torch.argsort(f)
    need = (f_inv // per_group).tolist()  # expand group that position y must reach
    gives = (f // per_group).tolist()  # expand group authors' channel x lands in
    domains = (
        [range(b * per_group, (b + 1) * per_group) for b in range(groups)]
        if grouped_compress
        else [range(mid)]
    )
    pi = torch.empty(mid, dtype=torch.long)
    for domain in domains:
        by_need: dict[int, list[int]] = {}
        by_gives: dict[int, list[int]] = {}
        for y in domain:
            by_need.setdefault(need[y], []).append(y)
            by_gives.setdefault(gives[y], []).append(y)
        if {k: len(v) for k, v in by_need.items()} != {k: len(v) for k, v in by_gives.items()}:
            return None
        for key, ys in by_need.items():
            pi[torch.tensor(ys)] = torch.tensor(by_gives[key])
    rho = f[pi[f]]
    return pi, rho


def _permute_v1_unit(out: Tensors, name: str, unit: ShuffleV1Unit, groups: int) -> None:
    mid = unit.compress.conv.out_channels
    grouped = unit.compress.conv.groups > 1
    found = v1_unit_permutation(mid, groups, grouped)
    if found is None:
        raise StateDictMismatchError(
            f"no channel permutation maps the authors' ShuffleNet v1 unit {name} (groups={groups}, "
            f"{mid} bottleneck channels) onto the paper's shuffle order: build the model with "
            "shuffle_order='megvii' (and head_bias=False), e.g. zoo.create(NAME, "
            "shuffle_order='megvii', head_bias=False, pretrained=FILE), or use the "
            "megvii_in1k tag, which does so."
        )
    pi, rho = found
    dw = pi[shuffle_index(mid, groups)]
    for part, idx in (("compress", pi), ("depthwise", dw)):
        out[f"{name}.{part}.conv.weight"] = out[f"{name}.{part}.conv.weight"][idx]
        for s in _BN:
            out[f"{name}.{part}.bn.{s}"] = out[f"{name}.{part}.bn.{s}"][idx]
    key = f"{name}.expand.conv.weight"
    weight = out[key]
    per_in, per_out = mid // groups, weight.shape[0] // groups
    new = torch.empty_like(weight)
    for b in range(groups):
        rows = slice(b * per_out, (b + 1) * per_out)
        local = rho[b * per_in : (b + 1) * per_in] - b * per_in
        new[rows] = weight[rows][:, local]
    out[key] = new


# ----------------------------------------------------------------------------- entry point


def convert_megvii(state: Tensors, model: nn.Module) -> Tensors:
    """``state`` (the authors' keys, ``module.`` stripped) in ``model``'s keys and layout."""
    units = _units(model)
    if not units:
        raise StateDictMismatchError(
            f"a Megvii ShuffleNet checkpoint needs a ShuffleNet model, not {type(model).__name__}"
        )
    v2 = [u for _, u in units if isinstance(u, ShuffleV2Unit)]
    if v2 and any(u.layout != "megvii" for u in v2):
        raise StateDictMismatchError(
            "the authors' ShuffleNet v2 splits channels differently from torchvision's layout: "
            "load it into the matching *_megvii variant, e.g. "
            "zoo.create('shufflenet_v2_x1_0_megvii', pretrained=FILE)."
        )
    if v2 and any(isinstance(u, ShuffleV1Unit) for _, u in units):
        raise StateDictMismatchError("a model mixing ShuffleNet v1 and v2 units has no Megvii file")
    if not v2 and "features.0.branch_main_1.0.weight" not in state and any(
        ".branch_main." in k for k in state
    ):
        raise StateDictMismatchError(
            "this is the authors' ShuffleNet v2 checkpoint; load it into a "
            "shufflenet_v2_*_megvii model, not ShuffleNet v1."
        )
    key_map = megvii_key_map(model)
    _check_keys(state, key_map, model)
    out = {zoo_key: state[src] for zoo_key, src in key_map.items()}
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear) and head.bias is not None:
        out["classifier.bias"] = torch.zeros(
            out["classifier.weight"].shape[0], dtype=out["classifier.weight"].dtype
        )
    for name, unit in units:
        if isinstance(unit, ShuffleV1Unit) and unit.shuffle_order == "paper":
            groups = unit.expand.conv.groups
            if groups > 1:
                _permute_v1_unit(out, name, unit, groups)
    return out
