"""Fashion-MNIST reader: idx parsing checked against hand-made files and torchvision's reader."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from zoo.data import FashionMNIST, FashionMNISTMissingError, read_idx, write_image_folder
from zoo.data.fashion_mnist import CLASSES, FolderNotEmptyError, class_dirname


def _idx_bytes(arr: np.ndarray) -> bytes:
    # Written from the format description: 0x00 0x00 0x08 ndim, big-endian uint32 dims, data.
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_handmade(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    data = _idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path, 3)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    assert np.array_equal(out, arr)


def test_read_idx_rejects_bad_magic(tmp_path):
    data = bytearray(_idx_bytes(np.zeros((4,), np.uint8)))
    data[2] = 0x0D  # float instead of unsigned byte
    (tmp_path / "f.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(FashionMNISTMissingError, match="magic number.*apt-get install"):
        read_idx(tmp_path / "f.gz", 1)
    with pytest.raises(FashionMNISTMissingError, match="magic number"):
        read_idx(tmp_path / "f.gz", 3)  # right type, wrong number of dimensions


def test_read_idx_rejects_truncated(tmp_path):
    full = gzip.compress(_idx_bytes(np.ones((10, 28, 28), np.uint8)))
    # Header says 10 images but only 9.5 follow.
    short = _idx_bytes(np.ones((10, 28, 28), np.uint8))[: -28 * 14]
    (tmp_path / "short.gz").write_bytes(gzip.compress(short))
    with pytest.raises(FashionMNISTMissingError, match="truncated or corrupt.*apt-get install"):
        read_idx(tmp_path / "short.gz", 3)
    # A cut gzip stream (download interrupted) is reported too.
    (tmp_path / "cut.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(FashionMNISTMissingError, match="unreadable or truncated"):
        read_idx(tmp_path / "cut.gz", 3)


def test_missing_dataset_names_the_package(tmp_path):
    with pytest.raises(FashionMNISTMissingError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FashionMNISTMissingError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path / "empty", train=False)
    assert issubclass(FashionMNISTMissingError, FileNotFoundError)


@pytest.mark.data
def test_matches_torchvision_reader(fm_root, fm_test_set, tmp_path):
    # torchvision's MNIST-family parser reads the same (uncompressed) files with its own code.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(fm_root / f"{name}.gz", "rb") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    ref_data = read_image_file(str(tmp_path / "t10k-images-idx3-ubyte"))
    ref_targets = read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte"))
    assert torch.equal(fm_test_set.data, ref_data)
    assert torch.equal(fm_test_set.targets, ref_targets.long())
    assert fm_test_set.classes == torchvision.datasets.FashionMNIST.classes == CLASSES
    img, label = fm_test_set[123]
    assert label == int(ref_targets[123])
    assert img.mode == "L" and np.array_equal(np.asarray(img), ref_data[123].numpy())


@pytest.mark.data
def test_published_split_sizes(fm_root, fm_test_set):
    # Xiao et al. 2017: 60,000 training and 10,000 test images, balanced over 10 classes.
    assert len(fm_test_set) == 10000
    assert fm_test_set.targets.bincount().tolist() == [1000] * 10
    train = FashionMNIST(fm_root, train=True)
    assert len(train) == 60000 and train.data.shape == (60000, 28, 28)
    assert train.targets.bincount().tolist() == [6000] * 10


@pytest.mark.data
def test_write_image_folder(fm_test_set, tmp_path):
    out = write_image_folder(fm_test_set, tmp_path / "fm", limit_per_class=3, progress=False)
    dirs = sorted(p.name for p in out.iterdir())
    assert dirs == sorted(class_dirname(c) for c in CLASSES)
    assert "T-shirt_top" in dirs  # "/" in a class name must not create a sub-folder
    assert not list(out.rglob("*.tmp"))
    # The first three images of each class, as lossless PNGs with the original pixels.
    want = {}
    for i, y in enumerate(fm_test_set.targets.tolist()):
        want.setdefault(y, [])
        if len(want[y]) < 3:
            want[y].append(i)
    for y, idxs in want.items():
        files = sorted((out / class_dirname(CLASSES[y])).glob("*.png"))
        assert [int(f.stem) for f in files] == idxs
        for f, i in zip(files, idxs, strict=True):
            with Image.open(f) as im:
                assert im.mode == "L"
                assert np.array_equal(np.asarray(im), fm_test_set.data[i].numpy())
    ref = torchvision.datasets.ImageFolder(out)
    assert len(ref) == 30 and ref.classes == dirs


def test_write_image_folder_is_atomic(tmp_path, monkeypatch):
    imgs = [(Image.new("L", (4, 4), color=i), i % 2) for i in range(4)]

    class Tiny(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self):
            return len(imgs)

        def __getitem__(self, i):
            return imgs[i]

    real_save = Image.Image.save
    calls = {"n": 0}

    def flaky_save(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            fp.write(b"\x89PNG partial")
            raise OSError("disk full")
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        write_image_folder(Tiny(), tmp_path / "out", progress=False)
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    # The two finished PNGs and the class folders only: no partial or temporary file.
    assert files == ["a", "a/00000.png", "b", "b/00001.png"]


class _Tiny(torch.utils.data.Dataset):
    """Eight 4x4 images, alternating between two classes; pixel value = index."""

    classes = ["a", "b"]

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return Image.new("L", (4, 4), color=i), i % 2


def _pngs(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


def test_write_image_folder_refuses_a_folder_that_holds_images(tmp_path):
    # Writing 1 per class over 4 per class used to leave the 6 old images beside the 2 new
    # ones, and the command reported all 8 as written.
    out = tmp_path / "out"
    write_image_folder(_Tiny(), out, progress=False)
    before = {p: (out / p).read_bytes() for p in _pngs(out)}
    assert len(before) == 8
    with pytest.raises(FolderNotEmptyError, match="already holds 8 image"):
        write_image_folder(_Tiny(), out, limit_per_class=1, progress=False)
    assert {p: (out / p).read_bytes() for p in _pngs(out)} == before  # untouched

    (out / "README.txt").write_text("notes")  # not an image: kept
    (out / "old_class").mkdir()
    Image.new("L", (4, 4)).save(out / "old_class" / "x.png")
    write_image_folder(_Tiny(), out, limit_per_class=1, progress=False, force=True)
    assert _pngs(out) == ["a/00000.png", "b/00001.png"]  # exactly what was written
    assert (out / "README.txt").read_text() == "notes" and not (out / "old_class").exists()
    with Image.open(out / "b" / "00001.png") as im:
        assert np.asarray(im).tolist() == [[1] * 4] * 4


def test_write_image_folder_into_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        write_image_folder(_Tiny(), target, progress=False)
    assert target.read_text() == "x"
