"""Every error the package raises on purpose, defined once (old modules re-export them).

Usage errors (a bad config: exit 2, nothing written) are apart from the errors of one input
(a bad file: an errors.jsonl row, the run goes on) and of the output's storage (exit 4).
"""


def first_line(message: object) -> str:
    """The first non-empty line of str(message), stripped."""
    for line in str(message).splitlines():
        line = line.strip()
        if line:
            return line
    return type(message).__name__ if isinstance(message, BaseException) else "unknown error"


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the key, the value and the fix."""

    def __init__(self, message: str):
        # CLI prints this verbatim; a stray newline (e.g. from a YAML problem) would split it.
        super().__init__(" ".join(str(message).splitlines()))


class CalibrationError(ValueError):
    """lowlight-gpu calibrate cannot make a preset from these frames (exit 2); one line: the problem and the fix."""


class UntrustedDataset(ValueError):
    """A file inside an output folder names a path outside it, or not a path at all (exit 2).

    The message is one line naming the file, the row and the field; nothing was read, written or deleted
    through that path.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


class DecodeError(Exception):
    """An image could not be decoded; str() is a one-line human reason."""

    def __init__(self, message: object) -> None:
        # Keep the one-line promise whatever a plugin put in its message.
        super().__init__(first_line(message))


class MergeError(Exception):
    """Parts cannot be merged (a shard is missing or from another config)."""


class StorageError(OSError):
    """The output's storage failed (full, over quota, I/O error, read-only): the run stops, finished pairs stay."""


class LockHeld(Exception):
    """Another run is using this output (or this shard of it); str() names the holder."""


class BackendUnavailable(Exception):
    """The configured backend cannot run on this machine."""


class DamagedDatabase(Exception):
    """An LMDB database of the output is damaged (a truncated data.mdb); str() is one line naming it."""
