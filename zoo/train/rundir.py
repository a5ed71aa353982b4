"""The output folder of a train/finetune run: one run at a time, no earlier run lost.

A run takes ``OUTPUT/.lock`` (created with ``O_CREAT | O_EXCL``, holding ``pid host``) and
removes it when it ends; a second run into the same folder is refused while the first is
alive, and the lock of a process that died (SIGKILL, power loss) on this machine is taken
over. A folder that holds an earlier run (``last.pt``, ``best.pt``, ``summary.csv``) is
refused unless the run continues it (``--resume``) or starts over (``--force``); starting
over never loses the earlier best model: ``best.pt`` is kept as ``best.prev.pt`` (of two
earlier bests, the one with the higher recorded top-1 is kept).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from zoo.pretrained import WeightsError
from zoo.pretrained.cachefiles import pid_alive
from zoo.train.checkpoint import load_checkpoint
from zoo.train.distributed import DistInfo, all_gather_objects

__all__ = [
    "RUN_FILES",
    "LOCK_NAME",
    "PREV_BEST",
    "RunFolderError",
    "RunLock",
    "acquire_lock",
    "prepare_output",
    "claim_output",
]

#: The files a run writes; any of them in the folder means an earlier run is there.
RUN_FILES = ("last.pt", "best.pt", "summary.csv")
LOCK_NAME = ".lock"
PREV_BEST = "best.prev.pt"
#: A lock file whose content cannot be read (its writer died between create and write) is
#: taken over once it is this old (seconds).
UNREADABLE_LOCK_AGE = 60.0


class RunFolderError(ValueError):
    """The output folder is in use by another run, or holds an earlier run."""


def _host() -> str:
    return socket.gethostname() or "localhost"


@dataclass
class RunLock:
    """A held ``OUTPUT/.lock``; ``release`` removes it (and the folder, if it made an empty one)."""

    path: Path
    made_folder: bool = False

    def release(self) -> None:
        """Remove the lock if it is still ours; remove the folder if we made it and it is empty."""
        try:
            if self.path.read_text().split()[:1] == [str(os.getpid())]:
                self.path.unlink()
        except (OSError, IndexError):
            pass
        if self.made_folder:
            try:
                self.path.parent.rmdir()
            except OSError:  # not empty (the run wrote checkpoints) or already gone
                pass


def _lock_holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, or None if it cannot be read or parsed."""
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _is_stale(path: Path) -> bool:
    """A lock whose process is gone from this machine, or an unreadable one left long ago."""
    holder = _lock_holder(path)
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_LOCK_AGE
        except FileNotFoundError:
            return True
    pid, host = holder
    return host == _host() and not pid_alive(pid)


def acquire_lock(out: Path) -> RunLock:
    """Take ``out/.lock`` for this process, creating ``out``; refuse if another run holds it."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output {str(out)!r} is a file, not a folder; pass a folder")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _is_stale(path):
                path.unlink(missing_ok=True)
                continue
            break
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {_host()}\n")
        return RunLock(path, made)
    holder = _lock_holder(path)
    who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
    raise RunFolderError(
        f"{out} is in use by another run ({who} holds {path}); wait for it to finish or "
        f"pass another --output (delete {path} only if no run is using the folder)"
    )


def _recorded_top1(path: Path) -> float:
    """The best top-1 a checkpoint records; -inf when it cannot be read."""
    try:
        value = float(load_checkpoint(path).get("best_top1", -math.inf))
    except (OSError, WeightsError, ValueError, TypeError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


def _keep_previous_best(out: Path) -> str:
    """Move ``best.pt`` to ``best.prev.pt`` unless that holds a better one; says what it did."""
    best, prev = out / "best.pt", out / PREV_BEST
    if not best.exists():
        return ""
    new, old = _recorded_top1(best), _recorded_top1(prev) if prev.exists() else -math.inf
    if prev.exists() and old >= new:
        best.unlink()
        return f"; {prev.name} (top1 {old:.2f}%) stays, the earlier best.pt was not better"
    os.replace(best, prev)
    return f"; the earlier best.pt (top1 {new:.2f}%) is kept as {prev.name}"


def prepare_output(out: Path, resume: Path | None, force: bool) -> None:
    """Refuse a folder holding an earlier run unless this run continues it (``resume`` is its
    last.pt) or ``force`` starts over, which keeps the earlier best model as best.prev.pt."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if resume is not None and resume.resolve() == (out / "last.pt").resolve():
        return
    if not force:
        resumable = "pass --resume to continue it, " if "last.pt" in found else ""
        raise RunFolderError(
            f"{out} holds an earlier run ({', '.join(found)}); {resumable}pass --force to "
            f"start over (its best.pt is kept as {PREV_BEST}), or another --output"
        )
    kept = _keep_previous_best(out)
    for name in ("last.pt", "summary.csv"):
        (out / name).unlink(missing_ok=True)
    print(f"note: --force: starting over in {out}{kept}", flush=True)


def claim_output(out: Path, resume: Path | None, force: bool, info: DistInfo) -> RunLock | None:
    """Lock and check ``out`` on the main process; every process raises the same error.

    Returns the lock on the main process (release it when the run ends), else None.
    """
    lock, error = None, None
    if info.is_main:
        try:
            lock = acquire_lock(out)
            prepare_output(out, resume, force)
        except (RunFolderError, OSError) as e:
            if lock is not None:
                lock.release()
            error = e
    messages = all_gather_objects(None if error is None else str(error), info)
    if error is not None:
        raise error
    if messages[0] is not None:  # another rank: the main process refused the folder
        raise RunFolderError(messages[0])
    return lock

