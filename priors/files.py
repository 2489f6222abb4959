"""The one way this package writes a file: atomically.

:func:`atomic_write` has ``write`` fill a temporary file in the target's folder, gives it
the permissions of an ordinary file the user creates (0666 less the umask), and renames it
onto the target. A reader sees the old file or the whole new one, never half of one; a
failed or interrupted write leaves the target as it was and removes the temporary file.
The weight files here, and every file the apps in ``experiments`` write, go through it.
"""

from __future__ import annotations

import os
import tempfile

from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Calls ``write(tmp)`` with the name of a fresh temporary file beside ``path`` (created
    empty; ``write`` may replace or fill it), then renames it onto ``path``. The folder is
    created when missing. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
