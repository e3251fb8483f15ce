"""Error hierarchy of nclsm-scale.

Every error raised for bad user input derives from :class:`NclsmError`; its
message says what was expected, what was found and, where useful, what to do.
The command line prints the message without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


class NclsmError(Exception):
    """Base class of all errors the tool raises on purpose."""

    #: Exit status the command line uses for this kind of error.
    exit_code: int = 1


class ConfigError(NclsmError, ValueError):
    """A configuration file, key or command-line value is invalid."""

    exit_code = 2


class SlideReadError(NclsmError, OSError):
    """A slide or image file cannot be read (missing, truncated, corrupt, unsupported)."""


class SlideWriteError(NclsmError, OSError):
    """An output (store, table, run folder) cannot be written: read-only, no permission, disk full."""


class SlideRefusedError(NclsmError):
    """A slide is refused before work starts: implausible pixel size, too small, or over the memory budget."""


class ValidationError(NclsmError):
    """An OME-Zarr store does not meet the specification or the tool's expectations."""


class ModelError(NclsmError):
    """A model weights file is missing, corrupt or does not match the network."""


class GridError(NclsmError, ValueError):
    """A block grid cannot be laid out with the requested sizes."""


class HaloViolationError(NclsmError):
    """A fibre is larger than the largest admissible window (escalation limit)."""


class StageError(NclsmError):
    """A pipeline stage failed for one slide."""


#: ``errno`` of writes that cannot succeed however often they are retried (a file in the way: ENOTDIR).
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR})


def write_error(exc: OSError, where: str | Path) -> SlideWriteError:
    """``exc`` (a failed write) as one line naming the file, or ``where`` when the error names none (disk full).

    >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), "/runs/r1"))
    '/runs/r1: cannot write: No space left on device'
    """
    path = exc.filename if exc.filename is not None else where
    return SlideWriteError(f"{path}: cannot write: {exc.strerror or one_line(exc)}")


@contextlib.contextmanager
def naming_write_errors(where: str | Path) -> Iterator[None]:
    """Re-raise a write that cannot succeed (an ``OSError`` of :data:`WRITE_ERRNOS`) as :func:`write_error`.

    Other errors, and the tool's own, pass through unchanged.
    """
    try:
        yield
    except OSError as exc:
        if isinstance(exc, NclsmError) or exc.errno not in WRITE_ERRNOS:
            raise
        raise write_error(exc, where) from exc


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: our own errors by their message, others prefixed with their type."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, NclsmError) else f"{type(exc).__name__}: {text}"
