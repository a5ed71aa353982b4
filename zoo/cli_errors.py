"""The one error path of the ``zoo`` command, and the option types that reject bad values early.

Every subcommand's ``main(argv)`` runs through :func:`run_command`: the zoo's own errors, bad
values and user-caused OS errors (a missing file, a file where a folder is wanted, a read-only or
full disk) become ONE line on stderr, ``zoo CMD: error: MESSAGE``; exit code 2 when the command
cannot run with the arguments given, 1 when it ran and failed, 130 on Ctrl-C. Anything else is a
bug: its traceback is shown with a line saying how to report it.

Option types (``type=`` of argparse) check ranges at parse time, so ``--epochs 0`` or
``--input-size 60000`` stop before any model is built. This module imports nothing from the
zoo: every layer may use it.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import torch

__all__ = [
    "ArgumentParser",
    "run_command",
    "error_message",
    "exit_code_for",
    "is_user_error",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "probability",
    "open_fraction",
    "image_size",
    "int_range",
    "pretrained_option",
    "device_option",
    "output_dir",
    "output_file",
    "MAX_IMAGE_SIZE",
    "REPORT_URL",
]

MAX_IMAGE_SIZE = 4096  # square input side; larger sizes only exhaust memory (60000 px: 14 GB/image)
REPORT_URL = "https://github.com/zoo-models/zoo/issues"

# OS errors a user causes (and can fix) rather than bugs; errno values, with the fix to name.
_OS_FIXES = {
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENOTDIR: "a path component is a file, not a folder; choose a folder",
    errno.EISDIR: "is a folder, a file is expected here; name a file",
    errno.EACCES: "permission denied; choose a location you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a location you can write to",
    errno.EROFS: "read-only file system; choose a writable location (e.g. set ZOO_HOME)",
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EEXIST: "already exists; choose another path or remove it",
    errno.ENOTEMPTY: "folder is not empty; choose an empty folder",
}
_USER_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
# Errors of a value given on the command line: the command could not run with it (exit 2).
_USAGE_TYPES = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``prog: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def is_user_error(err: BaseException) -> bool:
    """True for errors with a message meant for the user: the zoo's own, bad values, and OS
    errors of a path the user named (missing, wrong kind, read-only, full, no permission)."""
    if _is_zoo_exception(err) or isinstance(err, (ValueError, TypeError, *_USER_OS_ERRORS)):
        return True
    return isinstance(err, OSError) and err.errno in _OS_FIXES


def _is_zoo_exception(err: BaseException) -> bool:
    """The zoo's own exception classes (WeightsError family, ExportError, ...) name the fix."""
    return any(
        c.__module__ == "zoo" or c.__module__.startswith("zoo.") for c in type(err).__mro__
    )


def exit_code_for(err: BaseException) -> int:
    """2: the arguments given cannot work (bad value, missing input); 1: the run failed."""
    if isinstance(err, _USAGE_TYPES) or type(err).__name__ == "ExportError":
        return 2
    return 1


def error_message(err: BaseException) -> str:
    """The message to show: an OS error says which path and what to do; others as raised."""
    if isinstance(err, OSError) and err.errno in _OS_FIXES and not _is_zoo_exception(err):
        where = "" if err.filename is None else str(err.filename)
        name = os.path.basename(where)
        if name.startswith(".") and name.endswith(".tmp"):  # an atomic write's temporary file
            where = os.path.dirname(where) or "."
        fix = _OS_FIXES[err.errno]
        if err.errno == errno.ENOENT and where and os.path.isdir(where):  # e.g. /proc, /sys
            fix = "this folder does not accept new files; choose a writable folder"
        home = os.environ.get("ZOO_HOME")
        if home and where and where.startswith(home):
            fix += f" (under ZOO_HOME={home})"
        return f"{where}: {fix}" if where else f"{err.strerror or err}: {fix}"
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text.strip() or type(err).__name__


def run_command(prog: str, fn: Callable[[Sequence[str] | None], int | None], argv=None) -> int:
    """Run ``fn(argv)`` as command ``prog`` ("zoo train"); return its exit code, turning
    expected errors into one line on stderr. Parse errors have printed their line already."""
    try:
        with _ctrl_c_in_main_process_only():
            return int(fn(argv) or 0)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # `zoo ... | head`: the reader left; stop quietly
        _silence_stdout()
        return 0
    except Exception as err:
        if not is_user_error(err) or os.environ.get("ZOO_DEBUG"):
            traceback.print_exc()
            print(
                f"{prog}: internal error ({type(err).__name__}); this is a bug: please report it "
                f"at {REPORT_URL} with the command line and the traceback above",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr, flush=True)
        return exit_code_for(err)


@contextmanager
def _ctrl_c_in_main_process_only() -> Iterator[None]:
    """Ctrl-C reaches the whole process group. Forked children (DataLoader workers) inherit
    the handler: there it ignores the signal, so a worker does not print its own
    KeyboardInterrupt traceback; the main process stops (and its workers with it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main_pid, previous = os.getpid(), signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone chose a handler: keep it
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured): nothing to silence
        pass


# ---- option types --------------------------------------------------------------------------


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (no upper bound when ``hi`` is None)."""
    what = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(text: str) -> int:
        value = _number(text, int, what)
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = "int_range"
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1 (epochs, batch size, top-k, repeats...)."""
    return int_range(1)(text)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (workers, subsets where 0 means all, warm-up...)."""
    return int_range(0)(text)


def image_size(text: str) -> int:
    """A square input side in pixels: 1 to MAX_IMAGE_SIZE."""
    return int_range(1, MAX_IMAGE_SIZE)(text)


def _float_check(text: str, what: str, ok: Callable[[float], bool]) -> float:
    value = _number(text, float, what)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value:g}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, temperature, milliseconds...)."""
    return _float_check(text, "a number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weight decay, momentum, tolerance, gradient clip...)."""
    return _float_check(text, "a number >= 0", lambda v: v >= 0)


def probability(text: str) -> float:
    """A number in [0, 1] (label smoothing, flip probability, KD weight...)."""
    return _float_check(text, "a number from 0 to 1", lambda v: 0 <= v <= 1)


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a held-out share of the data)."""
    return _float_check(text, "a number between 0 and 1 (exclusive)", lambda v: 0 < v < 1)


_TRUE = {"true", "yes", "1", "default"}
_FALSE = {"false", "no", "0", "none", "off", ""}


def pretrained_option(text: str) -> bool | str | None:
    """``--pretrained``: 'true' (the default weights) -> True, 'false'/'none' -> None, any
    other text is a weight tag or a weights file, passed on as given. One rule for every
    command."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return None
    return text


def device_option(text: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N or mps; a GPU that is not there is refused now,
    not after the data has been read."""
    dev = text.strip().lower()
    if dev in ("auto", "cpu"):
        return dev
    if dev == "cuda" or dev.startswith("cuda:"):
        index = dev.partition(":")[2]
        if index and not index.isdigit():
            raise argparse.ArgumentTypeError(f"expected cuda:N with N a GPU index, got {text!r}")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for a CUDA GPU but none is visible; use --device cpu or auto"
            )
        if index and int(index) >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: only {count} GPU(s) visible (cuda:0..cuda:{count - 1})"
            )
        return dev
    if dev == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("'mps' is not available here; use --device cpu")
        return dev
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def _check_parent_folders(path: Path, text: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder, not a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{str(parent)!r} in {text!r} is a file")
            return


def output_dir(text: str) -> str:
    """A folder to write into: it may not exist yet, but must not be an existing file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a folder (new or existing)")
    _check_parent_folders(path, text)
    return text


def output_file(text: str) -> str:
    """A file to write: must not be an existing folder, and its folder must not be a file."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    _check_parent_folders(path, text)
    return text


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--pretrained``, ``--num-classes`` and ``--in-chans`` with the resolver's meaning, the
    same for every command that builds a model from a name."""
    parser.add_argument(
        "--pretrained",
        type=pretrained_option,
        default=None,
        help="'true' (the default weights), a weight tag or a weights file",
    )
    parser.add_argument(
        "--num-classes", type=positive_int, default=None, help="[the weights', else 1000]"
    )
    parser.add_argument(
        "--in-chans", type=positive_int, default=None, help="[the weights', else 3]"
    )

