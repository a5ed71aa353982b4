"""Housekeeping of the weights cache: temporary download files and file permissions.

A download streams into ``.NAME.HOST.PID.XXXX.part`` beside its final place; a process
killed with SIGKILL leaves that file behind, so each fetch first removes the partial files
whose writer is dead on this machine, or that nobody has written to for an hour. Finished
cache files get the permissions ``open`` would give (``0o666 & ~umask``), not mkstemp's
private 0o600, so a cache shared by a group works.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "STALE_PARTIAL_SECONDS",
    "host_tag",
    "pid_alive",
    "cache_file_mode",
    "is_stale_partial",
    "remove_stale_partials",
    "temp_path",
]

_logger = logging.getLogger(__name__)

#: A partial (``.part``) or temporary (``.tmp``) cache file untouched for this long (seconds)
#: belongs to a download that died; a live download writes to it every few seconds.
STALE_PARTIAL_SECONDS = 3600.0
_PARTIAL_RE = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.part$")


def host_tag() -> str:
    """This machine's name as it can appear in a file name (letters, digits, dashes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "localhost")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 probes, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def cache_file_mode() -> int:
    """Permissions of a finished cache file: what ``open`` would give under the umask
    (``0o666 & ~umask``), so a cache shared through group permissions works."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def is_stale_partial(path: Path, now: float) -> bool:
    """A leftover of a killed download: its writer is dead on this machine, or it is old."""
    m = _PARTIAL_RE.match(path.name)
    if m and m["host"] == host_tag() and int(m["pid"]) != os.getpid():
        if not pid_alive(int(m["pid"])):
            return True
    try:
        return now - path.stat().st_mtime > STALE_PARTIAL_SECONDS
    except FileNotFoundError:
        return False


def remove_stale_partials(directory: Path) -> list[Path]:
    """Delete the partial downloads and temporary files a killed process left in
    ``directory`` (see ``is_stale_partial``); returns what was removed."""
    if not directory.is_dir():
        return []
    now, removed = time.time(), []
    for path in directory.iterdir():
        if not (path.name.startswith(".") and path.name.endswith((".part", ".tmp"))):
            continue
        if path.is_file() and is_stale_partial(path, now):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        _logger.info("removed %d stale partial file(s) from %s", len(removed), directory)
    return removed


@contextmanager
def temp_path(directory: Path, name: str) -> Iterator[Path]:
    """A fresh temporary path in ``directory``; removed on exit unless it was renamed away.

    Its name records this machine and process (``.NAME.HOST.PID.XXXX.part``) so that a
    later fetch can tell a download killed with SIGKILL from one still running."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = f".{name}.{host_tag()}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)
