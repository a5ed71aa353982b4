"""zoo.utils atomic files: complete or absent, world-readable, replaced by rename."""

import csv
import os
import stat

import pytest

from zoo.utils import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_write_bytes_and_text(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"  # parent folders are created
    assert atomic_write_bytes(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    assert atomic_write_text(str(tmp_path / "t.md"), "µ ×\n") == tmp_path / "t.md"
    assert (tmp_path / "t.md").read_bytes() == "µ ×\n".encode()
    assert _names(tmp_path) == ["a", "t.md"] and _names(target.parent) == ["f.bin"]


@posix_only
@pytest.mark.parametrize("how", ["bytes", "file", "path"])
def test_finished_file_is_0o644(tmp_path, how):
    target = tmp_path / "w.safetensors"
    if how == "bytes":
        atomic_write_bytes(target, b"x")
    elif how == "file":
        atomic_write(target, lambda f: f.write("x"), mode="w")
    else:
        with atomic_path(target) as tmp:
            assert _mode(tmp) == 0o600  # mkstemp's, until committed
            tmp.write_bytes(b"x")
    assert _mode(target) == 0o644
    with atomic_path(tmp_path / "private", permissions=None) as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "private") == 0o600


@pytest.mark.parametrize("existing", [False, True])
def test_writer_failing_halfway_leaves_nothing(tmp_path, existing):
    target = tmp_path / "results.json"
    if existing:
        target.write_text("old")

    def half(f):
        f.write(b'{"half": ')
        f.flush()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)

    def interrupted(f):
        f.write(b"{")
        raise KeyboardInterrupt  # not only Exceptions: a Ctrl-C mid-write too

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    with pytest.raises(ValueError, match="check failed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"written but not accepted")
        raise ValueError("check failed")  # the caller decides not to commit
    assert _names(tmp_path) == (["results.json"] if existing else [])
    if existing:
        assert target.read_text() == "old"


def test_existing_file_is_replaced_by_rename(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old contents")
    old_inode = target.stat().st_ino
    seen = {}

    def write(f):
        f.write(b"new")
        seen["during"] = target.read_bytes()  # readers see the old file until the rename
        seen["temps"] = [n for n in _names(tmp_path) if n != "last.pt"]

    with open(target, "rb") as reader:
        atomic_write(target, write)
        assert reader.read() == b"old contents"  # an open reader keeps the old file intact
    assert seen["during"] == b"old contents"
    assert len(seen["temps"]) == 1
    assert seen["temps"][0].startswith(".last.pt.") and seen["temps"][0].endswith(".tmp")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != old_inode
    assert _names(tmp_path) == ["last.pt"]


def test_atomic_path_for_name_based_writers(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.exists() and not target.exists()
        tmp.unlink()  # a writer may recreate the file by name
        tmp.write_bytes(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    assert _names(tmp_path) == ["plot.png"]


def test_text_mode_options(tmp_path):
    target = tmp_path / "summary.csv"

    def write(f):
        csv.writer(f).writerows([["epoch", "lr"], [1, 0.5]])

    atomic_write(target, write, mode="w", newline="")
    assert target.read_bytes() == b"epoch,lr\r\n1,0.5\r\n"  # csv's own line endings kept
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        atomic_write(target, write, mode="a")
    assert _names(tmp_path) == ["summary.csv"]
