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
