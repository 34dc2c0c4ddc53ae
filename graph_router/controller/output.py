"""The resolved graph file the router reloads: written whole or not at all, and only on change.

A reader (the router, polling) must never see half a file, so the content goes to a
temporary file in the same directory, is fsynced, and is renamed over the target; the
directory is fsynced too so the rename survives a crash. Unchanged content is not
rewritten, so the router is not made to re-read and re-compile an identical graph.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class GraphFileWriter:
    """Writes ``path`` atomically; ``write`` says whether the content changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0

    def current(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, content: bytes) -> bool:
        """Blocking; returns False (and touches nothing) when the file already holds ``content``."""
        if self.current() == content:
            return False
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_directory(directory)
        self.writes += 1
        return True


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
