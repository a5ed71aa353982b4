"""Fixtures for the data tests: where Fashion-MNIST lives, skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FM_ROOT = Path(os.environ.get("ZOO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="session")
def fm_root() -> Path:
    names = [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    missing = [n for n in names if not (FM_ROOT / n).is_file()]
    if missing:
        pytest.skip(
            f"Fashion-MNIST not found in {FM_ROOT} (missing {', '.join(missing)}); "
            "install it with `sudo apt-get install dataset-fashion-mnist`"
        )
    return FM_ROOT


@pytest.fixture(scope="session")
def fm_test_set(fm_root):
    from zoo.data import FashionMNIST

    return FashionMNIST(fm_root, train=False)
