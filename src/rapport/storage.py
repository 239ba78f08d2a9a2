"""Attachment storage: content-addressed files under the attachments directory."""

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

# A file stored or reused more recently than this is never deleted: a transaction that
# stored it may not have committed the row that refers to it yet.
REUSE_GRACE_SECONDS = 3600.0


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; return (storage key, sha256). The same content is stored once."""
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest[:2]}/{digest[2:4]}/{digest}"
        path = self.root / key
        try:
            os.utime(path)  # reused: fresh again, so that ``forget`` leaves it alone
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return key, digest

    def open(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def forget(self, key: str, *, grace: float = REUSE_GRACE_SECONDS) -> bool:
        """Delete a file no row refers to any more (the caller checked), unless it was
        stored or reused within ``grace`` seconds; True if it is gone.

        The file is first moved aside, then its time read: a ``put`` that reused it before
        the move has refreshed that time (and it is put back), and one after the move finds
        no file and writes it again, so a file somebody has just relied on is never lost.
        """
        path = self._path(key)
        doomed = path.with_suffix(".forget")
        try:
            path.rename(doomed)
        except FileNotFoundError:
            return True
        try:
            if time.time() - doomed.stat().st_mtime < grace:
                doomed.replace(path)  # same content as any copy written meanwhile
                return False
            doomed.unlink()
        except FileNotFoundError:  # put back meanwhile (a sweep took it for a crash's)
            return not path.exists()
        return True

    def keys(self, *, untouched_for: float) -> Iterator[str]:
        """The key of every stored file not stored or reused for ``untouched_for`` seconds.

        Left-overs of a crash are tidied on the way: a half-written ``.tmp`` is deleted, and
        a file ``forget`` had moved aside is put back (and listed, to be judged again)."""
        cutoff = time.time() - untouched_for
        for path in self.root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*"):
            try:
                found = path.stat()
                # A file moved aside keeps its old mtime; the move itself shows in ctime
                # (a ``forget`` under way right now is left to finish).
                if max(found.st_mtime, found.st_ctime if path.suffix == ".forget" else 0) > cutoff:
                    continue
                if path.suffix == ".tmp":
                    path.unlink()
                    continue
                if path.suffix == ".forget":
                    kept = path.with_suffix("")
                    if kept.exists():
                        path.unlink()  # written again meanwhile: same content
                    else:
                        path.replace(kept)
                    path = kept
            except FileNotFoundError:
                continue  # forgotten or tidied by someone else meanwhile
            yield path.relative_to(self.root).as_posix()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("storage key outside the attachments directory")
        return path
