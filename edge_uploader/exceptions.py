"""Typed errors of the edge uploader."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of the uploader's own errors."""


class SourceError(EdgeError):
    """A source that cannot be read: missing, empty, not an image/video, or a stream that does not open."""


class SpoolError(EdgeError):
    """The on-disk spool cannot be used (directory not writable, entry unreadable)."""


class PreviewError(EdgeError):
    """The preview video cannot be written."""


class SpoolWriteError(SpoolError):
    """An entry could not be written (disk full, I/O error, spool closed); nothing partial was left.

    `reason` is a short tag for counters and logs: disk_full, io_error or spool_closed.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
