"""Download, verify, cache and safely load weight files.

Every file goes through the same path: stream the URL into a temporary file next to its
final place (with a tqdm progress bar), check its size and hash, and only then ``os.replace``
it into the cache, so the cache never holds a partial or unverified file. Checkpoints are
read with ``torch.load(weights_only=True)`` or safetensors, never with a full unpickler.

The cache lives in ``$ZOO_HOME/weights`` (``$ZOO_HOME`` defaults to ``$XDG_CACHE_HOME/zoo``,
then ``~/.cache/zoo``). ``ZOO_OFFLINE=1`` forbids any network access.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import pickletools
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from zoo.binary.packing import expand_binary_state
from zoo.utils import atomic_write_text

if TYPE_CHECKING:
    from zoo.pretrained.manifests import WeightFile

__all__ = [
    "WeightsError",
    "DownloadError",
    "OfflineError",
    "HashMismatchError",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "StateDictMismatchError",
    "ManifestError",
    "zoo_home",
    "cache_dir",
    "is_offline",
    "file_digest",
    "verify_file",
    "download_file",
    "fetch",
    "is_safetensors",
    "safetensors_metadata",
    "load_torch_file",
    "state_dict_of",
    "load_state_dict",
]

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "zoo-pretrained/0.1 (+urllib)"


class WeightsError(RuntimeError):
    """Base class of every error the pretrained-weights subsystem raises."""


class ManifestError(WeightsError):
    """A weight manifest (``weights/*.json``) is malformed or names an unknown tag."""


class DownloadError(WeightsError):
    """A download failed (HTTP error, dropped connection, truncated transfer)."""


class OfflineError(DownloadError):
    """The file is not cached and the network is unreachable or disabled (``ZOO_OFFLINE``)."""


class HashMismatchError(WeightsError):
    """A file's size or hash differs from the one its manifest records."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint holds pickled Python objects that a weights-only load must refuse."""


class CorruptCheckpointError(WeightsError):
    """A checkpoint is truncated, corrupt, or not a state dict of tensors."""


class StateDictMismatchError(WeightsError):
    """A checkpoint's keys or shapes do not fit the model (lists missing/unexpected keys)."""


# ----------------------------------------------------------------------------- locations


def zoo_home() -> Path:
    """``$ZOO_HOME``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    env = os.environ.get("ZOO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "zoo"


def cache_dir() -> Path:
    """Directory holding downloaded, verified weight files: ``zoo_home() / "weights"``."""
    return zoo_home() / "weights"


def is_offline() -> bool:
    """True when ``ZOO_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------- hashing


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_hashes(spec: WeightFile, linked_sha256: str | None = None) -> list[tuple[str, str]]:
    """(algorithm, expected hex or hex prefix) pairs a file must satisfy."""
    pairs = []
    if spec.sha256:
        pairs.append(("sha256", spec.sha256))
    elif spec.sha256_prefix:
        pairs.append(("sha256", spec.sha256_prefix))
    if spec.sha1:
        pairs.append(("sha1", spec.sha1))
    elif spec.sha1_prefix:
        pairs.append(("sha1", spec.sha1_prefix))
    if linked_sha256:
        pairs.append(("sha256", linked_sha256))
    return pairs


def verify_file(
    path: str | os.PathLike,
    spec: WeightFile,
    *,
    linked_sha256: str | None = None,
    what: str | None = None,
) -> str:
    """Check ``path`` against the size and hashes of ``spec``; return its full sha256.

    ``linked_sha256`` is a sha256 the server published for this download (Hugging Face's
    ``X-Linked-Etag``); it is checked in addition to the manifest's own hashes.
    """
    path = Path(path)
    what = what or f"{path.name}"
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise HashMismatchError(
            f"{what} has {size} bytes but its manifest expects {spec.size}; the file is "
            "truncated or a different version. Delete it and download it again."
        )
    digests: dict[str, str] = {"sha256": file_digest(path, "sha256")}
    for algorithm, expected in _expected_hashes(spec, linked_sha256):
        actual = digests.get(algorithm) or digests.setdefault(
            algorithm, file_digest(path, algorithm)
        )
        if not actual.startswith(expected.lower()):
            raise HashMismatchError(
                f"{what}: {algorithm} is {actual}, expected "
                f"{'a value starting with ' if len(expected) < len(actual) else ''}{expected}. "
                "The file is corrupt, truncated or not the published one; it was not used. "
                "Download it again (or from the URL in the manifest) and retry."
            )
    return digests["sha256"]


def has_hash(spec: WeightFile) -> bool:
    """True when the manifest itself records a sha256/sha1 (or prefix) for the file."""
    return bool(spec.sha256 or spec.sha256_prefix or spec.sha1 or spec.sha1_prefix)


# ----------------------------------------------------------------------------- atomic files


@contextmanager
def _temp_path(directory: Path, name: str) -> Iterator[Path]:
    """A fresh temporary path in ``directory``; removed on exit unless it was renamed away."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# ----------------------------------------------------------------------------- download


class _RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, keeping the headers of each redirect response.

    Hugging Face answers a ``resolve`` URL with a redirect whose ``X-Linked-Etag`` header is
    the sha256 of the file; the final CDN response does not carry it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[Mapping[str, str]] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _linked_sha256(header_sets: list[Mapping[str, str]]) -> str | None:
    for headers in header_sets:
        value = headers.get("X-Linked-Etag") or headers.get("x-linked-etag")
        if value:
            value = value.strip().removeprefix("W/").strip('"').lower()
            if re.fullmatch(r"[0-9a-f]{64}", value):
                return value
    return None


def _timeout() -> float:
    return float(os.environ.get("ZOO_DOWNLOAD_TIMEOUT", "60"))


def _stream_to(url: str, dest: Path, progress: bool, desc: str) -> str | None:
    """Stream ``url`` into ``dest``; return the server-published sha256 if any.

    Raises ``OfflineError`` when the host cannot be reached and ``DownloadError`` for HTTP
    errors or a transfer that ends before ``Content-Length`` bytes arrived.
    """
    recorder = _RecordingRedirectHandler()
    opener = urllib.request.build_opener(recorder)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = opener.open(request, timeout=_timeout())
    except urllib.error.HTTPError as e:
        raise DownloadError(f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(f"{type(e).__name__}: {reason}") from e
    with response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        received = 0
        with (
            open(dest, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, ValueError) as e:  # connection reset, incomplete read
                    raise DownloadError(
                        f"connection dropped after {received} bytes ({type(e).__name__}: {e})"
                    ) from e
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"transfer ended after {received} of {total} bytes")
        return _linked_sha256([*recorder.headers, response.headers])


def _extract_member(archive: Path, member: str, dest: Path, what: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(dest, "wb") as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                out.write(chunk)
    except KeyError as e:
        raise CorruptCheckpointError(
            f"{what}: the downloaded archive has no member {member!r}; the host may have "
            "changed the file. Download it by hand and pass its path instead."
        ) from e
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise CorruptCheckpointError(
            f"{what}: the downloaded archive is not a valid zip ({e}); it was deleted. Retry."
        ) from e


def download_file(spec: WeightFile, dest: Path, *, progress: bool = True) -> Path:
    """Download ``spec.url`` to ``dest`` atomically, verifying size and hashes first.

    Zip archives (pytorchcv) are unpacked and the member is verified. A ``.sha256`` sidecar
    with the verified digest is written next to the file so later cache hits can be checked.
    """
    if not spec.url:
        raise ValueError(f"{spec.file_name} has no URL to download from")
    if not has_hash(spec) and not spec.hf_etag:
        raise ManifestError(
            f"refusing to download {spec.url}: its manifest records no sha256/sha1 (or "
            "hf_etag) to verify it with. Add one to the manifest."
        )
    what = f"{spec.file_name} from {spec.url}"
    with _temp_path(dest.parent, dest.name) as raw:
        linked = _stream_to(spec.url, raw, progress, desc=dest.name)
        if spec.hf_etag and not has_hash(spec) and linked is None:
            raise DownloadError(
                "the server sent no X-Linked-Etag sha256 to verify the file against"
            )
        if spec.archive == "zip":
            with _temp_path(dest.parent, dest.name) as member:
                _extract_member(raw, spec.member or spec.file_name, member, what)
                sha256 = verify_file(member, spec, linked_sha256=None, what=what)
                atomic_write_text(_sidecar(dest), sha256 + "\n")
                os.replace(member, dest)
        else:
            sha256 = verify_file(raw, spec, linked_sha256=linked, what=what)
            atomic_write_text(_sidecar(dest), sha256 + "\n")
            os.replace(raw, dest)
    _logger.info("downloaded %s (sha256 %s) to %s", spec.url, sha256, dest)
    return dest


def _check_cached(path: Path, spec: WeightFile, what: str) -> bool:
    """True when a cached file verifies; a bad cached file is deleted (never used)."""
    recorded = _sidecar(path).read_text().strip() if _sidecar(path).exists() else None
    if not has_hash(spec) and recorded is None:
        raise HashMismatchError(
            f"{path} cannot be verified: its manifest has no hash and there is no "
            f"{_sidecar(path).name} recorded at download time. Pass the file as a local path "
            "(pretrained='/path/to/file') if you trust it, or delete it to download again."
        )
    try:
        verify_file(path, spec, linked_sha256=recorded, what=what)
    except HashMismatchError as e:
        _logger.warning("%s; deleting the cached copy", e)
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        return False
    return True


def _offline_message(spec: WeightFile, name: str, dest: Path, reason: str) -> str:
    """What is missing, where it comes from, and the two ways to supply it offline."""
    arch = name.split(".")[0]
    unzip = f", unzip it and take {spec.member or spec.file_name}" if spec.archive else ""
    head = (
        f"pretrained weights {name!r} need the file {spec.file_name!r}, which is not in the "
        f"cache ({dest.parent}) and could not be downloaded ({reason}).\n"
        "To use these weights without internet access, download "
        f"{spec.url} on a machine that has access{unzip}, then"
    )
    pass_path = (
        f"pass the file directly: zoo.create({arch!r}, pretrained='/path/to/{spec.file_name}')"
    )
    if not has_hash(spec):  # only the host's header could verify it: no cache option
        return head + f" {pass_path} (no hash is published for it, so it is not checked)."
    hash_hint = (
        f"sha256 {spec.sha256}"
        if spec.sha256
        else f"sha256 starting with {spec.sha256_prefix}"
        if spec.sha256_prefix
        else f"sha1 {spec.sha1 or spec.sha1_prefix}"
    )
    return head + (
        f" either\n  - copy it to {dest} (it must have {hash_hint}; set ZOO_HOME to use "
        f"another cache folder), or\n  - {pass_path}."
    )


def fetch(
    files: list[WeightFile] | tuple[WeightFile, ...],
    name: str,
    *,
    weights_dir: Path | None = None,
    progress: bool = True,
) -> tuple[Path, WeightFile]:
    """Return a verified local path for the first available of ``files`` (mirrors).

    Files shipped in the repo (``file``) are read from ``weights_dir``; URL files are looked
    up in the cache first and downloaded only when missing. Raises ``OfflineError`` naming
    the missing file and how to place it when nothing can be had.
    """
    failures: list[str] = []
    url_files = []
    for spec in files:
        if spec.file:
            base = weights_dir or Path(".")
            path = (base / spec.file).resolve()
            if not path.exists():
                failures.append(f"{path} does not exist")
                continue
            verify_file(path, spec, what=f"{name}: {path}")
            return path, spec
        url_files.append(spec)
    for spec in url_files:  # cache hits first, so offline use never touches the network
        dest = cache_dir() / spec.file_name
        if dest.exists() and _check_cached(dest, spec, what=f"{name}: cached {dest}"):
            return dest, spec
    errors: list[WeightsError] = []
    for spec in url_files:
        dest = cache_dir() / spec.file_name
        if is_offline():
            errors.append(OfflineError("ZOO_OFFLINE is set"))
            failures.append(f"{spec.url}: not downloaded because ZOO_OFFLINE is set")
            continue
        try:
            return download_file(spec, dest, progress=progress), spec
        except (DownloadError, HashMismatchError, CorruptCheckpointError) as e:
            _logger.warning("could not use %s: %s", spec.url, e)
            errors.append(e)
            failures.append(f"{spec.url}: {e}")
    if url_files:
        bad_file = [e for e in errors if not isinstance(e, DownloadError)]
        if bad_file:  # a file arrived but failed verification: say so, not "offline"
            raise type(bad_file[0])(f"{name}: " + "; ".join(failures)) from bad_file[0]
        spec = next((f for f in url_files if has_hash(f)), url_files[0])
        message = _offline_message(spec, name, cache_dir() / spec.file_name, "; ".join(failures))
        offline = all(isinstance(e, OfflineError) for e in errors)
        raise (OfflineError if offline else DownloadError)(message) from (
            errors[-1] if errors else None
        )
    raise WeightsError(
        f"pretrained weights {name!r}: no file available ({'; '.join(failures)}). The files "
        "shipped with zoo are package data (zoo._weights, the repository's weights/ folder); "
        "set ZOO_WEIGHTS_DIR if they are elsewhere, or pass a local path as pretrained=."
    )


# ----------------------------------------------------------------------------- safe loading

_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_REFETCH = "Delete it and download (or save) it again."
# Globals a weights-only state dict may reference; anything else is code or a Python object.
_PLAIN_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode")}
_MAX_PICKLES = 8  # a legacy torch file is a few pickles followed by raw storage bytes


def _checked_file(path: str | os.PathLike) -> Path:
    """``path`` when it is a non-empty file; else an error that says what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"checkpoint {path} is a directory, not a file; pass the weights file inside it "
            "(e.g. a .pth, .pt or .safetensors file), not the folder that holds it."
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"{path} is empty. {_REFETCH}")
    return path


def is_safetensors(path: str | os.PathLike) -> bool:
    """True for a ``.safetensors`` file, or one whose header looks like safetensors (8-byte
    length then ``{``), even when it is cut short: such a file must fail as safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _corrupt_safetensors(path: Path, e: Exception) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is "
        f"truncated or corrupt. {_REFETCH}"
    )


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (``{}`` when it has none)."""
    path = _checked_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise _corrupt_safetensors(path, e) from e


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a zoo 1-bit file (``zoo.save_binary``) comes back as
    the plain state dict of its binary model, latent weights set to ``alpha * sign``."""
    raw_meta = safetensors_metadata(path).get("zoo")
    try:
        tensors = load_file(str(path), device="cpu")
        if raw_meta is None:
            return tensors
        return expand_binary_state(tensors, json.loads(raw_meta))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise _corrupt_safetensors(path, e) from e


# ------------------------------------------------------------------ pickle classification


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickled parts of a torch file: ``data.pkl`` of a zip, or the file itself."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                return [zf.read(n) for n in names]
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError):
            return []
    return [path.read_bytes()]


def _globals_in(stream: bytes) -> list[tuple[str, str]]:
    """``(module, name)`` of every global the pickles at the start of ``stream`` reference,
    read with ``pickletools`` (nothing is executed); stops at the first unreadable byte."""
    found: list[tuple[str, str]] = []
    f = io.BytesIO(stream)
    for _ in range(_MAX_PICKLES):
        strings: list[Any] = []  # what the pickle pushed, strings kept for STACK_GLOBAL
        memo: dict[Any, Any] = {}
        try:
            for op, arg, _pos in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    found.append((module, name))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append((str(strings[-2]), str(strings[-1])))
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[arg] = strings[-1]
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(arg))
                elif op.name in ("STOP",):
                    break
                else:
                    strings.append(arg if isinstance(arg, str) else None)
        except (ValueError, EOFError, IndexError, UnicodeDecodeError):
            break
        if f.tell() >= len(stream):
            break
    return found


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of ``path``'s pickles outside what a plain state dict needs (``torch.*``)."""
    bad = []
    for stream in _pickle_streams(path):
        for module, name in _globals_in(stream):
            plain = module == "torch" or module.startswith("torch.")
            if not plain and (module, name) not in _PLAIN_GLOBALS:
                bad.append(f"{module}.{name}")
    return sorted(set(bad))


def _unsafe_error(path: Path, reason: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refusing to load {path}: it contains pickled Python objects that are not plain "
        f"tensors ({reason}). zoo only loads checkpoints with torch.load(weights_only=True) "
        "so that a file cannot run code. If you trust the file, re-save just its tensors: "
        "torch.save({k: v for k, v in torch.load(path, weights_only=False).items()}, "
        "'clean.pth') and pass 'clean.pth'."
    )


def _refused(path: Path, e: pickle.UnpicklingError) -> WeightsError:
    """Why a weights-only load refused ``path``: a global it must not import (unsafe), or
    a stream it cannot read (truncated, corrupt, or not a torch file at all)."""
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    named = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), None)
    if named is not None:
        return _unsafe_error(path, named)
    unsafe = _unsafe_globals(path)
    if unsafe:
        return _unsafe_error(path, f"it references {', '.join(unsafe[:5])}")
    reason = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else "")
    return CorruptCheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({reason}); it is truncated or corrupt, "
        f"or a pickle a weights-only load does not accept. {_REFETCH}"
    )


def load_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, every failure a :class:`WeightsError`:
    ``UnsafeCheckpointError`` when the file references code or Python objects,
    ``CorruptCheckpointError`` when it cannot be read."""
    path = _checked_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from e
    except SafetensorError as e:  # torch.load hands *.safetensors names to safetensors
        raise _corrupt_safetensors(path, e) from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError) as e:
        raise CorruptCheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or corrupt. "
            f"{_REFETCH}"
        ) from e


def state_dict_of(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping inside a loaded checkpoint ``obj`` (read from
    ``path``, named in errors), unwrapping ``{"state_dict": ...}``-style containers."""
    if (
        isinstance(obj, Mapping)
        and obj
        and not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return state_dict_of(obj[key], path)
    if not isinstance(obj, Mapping) or not obj:
        raise CorruptCheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors; save "
            "model.state_dict() and pass that file."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CorruptCheckpointError(
            f"{path} is not a plain state dict: entries {bad[:5]} are not named tensors; save "
            "model.state_dict() and pass that file."
        )
    return dict(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely: safetensors, or ``torch.load(weights_only=True)``.

    Unwraps ``{"state_dict": ...}``-style containers. Raises ``UnsafeCheckpointError`` for
    a pickle that references code, ``CorruptCheckpointError`` for truncated/garbage files,
    ``IsADirectoryError`` / ``FileNotFoundError`` when ``path`` is not a file.
    """
    path = _checked_file(path)
    obj = _load_safetensors(path) if is_safetensors(path) else load_torch_file(path)
    return state_dict_of(obj, path)
