"""Class names: the folder name a class is written to, and matching a folder's classes to a
model's outputs by name. The one place validate and distillation agree on class names."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.data.folder import ImageFolderError

__all__ = ["ClassMismatchError", "class_dirname", "class_index"]


class ClassMismatchError(ImageFolderError):
    """A folder's classes cannot be matched to a model's outputs; the message says how."""


def class_dirname(name: str) -> str:
    """A folder name for a class name: path separators become ``_`` ("T-shirt/top")."""
    safe = name.replace("/", "_").replace("\\", "_").strip()
    if safe in ("", ".", ".."):
        raise ValueError(f"class name {name!r} cannot be used as a folder name")
    return safe


def class_index(
    folder_classes: Sequence[str], model_classes: Sequence[str] | None, n_out: int
) -> torch.Tensor:
    """For each folder class, the index of the model output that predicts it.

    With the model's class names known, classes match by name or by their folder name
    (``T-shirt_top`` is ``T-shirt/top``), so a folder may hold any subset in any order;
    without names, folders are taken in sorted order as outputs 0, 1, ...
    """
    if not model_classes:
        if len(folder_classes) > n_out:
            raise ClassMismatchError(
                f"the folder has {len(folder_classes)} classes but the model predicts {n_out}; "
                "use a model trained on these classes (a checkpoint, or --num-classes)"
            )
        return torch.arange(len(folder_classes))
    lookup: dict[str, int] = {}
    for i, name in enumerate(model_classes):
        lookup.setdefault(name, i)
        lookup.setdefault(class_dirname(name), i)
    unknown = [c for c in folder_classes if c not in lookup]
    if unknown:
        raise ClassMismatchError(
            f"class folder(s) {', '.join(unknown)} are not among the model's classes "
            f"({', '.join(model_classes)}); use the classes the model was trained on"
        )
    return torch.tensor([lookup[c] for c in folder_classes])
