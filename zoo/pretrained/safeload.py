"""Read checkpoint files without trusting them: safetensors, or ``torch.load`` with
``weights_only=True``; a file that would run code is ``UnsafeCheckpointError``, a truncated
or garbage one ``CorruptCheckpointError``, and neither is ever half-loaded."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from zoo.binary.packing import expand_binary_state
from zoo.pretrained.errors import CorruptCheckpointError, UnsafeCheckpointError, WeightsError

__all__ = [
    "check_file",
    "is_safetensors",
    "safetensors_metadata",
    "load_torch_file",
    "state_dict_of",
    "load_state_dict",
]

# ----------------------------------------------------------------------------- safe loading

_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_REFETCH = "Delete it and download (or save) it again."
# Globals a weights-only state dict may reference; anything else is code or a Python object.
_PLAIN_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode")}
_MAX_PICKLES = 8  # a legacy torch file is a few pickles followed by raw storage bytes


def check_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` when it is a non-empty file; else an error that says what it is instead and
    what to pass."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(
            f"{what} {path} is a directory, not a file; pass the weights file inside it (e.g. "
            f"{path / 'best.pt'}, or a .pth / .safetensors file), not the folder that holds it."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {path} does not exist; pass an existing file, or a model name (`zoo list`)"
        )
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
    path = check_file(path)
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
    path = check_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from e
    except SafetensorError as e:  # torch.load hands *.safetensors names to safetensors
        raise _corrupt_safetensors(path, e) from e
    except (
        RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError, struct.error
    ) as e:
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
    path = check_file(path)
    obj = _load_safetensors(path) if is_safetensors(path) else load_torch_file(path)
    return state_dict_of(obj, path)
