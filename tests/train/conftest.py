"""Fixtures for the training tests: one thread, a small real Fashion-MNIST image folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import FAST, MODEL

from zoo.pretrained import manifests

FM_ROOT = Path(os.environ.get("ZOO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FM_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: fast on a shared 2-core machine and bitwise reproducible."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _require_fm() -> Path:
    missing = [f for f in FM_FILES if not (FM_ROOT / f).is_file()]
    if missing:
        pytest.skip(
            f"Fashion-MNIST not found in {FM_ROOT} (missing {', '.join(missing)}); "
            "install it with `sudo apt-get install dataset-fashion-mnist`"
        )
    return FM_ROOT


@pytest.fixture(scope="session")
def fm_root() -> Path:
    return _require_fm()


@pytest.fixture(scope="session")
def fm_test_set(fm_root):
    from zoo.data import FashionMNIST

    return FashionMNIST(fm_root, train=False)


@pytest.fixture(scope="session")
def fm_folder(fm_test_set, tmp_path_factory) -> Path:
    """320 real images, 32 per class, in one flat ImageFolder (CLASS/xxxxx.png)."""
    from zoo.data import write_image_folder

    out = tmp_path_factory.mktemp("fm") / "flat"
    write_image_folder(fm_test_set, out, limit_per_class=32, progress=False)
    return out


@pytest.fixture(scope="session")
def fm_split_folder(fm_folder, tmp_path_factory) -> Path:
    """The same images as train/ (24 per class) and val/ (8 per class) folders."""
    out = tmp_path_factory.mktemp("fm") / "split"
    for cls in sorted(p for p in fm_folder.iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"))
        for split, chosen in (("train", files[:24]), ("val", files[24:])):
            (out / split / cls.name).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, out / split / cls.name / f.name)
    return out


@pytest.fixture(scope="session")
def trained_run(fm_split_folder, tmp_path_factory) -> Path:
    """Output folder of a 2-epoch fine-tuning run (best.pt, last.pt, summary.csv)."""
    from zoo.train.finetune import finetune

    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    finetune(
        [
            MODEL,
            "--data",
            str(fm_split_folder),
            "--epochs",
            "2",
            "--lr",
            "3e-3",
            "--no-pretrained",
            "--output",
            str(out),
            *FAST,
        ]
    )
    return out


@pytest.fixture
def weights_env(tmp_path, monkeypatch):
    """An empty weights folder and cache for runs that publish: the repo's stay untouched."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    manifests.clear_cache()
    yield wdir
    manifests.clear_cache()
