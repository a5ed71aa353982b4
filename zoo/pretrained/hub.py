"""Download, verify and cache weight files (safe loading: ``zoo.pretrained.safeload``).

Every file goes through the same path: stream the URL into a temporary file next to its
final place (with a tqdm progress bar), check its size and hash, and only then ``os.replace``
it into the cache, so the cache never holds a partial or unverified file. Checkpoints are
read with ``torch.load(weights_only=True)`` or safetensors, never with a full unpickler.

The cache lives in ``$ZOO_HOME/weights`` (``$ZOO_HOME`` defaults to ``$XDG_CACHE_HOME/zoo``,
then ``~/.cache/zoo``). ``ZOO_OFFLINE=1`` forbids any network access.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from zoo.pretrained.cachefiles import cache_file_mode, remove_stale_partials, temp_path
from zoo.pretrained.errors import (
    CorruptCheckpointError,
    DownloadError,
    HashMismatchError,
    ManifestError,
    OfflineError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    WeightsError,
)
from zoo.pretrained.safeload import (
    is_safetensors,
    load_state_dict,
    load_torch_file,
    safetensors_metadata,
    state_dict_of,
)
from zoo.utils import atomic_write

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
    "cache_file_mode",
    "remove_stale_partials",
    "is_safetensors",
    "safetensors_metadata",
    "load_torch_file",
    "state_dict_of",
    "load_state_dict",
]

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "zoo-pretrained/0.1 (+urllib)"


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


def _commit(tmp: Path, dest: Path, sha256: str) -> None:
    """Move a verified ``tmp`` to ``dest`` with its sidecar, both with the umask's permissions."""
    mode = cache_file_mode()
    atomic_write(_sidecar(dest), lambda f: f.write(sha256 + "\n"), mode="w", permissions=mode)
    os.chmod(tmp, mode)
    os.replace(tmp, dest)


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
    with temp_path(dest.parent, dest.name) as raw:
        linked = _stream_to(spec.url, raw, progress, desc=dest.name)
        if spec.hf_etag and not has_hash(spec) and linked is None:
            raise DownloadError(
                "the server sent no X-Linked-Etag sha256 to verify the file against"
            )
        if spec.archive == "zip":
            with temp_path(dest.parent, dest.name) as member:
                _extract_member(raw, spec.member or spec.file_name, member, what)
                sha256 = verify_file(member, spec, linked_sha256=None, what=what)
                _commit(member, dest, sha256)
        else:
            sha256 = verify_file(raw, spec, linked_sha256=linked, what=what)
            _commit(raw, dest, sha256)
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
    if url_files:
        remove_stale_partials(cache_dir())
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
