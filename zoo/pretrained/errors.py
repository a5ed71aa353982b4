"""The weights errors: one family, so a caller (or the CLI) catches ``WeightsError`` and
shows its message, which always names the fix."""

from __future__ import annotations

__all__ = [
    "WeightsError",
    "ManifestError",
    "DownloadError",
    "OfflineError",
    "HashMismatchError",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "StateDictMismatchError",
]


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
