"""The classifier shell every zoo model shares: body, pooled head, timm-style methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.published import published, published_source
from zoo.registry import ModelCfg

__all__ = [
    "ZooModel",
    "init_weights",
    "make_pool",
    "take_indices",
    "check_image_batch",
    "run_body",
    "feature_child",
    "reject_norm_layer",
    "GLOBAL_POOLS",
]

GLOBAL_POOLS = ("avg", "max", "")


def make_pool(kind: str, output_size: int = 1) -> nn.Module:
    """timm's ``global_pool`` names: ``"avg"``, ``"max"``, or ``""`` for no pooling."""
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(output_size)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(output_size)
    if kind == "":
        return nn.Identity()
    raise ValueError(f"global_pool must be one of {list(GLOBAL_POOLS)}, got {kind!r}")


def take_indices(num_features: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """Which feature levels to return, as timm's ``feature_take_indices``.

    None: all; an int ``n``: the last ``n``; a sequence: those levels (negative from the end).
    Returns the levels and the deepest one needed.
    """
    if indices is None:
        take = list(range(num_features))
    elif isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"take the last 1..{num_features} feature levels, got {indices}")
        take = list(range(num_features - indices, num_features))
    else:
        take = [num_features + i if i < 0 else i for i in indices]
        bad = [i for i, t in zip(indices, take, strict=True) if not 0 <= t < num_features]
        if bad or not take:
            raise ValueError(
                f"feature indices {list(indices)} out of range for {num_features} levels "
                f"(valid: {-num_features}..{num_features - 1})"
            )
    return take, max(take)


def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, like: nn.Module) -> None:
    """Raise a clear error for anything but an NCHW batch with ``in_chans`` channels whose
    dtype matches ``like``'s weights and whose sides are at least ``min_size``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"expected a 4-D NCHW batch, got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"expected {in_chans} input channels, got {x.shape[1]} "
            f"(shape {tuple(x.shape)}); create the model with in_chans={x.shape[1]} "
            "or convert the images"
        )
    weight = next(like.parameters(), None)
    if weight is not None and x.dtype != weight.dtype:
        fix = (
            f"x.to({weight.dtype}) or model.to({x.dtype})"
            if x.is_floating_point()
            else "convert the images to float first, e.g. with zoo.transforms(model)"
        )
        raise TypeError(f"input is {x.dtype} but the model's weights are {weight.dtype}; {fix}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is smaller than this model's minimum "
            f"{min_size}x{min_size}; resize the images"
        )


def run_body(
    body: nn.Module,
    x: torch.Tensor,
    keep: Sequence[str] = (),
    stop_after: str | None = None,
    checkpointed: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``body``'s children in order; return the last output and those of ``keep``.

    ``stop_after`` ends the run after that child; ``checkpointed`` recomputes each child's
    activations in backward (``torch.utils.checkpoint``) when gradients are on.
    """
    checkpointed = checkpointed and torch.is_grad_enabled()
    found: dict[str, torch.Tensor] = {}
    for name, stage in body.named_children():
        x = checkpoint(stage, x, use_reentrant=False) if checkpointed else stage(x)
        if name in keep:
            found[name] = x
        if name == stop_after:
            break
    return x, found


def reject_norm_layer(norm_layer: object, family: str) -> None:
    """Families without normalization layers (AlexNet, SqueezeNet) take only None."""
    if norm_layer is not None:
        raise ValueError(f"{family} has no normalization layers; norm_layer must be None")


def feature_child(module_name: str) -> str:
    """``"features.stage2"`` -> ``"stage2"``: feature levels are children of ``features``."""
    prefix, _, child = module_name.partition(".")
    if prefix != "features" or not child or "." in child:
        raise ValueError(f"feature module {module_name!r} is not a direct child of 'features'")
    return child


class ZooModel(nn.Module):
    """A body (``features``) followed by global pooling, optional pre-logits, dropout and a
    classifier, with the methods timm users expect (``forward_features``, ``forward_head``,
    ``forward_intermediates``, ``get_classifier``, ``reset_classifier``,
    ``set_grad_checkpointing``) and ``feature_info``: one dict per stage output with its
    ``num_chs``, ``reduction`` (stride from the input) and ``module`` (dotted name).

    Subclasses build ``self.features`` (an ``nn.Sequential`` whose children are the stages),
    record stage outputs with :meth:`_add_feature` and call :meth:`_build_head`.
    """

    features: nn.Module
    classifier: nn.Module

    def __init__(
        self, in_chans: int, num_classes: int, min_input_size: int = 32, global_pool: str = "avg"
    ) -> None:
        super().__init__()
        make_pool(global_pool)  # validate early
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.min_input_size = min_input_size
        self.global_pool_type = global_pool
        self.num_features = 0
        self.grad_checkpointing = False
        self.feature_info: list[dict] = []
        self.default_cfg: dict = {}

    def _add_feature(self, module: str, num_chs: int, reduction: int) -> None:
        """Record a stage output (``module`` is its dotted name, e.g. ``"features.stage2"``).

        Called in build order; a later stage at the same reduction replaces the earlier one,
        so each reduction is represented by its last stage, as in timm.
        """
        feature_child(module)
        if self.feature_info and self.feature_info[-1]["reduction"] == reduction:
            self.feature_info.pop()
        self.feature_info.append({"num_chs": num_chs, "reduction": reduction, "module": module})

    def _build_head(
        self,
        num_features: int,
        drop_rate: float = 0.0,
        pool_size: int = 1,
        pre_logits: nn.Module | None = None,
        head_features: int | None = None,
        head_bias: bool = True,
    ) -> None:
        """Global pool -> flatten -> pre-logits -> dropout -> ``nn.Linear`` classifier
        (without bias for ``head_bias=False``, as some authors' released models have)."""
        self.head_bias = head_bias
        self.num_features = num_features
        self.head_features = head_features or num_features
        self.pool_size = pool_size
        self.global_pool = make_pool(self.global_pool_type, pool_size)
        self.pre_logits = pre_logits if pre_logits is not None else nn.Identity()
        self.drop_rate = drop_rate
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self._check_head(self.num_classes, self.global_pool_type)
        self.classifier = self._new_classifier(self.num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for anything but an NCHW batch with ``in_chans`` channels."""
        check_image_batch(x, self.in_chans, self.min_input_size, self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward instead of storing them (training)."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body's feature map (N, C, H', W').

        The fast path checks only the shape (a few integer compares); a wrong dtype makes the
        first conv raise, and then :meth:`check_input` replaces that error with a clear one.
        """
        if (
            type(x) is not torch.Tensor
            or x.dim() != 4
            or x.shape[1] != self.in_chans
            or x.shape[2] < self.min_input_size
            or x.shape[3] < self.min_input_size
        ):
            self.check_input(x)
        try:
            return run_body(self.features, x, checkpointed=self._checkpointing())[0]
        except RuntimeError:
            self.check_input(x)  # raises the clear error if the input is the cause
            raise

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The stage outputs at ``indices`` of :attr:`feature_info` (timm's semantics), and the
        final feature map unless ``intermediates_only``. ``stop_early`` ends the body at the
        deepest level taken. ``norm`` is accepted for timm compatibility: there is no final norm.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        take, deepest = take_indices(len(self.feature_info), indices)
        names = [feature_child(f["module"]) for f in self.feature_info]
        stop = names[deepest] if stop_early or intermediates_only else None
        x, found = run_body(self.features, x, names, stop, self._checkpointing())
        intermediates = [found[names[i]] for i in take]
        return intermediates if intermediates_only else (x, intermediates)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map and classify; ``pre_logits=True`` stops before the classifier."""
        x = self.pre_logits(torch.flatten(self.global_pool(x), 1))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` outputs; 0 removes it (``nn.Identity``) so
        the model returns pooled features. ``global_pool`` ("avg", "max", "") swaps the pooling.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        pool_type = self.global_pool_type if global_pool is None else global_pool
        pool = make_pool(pool_type, getattr(self, "pool_size", 1))
        self._check_head(num_classes, pool_type)
        self.global_pool, self.global_pool_type = pool, pool_type
        self.num_classes = num_classes
        self.classifier = self._new_classifier(num_classes)
        if isinstance(getattr(self, "default_cfg", None), dict):
            self.default_cfg["num_classes"] = num_classes

    def _check_head(self, num_classes: int, global_pool: str) -> None:
        """A linear classifier needs pooled features (timm's rule)."""
        if global_pool == "" and num_classes > 0:
            raise ValueError(
                "global_pool='' (no pooling) needs num_classes=0: a linear classifier takes "
                "pooled features"
            )

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.head_features, num_classes, bias=getattr(self, "head_bias", True))


def init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, small normal for linears (the torchvision recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def family_cfg(
    name: str, family: str, paper: str, first_conv: str = "features.stem.conv", **extra
) -> ModelCfg:
    """The ``ModelCfg`` of a registered variant: its family, paper, first conv, classifier and
    the published figures ``zoo.published`` holds for ``name``."""
    return ModelCfg(
        family=family,
        paper=paper,
        first_conv=first_conv,
        classifier="classifier",
        published=published(name),
        published_source=published_source(name),
        **extra,
    )

