"""Small helpers shared across the package.

Atomic files: a file written with these helpers goes to a temporary file beside its destination
(``.<name>.<random>.tmp``, made with ``tempfile.mkstemp`` so two writers never collide), is
fsynced, made world-readable (0o644) and only then renamed over the destination with
``os.replace``. A reader, a crash or a kill at any moment therefore sees either the old file or
the complete new one, never a half-written one; on an error the temporary file is deleted and
the destination is left as it was.

* :func:`atomic_write` hands the writer an open file object (``"wb"`` or ``"w"``);
* :func:`atomic_path` is a context manager yielding the temporary *path*, for writers that
  want a file name (``safetensors.torch.save_file``, ``fig.savefig``, ``torch.onnx.export``).
  It commits only when the block exits cleanly, so the caller can check the file first and
  raise to throw it away;
* :func:`atomic_write_bytes` and :func:`atomic_write_text` write a ready value.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

#: Permissions of a finished file: shipped weights and docs must be readable by everyone
#: (``mkstemp`` creates its files 0o600).
FILE_MODE = 0o644


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, fsync: bool = True, permissions: int | None = FILE_MODE
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit move it over ``path``.

    The temporary file already exists (empty) when the block starts; the writer may overwrite
    it by name. On a clean exit it is fsynced (``fsync``), given ``permissions`` (``None``
    keeps mkstemp's 0o600) and renamed over ``path``; if the block raises, it is deleted and
    ``path`` is untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], object],
    *,
    mode: str = "wb",
    fsync: bool = True,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    permissions: int | None = FILE_MODE,
) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` (text, with ``encoding`` and ``newline`` as for
    :func:`open`; pass ``newline=""`` for the csv module). If ``write`` raises, nothing is left
    behind and ``path`` keeps its old content. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    with atomic_path(path, fsync=False, permissions=permissions) as tmp:
        with open(tmp, mode, **text) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8 (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
