"""Download, verification, cache and safe loading, end to end through a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save, save_file

from zoo.pretrained import cachefiles, hub
from zoo.pretrained.hub import (
    CorruptCheckpointError,
    DownloadError,
    HashMismatchError,
    ManifestError,
    OfflineError,
    UnsafeCheckpointError,
)
from zoo.pretrained.manifests import WeightFile


def _checkpoint_bytes(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    state = {"a.weight": torch.randn(8, 4, generator=g), "a.bias": torch.randn(8, generator=g)}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), state


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec(url: str, data: bytes, **kw) -> WeightFile:
    kw.setdefault("sha256_prefix", _sha256(data)[:10])
    return WeightFile(file_name=kw.pop("file_name", "w-test.pth"), url=url, **kw)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*")) if directory.exists() else []


# ----------------------------------------------------------------------------- cache dir


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("ZOO_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "zoo" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub.zoo_home() == Path.home() / ".cache" / "zoo"
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / "weights"


# ----------------------------------------------------------------------------- downloads


def test_download_verifies_renames_and_second_call_uses_cache(zoo_env, http_server, capsys):
    data, state = _checkpoint_bytes()
    http_server.add("w.pth", data)
    spec = _spec(http_server.url("files", "w.pth"), data)
    path, used = hub.fetch([spec], "toy.t", progress=True)
    assert path == hub.cache_dir() / "w-test.pth"
    assert path.read_bytes() == data
    assert used is spec
    # only the file and its recorded sha256 remain: no partial/temporary files
    assert _leftovers(hub.cache_dir()) == ["w-test.pth", "w-test.pth.sha256"]
    assert (hub.cache_dir() / "w-test.pth.sha256").read_text().strip() == _sha256(data)
    bar = capsys.readouterr().err  # tqdm's bar, named after the file, sized in bytes
    assert "w-test.pth:" in bar and "%|" in bar and "B/s" in bar
    assert http_server.hits["/files/w.pth"] == 1
    path2, _ = hub.fetch([spec], "toy.t")
    assert path2 == path and http_server.hits["/files/w.pth"] == 1  # served from the cache
    loaded = hub.load_state_dict(path2)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_hash_mismatch_is_an_error_and_nothing_is_kept(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    wrong = "0" * 10 if not _sha256(data).startswith("0" * 10) else "1" * 10
    spec = _spec(http_server.url("files", "w.pth"), data, sha256_prefix=wrong)
    with pytest.raises(HashMismatchError, match=r"sha256 is [0-9a-f]{64}, expected .*"):
        hub.fetch([spec], "toy.t")
    assert _leftovers(hub.cache_dir()) == []


def test_full_sha256_and_size_are_checked(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    good = _spec(http_server.url("files", "w.pth"), data, sha256=_sha256(data), size=len(data))
    assert hub.fetch([good], "toy.t")[0].read_bytes() == data
    hub.cache_dir().joinpath("w-test.pth").unlink()
    bad_size = _spec(http_server.url("files", "w.pth"), data, size=len(data) + 1)
    with pytest.raises(HashMismatchError, match="bytes but its manifest expects"):
        hub.fetch([bad_size], "toy.t")
    assert not hub.cache_dir().joinpath("w-test.pth").exists()


def test_truncated_transfer_is_an_error_and_nothing_is_kept(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    spec = _spec(http_server.url("truncated", "w.pth"), data)
    with pytest.raises(DownloadError, match=r"transfer ended after|connection dropped"):
        hub.fetch([spec], "toy.t")
    assert _leftovers(hub.cache_dir()) == []


def test_http_404_names_the_file_and_the_fix(zoo_env, http_server):
    spec = WeightFile(
        file_name="gone.pth", url=http_server.url("files", "gone.pth"), sha256_prefix="ab" * 4
    )
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        hub.fetch([spec], "toy.gone")
    assert "gone.pth" in str(info.value) and "pretrained='/path/to/gone.pth'" in str(info.value)


def test_offline_error_says_which_file_and_how_to_place_it(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    spec = _spec(http_server.url("files", "w.pth"), data)
    http_server.stop()  # host unreachable
    with pytest.raises(OfflineError) as info:
        hub.fetch([spec], "toy.t")
    msg = str(info.value)
    dest = hub.cache_dir() / "w-test.pth"
    assert "'w-test.pth'" in msg and str(dest) in msg and spec.url in msg
    assert "pretrained='/path/to/w-test.pth'" in msg and "ZOO_HOME" in msg
    assert _sha256(data)[:10] in msg
    # following the advice (copy the file into the cache) makes it work without a network
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    assert hub.fetch([spec], "toy.t")[0] == dest


def test_zoo_offline_never_touches_the_network(zoo_env, http_server, monkeypatch):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    spec = _spec(http_server.url("files", "w.pth"), data)
    with pytest.raises(OfflineError, match="ZOO_OFFLINE"):
        hub.fetch([spec], "toy.t")
    assert sum(http_server.hits.values()) == 0


def test_corrupt_cached_file_is_replaced(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    spec = _spec(http_server.url("files", "w.pth"), data)
    path, _ = hub.fetch([spec], "toy.t")
    path.write_bytes(data[:-10])  # bit rot / partial copy in the cache
    path2, _ = hub.fetch([spec], "toy.t")
    assert path2.read_bytes() == data and http_server.hits["/files/w.pth"] == 2


def test_mirror_fallback(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    dead = _spec(http_server.url("files", "missing.pth"), data, file_name="a.pth")
    alive = _spec(http_server.url("files", "w.pth"), data, file_name="b.pth")
    path, used = hub.fetch([dead, alive], "toy.t")
    assert used is alive and path.name == "b.pth"


def test_zip_archive_member_verified_by_sha1(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("net-0001-abcd.pth", data)
    http_server.add("net-0001-abcd.pth.zip", buf.getvalue())
    spec = WeightFile(
        file_name="net-0001-abcd.pth",
        url=http_server.url("files", "net-0001-abcd.pth.zip"),
        archive="zip",
        member="net-0001-abcd.pth",
        sha1=hashlib.sha1(data).hexdigest(),
    )
    path, _ = hub.fetch([spec], "toy.t")
    assert path.read_bytes() == data
    assert _leftovers(hub.cache_dir()) == ["net-0001-abcd.pth", "net-0001-abcd.pth.sha256"]
    bad = WeightFile(**{**vars(spec), "file_name": "other.pth", "sha1": "0" * 40})
    with pytest.raises(HashMismatchError, match="sha1"):
        hub.fetch([bad], "toy.t")
    assert not (hub.cache_dir() / "other.pth").exists()


def test_hf_etag_redirect_is_verified(zoo_env, http_server):
    data, _ = _checkpoint_bytes()
    http_server.add("model.safetensors", data)
    spec = WeightFile(
        file_name="m.st", url=http_server.url("hf", "model.safetensors"), hf_etag=True
    )
    path, _ = hub.fetch([spec], "toy.t")
    assert path.read_bytes() == data
    assert http_server.hits["/hf/model.safetensors"] == 1
    assert http_server.hits["/files/model.safetensors"] == 1
    # a later cache hit is checked against the digest recorded at download time
    path.write_bytes(data + b"x")
    assert hub.fetch([spec], "toy.t")[0].read_bytes() == data
    lying = WeightFile(
        file_name="m2.st", url=http_server.url("hf-lying", "model.safetensors"), hf_etag=True
    )
    with pytest.raises(HashMismatchError):
        hub.fetch([lying], "toy.t")
    assert not (hub.cache_dir() / "m2.st").exists()


def test_unverifiable_download_is_refused():
    with pytest.raises(ManifestError, match="needs sha256"):
        WeightFile.from_dict({"url": "http://127.0.0.1:1/x.pth"}, "test")


# ----------------------------------------------------------------------------- safe loading


class _Payload:
    """Pickles into a call of ``Path.touch`` on a marker file: code a loader must not run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True") as info:
        hub.load_state_dict(evil)
    assert "GLOBAL" in str(info.value)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        hub.load_state_dict(raw)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_checkpoint_is_corrupt(tmp_path, legacy):
    path = tmp_path / "t.pth"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        hub.load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>", b"\x00" * 100])
def test_garbage_files_are_corrupt(tmp_path, content):
    path = tmp_path / "g.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError):
        hub.load_state_dict(path)


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    state = {"a": torch.randn(3, 2), "b": torch.arange(4)}
    st = tmp_path / "m.safetensors"
    save_file(state, str(st))
    loaded = hub.load_state_dict(st)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    st.write_bytes(st.read_bytes()[:-5])
    with pytest.raises(CorruptCheckpointError):
        hub.load_state_dict(st)
    wrapped = tmp_path / "w.pth"
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    assert torch.equal(hub.load_state_dict(wrapped)["a"], state["a"])
    not_sd = tmp_path / "n.pth"
    torch.save([torch.zeros(1)], not_sd)
    with pytest.raises(CorruptCheckpointError, match="not a state dict"):
        hub.load_state_dict(not_sd)


def test_shipped_file_relative_to_weights_dir(zoo_env, write_manifest):
    """The zoo's own weights: ``"file": "<dir>/<name>"`` resolved in the weights folder."""
    _, wdir = zoo_env
    data, _ = _checkpoint_bytes()
    (wdir / "fashion_mnist").mkdir()
    (wdir / "fashion_mnist" / "x.pt").write_bytes(data)
    write_manifest(
        wdir, {"arch": "toy", "tag": "fm", "file": "fashion_mnist/x.pt", "sha256": _sha256(data)}
    )
    from zoo.pretrained.manifests import get_manifest, weights_dir

    m = get_manifest("toy", "fm")
    path, _ = hub.fetch(m.files, m.name, weights_dir=weights_dir())
    assert path == (wdir / "fashion_mnist" / "x.pt").resolve()
    (wdir / "fashion_mnist" / "x.pt").write_bytes(data[:-1] + b"!")
    with pytest.raises(HashMismatchError):
        hub.fetch(m.files, m.name, weights_dir=weights_dir())
    assert os.environ["ZOO_WEIGHTS_DIR"] == str(wdir)


# ----------------------------------------------------------------------------- issue 12 cases


def _safetensors_bytes() -> bytes:
    return save({"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5)})


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
@pytest.mark.parametrize("cut", [5, 8, 9, 20, "past_eof"])
def test_safetensors_cut_inside_its_header_is_corrupt(tmp_path, suffix, cut):
    """A header cut short (or whose length points past the end) is a CorruptCheckpointError
    naming the file and the fix, never a raw safetensors error."""
    data = _safetensors_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert header_len > 20  # every cut below lands inside the 8-byte length or the JSON
    if cut == "past_eof":
        data = (len(data) * 2).to_bytes(8, "little") + data[8:]
    else:
        data = data[:cut]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data)
    with pytest.raises(CorruptCheckpointError) as info:
        hub.load_state_dict(path)
    assert str(path) in str(info.value)
    assert "download" in str(info.value) and "Delete it" in str(info.value)


def test_truncated_one_bit_file_is_corrupt(tmp_path):
    """A shipped 1-bit file (packed signs plus ``zoo`` metadata) cut short anywhere."""
    shipped = Path(__file__).resolve().parents[2] / "weights" / "fashion_mnist"
    source = shipped / "xnor_squeezenet1_1.safetensors"
    if not source.exists():
        pytest.skip(f"{source} is not in this checkout")
    data = source.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    for n in (6, header_end // 2, header_end + 10, len(data) // 2, len(data) - 1):
        path = tmp_path / f"bin{n}.safetensors"
        path.write_bytes(data[:n])
        with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
            hub.load_state_dict(path)
        if n < header_end:  # even reading the metadata fails cleanly
            with pytest.raises(CorruptCheckpointError):
                hub.safetensors_metadata(path)


class _System:
    """Pickles into ``os.system(command)``: what a hostile checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _hostile_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    payload = {"w": torch.zeros(2), "x": _System(f"touch {marker}")}
    files = {}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        path = files[f"pickle-p{proto}"] = tmp_path / f"p{proto}.pkl"
        path.write_bytes(pickle.dumps({"x": _System(f"touch {marker}")}, protocol=proto))
    files["torch-legacy"] = tmp_path / "legacy.pth"
    torch.save(payload, files["torch-legacy"], _use_new_zipfile_serialization=False)
    files["torch-zip"] = tmp_path / "zip.pth"
    torch.save(payload, files["torch-zip"])
    return files


def test_pickle_calling_os_system_is_unsafe_in_every_format(tmp_path):
    """Plain pickles of any protocol (torch refuses some for an unsupported opcode before it
    reaches the global), legacy and zip torch files: all UnsafeCheckpointError, none run."""
    marker = tmp_path / "pwned"
    for kind, path in _hostile_files(tmp_path, marker).items():
        with pytest.raises(UnsafeCheckpointError, match="system") as info:
            hub.load_state_dict(path)
        assert "refusing to load" in str(info.value), kind
        assert not isinstance(info.value, CorruptCheckpointError)
    assert not marker.exists()


@pytest.mark.parametrize("proto", [0, 2, 4])
def test_pickle_without_globals_that_torch_refuses_is_corrupt_not_unsafe(tmp_path, proto):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps([1, 2, "three"], protocol=proto))
    with pytest.raises(CorruptCheckpointError):
        hub.load_state_dict(path)


def test_truncated_hostile_pickle_is_still_unsafe(tmp_path):
    """The global is named before the cut, so the file is refused as unsafe."""
    data = pickle.dumps({"x": _System("true"), "pad": list(range(200))}, protocol=2)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) - 50])
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nt.system"):
        hub.load_state_dict(path)


def test_directory_is_named_as_a_directory(tmp_path):
    folder = tmp_path / "run1"
    folder.mkdir()
    for load in (hub.load_state_dict, hub.load_torch_file, hub.safetensors_metadata):
        with pytest.raises(IsADirectoryError) as info:
            load(folder)
        message = str(info.value)
        assert "is a directory" in message and str(folder) in message
        assert "does not exist" not in message
        assert "pass the weights file inside it" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.load_state_dict(tmp_path / "missing.pth")


# ----------------------------------------------------------------------------- cache housekeeping


def test_partial_file_of_a_killed_download_is_removed_on_the_next_fetch(zoo_env, http_server):
    cache = hub.cache_dir()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from zoo.pretrained.cachefiles import temp_path\n"
            "with temp_path(Path(sys.argv[1]), 'w-test.pth') as p:\n"
            "    p.write_bytes(b'half a download')\n"
            "    print(p, flush=True)\n"
            "    time.sleep(60)\n",
            str(cache),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    partial = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)  # no cleanup handler can run
    writer.wait()
    writer.stdout.close()
    assert partial.is_file() and partial.name.endswith(".part")

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A download still running in another process, and a stray old temporary file.
        running = cache / f".w2.pth.{cachefiles.host_tag()}.{live.pid}.abcd1234.part"
        running.write_bytes(b"in progress")
        old = cache / ".w3.pth.sha256.zz12.tmp"
        old.write_text("x")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))

        data, _ = _checkpoint_bytes()
        http_server.add("w.pth", data)
        hub.fetch([_spec(http_server.url("files", "w.pth"), data)], "toy.t")
        assert not partial.exists() and not old.exists()
        assert running.exists()  # its writer is alive: left alone
        assert _leftovers(cache) == sorted(
            ["w-test.pth", "w-test.pth.sha256", running.name]
        )
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("umask,want", [(0o022, 0o644), (0o002, 0o664)])
def test_cached_files_get_the_umask_permissions(zoo_env, http_server, umask, want):
    data, _ = _checkpoint_bytes()
    http_server.add("w.pth", data)
    old = os.umask(umask)
    try:
        path, _ = hub.fetch([_spec(http_server.url("files", "w.pth"), data)], "toy.t")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == want  # what open() gives: 0o666 & ~umask
    assert stat.S_IMODE((path.parent / (path.name + ".sha256")).stat().st_mode) == want
