"""An on-disk spool for crops that cannot be sent yet, encrypted with a key that exists only in memory.

- One file per entry (`<entry id>.crop`, mode 0600): a random 96-bit nonce followed by the
  AES-256-GCM ciphertext of the crop message; the entry id and expiry are authenticated data,
  so an entry cannot be renamed or have its expiry edited without failing to decrypt.
- The key is generated per run (`AESGCM.generate_key`) and never written anywhere: a spool left
  behind by a crashed or killed run is unreadable, and the next run deletes it at start.
- Each entry expires `ttl_s` after the crop was captured (a face crop that old is no longer a live
  alert); expired entries are deleted, never sent. `destroy()` deletes every entry and drops the key.
Deleting a file does not scrub the disk blocks; the encryption is what protects a deleted entry.
- A write that fails (a full disk above all) raises `SpoolWriteError` with a reason and leaves no
  partial file: the entry is written to `<id>.crop.tmp` and renamed only once complete, and the
  temporary file is removed on any error. An entry that cannot be read back is deleted and counted
  (`unreadable`), never silently lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_uploader.exceptions import SpoolError, SpoolWriteError
from lfr_core.contracts import CropMessage, new_id

SUFFIX = ".crop"
NONCE_BYTES = 12
DEFAULT_TTL_S = 300.0
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

# The one place the spool writes bytes (a seam the full-disk tests wrap).
_write_chunk = os.write


def _write_new_file(path: Path, blob: bytes) -> None:
    """Create `path` (owner-only, must not exist) holding exactly `blob`; short writes are continued."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(blob)
        while view:
            n = _write_chunk(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write made no progress")
            view = view[n:]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Entry:
    entry_id: str
    expires_at: float  # epoch seconds


class Spool:
    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.stale_deleted = self._wipe()
        except OSError as exc:
            raise SpoolError(f"spool directory {directory} not usable: {exc}") from exc
        self._aead: AESGCM | None = AESGCM(AESGCM.generate_key(bit_length=256))
        self._entries: dict[str, _Entry] = {}  # insertion order = oldest first
        self._lock = threading.Lock()
        self.expired = 0
        self.unreadable = 0  # entries deleted because they could not be read back (counted as dropped)

    def _wipe(self) -> int:
        n = 0
        for p in self.directory.glob(f"*{SUFFIX}*"):
            with contextlib.suppress(OSError):  # unreadable without its run's key; tried again next start
                p.unlink(missing_ok=True)
                n += 1
        return n

    def _path(self, entry_id: str) -> Path:
        return self.directory / f"{entry_id}{SUFFIX}"

    @staticmethod
    def _aad(entry: _Entry) -> bytes:
        return entry.entry_id.encode() + struct.pack(">d", entry.expires_at)

    def put(self, msg: CropMessage, expires_at: float) -> str:
        with self._lock:
            if self._aead is None:
                raise SpoolWriteError("spool_closed", "spool destroyed")
            entry = _Entry(new_id(), expires_at)
            nonce = os.urandom(NONCE_BYTES)
            blob = nonce + self._aead.encrypt(nonce, msg.model_dump_json().encode(), self._aad(entry))
            path = self._path(entry.entry_id)
            tmp = path.with_suffix(SUFFIX + ".tmp")
            try:
                _write_new_file(tmp, blob)
                os.replace(tmp, path)
            except OSError as exc:
                # Whatever got written (often 0 bytes on a full disk) must not stay behind; should
                # even the unlink fail, the next run's start-up wipe removes it (ciphertext only).
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                reason = "disk_full" if exc.errno in _DISK_FULL else "io_error"
                raise SpoolWriteError(reason, f"{type(exc).__name__} errno {exc.errno}") from exc
            self._entries[entry.entry_id] = entry
            return entry.entry_id

    def purge_expired(self) -> int:
        """Delete entries past their expiry; returns how many."""
        now = self._clock()
        with self._lock:
            gone = [e for e in self._entries.values() if e.expires_at <= now]
            for e in gone:
                self._delete_locked(e.entry_id)
            self.expired += len(gone)
            return len(gone)

    def oldest(self, n: int) -> list[tuple[str, CropMessage]]:
        """Up to `n` live entries, oldest first, decrypted (expired ones are purged first)."""
        self.purge_expired()
        with self._lock:
            if self._aead is None:
                return []
            out = []
            for e in list(self._entries.values())[:n]:
                try:
                    blob = self._path(e.entry_id).read_bytes()
                    plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(e))
                    out.append((e.entry_id, CropMessage.model_validate_json(plain)))
                except (OSError, InvalidTag, ValueError):
                    # Tampered or lost on disk: it cannot be sent, so it must not linger either.
                    self._delete_locked(e.entry_id)
                    self.unreadable += 1
            return out

    def delete(self, entry_id: str) -> None:
        with self._lock:
            self._delete_locked(entry_id)

    def _delete_locked(self, entry_id: str) -> None:
        self._entries.pop(entry_id, None)
        # Forgotten in memory even if the unlink fails: without the entry its file cannot be
        # decrypted, and the next run's start-up wipe removes it.
        with contextlib.suppress(OSError):
            self._path(entry_id).unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def destroy(self) -> int:
        """Delete every entry and forget the key; returns how many entries were still there."""
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            self._aead = None
            self._wipe()
            return n
